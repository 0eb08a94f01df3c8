"""The sd_notify client against a real AF_UNIX datagram socket; the watchdog on trio's autojump clock."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from portero.systemd import Notifier, status_line


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "n.sock")
    if len(path) >= 100:  # AF_UNIX paths are short
        path = os.path.join("/tmp", f"portero-test-{os.getpid()}.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()
    if os.path.exists(path):
        os.unlink(path)


def drain(sock: socket.socket) -> list[str]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2)
    return out


def test_ready_status_stopping(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled and n.watchdog_interval is None
    assert n.ready("1/1 servers ready · 0 approvals pending · 0 sessions")
    assert sock.recv(4096).decode() == "READY=1\nSTATUS=1/1 servers ready · 0 approvals pending · 0 sessions"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    n.close()


def test_status_is_sent_only_when_it_changes(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.status("a")
    assert not n.status("a")
    assert n.status("b\nc")  # one line: a newline would start another field
    assert drain(sock) == ["STATUS=a", "STATUS=b c"]
    n.close()


def test_reloading_carries_monotonic_usec(receiver: tuple[socket.socket, str]) -> None:
    sock, path = receiver
    n = Notifier({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = sock.recv(4096).decode().split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after
    n.close()


def test_abstract_socket() -> None:
    name = f"portero-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert sock.recv(4096) == b"READY=1"
        n.close()
    finally:
        sock.close()


def test_without_notify_socket_everything_is_a_noop() -> None:
    n = Notifier({"WATCHDOG_USEC": "1000000"})
    assert not n.enabled and n.watchdog_interval is None
    assert not n.ready("x") and not n.reloading() and not n.stopping() and not n.status("x")


def test_errors_are_logged_once_and_never_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.WARNING, logger="portero.systemd"):
        assert not n.ready()
        assert not n.stopping()
    assert len([r for r in caplog.records if "cannot notify systemd" in r.message]) == 1
    n.close()


def test_unsupported_socket_kind_is_ignored() -> None:
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_watchdog_pid(receiver: tuple[socket.socket, str]) -> None:
    _, path = receiver
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"}
    assert Notifier(env).watchdog_interval == 15.0
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 15.0
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_interval is None
    assert Notifier({**env, "WATCHDOG_USEC": "0"}).watchdog_interval is None
    assert Notifier({**env, "WATCHDOG_USEC": "soon"}).watchdog_interval is None


async def test_watchdog_pings_at_half_the_interval(
    receiver: tuple[socket.socket, str], autojump_clock: trio.testing.MockClock
) -> None:
    sock, path = receiver
    n = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"})
    start = trio.current_time()
    with trio.move_on_after(12):  # pings at 0, 5 and 10 s
        await n.watchdog()
    assert trio.current_time() - start == pytest.approx(12)
    assert drain(sock) == ["WATCHDOG=1"] * 3
    n.close()


async def test_run_reports_status_when_it_changes(
    receiver: tuple[socket.socket, str], autojump_clock: trio.testing.MockClock
) -> None:
    sock, path = receiver
    n = Notifier({"NOTIFY_SOCKET": path})
    texts = iter(["a", "a", "b", "b"])

    def status() -> str:
        return next(texts, "b")

    with trio.move_on_after(9):  # status at 2, 4, 6, 8 s; no watchdog without WATCHDOG_USEC
        await n.run(status, every=2)
    assert drain(sock) == ["STATUS=a", "STATUS=b"]
    n.close()


async def test_run_without_socket_returns_at_once(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    await Notifier({}).run(lambda: "x")
    assert trio.current_time() == start


def test_status_line() -> None:
    servers = [{"state": "ready"}, {"state": "ready"}, {"state": "ready"}, {"state": "backoff"}]
    assert status_line(servers, 1, 2) == "3/4 servers ready · 1 approval pending · 2 sessions"
    assert status_line([], 0, 1) == "0/0 servers ready · 0 approvals pending · 1 session"
