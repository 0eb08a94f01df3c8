"""zipapp/portero.service: a valid unit, systemd exposure under 5 (where systemd-analyze exists)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "zipapp" / "portero.service"
ANALYZE = shutil.which("systemd-analyze")


def test_the_unit_has_the_hardening_the_issue_asks_for() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "NoNewPrivileges=true", "ProtectSystem=strict", "StateDirectory=portero",
                 "UMask=0077", "KillMode=mixed", "LimitNOFILE="):  # fmt: skip
        assert line in text, line
    assert "MemoryDenyWriteExecute" not in re.sub(r"(?m)^#.*$", "", text)  # node's JIT needs W+X


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_security_exposure_is_under_5() -> None:
    assert ANALYZE is not None
    out = subprocess.run(
        [ANALYZE, "security", "--offline=true", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
    if match is None:
        pytest.skip(f"this systemd-analyze cannot score an offline unit: {out.stderr.strip()[:200]}")
    assert float(match.group(1)) < 5.0, out.stdout[-2000:]
