"""The real ``portero serve`` process refuses what it could not start: one line per problem naming the file
and key, exit status 2, no traceback, nothing started (and ``check`` says the same lines)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .harness import child_toml, server_toml


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "portero", *args],
        cwd=str(cwd),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": os.environ.get("PATH", "")},
    )


def test_serve_refuses_missing_programs_directories_and_files(tmp_path: Path) -> None:
    # Before: a missing program was restarted forever, a missing cwd likewise, missing TLS files a traceback.
    cfg = tmp_path / "portero.toml"
    cfg.write_text(
        server_toml(tmp_path, extra='tls_cert = "cert.pem"\ntls_key = "key.pem"')
        + child_toml("good")
        + '[[mcp]]\nname = "gone"\ncommand = "portero-no-such-program-anywhere"\n'
        + child_toml("lost", cwd="no-such-dir")
    )
    served = run("serve", "--config", str(cfg), cwd=tmp_path)
    assert served.returncode == 2
    assert "Traceback" not in served.stderr + served.stdout
    assert "listening" not in served.stderr
    lines = served.stderr.splitlines()
    assert lines[:3] == [
        f"{cfg}: server.tls_cert: no such file: {tmp_path / 'cert.pem'}",
        f"{cfg}: server.tls_key: no such file: {tmp_path / 'key.pem'}",
        f'{cfg}: mcp[1].command: "portero-no-such-program-anywhere" is not found on the gateway\'s PATH '
        f"({os.environ.get('PATH', '')})",
    ]
    assert lines[3:] == [f"{cfg}: mcp[2].cwd: no such directory: {tmp_path / 'no-such-dir'}"]
    assert not (tmp_path / "data").exists()  # the store was never opened

    checked = run("check", "--config", str(cfg), cwd=tmp_path)
    assert checked.returncode == 2
    assert checked.stdout == ""
    assert sorted(checked.stderr.splitlines()) == sorted(lines)
