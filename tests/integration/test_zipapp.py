"""The one-file zipapp, built as the README prints it from a fresh clone, serves like the package.

The clone is of the repository this file lives in (``git clone`` of a local path works offline); the
working copy of ``zipapp/build.sh`` is copied over it, so an uncommitted edit of the script is what is
tested. Both builds share the clone, so the second reuses the build environment (build/zipapp-venv).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .harness import ROOT, TOKEN, child_toml, server_toml

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

BUILD = "bash zipapp/build.sh"
BUILD_PORTABLE = "bash zipapp/build.sh --portable"


def _shipping_commands() -> list[str]:
    """The command lines of the README's "Shipping" section (its ```sh blocks)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Shipping", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        for line in block.splitlines():
            command = line.split("#", 1)[0].strip()
            if command:
                lines.append(command)
    return lines


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV", "PYTHONPATH")}
    env["SHIV_ROOT"] = str(tmp / "shiv")
    # The README's command runs `python3` from PATH; the test's own venv must not shadow it.
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("zipapp")
    repo = base / "portero"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
    shutil.copy2(ROOT / "zipapp" / "build.sh", repo / "zipapp" / "build.sh")
    yield repo


def _build(repo: Path, command: str, tmp: Path) -> str:
    proc = subprocess.run(
        command, shell=True, cwd=repo, env=_env(tmp), capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _serve_and_call(python: str, pyz: Path, tmp: Path) -> None:
    cfg = tmp / "portero.toml"
    cfg.write_text(server_toml(tmp) + "[console]\nenabled = true\n" + child_toml("z"))
    # The console's password, its templates and static files come out of the one file too.
    done = subprocess.run(
        [python, str(pyz), "console", "passwd", "--config", str(cfg)],
        input="zipapp console password\n",
        env=_env(tmp),
        cwd=str(tmp),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "console password set" in done.stdout, done.stderr
    proc = subprocess.Popen(
        [python, str(pyz), "serve", "--config", str(cfg)],
        env=_env(tmp),
        cwd=str(tmp),
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
            if r.status_code == 200 and r.json()["servers"] == {"ready": 1}:
                break
            time.sleep(0.05)
        assert r.json()["servers"] == {"ready": 1}  # the public view: counts only
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json, text/event-stream"}
        init = {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        }
        r = httpx.post(
            url + "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init},
            headers=headers,
        )
        assert r.json()["result"]["serverInfo"]["name"] == "portero"
        session = r.headers.get("mcp-session-id")
        if session:
            headers["mcp-session-id"] = session
        r = httpx.post(
            url + "/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=headers
        )
        assert any(tool["name"].startswith("z") for tool in r.json()["result"]["tools"])
        with httpx.Client(base_url=url + "/console") as web:
            page = web.get("/login")
            assert page.status_code == 200 and "Console password" in page.text
            token = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert token
            r = web.post("/login", data={"password": "zipapp console password", "csrf": token.group(1)})
            assert r.status_code == 303
            assert 'data-name="z"' in web.get("/").text
            assert web.get("/static/console.css").status_code == 200
            assert web.get("/static/console.js").status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)
        if proc.stderr:
            proc.stderr.close()


def test_readme_prints_the_build_commands() -> None:
    commands = _shipping_commands()
    assert BUILD in commands
    assert BUILD_PORTABLE in commands


def test_build_from_fresh_clone_and_serve(clone: Path, tmp_path: Path) -> None:
    out = _build(clone, BUILD, tmp_path)
    pyz = clone / "dist" / "portero.pyz"
    assert pyz.stat().st_size > 100_000
    # It names the platform it is for and the compiled dependencies that tie it there.
    line = next(x for x in out.splitlines() if x.startswith("dist/portero.pyz: for CPython 3."))
    assert "compiled dependencies: " in line and "orjson" in line
    assert (clone / "build" / "zipapp-venv" / "bin" / "python").exists()
    version = subprocess.run(
        [sys.executable, str(pyz), "--version"], env=_env(tmp_path), capture_output=True, text=True
    )
    assert version.stdout.strip().startswith("portero "), version.stderr
    _serve_and_call(sys.executable, pyz, tmp_path)


def test_portable_build_runs_without_orjson(clone: Path, tmp_path: Path) -> None:
    out = _build(clone, BUILD_PORTABLE, tmp_path)
    assert "dist/portero.pyz: portable, pure Python" in out
    pyz = clone / "dist" / "portero.pyz"
    with zipfile.ZipFile(pyz) as zf:
        names = zf.namelist()
    compiled = [n for n in names if n.endswith((".so", ".pyd")) or n.startswith("site-packages/orjson")]
    assert names and not compiled
    # A Python whose site-packages has no orjson (a bare venv), running the file's own environment.
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = str(bare / "bin" / "python")
    probe = (
        "import importlib.util, portero.core.jsonrpc as j; "
        "print(importlib.util.find_spec('orjson'), j.orjson, j.dumps({'a': 1}))"
    )
    r = subprocess.run(
        [python, str(pyz), "-c", probe],
        env={**_env(tmp_path), "SHIV_INTERPRETER": "1"},
        capture_output=True,
        text=True,
    )
    assert r.stdout.split() == ["None", "None", "b'{\"a\":1}'"], r.stdout + r.stderr
    extracted = list((tmp_path / "shiv").glob("*/site-packages"))
    assert extracted and not list(extracted[0].glob("orjson*"))
    _serve_and_call(python, pyz, tmp_path)


def _container_tool() -> str | None:
    for tool in ("podman", "docker"):
        if shutil.which(tool):
            return tool
    return None


@pytest.mark.skipif(
    os.environ.get("PORTERO_CONTAINER_TEST") != "1" or _container_tool() is None,
    reason="slow: set PORTERO_CONTAINER_TEST=1 (needs podman or docker and registry access)",
)
def test_container_image_builds_and_is_healthy(tmp_path: Path) -> None:
    tool = _container_tool()
    assert tool is not None
    tag = "portero-test:latest"
    subprocess.run([tool, "build", "-t", tag, str(ROOT)], check=True, timeout=900)
    version = subprocess.run(
        [tool, "run", "--rm", tag, "--version"], capture_output=True, text=True, check=True, timeout=120
    )
    assert version.stdout.strip().startswith("portero ")
    cfg = tmp_path / "portero.toml"
    cfg.write_text(
        '[server]\nhost = "0.0.0.0"\nport = 8443\nauth = "bearer"\n'
        f'bearer_token = "{TOKEN}"\ndata_dir = "/var/lib/portero"\n'
    )
    cfg.chmod(0o644)
    name = f"portero-test-{os.getpid()}"
    subprocess.run(
        [tool, "run", "-d", "--name", name, "-v", f"{cfg}:/etc/portero/portero.toml:ro", tag],
        check=True,
        timeout=120,
    )
    try:
        probe = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8443/health').status)"
        status = ""
        for _ in range(60):
            r = subprocess.run([tool, "exec", name, "python3", "-c", probe], capture_output=True, text=True)
            status = r.stdout.strip()
            if status == "200":
                break
            time.sleep(1)
        assert status == "200"
    finally:
        subprocess.run([tool, "rm", "-f", name], capture_output=True, timeout=120)
