"""The SQLite store: approvals, grants, the audit log and odd events, in ``data_dir/gateway.db``.

One connection, WAL mode, ``synchronous=NORMAL``, automatic checkpoints off. Calls run in a worker thread
through ``trio.to_thread.run_sync`` behind a ``CapacityLimiter(1)``, so the connection is never used by two
threads at once -- except the audit INSERT + COMMIT of every tool call, which holds the same limiter but runs
on the event loop: in WAL mode without fsync it takes ~12 µs, an eighth of a thread hop. The WAL checkpoint
(the part that fsyncs) runs in a worker thread every :data:`CHECKPOINT_EVERY` audit records. Every write is
committed before the method returns: a decision or an audit record that was acknowledged survives a SIGKILL
or a crash of the gateway; only a power cut can lose the last commits.

Audit records are committed in groups: callers that arrive while a commit is in progress (or while a worker
thread holds the connection) queue their rows, and the next commit writes all of them in one transaction.
Each caller still returns only once its own row is committed. Writes are shielded from cancellation --
they are short, and the record of a call must not be lost because its client went away.

The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` is applied in order, each step in
its own transaction, so opening is idempotent and an interrupted upgrade leaves a consistent version.

:func:`read_audit` is the synchronous, read-only entry point for ``portero audit``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
import trio

from portero.core.policy import Grant, glob_match

T = TypeVar("T")
log = logging.getLogger("portero.store")

APPROVAL_STATES = ("pending", "approved", "rejected", "expired")
AUDIT_DECISIONS = ("allow", "deny", "approved", "rejected", "expired")
AUDIT_OUTCOMES = ("ok", "error", "refused")

# Each entry moves the schema from version i to i + 1. Append only: never edit a released step.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        tool TEXT NOT NULL,
        server TEXT NOT NULL,
        rule TEXT NOT NULL,
        arguments TEXT NOT NULL,
        session TEXT,
        state TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT '',
        decided_at REAL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX approvals_state ON approvals (state);
    CREATE TABLE grants (
        id INTEGER PRIMARY KEY,
        pattern TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        created_by TEXT NOT NULL,
        revoked_at REAL
    );
    CREATE INDEX grants_expires_at ON grants (expires_at);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        session TEXT,
        tool TEXT NOT NULL,
        arguments TEXT NOT NULL,
        decision TEXT NOT NULL,
        source TEXT NOT NULL,
        outcome TEXT NOT NULL,
        duration_ms REAL NOT NULL,
        error TEXT
    );
    CREATE INDEX audit_ts ON audit (ts);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    """The database could not be opened, is from a newer Portero, or a write failed."""


def _connect(path: str) -> sqlite3.Connection:
    if path != ":memory:":
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
    # isolation_level=None: no implicit transactions; every write below says BEGIN/COMMIT itself.
    # check_same_thread=False: worker threads vary, the CapacityLimiter(1) serializes them.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit is in the WAL file before it returns, so it survives the
        # gateway being killed (SIGKILL, OOM, crash) — what SPEC's "a crash never loses an answered
        # call" asks. Only a power cut or kernel crash can lose the last commits; FULL would fsync
        # on every commit and cost 2–4x the per-call latency (bench/RESULTS.md).
        conn.execute("PRAGMA synchronous=NORMAL")
        # Checkpoints (which fsync) run in a worker thread, never inside an inline audit commit.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA foreign_keys=ON")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


CHECKPOINT_EVERY = 1000  # audit records between two WAL checkpoints (~1 MB of WAL)


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _migrate(conn: sqlite3.Connection) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"the database has schema version {version}, newer than this Portero knows ({SCHEMA_VERSION})"
        )
    for number in range(version, SCHEMA_VERSION):
        # executescript runs its own statements; the BEGIN/COMMIT make the step and its version one unit.
        step = MIGRATIONS[number]
        conn.executescript(f"BEGIN IMMEDIATE;\n{step}\nPRAGMA user_version = {number + 1};\nCOMMIT;")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _iso(ts: float) -> str:
    moment = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@attrs.define(eq=False)
class _AuditSlot:
    row: tuple[Any, ...]
    written: bool = False
    error: BaseException | None = None


_AUDIT_COLUMNS = (
    "ts",
    "session",
    "tool",
    "arguments",
    "decision",
    "source",
    "outcome",
    "duration_ms",
    "error",
)


def _audit_row(rec: dict[str, Any]) -> tuple[Any, ...]:
    if rec["decision"] not in AUDIT_DECISIONS:
        raise ValueError(f"unknown audit decision {rec['decision']!r}")
    if rec["outcome"] not in AUDIT_OUTCOMES:
        raise ValueError(f"unknown audit outcome {rec['outcome']!r}")
    return (
        float(rec["ts"]),
        rec.get("session"),
        rec["tool"],
        _dumps(rec.get("arguments") or {}),
        rec["decision"],
        rec["source"],
        rec["outcome"],
        float(rec.get("duration_ms") or 0.0),
        rec.get("error"),
    )


class Store:
    """The gateway's database. Create with :meth:`open`; close with :meth:`aclose`."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = conn
        self._limiter = trio.CapacityLimiter(1)
        self._audit_queue: list[_AuditSlot] = []
        self._audit_lock = trio.Lock()
        self._since_checkpoint = 0

    @classmethod
    async def open(cls, path: str) -> Store:
        """Open (creating the file and its parent folder if needed) and bring the schema up to date."""
        try:
            conn = await trio.to_thread.run_sync(_connect, path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        return cls(conn, path)

    async def aclose(self) -> None:
        """Close the connection after any write in progress. Idempotent."""

        def close() -> None:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(close, limiter=self._limiter)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a worker thread, one at a time."""

        def call() -> T:
            conn = self._conn
            if conn is None:
                raise StoreError("the store is closed")
            return fn(conn, *args)

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Like :meth:`_run` inside one committed transaction, shielded from cancellation."""

        def transaction(conn: sqlite3.Connection, *args: Any) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        with trio.CancelScope(shield=True):
            try:
                return await self._run(transaction, *args)
            except sqlite3.Error as exc:
                raise StoreError(f"database write failed: {exc}") from exc
        raise AssertionError("unreachable: a shielded scope never swallows the result")  # for mypy

    # --- approvals ----------------------------------------------------------------------------------------

    async def expire_stale_pending(self, now: float) -> int:
        """Close approvals left ``pending`` by a previous run as ``expired`` with source ``timeout``.

        Called at start-up: nobody waits for those approvals any more, so from the record's point of view
        they ran out of time without a decision. Returns how many were closed.
        """

        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE approvals SET state = 'expired', source = 'timeout', decided_at = ? "
                "WHERE state = 'pending'",
                (now,),
            )
            return cur.rowcount

        return await self._write(run)

    async def add_approval(self, a: dict[str, Any]) -> None:
        """Record an approval. Keys: id, created_at, tool, server, rule, arguments (the fake side, as sent
        by the client -- real values are never stored), session, expires_at; optional state (default
        ``pending``), source, decided_at."""
        state = a.get("state", "pending")
        if state not in APPROVAL_STATES:
            raise ValueError(f"unknown approval state {state!r}")
        row = (
            a["id"],
            float(a["created_at"]),
            a["tool"],
            a["server"],
            a["rule"],
            _dumps(a.get("arguments") or {}),
            a.get("session"),
            state,
            a.get("source", ""),
            a.get("decided_at"),
            float(a["expires_at"]),
        )

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO approvals (id, created_at, tool, server, rule, arguments, session, state, "
                "source, decided_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

        await self._write(run)

    async def decide_approval(self, id: str, state: str, source: str, decided_at: float) -> bool:
        """Close a pending approval. Returns False when it was not pending (unknown or already closed)."""
        if state not in APPROVAL_STATES or state == "pending":
            raise ValueError(f"cannot decide an approval as {state!r}")

        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE approvals SET state = ?, source = ?, decided_at = ? "
                "WHERE id = ? AND state = 'pending'",
                (state, source, decided_at, id),
            )
            return cur.rowcount == 1

        return await self._write(run)

    async def get_approval(self, id: str) -> dict[str, Any] | None:
        """One approval as a dict (``arguments`` decoded), or None."""

        def run(conn: sqlite3.Connection) -> dict[str, Any] | None:
            cur = conn.execute("SELECT * FROM approvals WHERE id = ?", (id,))
            row = cur.fetchone()
            if row is None:
                return None
            record = dict(zip([d[0] for d in cur.description], row, strict=True))
            record["arguments"] = _loads(record["arguments"])
            return record

        return await self._run(run)

    # --- grants -------------------------------------------------------------------------------------------

    async def add_grant(self, pattern: str, expires_at: float, created_at: float, created_by: str) -> int:
        """Record a grant; returns its id."""

        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO grants (pattern, created_at, expires_at, created_by) VALUES (?, ?, ?, ?)",
                (pattern, created_at, expires_at, created_by),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self._write(run)

    async def revoke_grants(self, pattern: str | None, now: float) -> int:
        """Revoke the live grants with exactly this pattern (``None``: all of them); returns how many."""

        def run(conn: sqlite3.Connection) -> int:
            sql = "UPDATE grants SET revoked_at = ? WHERE revoked_at IS NULL AND expires_at > ?"
            params: tuple[Any, ...] = (now, now)
            if pattern is not None:
                sql += " AND pattern = ?"
                params += (pattern,)
            return conn.execute(sql, params).rowcount

        return await self._write(run)

    async def active_grants(self, now: float) -> list[Grant]:
        """Grants neither revoked nor expired at ``now``, soonest to expire first."""

        def run(conn: sqlite3.Connection) -> list[Grant]:
            rows = conn.execute(
                "SELECT id, pattern, created_at, expires_at, created_by FROM grants "
                "WHERE revoked_at IS NULL AND expires_at > ? ORDER BY expires_at, id",
                (now,),
            ).fetchall()
            return [
                Grant(pattern=p, expires_at=e, created_at=c, id=i, created_by=by) for i, p, c, e, by in rows
            ]

        return await self._run(run)

    # --- audit --------------------------------------------------------------------------------------------

    async def record_audit(self, rec: dict[str, Any]) -> None:
        """Append an audit record and return once it is committed (group commit; see the module docs).

        Keys: ts (epoch seconds), session, tool (canonical), arguments (fake side, as the client sent them),
        decision, source, outcome, duration_ms, and optionally error. Raises :class:`StoreError` if the
        commit failed, :class:`ValueError` for an unknown decision or outcome.
        """
        slot = _AuditSlot(_audit_row(rec))
        self._audit_queue.append(slot)
        with trio.CancelScope(shield=True):
            # trio.Lock is FIFO: the first waiter to get it commits everything queued so far, and those
            # queued behind it find their rows written and leave without touching the database.
            async with self._audit_lock:
                if not slot.written and slot.error is None:
                    try:
                        await self._commit_audit_queue()
                    except BaseException as exc:
                        batch, self._audit_queue = self._audit_queue, []
                        for s in batch:
                            s.error = exc
                        raise
        if slot.error is not None:
            raise StoreError(f"could not record the audit entry: {slot.error}") from slot.error

    async def _commit_audit_queue(self) -> None:
        """Commit every queued audit row in one transaction, on the event loop thread.

        This one write is done inline rather than through a worker thread: with WAL and
        ``synchronous=NORMAL`` an INSERT + COMMIT is a ~12 µs append to the WAL file (no fsync),
        while a thread hop costs ~100 µs — on every tool call. What could block (the WAL
        checkpoint, which does fsync) is turned off on this connection and run in a worker
        thread every CHECKPOINT_EVERY records instead.
        """
        async with self._limiter:  # no worker thread is using the connection now
            conn = self._conn
            if conn is None:
                raise StoreError("the store is closed")
            batch, self._audit_queue = self._audit_queue, []
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    self._insert_audit(conn, [s.row for s in batch])
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._audit_queue = batch + self._audit_queue
                raise StoreError(f"database write failed: {exc}") from exc
            for s in batch:
                s.written = True
            self._since_checkpoint += len(batch)
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            try:
                await self._run(_checkpoint)
            except (sqlite3.Error, StoreError) as exc:  # the rows are committed; retry next time
                log.warning("WAL checkpoint failed: %s", exc)

    @staticmethod
    def _insert_audit(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        conn.executemany(
            f"INSERT INTO audit ({', '.join(_AUDIT_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(_AUDIT_COLUMNS))})",
            rows,
        )

    async def recent_audit(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` audit records, newest first (as /logs shows them); ``ts`` stays epoch seconds,
        ``arguments`` is decoded."""

        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                f"SELECT {', '.join(_AUDIT_COLUMNS)} FROM audit ORDER BY id DESC LIMIT ?", (max(n, 0),)
            ).fetchall()
            return [_audit_dict(row, iso=False) for row in rows]

        return await self._run(run)

    # --- events -------------------------------------------------------------------------------------------

    async def record_event(self, kind: str, detail: dict[str, Any], *, ts: float | None = None) -> None:
        """Record something worth keeping that is not a tool call, e.g. a Telegram message from a stranger.

        ``ts`` defaults to the wall clock now."""
        when = time.time() if ts is None else ts

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO events (ts, kind, detail) VALUES (?, ?, ?)", (when, kind, _dumps(detail))
            )

        await self._write(run)

    async def recent_events(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` events, newest first, as dicts with ts, kind and the decoded detail."""

        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT ts, kind, detail FROM events ORDER BY id DESC LIMIT ?", (max(n, 0),)
            ).fetchall()
            return [{"ts": ts, "kind": kind, "detail": _loads(d)} for ts, kind, d in rows]

        return await self._run(run)


def _audit_dict(row: Sequence[Any], *, iso: bool) -> dict[str, Any]:
    record = dict(zip(_AUDIT_COLUMNS, row, strict=True))
    record["arguments"] = _loads(record["arguments"])
    if iso:
        record["ts"] = _iso(record["ts"])
    return record


def read_audit(
    db_path: str,
    *,
    since: float | None,
    tool: str | None,
    limit: int | None = None,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Audit records for ``portero audit``, oldest first. Synchronous and read-only.

    ``since``: only records from the last that many seconds (relative to ``now``, default the wall clock).
    ``tool``: only canonical tool names matching this glob (see :func:`portero.core.policy.glob_match`).
    ``limit``: only the most recent that many of the matching records.
    Each record has ts (ISO 8601, UTC), session, tool, arguments (decoded), decision, source, outcome,
    duration_ms and error. Raises FileNotFoundError when there is no database at ``db_path``.
    """
    if not os.path.exists(db_path):
        raise FileNotFoundError(f"no database at {db_path}")
    uri = "file:" + os.path.abspath(db_path) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=10.0)
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version < 1:
            return []
        conn.create_function("portero_glob", 2, glob_match, deterministic=True)
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            if now is None:
                now = time.time()
            where.append("ts >= ?")
            params.append(now - since)
        if tool is not None:
            where.append("portero_glob(?, tool)")
            params.append(tool)
        sql = f"SELECT {', '.join(_AUDIT_COLUMNS)} FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(limit, 0))
        rows = conn.execute(sql, params).fetchall()
    finally:
        conn.close()
    return [_audit_dict(row, iso=True) for row in reversed(rows)]
