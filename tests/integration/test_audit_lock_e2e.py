"""The audit log locked by another process, through the real gateway: the loop stays responsive and the
call is refused (fail closed) once the audit budget is spent; nothing is recorded for it.

Before, the audit commit waited for the lock on the event loop with a 10 s busy timeout: GET /health took
~10 s while the lock was held, and the call ran with its record silently dropped.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from portero.gateway.router import AUDIT_UNAVAILABLE
from portero.store import AUDIT_BUDGET

from .harness import GatewayProcess, McpHttpClient, child_toml, server_toml, text_of


def audit_rows(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM audit ORDER BY id")]
    finally:
        conn.close()


@pytest.fixture
def gw(tmp_path: Path):
    g = GatewayProcess(tmp_path, server_toml(tmp_path) + child_toml("t"))
    g.wait_ready()
    yield g
    g.stop()


def test_a_locked_audit_log_refuses_calls_without_stalling_the_gateway(
    gw: GatewayProcess, tmp_path: Path
) -> None:
    db = tmp_path / "data" / "gateway.db"
    c = McpHttpClient(gw.url)
    assert text_of(c.call("t__echo", {"text": "before"})) == "before"

    lock = sqlite3.connect(db, isolation_level=None, timeout=0)
    lock.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    result: dict[str, Any] = {}

    def call() -> None:
        start = time.monotonic()
        result["r"] = c.call("t__echo", {"text": "while locked"})
        result["took"] = time.monotonic() - start

    try:
        t = threading.Thread(target=call)
        t.start()
        health_times = []
        while t.is_alive():
            start = time.monotonic()
            assert gw.health().status_code == 200
            health_times.append(time.monotonic() - start)
            time.sleep(0.2)
        t.join()
    finally:
        lock.execute("ROLLBACK")
        lock.close()

    assert max(health_times) < 1.0, health_times  # generous: a blocked loop took ~10 s here
    assert len(health_times) >= 5
    assert result["r"]["isError"] is True
    assert text_of(result["r"]) == AUDIT_UNAVAILABLE
    assert AUDIT_BUDGET * 0.8 <= result["took"] < AUDIT_BUDGET + 5
    gw.wait_log(AUDIT_UNAVAILABLE)
    assert [(r["tool"], r["outcome"]) for r in audit_rows(db)] == [("t/echo", "ok")]

    # The lock is gone: calls run and are recorded again, one row each.
    assert text_of(c.call("t__echo", {"text": "after"})) == "after"
    rows = audit_rows(db)
    assert [(r["tool"], r["outcome"]) for r in rows] == [("t/echo", "ok"), ("t/echo", "ok")]
    assert "after" in rows[-1]["arguments"]
