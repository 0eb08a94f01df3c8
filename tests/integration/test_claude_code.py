"""Claude Code against the real gateway: the `claude mcp add` line that `portero client-config` prints,
then `claude mcp list`, which connects to every configured server and says whether it could.

Opt-in: Claude Code's npm package is about 235 MB (a native binary), too big for CI, so the test runs
only with ``PORTERO_CLAUDE_CODE=/path/to/claude`` (e.g. after
``npm install --prefix /tmp/cc @anthropic-ai/claude-code``: ``/tmp/cc/node_modules/.bin/claude``).
Listing MCP servers needs neither a login nor the network. Claude Code runs with a throwaway HOME
and without any CLAUDE_*/ANTHROPIC_* variable of the caller, so nothing of the machine is read or
touched. Checked with Claude Code 2.1.197, which speaks the handshake era (`initialize` asking for
2025-11-25, then `tools/list`), opens the session's GET stream and exits without a DELETE.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import TOKEN, GatewayProcess, child_toml, server_toml

CLAUDE = os.environ.get("PORTERO_CLAUDE_CODE", "")

pytestmark = pytest.mark.skipif(
    not (CLAUDE and os.access(CLAUDE, os.X_OK)),
    reason="Claude Code not given: set PORTERO_CLAUDE_CODE=/path/to/claude "
    "(npm install --prefix /tmp/cc @anthropic-ai/claude-code; about 235 MB, so not in CI)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp: Path = tmp_path_factory.mktemp("claude_code")
    # A fixed port (not 0) so that `portero client-config` prints the URL Claude Code must use.
    config = server_toml(tmp, extra='session_idle_timeout = "2s"').replace(
        "port = 0\n", f"port = {_free_port()}\n"
    )
    g = GatewayProcess(tmp, config + child_toml("echo"))
    g.wait_ready(timeout=30)
    yield g
    g.stop()


def claude_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLAUDE", "ANTHROPIC", "XDG_")) and k not in ("HOME", "MCP_TIMEOUT")
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        DISABLE_AUTOUPDATER="1",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
    )
    return env


def claude(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLAUDE, *args],
        cwd=str(cwd),
        env=claude_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def add_command(gw: GatewayProcess, token: str = TOKEN) -> list[str]:
    """The arguments after `claude` of the line `portero client-config` prints for Claude Code."""
    out = subprocess.run(
        [sys.executable, "-m", "portero", "client-config", "--config", str(gw.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("claude mcp add "))
    argv = shlex.split(line.replace(TOKEN, token))
    assert argv[0] == "claude" and gw.url + "/mcp" in argv, line
    return argv[1:]


def sessions(gw: GatewayProcess) -> int:
    return int(gw.health().json()["sessions"])


def test_claude_mcp_list_shows_portero_connected(gw: GatewayProcess, tmp_path: Path) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    version = claude(["--version"], project, home).stdout.strip()

    added = claude(add_command(gw), project, home)
    assert added.returncode == 0, (version, added.stdout, added.stderr)

    before = len(gw.lines)
    listed = claude(["mcp", "list"], project, home)
    shown = listed.stdout + listed.stderr
    line = f"portero: {gw.url}/mcp (HTTP) - ✔ Connected"
    assert listed.returncode == 0 and line in shown.splitlines(), (version, shown, gw.log_text()[-3000:])
    # It really talked to the gateway: a session (or a stateless request) that listed the tools.
    assert any("tools/list" in ln for ln in gw.lines[before:]), gw.log_text()[-3000:]

    # Claude Code exits without a DELETE; its session must still go once idle (2 s here), which
    # needs the gateway to notice that the GET stream it opened has closed.
    deadline = time.monotonic() + 15
    while sessions(gw) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sessions(gw) == 0, gw.health().json()


def test_a_wrong_token_is_shown_as_failed(gw: GatewayProcess, tmp_path: Path) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir()
    project.mkdir()
    added = claude(add_command(gw, token="wrong-token-0123456789abcdef"), project, home)
    assert added.returncode == 0, (added.stdout, added.stderr)
    listed = claude(["mcp", "list"], project, home)
    shown = listed.stdout + listed.stderr
    assert re.search(r"^portero: .* - ✘ ", shown, re.M) and "✔ Connected" not in shown, shown
    gw.wait_log("bearer token missing or invalid")
