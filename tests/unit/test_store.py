"""The SQLite store against real database files in tmp_path."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio

from portero.store import INTERRUPTED_ERROR, SCHEMA_VERSION, Store, StoreError, read_audit

REPO_ROOT = Path(__file__).resolve().parents[2]


def audit_rec(i: int = 0, **overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "ts": 1_700_000_000.0 + i,
        "session": "s1",
        "tool": "github/create_issue",
        "arguments": {"title": f"issue {i}", "who": "John Doe"},
        "decision": "allow",
        "source": "default",
        "outcome": "ok",
        "duration_ms": 12.5,
    }
    rec.update(overrides)
    return rec


def approval_rec(id: str = "abc", **overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": id,
        "created_at": 100.0,
        "tool": "github/create_issue",
        "server": "github",
        "rule": "rule:github/*",
        "arguments": {"title": "hi"},
        "session": "s1",
        "expires_at": 220.0,
    }
    rec.update(overrides)
    return rec


async def test_open_creates_parent_dir_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "gateway.db"
    store = await Store.open(str(path))
    await store.aclose()
    await store.aclose()  # idempotent
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"approvals", "grants", "audit", "events"} <= tables
    finally:
        conn.close()


async def test_migrations_are_idempotent(tmp_path: Path) -> None:
    path = str(tmp_path / "gateway.db")
    store = await Store.open(path)
    await store.record_audit(audit_rec())
    await store.aclose()
    for _ in range(2):
        store = await Store.open(path)
        assert len(await store.recent_audit(10)) == 1
        await store.aclose()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await Store.open(str(path))


async def test_closed_store_refuses(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "gateway.db"))
    await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.active_grants(0.0)


async def test_approvals_lifecycle(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "gateway.db"))
    await store.add_approval(approval_rec("a1"))
    await store.add_approval(approval_rec("a2"))
    await store.add_approval(approval_rec("a3"))
    assert await store.decide_approval("a1", "approved", "admin", 150.0)
    assert not await store.decide_approval("a1", "rejected", "admin", 151.0)  # single use
    assert not await store.decide_approval("nope", "rejected", "admin", 151.0)
    assert await store.expire_stale_pending(200.0) == 2
    assert await store.expire_stale_pending(201.0) == 0
    a1 = await store.get_approval("a1")
    a2 = await store.get_approval("a2")
    assert a1 is not None and a2 is not None
    assert (a1["state"], a1["source"], a1["decided_at"]) == ("approved", "admin", 150.0)
    assert (a2["state"], a2["source"], a2["decided_at"]) == ("expired", "timeout", 200.0)
    assert a2["arguments"] == {"title": "hi"}
    with pytest.raises(ValueError):
        await store.decide_approval("a3", "pending", "admin", 1.0)
    await store.aclose()


async def test_grants(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "gateway.db"))
    g1 = await store.add_grant("github/*", 200.0, 100.0, "admin")
    g2 = await store.add_grant("fs/write", 150.0, 100.0, "admin")
    await store.add_grant("fs/write", 110.0, 100.0, "admin")
    assert [g.id for g in await store.active_grants(120.0)] == [g2, g1]
    assert [g.id for g in await store.active_grants(150.0)] == [g1]  # expiry boundary
    assert await store.revoke_grants("fs/write", 120.0) == 1  # the expired one is not counted
    assert [g.pattern for g in await store.active_grants(120.0)] == ["github/*"]
    await store.add_grant("x/*", 300.0, 120.0, "telegram")
    assert await store.revoke_grants(None, 121.0) == 2
    assert await store.active_grants(121.0) == []
    await store.aclose()


def count_transactions(store: Store) -> list[str]:
    """The BEGINs the store's connection runs from now on (SQLite's trace hook: observed, not replaced)."""
    begins: list[str] = []
    conn = store._conn
    assert conn is not None
    conn.set_trace_callback(lambda sql: begins.append(sql) if sql.startswith("BEGIN") else None)
    return begins


async def test_group_commit_under_concurrency(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = await Store.open(str(path))
    transactions = count_transactions(store)
    committed: list[int] = []

    async def one(i: int) -> None:
        row_id = await store.record_audit(audit_rec(i, outcome="pending"))
        # Once record_audit returns, the row is visible to an independent connection.
        conn = sqlite3.connect(path)
        try:
            query = "SELECT outcome FROM audit WHERE id = ? AND ts = ?"
            assert conn.execute(query, (row_id, 1_700_000_000.0 + i)).fetchall() == [("pending",)]
        finally:
            conn.close()
        await store.finish_audit(row_id, outcome="ok", duration_ms=float(i), error=None)
        committed.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(one, i)
    assert sorted(committed) == list(range(50))
    assert 2 <= len(transactions) < 100  # 50 inserts and 50 updates, grouped
    records = await store.recent_audit(100)
    assert len(records) == 50  # one row per call
    assert sorted(r["arguments"]["title"] for r in records) == sorted(f"issue {i}" for i in range(50))
    assert {r["outcome"] for r in records} == {"ok"}
    assert sorted(r["duration_ms"] for r in records) == [float(i) for i in range(50)]
    await store.aclose()


async def test_record_audit_survives_cancellation(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "gateway.db"))
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.record_audit(audit_rec(1))
    assert len(await store.recent_audit(5)) == 1
    await store.aclose()


async def test_record_audit_validates(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "gateway.db"))
    with pytest.raises(ValueError):
        await store.record_audit(audit_rec(decision="maybe"))
    with pytest.raises(ValueError):
        await store.record_audit(audit_rec(outcome="meh"))
    await store.aclose()


async def test_recent_audit_and_events(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "gateway.db"))
    for i in range(5):
        await store.record_audit(audit_rec(i, error="boom" if i == 4 else None, outcome="error"))
    recent = await store.recent_audit(2)
    assert [r["ts"] for r in recent] == [1_700_000_004.0, 1_700_000_003.0]  # newest first
    assert recent[0]["error"] == "boom"
    await store.record_event("telegram.stranger", {"chat_id": 42, "text": "hi"}, ts=5.0)
    assert await store.recent_events(5) == [
        {"ts": 5.0, "kind": "telegram.stranger", "detail": {"chat_id": 42, "text": "hi"}}
    ]
    await store.aclose()


async def test_read_audit_filters(tmp_path: Path) -> None:
    path = str(tmp_path / "gateway.db")
    store = await Store.open(path)
    await store.record_audit(audit_rec(0, ts=1000.0, tool="github/create_issue"))
    await store.record_audit(audit_rec(1, ts=2000.0, tool="filesystem/read_file", session=None))
    await store.record_audit(
        audit_rec(2, ts=3000.0, tool="github/list_issues", decision="approved", source="admin")
    )
    await store.aclose()

    everything = read_audit(path, since=None, tool=None)
    assert [r["tool"] for r in everything] == [
        "github/create_issue",
        "filesystem/read_file",
        "github/list_issues",
    ]
    first = everything[0]
    assert first["ts"] == "1970-01-01T00:16:40.000Z"
    assert first["arguments"] == {"title": "issue 0", "who": "John Doe"}
    keys = {"ts", "session", "tool", "arguments", "decision", "source", "outcome", "duration_ms"}
    assert keys <= set(first)
    json.dumps(everything)  # printable as JSON lines

    assert [r["tool"] for r in read_audit(path, since=None, tool="github/*")] == [
        "github/create_issue",
        "github/list_issues",
    ]
    assert [r["ts"] for r in read_audit(path, since=1500.0, tool=None, now=3100.0)] == [
        "1970-01-01T00:33:20.000Z",
        "1970-01-01T00:50:00.000Z",
    ]
    assert [r["tool"] for r in read_audit(path, since=1500.0, tool="github/*", now=3100.0)] == [
        "github/list_issues"
    ]
    assert [r["tool"] for r in read_audit(path, since=None, tool=None, limit=2)] == [
        "filesystem/read_file",
        "github/list_issues",
    ]
    assert read_audit(path, since=None, tool="nothing/*") == []
    with pytest.raises(FileNotFoundError):
        read_audit(str(tmp_path / "missing.db"), since=None, tool=None)


CHILD = textwrap.dedent(
    """
    import sys, time, trio
    from portero.store import Store

    async def main(path):
        store = await Store.open(path)
        await store.add_approval({"id": "k1", "created_at": 1.0, "tool": "gh/x", "server": "gh",
                                  "rule": "default", "arguments": {}, "session": None, "expires_at": 9.0})
        await store.decide_approval("k1", "approved", "admin", 2.0)
        await store.add_grant("gh/x", 4e9, 2.0, "admin")
        await store.record_audit({"ts": 2.0, "session": None, "tool": "gh/x", "arguments": {"a": 1},
                                  "decision": "approved", "source": "admin", "outcome": "ok",
                                  "duration_ms": 1.0})
        # A call that is running when the process is killed: recorded, its outcome never.
        await store.record_audit({"ts": 3.0, "session": None, "tool": "gh/y", "arguments": {},
                                  "decision": "allow", "source": "default", "outcome": "pending"})
        print("decided", flush=True)
        await trio.sleep_forever()

    trio.run(main, sys.argv[1])
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
async def test_data_survives_sigkill(tmp_path: Path) -> None:
    path = str(tmp_path / "gateway.db")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    # stderr is inherited so that a failing child shows its traceback in the test report.
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", CHILD, path], stdout=subprocess.PIPE, env=env
    )
    try:
        assert proc.stdout is not None
        buffered = b""
        with trio.fail_after(30):
            while b"decided" not in buffered:
                chunk = await proc.stdout.receive_some()
                assert chunk, "child exited before deciding"
                buffered += chunk
    finally:
        proc.send_signal(signal.SIGKILL)
        with trio.CancelScope(shield=True):
            await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()
    assert proc.returncode == -signal.SIGKILL

    store = await Store.open(path)
    approval = await store.get_approval("k1")
    assert approval is not None and approval["state"] == "approved"
    assert [g.pattern for g in await store.active_grants(3.0)] == ["gh/x"]
    running, answered = await store.recent_audit(5)
    assert (answered["tool"], answered["outcome"]) == ("gh/x", "ok")
    assert (running["tool"], running["outcome"], running["duration_ms"]) == ("gh/y", "interrupted", None)
    assert running["error"] == INTERRUPTED_ERROR
    await store.aclose()


async def test_wal_is_checkpointed_every_so_many_records(tmp_path: Path) -> None:
    from portero.store import CHECKPOINT_EVERY

    path = tmp_path / "gateway.db"
    store = await Store.open(str(path))
    initial = path.stat().st_size
    for i in range(CHECKPOINT_EVERY - 1):
        await store.record_audit(audit_rec(i))
    # Automatic checkpoints are off: everything is still in the WAL, the main file is untouched.
    assert path.stat().st_size == initial
    await store.record_audit(audit_rec(CHECKPOINT_EVERY))
    # The worker-thread checkpoint moved the pages into the main file.
    assert path.stat().st_size > initial
    assert len(await store.recent_audit(CHECKPOINT_EVERY + 5)) == CHECKPOINT_EVERY
    await store.aclose()


async def test_a_version_1_database_is_upgraded_with_its_records(tmp_path: Path) -> None:
    from portero.store import MIGRATIONS

    path = tmp_path / "gateway.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"BEGIN;\n{MIGRATIONS[0]}\nPRAGMA user_version = 1;\nCOMMIT;")
    conn.execute(
        "INSERT INTO audit (ts, session, tool, arguments, decision, source, outcome, duration_ms, error) "
        "VALUES (1.0, NULL, 'gh/x', '{}', 'allow', 'default', 'ok', 2.0, NULL)"
    )
    conn.close()
    store = await Store.open(str(path))
    [old] = await store.recent_audit(5)
    assert (old["tool"], old["outcome"], old["duration_ms"]) == ("gh/x", "ok", 2.0)
    await store.record_audit(audit_rec(1))
    await store.aclose()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT settled_below FROM audit_watermark").fetchone()[0] == 2
    finally:
        conn.close()
