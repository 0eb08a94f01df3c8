"""A tiny in-memory ASGI client for the unit tests: no sockets, no server.

:meth:`AsgiClient.request` runs one HTTP exchange to the end and returns its :class:`Response`;
:meth:`AsgiClient.open` starts one and yields its :class:`Exchange` while the app is still running
(an SSE stream), until the test disconnects (or leaves the ``async with``).

``receive`` gives the request body once (in ``chunks`` if asked), then blocks until the client
disconnects and answers ``http.disconnect`` from then on. ``send`` checks the order of the ASGI
events (one ``http.response.start``, then bodies, nothing after the last one) and collects them. An
exception from the app is re-raised as it is (not inside an exception group), as a server would log
it and answer 500.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

Scope = dict[str, Any]
App = Callable[
    [Scope, Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
    Awaitable[None],
]
HeaderValue = str | bytes | None


@dataclass
class SseEvent:
    """One server-sent event (a block ending in a blank line that has an ``id``/``event``/``data``)."""

    id: str | None
    event: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(text: str) -> tuple[list[SseEvent], list[str]]:
    """The complete events and the comments in an SSE body (an unterminated last block is ignored)."""
    events: list[SseEvent] = []
    comments: list[str] = []
    blocks = text.replace("\r\n", "\n").split("\n\n")
    for block in blocks[:-1]:  # the last piece is not terminated by a blank line (yet)
        eid: str | None = None
        name: str | None = None
        data: list[str] = []
        has_field = False
        for line in block.split("\n"):
            if not line:
                continue
            if line.startswith(":"):
                comments.append(line[1:].strip())
                continue
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "id":
                eid, has_field = value, True
            elif key == "event":
                name, has_field = value, True
            elif key == "data":
                data.append(value)
                has_field = True
        if has_field:
            events.append(SseEvent(eid, name, "\n".join(data)))
    return events, comments


@dataclass
class Response:
    status: int = 0  # until http.response.start
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False  # the app sent its last body (more_body false)

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), decoded as latin-1."""
        want = name.lower().encode("latin-1")
        for k, v in self.headers:
            if k.lower() == want:
                return v.decode("latin-1")
        return None

    @property
    def text(self) -> str:
        return bytes(self.body).decode("utf-8")

    def json(self) -> Any:
        return json.loads(bytes(self.body))

    @property
    def events(self) -> list[SseEvent]:
        """Complete SSE events so far, priming events (empty data) included."""
        return parse_sse(self.text)[0]

    @property
    def messages(self) -> list[tuple[str | None, Any]]:
        """(event id, JSON message) of the SSE events that carry data."""
        return [(e.id, e.json()) for e in self.events if e.data.strip()]

    @property
    def comments(self) -> list[str]:
        return parse_sse(self.text)[1]


class Exchange:
    """One request in flight: its response so far, and the client side of the connection."""

    def __init__(self, body_chunks: list[bytes]) -> None:
        self.response = Response()
        self.disconnected = trio.Event()
        self.finished = trio.Event()  # the app returned (or raised)
        self.error: BaseException | None = None
        self._chunks = body_chunks
        self._changed = trio.Event()

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def disconnect(self) -> None:
        self.disconnected.set()

    async def receive(self) -> dict[str, Any]:
        if self._chunks:
            body = self._chunks.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(self._chunks)}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        r = self.response
        kind = message["type"]
        if kind == "http.response.start":
            assert r.status == 0, f"a second http.response.start: {message}"
            r.status = int(message["status"])
            r.headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
            for k, _ in r.headers:
                assert k == k.lower(), f"header name not lowercase: {k!r}"
        elif kind == "http.response.body":
            assert r.status != 0, "http.response.body before http.response.start"
            assert not r.complete, f"http.response.body after the last one: {message}"
            r.body += message.get("body", b"")
            r.complete = not message.get("more_body", False)
        else:
            raise AssertionError(f"unexpected ASGI event {kind!r}")
        await trio.lowlevel.checkpoint()
        self._pulse()

    async def wait_until(self, predicate: Callable[[Response], bool], timeout: float = 5.0) -> Response:
        """Wait until ``predicate(response)`` holds; fails (trio.TooSlowError) after ``timeout`` s,
        and re-raises the app's exception if the app stopped first."""
        with trio.fail_after(timeout):
            while not predicate(self.response):
                if self.finished.is_set():
                    self.raise_error()
                    raise AssertionError(f"the app returned before the condition held: {self.response}")
                await self._changed.wait()
        return self.response

    async def wait_messages(self, n: int, timeout: float = 5.0) -> list[tuple[str | None, Any]]:
        """The first ``n`` SSE messages (events with data), once they have arrived."""
        await self.wait_until(lambda r: len(r.messages) >= n, timeout)
        return self.response.messages[:n]

    async def wait_finished(self, timeout: float = 5.0) -> Response:
        with trio.fail_after(timeout):
            await self.finished.wait()
        self.raise_error()
        return self.response

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


class AsgiClient:
    """Drives an ASGI app in memory. Default headers: a loopback ``Host``, the bearer token (if
    given); for POST also JSON ``Content-Type``, ``Accept`` of both JSON and SSE, and
    ``Content-Length``. A header given as None is left out."""

    def __init__(self, app: App, *, host: str = "127.0.0.1:8443", token: str | None = None) -> None:
        self.app = app
        self.host = host
        self.token = token

    def _headers(
        self, method: str, body: bytes, given: Mapping[str, HeaderValue] | None
    ) -> list[tuple[bytes, bytes]]:
        merged: dict[str, HeaderValue] = {"host": self.host}
        if self.token is not None:
            merged["authorization"] = f"Bearer {self.token}"
        if method == "POST":
            merged["content-type"] = "application/json"
            merged["accept"] = "application/json, text/event-stream"
            merged["content-length"] = str(len(body))
        for k, v in (given or {}).items():
            merged[k.lower()] = v
        out = []
        for k, v in merged.items():
            if v is None:
                continue
            out.append((k.encode("latin-1"), v if isinstance(v, bytes) else v.encode("utf-8")))
        return out

    @asynccontextmanager
    async def open(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, HeaderValue] | None = None,
        body: bytes | Iterable[bytes] = b"",
        json_body: Any = None,
        timeout: float = 5.0,
    ) -> AsyncIterator[Exchange]:
        """Start a request; yield its exchange while the app runs. On leaving, the client
        disconnects and the app must return within ``timeout`` seconds."""
        if json_body is not None:
            body = json.dumps(json_body).encode()
        chunks = [body] if isinstance(body, bytes) else list(body)
        total = b"".join(chunks)
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": self._headers(method, total, headers),
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8443),
        }
        ex = Exchange(chunks or [b""])

        async def run_app() -> None:
            try:
                await self.app(scope, ex.receive, ex.send)
            except Exception as exc:  # re-raised in the test's task, outside the nursery
                ex.error = exc
            finally:
                ex.finished.set()
                ex._pulse()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_app)
                try:
                    yield ex
                finally:
                    ex.disconnect()
                with trio.fail_after(timeout):
                    await ex.finished.wait()
        except BaseExceptionGroup as group:
            # Trio wraps what leaves a nursery in a group: show the test the one exception.
            leaves = _leaves(group)
            if len(leaves) == 1:
                raise leaves[0] from None
            raise
        ex.raise_error()

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, HeaderValue] | None = None,
        body: bytes | Iterable[bytes] = b"",
        json_body: Any = None,
        timeout: float = 5.0,
    ) -> Response:
        """One exchange to its end: the complete response (the client then disconnects, as
        hypercorn reports after a finished answer)."""
        async with self.open(
            method, path, headers=headers, body=body, json_body=json_body, timeout=timeout
        ) as ex:
            await ex.wait_until(lambda r: r.complete, timeout)
        return ex.response
