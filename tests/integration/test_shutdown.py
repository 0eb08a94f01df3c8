"""Shutdown under pressure (real gateway): a second stop signal hurries, never kills."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from .harness import GatewayProcess, McpHttpClient, child_toml, pids_alive, server_toml


def test_a_second_sigterm_shortens_the_drain_and_still_stops_the_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "t.pid"
    g = GatewayProcess(tmp_path, server_toml(tmp_path) + child_toml("t", "--pidfile", str(pidfile)))
    g.wait_ready()
    pids = [int(x) for x in pidfile.read_text().split()]
    c = McpHttpClient(g.url)

    def slow_call() -> None:
        try:
            c.call("t__sleep", {"seconds": 30})
        except (httpx.HTTPError, AssertionError, KeyError):
            pass  # the gateway goes away under it

    threading.Thread(target=slow_call, daemon=True).start()
    time.sleep(0.5)  # the call is in flight
    started = time.monotonic()
    g.proc.send_signal(signal.SIGTERM)
    g.wait_log("shutting down")
    g.proc.send_signal(signal.SIGTERM)  # before the 5 s HTTP drain is over
    code = g.proc.wait(20)
    assert code == 0, g.log_text()[-3000:]  # not -15: the gateway stopped itself, in order
    assert time.monotonic() - started < 5  # the drain was cut short
    assert "cutting the drain short" in g.log_text()
    deadline = time.monotonic() + 5
    while pids_alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pids_alive(pids) == []
