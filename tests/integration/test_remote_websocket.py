"""A remote MCP server over WebSocket behind the real gateway, next to a stdio child.

One gateway serves the module: a stdio child ``local`` and our WebSocket server
(tests/servers/ws_server.py) as ``remote``, with a bearer token of its own, a configured header, a
deny rule and a replacement rule. Everything runs on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .harness import ROOT, TOKEN, GatewayProcess, McpHttpClient, child_toml, server_toml, text_of

WS_SERVER = ROOT / "tests" / "servers" / "ws_server.py"
WS_TOKEN = "ws-upstream-token-0123456789"
REAL = "Jane Realname"
FAKE = "John Doe"


class WsServer:
    """``ws_server.py`` as a process; :meth:`restart` starts it again on the same port."""

    def __init__(self, record: Path, port: int = 0) -> None:
        self.record = record
        self.proc = subprocess.Popen(
            [sys.executable, str(WS_SERVER), "--port", str(port), "--require-token", WS_TOKEN,
             "--record", str(record)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(10)
        if not line or not line[0].strip():
            self.stop()
            raise RuntimeError("ws_server.py did not print its port")
        self.port = int(line[0])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)

    def restart(self) -> None:
        self.stop()
        deadline = time.monotonic() + 10
        while True:  # the port can take a moment to be free again
            try:
                fresh = WsServer(self.record, self.port)
                break
            except (RuntimeError, ValueError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.proc = fresh.proc


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, WsServer]]:
    tmp = tmp_path_factory.mktemp("remote_ws")
    ws = WsServer(tmp / "record.jsonl")
    remote = (
        "[[mcp]]\n"
        'name = "remote"\n'
        f'url = "ws://127.0.0.1:{ws.port}/mcp"\n'
        'auth = "bearer"\n'
        'token = "${WS_TOKEN}"\n'
        'headers = { "X-Team" = "core" }\n'
        'call_timeout = "10s"\n'
    )
    rules = (
        '[policies]\ndefault = "allow"\n[policies.rules]\n"remote/delete_thing" = "deny"\n\n'
        f'[[replacements]]\nfake = "{FAKE}"\nreal = "{REAL}"\n'
    )
    g = GatewayProcess(
        tmp, server_toml(tmp) + rules + child_toml("local") + remote, env={"WS_TOKEN": WS_TOKEN}
    )
    try:
        g.wait_ready(expect=2)
        yield g, ws
    finally:
        g.stop()
        ws.stop()


def records(ws: WsServer) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ws.record.read_text().splitlines()] if ws.record.exists() else []


def states(g: GatewayProcess) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in g.health().json()["children"]}


def test_tools_of_both_servers_are_listed_and_called(setup: tuple[GatewayProcess, WsServer]) -> None:
    g, _ = setup
    c = McpHttpClient(g.url)
    names = {t["name"] for t in c.request("tools/list")["result"]["tools"]}
    assert {"local__echo", "remote__echo", "remote__whoami", "remote__progress"} <= names
    assert text_of(c.call("remote__echo", {"text": "over the wire"})) == "over the wire"
    assert text_of(c.call("local__echo", {"text": "from a child"})) == "from a child"
    remote = states(g)["remote"]
    assert remote["state"] == "ready" and remote["tools"] >= 5


def test_only_configured_headers_and_the_servers_own_token_are_sent(
    setup: tuple[GatewayProcess, WsServer],
) -> None:
    g, _ = setup
    c = McpHttpClient(g.url)
    seen = json.loads(text_of(c.call("remote__whoami")))["headers"]
    assert seen == {"authorization": f"Bearer {WS_TOKEN}", "x-team": "core"}
    assert TOKEN not in json.dumps(seen)  # never passthrough


def test_progress_reaches_the_client(setup: tuple[GatewayProcess, WsServer]) -> None:
    g, _ = setup
    c = McpHttpClient(g.url)
    resp, before = c.request_raw(
        "tools/call",
        {"name": "remote__progress", "arguments": {"steps": 3}, "_meta": {"progressToken": "tok"}},
    )
    assert [m["params"]["progress"] for m in before] == [1, 2, 3]
    assert all(m["params"]["progressToken"] == "tok" for m in before)
    assert text_of(resp["result"]) == "progress done (3)"


def test_policies_apply_to_the_remote_tool(setup: tuple[GatewayProcess, WsServer]) -> None:
    g, ws = setup
    c = McpHttpClient(g.url)
    names = {t["name"] for t in c.request("tools/list")["result"]["tools"]}
    assert "remote__delete_thing" not in names
    res = c.call("remote__delete_thing", {"what": "everything"})
    assert res["isError"] is True
    assert text_of(res) == "Call to remote/delete_thing denied by rule 'remote/delete_thing'."
    assert not [r for r in records(ws) if r["tool"] == "delete_thing"]  # it never reached the server


def test_anonymization_applies_to_the_remote_tool(setup: tuple[GatewayProcess, WsServer]) -> None:
    g, ws = setup
    c = McpHttpClient(g.url)
    assert text_of(c.call("remote__echo", {"text": f"hello {FAKE}"})) == f"hello {FAKE}"
    sent = [r["arguments"]["text"] for r in records(ws) if r["tool"] == "echo"]
    assert f"hello {REAL}" in sent and f"hello {FAKE}" not in sent


def test_the_server_restarted_mid_session(setup: tuple[GatewayProcess, WsServer]) -> None:
    g, ws = setup
    c = McpHttpClient(g.url)
    assert text_of(c.call("remote__echo", {"text": "before"})) == "before"
    ws.stop()
    deadline = time.monotonic() + 10
    while states(g)["remote"]["state"] == "ready":
        assert time.monotonic() < deadline, "the gateway did not notice the server went away"
        time.sleep(0.05)
    down = states(g)["remote"]
    assert down["state"] in ("restarting", "connecting")
    # Lost (1006, no close frame from a killed process), or already failing to reconnect.
    assert "connection to server remote lost" in down["error"] or "cannot connect" in down["error"]
    assert states(g)["local"]["state"] == "ready"
    ws.restart()
    g.wait_ready(expect=2, timeout=20)
    assert text_of(c.call("remote__echo", {"text": "after"})) == "after"  # the same client session
    assert states(g)["remote"]["restarts"] >= 1


def test_health_without_the_token_hides_details(setup: tuple[GatewayProcess, WsServer]) -> None:
    g, _ = setup
    r = httpx.get(g.url + "/health", timeout=5)
    assert WS_TOKEN not in r.text and "X-Team" not in r.text
    assert WS_TOKEN not in g.log_text()


async def test_sampling_from_the_remote_server_reaches_the_client(
    setup: tuple[GatewayProcess, WsServer],
) -> None:
    """The official SDK as the client: the WebSocket server's sampling/createMessage, sent mid-call,
    goes through the gateway to the client's callback and the answer back to the server."""
    mcp = pytest.importorskip("mcp")
    import trio
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    g, _ = setup
    prompts: list[str] = []

    async def sampling(ctx: Any, params: Any) -> Any:
        prompts.append(params.messages[0].content.text)
        return mcp.types.CreateMessageResult(
            role="assistant", content=mcp.types.TextContent(type="text", text="an answer"), model="fake"
        )

    http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
    with trio.fail_after(20):
        async with (
            streamable_http_client(g.url + "/mcp", http_client=http) as (read, write),
            ClientSession(read, write, sampling_callback=sampling) as session,
        ):
            await session.initialize()
            res = await session.call_tool("remote__ask", {"prompt": "what is up?"})
    assert "".join(getattr(c, "text", "") for c in res.content) == "sampled: an answer"
    assert prompts == ["what is up?"]
