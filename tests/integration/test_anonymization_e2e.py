"""Anonymization through the real gateway: the client only ever sees the fake side, the child only
the real side, and the audit log keeps what the client sent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .harness import TOKEN, GatewayProcess, McpHttpClient, child_toml, server_toml, text_of

REPLACEMENTS = """
[[replacements]]
fake = "John Doe"
real = "${REAL_NAME}"

[[replacements]]
fake = "john@example.com"
real = "jane.realname@corp.example"

[[replacements]]
fake = "Project Phoenix"
real = "SecretCorp"
bidirectional = false

[[replacements]]
fake = "acme"
real = "Initech"
case_sensitive = false

[[replacements]]
fake = "Zoë Roe"
real = "José Müller"

[[replacements]]
fake = "api-key-fake"
real = "SecretKey123"
bidirectional = false
"""
REAL_NAME = "Jane Realname"
PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture
def gw(tmp_path: Path):
    record = tmp_path / "calls.jsonl"
    cfg = (
        server_toml(tmp_path)
        + REPLACEMENTS
        + child_toml("t", "--record", str(record), "--describe", f"Maintained by {REAL_NAME} at SecretCorp.")
    )
    g = GatewayProcess(tmp_path, cfg, env={"REAL_NAME": REAL_NAME})
    g.wait_ready()
    g.record = record  # type: ignore[attr-defined]
    yield g
    g.stop()


def child_saw(g: GatewayProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in g.record.read_text().splitlines()]  # type: ignore[attr-defined]


def test_both_directions(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    res = c.call("t__echo", {"text": "Mail John Doe <john@example.com> about ACME"})
    # The child saw only the real side ...
    assert (
        child_saw(gw)[-1]["arguments"]["text"]
        == f"Mail {REAL_NAME} <jane.realname@corp.example> about Initech"
    )
    # ... and the client only the fake side (case-insensitive rules write the configured value).
    assert text_of(res) == "Mail John Doe <john@example.com> about acme"


def test_one_way_rule_redacts_responses(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    res = c.call("t__echo", {"text": "status of Project Phoenix"})
    assert child_saw(gw)[-1]["arguments"]["text"] == "status of SecretCorp"
    assert text_of(res) == "status of [REDACTED]"


def test_descriptions_keys_and_prompts(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    tools = c.request("tools/list")["result"]["tools"]
    echo = next(t for t in tools if t["name"] == "t__echo")
    assert echo["description"].endswith("Maintained by John Doe at [REDACTED].")
    assert REAL_NAME not in json.dumps(tools) and "SecretCorp" not in json.dumps(tools)
    # Object keys are rewritten too (the child echoes the argument keys it received).
    c.call("t__echo", {"text": "x", "John Doe": 1})
    assert REAL_NAME in child_saw(gw)[-1]["arguments"]
    got = c.request("prompts/get", {"name": "t__greet", "arguments": {"who": "John Doe"}})["result"]
    assert got["messages"][0]["content"]["text"] == "Hello, John Doe! (t)"


def test_binary_blobs_untouched(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    read = c.request("resources/read", {"uri": "test://static/pixel"})["result"]
    assert read["contents"][0]["blob"] == "iVBORw0KGgo="


def test_audit_keeps_the_fake_side(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    c.call("t__echo", {"text": "for John Doe"})
    out = subprocess.run(
        [sys.executable, "-m", "portero", "audit", "--config", str(gw.config_path), "--json"],
        capture_output=True,
        text=True,
        env={"REAL_NAME": REAL_NAME, "PATH": "/usr/bin:/bin"},
        check=True,
    ).stdout
    records = [json.loads(line) for line in out.splitlines()]
    assert records[-1]["tool"] == "t/echo"
    assert records[-1]["arguments"] == {"text": "for John Doe"}
    assert REAL_NAME not in out


async def test_sampling_request_is_anonymized_both_ways(gw: GatewayProcess) -> None:
    from mcp import types
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    seen: list[str] = []

    async def sampling(ctx: Any, params: Any) -> Any:
        prompt = params.messages[0].content.text
        seen.append(prompt)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=f"dear {prompt}"), model="fake"
        )

    http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
    async with (
        streamable_http_client(gw.url + "/mcp", http_client=http) as (read, write),
        ClientSession(read, write, sampling_callback=sampling) as session,
    ):
        await session.initialize()
        res = await session.call_tool("t__sample", {"prompt": "John Doe"})
    # The client saw the fake name in the child's request; the child got the real one back.
    assert seen == ["John Doe"]
    assert child_saw(gw)[-1]["arguments"] == {"prompt": REAL_NAME}
    assert "".join(c.text for c in res.content) == "sampled: dear John Doe"


def test_sighup_reloads_rules(gw: GatewayProcess) -> None:
    import signal

    c = McpHttpClient(gw.url)
    text = gw.config_path.read_text()
    gw.config_path.write_text(text.replace('fake = "John Doe"', 'fake = "Richard Roe"'))
    gw.proc.send_signal(signal.SIGHUP)
    gw.wait_log("reloaded")
    res = c.call("t__echo", {"text": "John Doe / Richard Roe"})
    assert child_saw(gw)[-1]["arguments"]["text"] == f"John Doe / {REAL_NAME}"
    assert text_of(res) == "John Doe / Richard Roe"
    # A broken config is refused and changes nothing.
    gw.config_path.write_text(text.replace("[server]", "[server]\nbogus_key = 1"))
    gw.proc.send_signal(signal.SIGHUP)
    gw.wait_log("reload refused")
    assert text_of(c.call("t__echo", {"text": "Richard Roe"})) == "Richard Roe"
    assert child_saw(gw)[-1]["arguments"]["text"] == REAL_NAME


def test_resources_uris_and_notifications(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    # A resource URI the client writes with the fake name reaches the child with the real one,
    # and the contents (and echoed URI) come back fake.
    read = c.request("resources/read", {"uri": "test://item/John Doe"})["result"]
    sent = [r for r in child_saw(gw) if r.get("method") == "resources/read"][-1]
    assert sent["params"]["uri"] == f"test://item/{REAL_NAME}"
    assert read["contents"][0] == {
        "uri": "test://item/John Doe",
        "mimeType": "text/plain",
        "text": "item John Doe",
    }
    # Notifications from the child: a log message written with the real name arrives fake.
    resp, before = c.request_raw("tools/call", {"name": "t__log", "arguments": {"message": "hello John Doe"}})
    assert child_saw(gw)[-1]["arguments"]["message"] == f"hello {REAL_NAME}"
    logs = [m["params"]["data"] for m in before if m.get("method") == "notifications/message"]
    assert logs == ["hello John Doe"]
    # Prompt arguments go real, and the completion request too.
    c.request("prompts/get", {"name": "t__greet", "arguments": {"who": "John Doe"}})
    assert [r for r in child_saw(gw) if r.get("method") == "prompts/get"][-1]["params"]["arguments"] == {
        "who": REAL_NAME
    }
    comp = c.request(
        "completion/complete",
        {"ref": {"type": "ref/prompt", "name": "t__greet"}, "argument": {"name": "who", "value": "John Doe"}},
    )["result"]
    assert comp["completion"]["values"] == ["John Doe-one", "John Doe-two"]
    assert [r for r in child_saw(gw) if r.get("method") == "completion/complete"][-1]["params"]["argument"][
        "value"
    ] == REAL_NAME


def test_json_text_with_escaped_real_values(gw: GatewayProcess) -> None:
    # The child answers with json.dumps(..., ensure_ascii=True) text: "Jos\u00e9 M\u00fcller" once, and
    # "Jos\\u00e9 M\\u00fcller" in JSON nested in it. Neither spelling may reach the client.
    c = McpHttpClient(gw.url)
    res = c.call("t__leak_json", {"text": "Zoë Roe and John Doe"})
    assert child_saw(gw)[-1]["arguments"]["text"] == f"José Müller and {REAL_NAME}"
    text = text_of(res)
    body = json.loads(text)
    assert body["name"] == "Zoë Roe and John Doe"
    assert json.loads(body["nested"]) == {"name": "Zoë Roe and John Doe"}
    assert text.isascii()  # the fake is written escaped, as the child wrote the real
    assert "Zo\\u00eb Roe" in text and "Zo\\\\u00eb Roe" in text  # once, and twice in the nested JSON
    assert "jos" not in text.lower() and "ller" not in text and REAL_NAME not in text


def test_escaped_fake_values_reach_the_child_real(gw: GatewayProcess) -> None:
    # The other way: JSON text the client writes with escapes carries the real value to the child, escaped.
    c = McpHttpClient(gw.url)
    sent = json.dumps({"who": "Zoë Roe"})
    assert "Zo\\u00eb" in sent
    res = c.call("t__echo", {"text": sent})
    assert json.loads(child_saw(gw)[-1]["arguments"]["text"]) == {"who": "José Müller"}
    assert json.loads(text_of(res)) == {"who": "Zoë Roe"}


def test_data_key_beside_uri_is_anonymized_unless_base64(gw: GatewayProcess) -> None:
    c = McpHttpClient(gw.url)
    res = c.call("t__leak_data", {"text": "John Doe"})
    assert child_saw(gw)[-1]["arguments"]["text"] == REAL_NAME
    structured = res["structuredContent"]
    assert structured["owner"] == {"uri": "crm://owner/1", "data": "John Doe"}
    assert structured["typed"] == {"mimeType": "text/plain", "data": "John Doe", "blob": "John Doe"}
    # A real base64 payload beside it comes through byte for byte.
    assert structured["picture"]["data"] == PIXEL_PNG
    assert REAL_NAME not in json.dumps(res)
    # A value that is valid base64 itself (12 characters) is still no payload: it is rewritten too.
    res = c.call("t__leak_data", {"text": "api-key-fake"})
    assert child_saw(gw)[-1]["arguments"]["text"] == "SecretKey123"
    assert res["structuredContent"]["owner"]["data"] == "[REDACTED]"
    assert "SecretKey123" not in json.dumps(res)
