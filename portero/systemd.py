"""systemd's readiness protocol (sd_notify), spoken in a few lines: no libsystemd.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a path, or an abstract socket spelled with a
leading ``@``) and, with ``WatchdogSec=``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``. We send it
newline-separated ``KEY=VALUE`` datagrams: ``READY=1`` once we serve, ``RELOADING=1`` and ``READY=1``
around a SIGHUP reload, ``STOPPING=1`` when the shutdown starts, ``WATCHDOG=1`` at half the watchdog
interval, and a ``STATUS=`` line a person reads in ``systemctl status``.

Without ``NOTIFY_SOCKET`` every method is a no-op. A failure to send never reaches the gateway: it is
logged once and the message dropped.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

import trio

log = logging.getLogger("portero.systemd")

STATUS_EVERY = 2.0  # seconds between checks of the STATUS line (sent only when it changes)


def status_line(servers: list[dict[str, Any]], pending: int, sessions: int) -> str:
    """ "3/4 servers ready · 1 approval pending · 2 sessions" """
    ready = sum(1 for s in servers if s.get("state") == "ready")
    return (
        f"{ready}/{len(servers)} servers ready"
        f" · {pending} approval{'' if pending == 1 else 's'} pending"
        f" · {sessions} session{'' if sessions == 1 else 's'}"
    )


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


class Notifier:
    """Sends sd_notify datagrams to the socket named in ``env`` (see the module docstring)."""

    def __init__(self, env: Mapping[str, str], *, pid: int | None = None) -> None:
        raw = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if raw.startswith("@"):
            self.address = "\0" + raw[1:]  # abstract namespace
        elif raw.startswith("/"):
            self.address = raw
        elif raw:
            log.warning("NOTIFY_SOCKET=%r is not a path nor an abstract socket: not notifying systemd", raw)
        self.pid = os.getpid() if pid is None else pid
        usec = _int(env.get("WATCHDOG_USEC"))
        watchdog_pid = _int(env.get("WATCHDOG_PID"))
        self.watchdog_usec = usec if usec and usec > 0 and watchdog_pid in (None, self.pid) else None
        self._sock: socket.socket | None = None
        self._complained = False
        self._last_status: str | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between two WATCHDOG=1: half of WATCHDOG_USEC, or None when there's no watchdog."""
        if not self.enabled or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def send(self, *fields: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` fields; True if it went out."""
        if self.address is None or not fields:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._complained:
                self._complained = True
                log.warning("cannot notify systemd at %s: %s", self.address.replace("\0", "@"), exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        fields = ["READY=1"]
        if status is not None:
            fields.append(f"STATUS={_one_line(status)}")
            self._last_status = _one_line(status)
        return self.send(*fields)

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        """Send STATUS= when the text differs from the last one sent."""
        text = _one_line(text)
        if text == self._last_status:
            return False
        sent = self.send(f"STATUS={text}")
        if sent:
            self._last_status = text
        return sent

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def watchdog(self) -> None:
        """WATCHDOG=1 every half WATCHDOG_USEC, forever; returns at once when there's no watchdog."""
        interval = self.watchdog_interval
        if interval is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await trio.sleep(interval)

    async def report_status(self, status: Callable[[], str], every: float = STATUS_EVERY) -> None:
        """Every ``every`` seconds, send ``status()`` if it changed; returns at once when disabled."""
        if not self.enabled:
            return
        while True:
            await trio.sleep(every)
            try:
                text = status()
            except Exception:  # a status line is not worth stopping the gateway for
                log.debug("status line failed", exc_info=True)
                continue
            self.status(text)

    async def run(self, status: Callable[[], str] | None = None, every: float = STATUS_EVERY) -> None:
        """The watchdog and (with ``status``) the STATUS updates, until cancelled."""
        if not self.enabled:
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.watchdog)
            if status is not None:
                nursery.start_soon(self.report_status, status, every)


def _one_line(text: str) -> str:
    return " ".join(text.split())
