"""SIGHUP reloads everything a running gateway can change without dropping its sessions (real gateway).

Added servers start, removed ones stop (their process goes), changed ones restart, unchanged ones keep
running; a session opened before the reload keeps working and gets `list_changed` on its GET stream
for each list whose exposed content changed — also when only a policy changed.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from .harness import GatewayProcess, McpHttpClient, child_toml, pids_alive, server_toml, text_of
from .test_streams import StreamReader


def _tools(c: McpHttpClient) -> set[str]:
    return {t["name"] for t in c.request("tools/list")["result"]["tools"]}


def _changes(stream: StreamReader, what: str = "tools") -> int:
    return sum(1 for _, m in stream.events if m and m.get("method") == f"notifications/{what}/list_changed")


def _wait(pred, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_sighup_adds_removes_and_restarts_servers_and_keeps_sessions(tmp_path: Path) -> None:
    pid_b, pid_kept = tmp_path / "b.pid", tmp_path / "kept.pid"
    base = server_toml(tmp_path)
    first = (
        base
        + child_toml("kept", "--pidfile", str(pid_kept))
        + child_toml("a")
        + child_toml("b", "--pidfile", str(pid_b))
    )
    g = GatewayProcess(tmp_path, first)
    try:
        g.wait_ready()
        c = McpHttpClient(g.url)
        stream = StreamReader(g.url, c.session_id or "")
        assert {"kept__echo", "a__echo", "b__echo"} <= _tools(c)
        kept_pid, b_pids = int(pid_kept.read_text().split()[0]), [int(x) for x in pid_b.read_text().split()]
        seen = _changes(stream)

        # Remove b, add c, change a (it gains a tool), keep `kept` as it is.
        g.config_path.write_text(
            base
            + child_toml("kept", "--pidfile", str(pid_kept))
            + child_toml("a", "--extra-tool", "fresh")
            + child_toml("c")
        )
        g.proc.send_signal(signal.SIGHUP)
        g.wait_log("servers added c, removed b, restarted a")
        _wait(lambda: {"kept__echo", "a__fresh", "c__echo"} <= _tools(c) and "b__echo" not in _tools(c))
        _wait(lambda: _changes(stream) > seen)  # the open session was told
        _wait(lambda: pids_alive(b_pids) == [])  # b's process is gone
        assert int(pid_kept.read_text().split()[0]) == kept_pid  # `kept` was not restarted
        assert text_of(c.call("a__echo", {"text": "same session"})) == "same session"

        # A policy that denies a tool: the tool list changed, so sessions hear of it.
        seen = _changes(stream)
        g.config_path.write_text(
            g.config_path.read_text() + '\n[policies]\ndefault = "allow"\n[policies.rules]\n"c/*" = "deny"\n'
        )
        g.proc.send_signal(signal.SIGHUP)
        _wait(lambda: "c__echo" not in _tools(c))
        _wait(lambda: _changes(stream) > seen)

        # A broken config changes nothing.
        g.config_path.write_text(g.config_path.read_text() + "\n[server]\nnot_a_key = 1\n")
        g.proc.send_signal(signal.SIGHUP)
        g.wait_log("reload refused")
        assert "a__fresh" in _tools(c)
        stream.close()
    finally:
        g.stop()
