"""The official MCP Python SDK as the client, through the real gateway, to real children:
our stdio test server and the published `@modelcontextprotocol/server-everything`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from .harness import ROOT, TOKEN, GatewayProcess, child_toml, server_toml

mcp = pytest.importorskip("mcp")
from mcp import Client  # noqa: E402
from mcp.client.session import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

EVERYTHING = ROOT / "tests" / "node" / "node_modules" / ".bin" / "mcp-server-everything"
needs_node = pytest.mark.skipif(
    not EVERYTHING.exists() or shutil.which("node") is None,
    reason="run `npm install --prefix tests/node` first (.ci/run does)",
)


def everything_toml() -> str:
    return f'[[mcp]]\nname = "everything"\ncommand = "{EVERYTHING}"\n'


def _text(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


@pytest.fixture
def gw(tmp_path: Path):
    cfg = server_toml(tmp_path) + child_toml("test") + (everything_toml() if EVERYTHING.exists() else "")
    g = GatewayProcess(tmp_path, cfg)
    g.wait_ready(timeout=60)
    yield g
    g.stop()


def transport(url: str):
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
    return streamable_http_client(url + "/mcp", http_client=http)


@needs_node
@pytest.mark.parametrize(("mode", "era"), [("auto", "2026-07-28"), ("legacy", "2025-11-25")])
async def test_sdk_client_lists_and_calls_two_children(gw: GatewayProcess, mode: str, era: str) -> None:
    # `Client` in auto mode probes `server/discover` and stays in the 2026-07-28 era (it would fall
    # back to initialize if the probe failed); in legacy mode it uses the initialize handshake.
    async with Client(transport(gw.url), mode=mode) as client:
        assert client.protocol_version == era
        assert client.server_info is not None and client.server_info.name == "portero"
        tools = (await client.list_tools()).tools
        names = {t.name for t in tools}
        assert {"test__echo", "test__add", "everything__echo"} <= names
        res = await client.call_tool("everything__echo", {"message": "hi from the SDK"})
        assert not res.is_error and "hi from the SDK" in _text(res)
        res = await client.call_tool("test__add", {"a": 1.5, "b": 2})
        assert _text(res) == "3.5"
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert "test__greet" in prompts


@needs_node
async def test_sdk_session_progress_through_the_gateway(gw: GatewayProcess) -> None:
    updates: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append(progress)

    async with transport(gw.url) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        res = await session.call_tool("test__progress", {"steps": 4}, progress_callback=on_progress)
        assert _text(res) == "progress done (4)"
    assert updates == [1, 2, 3, 4]


async def test_sdk_sampling_elicitation_roots(tmp_path: Path) -> None:
    g = GatewayProcess(tmp_path, server_toml(tmp_path) + child_toml("test"))
    try:
        g.wait_ready()
        from mcp import types

        async def sampling(ctx: Any, params: Any) -> Any:
            prompt = params.messages[0].content.text
            return types.CreateMessageResult(
                role="assistant", content=types.TextContent(type="text", text=f"echo:{prompt}"), model="fake"
            )

        async def elicitation(ctx: Any, params: Any) -> Any:
            return types.ElicitResult(action="accept", content={"answer": "forty-two"})

        async def roots(ctx: Any) -> Any:
            return types.ListRootsResult(roots=[types.Root(uri="file:///workspace", name="ws")])

        async with (
            transport(g.url) as (read, write),
            ClientSession(
                read,
                write,
                sampling_callback=sampling,
                elicitation_callback=elicitation,
                list_roots_callback=roots,
            ) as session,
        ):
            await session.initialize()
            res = await session.call_tool("test__sample", {"prompt": "hello"})
            assert _text(res) == "sampled: echo:hello"
            res = await session.call_tool("test__elicit", {"message": "what?"})
            assert json.loads(_text(res).split(": ", 1)[1]) == {
                "action": "accept",
                "content": {"answer": "forty-two"},
            }
            res = await session.call_tool("test__roots", {})
            assert "file:///workspace" in _text(res)
    finally:
        g.stop()


async def test_two_sessions_progress_never_crosses(tmp_path: Path) -> None:
    g = GatewayProcess(tmp_path, server_toml(tmp_path) + child_toml("test"))
    try:
        g.wait_ready()
        seen: dict[str, list[float]] = {"a": [], "b": []}

        async def run(key: str, steps: int) -> None:
            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                seen[key].append(total or 0)

            async with transport(g.url) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                for _ in range(3):
                    res = await session.call_tool(
                        "test__progress", {"steps": steps}, progress_callback=on_progress
                    )
                    assert _text(res) == f"progress done ({steps})"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "a", 3)
            nursery.start_soon(run, "b", 5)
        assert seen["a"] == [3] * 9
        assert seen["b"] == [5] * 15
    finally:
        g.stop()
