"""A token per client, end to end: the real ``portero serve`` process, the test stdio server as its child,
the fake Bot API for approvals, and ``portero client add|revoke`` followed by SIGHUP.

Two clients with their own tokens see different tools, get different decisions for the same tool (one
client's own rule allows what the global rules send for approval), are named in the audit rows and in the
admin's approval message, and cannot use each other's sessions; a token added with ``portero client add``
works after a reload, and a revoked one gets 401 after the next.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio

from portero.cli.main import main as cli_main

from .harness import TOKEN as DEFAULT_TOKEN
from .harness import GatewayProcess, McpHttpClient, child_toml, server_toml, text_of
from .test_approvals_e2e import ADMIN, Mcp, answer_for, asked, db_rows, launch, spawn, stop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "servers"))
from fake_botapi import TOKEN as BOT_TOKEN  # noqa: E402
from fake_botapi import FakeBotAPI  # noqa: E402

LAPTOP = "laptop-token-0123456789abcdefghij"
CI = "ci-token-0123456789abcdefghijklmno"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


CLIENTS = f"""
[policies]
default = "allow"
[policies.rules]
"t/delete_thing" = "require-approval"

[[client]]
name = "laptop"
token_sha256 = "{sha(LAPTOP)}"
tools = ["t/echo", "t/delete_thing"]
policy = {{ "t/delete_thing" = "allow" }}

[[client]]
name = "ci"
token_sha256 = "{sha(CI)}"
tools = ["t/*"]
"""


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeBotAPI:
    api = FakeBotAPI()
    api.wait_timeout = 10.0
    await nursery.start(api.serve)
    return api


async def connect(url: str, token: str) -> Mcp:
    client = Mcp(url)
    client.headers["Authorization"] = f"Bearer {token}"
    return await client.initialize()


async def tool_names(client: Mcp) -> set[str]:
    resp, _ = await client.request_raw("tools/list", {})
    return {t["name"] for t in resp["result"]["tools"]}


async def test_two_clients_see_and_may_do_different_things(
    tmp_path: Path, fake: FakeBotAPI, nursery: trio.Nursery, capsys: pytest.CaptureFixture[str]
) -> None:
    telegram = (
        f'[telegram]\nbot_token = "{BOT_TOKEN}"\nadmin_chat_id = {ADMIN}\napi_base = "{fake.api_base}"\n'
    )
    g = await launch(tmp_path, server_toml(tmp_path) + telegram + CLIENTS + child_toml("t"))
    laptop = ci = None
    try:
        await fake.wait_for_call("setMyCommands")
        laptop = await connect(g.url, LAPTOP)
        ci = await connect(g.url, CI)

        # Each sees its own tools.
        assert await tool_names(laptop) == {"t__echo", "t__delete_thing"}
        ci_tools = await tool_names(ci)
        assert {"t__echo", "t__delete_thing", "t__add", "t__whoami"} <= ci_tools

        # The same tool, two decisions: the laptop's own rule allows it; ci's call waits for the admin,
        # whose message names ci.
        res = await laptop.call("t__delete_thing", {"what": "a file"})
        assert not res.get("isError") and text_of(res) == "deleted a file", res
        since = len(fake.calls)
        later = spawn(nursery, ci.call, "t__delete_thing", {"what": "the repo"})
        msg = await asked(fake, since)
        assert "Client: ci" in msg.visible_text.splitlines()
        assert "Tool: t/delete_thing" in msg.visible_text
        qid = fake.press(msg, "❌ Deny")
        assert await answer_for(fake, qid) == "Denied"
        refused = await later.wait()
        assert refused["isError"] is True

        # What the laptop does not see does not exist for it.
        resp, _ = await laptop.request_raw("tools/call", {"name": "t__add", "arguments": {"a": 1, "b": 2}})
        assert resp["error"]["message"] == "Unknown tool: t__add"

        # The laptop's session is not found with another token, and still works with its own.
        ping = {"jsonrpc": "2.0", "id": 99, "method": "ping"}
        for other in (CI, DEFAULT_TOKEN):
            headers = {
                **laptop.headers,
                "Authorization": f"Bearer {other}",
                "Mcp-Session-Id": laptop.session_id,
            }
            r = await laptop.http.post(laptop.url, json=ping, headers=headers)
            assert r.status_code == 404 and "Session not found" in r.text
        assert "result" in (await laptop.request_raw("ping"))[0]

        # The audit names each client, the approval too.
        rows = db_rows(tmp_path, "SELECT client, tool, decision, source, outcome FROM audit ORDER BY id")
        assert rows == [
            {
                "client": "laptop",
                "tool": "t/delete_thing",
                "decision": "allow",
                "source": "client-rule:t/delete_thing",
                "outcome": "ok",
            },
            {
                "client": "ci",
                "tool": "t/delete_thing",
                "decision": "rejected",
                "source": "admin",
                "outcome": "refused",
            },
            {
                "client": "laptop",
                "tool": "t__add",
                "decision": "deny",
                "source": "invalid",
                "outcome": "refused",
            },
        ]
        [approval] = db_rows(tmp_path, "SELECT client, state FROM approvals")
        assert approval == {"client": "ci", "state": "rejected"}

        # /logs names them as well; `portero audit --client` picks one.
        since = len(fake.calls)
        fake.inject_message(ADMIN, "/logs")
        logs = await fake.wait_for_message(lambda m: m.chat_id == ADMIN and not m.buttons, since=since)
        assert "[ci] t/delete_thing" in logs.visible_text and "[laptop] t/delete_thing" in logs.visible_text
    finally:
        for c in (laptop, ci):
            if c is not None:
                await c.aclose()
        await stop(g)
    capsys.readouterr()
    assert cli_main(["audit", "--config", str(g.config_path), "--client", "ci", "--json"]) == 0
    out = capsys.readouterr().out
    audited = [json.loads(line) for line in out.splitlines()]
    assert [(r["client"], r["tool"]) for r in audited] == [("ci", "t/delete_thing")]


# ------------------------------------------------------------------------------- add and revoke + reload


def portero(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portero", *args], capture_output=True, text=True, timeout=30, check=False
    )


def reload(g: GatewayProcess) -> None:
    """SIGHUP, then wait until the gateway logged one more "reloaded" line."""
    done = sum("reloaded " in line for line in g.lines)
    g.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while sum("reloaded " in line for line in g.lines) <= done:
        assert time.monotonic() < deadline, g.log_text()[-3000:]
        time.sleep(0.02)


def initialize_status(url: str, token: str) -> int:
    body = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"},
        },
    }
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
    return httpx.post(url + "/mcp", json=body, headers=headers, timeout=10).status_code


def test_client_add_and_revoke_take_effect_on_reload(tmp_path: Path) -> None:
    g = GatewayProcess(tmp_path, server_toml(tmp_path) + child_toml("t"))
    phone: McpHttpClient | None = None
    try:
        g.wait_ready()
        added = portero("client", "add", "phone", "--tools", "t/echo", "--config", str(g.config_path))
        assert added.returncode == 0, added.stderr
        token = added.stdout.strip()
        assert token and token not in g.config_path.read_text()
        assert initialize_status(g.url, token) == 401  # not before the reload

        reload(g)
        phone = McpHttpClient(g.url, token)
        assert [t["name"] for t in phone.request("tools/list")["result"]["tools"]] == ["t__echo"]
        assert text_of(phone.call("t__echo", {"text": "hi"})) == "hi"

        revoked = portero("client", "revoke", "phone", "--config", str(g.config_path))
        assert revoked.returncode == 0, revoked.stderr
        reload(g)
        assert initialize_status(g.url, token) == 401
        assert phone.post({"jsonrpc": "2.0", "id": 5, "method": "ping"}).status_code == 401  # its session too
        assert initialize_status(g.url, DEFAULT_TOKEN) == 200  # server.bearer_token is untouched
    finally:
        if phone is not None:
            phone.close()
        g.stop()
