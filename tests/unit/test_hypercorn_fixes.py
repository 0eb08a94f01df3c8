"""portero.front.hypercorn_fixes: hypercorn's real trio TCPServer, subclassed, on memory streams.

The connection is fed through `trio.testing.memory_stream_pair()` (as hypercorn's own
tests/trio/test_keep_alive.py does); time runs on Trio's virtual clock.
"""

from __future__ import annotations

import socket
from typing import Any

import trio
import trio.testing
from hypercorn.config import Config
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from portero.front import hypercorn_fixes
from portero.front.hypercorn_fixes import PorteroTCPServer


class _FakeSocket:
    family = socket.AF_INET

    def getpeername(self) -> tuple[str, int]:
        return ("127.0.0.1", 50000)

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 8443)


class _CountingStream(trio.abc.HalfCloseableStream):
    """The server's side of a memory stream pair, counting its writes."""

    def __init__(self, inner: trio.testing.MemorySendStream | Any) -> None:
        self.inner = inner
        self.socket = _FakeSocket()
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return bytes(await self.inner.receive_some(max_bytes))

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b'{"ok":true}'
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"11")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def _serve(keep_alive: float = 5.0) -> tuple[trio.testing.MemoryStream | Any, _CountingStream, Any]:
    hypercorn_fixes.install()
    config = Config()
    config.keep_alive_timeout = keep_alive
    config.include_date_header = False
    config.include_server_header = False
    client, server = trio.testing.memory_stream_pair()
    counting = _CountingStream(server)
    context = WorkerContext(None)
    tcp = PorteroTCPServer(wrap_app(_app, config.wsgi_max_body_size, None), config, context,
                           ConnectionState({}), counting)  # type: ignore[arg-type]  # fmt: skip
    return client, counting, (tcp, context)


async def _read_response(client: Any) -> bytes:
    data = b""
    while b'{"ok":true}' not in data:
        chunk = await client.receive_some(65536)
        assert chunk, data
        data += chunk
    return data


async def test_a_response_leaves_in_one_write(autojump_clock: trio.testing.MockClock) -> None:
    client, counting, (tcp, _) = await _serve()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tcp.run)
        for _ in range(3):  # keep-alive: three requests on one connection
            before = len(counting.writes)
            await client.send_all(REQUEST)
            answer = await _read_response(client)
            assert answer.startswith(b"HTTP/1.1 200")
            assert b"date:" not in answer.lower() and b"server:" not in answer.lower()
            assert len(counting.writes) - before == 1  # head and body together, no empty write
        nursery.cancel_scope.cancel()


async def test_an_idle_connection_closes_after_the_keep_alive_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, _, (tcp, _) = await _serve(keep_alive=30.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tcp.run)
        await client.send_all(REQUEST)
        await _read_response(client)
        answered = trio.current_time()
        assert await client.receive_some(65536) == b""  # closed by the server…
        assert 29.0 <= trio.current_time() - answered <= 31.0  # …after keep_alive_timeout idle


async def test_a_request_in_progress_is_not_cut_by_the_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await trio.sleep(100)  # longer than keep_alive_timeout
            await _app(scope, receive, send)

    client, _, (tcp, _) = await _serve(keep_alive=5.0)
    tcp.app = wrap_app(slow, tcp.config.wsgi_max_body_size, None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tcp.run)
        await client.send_all(REQUEST)
        answer = await _read_response(client)
        assert answer.startswith(b"HTTP/1.1 200")
        nursery.cancel_scope.cancel()


async def test_shutdown_closes_an_idle_connection_but_lets_a_request_finish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, _, (tcp, context) = await _serve(keep_alive=600.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tcp.run)
        await client.send_all(REQUEST)
        await _read_response(client)
        await trio.sleep(1)
        await context.terminated.set()  # the server shuts down
        with trio.fail_after(5):
            assert await client.receive_some(65536) == b""


async def test_connections_past_the_limit_are_closed_at_once(autojump_clock: trio.testing.MockClock) -> None:
    first_client, _, (first, _) = await _serve()
    second_client, _, (second, _) = await _serve()
    hypercorn_fixes.Limits.connections = trio.CapacityLimiter(1)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first.run)
            await first_client.send_all(REQUEST)
            await _read_response(first_client)  # the first connection is being served
            nursery.start_soon(second.run)
            with trio.fail_after(1):
                assert await second_client.receive_some(65536) == b""  # closed, nothing served
            await first_client.send_all(REQUEST)  # the first one is unaffected
            assert (await _read_response(first_client)).startswith(b"HTTP/1.1 200")
            nursery.cancel_scope.cancel()
    finally:
        hypercorn_fixes.install()


async def test_a_request_head_must_complete_within_the_header_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, _, (tcp, _) = await _serve(keep_alive=600.0)  # not the keep-alive watcher: the head timeout
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tcp.run)
        await client.send_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        started = trio.current_time()
        for _ in range(5):  # a byte now and then does not extend the deadline
            await trio.sleep(1)
            await client.send_all(b"X")
        assert await client.receive_some(65536) == b""
        waited = trio.current_time() - started
        assert hypercorn_fixes.HEADER_TIMEOUT - 0.5 <= waited <= hypercorn_fixes.HEADER_TIMEOUT + 0.5


async def test_a_client_that_leaves_frees_its_connection_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Not after keep_alive_timeout: a closed connection must not hold a slot (CLOSE-WAIT)."""
    client, _, (tcp, _) = await _serve(keep_alive=600.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tcp.run)
        await client.send_all(REQUEST)
        await _read_response(client)
        left = trio.current_time()
        await client.send_eof()
        with trio.fail_after(700):
            assert await client.receive_some(65536) == b""
        assert trio.current_time() - left < 1.0


async def test_a_closing_request_does_not_hold_the_handler(autojump_clock: trio.testing.MockClock) -> None:
    """`Connection: close`: after the answer the handler ends, so shutdown need not wait for it."""
    client, _, (tcp, _) = await _serve(keep_alive=600.0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tcp.run)
            await client.send_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            await _read_response(client)
        # the nursery exits on its own: tcp.run() returned
