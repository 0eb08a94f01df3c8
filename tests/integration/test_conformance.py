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
    proc = subprocess.run(
        ["bash", str(RUN)],
        cwd=str(ROOT),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=170,
        env={**os.environ, "PYTHON": sys.executable},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-20000:]
    assert " scenarios pass" in out, out[-5000:]
    assert "FAIL " not in out, out[-20000:]
