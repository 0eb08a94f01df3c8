"""Bugs the hostile tests found in portero/, all fixed now; each test keeps it fixed.

What it attacks, against the real `portero serve`:

1. Connections. A connection kept its slot of hypercorn_fixes' 512-connection bound after its client
   had gone: a TCP connect that sent nothing (no token needed) for keep_alive_timeout (75 s), and
   since 75318dc a `Connection: close` request for ever (still refused 95 s later): after 512 such
   requests no new client was served (`connection limit (512) reached`). Fixed in b44566d while
   these tests were being written; kept as regression tests.
2. Lone surrogates (`"\\ud800"`, valid JSON) in tools/call arguments, a resource URI or prompt
   arguments: the audit write fails (the store encodes strict UTF-8), the call is refused as "audit
   log unavailable" with an ERROR line, and leaves NO audit record. Fixed: the store keeps such
   text escaped.
3. JSON nested just under the parser's limit (~975 levels) in tools/call arguments: the HTTP front
   accepts it, then the gateway fails to re-encode it deeper in its stack (RecursionError): the call
   leaves no audit record ("audit log unavailable"), or is answered `-32603 Internal error:
   RecursionError`; both log a traceback. Fixed: the audit row records a note instead, and the call
   is answered with a tool error that nothing was sent.
4. A child flooding `notifications/tools/list_changed`: each one starts its own refresh task
   (tools/list to the child, catalog rebuild, broadcast); nothing coalesces them, so memory and CPU
   grow with the flood (20k: about +70 MiB RSS; 100k: about +350 MiB and ~30 s of CPU after). Fixed:
   one refresh per server and list at a time, plus at most one more.
5. A child sending a number out of float range (`1e999`, which Python's JSON parser turns into
   `inf`): the gateway answered HTTP 500 with an empty body (result, or a log message before it) and
   cut a GET stream mid-body on every replay. Fixed in aae8242 (loads refuses such numbers) while
   these tests were being written; kept as regression tests.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..integration.harness import GatewayProcess, server_toml
from .rawhttp import Answer, auth_headers, build, exchange, health, hostile_toml, new_session, rss_mib


@dataclass
class Gw:
    g: GatewayProcess
    port: int
    sid: str
    db: Path

    def post(self, body: bytes, headers: list[tuple[str, str]] | None = None) -> Answer:
        return exchange(
            self.port, build("POST", "/mcp", self.port, headers or auth_headers(self.sid), body), timeout=20
        )

    def audit_rows(self) -> int:
        with sqlite3.connect(self.db) as con:
            return int(con.execute("SELECT COUNT(*) FROM audit").fetchone()[0])


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    tmp = tmp_path_factory.mktemp("found_bugs")
    g = GatewayProcess(tmp, server_toml(tmp) + hostile_toml("junk", call_timeout=1))
    try:
        g.wait_ready()
        port = int(g.url.rsplit(":", 1)[1])
        yield Gw(g, port, new_session(port, capabilities={}), tmp / "data" / "gateway.db")
    finally:
        g.stop()


# ------------------------------------------------------------------------------------------ 1. connections
def _served(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/1.1 ")
    except OSError:
        return False


@pytest.mark.parametrize("how", ["connect-only", "connection-close-request"])
def test_closed_connections_give_back_their_slot(tmp_path: Path, how: str) -> None:
    g = GatewayProcess(tmp_path, server_toml(tmp_path) + hostile_toml("junk", call_timeout=3))
    try:
        g.wait_ready()
        port = int(g.url.rsplit(":", 1)[1])
        for _ in range(600):  # one after the other: never more than one open at a time
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    if how == "connection-close-request":
                        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                        for _ in range(100):
                            if not s.recv(65536):
                                break
            except OSError:
                pass
        # Every client has gone: a new one must be served (at once; 5 s of grace).
        deadline = time.monotonic() + 5
        while not _served(port):
            assert time.monotonic() < deadline, "a new client is refused: " + next(
                (ln for ln in reversed(g.lines) if "connection limit" in ln), "(no log line)"
            )
            time.sleep(0.25)
    finally:
        g.stop()


# ------------------------------------------------------------------------------------------ 2. surrogates
@pytest.mark.parametrize("args", [{"text": "\ud800"}, {"text": "ok", "k\udfff": 1}], ids=["value", "key"])
def test_lone_surrogates_in_arguments_leave_exactly_one_audit_record(gw: Gw, args: dict[str, Any]) -> None:
    msg = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "junk__echo", "arguments": args},
    }
    before = gw.audit_rows()
    ans = gw.post(json.dumps(msg).encode())
    assert ans.status == 200, ans
    assert b"audit log unavailable" not in ans.body, ans.body
    assert gw.audit_rows() - before == 1


# ------------------------------------------------------------------------------------------ 3. nesting
@pytest.fixture(scope="module")
def nesting_sweep(gw: Gw) -> list[tuple[int, Answer, int]]:
    """tools/call with arguments nested 900..990 deep: (depth, answer, new audit rows)."""
    out = []
    for depth in range(900, 991):
        deep = "[" * depth + "]" * depth
        body = (
            '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"junk__echo",'
            '"arguments":{"text":"ok","deep":' + deep + "}}}"
        ).encode()
        before = gw.audit_rows()
        ans = gw.post(body)
        out.append((depth, ans, gw.audit_rows() - before))
    return out


def test_deeply_nested_arguments_leave_exactly_one_audit_record(
    nesting_sweep: list[tuple[int, Answer, int]],
) -> None:
    parsed = [(d, a, n) for d, a, n in nesting_sweep if a.status == 200]
    assert parsed, "no depth got past the parser"
    wrong = [(d, n, a.body[-120:]) for d, a, n in parsed if n != 1]
    assert not wrong, f"tools/call answered 200 without exactly one audit record: {wrong}"


def test_deeply_nested_arguments_are_not_an_internal_error(
    nesting_sweep: list[tuple[int, Answer, int]],
) -> None:
    wrong = [(d, a.body[-150:]) for d, a, _ in nesting_sweep if b"Internal error" in a.body]
    assert not wrong, wrong
    wrong = [(d, a.body[-150:]) for d, a, _ in nesting_sweep if b"audit log unavailable" in a.body]
    assert not wrong, wrong


# ------------------------------------------------------------------------------------------ 5. 1e999 (fixed)
def call_nan(gw: Gw, args: dict[str, Any]) -> Answer:
    msg = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "junk__nan", "arguments": args},
    }
    return gw.post(json.dumps(msg).encode())


@pytest.mark.parametrize("literal", ["1e999", "-1e999"])
def test_child_result_with_a_number_out_of_range(gw: Gw, literal: str) -> None:
    ans = call_nan(gw, {"literal": literal})
    assert ans.status == 200, (ans.status, ans.body[:200])
    final = ans.json()
    assert "result" in final or "error" in final, final


def test_child_log_message_with_a_number_out_of_range(gw: Gw) -> None:
    ans = call_nan(gw, {"literal": "1e999", "in_notification": True})
    assert ans.status == 200, (ans.status, ans.body[:200])


def test_get_stream_replaying_a_number_out_of_range(gw: Gw) -> None:
    sid = new_session(gw.port, capabilities={})
    msg = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "junk__nan",
            "arguments": {"literal": "1e999", "in_notification": True, "after": True},
        },
    }
    assert gw.post(json.dumps(msg).encode(), auth_headers(sid)).status == 200
    time.sleep(0.5)  # the log message comes after the answer: to the session's GET stream buffer
    headers = [h for h in auth_headers(sid) if h[0] != "Accept"] + [
        ("Accept", "text/event-stream"),
        ("Last-Event-ID", "0"),
    ]
    ans = exchange(gw.port, build("GET", "/mcp", gw.port, headers), timeout=10, peek_stream=1.0)
    assert ans.status == 200 and ans.peeked, ans  # an open stream, not one cut by the gateway


# ------------------------------------------------------------------------------------------ 4. list_changed
def test_list_changed_flood_memory_is_bounded(tmp_path: Path) -> None:
    cfg = server_toml(tmp_path).replace('log_level = "debug"', 'log_level = "info"')
    g = GatewayProcess(tmp_path, cfg + hostile_toml("flood", call_timeout=60))
    try:
        g.wait_ready()
        port = int(g.url.rsplit(":", 1)[1])
        sid = new_session(port, capabilities={})
        rss0 = rss_mib(g.proc.pid)
        msg = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "flood__flood", "arguments": {"n": 25_000, "kind": "list_changed"}},
        }
        ans = exchange(
            port, build("POST", "/mcp", port, auth_headers(sid), json.dumps(msg).encode()), timeout=90
        )
        assert ans.status == 200
        assert health(port).status in (200, 503)
        grown = rss_mib(g.proc.pid) - rss0
        assert grown < 48, f"RSS grew by {grown:.0f} MiB after 25,000 list_changed"
    finally:
        g.stop()
