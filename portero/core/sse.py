"""Server-Sent Events, parsed — pure: bytes in, events out, no I/O.

A remote MCP server answers a request, or sends what it has to say on its own, as an SSE stream
(``text/event-stream``, the WHATWG "event stream" format). :class:`SseParser` turns the bytes of such
a stream, in chunks cut anywhere, into :class:`Event` objects, as the HTML standard's
interpretation rules say: lines end with CRLF, LF or a lone CR (a CR at the end of one chunk and an
LF at the start of the next are one line end); ``data`` lines of one event are joined with ``\\n``;
a line starting with ``:`` is a comment (a keep-alive); ``id`` sets the last event id (kept across
events, so a client can resume with ``Last-Event-ID``), ``retry`` the reconnection delay; a blank
line dispatches the event, unless it had no ``data`` at all.

Like :class:`~portero.core.jsonrpc.LineBuffer`, it remembers how far it searched for a line end, so
a long line arriving in many chunks is scanned once, and it refuses to hold more than ``max_size``
bytes of one event (:class:`EventTooLarge`): a server that streams an endless line, or an endless
event, fails on its own instead of eating the gateway's memory.

:func:`resolve_endpoint` is the legacy HTTP+SSE transport's (2024-11-05) rule for its ``endpoint``
event: the URL to POST to, which must stay on the server's origin.

Errors::

    ProtocolError (portero.core.jsonrpc)
    └── SseError            the stream is not a usable event stream
        ├── EventTooLarge   one event (or one line) exceeded the cap; the stream is unusable
        └── BadEndpoint     the legacy ``endpoint`` event is not a URL on the server's origin
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from .jsonrpc import ProtocolError

_LINE_END = re.compile(rb"[\r\n]")
_BOM = b"\xef\xbb\xbf"


class SseError(ProtocolError):
    """The server's event stream cannot be used."""


class EventTooLarge(SseError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"event of more than {limit} bytes (at least {size} buffered)")
        self.size = size
        self.limit = limit


class BadEndpoint(SseError):
    """The legacy transport's ``endpoint`` event names no URL we may POST to."""


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event. ``id`` is the stream's last event id when it was dispatched (``None``
    if no ``id`` field came yet); ``event`` is ``"message"`` unless the server named a type."""

    data: str
    event: str = "message"
    id: str | None = None


class SseParser:
    """Incremental parser of one event stream.

    ``feed(chunk)`` returns the events completed by it. ``last_event_id`` is what a client sends as
    ``Last-Event-ID`` to resume (``None`` until the server sent an ``id``); ``retry`` the server's
    reconnection delay in milliseconds (``None`` until it sent one). Raises :class:`EventTooLarge`
    once an unfinished line, or the data of one event, exceeds ``max_size`` bytes; the parser is
    then unusable.
    """

    __slots__ = (
        "_buf",
        "_data",
        "_data_size",
        "_event",
        "_scanned",
        "_skip_lf",
        "_started",
        "last_event_id",
        "max_size",
        "retry",
    )

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.last_event_id: str | None = None
        self.retry: int | None = None
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf known to hold no line end
        self._skip_lf = False  # the last line ended with a CR: an LF right after it is the same end
        self._started = False  # a leading byte-order mark was dealt with
        self._data: list[str] = []
        self._data_size = 0
        self._event = ""

    def feed(self, chunk: bytes | bytearray) -> list[Event]:
        buf = self._buf
        buf += chunk
        if not self._started:
            if len(buf) < len(_BOM) and _BOM.startswith(bytes(buf)):
                return []  # maybe the start of a byte-order mark: wait for more
            if buf.startswith(_BOM):
                del buf[: len(_BOM)]
            self._started = True
        events: list[Event] = []
        start = 0
        if self._skip_lf and buf:
            if buf[0] == 0x0A:
                start = 1
            self._skip_lf = False
        pos = max(self._scanned, start)
        while True:
            found = _LINE_END.search(buf, pos)
            if found is None:
                break
            end = found.start()
            event = self._line(bytes(buf[start:end]))
            if event is not None:
                events.append(event)
            start = end + 1
            if buf[end] == 0x0D:  # CR: an LF right after it belongs to it, maybe in the next chunk
                if start < len(buf):
                    if buf[start] == 0x0A:
                        start += 1
                else:
                    self._skip_lf = True
            pos = start
        if start:
            del buf[:start]
        self._scanned = len(buf)
        if len(buf) + self._data_size > self.max_size:
            raise EventTooLarge(len(buf) + self._data_size, self.max_size)
        return events

    def _line(self, raw: bytes) -> Event | None:
        if not raw:
            return self._dispatch()
        if len(raw) > self.max_size:
            raise EventTooLarge(len(raw), self.max_size)
        if raw[:1] == b":":
            return None  # a comment, typically a keep-alive
        line = raw.decode("utf-8", "replace")
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data_size += len(raw) + 1
            if self._data_size > self.max_size:
                raise EventTooLarge(self._data_size, self.max_size)
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry = int(value)
        return None  # any other field is ignored, as the standard says

    def _dispatch(self) -> Event | None:
        data, event = self._data, self._event
        self._data, self._data_size, self._event = [], 0, ""
        if not data:
            return None  # an event without data is not dispatched (its id still counts)
        return Event(data="\n".join(data), event=event or "message", id=self.last_event_id)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        raise BadEndpoint(f"invalid port in {url[:200]!r}") from None
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def same_origin(a: str, b: str) -> bool:
    """True when two absolute URLs share scheme, host and port (a default port counts as written)."""
    try:
        return _origin(a) == _origin(b)
    except BadEndpoint:
        return False


def resolve_endpoint(stream_url: str, data: str) -> str:
    """The URL the legacy transport POSTs to: the ``endpoint`` event's data resolved against the
    event stream's URL. Refused (:class:`BadEndpoint`) unless it is an http(s) URL on the same
    origin (scheme, host and port): a server must not send our requests, and the credentials they
    carry, elsewhere."""
    target = data.strip()
    if not target or any(c in target for c in "\r\n\0"):
        raise BadEndpoint("the endpoint event holds no URL")
    resolved = urljoin(stream_url, target)
    scheme, host, port = _origin(resolved)
    if scheme not in ("http", "https") or not host:
        raise BadEndpoint("the endpoint event is not an http(s) URL")
    if not same_origin(resolved, stream_url):
        raise BadEndpoint(f"the endpoint event points to another origin ({scheme}://{host}:{port})")
    return resolved
