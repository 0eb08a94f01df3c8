"""A raw HTTP/1.1 client for the hostile tests: exact bytes out, strict checks on what comes back.

It attacks nothing itself. A request carries any header or body bytes; the answer's framing is
checked as it arrives: a Content-Length body must be complete, a chunked body must end with its
terminal chunk (a broken chunked body is a failure, not something to tolerate), and the whole
exchange is bounded by a deadline (a hang is a failure). JSON bodies are checked as strict UTF-8
JSON (no ``NaN``/``Infinity``), SSE bodies event by event.

Connections are kept alive and reused (one per thread and port), as real clients do; one is
dropped when the server says ``Connection: close``, when an answer is read only in part (a peeked
SSE stream), or on any error. A reused connection that the server closed before answering is
retried once on a fresh one (the usual keep-alive race); a fresh one that does so is a failure.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..integration.harness import TOKEN


class Hang(AssertionError):
    """The gateway did not answer (completely) within the deadline."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    complete: bool  # the framing said the body was complete (or the stream was only peeked at)
    peeked: bool = False  # an open-ended SSE stream read briefly, then closed by us
    elapsed: float = 0.0
    raw_head: bytes = b""
    events: list[Any] = field(default_factory=list)

    @property
    def ctype(self) -> str:
        return self.headers.get("content-type", "").lower()

    def json(self) -> Any:
        return strict_json(self.body)


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(data: bytes) -> Any:
    """Standard JSON only, from valid UTF-8."""
    return json.loads(data.decode("utf-8"), parse_constant=_refuse)


def build(
    method: str,
    path: str,
    port: int,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    chunked: bool = False,
    host: str | None = None,
    close: bool = False,
) -> bytes:
    """The request bytes. Header values are sent as latin-1 (what HTTP allows); ``body`` as given."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}"]
    if close:
        lines.append("Connection: close")
    for k, v in headers or []:
        lines.append(f"{k}: {v}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        framed = b""
        for i in range(0, len(body), 4096):
            part = body[i : i + 4096]
            framed += f"{len(part):x}\r\n".encode() + part + b"\r\n"
        framed += b"0\r\n\r\n"
    else:
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        framed = body
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
    return head + framed


def _parse(buf: bytes, head_only: bool) -> tuple[Answer | None, bool]:
    """(answer so far or None if the head is incomplete, whether the body is complete)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None, False
    head = buf[:end]
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise AssertionError(f"not an HTTP/1.1 status line: {lines[0]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for h in lines[1:]:
        k, _, v = h.partition(":")
        headers[k.strip().lower()] = v.strip()
    rest = buf[end + 4 :]
    ans = Answer(status, headers, b"", False, raw_head=head)
    if head_only or status in (204, 304) or 100 <= status < 200:
        ans.complete = True
        return ans, True
    te = headers.get("transfer-encoding", "").lower()
    if "chunked" in te:
        pos = 0
        out = []
        while True:
            nl = rest.find(b"\r\n", pos)
            if nl < 0:
                ans.body = b"".join(out)
                return ans, False
            size_text = rest[pos:nl].split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise AssertionError(f"broken chunked body: chunk size {size_text[:40]!r}") from None
            if size == 0:
                # Terminal chunk; no trailers expected: CRLF right after.
                if len(rest) < nl + 4:
                    ans.body = b"".join(out)
                    return ans, False
                if rest[nl + 2 : nl + 4] != b"\r\n":
                    raise AssertionError("broken chunked body: trailers or garbage after the last chunk")
                ans.body = b"".join(out)
                ans.complete = True
                return ans, True
            if len(rest) < nl + 2 + size + 2:
                ans.body = b"".join(out)
                return ans, False
            out.append(rest[nl + 2 : nl + 2 + size])
            if rest[nl + 2 + size : nl + 4 + size] != b"\r\n":
                raise AssertionError("broken chunked body: a chunk not followed by CRLF")
            pos = nl + 4 + size
    if "content-length" in headers:
        n = int(headers["content-length"])
        ans.body = rest[:n]
        ans.complete = len(rest) >= n
        return ans, ans.complete
    ans.body = rest  # delimited by the close
    return ans, False


class _Stale(Exception):
    """A reused keep-alive connection was closed by the server before any answer."""


_pool = threading.local()


def close_pool() -> None:
    """Close this thread's kept-alive connections (call it before a thread ends)."""
    for s in _pool.__dict__.pop("conns", {}).values():
        s.close()


def exchange(
    port: int,
    payload: bytes,
    *,
    timeout: float = 15.0,
    head_only: bool = False,
    peek_stream: float | None = None,
    fresh: bool = False,
) -> Answer:
    """Send ``payload`` and read its answer until its framing says it is complete (or EOF).

    ``peek_stream``: an SSE answer is read for that long after its head, then the connection is
    closed by us (a GET stream never ends on its own). A hang past ``timeout`` raises :class:`Hang`.
    ``fresh``: a new connection, not a kept-alive one."""
    conns: dict[int, socket.socket] = _pool.__dict__.setdefault("conns", {})
    for _ in range(2):
        s = None if fresh else conns.pop(port, None)
        reused = s is not None
        if s is None:
            s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            ans, keep = _exchange_on(s, payload, timeout, head_only, peek_stream, reused)
        except _Stale:
            s.close()
            fresh = True
            continue
        except BaseException:
            s.close()
            raise
        if keep and b"\r\nconnection: close\r\n" not in payload.split(b"\r\n\r\n", 1)[0].lower() + b"\r\n":
            conns[port] = s
        else:
            s.close()
        return ans
    raise AssertionError("unreachable")


def _exchange_on(
    s: socket.socket, payload: bytes, timeout: float, head_only: bool, peek_stream: float | None, reused: bool
) -> tuple[Answer, bool]:
    """(the answer, whether the connection may be reused)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    buf = bytearray()
    head_end = -1
    length: int | None = None
    chunked = False
    peek_until: float | None = None
    try:
        s.sendall(payload)
    except OSError:
        if reused:
            raise _Stale() from None
        # A fresh connection: the server may answer (413, 401) and close before reading everything.
    while True:
        now = time.monotonic()
        if peek_until is not None and now >= peek_until:
            ans, _ = _parse(bytes(buf), head_only)
            assert ans is not None
            ans.peeked = True
            ans.elapsed = now - t0
            return _finish(ans), False
        if now > deadline:
            raise Hang(
                f"no complete answer within {timeout}s; got {bytes(buf[:300])!r} … {bytes(buf[-200:])!r}"
            )
        if head_end >= 0 and (
            (length is not None and len(buf) >= head_end + 4 + length)
            or (chunked and buf.endswith(b"0\r\n\r\n"))
        ):
            ans, done = _parse(bytes(buf), head_only)
            if done and ans is not None:
                ans.elapsed = now - t0
                keep = ans.headers.get("connection", "").lower() != "close"
                return _finish(ans), keep
        wait = deadline - now if peek_until is None else min(deadline, peek_until) - now
        s.settimeout(max(0.005, wait))
        try:
            data = s.recv(1 << 20)
        except TimeoutError:
            continue
        except ConnectionResetError:
            data = b""
        if not data:
            if not buf and reused:
                raise _Stale()
            ans, done = _parse(bytes(buf), head_only)
            if ans is None:
                raise AssertionError(f"connection closed without an answer; got {bytes(buf[:300])!r}")
            if not done and "chunked" in ans.headers.get("transfer-encoding", "").lower():
                raise AssertionError(f"broken chunked body (closed mid-body): {bytes(buf[-300:])!r}")
            if not done and "content-length" in ans.headers:
                raise AssertionError(f"body shorter than its Content-Length: {bytes(buf[-300:])!r}")
            ans.complete = True  # close-delimited
            ans.elapsed = time.monotonic() - t0
            return _finish(ans), False
        buf += data
        if head_end < 0:
            head_end = buf.find(b"\r\n\r\n")
            if head_end >= 0:
                head, _ = _parse(bytes(buf[: head_end + 4]), True)
                assert head is not None
                if head_only or head.status in (204, 304) or 100 <= head.status < 200:
                    length = 0
                elif "chunked" in head.headers.get("transfer-encoding", "").lower():
                    chunked = True
                elif "content-length" in head.headers:
                    length = int(head.headers["content-length"])
                if peek_stream is not None and "text/event-stream" in head.ctype:
                    peek_until = time.monotonic() + peek_stream


def _finish(ans: Answer) -> Answer:
    if "text/event-stream" in ans.ctype:
        ans.events = parse_sse(ans.body, partial=ans.peeked)
    return ans


def parse_sse(body: bytes, *, partial: bool = False) -> list[Any]:
    """The JSON data of each event; comments and priming events (empty data) skipped."""
    text = body.decode("utf-8")
    blocks = text.split("\n\n")
    if partial:
        blocks = blocks[:-1]  # the last one may be cut
    out = []
    for block in blocks:
        data = [ln[5:].removeprefix(" ") for ln in block.split("\n") if ln.startswith("data:")]
        if data and "".join(data).strip():
            out.append(json.loads("\n".join(data), parse_constant=_refuse))
    return out


def check_answer(ans: Answer) -> None:
    """What every answer must be: < 500, complete, its JSON (or every SSE event) strict JSON."""
    assert ans.status < 500, (ans.status, ans.body[:500])
    assert ans.complete or ans.peeked, ans
    if ans.body and "json" in ans.ctype:
        value = ans.json()
        for m in value if isinstance(value, list) else [value]:
            check_jsonrpc_out(m)
    if "text/event-stream" in ans.ctype:
        for m in ans.events:
            check_jsonrpc_out(m)


def check_jsonrpc_out(m: Any) -> None:
    """A message the gateway sends: an object; if it carries an id, a valid one (never echoed garbage)."""
    assert isinstance(m, dict), m
    if "id" in m:
        rid = m["id"]
        assert rid is None or isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool)), m
    if "error" in m:
        err = m["error"]
        assert isinstance(err, dict) and isinstance(err.get("code"), int), m
        assert isinstance(err.get("message"), str), m


# ------------------------------------------------------------------------------------------ MCP helpers
def auth_headers(session: str | None = None) -> list[tuple[str, str]]:
    h = [
        ("Authorization", f"Bearer {TOKEN}"),
        ("Accept", "application/json, text/event-stream"),
        ("Content-Type", "application/json"),
    ]
    if session:
        h.append(("Mcp-Session-Id", session))
    return h


ALL_CAPABILITIES: dict[str, Any] = {"sampling": {}, "elicitation": {}, "roots": {}}


def new_session(port: int, version: str = "2025-11-25", capabilities: dict[str, Any] | None = None) -> str:
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": ALL_CAPABILITIES if capabilities is None else capabilities,
            "clientInfo": {"name": "fuzz", "version": "0"},
        },
    }
    ans = exchange(port, build("POST", "/mcp", port, auth_headers(), json.dumps(init).encode()))
    assert ans.status == 200, ans
    sid = ans.headers["mcp-session-id"]
    note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
    assert exchange(port, build("POST", "/mcp", port, auth_headers(sid), note)).status == 202
    return sid


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# Tracebacks of bugs already reported by an xfail test in test_found_bugs.py (the fuzzers may hit
# them again): the "survived" checks ignore these, and only these.
KNOWN_BUGS: set[str] = set()  # none open
_TRACEBACK = re.compile(r"^[ +|]*(Exception Group )?Traceback \(most recent call last\)")


def own_tracebacks(lines: list[str], known: set[str] = KNOWN_BUGS) -> list[str]:
    """The gateway's own tracebacks, with context, except those of bugs already reported. (A child's
    stderr reaches the log as timestamped lines naming the child, so it never matches here.)"""
    out = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        if _TRACEBACK.match(ln) or "Error in ASGI Framework" in ln or "the HTTP server failed" in ln:
            end = i + 1
            # The traceback runs until the next timestamped log line.
            while end < len(lines) and end < i + 300 and not lines[end][:4].isdigit():
                end += 1
            block = lines[i:end]
            if not any(k in b for k in known for b in block):
                out.append("\n".join(lines[max(0, i - 2) : end]))
            i = end
        else:
            i += 1
    return out


def rpc(
    port: int, session: str, msg: dict[str, Any], *, timeout: float = 30.0, **kw: Any
) -> tuple[Answer, Any]:
    """POST one JSON-RPC message on ``session``; (the checked answer, its final JSON-RPC message or None)."""
    ans = exchange(
        port,
        build("POST", "/mcp", port, auth_headers(session), json.dumps(msg).encode()),
        timeout=timeout,
        **kw,
    )
    check_answer(ans)
    if ans.events:
        return ans, ans.events[-1]
    return ans, (ans.json() if ans.body and "json" in ans.ctype else None)


def health(port: int, timeout: float = 5.0) -> Answer:
    return exchange(
        port, build("GET", "/health", port, [("Authorization", f"Bearer {TOKEN}")]), timeout=timeout
    )


HOSTILE_CHILD = Path(__file__).resolve().parent / "hostile_child.py"


def hostile_toml(name: str, *args: str, call_timeout: int) -> str:
    argv = [str(HOSTILE_CHILD), "--name", name, *args]
    return (
        "[[mcp]]\n"
        f'name = "{name}"\n'
        f"command = {json.dumps(sys.executable)}\n"
        f"args = {json.dumps(argv)}\n"
        f'call_timeout = "{call_timeout}s"\n'
    )
