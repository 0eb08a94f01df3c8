"""Local MCP servers over stdio: spawn, pump stderr, bounded stop.

A child starts in its own session (process group), so grandchildren (``npx`` → ``node``) stop with
it. It gets a minimal environment — :data:`BASE_ENV` names taken from the gateway's, then the names
its ``inherit_env`` lists, then its own ``env`` — and never the gateway's secrets (bearer token,
bot token, other servers' credentials).

Shutdown of a process is bounded at each step: close stdin, wait; SIGTERM the process group,
wait; SIGKILL the group, wait; always reaped.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager

import trio

from ..config import McpServer
from .peer import MessageHandler, Peer

log = logging.getLogger("portero.upstream")

TERM_GRACE = 2.0
KILL_GRACE = 2.0
STDIN_GRACE = 1.0
STDERR_LINE = 2000  # characters of one stderr line kept in the log

# What every child gets from the gateway's environment: enough to find programs, a home for
# caches (npx), the locale and the time zone. Nothing that could hold a credential.
BASE_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
    "TERM", "XDG_RUNTIME_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "SYSTEMROOT",
)  # fmt: skip


def child_environment(
    gateway_env: Mapping[str, str], own: Mapping[str, str], inherit: Iterable[str] = ()
) -> dict[str, str]:
    """The environment of one child: a few harmless names of the gateway's, ``inherit``, ``own``."""
    names = set(BASE_ENV) | set(inherit)
    env = {k: v for k, v in gateway_env.items() if k in names or k.startswith("LC_")}
    env.update(own)
    return env


async def pump_stderr(name: str, stream: trio.abc.ReceiveStream, clean: Callable[[str], str]) -> None:
    """Copy a child's stderr into the log a line at a time, named, through ``clean`` (which redacts
    secrets and anonymizes real values)."""
    buf = b""

    def emit(raw: bytes, more: str = "") -> None:
        text = raw.decode("utf-8", "replace").rstrip()
        if text.strip():
            log.info("[%s] %s%s", name, clean(text[:STDERR_LINE]), more)

    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                break
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                emit(line)
            if len(buf) > 65536:
                emit(buf[:STDERR_LINE], "…")
                buf = b""
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    emit(buf)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


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


class StdioTransport:
    """Starts one process of a configured ``[[mcp]]`` server and speaks to it over its pipes."""

    def __init__(
        self,
        cfg: McpServer,
        gateway_env: Mapping[str, str],
        *,
        clean_log: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.cfg = cfg
        self._env = child_environment(gateway_env, cfg.env, cfg.inherit_env)
        self._clean_log = clean_log
        self.returncode: int | None = None

    def _argv(self) -> list[str]:
        cmd = self.cfg.command
        resolved = shutil.which(cmd, path=self._env.get("PATH")) if os.sep not in cmd else cmd
        return [resolved or cmd, *self.cfg.args]

    @asynccontextmanager
    async def open(self, name: str, handler: MessageHandler, max_message_bytes: int) -> AsyncIterator[Peer]:
        """Spawn the process; yield a running :class:`Peer`; on exit stop the process (bounded).

        The peer is failed (callers woken) when the process exits or the block is left.
        Raises ``OSError`` when the program cannot be started.
        """
        self.returncode = None
        proc = await trio.lowlevel.open_process(
            self._argv(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._env,
            cwd=self.cfg.cwd or None,
            start_new_session=True,
        )
        log.info("server %s started (pid %d)", name, proc.pid)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        peer = Peer(name, proc.stdin, proc.stdout, max_message_bytes=max_message_bytes, handler=handler)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump_stderr, name, proc.stderr, self._clean_log)
                nursery.start_soon(peer.run)
                nursery.start_soon(self._watch_exit, proc, peer)
                try:
                    yield peer
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            peer.fail(peer.close_reason or f"server {name} stopped")
            await stop_process(proc, name)
            self.returncode = proc.returncode

    async def login_changed(self) -> None:
        await trio.sleep_forever()  # a local process never needs a login

    async def _watch_exit(self, proc: trio.Process, peer: Peer) -> None:
        await proc.wait()
        # Give the reader a moment to drain the last responses before failing waiters.
        with trio.move_on_after(0.2):
            await peer.dead.wait()
        peer.fail(f"server {peer.name} exited with status {proc.returncode}")
