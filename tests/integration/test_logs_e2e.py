"""Readable start-up logs from a real `portero serve`: each config warning once, a line for a server
still starting, how many servers are ready and why the others are not, then where to connect."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from .harness import GatewayProcess, child_toml, server_toml

UNSET = "PORTERO_E2E_NEVER_SET_TOKEN"


def test_startup_lines_with_a_skipped_and_a_slow_server(tmp_path: Path) -> None:
    cfg = (
        server_toml(tmp_path)
        + child_toml("fast")
        + child_toml("slow", "--slow-start", "6")
        + child_toml("github", required_env=[UNSET])
    )
    gw = GatewayProcess(tmp_path, cfg)
    try:
        ready = gw.wait_log("ready: ", timeout=40)
        waiting = gw.wait_log("waiting for slow")
        summary = gw.wait_log("servers ready")
    finally:
        gw.stop()
    lines = gw.lines

    # A line every few seconds for the server still starting; none for the others.
    assert re.search(r"INFO portero: waiting for slow: python\S* is still running, 5 s$", waiting), waiting
    assert not any("waiting for fast" in line or "waiting for github" in line for line in lines)

    # How many are ready, and why the others aren't.
    assert summary.endswith(f"INFO portero: 2 of 3 servers ready (github skipped: {UNSET} is not set)"), (
        summary
    )
    assert not any("(3 servers)" in line for line in lines)

    # Then where to connect, after the servers settled: both servers' tools are counted.
    pattern = r"INFO portero: ready: (\d+) tools on (http://127\.0\.0\.1:\d+/mcp) — `portero client-config` "
    m = re.search(pattern + "prints how to connect$", ready)
    assert m is not None, ready
    assert m.group(2) == gw.url + "/mcp"
    assert int(m.group(1)) >= 20
    order = [lines.index(waiting), lines.index(summary), lines.index(ready)]
    assert order == sorted(order)
    assert lines.index(summary) > next(i for i, line in enumerate(lines) if "server slow ready" in line)

    # Each warning once: the skipped server is not reported by serve and again by the router.
    assert sum("github" in line and "skipped" in line and "WARNING" in line for line in lines) == 1, lines
    assert sum(f"mcp server 'github' is skipped: {UNSET} is not set" in line for line in lines) == 1
    assert not any(line.startswith("warning: ") for line in lines)
    warnings = Counter(line.split(" WARNING ", 1)[1] for line in lines if " WARNING " in line)
    assert warnings and all(n == 1 for n in warnings.values()), warnings
