"""JSON-RPC 2.0 framing and message helpers — pure: bytes and dicts in, bytes and dicts out.

Children speak newline-delimited JSON over stdio. :class:`LineBuffer` splits a byte stream into
lines incrementally: it remembers how far it has already searched for a newline, so a long line
arriving in many chunks is scanned once, and it refuses to buffer more than ``max_size`` bytes
of a single message (:class:`MessageTooLarge`), so a child that prints a 200 MB line, or never a
newline, fails on its own instead of eating the gateway's memory.

Errors (a tree, as callers see it)::

    ProtocolError            the peer broke the protocol
    ├── MessageTooLarge      a line exceeded the cap (the stream can't be resynchronised)
    └── ParseError           a line was not a JSON-RPC message (the stream goes on)
"""

from __future__ import annotations

import json
import math
from typing import Any

try:  # a compiled encoder, 20x faster on every message; the standard library's is the fallback
    import orjson
except ImportError:  # pragma: no cover - a portable build without the wheel
    orjson = None  # type: ignore[assignment]

# Standard JSON-RPC error codes, and the MCP ones we use.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Implementation-defined server errors (-32000..-32099).
SERVER_UNAVAILABLE = -32000  # the child that owns this name is not running
REQUEST_TIMEOUT = -32001  # as the MCP TypeScript SDK uses it for request timeouts
RESOURCE_NOT_FOUND = -32002  # MCP: resource not found
REQUEST_CANCELLED = -32800
UNSUPPORTED_PROTOCOL_VERSION = -32022  # 2026-07-28 era: `server/discover` at a version we don't speak


class ProtocolError(Exception):
    """The peer broke the protocol."""


class MessageTooLarge(ProtocolError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of more than {limit} bytes (at least {size} buffered)")
        self.size = size
        self.limit = limit


class ParseError(ProtocolError):
    """A line that is not valid JSON-RPC. The stream itself is still usable."""


class LineBuffer:
    """Incremental splitter of a byte stream into newline-terminated lines.

    ``feed(data)`` returns the complete lines now available (without the newline; a trailing
    ``\\r`` is stripped; blank lines are dropped). Raises :class:`MessageTooLarge` as soon as the
    pending, unterminated part exceeds ``max_size``; the buffer is then unusable.
    """

    __slots__ = ("_buf", "_scanned", "max_size")

    def __init__(self, max_size: int) -> None:
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already known to hold no newline
        self.max_size = max_size

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        buf = self._buf
        buf += data
        lines: list[bytes] = []
        start = 0
        pos = self._scanned
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break
            line = bytes(buf[start:nl])
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.strip():
                if len(line) > self.max_size:
                    raise MessageTooLarge(len(line), self.max_size)
                lines.append(line)
            start = pos = nl + 1
        if start:
            del buf[:start]
        self._scanned = len(buf)
        if len(buf) > self.max_size:
            raise MessageTooLarge(len(buf), self.max_size)
        return lines

    @property
    def pending(self) -> int:
        return len(self._buf)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON. ``NaN`` and ``Infinity`` are not JSON: they never get here (:func:`loads`
    refuses them, and the gateway makes none of its own).

    A lone surrogate (``"\\ud800"`` parses, but is no UTF-8) is written escaped, so the output is
    always valid UTF-8 JSON."""
    if orjson is not None:
        try:
            # orjson would write NaN as null; NaN never gets this far (loads refuses it, and the
            # gateway makes no floats of its own in messages).
            return orjson.dumps(value)
        except TypeError:
            pass  # a lone surrogate or an integer beyond 64 bits: the standard library copes
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except RecursionError:
        raise ValueError("a value nested too deeply to encode") from None
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def encode(msg: Any) -> bytes:
    """One message as a line of compact UTF-8 JSON."""
    return dumps(msg) + b"\n"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def loads(data: bytes | str) -> Any:
    """Standard JSON only: ``NaN``, ``Infinity``, ``-Infinity`` and numbers too large for a
    float (``1e400``) raise ``ValueError``, so none is ever forwarded or written back."""
    return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)


def decode(line: bytes | str) -> dict[str, Any]:
    """Parse one JSON-RPC message object; raises :class:`ParseError` with a short reason."""
    try:
        msg = loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        preview = line[:80] if isinstance(line, str) else line[:80].decode("utf-8", "replace")
        raise ParseError(f"not JSON ({exc.__class__.__name__}): {preview!r}") from None
    if not isinstance(msg, dict):
        raise ParseError(f"not a JSON-RPC object: {type(msg).__name__}")
    return msg


def kind(msg: dict[str, Any]) -> str:
    """'request', 'notification', 'response' or 'invalid'."""
    if "method" in msg:
        if not isinstance(msg["method"], str):
            return "invalid"
        return "request" if "id" in msg and msg["id"] is not None else "notification"
    if "id" in msg and ("result" in msg or "error" in msg):
        return "response"
    return "invalid"


def valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def error_object(code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return err


def error_response(id_: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "error": error_object(code, message, data)}


def result_response(id_: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "result": result}


def request(id_: Any, method: str, params: Any = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def notification(method: str, params: Any = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    return msg


class RpcError(Exception):
    """A JSON-RPC error to hand back to a peer as-is."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_object(self) -> dict[str, Any]:
        return error_object(self.code, self.message, self.data)


def error_from_message(error: Any) -> RpcError:
    """A peer's ``error`` member as an :class:`RpcError`, whatever shape it came in."""
    if not isinstance(error, dict):
        return RpcError(INTERNAL_ERROR, "error", None)
    code = error.get("code")
    if not isinstance(code, int) or isinstance(code, bool):
        code = INTERNAL_ERROR
    message = error.get("message")
    return RpcError(code, message if isinstance(message, str) else "error", error.get("data"))


def hashable_id(value: Any) -> bool:
    """True for an id usable as a key (a string or a number); objects and lists are not."""
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def error_from_exception(exc: BaseException) -> dict[str, Any]:
    """The one place an exception becomes a JSON-RPC error object (never leaks internals)."""
    if isinstance(exc, RpcError):
        return exc.to_object()
    if isinstance(exc, ParseError):
        return error_object(PARSE_ERROR, f"Parse error: {exc}")
    return error_object(INTERNAL_ERROR, f"Internal error: {exc.__class__.__name__}")
