"""Policies and the audit record through the real gateway (no Telegram here)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from .harness import GatewayProcess, McpHttpClient, child_toml, server_toml, text_of

POLICIES = """
[policies]
default = "allow"
[policies.rules]
"t/delete_thing" = "deny"
"t/add" = "require-approval"
"t/s*" = "deny"
"t/sleep" = "allow"
"*" = "allow"
"""


def audit_rows(g: GatewayProcess) -> list[dict[str, Any]]:
    db = g.config_path.parent / "data" / "gateway.db"
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM audit ORDER BY id")]
    finally:
        conn.close()


@pytest.fixture
def gw(tmp_path: Path):
    g = GatewayProcess(tmp_path, server_toml(tmp_path) + POLICIES + child_toml("t"))
    g.wait_ready()
    yield g
    g.stop()


def test_denied_tools_are_hidden_and_refused(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    names = {t["name"] for t in c.request("tools/list")["result"]["tools"]}
    assert "t__delete_thing" not in names
    assert "t__sample" not in names  # "t/s*" = deny
    assert "t__sleep" in names  # the exact rule beats the pattern
    assert "t__echo" in names and "t__add" in names
    res = c.call("t__delete_thing", {"what": "everything"})
    assert res["isError"] is True
    assert text_of(res) == "Call to t/delete_thing denied by rule 't/delete_thing'."
    res = c.call("t__sample", {"prompt": "x"})
    assert res["isError"] is True and "rule 't/s*'" in text_of(res)


def test_require_approval_without_telegram_is_denied(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    res = c.call("t__add", {"a": 1, "b": 2})
    assert res["isError"] is True
    assert "no approver" in text_of(res) or "no [telegram]" in text_of(res)


def test_every_call_leaves_exactly_one_audit_record(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    c.call("t__echo", {"text": "hello"})
    c.call("t__delete_thing", {"what": "x"})
    c.call("t__add", {"a": 1, "b": 2})
    c.call("t__sleep", {"seconds": 0})
    rows = audit_rows(gw)
    got = [(r["tool"], r["decision"], r["source"], r["outcome"]) for r in rows]
    assert got == [
        ("t/echo", "allow", "rule:*", "ok"),
        ("t/delete_thing", "deny", "rule:t/delete_thing", "refused"),
        ("t/add", "rejected", "no-approver", "refused"),
        ("t/sleep", "allow", "rule:t/sleep", "ok"),
    ]
    assert json.loads(rows[0]["arguments"]) == {"text": "hello"}
    assert all(r["session"] == c.session_id for r in rows)
    assert all(r["duration_ms"] >= 0 for r in rows)


def test_cancelled_call_still_leaves_one_record(gw: GatewayProcess) -> None:
    import threading
    import time

    c = McpHttpClient(gw.url)
    c2 = McpHttpClient(gw.url)
    c2.session_id = c.session_id  # the same session, another connection
    result: dict[str, Any] = {}

    def slow() -> None:
        result["r"] = c.post(
            {
                "jsonrpc": "2.0",
                "id": 77,
                "method": "tools/call",
                "params": {"name": "t__sleep", "arguments": {"seconds": 30}},
            }
        )

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.5)
    c2.notify("notifications/cancelled", {"requestId": 77, "reason": "user pressed stop"})
    t.join(10)
    assert not t.is_alive()
    assert result["r"].status_code == 202  # a cancelled request gets no JSON-RPC response
    gw.wait_log("[t] request")  # the child was told to cancel
    rows = audit_rows(gw)
    assert [(r["tool"], r["outcome"]) for r in rows] == [("t/sleep", "error")]
    assert "cancelled" in rows[0]["error"]
