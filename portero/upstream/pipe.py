"""In-memory byte pipes, so a message-based transport (HTTP, WebSocket) can drive a :class:`Peer`.

A :class:`~portero.upstream.peer.Peer` speaks newline-delimited JSON over a pair of Trio byte streams;
its request table, ordering, bounded queue and write timeout are what every transport needs. A remote
transport gives it two :class:`Pipe` objects: the peer writes each outgoing message (one line) into
one, which the transport reads a message at a time and sends on; the transport writes every message it
receives, encoded as one line, into the other, which the peer reads.

A pipe is bounded: a writer waits while ``capacity`` chunks are unread, so a transport that cannot
keep up slows its writer down (and the peer's write timeout applies) instead of buffering without end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio

from ..core import jsonrpc


class Pipe(trio.abc.SendStream, trio.abc.ReceiveStream):
    """One direction of bytes, in memory. ``send_all`` enqueues a chunk; ``receive_some`` returns it
    (split when larger than ``max_bytes``). Closing the sending side gives the reader EOF (``b""``)
    once what was queued is read; closing it again, or for reading, is harmless."""

    def __init__(self, capacity: int = 64) -> None:
        self._send, self._recv = trio.open_memory_channel[bytes](capacity)
        self._rest = b""
        self._closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("pipe closed")
        if data:
            try:
                await self._send.send(bytes(data))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise trio.BrokenResourceError("the reading side is closed") from None

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if not self._rest:
            try:
                self._rest = await self._recv.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return b""
        if max_bytes is None or len(self._rest) <= max_bytes:
            data, self._rest = self._rest, b""
        else:
            data, self._rest = self._rest[:max_bytes], self._rest[max_bytes:]
        return data

    def close_sending(self) -> None:
        """No more data: the reader gets EOF after what is queued."""
        self._closed = True
        self._send.close()

    async def aclose(self) -> None:
        self.close_sending()
        self._recv.close()
        await trio.lowlevel.checkpoint()

    async def messages(self, max_message_bytes: int) -> AsyncIterator[bytes]:
        """Each newline-delimited message written into the pipe (as the peer writes them), until EOF."""
        buffer = jsonrpc.LineBuffer(max_message_bytes)
        while True:
            data = await self.receive_some()
            if not data:
                return
            for line in buffer.feed(data):
                yield line
