"""portero.metrics: the scrape-time collector, the event hooks, and GET /metrics on the ASGI app."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from portero import metrics
from portero.config import ConfigError
from portero.front.security import Guard

from .test_mcp_http import TOKEN, Gateway, make_config

METRICS_TOKEN = "metrics-token-0123456789"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(state: metrics.StateCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(metrics.render(metrics.scrape_registry(state)).decode())


def test_state_is_read_at_scrape_time() -> None:
    ups: list[dict[str, Any]] = [
        {"name": "a", "state": "ready", "restarts": 0},
        {"name": "b", "state": "backoff", "restarts": 3, "error": "boom"},
    ]
    counts = {"sessions": 2, "pending": 1}
    state = metrics.StateCollector(
        upstreams=lambda: ups,
        sessions=lambda: counts["sessions"],
        approvals_pending=lambda: counts["pending"],
    )
    got = scrape(state)
    assert got[("portero_upstream_up", (("server", "a"),))] == 1.0
    assert got[("portero_upstream_up", (("server", "b"),))] == 0.0
    assert got[("portero_upstream_restarts_total", (("server", "b"),))] == 3.0
    assert got[("portero_sessions", ())] == 2.0
    assert got[("portero_approvals_pending", ())] == 1.0
    # No hook keeps these in step: the next scrape sees the change.
    ups[0]["state"] = "starting"
    counts["sessions"] = 0
    got = scrape(state)
    assert got[("portero_upstream_up", (("server", "a"),))] == 0.0
    assert got[("portero_sessions", ())] == 0.0


def test_events_are_counted_and_served_with_the_state() -> None:
    state = metrics.StateCollector(upstreams=list, sessions=lambda: 0, approvals_pending=lambda: 0)
    labels = (("client", "laptop"), ("decision", "allow"), ("outcome", "ok"), ("tool", "unit/metrics"))
    key = ("portero_calls_total", labels)
    before = scrape(state).get(key, 0.0)
    hist = ("portero_call_duration_seconds_count", ())
    hist_before = scrape(state).get(hist, 0.0)
    metrics.call_finished("unit/metrics", "allow", "ok", 0.25, "laptop")
    metrics.call_finished("unit/metrics", "allow", "ok", None, "laptop")  # counted, not timed
    metrics.approval_decided("approved", 3.0)
    metrics.telegram_api_error("retry_after")
    metrics.audit_write_seconds(0.001)
    got = scrape(state)
    assert got[key] == before + 2
    assert got[hist] == hist_before + 1
    assert got[("portero_approvals_decided_total", (("decision", "approved"),))] >= 1
    assert got[("portero_approval_wait_seconds_count", ())] >= 1
    assert got[("portero_telegram_api_errors_total", (("kind", "retry_after"),))] >= 1
    assert got[("portero_audit_write_seconds_count", ())] >= 1


def test_the_registry_is_private() -> None:
    from prometheus_client import REGISTRY as GLOBAL

    names = {f.name for f in GLOBAL.collect()}
    assert not any(n.startswith("portero_") for n in names)


def test_telegram_error_kinds() -> None:
    from portero.telegram.api import TelegramRetryAfter, TelegramUnauthorized, _counted

    state = metrics.StateCollector(upstreams=list, sessions=lambda: 0, approvals_pending=lambda: 0)
    k1 = ("portero_telegram_api_errors_total", (("kind", "unauthorized"),))
    k2 = ("portero_telegram_api_errors_total", (("kind", "retry_after"),))
    before = scrape(state)
    _counted(TelegramUnauthorized("x"))
    _counted(TelegramRetryAfter("x", 1.0))
    got = scrape(state)
    assert got[k1] == before.get(k1, 0.0) + 1
    assert got[k2] == before.get(k2, 0.0) + 1


def test_guard_metrics_token() -> None:
    guard = Guard(make_config(f'metrics_token = "{METRICS_TOKEN}"').server)
    assert guard.metrics_ok(f"Bearer {TOKEN}")
    assert guard.metrics_ok(f"Bearer {METRICS_TOKEN}")
    assert not guard.token_ok(f"Bearer {METRICS_TOKEN}")  # it opens /metrics only
    assert not guard.metrics_ok(None)
    assert not guard.metrics_ok("Bearer ")
    assert not guard.metrics_ok(f"Basic {METRICS_TOKEN}")
    plain = Guard(make_config().server)
    assert plain.metrics_ok(f"Bearer {TOKEN}")
    assert not plain.metrics_ok("Bearer ")
    assert not plain.metrics_ok(None)


def test_metrics_token_is_validated_and_hidden() -> None:
    with pytest.raises(ConfigError, match="server.metrics_token: too short"):
        make_config('metrics_token = "short"')
    config = make_config(f'metrics_token = "{METRICS_TOKEN}"')
    assert METRICS_TOKEN not in repr(config)
    assert config.server.metrics_token == METRICS_TOKEN


async def test_get_metrics_over_asgi(nursery: trio.Nursery) -> None:
    gw = await Gateway.start(nursery, f'metrics_token = "{METRICS_TOKEN}"')
    await gw.initialize()
    resp = await gw.client.request("GET", "/metrics")
    assert resp.status == 200, resp.text
    assert resp.header("content-type") == metrics.CONTENT_TYPE
    got = samples(resp.body.decode())
    assert got[("portero_sessions", ())] == 1.0
    assert got[("portero_approvals_pending", ())] == 0.0
    resp = await gw.client.request("GET", "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    assert resp.status == 200
    for auth in (None, "Bearer wrong-token-0123456789", ""):
        resp = await gw.client.request("GET", "/metrics", headers={"authorization": auth})
        assert resp.status == 401
        assert resp.header("www-authenticate") == 'Bearer realm="portero"'
    # The metrics token is no token for the MCP endpoint.
    resp = await gw.client.request(
        "POST", "/mcp", headers={"authorization": f"Bearer {METRICS_TOKEN}"}, body=b"{}"
    )
    assert resp.status == 401
    resp = await gw.client.request("GET", "/metrics", headers={"host": "evil.example"})
    assert resp.status == 403
