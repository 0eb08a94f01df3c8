"""Tracing is an extra: off (None, nothing created) without an endpoint or without OpenTelemetry."""

from __future__ import annotations

import sys

import pytest

from portero import tracing
from portero.config.model import ServerSection
from portero.config.validate import _check_server


def test_no_endpoint_no_tracing() -> None:
    assert tracing.traces_url("", {}) == ""
    assert tracing.setup("", {}) is None
    assert tracing.setup("", {"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}) is None


def test_endpoint_from_config_or_environment() -> None:
    assert tracing.traces_url("http://c:4318", {}) == "http://c:4318/v1/traces"
    assert tracing.traces_url("http://c:4318/v1/traces", {}) == "http://c:4318/v1/traces"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://e:4318/"}
    assert tracing.traces_url("", env) == "http://e:4318/v1/traces"
    assert tracing.traces_url("http://c:4318", env) == "http://c:4318/v1/traces"  # config first
    exact = {**env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x"}
    assert tracing.traces_url("", exact) == "http://t/x"


def test_without_opentelemetry_nothing_is_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # import fails
    assert tracing.setup("http://127.0.0.1:4318", {}) is None


def test_router_without_tracing_creates_no_span(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider

    made: list[str] = []
    real = TracerProvider.__init__

    def counting(self: TracerProvider, *args: object, **kwargs: object) -> None:
        made.append("provider")
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(TracerProvider, "__init__", counting)
    assert tracing.setup("", {}) is None
    assert made == []


@pytest.mark.parametrize(
    ("value", "ok"),
    [("", True), ("http://127.0.0.1:4318", True), ("https://otel.example.com/", True),
     ("127.0.0.1:4318", False), ("ftp://x", False), ("http://", False), ("http://h:port", False)],
)  # fmt: skip
def test_otlp_endpoint_is_validated(value: str, ok: bool) -> None:
    problems: list[str] = []
    _check_server(ServerSection(bearer_token="x" * 32, otlp_endpoint=value), problems)
    assert (problems == []) is ok, problems
