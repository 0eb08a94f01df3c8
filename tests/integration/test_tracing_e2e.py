"""Traces end to end: a real `portero serve` sends its spans to a local OTLP/HTTP receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)

from .harness import GatewayProcess, McpHttpClient, child_toml, server_toml, text_of  # noqa: E402

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP collector that keeps every POST /v1/traces body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path == "/v1/traces":
                    bodies.append(body)
                    self.send_response(200)
                else:
                    self.send_response(404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[Any]:
        found = []
        for body in list(self.bodies):
            req = ExportTraceServiceRequest()
            req.ParseFromString(body)
            for rs in req.resource_spans:
                service = {a.key: a.value.string_value for a in rs.resource.attributes}["service.name"]
                for ss in rs.scope_spans:
                    found += [(service, span) for span in ss.spans]
        return found

    def wait_span(self, name: str, timeout: float = 15.0) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for service, span in self.spans():
                if span.name == name:
                    return service, span
            time.sleep(0.05)
        raise AssertionError(f"no span {name!r}: {[s.name for _, s in self.spans()]}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _attrs(span: Any) -> dict[str, str]:
    return {a.key: a.value.string_value for a in span.attributes}


def test_tools_call_span_continues_the_clients_trace(tmp_path: Path, receiver: Receiver) -> None:
    record = tmp_path / "calls.jsonl"
    cfg = server_toml(tmp_path, extra=f'otlp_endpoint = "{receiver.url}"') + child_toml(
        "test", "--record", str(record)
    )
    gw = GatewayProcess(tmp_path, cfg, env={"OTEL_BSP_SCHEDULE_DELAY": "50"})
    try:
        gw.wait_ready()
        c = McpHttpClient(gw.url)
        traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
        resp = c.request(
            "tools/call",
            {"name": "test__echo", "arguments": {"text": "hi"}, "_meta": {"traceparent": traceparent}},
        )
        assert text_of(resp["result"]) == "hi"
        missing = c.request("tools/call", {"name": "test__nope", "arguments": {}})
        assert "error" in missing

        service, span = receiver.wait_span("tools/call test/echo")
        assert service == "portero"
        assert span.trace_id.hex() == CLIENT_TRACE
        assert span.parent_span_id.hex() == CLIENT_SPAN
        attrs = _attrs(span)
        assert attrs["mcp.method.name"] == "tools/call"
        assert attrs["gen_ai.tool.name"] == "test/echo"
        assert attrs["mcp.session.id"] == c.session_id
        assert attrs["jsonrpc.request.id"] == str(resp["id"])
        assert "error.type" not in attrs

        # The child got the gateway's span as its parent: same trace, the span's own id.
        meta = json.loads(record.read_text().splitlines()[-1])["meta"]
        version, trace_id, parent_id, _flags = meta["traceparent"].split("-")
        assert (version, trace_id, parent_id) == ("00", CLIENT_TRACE, span.span_id.hex())

        # An error answer carries error.type (the JSON-RPC error code); no client traceparent: a new trace.
        _, failed = receiver.wait_span("tools/call test__nope")
        assert _attrs(failed)["error.type"] == str(missing["error"]["code"])
        assert failed.trace_id.hex() != CLIENT_TRACE
    finally:
        gw.stop()
