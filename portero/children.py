"""Child MCP servers: spawn, speak JSON-RPC over stdio, supervise, restart, stop.

:class:`Connection` is one live child process: one reader task, one table of pending requests
(our own integer ids, so two clients' ``id: 1`` never collide), a lock around stdin writes.
Every pending slot is popped in ``finally``; when the process goes away every waiter is woken
at once with :class:`ChildGone`.

:class:`Child` supervises one configured server: start, ``initialize``, list its catalog, wait
for the process to end, then restart with capped exponential back-off (reset after a healthy
period). A child that cannot start never takes the others or the gateway down.

Shutdown of a process is bounded at each step: close stdin, wait; SIGTERM the process group,
wait; SIGKILL the group, wait. Children start in their own session (process group), so
grandchildren (``npx`` → ``node``) go too.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

from . import jsonrpc
from .jsonrpc import RpcError

log = logging.getLogger("portero.children")

PROTOCOL_VERSION = "2025-06-18"
INIT_TIMEOUT = 120.0  # npx may download the package on first start
LIST_TIMEOUT = 30.0
TERM_GRACE = 2.0
KILL_GRACE = 2.0
STDIN_GRACE = 1.0
BACKOFF_START = 0.5
BACKOFF_CAP = 30.0
HEALTHY_RESET = 60.0
PAGE_LIMIT = 50  # pages followed for a paginated list


class ChildGone(RpcError):
    """The child exited (or was restarted) while a request was in flight."""


@attrs.define(eq=False)
class _Slot:
    event: trio.Event = attrs.Factory(trio.Event)
    response: dict[str, Any] | None = None
    error: RpcError | None = None


# A handler for a child's own requests and notifications: (connection, message) -> response or None.
MessageHandler = Callable[["Connection", dict[str, Any]], Awaitable[dict[str, Any] | None]]


class Connection:
    """One running child process speaking newline-delimited JSON-RPC."""

    def __init__(
        self, name: str, proc: trio.Process, max_message_bytes: int, handler: MessageHandler
    ) -> None:
        self.name = name
        self.proc = proc
        self._buffer = jsonrpc.LineBuffer(max_message_bytes)
        self._handler = handler
        self._pending: dict[int, _Slot] = {}
        self._next_id = 0
        self._send_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        # Notifications being routed right now (each a task); a response waits for the ones read
        # before it, so the child's own ordering (progress/log first, then the answer) is kept.
        self._notifying: set[trio.Event] = set()
        self.closed = False
        self.close_reason = ""
        self.dead = trio.Event()

    # -- sending -------------------------------------------------------------------------
    async def send(self, msg: dict[str, Any]) -> None:
        data = jsonrpc.encode(msg)
        if self.closed:
            raise ChildGone(jsonrpc.SERVER_UNAVAILABLE, f"server {self.name} is not running")
        try:
            async with self._send_lock:
                assert self.proc.stdin is not None
                await self.proc.stdin.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._fail(f"server {self.name} closed its input")
            raise ChildGone(jsonrpc.SERVER_UNAVAILABLE, f"server {self.name} is not running") from None

    async def notify(self, method: str, params: Any = None) -> None:
        await self.send(jsonrpc.notification(method, params))

    async def request(self, method: str, params: Any = None, *, timeout: float = math.inf) -> dict[str, Any]:
        """Send a request and wait for its response message (``result`` or ``error`` inside).

        Raises :class:`ChildGone` if the child dies first, and ``RpcError(REQUEST_TIMEOUT)`` after
        ``timeout`` (the child is told with ``notifications/cancelled``). If the caller is
        cancelled, the child is told too.
        """
        if self.closed:
            raise ChildGone(jsonrpc.SERVER_UNAVAILABLE, f"server {self.name} is not running")
        self._next_id += 1
        rid = self._next_id
        slot = _Slot()
        self._pending[rid] = slot
        finished = False
        try:
            await self.send(jsonrpc.request(rid, method, params))
            with trio.move_on_after(timeout):
                await slot.event.wait()
            if slot.error is not None:
                raise slot.error
            if slot.response is None:
                raise RpcError(
                    jsonrpc.REQUEST_TIMEOUT,
                    f"{self.name}: {method} timed out after {_fmt_seconds(timeout)}",
                )
            finished = True
            return slot.response
        finally:
            self._pending.pop(rid, None)
            if not finished and not self.closed and slot.response is None and slot.error is None:
                # Timed out or cancelled by our caller: tell the child, without blocking long.
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(1.0):
                        try:
                            await self.notify(
                                "notifications/cancelled",
                                {"requestId": rid, "reason": "cancelled by the gateway"},
                            )
                        except RpcError:
                            pass

    def in_flight(self) -> int:
        return len(self._pending)

    # -- receiving -----------------------------------------------------------------------
    async def read_loop(self) -> None:
        """Read stdout until EOF or a protocol failure; then fail every waiter."""
        assert self.proc.stdout is not None
        reason = f"server {self.name} exited"
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                while True:
                    try:
                        data = await self.proc.stdout.receive_some(65536)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        break
                    if not data:
                        break
                    try:
                        lines = self._buffer.feed(data)
                    except jsonrpc.MessageTooLarge as exc:
                        reason = f"server {self.name} sent a {exc}; restarting it"
                        log.error("%s", reason)
                        break
                    for line in lines:
                        self._dispatch(line)
                nursery.cancel_scope.cancel()
        finally:
            self._fail(reason)

    def _dispatch(self, line: bytes) -> None:
        try:
            msg = jsonrpc.decode(line)
        except jsonrpc.ParseError as exc:
            log.warning("%s: ignoring a line that is not JSON-RPC: %s", self.name, exc)
            return
        kind = jsonrpc.kind(msg)
        if kind == "response":
            rid = msg.get("id")
            slot = self._pending.get(rid) if isinstance(rid, int) else None
            if slot is None:
                log.debug("%s: response to unknown or finished request %r", self.name, rid)
                return
            if self._notifying:
                assert self._nursery is not None
                self._nursery.start_soon(self._deliver_after, list(self._notifying), slot, msg)
            else:
                slot.response = msg
                slot.event.set()
        elif kind in ("request", "notification"):
            assert self._nursery is not None
            done = None
            if kind == "notification":
                done = trio.Event()
                self._notifying.add(done)
            self._nursery.start_soon(self._handle_incoming, msg, kind, done)
        else:
            if msg.get("error") is not None and msg.get("id") is None:
                log.warning("%s reported an error: %s", self.name, str(msg.get("error"))[:300])
            else:
                log.warning("%s: ignoring an invalid message", self.name)

    async def _deliver_after(self, earlier: list[trio.Event], slot: _Slot, msg: dict[str, Any]) -> None:
        for ev in earlier:
            await ev.wait()
        if slot.error is None:
            slot.response = msg
            slot.event.set()

    async def _handle_incoming(self, msg: dict[str, Any], kind: str, done: trio.Event | None = None) -> None:
        try:
            await self._route(msg, kind)
        finally:
            if done is not None:
                self._notifying.discard(done)
                done.set()

    async def _route(self, msg: dict[str, Any], kind: str) -> None:
        try:
            reply = await self._handler(self, msg)
        except RpcError as exc:
            reply = jsonrpc.error_response(msg.get("id"), exc.code, exc.message, exc.data)
        except Exception as exc:  # a bug in a handler must not take the child down
            log.exception("%s: handling %s failed", self.name, msg.get("method"))
            reply = {"jsonrpc": "2.0", "id": msg.get("id"), "error": jsonrpc.error_from_exception(exc)}
        if kind == "request" and reply is not None and not self.closed:
            try:
                await self.send(reply)
            except RpcError:
                pass

    def _fail(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        err = ChildGone(jsonrpc.SERVER_UNAVAILABLE, reason)
        for slot in list(self._pending.values()):
            if slot.response is None:
                slot.error = err
                slot.event.set()
        self.dead.set()


def _fmt_seconds(s: float) -> str:
    return f"{s:g}s"


async def pump_stderr(name: str, stream: trio.abc.ReceiveStream) -> None:
    """Copy a child's stderr into the log, a line at a time, with the child's name."""
    buf = b""
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    log.info("[%s] %s", name, line.decode("utf-8", "replace").rstrip()[:2000])
            if len(buf) > 65536:
                log.info("[%s] %s…", name, buf[:2000].decode("utf-8", "replace"))
                buf = b""
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    if buf.strip():
        log.info("[%s] %s", name, buf.decode("utf-8", "replace").rstrip()[:2000])


async def stop_process(proc: trio.Process, name: str) -> None:
    """Bounded shutdown: close stdin, SIGTERM the group, SIGKILL the group. Always reaps."""
    with trio.CancelScope(shield=True):
        if proc.stdin is not None:
            with trio.move_on_after(0.5):
                try:
                    await proc.stdin.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
        if proc.returncode is None:
            with trio.move_on_after(STDIN_GRACE):
                await proc.wait()
        for sig, grace in ((signal.SIGTERM, TERM_GRACE), (signal.SIGKILL, KILL_GRACE)):
            if proc.returncode is None:
                _killpg(proc.pid, sig)
                with trio.move_on_after(grace):
                    await proc.wait()
        if proc.returncode is None:  # pragma: no cover - SIGKILL failed?
            log.error("server %s (pid %s) did not die", name, proc.pid)
        # The leader may be gone while grandchildren linger in its group.
        _killpg(proc.pid, signal.SIGKILL)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@attrs.define
class ChildListingState:
    tools: list[dict[str, Any]] = attrs.Factory(list)
    prompts: list[dict[str, Any]] = attrs.Factory(list)
    resources: list[dict[str, Any]] = attrs.Factory(list)
    templates: list[dict[str, Any]] = attrs.Factory(list)


class Child:
    """Supervises one configured server for the life of the gateway."""

    def __init__(
        self,
        cfg: Any,
        *,
        env: Mapping[str, str],
        max_message_bytes: int,
        handler: MessageHandler,
        on_catalog_change: Callable[[], None],
        client_info: dict[str, Any],
        name: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.name: str = name or cfg.name
        self.prefix: bool = cfg.prefix
        self.call_timeout: float = cfg.call_timeout
        self._env = env
        self._max_message_bytes = max_message_bytes
        self._handler = handler
        self._on_catalog_change = on_catalog_change
        self._client_info = client_info
        self.state = "skipped" if getattr(cfg, "skip_reason", None) else "starting"
        if not getattr(cfg, "enabled", True):
            self.state = "disabled"
        self.restarts = 0
        self.last_error: str = getattr(cfg, "skip_reason", None) or ""
        self.conn: Connection | None = None
        self.listing = ChildListingState()
        self.capabilities: dict[str, Any] = {}
        self.server_info: dict[str, Any] = {}
        self.ready = trio.Event()  # set the first time the child is ready or gives up for now
        self._refresh_lock = trio.Lock()

    def clone(self, name: str) -> Child:
        """Another process of the same server (`per_session`); the original serves the listings."""
        return Child(
            self.cfg,
            env=self._env,
            max_message_bytes=self._max_message_bytes,
            handler=self._handler,
            on_catalog_change=lambda: None,
            client_info=self._client_info,
            name=name,
        )

    @property
    def enabled(self) -> bool:
        return self.state not in ("skipped", "disabled")

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "name": self.name,
            "state": self.state,
            "tools": len(self.listing.tools) if self.state == "ready" else 0,
            "restarts": self.restarts,
        }
        if self.last_error and self.state != "ready":
            st["error"] = self.last_error
        return st

    def _argv(self) -> list[str]:
        cmd = self.cfg.command
        resolved = shutil.which(cmd, path=self._env.get("PATH")) if os.sep not in cmd else cmd
        return [resolved or cmd, *self.cfg.args]

    async def run(self) -> None:
        if not self.enabled:
            self.ready.set()
            return
        backoff = BACKOFF_START
        while True:
            started = time.monotonic()
            try:
                await self._run_once()
            except OSError as exc:
                self.last_error = f"cannot start: {exc}"
                log.error("server %s %s", self.name, self.last_error)
            except Exception as exc:  # a bug or a hostile child must not take the gateway down
                self.last_error = f"internal error: {exc.__class__.__name__}"
                log.exception("server %s: unexpected failure; restarting it", self.name)
            healthy_for = time.monotonic() - started
            if healthy_for >= HEALTHY_RESET:
                backoff = BACKOFF_START
            self.state = "restarting"
            self.ready.set()
            self._on_catalog_change()
            log.warning("server %s stopped (%s); restarting in %.1fs", self.name, self.last_error, backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_CAP)
            self.restarts += 1

    async def _run_once(self) -> None:
        self.state = "starting"
        env = {**self._env, **dict(self.cfg.env)}
        proc = await trio.lowlevel.open_process(
            self._argv(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=self.cfg.cwd or None,
            start_new_session=True,
        )
        log.info("server %s started (pid %d)", self.name, proc.pid)
        conn = Connection(self.name, proc, self._max_message_bytes, self._handler)
        try:
            async with trio.open_nursery() as nursery:
                assert proc.stderr is not None
                nursery.start_soon(pump_stderr, self.name, proc.stderr)
                nursery.start_soon(conn.read_loop)
                nursery.start_soon(self._watch_exit, proc, conn)
                try:
                    await self._initialize(conn)
                except RpcError as exc:
                    self.last_error = f"initialize failed: {exc.message}"
                    log.error("server %s %s", self.name, self.last_error)
                    nursery.cancel_scope.cancel()
                    return
                self.conn = conn
                self.state = "ready"
                self.last_error = ""
                self.ready.set()
                self._on_catalog_change()
                log.info("server %s ready (%d tools)", self.name, len(self.listing.tools))
                await conn.dead.wait()
                self.last_error = conn.close_reason
                nursery.cancel_scope.cancel()
        finally:
            self.conn = None
            conn._fail(conn.close_reason or f"server {self.name} stopped")
            await stop_process(proc, self.name)
            if proc.returncode is not None and proc.returncode != 0 and "exit" not in self.last_error:
                self.last_error = (self.last_error + f" (exit status {proc.returncode})").strip()

    async def _watch_exit(self, proc: trio.Process, conn: Connection) -> None:
        await proc.wait()
        # Give the reader a moment to drain the last responses before failing waiters.
        with trio.move_on_after(0.2):
            await conn.dead.wait()
        conn._fail(f"server {self.name} exited with status {proc.returncode}")

    async def _initialize(self, conn: Connection) -> None:
        resp = await conn.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {"sampling": {}, "elicitation": {}, "roots": {"listChanged": True}},
                "clientInfo": self._client_info,
            },
            timeout=INIT_TIMEOUT,
        )
        if "error" in resp:
            err = resp["error"] or {}
            raise RpcError(jsonrpc.INTERNAL_ERROR, str(err.get("message", "error")))
        result = resp.get("result") or {}
        self.capabilities = result.get("capabilities") or {}
        self.server_info = result.get("serverInfo") or {}
        await conn.notify("notifications/initialized")
        await self.refresh(conn)

    async def refresh(self, conn: Connection | None = None, what: str | None = None) -> None:
        """(Re)load the child's lists. ``what`` limits it to 'tools', 'prompts' or 'resources'."""
        conn = conn or self.conn
        if conn is None:
            return
        caps = self.capabilities
        async with self._refresh_lock:
            if "tools" in caps and what in (None, "tools"):
                self.listing.tools = await self._list_all(conn, "tools/list", "tools")
            if "prompts" in caps and what in (None, "prompts"):
                self.listing.prompts = await self._list_all(conn, "prompts/list", "prompts")
            if "resources" in caps and what in (None, "resources"):
                self.listing.resources = await self._list_all(conn, "resources/list", "resources")
                self.listing.templates = await self._list_all(
                    conn, "resources/templates/list", "resourceTemplates", optional=True
                )

    async def _list_all(self, conn: Connection, method: str, key: str, optional: bool = False) -> list[Any]:
        items: list[Any] = []
        cursor = None
        for _ in range(PAGE_LIMIT):
            resp = await conn.request(method, {"cursor": cursor} if cursor else None, timeout=LIST_TIMEOUT)
            if "error" in resp:
                if optional:
                    return items
                raise RpcError(jsonrpc.INTERNAL_ERROR, f"{method}: {resp['error'].get('message')}")
            result = resp.get("result") or {}
            page = result.get(key) or []
            if isinstance(page, list):
                items.extend(x for x in page if isinstance(x, dict))
            cursor = result.get("nextCursor")
            if not cursor:
                break
        return items
