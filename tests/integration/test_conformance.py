"""The official MCP conformance suite (@modelcontextprotocol/conformance, every active server
scenario) against the real gateway with one stdio child written with the official Python SDK; and
the 2026 suite (0.2.0-alpha.12) at `--spec-version 2026-07-28`, the stateless era, on the server
scenarios its frozen requirements list for that revision (`requirements/2026-07-28.yaml`).

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


def _run(args: list[str], env: dict[str, str]) -> str:
    # Its own process group, so a timeout stops run.sh *and* the gateway it started (SIGTERM first:
    # run.sh's trap and the gateway's shutdown then stop the child too).
    proc = subprocess.Popen(
        ["bash", str(RUN), *args],
        cwd=str(ROOT),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHON": sys.executable, **env},
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
    return out


def test_every_server_scenario_passes() -> None:
    _run([], {})


def _required_2026() -> list[str]:
    """The server scenarios the 2026-07-28 revision requires, as the suite's frozen list names them."""
    path = HERE / "node_modules" / "conformance-2026" / "requirements" / "2026-07-28.yaml"
    if not path.exists():  # not installed yet: run.sh installs it; the list is the one of 0.2.0-alpha.12
        return list(REQUIRED_2026)
    lines = path.read_text().splitlines()
    start = lines.index("server:") + 1
    names = []
    for line in lines[start:]:
        if not line.startswith("  - "):
            break
        names.append(line[4:].strip())
    return names


REQUIRED_2026 = (
    "server-stateless completion-complete tools-list tools-call-simple-text tools-call-image "
    "tools-call-audio tools-call-embedded-resource tools-call-mixed-content tools-call-error "
    "tools-call-with-progress server-sse-multiple-streams resources-list resources-read-text "
    "resources-read-binary resources-templates-read sep-2164-resource-not-found prompts-list "
    "prompts-get-simple prompts-get-with-args prompts-get-embedded-resource prompts-get-with-image "
    "dns-rebinding-protection caching"
).split() + [
    f"input-required-result-{name}"
    for name in (
        "basic-elicitation basic-sampling basic-list-roots request-state multiple-input-requests "
        "multi-round missing-input-response non-tool-request result-type unsupported-methods "
        "tampered-state capability-check ignore-extra-params validate-input"
    ).split()
]


def test_the_2026_07_28_server_scenarios_pass() -> None:
    # The fixture speaks both eras; here the gateway speaks the stateless one with it too
    # (`protocol = "auto"`), so its input_required results reach the suite (the MRTR scenarios).
    scenarios = _required_2026()
    assert len(scenarios) >= 37
    env = {
        "CONFORMANCE_SUITE": "2026",
        "CONFORMANCE_ARGS": "--spec-version 2026-07-28",
        "CHILD_PROTOCOL": "auto",
    }
    out = _run(scenarios, env)
    assert f"{len(scenarios)}/{len(scenarios)} scenarios pass" in out, out[-5000:]
