"""The WebSocket transport against real WebSocket servers on 127.0.0.1, in-process: our small MCP
server (tests/servers/ws_server.py), and a few hostile ones written here (one that never answers the
upgrade, one that never answers a ping, one that speaks no TLS)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import wsproto
import wsproto.events
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from portero.config import McpServer
from portero.upstream.auth import StaticCredentials
from portero.upstream.peer import Peer
from portero.upstream.websocket import WebSocketTransport, close_text
from tests.servers import ws_server

MAX = 1 << 20
WAIT = 5.0  # every wait in these tests is bounded by this


class Recorder:
    """The gateway's side of the server's own messages: notifications are kept, sampling answered."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
        self.seen.append(msg)
        if msg.get("method") == "sampling/createMessage":
            text = msg["params"]["messages"][0]["content"]["text"]
            return {
                "jsonrpc": "2.0",
                "id": msg["id"],
                "result": {"role": "assistant", "content": {"type": "text", "text": text.upper()}},
            }
        return None


def transport(
    url: str, *, token: str = "", headers: dict[str, str] | None = None, **kw: Any
) -> WebSocketTransport:
    cfg_keys = {k: kw.pop(k) for k in ("ca_file", "connect_timeout") if k in kw}
    cfg = McpServer(name="remote", url=url, headers=headers or {}, **cfg_keys)
    return WebSocketTransport(cfg, StaticCredentials(cfg.headers, token), **kw)


async def start_server(nursery: trio.Nursery, **kw: Any) -> int:
    port: int = await nursery.start(functools.partial(ws_server.serve, **kw))
    return port


async def initialize(peer: Peer) -> None:
    with trio.fail_after(WAIT):
        resp = await peer.request(
            "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t"}}
        )
        assert resp["result"]["serverInfo"]["name"] == "ws"
        await peer.notify("notifications/initialized")


async def call(peer: Peer, tool: str, arguments: dict[str, Any] | None = None, **params: Any) -> str:
    with trio.fail_after(WAIT):
        resp = await peer.request("tools/call", {"name": tool, "arguments": arguments or {}, **params})
    return "".join(c["text"] for c in resp["result"]["content"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ------------------------------------------------------------------------------ the happy paths


async def test_request_response_and_tools(nursery: trio.Nursery) -> None:
    port = await start_server(nursery)
    t = transport(f"ws://127.0.0.1:{port}/mcp")
    async with t.open("remote", Recorder(), MAX) as peer:
        await initialize(peer)
        with trio.fail_after(WAIT):
            tools = (await peer.request("tools/list"))["result"]["tools"]
        assert {"echo", "whoami", "progress", "ask"} <= {x["name"] for x in tools}
        assert await call(peer, "echo", {"text": "héllo\nworld"}) == "héllo\nworld"
    assert t.returncode is None
    assert peer.dead.is_set()


async def test_notifications_and_server_requests_reach_the_handler(nursery: trio.Nursery) -> None:
    port = await start_server(nursery)
    rec = Recorder()
    async with transport(f"ws://127.0.0.1:{port}/mcp").open("remote", rec, MAX) as peer:
        await initialize(peer)
        text = await call(peer, "progress", {"steps": 3}, _meta={"progressToken": "tok"})
        assert text == "progress done (3)"
        progress = [m["params"] for m in rec.seen if m.get("method") == "notifications/progress"]
        assert progress == [{"progressToken": "tok", "progress": i, "total": 3} for i in (1, 2, 3)]
        assert await call(peer, "ask", {"prompt": "hi there"}) == "sampled: HI THERE"


async def test_headers_reach_the_server(nursery: trio.Nursery) -> None:
    port = await start_server(nursery, require_token="s3cret")
    t = transport(f"ws://127.0.0.1:{port}/mcp", token="s3cret", headers={"X-Team": "core"})
    async with t.open("remote", Recorder(), MAX) as peer:
        await initialize(peer)
        seen = json.loads(await call(peer, "whoami"))["headers"]
    assert seen == {"authorization": "Bearer s3cret", "x-team": "core"}


async def test_junk_frames_are_ignored_and_logged_without_content(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    port = await start_server(nursery)
    caplog.set_level(logging.DEBUG, logger="portero.upstream")
    async with transport(f"ws://127.0.0.1:{port}/mcp").open("remote", Recorder(), MAX) as peer:
        await initialize(peer)
        assert await call(peer, "junk") == "after junk"
        assert await call(peer, "echo", {"text": "still here"}) == "still here"
        assert not peer.dead.is_set()
    logged = caplog.text
    assert "ignoring a binary frame (8 bytes)" in logged
    assert "ignoring a text frame that is not JSON-RPC (20 characters)" in logged
    assert "{{{" not in logged and "binary\\xff" not in logged


async def test_a_flood_of_junk_disconnects(nursery: trio.Nursery) -> None:
    async def flood(request: WebSocketRequest) -> None:
        ws = await request.accept(subprotocol="mcp")
        with contextlib.suppress(ConnectionClosed):
            for _ in range(500):
                await ws.send_message(b"\x00")

    server = await nursery.start(serve_websocket, flood, "127.0.0.1", 0, None)
    async with transport(f"ws://127.0.0.1:{server.port}/").open("remote", Recorder(), MAX) as peer:
        with trio.fail_after(WAIT):
            await peer.dead.wait()
    assert "sent 100 frames in a row that are not JSON-RPC" in peer.close_reason


# ------------------------------------------------------------------------------ the connection ends


async def test_server_closing_ends_the_peer_with_the_close_code(nursery: trio.Nursery) -> None:
    port = await start_server(nursery)
    async with transport(f"ws://127.0.0.1:{port}/mcp").open("remote", Recorder(), MAX) as peer:
        await initialize(peer)
        # The answer sent just before the close still arrives.
        assert await call(peer, "close", {"code": 4001}) == "closing"
        with trio.fail_after(WAIT):
            await peer.dead.wait()
    assert (
        peer.close_reason
        == "server remote closed the connection (code 4001 PRIVATE_RESERVED: asked to close)"
    )


async def test_a_message_over_the_limit_closes_with_1009(nursery: trio.Nursery) -> None:
    port = await start_server(nursery)
    async with transport(f"ws://127.0.0.1:{port}/mcp").open("remote", Recorder(), 4096) as peer:
        await initialize(peer)
        with trio.fail_after(WAIT):
            resp_or_gone = await trio_outcome(
                peer.request("tools/call", {"name": "echo", "arguments": {"text": "x" * 8000}})
            )
        assert resp_or_gone == "gone"
        with trio.fail_after(WAIT):
            await peer.dead.wait()
    assert "code 1009 MESSAGE_TOO_BIG" in peer.close_reason


async def trio_outcome(awaitable: Any) -> str:
    from portero.upstream.peer import UpstreamGone

    try:
        await awaitable
    except UpstreamGone:
        return "gone"
    return "answered"


async def test_a_server_that_never_pongs_is_dead(nursery: trio.Nursery) -> None:
    """Upgrade by hand with wsproto, then never read again: no pong ever comes back."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def silent(stream: trio.SocketStream) -> None:
        conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        while True:
            conn.receive_data(await stream.receive_some(65536))
            for event in conn.events():
                if isinstance(event, wsproto.events.Request):
                    await stream.send_all(conn.send(wsproto.events.AcceptConnection(subprotocol="mcp")))
                    await trio.sleep(WAIT * 2)
                    return

    nursery.start_soon(functools.partial(trio.serve_listeners, silent, listeners))
    t = transport(f"ws://127.0.0.1:{port}/", ping_interval=0.1, ping_timeout=0.2)
    async with t.open("remote", Recorder(), MAX) as peer:
        with trio.fail_after(WAIT):
            await peer.dead.wait()
    assert peer.close_reason == "server remote did not answer a ping within 0.2s"


def test_close_text_for_a_lost_connection() -> None:
    assert close_text("r", None) == "connection to server r lost"


# ------------------------------------------------------------------------------ failing to connect


async def test_a_refused_connection_is_an_oserror() -> None:
    port = free_port()
    with pytest.raises(OSError, match=rf"cannot connect to 127\.0\.0\.1:{port}"):
        async with transport(f"ws://127.0.0.1:{port}/mcp").open("remote", Recorder(), MAX):
            pass  # pragma: no cover


async def test_401_with_a_static_token_is_an_unauthorized_oserror(nursery: trio.Nursery) -> None:
    port = await start_server(nursery, require_token="right")
    t = transport(f"ws://127.0.0.1:{port}/mcp", token="wrong-token-value")
    with pytest.raises(OSError, match="HTTP 401 unauthorized") as info:
        async with t.open("remote", Recorder(), MAX):
            pass  # pragma: no cover
    assert "wrong-token-value" not in str(info.value)


async def test_401_retries_once_when_the_credentials_renew(nursery: trio.Nursery) -> None:
    port = await start_server(nursery, require_token="fresh")

    class Renewing:
        def __init__(self) -> None:
            self.token = "stale"
            self.challenges: list[str | None] = []

        async def headers(self) -> dict[str, str]:
            return {"Authorization": f"Bearer {self.token}"}

        async def unauthorized(self, www_authenticate: str | None) -> bool:
            self.challenges.append(www_authenticate)
            self.token = "fresh"
            return True

        async def changed(self) -> None:
            await trio.sleep_forever()  # pragma: no cover

    creds = Renewing()
    t = WebSocketTransport(McpServer(name="remote", url=f"ws://127.0.0.1:{port}/mcp"), creds)
    async with t.open("remote", Recorder(), MAX) as peer:
        await initialize(peer)
    assert creds.challenges == ['Bearer realm="ws"']


async def test_a_handshake_refused_for_another_reason(nursery: trio.Nursery) -> None:
    async def refuse(request: WebSocketRequest) -> None:
        await request.reject(403, body=b"go away")

    server = await nursery.start(serve_websocket, refuse, "127.0.0.1", 0, None)
    with pytest.raises(OSError, match="WebSocket handshake refused: HTTP 403"):
        async with transport(f"ws://127.0.0.1:{server.port}/").open("remote", Recorder(), MAX):
            pass  # pragma: no cover


async def test_no_answer_to_the_upgrade_times_out(nursery: trio.Nursery) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def mute(stream: trio.SocketStream) -> None:
        await trio.sleep(WAIT * 2)

    nursery.start_soon(functools.partial(trio.serve_listeners, mute, listeners))
    t = transport(f"ws://127.0.0.1:{port}/", connect_timeout=0.3)
    with (
        trio.fail_after(WAIT),
        pytest.raises(OSError, match="no answer to the WebSocket handshake within 0.3s"),
    ):
        async with t.open("remote", Recorder(), MAX):
            pass  # pragma: no cover


# ------------------------------------------------------------------------------ TLS


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_port(nursery: trio.Nursery, certificate: tuple[Path, Path]) -> AsyncIterator[int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    yield await start_server(nursery, ssl_context=context)


async def test_wss_with_ca_file(tls_port: int, certificate: tuple[Path, Path]) -> None:
    t = transport(f"wss://127.0.0.1:{tls_port}/mcp", ca_file=str(certificate[0]))
    async with t.open("remote", Recorder(), MAX) as peer:
        await initialize(peer)
        assert await call(peer, "echo", {"text": "over tls"}) == "over tls"


async def test_wss_verifies_the_certificate(tls_port: int) -> None:
    with pytest.raises(OSError, match=rf"TLS handshake with 127\.0\.0\.1:{tls_port} failed: .*certificate"):
        async with transport(f"wss://127.0.0.1:{tls_port}/mcp").open("remote", Recorder(), MAX):
            pass  # pragma: no cover


async def test_wss_to_a_plain_server(nursery: trio.Nursery) -> None:
    port = await start_server(nursery)
    with trio.fail_after(WAIT), pytest.raises(OSError, match="TLS handshake with 127.0.0.1"):
        async with transport(f"wss://127.0.0.1:{port}/mcp").open("remote", Recorder(), MAX):
            pass  # pragma: no cover


async def test_a_missing_ca_file() -> None:
    with pytest.raises(OSError, match="cannot load ca_file /nonexistent.pem"):
        async with transport("wss://127.0.0.1:1/mcp", ca_file="/nonexistent.pem").open(
            "remote", Recorder(), MAX
        ):
            pass  # pragma: no cover
