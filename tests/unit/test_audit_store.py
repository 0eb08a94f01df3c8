"""The audit record's life in the store, against real database files in tmp_path.

A second ``sqlite3`` connection holding the write lock (``BEGIN IMMEDIATE``) stands in for another
process: audit writes must then wait in a worker thread, never on the event loop, and give up after the
store's audit budget. A ticking task measures the loop: if a write blocked it, the tick gap shows it.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from portero.store import CHECKPOINT_EVERY, INTERRUPTED_ERROR, Store, StoreError, read_audit

HANG = 0.5  # a tick gap this long means the event loop was blocked: a hang check, not a benchmark


def audit_rec(i: int = 0, **overrides: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "ts": 1_700_000_000.0 + i,
        "session": "s1",
        "tool": "files/read",
        "arguments": {"path": f"/tmp/{i}"},
        "decision": "allow",
        "source": "default",
        "outcome": "ok",
        "duration_ms": 1.5,
    }
    rec.update(overrides)
    return rec


class Ticker:
    """Ticks every 10 ms; ``max_gap`` is the longest the event loop kept it waiting."""

    def __init__(self) -> None:
        self.max_gap = 0.0
        self.ticks = 0

    async def run(self) -> None:
        last = time.perf_counter()
        while True:
            await trio.sleep(0.01)
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - last)
            self.ticks += 1
            last = now


class WriteLock:
    """Another connection holding the database's write lock until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=0)
        self.conn.execute("BEGIN IMMEDIATE")

        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.conn.execute("ROLLBACK")
            self.conn.close()


@contextmanager
def write_lock(path: Path) -> Iterator[WriteLock]:
    lock = WriteLock(path)
    try:
        yield lock
    finally:
        lock.release()


def rows(path: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM audit ORDER BY id")]
    finally:
        conn.close()


def settled_below(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        (value,) = conn.execute("SELECT settled_below FROM audit_watermark").fetchone()
    finally:
        conn.close()
    return int(value)


# ------------------------------------------------------------------------------------ the lifecycle


async def test_a_call_is_one_row_pending_then_finished(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = await Store.open(str(path))
    row_id = await store.record_audit(audit_rec(1, outcome="pending", duration_ms=99.0, error="ignored"))
    [row] = rows(path)  # committed before record_audit returned
    assert row["id"] == row_id
    assert (row["outcome"], row["duration_ms"], row["error"]) == ("pending", 0.0, None)
    [shown] = await store.recent_audit(5)
    assert shown["outcome"] == "pending" and shown["duration_ms"] is None  # not known yet

    await store.finish_audit(row_id, outcome="error", duration_ms=12.25, error="it broke")
    [row] = rows(path)
    assert row["id"] == row_id
    assert (row["outcome"], row["duration_ms"], row["error"]) == ("error", 12.25, "it broke")
    assert (row["tool"], row["decision"], row["source"], row["session"]) == (
        "files/read",
        "allow",
        "default",
        "s1",
    )
    [printed] = read_audit(str(path), since=None, tool=None)
    assert set(printed) == {
        "ts",
        "session",
        "tool",
        "arguments",
        "decision",
        "source",
        "outcome",
        "duration_ms",
        "error",
        "client",
    }
    assert (printed["outcome"], printed["duration_ms"], printed["arguments"]) == (
        "error",
        12.25,
        {"path": "/tmp/1"},
    )
    with pytest.raises(ValueError):
        await store.finish_audit(row_id, outcome="pending", duration_ms=1.0, error=None)
    with pytest.raises(StoreError, match="no audit record"):
        await store.finish_audit(row_id + 100, outcome="ok", duration_ms=1.0, error=None)
    assert len(rows(path)) == 1
    await store.aclose()


async def test_rows_left_pending_are_marked_interrupted_at_the_next_open(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = await Store.open(str(path))
    done = await store.record_audit(audit_rec(1, outcome="pending"))
    await store.finish_audit(done, outcome="ok", duration_ms=3.0, error=None)
    left = await store.record_audit(audit_rec(2, outcome="pending"))
    refused = await store.record_audit(audit_rec(3, outcome="refused", error="denied"))
    await store.aclose()  # as if the gateway died before the call of `left` answered

    store = await Store.open(str(path))
    by_id = {r["id"]: r for r in rows(path)}
    assert (by_id[done]["outcome"], by_id[done]["duration_ms"]) == ("ok", 3.0)
    assert (by_id[refused]["outcome"], by_id[refused]["error"]) == ("refused", "denied")
    assert (by_id[left]["outcome"], by_id[left]["error"]) == ("interrupted", INTERRUPTED_ERROR)
    shown = {r["ts"]: r for r in await store.recent_audit(5)}
    assert shown[1_700_000_002.0]["outcome"] == "interrupted"
    assert shown[1_700_000_002.0]["duration_ms"] is None  # never known
    # A pending row of the run that is open now is its own, not the previous run's.
    mine = await store.record_audit(audit_rec(4, outcome="pending"))
    await store.aclose()
    printed = read_audit(str(path), since=None, tool=None)
    assert [r["outcome"] for r in printed] == ["ok", "interrupted", "refused", "pending"]
    assert printed[1]["error"] == INTERRUPTED_ERROR
    assert rows(path)[-1]["id"] == mine


async def test_the_watermark_moves_past_finished_rows_but_not_a_pending_one(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = await Store.open(str(path))
    first = await store.record_audit(audit_rec(0, outcome="pending"))
    await store.finish_audit(first, outcome="ok", duration_ms=1.0, error=None)
    long_call = await store.record_audit(audit_rec(1, outcome="pending"))
    for i in range(CHECKPOINT_EVERY + 10):
        await store.record_audit(audit_rec(10 + i))
    # The open scan starts at the oldest row still waiting for its outcome, not at the start of the log.
    assert first < settled_below(path) <= long_call
    await store.finish_audit(long_call, outcome="ok", duration_ms=1.0, error=None)
    for i in range(CHECKPOINT_EVERY + 10):
        await store.record_audit(audit_rec(i, outcome="pending"))  # never finished
    stuck = settled_below(path)
    assert long_call < stuck
    await store.aclose()

    store = await Store.open(str(path))
    outcomes = [(r["id"], r["outcome"]) for r in rows(path)]
    assert all(outcome == "interrupted" for i, outcome in outcomes if i >= stuck)
    assert all(outcome == "ok" for i, outcome in outcomes if i < stuck)
    assert settled_below(path) == outcomes[-1][0] + 1  # all settled now
    await store.aclose()


# ------------------------------------------------------------------------------------ a locked database


async def test_a_locked_database_is_waited_for_in_a_thread_not_on_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = await Store.open(str(path), audit_budget=5.0)
    ticker = Ticker()
    took: list[float] = []

    async def write(i: int) -> None:
        start = time.perf_counter()
        row_id = await store.record_audit(audit_rec(i, outcome="pending"))
        await store.finish_audit(row_id, outcome="ok", duration_ms=1.0, error=None)
        took.append(time.perf_counter() - start)

    with write_lock(path) as lock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker.run)
            await trio.sleep(0.05)
            with trio.fail_after(5):
                async with trio.open_nursery() as writers:
                    for i in range(10):
                        writers.start_soon(write, i)
                    await trio.sleep(1.0)  # longer than HANG: a write waiting on the loop would show
                    assert took == []  # all still waiting for the lock
                    lock.release()
            nursery.cancel_scope.cancel()
    assert ticker.max_gap < HANG, f"the event loop was blocked for {ticker.max_gap:.3f} s"
    assert ticker.ticks > 50
    assert min(took) >= 0.9  # they did wait for the lock
    assert [r["outcome"] for r in rows(path)] == ["ok"] * 10
    await store.aclose()


async def test_a_write_fails_once_the_budget_is_spent(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = await Store.open(str(path), audit_budget=0.3)
    before = await store.record_audit(audit_rec(0, outcome="pending"))
    ticker = Ticker()
    failures: list[tuple[float, StoreError]] = []

    async def write(rec: dict[str, Any]) -> None:
        start = time.perf_counter()
        with pytest.raises(StoreError) as info:
            await store.record_audit(rec)
        failures.append((time.perf_counter() - start, info.value))

    async def finish() -> None:
        start = time.perf_counter()
        with pytest.raises(StoreError) as info:
            await store.finish_audit(before, outcome="ok", duration_ms=1.0, error=None)
        failures.append((time.perf_counter() - start, info.value))

    with write_lock(path):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker.run)
            async with trio.open_nursery() as writers:
                writers.start_soon(write, audit_rec(1, outcome="pending"))
                writers.start_soon(write, audit_rec(2, outcome="refused"))
                writers.start_soon(finish)
            nursery.cancel_scope.cancel()
    assert ticker.max_gap < HANG, f"the event loop was blocked for {ticker.max_gap:.3f} s"
    assert len(failures) == 3
    for took, exc in failures:
        assert 0.25 <= took < 3.0
        assert "locked" in str(exc)
    # Nothing of the failed writes is in the database; the finished-to-be row keeps its pending state.
    assert [(r["id"], r["outcome"]) for r in rows(path)] == [(before, "pending")]
    # Once the lock is gone, writes go through again.
    await store.finish_audit(before, outcome="ok", duration_ms=1.0, error=None)
    await store.record_audit(audit_rec(3))
    assert [r["outcome"] for r in rows(path)] == ["ok", "ok"]
    await store.aclose()


async def test_a_long_worker_thread_write_counts_against_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = await Store.open(str(path), audit_budget=0.3)
    approval = {
        "id": "a1",
        "created_at": 1.0,
        "tool": "files/read",
        "server": "files",
        "rule": "default",
        "arguments": {},
        "session": None,
        "expires_at": 2.0,
    }
    ticker = Ticker()
    with write_lock(path) as lock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker.run)
            with trio.fail_after(5):
                async with trio.open_nursery() as approvals:
                    # An approval write waits for the lock in a worker thread, holding the connection.
                    approvals.start_soon(store.add_approval, approval)
                    await trio.sleep(0.05)
                    start = time.perf_counter()
                    with pytest.raises(StoreError, match="busy"):
                        await store.record_audit(audit_rec(1, outcome="pending"))
                    assert 0.2 <= time.perf_counter() - start < 3.0
                    lock.release()  # the approval write goes through now
            nursery.cancel_scope.cancel()
    assert ticker.max_gap < HANG
    assert await store.get_approval("a1") is not None
    assert rows(path) == []
    await store.aclose()


async def test_a_closed_store_refuses_audit_writes(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "gateway.db"))
    row_id = await store.record_audit(audit_rec(0, outcome="pending"))
    await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.record_audit(audit_rec(1, outcome="pending"))
    with pytest.raises(StoreError, match="closed"):
        await store.finish_audit(row_id, outcome="ok", duration_ms=1.0, error=None)


# ------------------------------------------------------------------------------------ file modes


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_files_are_created_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    data_dir = tmp_path / "state" / "data"
    path = data_dir / "gateway.db"
    old = os.umask(0)
    try:
        store = await Store.open(str(path))
        await store.record_audit(audit_rec())
        assert mode(data_dir) == 0o700
        assert mode(data_dir.parent) == 0o700  # created for it, too
        for name in ("gateway.db", "gateway.db-wal", "gateway.db-shm"):
            assert mode(data_dir / name) == 0o600, name
        await store.aclose()
    finally:
        os.umask(old)


async def test_existing_database_files_are_made_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = await Store.open(str(path))
    await store.record_audit(audit_rec())
    for name in ("gateway.db", "gateway.db-wal", "gateway.db-shm"):
        os.chmod(tmp_path / name, 0o644)
    await store.aclose()
    os.chmod(tmp_path, 0o755)  # a folder that existed already is left as it is

    store = await Store.open(str(path))
    for name in ("gateway.db", "gateway.db-wal", "gateway.db-shm"):
        assert mode(tmp_path / name) == 0o600, name
    assert mode(tmp_path) == 0o755
    await store.aclose()
