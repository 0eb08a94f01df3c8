"""Clients and servers of different eras through the real gateway, with the official SDK.

- A server that speaks the stateless era (`protocol = "auto"`; our conformance fixture speaks both)
  answers with `input_required`: a 2026-era client gets it as is and answers in a second call; a
  handshake-era client is asked mid-call by the gateway instead, as a server of its era would.
- A handshake-era server asking a 2026-era client something mid-call (sampling) cannot: the call
  ends at once with an error that says why.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import ROOT, TOKEN, GatewayProcess, child_toml, server_toml

mcp = pytest.importorskip("mcp")
from mcp import Client, types  # noqa: E402
from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

FIXTURE = ROOT / "tests" / "conformance" / "fixture_server.py"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp: Path = tmp_path_factory.mktemp("eras")
    modern_child = (
        f'[[mcp]]\nname = "dual"\ncommand = "{sys.executable}"\nargs = ["{FIXTURE}"]\nprotocol = "auto"\n'
    )
    g = GatewayProcess(tmp, server_toml(tmp) + modern_child + child_toml("old"))
    g.wait_ready(timeout=60)
    yield g
    g.stop()


def transport(url: str) -> Any:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
    return streamable_http_client(url + "/mcp", http_client=http)


def _text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def answer_name(ctx: Any, params: Any) -> Any:
    return types.ElicitResult(action="accept", content={"name": "Ada"})


def test_the_gateway_speaks_each_era_with_its_server(gw: GatewayProcess) -> None:
    log = gw.log_text()
    assert (
        "server dual ready" in log
        and "MCP 2026-07-28" in log.split("server dual ready", 1)[1].splitlines()[0]
    )
    assert "initialize handshake" in log.split("server old ready", 1)[1].splitlines()[0]


async def test_a_2026_client_gets_input_required_and_completes(gw: GatewayProcess) -> None:
    async with Client(transport(gw.url), elicitation_callback=answer_name) as client:
        assert client.protocol_version == "2026-07-28"
        # The SDK answers the server's inputRequests itself and calls again with requestState.
        res = await client.call_tool("dual__test_input_required_result_elicitation", {})
        assert _text(res) == "Hello, Ada!"
        res = await client.call_tool("dual__test_input_required_result_request_state", {})
        assert "state-ok" in _text(res)  # the opaque state came back to the server byte for byte


async def test_a_handshake_client_is_asked_mid_call_for_a_2026_server(gw: GatewayProcess) -> None:
    async def sampling(ctx: Any, params: Any) -> Any:
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="Paris"), model="fake"
        )

    async def roots(ctx: Any) -> Any:
        return types.ListRootsResult(roots=[types.Root(uri="file:///work", name="work")])

    async with (
        transport(gw.url) as (read, write),
        ClientSession(
            read,
            write,
            elicitation_callback=answer_name,
            sampling_callback=sampling,
            list_roots_callback=roots,
        ) as session,
    ):
        await session.initialize()
        res = await session.call_tool("dual__test_input_required_result_elicitation", {})
        assert _text(res) == "Hello, Ada!"
        res = await session.call_tool("dual__test_input_required_result_multiple_inputs", {})
        assert _text(res) == "All three inputs received"
        res = await session.call_tool("dual__test_input_required_result_multi_round", {})
        assert _text(res) == "Both steps done"
        res = await session.call_tool("dual__test_input_required_result_sampling", {})
        assert _text(res) == "The answer: Paris"


async def test_a_handshake_client_without_the_capability_is_told_why(gw: GatewayProcess) -> None:
    async with transport(gw.url) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        res = await session.call_tool("dual__test_input_required_result_elicitation", {})
        assert res.is_error and "does not support" in _text(res), _text(res)


async def test_a_2026_client_cannot_be_asked_mid_call_by_a_handshake_server(gw: GatewayProcess) -> None:
    async with Client(transport(gw.url), sampling_callback=None) as client:
        assert client.protocol_version == "2026-07-28"
        with pytest.raises(Exception) as info:
            await client.call_tool("old__sample", {"prompt": "hello"})
        assert "in the middle of a call" in str(info.value)
        # The gateway and the server are fine afterwards.
        res = await client.call_tool("old__echo", {"text": "still here"})
        assert "still here" in _text(res)
