"""The SQLite store: approvals, grants, the audit log and odd events, in ``data_dir/gateway.db``.

One connection (and a second one only for WAL checkpoints), WAL mode, ``synchronous=NORMAL``, automatic
checkpoints off. Calls run in a worker thread through ``trio.to_thread.run_sync`` behind a
``CapacityLimiter(1)``, so the connection is never used by two threads at once -- except the audit writes
of every tool call, which hold the same limiter but run on the event loop: in WAL mode without fsync an
INSERT or UPDATE + COMMIT takes some tens of µs, less than a thread hop. Every write is committed before
the method returns: a decision or an audit record that was acknowledged survives a SIGKILL or a crash of
the gateway; only a power cut can lose the last commits.

The audit record of a tool call is written twice: :meth:`Store.record_audit` inserts it (outcome
``pending``) before the call runs, :meth:`Store.finish_audit` updates the same row with the outcome. A row
still ``pending`` when the store is opened belongs to a call the previous run never finished recording
(killed mid-call, or the outcome write failed): it is marked ``interrupted`` at open.

Audit writes never block the event loop for more than a few milliseconds. The inline commit uses a busy
timeout of :data:`INLINE_BUSY_MS`; when another process holds the database's write lock, the commit is
retried in a worker thread, waiting at most until the write's budget (:data:`AUDIT_BUDGET`, counted from
the call to the store) is spent, and then fails with :class:`StoreError`. Audit writes are committed in
groups: writes that arrive while a commit is in progress (inline or in the thread) queue, and the next
commit writes all of them in one transaction. Each caller still returns only once its own write is
committed. Writes are shielded from cancellation -- they are bounded, and the record of a call must not be
lost because its client went away.

The WAL checkpoint (the part that fsyncs) runs every :data:`CHECKPOINT_EVERY` audit writes in a worker
thread on a second connection of its own, outside the audit lock: audit commits go on meanwhile.

``data_dir`` (when the store creates it) is made owner-only (0700), ``gateway.db`` and its ``-wal`` and
``-shm`` files are made owner-only (0600) whatever the umask.

The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` is applied in order, each step in
its own transaction, so opening is idempotent and an interrupted upgrade leaves a consistent version.

:func:`read_audit` is the synchronous, read-only entry point for ``portero audit``.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs
import trio

from portero import metrics
from portero.core import pins as pins_core
from portero.core.pins import STATES as PIN_STATES
from portero.core.pins import Pin, canonical_json
from portero.core.policy import Grant, glob_match

T = TypeVar("T")
log = logging.getLogger("portero.store")

APPROVAL_STATES = ("pending", "approved", "rejected", "expired")
AUDIT_DECISIONS = ("allow", "deny", "approved", "rejected", "expired")
FINAL_OUTCOMES = ("ok", "error", "refused")
# pending: written before the call runs, its outcome not yet; interrupted: never got one (set at open).
AUDIT_OUTCOMES = (*FINAL_OUTCOMES, "pending", "interrupted")
INTERRUPTED_ERROR = "no outcome was recorded: the gateway stopped during the call, or could not write it"

AUDIT_BUDGET = 5.0  # seconds an audit write may wait for a locked database before it fails
INLINE_BUSY_MS = 2  # the busy timeout of the connection: how long an inline commit may wait on the loop
WORKER_BUSY_MS = 10_000  # the busy timeout of the other writes, which run in a worker thread

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
    # Every audit row with id < settled_below has its outcome: at open, only the rows from there on
    # are searched for ones left pending (an index on outcome would cost every call two more page writes).
    """
    CREATE TABLE audit_watermark (settled_below INTEGER NOT NULL);
    INSERT INTO audit_watermark (settled_below) VALUES (0);
    """,
    # OAuth logins of remote servers (portero/upstream/oauth.py): one JSON record per server (tokens,
    # client registration, token endpoint); version goes up on every write, so a gateway notices a
    # `portero login` done by another process with one indexed read.
    """
    CREATE TABLE oauth_tokens (
        server TEXT PRIMARY KEY,
        data TEXT NOT NULL,
        updated_at REAL NOT NULL,
        version INTEGER NOT NULL
    );
    """,
    # Pinned tool definitions (the trust issue): the definition a server's tool had when the admin
    # approved it, by hash. state: approved | quarantined (new or changed, waiting for the admin) |
    # blocked (the admin said no). `definition` is the JSON of the definition the hash is over;
    # `approved_definition` the last approved one, for the diff when it changes.
    """
    CREATE TABLE pins (
        server TEXT NOT NULL,
        tool TEXT NOT NULL,
        hash TEXT NOT NULL,
        definition TEXT NOT NULL,
        state TEXT NOT NULL,
        approved_hash TEXT,
        approved_definition TEXT,
        first_seen REAL NOT NULL,
        updated_at REAL NOT NULL,
        decided_by TEXT,
        PRIMARY KEY (server, tool)
    );
    """,
    # A token per client (the trust issue): which client made each call, asked for each approval,
    # and holds each grant (NULL: before clients existed, or any client for a grant).
    """
    ALTER TABLE audit ADD COLUMN client TEXT;
    ALTER TABLE approvals ADD COLUMN client TEXT;
    ALTER TABLE grants ADD COLUMN client TEXT;
    """,
    # Telegram, finished: rules the admin adds from the chat (/allow /deny /ask, Always allow/deny),
    # kept across restarts and reloads; an approval's deny reason and edited arguments.
    """
    CREATE TABLE chat_rules (
        pattern TEXT PRIMARY KEY,
        action TEXT NOT NULL,
        created_at REAL NOT NULL,
        created_by TEXT NOT NULL
    );
    ALTER TABLE approvals ADD COLUMN reason TEXT;
    ALTER TABLE approvals ADD COLUMN edited_arguments TEXT;
    """,
    # Small settings the gateway keeps for itself (the paired admin chat of Telegram pairing).
    """
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    """The database could not be opened, is from a newer Portero, or a write failed."""


def _make_private_dirs(path: str) -> None:
    """Create ``path`` and its missing parents, each owner-only (0700) whatever the umask.

    Folders that exist already are left as they are: they may be shared on purpose."""
    missing: list[str] = []
    p = path
    while not os.path.isdir(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    os.makedirs(path, mode=0o700, exist_ok=True)
    for d in missing:
        os.chmod(d, 0o700)


def _owner_only(path: str) -> None:
    """chmod 0600 if the file exists; a file we may not chmod (not ours) is logged, not fatal."""
    try:
        os.chmod(path, 0o600)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot make %s owner-only: %s", path, exc)


@attrs.frozen
class _Opened:
    conn: sqlite3.Connection
    checkpointer: sqlite3.Connection | None  # for WAL checkpoints (None for ":memory:")
    interrupted: int  # audit rows left pending by the previous run, now marked interrupted
    next_id: int  # the id the next audit row gets (at least)


def _mark_interrupted(conn: sqlite3.Connection) -> tuple[int, int]:
    """Mark the rows a previous run left ``pending`` as ``interrupted``; returns (how many, next id)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        (below,) = conn.execute("SELECT settled_below FROM audit_watermark").fetchone()
        interrupted = conn.execute(
            "UPDATE audit SET outcome = 'interrupted', error = ? WHERE id >= ? AND outcome = 'pending'",
            (INTERRUPTED_ERROR, below),
        ).rowcount
        (next_id,) = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM audit").fetchone()
        conn.execute("UPDATE audit_watermark SET settled_below = ?", (next_id,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return interrupted, next_id


def _connect(path: str) -> _Opened:
    on_disk = path != ":memory:"
    if on_disk:
        _make_private_dirs(os.path.dirname(os.path.abspath(path)))
        # Create the file 0600 before SQLite opens it: SQLite gives -wal and -shm the mode of the
        # database file when it creates them. chmod, because os.open's mode is subject to the umask.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        _owner_only(path)
    # isolation_level=None: no implicit transactions; every write below says BEGIN/COMMIT itself.
    # check_same_thread=False: worker threads vary, the CapacityLimiter(1) serializes them.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=WORKER_BUSY_MS / 1000)
    checkpointer: sqlite3.Connection | None = None
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
        interrupted, next_id = _mark_interrupted(conn)
        if on_disk:
            for suffix in ("-wal", "-shm"):  # created by SQLite with the file's mode; older ones too
                _owner_only(path + suffix)
            checkpointer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            checkpointer.execute("PRAGMA wal_autocheckpoint=0")
        # From here on the connection's own busy timeout is the inline one: a commit on the event loop
        # waits at most this long for another process's lock. Worker-thread calls raise it (Store._run).
        conn.execute(f"PRAGMA busy_timeout = {INLINE_BUSY_MS}")
    except BaseException:
        if checkpointer is not None:
            checkpointer.close()
        conn.close()
        raise
    return _Opened(conn, checkpointer, interrupted, next_id)


CHECKPOINT_EVERY = 1000  # audit writes between two WAL checkpoints


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
    """JSON text SQLite can store: a lone surrogate (valid JSON, not UTF-8) is kept escaped, and a
    value too deeply nested to encode is recorded as a note, so the call still has its one row."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except RecursionError:
        return json.dumps("<not recorded: nested too deeply to encode>")
    try:
        text.encode()
    except UnicodeEncodeError:
        text = json.dumps(value, separators=(",", ":"), default=str)
    return text


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
    "client",  # the [[client]] whose token made the call (migration 5; NULL before)
)
_AUDIT_INSERT = (
    f"INSERT INTO audit ({', '.join(_AUDIT_COLUMNS)}) VALUES ({', '.join('?' * len(_AUDIT_COLUMNS))})"
)
_AUDIT_UPDATE = "UPDATE audit SET outcome = ?, duration_ms = ?, error = ? WHERE id = ?"
_WATERMARK_UPDATE = "UPDATE audit_watermark SET settled_below = ?"


def _audit_row(rec: dict[str, Any]) -> tuple[Any, ...]:
    if rec["decision"] not in AUDIT_DECISIONS:
        raise ValueError(f"unknown audit decision {rec['decision']!r}")
    outcome = rec["outcome"]
    if outcome not in FINAL_OUTCOMES and outcome != "pending":
        raise ValueError(f"unknown audit outcome {outcome!r}")
    pending = outcome == "pending"
    return (
        float(rec["ts"]),
        rec.get("session"),
        rec["tool"],
        _dumps(rec.get("arguments") or {}),
        rec["decision"],
        rec["source"],
        outcome,
        0.0 if pending else float(rec.get("duration_ms") or 0.0),
        None if pending else rec.get("error"),
        rec.get("client"),
    )


@attrs.define(eq=False)
class _AuditWrite:
    """One queued audit statement (an INSERT or an UPDATE) and, once committed, its result."""

    sql: str
    params: tuple[Any, ...]
    deadline: float  # trio.current_time() after which it fails rather than wait longer for the lock
    pending: bool = False  # the INSERT of a call's record before it runs
    done: bool = False
    result: int = 0  # the new row's id (INSERT) or the number of rows changed (UPDATE)
    error: BaseException | None = None


class _LockTimeout(StoreError):
    """The database stayed locked (by another process, or a long write in a worker thread) for the budget."""


def _is_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: someone else holds the lock; anything else will not pass by waiting."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (and their extended codes)
    return "locked" in str(exc) or "busy" in str(exc)


def _apply_audit(conn: sqlite3.Connection, writes: Sequence[tuple[str, tuple[Any, ...]]]) -> list[int]:
    """Run the statements in one transaction and commit; all or nothing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        results = []
        for sql, params in writes:
            cur = conn.execute(sql, params)
            results.append((cur.lastrowid or 0) if sql is _AUDIT_INSERT else cur.rowcount)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite rolled back itself (an I/O error, say)
        raise
    return results


def _transaction(conn: sqlite3.Connection, fn: Callable[..., T], *args: Any) -> T:
    """``fn(conn, *args)`` in one transaction, committed, or rolled back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


class Store:
    """The gateway's database. Create with :meth:`open`; close with :meth:`aclose`."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: str,
        *,
        checkpointer: sqlite3.Connection | None = None,
        audit_budget: float = AUDIT_BUDGET,
        next_id: int = 1,
    ) -> None:
        self.path = path
        self.audit_budget = audit_budget
        self._conn: sqlite3.Connection | None = conn
        self._limiter = trio.CapacityLimiter(1)
        self._checkpointer = checkpointer
        self._checkpoint_limiter = trio.CapacityLimiter(1)
        self._audit_queue: list[_AuditWrite] = []
        self._audit_lock = trio.Lock()
        self._since_checkpoint = 0
        self._checkpointing = False
        # For the watermark (see MIGRATIONS): the pending rows written by this run and not finished yet,
        # the id the next row gets, and the audit writes since the watermark was last moved.
        self._unfinished: set[int] = set()
        self._next_id = next_id
        self._since_watermark = 0

    @classmethod
    async def open(cls, path: str, *, audit_budget: float = AUDIT_BUDGET) -> Store:
        """Open (creating the file and its parent folder if needed), bring the schema up to date, and mark
        the audit rows a previous run left ``pending`` as ``interrupted``.

        ``audit_budget``: how long (seconds) an audit write may wait for a locked database."""
        try:
            opened = await trio.to_thread.run_sync(_connect, path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        if opened.interrupted:
            log.warning(
                "%d audit record(s) left without an outcome by the previous run are marked interrupted",
                opened.interrupted,
            )
        return cls(
            opened.conn,
            path,
            checkpointer=opened.checkpointer,
            audit_budget=audit_budget,
            next_id=opened.next_id,
        )

    async def aclose(self) -> None:
        """Close the connections after any write in progress. Idempotent."""

        def close_checkpointer() -> None:
            conn, self._checkpointer = self._checkpointer, None
            if conn is not None:
                conn.close()

        def close() -> None:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(close_checkpointer, limiter=self._checkpoint_limiter)
            # The main connection last: the last one to close checkpoints and removes the WAL.
            await trio.to_thread.run_sync(close, limiter=self._limiter)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` in a worker thread, one at a time, with the worker busy timeout."""

        def call() -> T:
            conn = self._conn
            if conn is None:
                raise StoreError("the store is closed")
            conn.execute(f"PRAGMA busy_timeout = {WORKER_BUSY_MS}")
            try:
                return fn(conn, *args)
            finally:
                conn.execute(f"PRAGMA busy_timeout = {INLINE_BUSY_MS}")

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Like :meth:`_run` inside one committed transaction, shielded from cancellation."""

        with trio.CancelScope(shield=True):
            try:
                return await self._run(_transaction, fn, *args)
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
        ``pending``), source, decided_at, client (the [[client]] whose call it is)."""
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
            a.get("client"),
        )

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO approvals (id, created_at, tool, server, rule, arguments, session, state, "
                "source, decided_at, expires_at, client) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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

    async def add_grant(
        self, pattern: str, expires_at: float, created_at: float, created_by: str, client: str | None = None
    ) -> int:
        """Record a grant (for one client's calls, or with ``client=None`` every client's); returns its id."""

        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO grants (pattern, created_at, expires_at, created_by, client) "
                "VALUES (?, ?, ?, ?, ?)",
                (pattern, created_at, expires_at, created_by, client),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self._write(run)

    async def revoke_grants(self, pattern: str | None, now: float, client: str | None = None) -> int:
        """Revoke the live grants with exactly this pattern (``None``: all of them) -- only ``client``'s
        when given; returns how many."""

        def run(conn: sqlite3.Connection) -> int:
            sql = "UPDATE grants SET revoked_at = ? WHERE revoked_at IS NULL AND expires_at > ?"
            params: tuple[Any, ...] = (now, now)
            if pattern is not None:
                sql += " AND pattern = ?"
                params += (pattern,)
            if client is not None:
                sql += " AND client = ?"
                params += (client,)
            return conn.execute(sql, params).rowcount

        return await self._write(run)

    async def active_grants(self, now: float) -> list[Grant]:
        """Grants neither revoked nor expired at ``now``, soonest to expire first."""

        def run(conn: sqlite3.Connection) -> list[Grant]:
            return _live_grants(conn, now)

        return await self._run(run)

    # --- audit --------------------------------------------------------------------------------------------

    async def record_audit(self, rec: dict[str, Any]) -> int:
        """Insert an audit record; returns its row id once it is committed (group commit: see the module).

        Keys: ts (epoch seconds), session, tool (canonical), arguments (fake side, as the client sent them),
        decision, source, outcome, duration_ms, and optionally error. Outcome ``pending`` writes the record
        of a call about to run (duration_ms and error are then ignored); :meth:`finish_audit` completes it.
        Raises :class:`StoreError` if the write failed or the database stayed locked for the audit budget
        (nothing was written then), :class:`ValueError` for an unknown decision or outcome.
        """
        row = _audit_row(rec)
        return await self._audit_write(_AUDIT_INSERT, row, pending=rec["outcome"] == "pending")

    async def finish_audit(self, row_id: int, *, outcome: str, duration_ms: float, error: str | None) -> None:
        """Write the outcome of the call whose ``pending`` record :meth:`record_audit` returned ``row_id``.

        Raises :class:`StoreError` as :meth:`record_audit` does (the row keeps its state then)."""
        if outcome not in FINAL_OUTCOMES:
            raise ValueError(f"unknown audit outcome {outcome!r}")
        changed = await self._audit_write(_AUDIT_UPDATE, (outcome, float(duration_ms), error, row_id))
        if changed != 1:
            raise StoreError(f"no audit record with id {row_id}")

    async def _audit_write(self, sql: str, params: tuple[Any, ...], *, pending: bool = False) -> int:
        t0 = time.perf_counter()
        write = _AuditWrite(sql, params, trio.current_time() + self.audit_budget, pending)
        self._audit_queue.append(write)
        with trio.CancelScope(shield=True):
            # trio.Lock is FIFO and writes queue in arrival order: the first waiter to get the lock
            # commits everything queued so far, and those queued behind it find their writes done and
            # leave without touching the database.
            async with self._audit_lock:
                while not write.done and write.error is None:
                    if not await self._commit_audit_queue():
                        await trio.sleep(0.01)  # busy, but nobody's budget is spent yet: try again
            metrics.audit_write_seconds(time.perf_counter() - t0)
            # Outside the lock: commits of other calls go on while this one checkpoints.
            await self._maybe_checkpoint()
        if write.error is not None:
            raise StoreError(f"could not write the audit record: {write.error}") from write.error
        return write.result

    async def _commit_audit_queue(self) -> bool:
        """Commit every queued audit write in one transaction; False if none was settled (try again).

        Inline on the event loop first: with WAL and ``synchronous=NORMAL`` a commit is a tens-of-µs
        append to the WAL file (no fsync), while a thread hop costs ~100 µs -- on every tool call. The
        connection's busy timeout is INLINE_BUSY_MS, so the loop waits that long at most for another
        process's lock; then the commit is retried in a worker thread until the earliest deadline of
        the queued writes. Writes whose deadline passed then fail; the others stay queued.
        """
        batch, self._audit_queue = self._audit_queue, []
        deadline = min(w.deadline for w in batch)
        writes = [(w.sql, w.params) for w in batch]
        move_watermark = self._since_watermark >= CHECKPOINT_EVERY
        if move_watermark:
            # Rows of this batch get ids >= _next_id; every row below the value has its outcome.
            writes.append((_WATERMARK_UPDATE, (min(self._unfinished, default=self._next_id),)))
        try:
            results = await self._commit_audit_batch(writes, deadline)
        except Exception as exc:
            failed = batch
            if isinstance(exc, _LockTimeout):
                now = trio.current_time()
                failed = [w for w in batch if w.deadline <= now + 0.05]
                self._audit_queue = [w for w in batch if w not in failed] + self._audit_queue
            for w in failed:
                w.error = exc
            return bool(failed)
        for w, result in zip(batch, results[: len(batch)], strict=True):
            w.result, w.done = result, True
            if w.sql is _AUDIT_INSERT:
                self._next_id = max(self._next_id, result + 1)
                if w.pending:
                    self._unfinished.add(result)
            elif result:  # the UPDATE of a call's outcome found its row
                self._unfinished.discard(w.params[-1])
        self._since_checkpoint += len(batch)
        self._since_watermark = 0 if move_watermark else self._since_watermark + len(batch)
        return True

    async def _commit_audit_batch(
        self, writes: list[tuple[str, tuple[Any, ...]]], deadline: float
    ) -> list[int]:
        # Hold the connection: no worker thread uses it until we are done (waiting counts against the budget).
        acquired = False
        try:
            self._limiter.acquire_nowait()
            acquired = True
        except trio.WouldBlock:
            with trio.move_on_at(deadline):
                await self._limiter.acquire()
                acquired = True
        if not acquired:
            raise _LockTimeout("the database was busy in a worker thread for the whole audit budget")
        try:
            conn = self._conn
            if conn is None:
                raise StoreError("the store is closed")
            try:
                return _apply_audit(conn, writes)
            except sqlite3.Error as exc:
                if not _is_busy(exc):
                    raise StoreError(f"database write failed: {exc}") from exc
            # Another process holds the write lock: wait for it in a worker thread, within the budget.
            budget_ms = math.ceil((deadline - trio.current_time()) * 1000)
            if budget_ms <= 0:
                raise _LockTimeout("the database stayed locked for the whole audit budget")

            def in_thread() -> list[int]:
                conn.execute(f"PRAGMA busy_timeout = {budget_ms}")
                try:
                    return _apply_audit(conn, writes)
                finally:
                    conn.execute(f"PRAGMA busy_timeout = {INLINE_BUSY_MS}")

            try:
                return await trio.to_thread.run_sync(in_thread)
            except sqlite3.Error as exc:
                if _is_busy(exc):
                    raise _LockTimeout(
                        f"the database stayed locked for the whole audit budget ({exc})"
                    ) from exc
                raise StoreError(f"database write failed: {exc}") from exc
        finally:
            self._limiter.release()

    async def _maybe_checkpoint(self) -> None:
        """Every CHECKPOINT_EVERY audit writes, a PASSIVE checkpoint on the checkpoint connection."""
        if self._since_checkpoint < CHECKPOINT_EVERY or self._checkpointing:
            return
        self._since_checkpoint = 0
        self._checkpointing = True

        def checkpoint() -> None:
            conn = self._checkpointer
            if conn is not None:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

        try:
            await trio.to_thread.run_sync(checkpoint, limiter=self._checkpoint_limiter)
        except sqlite3.Error as exc:  # the rows are committed; retry next time
            log.warning("WAL checkpoint failed: %s", exc)
        finally:
            self._checkpointing = False

    async def recent_audit(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` audit records, newest first (as /logs shows them); ``ts`` stays epoch seconds,
        ``arguments`` is decoded."""

        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                f"SELECT {', '.join(_AUDIT_COLUMNS)} FROM audit ORDER BY id DESC LIMIT ?", (max(n, 0),)
            ).fetchall()
            return [_audit_dict(row, iso=False) for row in rows]

        return await self._run(run)

    # A time range with at most this many rows is read through the audit_ts index (then sorted by id);
    # a wider one by walking the ids down from `before`, which stops as soon as the page is full.
    _AUDIT_TS_INDEX_ROWS = 2000

    async def audit_page(
        self,
        *,
        tool: str | None = None,
        client: str | None = None,
        decision: str | None = None,
        outcome: str | None = None,
        since: float | None = None,
        until: float | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Audit rows newest first matching every filter given (the console's audit page).

        ``tool``: a glob over canonical names (:func:`portero.core.policy.glob_match`, as :func:`read_audit`);
        ``client`` ("default" also matches the rows recorded before clients existed, as :func:`read_audit`);
        ``decision``, ``outcome``: equal; ``since``/``until``: epoch seconds, ``since <= ts < until``;
        ``before``: only ids below it (keyset paging). Returns ``(rows, next_before)``: ``next_before`` is
        the ``before`` of the next (older) page, None when no older row matches. Each row is like
        :meth:`recent_audit`'s plus ``id``. Never OFFSET nor COUNT: a page reads at most its rows plus
        the rows it skips; a filter no index serves walks the table once at worst (bench/RESULTS.md).
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        where: list[str] = []
        params: list[Any] = []
        if before is not None:
            where.append("id < ?")
            params.append(before)
        if tool is not None:
            # SQLite's own GLOB (case-sensitive, `*` = any run) with its two other wildcards escaped is
            # glob_match exactly, and 6x faster than calling glob_match per row (bench/RESULTS.md).
            where.append("tool GLOB ?")
            params.append(tool.replace("[", "[[]").replace("?", "[?]"))
        if client is not None:
            where.append("(client = ? OR client IS NULL)" if client == "default" else "client = ?")
            params.append(client)
        if decision is not None:
            where.append("decision = ?")
            params.append(decision)
        if outcome is not None:
            where.append("outcome = ?")
            params.append(outcome)
        ts_where: list[str] = []
        ts_params: list[Any] = []
        if since is not None:
            ts_where.append("ts >= ?")
            ts_params.append(since)
        if until is not None:
            ts_where.append("ts < ?")
            ts_params.append(until)
        columns = ", ".join(("id", *_AUDIT_COLUMNS))

        def run(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], int | None]:
            source = "audit"
            conditions, values = list(where), list(params)
            if ts_where:
                # How many rows the range holds (counted in the index, up to the threshold) decides the
                # path: through the index for a narrow range, down the ids for a wide one. Left to itself,
                # SQLite takes the index for any two-sided range, even one holding the whole table.
                in_range, range_params = list(ts_where), list(ts_params)
                if before is not None:
                    in_range.append("id < ?")  # the index holds the ids too: no row is read
                    range_params.append(before)
                probe = "SELECT count(*) FROM (SELECT 1 FROM audit INDEXED BY audit_ts WHERE {} LIMIT ?)"
                probe = probe.format(" AND ".join(in_range))
                (n,) = conn.execute(probe, [*range_params, self._AUDIT_TS_INDEX_ROWS]).fetchone()
                if n < self._AUDIT_TS_INDEX_ROWS:
                    source = "audit INDEXED BY audit_ts"
                    conditions += ts_where
                else:
                    conditions += [f"+{c}" for c in ts_where]  # unary +: not through the index
                values += ts_params
            sql = f"SELECT {columns} FROM {source}"
            if conditions:
                sql += " WHERE " + " AND ".join(conditions)
            sql += " ORDER BY id DESC LIMIT ?"
            rows = conn.execute(sql, [*values, limit + 1]).fetchall()
            page = [{"id": row[0], **_audit_dict(row[1:], iso=False)} for row in rows[:limit]]
            return page, (page[-1]["id"] if len(rows) > limit else None)

        return await self._run(run)

    async def audit_entry(self, id: int) -> dict[str, Any] | None:
        """One audit row by id (the shape of :meth:`audit_page`'s rows), or None."""

        def run(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute(
                f"SELECT {', '.join(('id', *_AUDIT_COLUMNS))} FROM audit WHERE id = ?", (id,)
            ).fetchone()
            return None if row is None else {"id": row[0], **_audit_dict(row[1:], iso=False)}

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

    async def recent_events(self, n: int, kind: str | None = None) -> list[dict[str, Any]]:
        """The last ``n`` events (of ``kind`` only, when given), newest first, as dicts with ts, kind and
        the decoded detail. (A kind's events are found walking the ids down: the table is small.)"""

        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            args: tuple[Any, ...] = (max(n, 0),)
            sql = "SELECT ts, kind, detail FROM events ORDER BY id DESC LIMIT ?"
            if kind is not None:
                sql = "SELECT ts, kind, detail FROM events WHERE kind = ? ORDER BY id DESC LIMIT ?"
                args = (kind, *args)
            rows = conn.execute(sql, args).fetchall()
            return [{"ts": ts, "kind": kind, "detail": _loads(d)} for ts, kind, d in rows]

        return await self._run(run)

    # === OAuth tokens of remote servers ===================================================================
    # One record per ``[[mcp]]`` server with ``auth = "oauth"``: ``data`` is the JSON text
    # portero.upstream.oauth writes (tokens, client registration, the authorization server's token
    # endpoint); the store never parses it, logs it or shows it. The async methods serve the gateway;
    # the ``*_in_file`` static methods serve ``portero login``/``logout``, another process, with a short
    # connection of their own (creating and migrating the database if needed, and never touching the
    # audit rows a running gateway may be writing). A stamp ``(version, updated_at)`` changes on every
    # write, so a reader can tell a new login from the record it already has.

    async def oauth_tokens(self, server: str) -> tuple[str, tuple[int, float]] | None:
        """``(data, stamp)`` of ``server``'s record, or None when it has none."""

        def run(conn: sqlite3.Connection) -> tuple[str, tuple[int, float]] | None:
            return Store._oauth_read(conn, server)

        return await self._run(run)

    async def oauth_tokens_stamp(self, server: str) -> tuple[int, float] | None:
        """The stamp of ``server``'s record (cheap: no data read), or None when it has none."""

        def run(conn: sqlite3.Connection) -> tuple[int, float] | None:
            row = conn.execute(
                "SELECT version, updated_at FROM oauth_tokens WHERE server = ?", (server,)
            ).fetchone()
            return None if row is None else (int(row[0]), float(row[1]))

        return await self._run(run)

    async def save_oauth_tokens(self, server: str, data: str) -> tuple[int, float]:
        """Write ``server``'s record (replacing any); returns its new stamp."""
        return await self._write(Store._oauth_write, server, data, time.time())

    async def delete_oauth_tokens(self, server: str) -> bool:
        """Delete ``server``'s record; False when it had none."""
        return await self._write(Store._oauth_delete, server)

    @staticmethod
    def oauth_tokens_in_file(db_path: str, server: str) -> tuple[str, tuple[int, float]] | None:
        """:meth:`oauth_tokens`, synchronously, from the database file at ``db_path``."""
        if not os.path.exists(db_path):
            return None
        return Store._in_file(db_path, Store._oauth_read, server)

    @staticmethod
    def save_oauth_tokens_in_file(db_path: str, server: str, data: str) -> tuple[int, float]:
        """:meth:`save_oauth_tokens`, synchronously, to the database file at ``db_path``."""
        return Store._in_file(db_path, Store._oauth_write, server, data, time.time())

    @staticmethod
    def delete_oauth_tokens_in_file(db_path: str, server: str) -> bool:
        """:meth:`delete_oauth_tokens`, synchronously, in the database file at ``db_path``."""
        if not os.path.exists(db_path):
            return False
        return Store._in_file(db_path, Store._oauth_delete, server)

    @staticmethod
    def _oauth_read(conn: sqlite3.Connection, server: str) -> tuple[str, tuple[int, float]] | None:
        row = conn.execute(
            "SELECT data, version, updated_at FROM oauth_tokens WHERE server = ?", (server,)
        ).fetchone()
        return None if row is None else (str(row[0]), (int(row[1]), float(row[2])))

    @staticmethod
    def _oauth_write(conn: sqlite3.Connection, server: str, data: str, now: float) -> tuple[int, float]:
        # Above every version in the table (not just this row's): with the wall-clock time beside it,
        # a logout then a login does not give a reader the stamp it already saw.
        (version,) = conn.execute("SELECT coalesce(max(version), 0) + 1 FROM oauth_tokens").fetchone()
        conn.execute(
            "INSERT INTO oauth_tokens (server, data, updated_at, version) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (server) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at, "
            "version = excluded.version",
            (server, data, now, version),
        )
        return int(version), now

    @staticmethod
    def _oauth_delete(conn: sqlite3.Connection, server: str) -> bool:
        return conn.execute("DELETE FROM oauth_tokens WHERE server = ?", (server,)).rowcount == 1

    @staticmethod
    def _in_file(db_path: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` in one transaction on a short connection of this (another) process: the
        file made owner-only, the schema brought up to date, WAL mode as the gateway's."""
        _make_private_dirs(os.path.dirname(os.path.abspath(db_path)))
        os.close(os.open(db_path, os.O_RDWR | os.O_CREAT, 0o600))
        _owner_only(db_path)
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=WORKER_BUSY_MS / 1000)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            _migrate(conn)
            for suffix in ("-wal", "-shm"):
                _owner_only(db_path + suffix)
            return _transaction(conn, fn, *args)
        finally:
            conn.close()

    # === end of OAuth tokens ==============================================================================

    # === Pinned tool definitions ==========================================================================
    # One row per (server, tool) of the ``pins`` table (migration 4), as :class:`portero.core.pins.Pin`.
    # The gateway keeps them in memory (portero.gateway.pins) and writes each change here; ``portero pins``
    # (another process) reads them with :func:`read_pins` and decides with :meth:`decide_pin_in_file`. A
    # decision always moves ``max(updated_at)`` forward, so :meth:`pins_stamp` (one cheap aggregate read)
    # tells the gateway that someone else decided.

    async def all_pins(self) -> list[Pin]:
        """Every pin, by server and tool."""
        return await self._run(_select_pins)

    async def pins_stamp(self) -> tuple[int, float]:
        """``(number of pins, latest updated_at)``: changes whenever a pin is written."""
        return await self._run(_pins_stamp)

    async def save_pins(self, changed: Sequence[Pin]) -> None:
        """Insert or replace these pins, in one transaction."""
        if changed:
            await self._write(_upsert_pins, list(changed))

    async def decide_pin(
        self, server: str, tool: str, state: str, *, by: str, expect_hash: str | None = None
    ) -> tuple[str, Pin | None]:
        """Approve (``state = "approved"``) or block a pin; see :func:`_decide_pin` for the result."""
        return await self._write(_decide_pin, server, tool, state, by, expect_hash, time.time())

    @staticmethod
    def decide_pin_in_file(
        db_path: str, server: str, tool: str, state: str, *, by: str, expect_hash: str | None = None
    ) -> tuple[str, Pin | None]:
        """:meth:`decide_pin`, synchronously, in the database file at ``db_path`` (``portero pins``).
        Raises FileNotFoundError when there is no database there."""
        if not os.path.exists(db_path):
            raise FileNotFoundError(f"no database at {db_path}")
        return Store._in_file(db_path, _decide_pin, server, tool, state, by, expect_hash, time.time())

    # === end of pinned tool definitions ===================================================================

    # === Rules from the chat ==============================================================================
    # One row per pattern of the ``chat_rules`` table (migration 6): what the admin added with /allow,
    # /deny, /ask or an Always allow / Always deny button. The gateway loads them at start and keeps them in
    # memory (Router.chat_rules); ``portero tools`` reads them with :func:`read_chat_rules`.

    async def chat_rules(self) -> dict[str, str]:
        """Every rule from the chat, pattern -> action, oldest first."""
        return await self._run(_select_chat_rules)

    async def set_chat_rule(self, pattern: str, action: str, by: str, now: float) -> None:
        """Add the rule for ``pattern``, or replace its action (and who set it, and when)."""

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO chat_rules (pattern, action, created_at, created_by) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (pattern) DO UPDATE SET action = excluded.action, "
                "created_at = excluded.created_at, created_by = excluded.created_by",
                (pattern, action, now, by),
            )

        await self._write(run)

    async def delete_chat_rule(self, pattern: str) -> bool:
        """Remove the rule for exactly ``pattern``; whether there was one."""

        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM chat_rules WHERE pattern = ?", (pattern,)).rowcount > 0

        return await self._write(run)

    # === end of rules from the chat =======================================================================

    # === Deny reasons and edited arguments ================================================================
    # The admin's answers to an approval message (migration 6 columns): the reason given after Deny, and the
    # arguments a call was approved with instead of the client's. Both on the fake side, like ``arguments``.

    async def set_approval_reason(self, id: str, reason: str) -> bool:
        """Record the reason the admin gave for denying approval ``id``; False when there is no such one."""

        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute("UPDATE approvals SET reason = ? WHERE id = ?", (reason, id)).rowcount == 1

        return await self._write(run)

    async def set_approval_edited_arguments(self, id: str, arguments: dict[str, Any]) -> bool:
        """Record the arguments approval ``id`` was approved with (anonymized to the fake side by the
        caller); False when there is no such approval."""
        text = _dumps(arguments)

        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("UPDATE approvals SET edited_arguments = ? WHERE id = ?", (text, id))
            return cur.rowcount == 1

        return await self._write(run)

    # === end of deny reasons and edited arguments =========================================================

    # === Settings: the paired admin chat of Telegram pairing ==============================================
    # Small values the gateway keeps for itself in the ``settings`` table (migration 7), by key; the bot
    # keeps the chat paired with ``/pair`` under ``telegram.admin_chat_id``.

    async def get_setting(self, key: str) -> str | None:
        """The value stored under ``key``, or None."""

        def run(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])

        return await self._run(run)

    async def set_setting(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` (replacing what was there), committed before returning."""
        await self._write(_put_setting, key, value, time.time())

    @staticmethod
    def set_setting_in_file(db_path: str, key: str, value: str) -> None:
        """:meth:`set_setting`, synchronously, in the database file at ``db_path`` (created if needed), from
        another process (``portero console passwd``); a running gateway reads it on its next look."""
        Store._in_file(db_path, _put_setting, key, value, time.time())

    async def delete_setting(self, key: str) -> bool:
        """Remove ``key``; False when it was not there."""

        def run(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM settings WHERE key = ?", (key,)).rowcount > 0

        return await self._write(run)

    # === end of settings ==================================================================================


def _put_setting(conn: sqlite3.Connection, key: str, value: str, now: float) -> None:
    conn.execute(
        "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (key, value, now),
    )


def _audit_dict(row: Sequence[Any], *, iso: bool) -> dict[str, Any]:
    record = dict(zip(_AUDIT_COLUMNS, row, strict=True))
    record["arguments"] = _loads(record["arguments"])
    if record["outcome"] in ("pending", "interrupted"):
        record["duration_ms"] = None  # not known (yet, or ever)
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
    client: str | None = None,
) -> list[dict[str, Any]]:
    """Audit records for ``portero audit``, oldest first. Synchronous and read-only.

    ``since``: only records from the last that many seconds (relative to ``now``, default the wall clock).
    ``tool``: only canonical tool names matching this glob (see :func:`portero.core.policy.glob_match`).
    ``limit``: only the most recent that many of the matching records.
    ``client``: only the calls of that ``[[client]]`` ("default": server.bearer_token's, and the calls
    recorded before clients existed).
    Each record has ts (ISO 8601, UTC), session, tool, arguments (decoded), decision, source, outcome,
    duration_ms, error and client. Raises FileNotFoundError when there is no database at ``db_path``.
    """
    if not os.path.exists(db_path):
        raise FileNotFoundError(f"no database at {db_path}")
    conn = _connect_read_only(db_path)
    if conn is None:
        return []
    try:
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
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        columns = [c if c != "client" or version >= 5 else "NULL AS client" for c in _AUDIT_COLUMNS]
        if client is not None:
            where.append("COALESCE(client, 'default') = ?" if version >= 5 else "'default' = ?")
            params.append(client)
        sql = f"SELECT {', '.join(columns)} FROM audit"
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


def read_grants(db_path: str, *, now: float | None = None) -> list[Grant]:
    """The live grants (neither revoked nor expired at ``now``) for ``portero tools``: synchronous and
    read-only, like :func:`read_audit`. No database at ``db_path`` means no grants."""
    conn = _connect_read_only(db_path) if os.path.exists(db_path) else None
    if conn is None:
        return []
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        return _live_grants(conn, time.time() if now is None else now, with_client=version >= 5)
    finally:
        conn.close()


def read_chat_rules(db_path: str) -> dict[str, str]:
    """The rules from the chat (pattern -> action) for ``portero tools``: synchronous and read-only, like
    :func:`read_grants`. No database at ``db_path``, or one from before migration 6, means none."""
    conn = _connect_read_only(db_path) if os.path.exists(db_path) else None
    if conn is None:
        return {}
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        return _select_chat_rules(conn) if version >= 6 else {}
    finally:
        conn.close()


def _select_chat_rules(conn: sqlite3.Connection) -> dict[str, str]:
    rows = conn.execute("SELECT pattern, action FROM chat_rules ORDER BY created_at, pattern").fetchall()
    return {pattern: action for pattern, action in rows}


def read_pins(db_path: str) -> list[Pin]:
    """Every pin, by server and tool, for ``portero pins`` and ``portero check --lock``: synchronous and
    read-only, like :func:`read_audit`. No database at ``db_path`` means no pins."""
    conn = _connect_read_only(db_path) if os.path.exists(db_path) else None
    if conn is None:
        return []
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        return _select_pins(conn) if version >= 4 else []
    finally:
        conn.close()


_PIN_COLUMNS = (
    "server, tool, hash, definition, state, approved_hash, approved_definition, first_seen, updated_at, "
    "decided_by"
)


def _pin_from_row(row: Sequence[Any]) -> Pin:
    server, tool, digest, definition, state, approved_hash, approved_definition, first, updated, by = row
    loaded = _loads(definition)
    approved = _loads(approved_definition)
    return Pin(
        server=server,
        tool=tool,
        hash=digest,
        definition=loaded if isinstance(loaded, dict) else {},
        state=state,
        approved_hash=approved_hash,
        approved_definition=approved if isinstance(approved, dict) else None,
        first_seen=float(first),
        updated_at=float(updated),
        decided_by=by,
    )


def _select_pins(conn: sqlite3.Connection, server: str | None = None, tool: str | None = None) -> list[Pin]:
    sql = f"SELECT {_PIN_COLUMNS} FROM pins"
    params: tuple[str, ...] = ()
    if server is not None and tool is not None:
        sql += " WHERE server = ? AND tool = ?"
        params = (server, tool)
    rows = conn.execute(sql + " ORDER BY server, tool", params).fetchall()
    return [_pin_from_row(row) for row in rows]


def _pins_stamp(conn: sqlite3.Connection) -> tuple[int, float]:
    count, latest = conn.execute("SELECT count(*), coalesce(max(updated_at), 0) FROM pins").fetchone()
    return int(count), float(latest)


def _upsert_pins(conn: sqlite3.Connection, changed: list[Pin]) -> None:
    for pin in changed:
        if pin.state not in PIN_STATES:
            raise ValueError(f"unknown pin state {pin.state!r}")
    conn.executemany(
        f"INSERT OR REPLACE INTO pins ({_PIN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                p.server,
                p.tool,
                p.hash,
                canonical_json(p.definition),
                p.state,
                p.approved_hash,
                None if p.approved_definition is None else canonical_json(p.approved_definition),
                p.first_seen,
                p.updated_at,
                p.decided_by,
            )
            for p in changed
        ],
    )


def _decide_pin(
    conn: sqlite3.Connection,
    server: str,
    tool: str,
    state: str,
    by: str,
    expect_hash: str | None,
    now: float,
) -> tuple[str, Pin | None]:
    """Approve or block ``server``'s ``tool`` (in the caller's transaction). Returns ``("ok", new pin)``,
    ``("already", pin)`` when it is in that state already, ``("changed", pin)`` when ``expect_hash`` (a
    prefix) is not the pin's hash any more (the definition changed since the question was asked; nothing
    written), or ``("unknown", None)``. ``updated_at`` is moved past every other pin's, so the change is seen
    by :meth:`Store.pins_stamp` even when the clocks of two processes disagree."""
    if state not in ("approved", "blocked"):
        raise ValueError(f"a pin is decided approved or blocked, not {state!r}")
    found = _select_pins(conn, server, tool)
    if not found:
        return "unknown", None
    pin = found[0]
    if expect_hash is not None and not pin.hash.startswith(expect_hash):
        return "changed", pin
    if pin.state == state:
        return "already", pin
    _count, latest = _pins_stamp(conn)
    when = max(now, latest + 0.001)
    new = (
        pins_core.approve(pin, by=by, now=when)
        if state == "approved"
        else pins_core.block(pin, by=by, now=when)
    )
    _upsert_pins(conn, [new])
    return "ok", new


def _connect_read_only(db_path: str) -> sqlite3.Connection | None:
    """A read-only connection to an existing database, or None when it has no schema yet."""
    conn = sqlite3.connect("file:" + os.path.abspath(db_path) + "?mode=ro", uri=True, timeout=10.0)
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version < 1:
        conn.close()
        return None
    return conn


def _live_grants(conn: sqlite3.Connection, now: float, *, with_client: bool = True) -> list[Grant]:
    """Grants neither revoked nor expired at ``now``, soonest to expire first. (``with_client=False``
    reads a database from before migration 5, which has no client column.)"""
    rows = conn.execute(
        f"SELECT id, pattern, created_at, expires_at, created_by, {'client' if with_client else 'NULL'} "
        "FROM grants WHERE revoked_at IS NULL AND expires_at > ? ORDER BY expires_at, id",
        (now,),
    ).fetchall()
    return [
        Grant(pattern=p, expires_at=e, created_at=c, id=i, created_by=by, client=client)
        for i, p, c, e, by, client in rows
    ]
