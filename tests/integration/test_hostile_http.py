"""Hostile HTTP against the real `portero serve`: nothing a client sends may end the process.

The requests here stopped hypercorn 0.18.0's trio worker (and with it every child, session and
pending approval) before portero/front/hypercorn_fixes.py: its TCPServer._close() sent EOF outside
the send lock, racing h11's error answer. Without the fix the gateway logs "the HTTP server failed"
(it restarts its HTTP server as a second line of defence) and these tests fail.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from .harness import TOKEN, GatewayProcess, child_toml, server_toml

ROUNDS = 200


@pytest.fixture
def gw(tmp_path: Path):
    g = GatewayProcess(tmp_path, server_toml(tmp_path) + child_toml("t"))
    g.wait_ready()
    yield g
    g.stop()


def _addr(gw: GatewayProcess) -> tuple[str, int]:
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _exchange(addr: tuple[str, int], payload: bytes, *, half_close: bool = False) -> bytes:
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(payload)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        chunks = []
        try:
            while data := s.recv(65536):
                chunks.append(data)
        except OSError:
            pass
        return b"".join(chunks)


def _assert_alive(gw: GatewayProcess) -> None:
    assert gw.proc.poll() is None, gw.log_text()[-3000:]
    assert gw.health().status_code == 200
    assert "the HTTP server failed" not in gw.log_text()
    assert "BusyResourceError" not in gw.log_text()


def test_stray_bytes_after_a_closing_request(gw: GatewayProcess) -> None:
    addr = _addr(gw)
    payload = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\nXYZ"
    for _ in range(ROUNDS):
        answer = _exchange(addr, payload)
        assert answer.startswith(b"HTTP/1.1 ")  # 200, or h11's 400 for the stray bytes
    _assert_alive(gw)


def test_content_length_and_chunked_with_trailing_bytes(gw: GatewayProcess) -> None:
    addr = _addr(gw)
    payload = (
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nXYZXYZ"
    )
    for _ in range(ROUNDS):
        _exchange(addr, payload, half_close=True)
    _assert_alive(gw)


def test_a_request_head_sent_too_slowly_is_cut(gw: GatewayProcess) -> None:
    """Slowloris: a head that never completes is closed after the header timeout, and meanwhile
    other clients are served."""
    addr = _addr(gw)
    with socket.create_connection(addr, timeout=30) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        assert gw.health(token=TOKEN).status_code == 200  # others are not blocked
        slow.settimeout(30)
        try:
            rest = slow.recv(65536)
        except OSError:
            rest = b""
        assert rest == b""  # closed without an answer
        assert time.monotonic() - started < 25
    _assert_alive(gw)
