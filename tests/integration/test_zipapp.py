"""The one-file zipapp: built with shiv, it serves like the installed package."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .harness import ROOT, TOKEN, child_toml, server_toml

pytest.importorskip("shiv")


def test_zipapp_builds_and_serves(tmp_path: Path) -> None:
    pyz = tmp_path / "portero.pyz"
    env = {**os.environ, "PYTHON": sys.executable, "SHIV_ROOT": str(tmp_path / "shiv")}
    subprocess.run(
        ["bash", str(ROOT / "zipapp" / "build.sh"), str(pyz)], check=True, env=env, capture_output=True
    )
    assert pyz.stat().st_size > 100_000
    out = subprocess.run(
        [sys.executable, str(pyz), "--version"], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().startswith("portero ")
    cfg = tmp_path / "portero.toml"
    cfg.write_text(server_toml(tmp_path) + child_toml("z"))
    proc = subprocess.Popen(
        [sys.executable, str(pyz), "serve", "--config", str(cfg)],
        env=env,
        cwd=str(tmp_path),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = ""
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("portero: listening on "):
                url = line.split("listening on ", 1)[1].strip()
                break
        assert url
        for _ in range(200):
            r = httpx.get(url + "/health")
            if r.status_code == 200:
                break
            time.sleep(0.05)
        assert r.json()["servers"] == {"ready": 1}  # the public view: counts only
        r = httpx.post(
            url + "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
            headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json, text/event-stream"},
        )
        assert r.json()["result"]["serverInfo"]["name"] == "portero"
    finally:
        proc.terminate()
        proc.wait(20)
        if proc.stderr:
            proc.stderr.close()
