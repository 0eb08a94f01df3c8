"""Remote MCP servers behind the real gateway, next to a stdio child: the published
`@modelcontextprotocol/server-everything` in its Streamable HTTP mode ("remote") and in its legacy
SSE mode ("legacy", reached through `transport = "auto"`'s fallback), plus a URL where nothing
listens ("nowhere"). Everything on 127.0.0.1; one gateway for the module, to keep it fast (the
restart test comes last and leaves the remote server running again)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .harness import ROOT, TOKEN, GatewayProcess, McpHttpClient, child_toml, server_toml, text_of

EVERYTHING = ROOT / "tests" / "node" / "node_modules" / ".bin" / "mcp-server-everything"
pytestmark = pytest.mark.skipif(
    not EVERYTHING.exists() or shutil.which("node") is None,
    reason="run `npm install --prefix tests/node` first (.ci/run does)",
)

REAL_NAME = "Jane Realname"  # in the remote server's environment; the client must only see the fake
POLICY_AND_REPLACEMENTS = f"""
[policies]
default = "allow"
[policies.rules]
"remote/get-sum" = "deny"

[[replacements]]
fake = "John Doe"
real = "{REAL_NAME}"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server-everything exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Everything:
    """server-everything over HTTP on a port of its own; stoppable and restartable on that port."""

    def __init__(self, mode: str, log: Path) -> None:
        self.mode = mode
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(EVERYTHING), self.mode],
                env={**os.environ, "PORT": str(self.port), "WHO_RUNS_THIS": REAL_NAME},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        wait_listening(self.port, self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Everything]]:
    tmp = tmp_path_factory.mktemp("remote-servers")
    found = {
        "remote": Everything("streamableHttp", tmp / "remote.log"),
        "legacy": Everything("sse", tmp / "legacy.log"),
    }
    try:
        for server in found.values():
            server.start()
        yield found
    finally:
        for server in found.values():
            server.kill()


def remote_toml(name: str, url: str, **extra: Any) -> str:
    lines = ["[[mcp]]", f'name = "{name}"', f'url = "{url}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def gw(servers: dict[str, Everything], tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("remote-gateway")
    cfg = (
        server_toml(tmp)
        + POLICY_AND_REPLACEMENTS
        + child_toml("test")
        + remote_toml("remote", f"http://127.0.0.1:{servers['remote'].port}/mcp")
        + remote_toml("legacy", f"http://127.0.0.1:{servers['legacy'].port}/sse")
        + remote_toml("nowhere", f"http://127.0.0.1:{free_port()}/mcp", connect_timeout="2s")
    )
    g = GatewayProcess(tmp, cfg)
    try:
        g.wait_ready(timeout=30, expect=3)
        yield g
    finally:
        g.stop()


def children(g: GatewayProcess) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in g.health().json()["children"]}


def wait_state(g: GatewayProcess, name: str, ready: bool, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    child: dict[str, Any] = {}
    while time.monotonic() < deadline:
        child = children(g)[name]
        if (child["state"] == "ready") == ready:
            return child
        time.sleep(0.1)
    raise AssertionError(f"{name} {'never' if ready else 'still'} ready: {child}\n{g.log_text()[-3000:]}")


def test_remote_tools_are_listed_and_called_next_to_a_stdio_child(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    names = {t["name"] for t in c.request("tools/list")["result"]["tools"]}
    assert {"test__echo", "remote__echo", "legacy__echo", "remote__trigger-sampling-request"} <= names
    assert (
        text_of(c.call("remote__echo", {"message": "over streamable http"})) == "Echo: over streamable http"
    )
    assert text_of(c.call("legacy__echo", {"message": "over legacy sse"})) == "Echo: over legacy sse"
    assert text_of(c.call("legacy__get-sum", {"a": 2, "b": 3})) == "The sum of 2 and 3 is 5."
    assert text_of(c.call("test__add", {"a": 1, "b": 2})) == "3"


def test_progress_from_remote_servers_reaches_the_client(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    for server in ("remote", "legacy"):
        params = {
            "name": f"{server}__trigger-long-running-operation",
            "arguments": {"duration": 0.3, "steps": 3},
            "_meta": {"progressToken": f"p-{server}"},
        }
        resp, before = c.request_raw("tools/call", params)
        assert "Long running operation completed" in text_of(resp["result"])
        progress = [m["params"] for m in before if m.get("method") == "notifications/progress"]
        assert [p["progress"] for p in progress] == [1, 2, 3], before
        assert {p["progressToken"] for p in progress} == {f"p-{server}"}


async def test_sampling_and_elicitation_from_remote_servers(gw: GatewayProcess) -> None:
    pytest.importorskip("mcp")
    from mcp import types
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    asked: list[str] = []

    async def sampling(ctx: Any, params: Any) -> Any:
        asked.append(params.messages[0].content.text)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="sampled-by-client"), model="fake"
        )

    async def elicitation(ctx: Any, params: Any) -> Any:
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
    async with (
        streamable_http_client(gw.url + "/mcp", http_client=http) as (read, write),
        ClientSession(read, write, sampling_callback=sampling, elicitation_callback=elicitation) as session,
    ):
        await session.initialize()
        for server in ("remote", "legacy"):
            res = await session.call_tool(f"{server}__trigger-sampling-request", {"prompt": f"hi {server}"})
            text = "".join(getattr(c, "text", "") for c in res.content)
            assert not res.is_error and "sampled-by-client" in text, text
            res = await session.call_tool(f"{server}__trigger-elicitation-request", {})
            text = "".join(getattr(c, "text", "") for c in res.content)
            assert not res.is_error and "- Name: Ada" in text, text
    assert [a.endswith(f"hi {s}") for a, s in zip(asked, ("remote", "legacy"), strict=True)] == [True, True]


def test_policies_and_anonymization_apply_to_remote_tools(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    names = {t["name"] for t in c.request("tools/list")["result"]["tools"]}
    assert "remote__get-sum" not in names and "legacy__get-sum" in names
    res = c.call("remote__get-sum", {"a": 1, "b": 2})
    assert res["isError"] is True and "denied by rule 'remote/get-sum'" in text_of(res)
    # The remote server's own environment holds the real name: the client sees only the fake one.
    env_text = text_of(c.call("remote__get-env"))
    assert "WHO_RUNS_THIS" in env_text and "John Doe" in env_text and REAL_NAME not in env_text


def test_an_unreachable_server_fails_readably_and_the_others_keep_working(gw: GatewayProcess) -> None:
    nowhere = children(gw)["nowhere"]
    assert nowhere["state"] != "ready"
    assert "cannot reach http://127.0.0.1:" in nowhere["error"], nowhere
    r = gw.health()
    assert r.status_code == 503 and r.json()["status"] == "degraded"
    c = McpHttpClient(gw.url)
    assert text_of(c.call("test__echo", {"text": "still here"})) == "still here"
    names = [t["name"] for t in c.request("tools/list")["result"]["tools"]]
    assert not [n for n in names if n.startswith("nowhere__")]


def test_remote_server_restarted_mid_session(gw: GatewayProcess, servers: dict[str, Everything]) -> None:
    remote = servers["remote"]
    c = McpHttpClient(gw.url)
    assert text_of(c.call("remote__echo", {"message": "before"})) == "Echo: before"
    assert children(gw)["remote"]["state"] == "ready"
    remote.kill()
    down = wait_state(gw, "remote", ready=False, timeout=15)
    assert down["state"] in ("restarting", "connecting") and down.get("error"), down
    with httpx.Client(timeout=5) as http:  # the gateway says why, with no secret in it
        assert TOKEN not in http.get(gw.url + "/health", headers={"Authorization": f"Bearer {TOKEN}"}).text
    remote.start()  # the same port: a new server, which knows nothing of the old session
    wait_state(gw, "remote", ready=True, timeout=30)
    # The client's session survived; the gateway re-initialized upstream.
    assert text_of(c.call("remote__echo", {"message": "after"})) == "Echo: after"
    assert "session expired" in gw.log_text() or "lost its event stream" in gw.log_text()
