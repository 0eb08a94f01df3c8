"""HttpTransport (Streamable HTTP and legacy HTTP+SSE) against a scripted MCP server behind
``httpx.MockTransport``: no sockets, so reconnection delays run on Trio's autojump clock. The real
network path is what tests/integration/test_remote_http.py covers, with server-everything."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from portero.config import McpServer
from portero.core import jsonrpc
from portero.upstream.auth import NeedsLogin, StaticCredentials
from portero.upstream.http import MIN_RECONNECT_DELAY, HttpTransport, RemoteError
from portero.upstream.peer import Peer, UpstreamGone
from portero.upstream.supervisor import Upstream

URL = "https://mcp.example/mcp"
MAX = 1 << 20
INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
# What the transport may send: the credentials' headers, its own, and HTTP framing.
ALLOWED = {
    "host", "content-length", "user-agent", "accept", "content-type", "mcp-session-id",
    "mcp-protocol-version", "last-event-id", "x-team", "authorization",
}  # fmt: skip


def sse(*messages: Any, ids: list[str] | None = None) -> bytes:
    out = b""
    for i, msg in enumerate(messages):
        if ids:
            out += f"id: {ids[i]}\n".encode()
        out += b"data: " + json.dumps(msg).encode() + b"\n\n"
    return out


def result(rid: Any, value: Any) -> dict[str, Any]:
    return jsonrpc.result_response(rid, value)


class Stream:
    """A response body sent a piece at a time: ``put`` bytes, ``end`` it."""

    def __init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel[bytes](100)

    async def body(self) -> AsyncIterator[bytes]:
        async for chunk in self.recv:
            yield chunk

    def put(self, data: bytes) -> None:
        self.send.send_nowait(data)

    def end(self) -> None:
        self.send.close()


class FakeServer:
    """A Streamable HTTP MCP server. ``tools/call`` runs ``tools[name](msg)``; every request is
    recorded in ``seen`` (method, headers, JSON body)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, httpx.Headers, Any]] = []
        self.sessions = {"s-1"}
        self.next_session = "s-1"
        self.get_status = 405
        self.get_streams: list[Stream] = []
        self.client_answers: list[dict[str, Any]] = []
        self.answered = trio.Event()
        self.tools: dict[str, Callable[[dict[str, Any]], Awaitable[httpx.Response]]] = {}
        self.status_for_initialize = 200
        self.unknown_session_status = 404  # the spec's; server-everything answers a GET 400

    def posts(self, method: str | None = None) -> list[Any]:
        return [b for m, _, b in self.seen if m == "POST" and (method is None or b.get("method") == method)]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.seen.append((request.method, request.headers, body))
        session = request.headers.get("mcp-session-id")
        if request.method == "DELETE":
            self.sessions.discard(session or "")
            return httpx.Response(200)
        if request.method == "GET":
            if session not in self.sessions:
                return httpx.Response(self.unknown_session_status)
            if self.get_status != 200:
                return httpx.Response(self.get_status)
            stream = Stream()
            self.get_streams.append(stream)
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream.body())
        assert isinstance(body, dict)
        if body.get("method") == "initialize":
            if self.status_for_initialize != 200:
                return httpx.Response(self.status_for_initialize)
            return httpx.Response(
                200,
                json=result(body["id"], {"protocolVersion": "2025-03-26", "capabilities": {"tools": {}}}),
                headers={"mcp-session-id": self.next_session},
            )
        if session not in self.sessions:
            return httpx.Response(404)
        if "method" not in body:
            self.client_answers.append(body)
            self.answered.set()
            return httpx.Response(202)
        if "id" not in body:
            return httpx.Response(202)
        if body["method"] == "tools/call":
            return await self.tools[body["params"]["name"]](body)
        return httpx.Response(200, json=result(body["id"], {"tools": [{"name": "echo"}]}))


async def until(cond: Callable[[], bool], timeout: float = 10) -> None:
    """Wait (bounded) until ``cond()`` holds: the transport's tasks run on their own."""
    with trio.fail_after(timeout):
        while True:
            if cond():
                return
            await trio.sleep(0.01)


async def no_handler(peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
    raise AssertionError(f"unexpected {msg}")


def transport(
    server: Any, *, mode: str = "auto", headers: dict[str, str] | None = None, credentials: Any = None
) -> HttpTransport:
    cfg = McpServer(name="remote", url=URL, transport=mode, headers=headers or {"X-Team": "t1"})
    creds = credentials or StaticCredentials(cfg.headers, "secret-token")
    return HttpTransport(cfg, creds, http_transport=httpx.MockTransport(server))


async def initialize(peer: Peer) -> dict[str, Any]:
    resp = await peer.request("initialize", INIT, timeout=5)
    await peer.notify("notifications/initialized")
    return resp


async def test_json_answers_session_and_headers(autojump_clock: trio.testing.MockClock) -> None:
    server = FakeServer()
    async with transport(server).open("remote", no_handler, MAX) as peer:
        resp = await initialize(peer)
        assert resp["result"]["protocolVersion"] == "2025-03-26"
        listed = await peer.request("tools/list", timeout=5)
        assert listed["result"]["tools"] == [{"name": "echo"}]
    methods = [f"{m} {(b or {}).get('method', '')}".strip() for m, _, b in server.seen]
    assert methods[:2] == ["POST initialize", "POST notifications/initialized"]
    # The GET (the server's own stream: 405, none offered) and tools/list run side by side.
    assert sorted(methods[2:4]) == ["GET", "POST tools/list"] and methods[4:] == ["DELETE"]
    init_headers = server.seen[0][1]
    assert init_headers["accept"] == "application/json, text/event-stream"
    assert init_headers["content-type"] == "application/json"
    assert init_headers["authorization"] == "Bearer secret-token" and init_headers["x-team"] == "t1"
    assert "mcp-session-id" not in init_headers and "mcp-protocol-version" not in init_headers
    for method, headers, _ in server.seen[1:]:
        assert headers["mcp-session-id"] == "s-1", method
        assert headers["mcp-protocol-version"] == "2025-03-26", method
    for _, headers, _ in server.seen:
        assert set(headers.keys()) <= ALLOWED, headers.keys()
    assert server.sessions == set()  # DELETEd when the block exited


async def test_sse_answer_with_progress_and_a_server_request(autojump_clock: trio.testing.MockClock) -> None:
    server = FakeServer()
    seen: list[dict[str, Any]] = []

    async def handler(peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
        seen.append(msg)
        if msg.get("method") == "sampling/createMessage":
            return result(msg["id"], {"role": "assistant", "content": {"type": "text", "text": "hi"}})
        return None

    async def sample(body: dict[str, Any]) -> httpx.Response:
        stream = Stream()
        token = body["params"]["_meta"]["progressToken"]
        progress = jsonrpc.notification("notifications/progress", {"progressToken": token, "progress": 1})
        ask = jsonrpc.request("srv-1", "sampling/createMessage", {"messages": []})
        stream.put(sse(progress, ask, ids=["e1", "e2"]))

        async def finish() -> None:
            await server.answered.wait()
            text = server.client_answers[0]["result"]["content"]["text"]
            stream.put(sse(result(body["id"], {"content": [{"type": "text", "text": f"sampled {text}"}]})))
            stream.end()

        nursery.start_soon(finish)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream.body())

    server.tools["sample"] = sample
    async with trio.open_nursery() as nursery:
        async with transport(server).open("remote", handler, MAX) as peer:
            await initialize(peer)
            params = {"name": "sample", "arguments": {}, "_meta": {"progressToken": 7}}
            resp = await peer.request("tools/call", params, timeout=5)
    assert resp["result"]["content"][0]["text"] == "sampled hi"
    assert [m.get("method") for m in seen] == ["notifications/progress", "sampling/createMessage"]
    assert server.client_answers[0]["id"] == "srv-1"


async def test_a_slow_call_does_not_hold_up_another(autojump_clock: trio.testing.MockClock) -> None:
    server = FakeServer()
    release = trio.Event()
    order: list[str] = []

    async def slow(body: dict[str, Any]) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json=result(body["id"], {"content": []}))

    async def fast(body: dict[str, Any]) -> httpx.Response:
        return httpx.Response(200, json=result(body["id"], {"content": []}))

    server.tools.update(slow=slow, fast=fast)
    async with transport(server).open("remote", no_handler, MAX) as peer:
        await initialize(peer)

        async def call(name: str) -> None:
            await peer.request("tools/call", {"name": name}, timeout=60)
            order.append(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "slow")
            await trio.sleep(1)
            nursery.start_soon(call, "fast")
            await trio.sleep(1)
            assert order == ["fast"]
            release.set()
    assert order == ["fast", "slow"]


async def test_cancelled_request_aborts_its_post_after_telling_the_server(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer()
    aborted = trio.Event()

    async def hang(body: dict[str, Any]) -> httpx.Response:
        async def body_forever() -> AsyncIterator[bytes]:
            try:
                await trio.sleep_forever()
                yield b""
            finally:
                aborted.set()

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body_forever())

    server.tools["hang"] = hang
    async with transport(server).open("remote", no_handler, MAX) as peer:
        await initialize(peer)
        with pytest.raises(jsonrpc.RpcError) as err:
            await peer.request("tools/call", {"name": "hang"}, timeout=3)
        assert err.value.code == jsonrpc.REQUEST_TIMEOUT
        with trio.fail_after(5):
            await aborted.wait()
    cancels = server.posts("notifications/cancelled")
    assert len(cancels) == 1 and cancels[0]["params"]["requestId"] == server.posts("tools/call")[0]["id"]


async def test_404_with_a_session_ends_the_peer(autojump_clock: trio.testing.MockClock) -> None:
    server = FakeServer()
    async with transport(server).open("remote", no_handler, MAX) as peer:
        await initialize(peer)
        server.sessions.clear()  # the server restarted and forgot us
        with pytest.raises(UpstreamGone, match="session expired; re-initializing"):
            await peer.request("tools/list", timeout=5)
        assert peer.dead.is_set()
    assert [m for m, _, _ in server.seen].count("DELETE") == 0  # nothing left to end


@pytest.mark.parametrize(("status", "reason"), [(404, "session expired"), (400, "answered HTTP 400")])
async def test_the_supervisor_reinitializes_after_the_session_expired(
    status: int, reason: str, autojump_clock: trio.testing.MockClock
) -> None:
    server = FakeServer()
    server.unknown_session_status = status
    server.get_status = 200
    cfg = McpServer(name="remote", url=URL)
    up = Upstream(
        cfg,
        transport(server),
        max_message_bytes=MAX,
        handler=no_handler,
        on_catalog_change=lambda: None,
        client_info={"name": "portero", "version": "0"},
        clock=trio.current_time,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(up.run)
        with trio.fail_after(10):
            await up.ready.wait()
        await until(lambda: len(server.get_streams) == 1)
        assert up.state == "ready" and [t["name"] for t in up.listing.tools] == ["echo"]
        server.sessions.clear()
        server.next_session = "s-2"
        server.sessions.add("s-2")
        server.get_streams[0].end()  # the GET stream breaks; the reconnect is told 404
        await until(lambda: up.state != "ready")
        assert reason in up.last_error
        await until(lambda: up.state == "ready")
        assert up.peer is not None
        assert (await up.peer.request("tools/list", timeout=5))["result"]["tools"] == [{"name": "echo"}]
        assert server.seen[-1][1]["mcp-session-id"] == "s-2"
        nursery.cancel_scope.cancel()


async def test_get_stream_reconnects_with_last_event_id(autojump_clock: trio.testing.MockClock) -> None:
    server = FakeServer()
    server.get_status = 200
    got: list[dict[str, Any]] = []

    async def handler(peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
        got.append(msg)
        return None

    async with transport(server).open("remote", handler, MAX) as peer:
        await initialize(peer)
        await until(lambda: len(server.get_streams) == 1)
        first = server.get_streams[0]
        first.put(
            b"retry: 2500\n" + sse(jsonrpc.notification("notifications/tools/list_changed"), ids=["41"])
        )
        first.end()
        await until(lambda: len(server.get_streams) == 2)
        server.get_streams[1].put(sse(jsonrpc.notification("notifications/prompts/list_changed"), ids=["42"]))
        await until(lambda: len(got) == 2)
    gets = [h for m, h, _ in server.seen if m == "GET"]
    assert "last-event-id" not in gets[0] and gets[1]["last-event-id"] == "41"
    assert [m["method"] for m in got] == [
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
    ]


async def test_a_get_stream_that_ends_at_once_with_retry_0_is_not_reopened_in_a_busy_loop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer()
    server.get_status = 200
    opened_at: list[float] = []
    serve = server.__call__

    async def app(request: httpx.Request) -> httpx.Response:
        if request.method != "GET" or len(opened_at) >= 10:
            return await serve(request)
        opened_at.append(trio.current_time())
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=b"retry: 0\n\n")

    async with transport(app).open("remote", no_handler, MAX) as peer:
        await initialize(peer)
        await until(lambda: len(opened_at) == 10)
    gaps = [b - a for a, b in zip(opened_at, opened_at[1:], strict=False)]
    assert min(gaps) >= MIN_RECONNECT_DELAY, gaps


async def test_a_lost_post_stream_is_resumed_with_get(autojump_clock: trio.testing.MockClock) -> None:
    server = FakeServer()
    resumed = Stream()

    async def flaky(body: dict[str, Any]) -> httpx.Response:
        stream = Stream()
        stream.put(b"id: p-1\ndata:\n\n")  # a priming event, then the server closes the stream
        stream.end()
        resumed.put(sse(result(body["id"], {"content": [{"type": "text", "text": "late"}]}), ids=["p-2"]))
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=stream.body())

    server.tools["flaky"] = flaky
    real_call = server.__call__

    async def with_resume(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.headers.get("last-event-id") == "p-1":
            server.seen.append(("GET", request.headers, None))
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=resumed.body())
        return await real_call(request)

    async with transport(with_resume).open("remote", no_handler, MAX) as peer:
        await initialize(peer)
        resp = await peer.request("tools/call", {"name": "flaky"}, timeout=10)
    assert resp["result"]["content"][0]["text"] == "late"


async def test_a_stream_that_ends_unanswered_and_unresumable_is_an_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = FakeServer()

    async def mute(body: dict[str, Any]) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=b": nothing\n\n")

    server.tools["mute"] = mute
    async with transport(server).open("remote", no_handler, MAX) as peer:
        await initialize(peer)
        resp = await peer.request("tools/call", {"name": "mute"}, timeout=10)
    assert "ended the stream before answering" in resp["error"]["message"]


@pytest.mark.parametrize(
    ("status", "content_type", "body", "expect"),
    [
        (503, "text/html", b"<h1>down</h1>", "answered HTTP 503"),
        (200, "text/html", b"<html></html>", "answered with text/html, not MCP"),
        (400, "application/json", b'{"jsonrpc":"2.0","id":null,"error":{"code":-32602,"message":"bad args"}}',
         "bad args"),
        (202, "", b"", "accepted a request but sent no answer"),
    ],
)  # fmt: skip
async def test_non_mcp_answers_are_errors_for_the_caller(
    status: int, content_type: str, body: bytes, expect: str, autojump_clock: trio.testing.MockClock
) -> None:
    server = FakeServer()

    async def odd(msg: dict[str, Any]) -> httpx.Response:
        return httpx.Response(status, headers={"content-type": content_type}, content=body)

    server.tools["odd"] = odd
    async with transport(server).open("remote", no_handler, MAX) as peer:
        await initialize(peer)
        resp = await peer.request("tools/call", {"name": "odd"}, timeout=5)
        assert expect in resp["error"]["message"]
        assert not peer.dead.is_set()  # one bad answer does not end the connection


async def test_an_oversize_answer_is_refused() -> None:
    server = FakeServer()

    async def huge(msg: dict[str, Any]) -> httpx.Response:
        return httpx.Response(200, json=result(msg["id"], {"content": "x" * 5000}))

    server.tools["huge"] = huge
    async with transport(server).open("remote", no_handler, 4096) as peer:
        await initialize(peer)
        resp = await peer.request("tools/call", {"name": "huge"}, timeout=5)
    assert "more than 4096 bytes" in resp["error"]["message"]


class RotatingCredentials:
    """A first token the server refuses, a second it takes; or NeedsLogin when out of tokens."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.challenges: list[str | None] = []

    async def headers(self) -> dict[str, str]:
        if not self.tokens:
            raise NeedsLogin("needs a login: portero login remote")
        return {"Authorization": f"Bearer {self.tokens[0]}"}

    async def unauthorized(self, www_authenticate: str | None) -> bool:
        self.challenges.append(www_authenticate)
        self.tokens.pop(0)
        if not self.tokens:
            raise NeedsLogin("needs a login: portero login remote")
        return True

    async def changed(self) -> None:
        await trio.sleep_forever()


def guarded(server: FakeServer, token: str) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
    async def handle(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {token}":
            server.seen.append((request.method, request.headers, None))
            return httpx.Response(401, headers={"www-authenticate": 'Bearer resource_metadata="x"'})
        return await server(request)

    return handle


async def test_401_asks_the_credentials_and_retries_once() -> None:
    server = FakeServer()
    creds = RotatingCredentials(["old", "new"])
    async with transport(guarded(server, "new"), credentials=creds).open("remote", no_handler, MAX) as peer:
        resp = await initialize(peer)
        assert "result" in resp
    assert creds.challenges == ['Bearer resource_metadata="x"']


async def test_a_401_the_credentials_cannot_fix_raises_needs_login_from_open() -> None:
    server = FakeServer()
    creds = RotatingCredentials(["old"])
    with pytest.raises(NeedsLogin):
        async with transport(guarded(server, "new"), credentials=creds).open(
            "remote", no_handler, MAX
        ) as peer:
            with pytest.raises(UpstreamGone, match="needs a login"):
                await peer.request("initialize", INIT, timeout=5)


async def test_a_refused_static_token_is_a_readable_error() -> None:
    server = FakeServer()
    async with transport(guarded(server, "other")).open("remote", no_handler, MAX) as peer:
        resp = await peer.request("initialize", INIT, timeout=5)
    assert resp["error"]["message"] == "server remote: https://mcp.example refused the credentials (HTTP 401)"
    assert "secret-token" not in json.dumps(resp)


async def test_an_unreachable_server_is_a_readable_error_without_secrets() -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    cfg = McpServer(name="remote", url="https://mcp.example/mcp?key=SECRETKEY")
    t = HttpTransport(cfg, StaticCredentials({}, "tok"), http_transport=httpx.MockTransport(refuse))
    async with t.open("remote", no_handler, MAX) as peer:
        resp = await peer.request("initialize", INIT, timeout=5)
    msg = resp["error"]["message"]
    assert (
        msg
        == "server remote: cannot reach https://mcp.example (ConnectError: [Errno 111] Connection refused)"
    )
    with pytest.raises(OSError, match="cannot reach https://mcp.example"):
        async with HttpTransport(
            McpServer(name="remote", url=cfg.url, transport="sse"),
            StaticCredentials({}, "tok"),
            http_transport=httpx.MockTransport(refuse),
        ).open("remote", no_handler, MAX):
            raise AssertionError("not reached")


class LegacyServer:
    """The 2024-11-05 transport: GET /sse gives an endpoint event; POSTs to it are answered on
    the stream. Streamable HTTP POSTs to /sse get 405."""

    def __init__(self, endpoint: str = "/messages?session=abc") -> None:
        self.endpoint = endpoint
        self.stream = Stream()
        self.seen: list[tuple[str, str, httpx.Headers]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, str(request.url), request.headers))
        if request.url.path == "/sse" and request.method == "POST":
            return httpx.Response(405)
        if request.url.path == "/sse" and request.method == "GET":
            self.stream.put(f"event: endpoint\ndata: {self.endpoint}\n\n".encode())
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=self.stream.body()
            )
        if request.url.path == "/messages" and request.url.params.get("session") == "abc":
            msg = json.loads(request.content)
            if msg.get("method") == "initialize":
                self.stream.put(sse(result(msg["id"], {"protocolVersion": "2024-11-05", "capabilities": {}})))
            elif msg.get("method") == "tools/list":
                progress = jsonrpc.notification("notifications/message", {"level": "info", "data": "hi"})
                self.stream.put(sse(progress, result(msg["id"], {"tools": [{"name": "legacy"}]})))
            return httpx.Response(202, text="Accepted")
        return httpx.Response(404)


@pytest.mark.parametrize("mode", ["auto", "sse"])
async def test_legacy_sse_transport(mode: str, autojump_clock: trio.testing.MockClock) -> None:
    server = LegacyServer()
    logs: list[dict[str, Any]] = []

    async def handler(peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
        logs.append(msg)
        return None

    cfg = McpServer(name="old", url="https://mcp.example/sse", transport=mode, headers={"X-Team": "t1"})
    t = HttpTransport(cfg, StaticCredentials(cfg.headers), http_transport=httpx.MockTransport(server))
    async with t.open("old", handler, MAX) as peer:
        resp = await initialize(peer)
        assert resp["result"]["protocolVersion"] == "2024-11-05"
        listed = await peer.request("tools/list", timeout=5)
        assert listed["result"]["tools"] == [{"name": "legacy"}]
        assert [m["method"] for m in logs] == ["notifications/message"]
        server.stream.end()  # the server goes away: the peer ends, the supervisor reconnects
        with trio.fail_after(5):
            await peer.dead.wait()
        assert "closed its event stream" in peer.close_reason
    posts = [(url, h) for m, url, h in server.seen if m == "POST" and "/messages" in url]
    assert len(posts) == 3 and all(url == "https://mcp.example/messages?session=abc" for url, _ in posts)
    assert all(h["x-team"] == "t1" and "mcp-session-id" not in h for _, h in posts)
    first = [m for m, _, _ in server.seen][:2]
    assert first == (["POST", "GET"] if mode == "auto" else ["GET", "POST"])


async def test_streamable_http_mode_never_falls_back() -> None:
    server = LegacyServer()
    cfg = McpServer(name="old", url="https://mcp.example/sse", transport="streamable-http")
    t = HttpTransport(cfg, StaticCredentials({}), http_transport=httpx.MockTransport(server))
    async with t.open("old", no_handler, MAX) as peer:
        resp = await peer.request("initialize", INIT, timeout=5)
    assert "answered HTTP 405" in resp["error"]["message"]
    assert [m for m, _, _ in server.seen] == ["POST"]


async def test_legacy_endpoint_on_another_origin_is_refused() -> None:
    server = LegacyServer(endpoint="https://evil.example/messages?session=abc")
    cfg = McpServer(name="old", url="https://mcp.example/sse", transport="sse")
    t = HttpTransport(cfg, StaticCredentials({}, "tok"), http_transport=httpx.MockTransport(server))
    with pytest.raises(RemoteError, match="another origin"):
        async with t.open("old", no_handler, MAX):
            raise AssertionError("not reached")
    assert all("evil" not in url for _, url, _ in server.seen)


async def test_a_redirect_to_another_origin_keeps_no_credentials() -> None:
    server = FakeServer()
    seen: list[httpx.Headers] = []

    async def redirect(request: httpx.Request) -> httpx.Response:
        if request.url.host == "mcp.example":
            return httpx.Response(307, headers={"location": "https://other.example/mcp"})
        seen.append(request.headers)
        return await server(request)

    async with transport(redirect).open("remote", no_handler, MAX) as peer:
        resp = await peer.request("initialize", INIT, timeout=5)
    assert "result" in resp
    assert "authorization" not in seen[0] and "x-team" not in seen[0]
    assert seen[0]["content-type"] == "application/json"


async def test_redirects_are_bounded() -> None:
    async def loop(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": str(request.url)})

    async with transport(loop).open("remote", no_handler, MAX) as peer:
        resp = await peer.request("initialize", INIT, timeout=5)
    assert "more than 5 redirects" in resp["error"]["message"]


async def test_credentials_needing_a_login_at_the_first_request() -> None:
    creds = RotatingCredentials([])
    with pytest.raises(NeedsLogin):
        async with transport(FakeServer(), credentials=creds).open("remote", no_handler, MAX) as peer:
            with pytest.raises(UpstreamGone):
                await peer.request("initialize", INIT, timeout=math.inf)


async def test_a_missing_ca_file_is_an_os_error(tmp_path: Any) -> None:
    cfg = McpServer(name="remote", url=URL, ca_file=str(tmp_path / "nope.pem"))
    with pytest.raises(OSError):
        async with HttpTransport(cfg, StaticCredentials({})).open("remote", no_handler, MAX):
            raise AssertionError("not reached")
