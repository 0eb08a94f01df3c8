"""The gateway's Prometheus metrics, served as text on ``GET /metrics`` (see ``front/asgi.py``).

Two kinds, both on private registries (never ``prometheus_client``'s global one, so that nothing a
library registers there leaks out, and tests can build as many apps as they like):

- **Events**, counted where they happen: calls by tool, decision and outcome (the router, where a
  call's audit record is written), approval decisions and their wait, Telegram API errors by kind,
  the audit write's duration. Module-level, on :data:`REGISTRY`; the hooks below are cheap.
- **State**, read at scrape time by :class:`StateCollector` through the callables it is given
  (upstreams up and restarted, sessions, approvals pending), so no hook has to keep it in step.

Imports nothing of Portero: the layers above hand the collector plain callables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "StateCollector",
    "approval_decided",
    "audit_write_seconds",
    "call_finished",
    "render",
    "scrape_registry",
    "telegram_api_error",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REGISTRY = CollectorRegistry(auto_describe=True)

_CALLS = Counter(
    "portero_calls",
    "Tool calls, prompt gets and resource reads by tool, decision, outcome and client: one per audit record.",
    ["tool", "decision", "outcome", "client"],
    registry=REGISTRY,
)
_CALL_DURATION = Histogram(
    "portero_call_duration_seconds",
    "Time from a call's arrival to its outcome (approval wait included).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
_APPROVALS_DECIDED = Counter(
    "portero_approvals_decided",
    "Approvals decided, by decision (approved, rejected, expired).",
    ["decision"],
    registry=REGISTRY,
)
_APPROVAL_WAIT = Histogram(
    "portero_approval_wait_seconds",
    "Time from an approval's request to its decision.",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)
_TELEGRAM_ERRORS = Counter(
    "portero_telegram_api_errors",
    "Telegram Bot API calls that failed, by kind of error.",
    ["kind"],
    registry=REGISTRY,
)
_AUDIT_WRITE = Histogram(
    "portero_audit_write_seconds",
    "Time to commit one audit write (group commit and lock waits included).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
    registry=REGISTRY,
)


def call_finished(tool: str, decision: str, outcome: str, seconds: float | None, client: str = "") -> None:
    """One call's final outcome; ``seconds`` None for a call refused before it was timed. ``client``:
    the configured client that made it (few values: the [[client]] names and "default")."""
    _CALLS.labels(tool, decision, outcome, client).inc()
    if seconds is not None:
        _CALL_DURATION.observe(max(0.0, seconds))


def approval_decided(decision: str, seconds: float) -> None:
    _APPROVALS_DECIDED.labels(decision).inc()
    _APPROVAL_WAIT.observe(max(0.0, seconds))


def telegram_api_error(kind: str) -> None:
    _TELEGRAM_ERRORS.labels(kind).inc()


def audit_write_seconds(seconds: float) -> None:
    _AUDIT_WRITE.observe(max(0.0, seconds))


class StateCollector(Collector):
    """The gauges read at scrape time.

    ``upstreams()`` returns each enabled server's status (``name``, ``state``, ``restarts``: the
    router's ``upstream_status()``); ``sessions()`` the number of client sessions;
    ``approvals_pending()`` the number of approvals waiting for the admin.
    """

    def __init__(
        self,
        *,
        upstreams: Callable[[], Iterable[Mapping[str, Any]]],
        sessions: Callable[[], int],
        approvals_pending: Callable[[], int],
    ) -> None:
        self._upstreams = upstreams
        self._sessions = sessions
        self._approvals_pending = approvals_pending

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("portero_upstream_up", "1 if the server is ready, else 0.", labels=["server"])
        restarts = CounterMetricFamily(
            "portero_upstream_restarts", "Times the server was restarted.", labels=["server"]
        )
        for st in self._upstreams():
            name = str(st.get("name", ""))
            up.add_metric([name], 1.0 if st.get("state") == "ready" else 0.0)
            restarts.add_metric([name], float(st.get("restarts", 0)))
        yield up
        yield restarts
        yield GaugeMetricFamily("portero_sessions", "Client sessions open.", value=float(self._sessions()))
        yield GaugeMetricFamily(
            "portero_approvals_pending",
            "Approvals waiting for the admin's decision.",
            value=float(self._approvals_pending()),
        )


class _Events(Collector):
    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def scrape_registry(state: StateCollector) -> CollectorRegistry:
    """A registry holding the event metrics and ``state``: what one app serves on ``/metrics``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Events())
    registry.register(state)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``registry``."""
    return generate_latest(registry)
