"""Type=notify end to end: real `portero serve`, and a datagram socket we bind hears what systemd would."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import GatewayProcess, child_toml, server_toml


class Listener:
    """Binds NOTIFY_SOCKET and records every datagram, probing the gateway's port when READY=1 arrives."""

    def __init__(self, path: str, port: int) -> None:
        self.path = path
        self.port = port
        self.messages: list[str] = []
        self.port_open_at_ready: list[bool] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            if msg.startswith("READY=1"):
                self.port_open_at_ready.append(self._port_open())
            self.messages.append(msg)

    def _port_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                return True
        except OSError:
            return False

    def wait_for(self, prefix: str, after: int = 0, timeout: float = 20.0) -> int:
        """Index of the first message from ``after`` on that starts with ``prefix``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, msg in enumerate(list(self.messages)[after:], start=after):
                if msg.startswith(prefix):
                    return i
            time.sleep(0.02)
        raise AssertionError(f"no {prefix!r} after #{after} within {timeout}s: {self.messages}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listener() -> Iterator[Listener]:
    d = tempfile.mkdtemp(prefix="portero-sd-")  # AF_UNIX paths must be short; tmp_path may be long
    lst = Listener(os.path.join(d, "notify"), free_port())
    yield lst
    lst.close()
    os.unlink(lst.path)
    os.rmdir(d)


def config(tmp: Path, port: int) -> str:
    cfg = server_toml(tmp).replace("port = 0\n", f"port = {port}\n")
    return cfg + child_toml("slow", "--slow-start", "1.5") + child_toml("quick")


def test_ready_reload_stop(tmp_path: Path, listener: Listener) -> None:
    gw = GatewayProcess(tmp_path, config(tmp_path, listener.port), env={"NOTIFY_SOCKET": listener.path})
    try:
        assert gw.url.endswith(f":{listener.port}")
        ready = listener.wait_for("READY=1")
        # Not before the port was bound, and not before the slow server came up (servers settled).
        assert listener.port_open_at_ready == [True]
        assert (
            listener.messages[ready] == "READY=1\nSTATUS=2/2 servers ready · 0 approvals pending · 0 sessions"
        )
        assert not any(m.startswith(("RELOADING", "STOPPING")) for m in listener.messages[:ready])

        gw.proc.send_signal(signal.SIGHUP)
        reloading = listener.wait_for("RELOADING=1", after=ready + 1)
        fields = listener.messages[reloading].split("\n")
        assert fields[0] == "RELOADING=1"
        assert fields[1].startswith("MONOTONIC_USEC=") and int(fields[1].split("=")[1]) > 0
        listener.wait_for("READY=1", after=reloading + 1)
        gw.wait_log("reloaded")
    finally:
        code = gw.stop()
    assert code == 0
    listener.wait_for("STOPPING=1", after=ready + 1)
    assert not any(m.startswith("WATCHDOG") for m in listener.messages)


def test_watchdog(tmp_path: Path, listener: Listener) -> None:
    env = {"NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "1000000"}
    gw = GatewayProcess(tmp_path, server_toml(tmp_path) + child_toml("one"), env=env)
    try:
        first = listener.wait_for("WATCHDOG=1")
        listener.wait_for("WATCHDOG=1", after=first + 1, timeout=3)  # every 0.5 s
    finally:
        gw.stop()


def test_no_notify_socket_no_trouble(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "nobody")}  # nobody listens: logged once, serving goes on
    gw = GatewayProcess(tmp_path, server_toml(tmp_path) + child_toml("one"), env=env)
    try:
        gw.wait_ready()
        gw.wait_log("cannot notify systemd")
    finally:
        assert gw.stop() == 0
