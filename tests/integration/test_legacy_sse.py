"""The deprecated HTTP+SSE transport (2024-11-05) through the real gateway: the official SDK's SSE
client, and a raw client for the protocol version, the checks and the session's life."""

from __future__ import annotations

import json
import queue
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .harness import ROOT, TOKEN, GatewayProcess, child_toml, server_toml

mcp = pytest.importorskip("mcp")
from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.sse import sse_client  # noqa: E402

AUTH = {"Authorization": f"Bearer {TOKEN}"}
OLD_CLIENT = ROOT / "tests" / "node" / "old_client.mjs"
OLD_SDK = ROOT / "tests" / "node" / "node_modules" / "sdk-1-10"
POLICY = '[policies]\ndefault = "allow"\n[policies.rules]\n"test/add" = "deny"\n'


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[GatewayProcess]:
    g = GatewayProcess(tmp_path, server_toml(tmp_path) + POLICY + child_toml("test"))
    g.wait_ready()
    yield g
    g.stop()


def _text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def test_the_sdk_sse_client_lists_calls_and_answers_sampling(gw: GatewayProcess) -> None:
    from mcp import types

    updates: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(progress)

    async def sampling(ctx: Any, params: Any) -> Any:
        prompt = params.messages[0].content.text
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=f"echo:{prompt}"), model="fake"
        )

    async with (
        sse_client(gw.url + "/sse", headers=AUTH) as (read, write),
        ClientSession(read, write, sampling_callback=sampling) as session,
    ):
        await session.initialize()
        names = {t.name for t in (await session.list_tools()).tools}
        assert {"test__echo", "test__sample"} <= names and "test__add" not in names  # denied: hidden
        res = await session.call_tool("test__echo", {"text": "over the old transport"})
        assert "over the old transport" in _text(res)
        res = await session.call_tool("test__progress", {"steps": 3}, progress_callback=on_progress)
        assert _text(res) == "progress done (3)"
        res = await session.call_tool("test__sample", {"prompt": "hello"})
        assert _text(res) == "sampled: echo:hello"
        res = await session.call_tool("test__add", {"a": 1, "b": 2})
        assert res.is_error, _text(res)
    assert updates == [1, 2, 3]


class SseReader:
    """GET /sse in a thread: the events as (event, data) pairs on a queue."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: queue.Queue[tuple[str, str]] = queue.Queue()
        self.status: queue.Queue[int] = queue.Queue()
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=30))
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", url, headers=headers) as resp:
                self.status.put(resp.status_code)
                event, data = "message", []
                for line in resp.iter_lines():
                    if line == "":
                        if data:
                            self.events.put((event, "\n".join(data)))
                        event, data = "message", []
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].lstrip())
        except httpx.HTTPError:
            pass

    def next(self, timeout: float = 10.0) -> tuple[str, str]:
        return self.events.get(timeout=timeout)

    def next_message(self, timeout: float = 10.0) -> dict[str, Any]:
        event, data = self.next(timeout)
        assert event == "message", (event, data)
        return json.loads(data)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._client.close()
        self._thread.join(timeout=5)


def _open(gw: GatewayProcess) -> tuple[SseReader, str]:
    reader = SseReader(gw.url + "/sse", {**AUTH, "Accept": "text/event-stream"})
    assert reader.status.get(timeout=10) == 200
    event, endpoint = reader.next()
    assert event == "endpoint" and endpoint.startswith("/messages?session_id=")
    return reader, gw.url + endpoint


def _post(url: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(url, json=body, headers={**AUTH, **(headers or {})}, timeout=10)


def test_an_old_client_gets_2024_11_05_and_its_answers_on_the_stream(gw: GatewayProcess) -> None:
    reader, endpoint = _open(gw)
    try:
        init = {
            "protocolVersion": "2024-11-05",
            "capabilities": {},
            "clientInfo": {"name": "old", "version": "1"},
        }
        r = _post(endpoint, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init})
        assert r.status_code == 202
        answer = reader.next_message()
        assert answer["id"] == 1 and answer["result"]["protocolVersion"] == "2024-11-05"
        assert _post(endpoint, {"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202
        call = {"name": "test__echo", "arguments": {"text": "legacy"}}
        assert (
            _post(endpoint, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call}).status_code
            == 202
        )
        answer = reader.next_message()
        assert answer["id"] == 2 and "legacy" in answer["result"]["content"][0]["text"]
        # Garbage gets a JSON-RPC parse error, not a 5xx; the session goes on.
        bad = httpx.post(endpoint, content=b"{nope", headers={**AUTH, "Content-Type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == -32700
        assert _post(endpoint, {"jsonrpc": "2.0", "id": 3, "method": "ping"}).status_code == 202
        assert reader.next_message() == {"jsonrpc": "2.0", "id": 3, "result": {}}
    finally:
        reader.close()
    # The stream was the session: once it is gone, its endpoint is too.
    for _ in range(50):
        r = _post(endpoint, {"jsonrpc": "2.0", "id": 4, "method": "ping"})
        if r.status_code == 404:
            break
        threading.Event().wait(0.1)
    assert r.status_code == 404
    # The legacy call was audited like any other.
    conn = sqlite3.connect(gw.config_path.parent / "data" / "gateway.db")
    try:
        rows = conn.execute("SELECT tool, decision, outcome FROM audit").fetchall()
    finally:
        conn.close()
    assert ("test/echo", "allow", "ok") in rows


def test_the_legacy_endpoints_keep_the_gateway_checks(gw: GatewayProcess) -> None:
    assert httpx.get(gw.url + "/sse", timeout=10).status_code == 401
    bad_token = {"Authorization": "Bearer wrong-token-0123456789"}
    assert httpx.get(gw.url + "/sse", headers=bad_token, timeout=10).status_code == 401
    evil = {**AUTH, "Origin": "https://evil.example"}
    assert httpx.get(gw.url + "/sse", headers=evil, timeout=10).status_code == 403
    assert httpx.post(gw.url + "/sse", headers=AUTH, timeout=10).status_code == 405
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    assert _post(gw.url + "/messages", ping).status_code == 400  # no session_id
    assert _post(gw.url + "/messages?session_id=nope", ping).status_code == 404
    reader, endpoint = _open(gw)
    try:
        assert httpx.post(endpoint, json=ping, timeout=10).status_code == 401  # the session id is not enough
        # A Streamable HTTP session id is not a legacy endpoint, and the other way round.
        sid = endpoint.rsplit("=", 1)[1]
        headers = {**AUTH, "Mcp-Session-Id": sid, "Accept": "application/json, text/event-stream"}
        r = httpx.post(gw.url + "/mcp", json=ping, headers=headers, timeout=10)
        assert r.status_code == 404
    finally:
        reader.close()


@pytest.mark.skipif(
    not OLD_SDK.exists() or shutil.which("node") is None,
    reason="run `npm install --prefix tests/node` first (.ci/run does)",
)
@pytest.mark.parametrize("kind", ["http", "sse"])
def test_the_typescript_sdk_1_10_connects_over_both_transports(gw: GatewayProcess, kind: str) -> None:
    # SDK 1.10.2 asks for 2024-11-05 and refuses any other answer ("Server's protocol version is not
    # supported"), over Streamable HTTP as over the legacy transport.
    out = subprocess.run(
        ["node", str(OLD_CLIENT), gw.url, kind, TOKEN], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["server"]["name"] == "portero"
    assert "test__echo" in got["tools"] and "test__add" not in got["tools"]
    assert "from 2024" in got["text"]
