"""The upstream JSON-RPC peer against scripted, sometimes hostile, servers on in-memory streams.

No process is spawned: the "server" is the test itself (or a task of it) at the other end of a
pair of Trio byte streams. Timeouts run on Trio's autojump clock, so they cost microseconds.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from portero.core import jsonrpc
from portero.core.jsonrpc import RpcError
from portero.upstream.peer import INCOMING_QUEUE, MAX_INCOMING_REQUESTS, MessageHandler, Peer, UpstreamGone

# ------------------------------------------------------------------------------------------ helpers


class Pipe:
    """A one-way byte pipe with a bounded buffer, like an OS pipe: ``send_all`` blocks while it is
    full, and when cut short leaves what it already wrote in the pipe (as ``os.write`` does).

    ``trio.testing.memory_stream_one_way_pair`` buffers without limit, so it cannot model a server
    that stops reading, nor back-pressure on a server that floods us."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data = bytearray()
        self.eof = False
        self.written = 0  # bytes ever accepted
        self._changed = trio.lowlevel.ParkingLot()
        self.send_stream = _PipeSend(self)
        self.receive_stream = _PipeReceive(self)

    @property
    def free(self) -> int:
        return self.capacity - len(self.data)

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.eof:
            raise trio.ClosedResourceError
        await trio.lowlevel.checkpoint()
        rest = bytes(data)
        while rest:
            if not self.free:
                await self._changed.park()
                continue
            chunk, rest = rest[: self.free], rest[self.free :]
            self.data += chunk
            self.written += len(chunk)
            self._changed.unpark_all()

    async def read(self, max_bytes: int | None) -> bytes:
        await trio.lowlevel.checkpoint()
        while not self.data and not self.eof:
            await self._changed.park()
        n = max_bytes or len(self.data)
        got = bytes(self.data[:n])
        del self.data[:n]
        self._changed.unpark_all()
        return got

    def close(self) -> None:
        self.eof = True
        self._changed.unpark_all()


class _PipeSend(trio.abc.SendStream):
    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.pipe.write(data)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.pipe.close()
        await trio.lowlevel.checkpoint()


class _PipeReceive(trio.abc.ReceiveStream):
    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.pipe.read(max_bytes)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class Server:
    """The test's end of the connection: reads our messages as dicts, writes what it likes."""

    def __init__(self, receive_stream: trio.abc.ReceiveStream, send_stream: trio.abc.SendStream) -> None:
        self.receive_stream = receive_stream
        self.send_stream = send_stream
        self._buffer = jsonrpc.LineBuffer(1 << 24)
        self._lines: list[bytes] = []

    async def receive_line(self) -> bytes | None:
        while not self._lines:
            data = await self.receive_stream.receive_some(65536)
            if not data:
                return None
            self._lines += self._buffer.feed(data)
        return self._lines.pop(0)

    async def receive(self) -> dict[str, Any]:
        line = await self.receive_line()
        assert line is not None, "the peer closed its output"
        return jsonrpc.decode(line)

    async def send(self, msg: dict[str, Any] | bytes) -> None:
        await self.send_stream.send_all(msg if isinstance(msg, bytes) else jsonrpc.encode(msg))

    async def answer(self, result: Any = None) -> dict[str, Any]:
        """Read one request and answer it with ``result`` (default: its params). Returns the request."""
        msg = await self.receive()
        await self.send(jsonrpc.result_response(msg["id"], msg.get("params") if result is None else result))
        return msg

    async def close(self) -> None:
        await self.send_stream.aclose()


async def ignore(peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
    await trio.lowlevel.checkpoint()
    return None


@attrs.define
class Link:
    peer: Peer
    server: Server
    nursery: trio.Nursery
    to_server: Pipe | None = None  # when the peer writes into a bounded pipe
    to_peer: Pipe | None = None  # when the server does


@asynccontextmanager
async def connected(
    handler: MessageHandler = ignore,
    *,
    max_message_bytes: int = 1 << 20,
    write_timeout: float = 10.0,
    to_server_capacity: int | None = None,
    to_peer_capacity: int | None = None,
) -> AsyncIterator[Link]:
    """A running Peer named "fake" and the server's end of its streams.

    Unbounded memory streams by default; a capacity gives that direction a bounded :class:`Pipe`."""
    to_server = Pipe(to_server_capacity) if to_server_capacity else None
    to_peer = Pipe(to_peer_capacity) if to_peer_capacity else None
    out_send: trio.abc.SendStream
    out_recv: trio.abc.ReceiveStream
    in_send: trio.abc.SendStream
    in_recv: trio.abc.ReceiveStream
    if to_server is not None:
        out_send, out_recv = to_server.send_stream, to_server.receive_stream
    else:
        out_send, out_recv = trio.testing.memory_stream_one_way_pair()
    if to_peer is not None:
        in_send, in_recv = to_peer.send_stream, to_peer.receive_stream
    else:
        in_send, in_recv = trio.testing.memory_stream_one_way_pair()
    peer = Peer(
        "fake",
        out_send,
        in_recv,
        max_message_bytes=max_message_bytes,
        handler=handler,
        write_timeout=write_timeout,
    )
    # A hang is a failure (on the autojump clock, at once), not a stuck test run.
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.run)
            try:
                yield Link(peer, Server(out_recv, in_send), nursery, to_server, to_peer)
            finally:
                nursery.cancel_scope.cancel()


async def gather_requests(link: Link, calls: list[tuple[str, Any]], **kwargs: Any) -> list[Any]:
    """Run the requests concurrently; each slot holds the response or the exception raised."""
    results: list[Any] = [None] * len(calls)

    async def one(i: int, method: str, params: Any) -> None:
        try:
            results[i] = await link.peer.request(method, params, **kwargs)
        except RpcError as exc:
            results[i] = exc

    async with trio.open_nursery() as nursery:
        for i, (method, params) in enumerate(calls):
            nursery.start_soon(one, i, method, params)
    return results


# --------------------------------------------------------------------------------- requests we make


async def test_round_trip_uses_our_own_integer_ids() -> None:
    async with connected() as link:
        for expected_id in (1, 2, 3):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(link.server.answer, {"ok": expected_id})
                resp = await link.peer.request("tools/list", {"cursor": None})
            assert resp == {"jsonrpc": "2.0", "id": expected_id, "result": {"ok": expected_id}}
        assert link.peer.in_flight() == 0


async def test_request_shape_on_the_wire() -> None:
    async with connected() as link:
        link.nursery.start_soon(link.peer.request, "ping")
        msg = await link.server.receive()
        assert msg == {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        assert type(msg["id"]) is int
        link.nursery.start_soon(link.peer.request, "tools/call", {"name": "t"})
        assert await link.server.receive() == {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "t"},
        }


async def test_concurrent_requests_answered_out_of_order() -> None:
    async with connected() as link:

        async def serve() -> None:
            requests = [await link.server.receive() for _ in range(5)]
            for msg in reversed(requests):
                await link.server.send(jsonrpc.result_response(msg["id"], {"echo": msg["params"]}))

        link.nursery.start_soon(serve)
        results = await gather_requests(link, [("echo", {"n": n}) for n in range(5)])
        assert [r["result"]["echo"]["n"] for r in results] == list(range(5))
        assert link.peer.in_flight() == 0


async def test_responses_to_unknown_ids_are_ignored() -> None:
    async with connected() as link:

        async def serve() -> None:
            msg = await link.server.receive()
            rid = msg["id"]
            for bogus in (999, str(rid), True, float(rid), None, -1):
                await link.server.send(jsonrpc.result_response(bogus, "wrong"))
            await link.server.send(jsonrpc.result_response(rid, "right"))

        link.nursery.start_soon(serve)
        resp = await link.peer.request("x")
        assert resp["result"] == "right"
        assert not link.peer.closed


async def test_object_and_array_ids_in_responses_do_not_crash() -> None:
    async with connected() as link:

        async def serve() -> None:
            msg = await link.server.receive()
            for bogus in ({"id": 1}, [1], [], {}):
                await link.server.send({"jsonrpc": "2.0", "id": bogus, "result": "wrong"})
                await link.server.send({"jsonrpc": "2.0", "id": bogus, "error": {"code": 1}})
            await link.server.send(jsonrpc.result_response(msg["id"], "right"))

        link.nursery.start_soon(serve)
        assert (await link.peer.request("x"))["result"] == "right"
        assert not link.peer.closed


async def test_lines_that_are_not_json_rpc_are_skipped_and_the_stream_goes_on() -> None:
    async with connected() as link:

        async def serve() -> None:
            msg = await link.server.receive()
            await link.server.send(b"this is not json\n")
            await link.server.send(b"[1, 2, 3]\n")
            await link.server.send(b'{"jsonrpc": "2.0", "method": 5}\n')
            await link.server.send(b'{"jsonrpc": "2.0", "result": "no id"}\n')
            await link.server.send(b'{"jsonrpc": "2.0", "id": null, "error": {"code": -1}}\n')
            await link.server.send(b"\xff\xfe not utf-8\n")
            await link.server.send(b'{"nan": NaN}\n')
            await link.server.send(jsonrpc.result_response(msg["id"], "fine"))

        link.nursery.start_soon(serve)
        assert (await link.peer.request("x"))["result"] == "fine"
        assert not link.peer.closed
        # And it still works afterwards.
        link.nursery.start_soon(link.server.answer, "again")
        assert (await link.peer.request("y"))["result"] == "again"


async def test_a_line_over_the_cap_fails_the_peer_and_wakes_every_waiter() -> None:
    async with connected(max_message_bytes=1000) as link:

        async def serve() -> None:
            for _ in range(3):
                await link.server.receive()
            # A line that never ends: 400 bytes at a time, no newline.
            for _ in range(5):
                await link.server.send(b'{"x": "' + b"a" * 400)

        link.nursery.start_soon(serve)
        results = await gather_requests(link, [("a", None), ("b", None), ("c", None)])
        for exc in results:
            assert isinstance(exc, UpstreamGone)
            assert exc.code == jsonrpc.SERVER_UNAVAILABLE
            assert "message of more than 1000 bytes" in exc.message
        assert link.peer.closed
        assert link.peer.dead.is_set()
        assert "message of more than 1000 bytes" in link.peer.close_reason
        assert link.peer.in_flight() == 0
        with pytest.raises(UpstreamGone):
            await link.peer.request("after")


async def test_a_complete_line_over_the_cap_fails_the_peer_too() -> None:
    async with connected(max_message_bytes=100) as link:

        async def serve() -> None:
            await link.server.receive()
            await link.server.send(jsonrpc.notification("big", {"x": "a" * 200}))

        link.nursery.start_soon(serve)
        with pytest.raises(UpstreamGone, match="more than 100 bytes"):
            await link.peer.request("x")


async def test_eof_wakes_every_waiter() -> None:
    async with connected() as link:

        async def serve() -> None:
            for _ in range(3):
                await link.server.receive()
            await link.server.close()

        link.nursery.start_soon(serve)
        results = await gather_requests(link, [("a", None), ("b", None), ("c", None)])
        assert all(isinstance(exc, UpstreamGone) for exc in results)
        assert {exc.message for exc in results} == {"server fake exited"}
        assert link.peer.dead.is_set()
        assert link.peer.close_reason == "server fake exited"
        assert link.peer.in_flight() == 0


async def test_a_server_that_closes_its_input_fails_the_peer() -> None:
    async with connected() as link:
        await link.server.receive_stream.aclose()
        with pytest.raises(UpstreamGone, match="closed its input"):
            await link.peer.request("x")
        assert link.peer.closed
        with pytest.raises(UpstreamGone):
            await link.peer.notify("notifications/initialized")


async def test_a_server_that_stops_reading_fails_the_peer_within_the_write_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected(write_timeout=1.0, to_server_capacity=4096) as link:
        pipe = link.to_server
        assert pipe is not None
        # The server never reads: keep sending until its input is full to the last byte.
        empty = len(jsonrpc.encode(jsonrpc.notification("notifications/message", {"data": ""})))
        sent = 0
        while pipe.free:
            await link.peer.notify("notifications/message", {"data": "x" * min(100, pipe.free - empty)})
            sent += 1
        assert sent > 10
        assert not link.peer.closed
        start = trio.current_time()
        results = await gather_requests(link, [("tools/call", {"n": 1}), ("tools/call", {"n": 2})], timeout=5)
        elapsed = trio.current_time() - start
        # Both callers (the one writing and the one waiting for the write lock) are woken at the
        # write timeout, well within their own.
        assert all(isinstance(exc, UpstreamGone) for exc in results), results
        assert elapsed == pytest.approx(1.0)
        assert link.peer.closed
        assert link.peer.dead.is_set()
        assert "stopped reading its input" in link.peer.close_reason
        assert link.peer.in_flight() == 0
        # From now on every call fails at once, without waiting for the pipe.
        start = trio.current_time()
        with pytest.raises(UpstreamGone):
            await link.peer.request("ping", timeout=5)
        with pytest.raises(UpstreamGone):
            await link.peer.notify("notifications/initialized")
        assert trio.current_time() == start


async def test_a_cut_write_never_leaves_half_a_message_in_the_pipe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The server's input holds 100 bytes and it reads nothing for 2 s; our request is longer than
    # that and times out after 0.5 s. A write cut in the middle would leave the request's first
    # 100 bytes in the pipe, and the next message would be glued to them.
    async with connected(to_server_capacity=100) as link:
        outcome: list[Any] = []

        async def call() -> None:
            try:
                outcome.append(await link.peer.request("tools/call", {"blob": "x" * 1000}, timeout=0.5))
            except RpcError as exc:
                outcome.append(exc)

        link.nursery.start_soon(call)
        await trio.sleep(2)
        received: list[dict[str, Any] | bytes] = []

        async def serve() -> None:  # reads again, and answers pings
            while (line := await link.server.receive_line()) is not None:
                try:
                    msg = jsonrpc.decode(line)
                except jsonrpc.ParseError:
                    received.append(line)
                    continue
                received.append(msg)
                if msg.get("method") == "ping":
                    await link.server.send(jsonrpc.result_response(msg["id"], "pong"))

        link.nursery.start_soon(serve)
        try:
            pong: Any = await link.peer.request("ping", timeout=5)
        except RpcError as exc:
            pong = exc
        await trio.sleep(1)
        assert all(isinstance(msg, dict) for msg in received), received
        [exc] = outcome
        assert isinstance(exc, RpcError)
        if isinstance(exc, UpstreamGone):
            return  # failing the peer is a correct answer too
        assert exc.code == jsonrpc.REQUEST_TIMEOUT
        assert pong["result"] == "pong"
        by_method = {msg["method"]: msg for msg in received if isinstance(msg, dict)}
        assert sorted(by_method) == ["notifications/cancelled", "ping", "tools/call"]
        assert by_method["tools/call"]["params"] == {"blob": "x" * 1000}
        assert by_method["notifications/cancelled"]["params"]["requestId"] == by_method["tools/call"]["id"]


async def test_a_stuck_write_breaks_the_peer_even_when_the_request_timeout_is_shorter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connected(write_timeout=2.0, to_server_capacity=100) as link:
        start = trio.current_time()
        with pytest.raises(UpstreamGone, match="stopped reading"):
            await link.peer.request("tools/call", {"blob": "x" * 1000}, timeout=0.5)
        assert trio.current_time() - start == pytest.approx(2.0)
        assert link.peer.closed


async def test_a_request_timeout_tells_the_server(autojump_clock: trio.testing.MockClock) -> None:
    async with connected() as link:
        link.nursery.start_soon(link.server.receive)  # read it, never answer
        start = trio.current_time()
        with pytest.raises(RpcError) as caught:
            await link.peer.request("tools/call", {"name": "slow"}, timeout=3)
        assert caught.value.code == jsonrpc.REQUEST_TIMEOUT
        assert "timed out" in caught.value.message
        assert trio.current_time() - start == pytest.approx(3)
        assert link.peer.in_flight() == 0
        cancelled = await link.server.receive()
        assert cancelled["method"] == "notifications/cancelled"
        assert "id" not in cancelled
        assert cancelled["params"]["requestId"] == 1
        # A late answer is dropped; the peer carries on.
        await link.server.send(jsonrpc.result_response(1, "late"))
        link.nursery.start_soon(link.server.answer, "next")
        assert (await link.peer.request("again", timeout=3))["result"] == "next"
        assert not link.peer.closed


async def test_a_caller_cancelled_by_its_scope_sends_notifications_cancelled() -> None:
    async with connected() as link:
        with trio.CancelScope() as scope:

            async def serve() -> None:
                msg = await link.server.receive()
                assert msg["method"] == "tools/call"
                scope.cancel()

            link.nursery.start_soon(serve)
            await link.peer.request("tools/call", {"name": "t"})
        assert scope.cancelled_caught
        assert link.peer.in_flight() == 0
        cancelled = await link.server.receive()
        assert cancelled == {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": 1, "reason": "cancelled by the gateway"},
        }
        assert not link.peer.closed


# ------------------------------------------------------------------------- what the server sends us


async def test_a_notification_read_before_a_response_is_handled_before_the_caller_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[str] = []

    async def slow_handler(peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
        await trio.sleep(1)  # a slow handler: the response is read long before it is done
        events.append(f"handled {msg['method']}")
        return None

    async with connected(slow_handler) as link:

        async def serve() -> None:
            msg = await link.server.receive()
            await link.server.send(
                jsonrpc.notification("notifications/progress", {"progressToken": 1, "progress": 1})
            )
            await link.server.send(jsonrpc.result_response(msg["id"], "done"))

        link.nursery.start_soon(serve)
        resp = await link.peer.request("tools/call", timeout=10)
        events.append(f"returned {resp['result']}")
        assert events == ["handled notifications/progress", "returned done"]


async def test_an_answer_read_just_before_eof_still_reaches_its_caller() -> None:
    """A server that sends a notification, then the answer, then exits: the answer was read, so
    the caller gets it (the queue is drained at the end of the stream), not "server exited"."""

    async def handler(peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
        await trio.sleep(0.05)  # the EOF is read while this notification is still being handled
        return None

    async with connected(handler) as link:

        async def serve() -> None:
            msg = await link.server.receive()
            await link.server.send(jsonrpc.notification("notifications/message", {"level": "info"}))
            await link.server.send(jsonrpc.result_response(msg["id"], "last words"))
            await link.server.close()

        link.nursery.start_soon(serve)
        resp = await link.peer.request("tools/call", timeout=10)
        assert resp["result"] == "last words"


async def test_notifications_are_handled_in_order_by_one_worker() -> None:
    seen: list[int] = []
    all_seen = trio.Event()
    running = 0
    most = 0

    async def handler(peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        for _ in range(3):
            await trio.lowlevel.checkpoint()
        seen.append(msg["params"]["n"])
        running -= 1
        if len(seen) == 50:
            all_seen.set()
        return None

    async with connected(handler) as link:
        for n in range(50):
            await link.server.send(jsonrpc.notification("notifications/message", {"n": n}))
        with trio.fail_after(5):
            await all_seen.wait()
    assert seen == list(range(50))
    assert most == 1


async def test_a_server_request_is_answered_with_its_own_id() -> None:
    async def handler(peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
        await trio.lowlevel.checkpoint()
        if msg["method"] == "roots/list":
            return jsonrpc.result_response(msg["id"], {"roots": [{"uri": "file:///tmp"}]})
        return jsonrpc.result_response(msg["id"], {})

    async with connected(handler) as link:
        await link.server.send(jsonrpc.request("srv-1", "roots/list"))
        assert await link.server.receive() == {
            "jsonrpc": "2.0",
            "id": "srv-1",
            "result": {"roots": [{"uri": "file:///tmp"}]},
        }
        # An integer id that is also one of ours does not confuse the two directions.
        link.nursery.start_soon(link.peer.request, "tools/list")
        ours = await link.server.receive()
        await link.server.send(jsonrpc.request(ours["id"], "ping"))
        assert await link.server.receive() == {"jsonrpc": "2.0", "id": ours["id"], "result": {}}
        assert link.peer.in_flight() == 1


async def test_too_many_server_requests_at_once_are_refused_at_once() -> None:
    gate = trio.Event()
    running = 0
    most = 0

    async def handler(peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1
        return jsonrpc.result_response(msg["id"], {"n": msg["id"]})

    extra = 3
    async with connected(handler) as link:
        total = MAX_INCOMING_REQUESTS + extra
        for n in range(1, total + 1):
            await link.server.send(jsonrpc.request(n, "sampling/createMessage", {}))
        # The extra ones are refused while the others are still being handled.
        refused = [await link.server.receive() for _ in range(extra)]
        assert not gate.is_set()
        assert [r["id"] for r in refused] == list(range(MAX_INCOMING_REQUESTS + 1, total + 1))
        for r in refused:
            assert r["error"]["code"] == jsonrpc.INTERNAL_ERROR
            assert "too many" in r["error"]["message"]
        assert running == MAX_INCOMING_REQUESTS
        gate.set()
        answered = [await link.server.receive() for _ in range(MAX_INCOMING_REQUESTS)]
        assert sorted(r["id"] for r in answered) == list(range(1, MAX_INCOMING_REQUESTS + 1))
        assert all(r["result"] == {"n": r["id"]} for r in answered)
        assert most == MAX_INCOMING_REQUESTS
        # The slots are free again.
        await link.server.send(jsonrpc.request("later", "ping"))
        assert (await link.server.receive())["result"] == {"n": "later"}


async def test_a_duplicate_server_request_id_is_refused() -> None:
    gate = trio.Event()

    async def handler(peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
        await gate.wait()
        return jsonrpc.result_response(msg["id"], "ok")

    async with connected(handler) as link:
        await link.server.send(jsonrpc.request(7, "ping"))
        await link.server.send(jsonrpc.request(7, "ping"))
        refused = await link.server.receive()
        assert refused["id"] == 7
        assert refused["error"]["code"] == jsonrpc.INVALID_REQUEST
        gate.set()
        assert await link.server.receive() == {"jsonrpc": "2.0", "id": 7, "result": "ok"}


async def test_object_and_array_ids_in_server_requests_do_not_crash() -> None:
    async def handler(peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
        await trio.lowlevel.checkpoint()
        return jsonrpc.result_response(msg["id"], "ok")

    async with connected(handler) as link:
        for bogus in ({"a": 1}, [1, 2]):
            await link.server.send({"jsonrpc": "2.0", "id": bogus, "method": "ping"})
            assert await link.server.receive() == {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": jsonrpc.INVALID_REQUEST, "message": "invalid request id"},
            }
        assert not link.peer.closed
        await link.server.send(jsonrpc.request(1, "ping"))
        assert (await link.server.receive())["result"] == "ok"


async def test_a_handler_that_raises_becomes_an_error_reply() -> None:
    async def handler(peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
        await trio.lowlevel.checkpoint()
        if msg["method"] == "bad/params":
            raise RpcError(jsonrpc.INVALID_PARAMS, "no such root", {"hint": 1})
        if msg["method"] == "bug":
            raise ValueError("secret internal detail")
        if msg["method"] == "notifications/boom":
            raise KeyError("boom")
        return jsonrpc.result_response(msg["id"], "fine")

    async with connected(handler) as link:
        await link.server.send(jsonrpc.request(1, "bad/params"))
        assert await link.server.receive() == {
            "jsonrpc": "2.0",
            "id": 1,
            "error": {"code": jsonrpc.INVALID_PARAMS, "message": "no such root", "data": {"hint": 1}},
        }
        await link.server.send(jsonrpc.request(2, "bug"))
        reply = await link.server.receive()
        assert reply["id"] == 2
        assert reply["error"]["code"] == jsonrpc.INTERNAL_ERROR
        assert "secret" not in reply["error"]["message"]
        # A notification's handler failing is just logged.
        await link.server.send(jsonrpc.notification("notifications/boom"))
        await link.server.send(jsonrpc.request(3, "ok"))
        assert await link.server.receive() == {"jsonrpc": "2.0", "id": 3, "result": "fine"}
        assert not link.peer.closed


async def test_a_notification_flood_is_held_back_by_a_bounded_queue() -> None:
    total = 10_000
    gate = trio.Event()
    seen: list[int] = []
    done = trio.Event()
    most_queued = 0

    async def handler(peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
        nonlocal most_queued
        most_queued = max(most_queued, peer._queue_send.statistics().current_buffer_used)
        await gate.wait()
        seen.append(msg["params"]["n"])
        if len(seen) == total:
            done.set()
        return None

    # The server's output is a 64 KiB pipe, as for a real child process.
    async with connected(handler, to_peer_capacity=65536) as link:
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for n in range(total):
                await link.server.send(jsonrpc.notification("notifications/message", {"n": n}))
                sent += 1

        link.nursery.start_soon(flood)
        await trio.testing.wait_all_tasks_blocked()
        stats = link.peer._queue_send.statistics()
        assert stats.max_buffer_size == INCOMING_QUEUE
        assert stats.current_buffer_used == INCOMING_QUEUE  # full ...
        assert stats.tasks_waiting_send == 1  # ... and the reader waits on it
        # So the server's writes block too: most of the flood was never read, let alone queued.
        assert sent < total // 2
        assert link.to_peer is not None and link.to_peer.free == 0
        gate.set()
        with trio.fail_after(30):
            await done.wait()
        assert seen == list(range(total))
        assert most_queued <= INCOMING_QUEUE
        assert link.peer._queue_send.statistics().current_buffer_used == 0
        assert not link.peer.closed


async def test_a_stuck_notification_handler_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    handled: list[str] = []

    async def handler(peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
        if msg["method"] == "notifications/stuck":
            await trio.sleep(math.inf)
        handled.append(msg["method"])
        return None

    async with connected(handler) as link:

        async def serve() -> None:
            msg = await link.server.receive()
            await link.server.send(jsonrpc.notification("notifications/stuck"))
            await link.server.send(jsonrpc.notification("notifications/next"))
            await link.server.send(jsonrpc.result_response(msg["id"], "ok"))

        link.nursery.start_soon(serve)
        start = trio.current_time()
        assert (await link.peer.request("x", timeout=60))["result"] == "ok"
        assert handled == ["notifications/next"]
        assert 0 < trio.current_time() - start < 60
