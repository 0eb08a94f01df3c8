"""Optional OpenTelemetry traces: one span per client request, sent over OTLP/HTTP.

An extra (``pip install 'portero[otel]'``): without the OpenTelemetry packages, or without an
endpoint (``[server] otlp_endpoint``, else the standard ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_ENDPOINT``), :func:`setup` returns None and the router creates no span at all.

Spans follow the OpenTelemetry MCP semantic conventions: named ``"<method> <target>"`` (``"tools/call
github/create_issue"``), with ``mcp.method.name``, ``gen_ai.tool.name``, ``mcp.session.id``,
``jsonrpc.request.id`` and, for an error answer, ``error.type``. A client's ``params._meta.traceparent``
(W3C trace context) is the parent; the span's own ``traceparent`` goes into the ``_meta`` sent to
the server, so a traced server continues the same trace.

Imports nothing of Portero; the OpenTelemetry modules only when tracing is on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from . import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["TRACE_KEYS", "Tracing", "setup", "traces_url"]

log = logging.getLogger("portero.tracing")

TRACES_PATH = "/v1/traces"
TRACE_KEYS = ("traceparent", "tracestate")  # the W3C trace context keys carried in _meta

# Hands the answer (a JSON-RPC response, or None) to the span for error.type; returns it unchanged.
Finish = Callable[[dict[str, Any] | None], dict[str, Any] | None]


def traces_url(configured: str, env: Mapping[str, str]) -> str:
    """Where spans go: ``otlp_endpoint``, else the OTEL_* environment; "" when tracing is off.

    ``otlp_endpoint`` and ``OTEL_EXPORTER_OTLP_ENDPOINT`` are a collector's base URL (``/v1/traces``
    is added, as the OTLP/HTTP spec says); ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is used as is."""
    base = configured.strip()
    if not base:
        exact = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        if exact:
            return exact
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not base:
        return ""
    base = base.rstrip("/")
    return base if base.endswith(TRACES_PATH) else base + TRACES_PATH


def setup(configured: str, env: Mapping[str, str]) -> Tracing | None:
    """A :class:`Tracing` sending to the endpoint, or None (no endpoint, or no OpenTelemetry)."""
    url = traces_url(configured, env)
    if not url:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        log.warning(
            "traces: an OTLP endpoint is set but OpenTelemetry is not installed "
            "(pip install 'portero[otel]'); no traces are sent"
        )
        return None
    # Our own provider, not the global one: nothing else in the process sends spans through it.
    # It flushes and stops at interpreter exit (shutdown_on_exit).
    provider = TracerProvider(resource=Resource.create({"service.name": "portero"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    log.info("traces: sending spans to %s", url)
    return Tracing(provider, TraceContextTextMapPropagator())


class Tracing:
    """Spans for client requests, on a provider that exports them in the background."""

    def __init__(self, provider: TracerProvider, propagator: TraceContextTextMapPropagator) -> None:
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("portero", __version__)
        self._propagator = propagator

    @contextmanager
    def request(
        self,
        method: str,
        params: Mapping[str, Any],
        request_id: Any,
        session_id: str | None,
        tool: str | None,
    ) -> Iterator[Finish]:
        """The span of one client request, current inside the block; call the yielded function
        with the answer (a JSON-RPC response or None) to mark an error."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        attributes: dict[str, str] = {"mcp.method.name": method, "jsonrpc.request.id": str(request_id)}
        if session_id is not None:
            attributes["mcp.session.id"] = session_id
        if tool is not None:
            attributes["gen_ai.tool.name"] = tool
            attributes["gen_ai.operation.name"] = "execute_tool"
        meta = params.get("_meta")
        carrier = (
            {k: v for k, v in meta.items() if k in TRACE_KEYS and isinstance(v, str)}
            if isinstance(meta, Mapping)
            else {}
        )
        parent = self._propagator.extract(carrier) if carrier else None
        name = f"{method} {tool}" if tool else method
        with self.tracer.start_as_current_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=attributes
        ) as span:

            def finish(response: dict[str, Any] | None) -> dict[str, Any] | None:
                if response is not None:
                    error = response.get("error")
                    result = response.get("result")
                    if isinstance(error, Mapping):
                        span.set_attribute("error.type", str(error.get("code")))
                        span.set_status(Status(StatusCode.ERROR, str(error.get("message", ""))[:200]))
                    elif isinstance(result, Mapping) and result.get("isError") is True:
                        span.set_attribute("error.type", "tool_error")
                        span.set_status(Status(StatusCode.ERROR))
                return response

            yield finish

    def inject(self, meta: dict[str, Any]) -> None:
        """Put the current span's ``traceparent`` (and ``tracestate``) into an outgoing ``_meta``."""
        for key in TRACE_KEYS:
            meta.pop(key, None)  # the client's own is the parent of ours, not the server's
        self._propagator.inject(meta)

    def shutdown(self) -> None:
        """Export what is left and stop (blocks: run it in a thread)."""
        self.provider.shutdown()
