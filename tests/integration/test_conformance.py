"""The official MCP conformance suite (@modelcontextprotocol/conformance, every active server
scenario) against the real gateway with one stdio child written with the official Python SDK.

`tests/conformance/run.sh` does the work — installs the suite and Node 22 into
tests/conformance/node_modules on first use (npm), starts `portero serve`, runs every scenario,
prints a summary and always stops the gateway. This test runs it as CI does (`bash .ci/run`); it is
skipped only when the suite is not installed and npm is not there to install it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from .harness import ROOT

HERE = ROOT / "tests" / "conformance"
RUN = HERE / "run.sh"
INSTALLED = (HERE / "node_modules" / ".bin" / "conformance").exists() and (
    HERE / "node_modules" / "node" / "bin" / "node"
).exists()

pytestmark = pytest.mark.skipif(
    not INSTALLED and shutil.which("npm") is None,
    reason="the MCP conformance suite needs npm to install @modelcontextprotocol/conformance and node@22",
)


def test_every_server_scenario_passes() -> None:
    # Its own process group, so a timeout stops run.sh *and* the gateway it started (SIGTERM first:
    # run.sh's trap and the gateway's shutdown then stop the child too).
    proc = subprocess.Popen(
        ["bash", str(RUN)],
        cwd=str(ROOT),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    try:
        out, _ = proc.communicate(timeout=170)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        pytest.fail("the conformance run took over 170 s:\n" + out[-20000:])
    assert proc.returncode == 0, out[-20000:]
    assert " scenarios pass" in out, out[-5000:]
    assert "FAIL " not in out, out[-20000:]
