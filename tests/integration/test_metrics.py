"""GET /metrics on the real `portero serve`: the counts match the audit table, the upstream is up,
and the endpoint takes the bearer token or server.metrics_token, nothing else."""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .harness import TOKEN, GatewayProcess, McpHttpClient, child_toml, server_toml, text_of

METRICS_TOKEN = "scraper-token-0123456789abcdef"
POLICIES = """
[policies]
default = "allow"
[policies.rules]
"t/delete_thing" = "deny"
"t/add" = "require-approval"
"""


@pytest.fixture
def gw(tmp_path: Path):
    extra = f'metrics_token = "{METRICS_TOKEN}"'
    g = GatewayProcess(tmp_path, server_toml(tmp_path, extra=extra) + POLICIES + child_toml("t"))
    g.wait_ready()
    yield g
    g.stop()


def scrape(gw: GatewayProcess, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(gw.url + "/metrics", headers=headers, timeout=5)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def audit_counts(gw: GatewayProcess) -> Counter[tuple[str, str, str]]:
    conn = sqlite3.connect(gw.config_path.parent / "data" / "gateway.db")
    try:
        rows = conn.execute("SELECT tool, decision, outcome FROM audit").fetchall()
    finally:
        conn.close()
    return Counter((tool, decision, outcome) for tool, decision, outcome in rows)


def test_metrics_match_the_audit_table(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    try:
        assert text_of(c.call("t__echo", {"text": "one"})) == "one"
        c.call("t__echo", {"text": "two"})
        assert c.call("t__delete_thing", {"what": "x"})["isError"] is True
        assert c.call("t__add", {"a": 1, "b": 2})["isError"] is True  # no approver: rejected
        c.call("t__sleep", {"seconds": 0})

        resp = scrape(gw, TOKEN)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        got = samples(resp.text)
    finally:
        c.close()

    audit = audit_counts(gw)
    assert sum(audit.values()) == 5
    counted = {
        (dict(labels)["tool"], dict(labels)["decision"], dict(labels)["outcome"]): value
        for (name, labels), value in got.items()
        if name == "portero_calls_total"
    }
    assert counted == dict(audit)
    assert counted[("t/echo", "allow", "ok")] == 2
    clients = {dict(labels)["client"] for (name, labels), _ in got.items() if name == "portero_calls_total"}
    assert clients == {"default"}  # the one bearer token is the implicit client "default"
    assert counted[("t/delete_thing", "deny", "refused")] == 1
    assert counted[("t/add", "rejected", "refused")] == 1
    assert got[("portero_call_duration_seconds_count", ())] == 5
    assert got[("portero_upstream_up", (("server", "t"),))] == 1.0
    assert got[("portero_upstream_restarts_total", (("server", "t"),))] == 0.0
    assert got[("portero_sessions", ())] == 1.0
    assert got[("portero_approvals_pending", ())] == 0.0
    assert got[("portero_audit_write_seconds_count", ())] >= 5


def test_metrics_need_a_token(gw: GatewayProcess) -> None:
    assert scrape(gw, None).status_code == 401
    assert scrape(gw, "wrong-token-0123456789abcdef").status_code == 401
    assert scrape(gw, METRICS_TOKEN).status_code == 200
    assert scrape(gw, TOKEN).status_code == 200
    # The scraper's token opens /metrics only, not the MCP endpoint.
    r = httpx.post(
        gw.url + "/mcp",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}", "Content-Type": "application/json"},
        content=b"{}",
        timeout=5,
    )
    assert r.status_code == 401
    # Host checks apply as on every path.
    r = httpx.get(
        gw.url + "/metrics",
        headers={"Authorization": f"Bearer {TOKEN}", "Host": "evil.example"},
        timeout=5,
    )
    assert r.status_code == 403
