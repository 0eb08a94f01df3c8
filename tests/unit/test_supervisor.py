"""The supervisor of one upstream server, with a fake transport: a Peer over memory streams and a
scripted fake MCP server at the other end. Back-off runs on Trio's autojump clock (the supervisor
is given ``trio.current_time`` as its clock), so minutes of restarts take microseconds."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from portero.config import McpServer
from portero.core import jsonrpc
from portero.upstream.peer import MessageHandler, Peer
from portero.upstream.supervisor import (
    BACKOFF_CAP,
    BACKOFF_START,
    HEALTHY_RESET,
    PAGE_LIMIT,
    PROTOCOL_VERSION,
    Upstream,
)

TOOLS_ONLY: dict[str, Any] = {"tools": {}}
EVERYTHING: dict[str, Any] = {"tools": {"listChanged": True}, "prompts": {}, "resources": {}}


def tool(name: str) -> dict[str, Any]:
    return {"name": name, "inputSchema": {"type": "object"}}


@attrs.define
class FakeServer:
    """One run of a fake MCP server, answering over newline-delimited JSON.

    ``pages`` maps a list method to its pages (followed with ``nextCursor``); ``init_error`` makes
    ``initialize`` fail; the server exits (EOF) ``live_for`` seconds after it started, with
    ``exit_code`` as the transport's return code; ``first_words`` are raw bytes written once it is
    initialized."""

    capabilities: dict[str, Any] = attrs.Factory(lambda: dict(TOOLS_ONLY))
    pages: dict[str, list[list[dict[str, Any]]]] = attrs.Factory(dict)
    init_error: str | None = None
    live_for: float = math.inf
    exit_code: int | None = None
    first_words: bytes = b""
    endless_tools: bool = False
    modern: bool = False  # answers server/discover: speaks the stateless era (2026-07-28)
    silent_on_discover: bool = False  # never answers server/discover (a server that ignores it)

    def answer(self, method: str, params: dict[str, Any]) -> Any:
        """The result for a request; raises RpcError for an error reply."""
        if method == "server/discover":
            if not self.modern:
                raise jsonrpc.RpcError(jsonrpc.METHOD_NOT_FOUND, "no server/discover")
            return {
                "supportedVersions": ["2026-07-28"],
                "capabilities": self.capabilities,
                "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "fake", "version": "2.0"}},
            }
        if method == "subscriptions/listen":
            raise jsonrpc.RpcError(jsonrpc.METHOD_NOT_FOUND, "no listen")
        if method == "initialize":
            if self.init_error:
                raise jsonrpc.RpcError(jsonrpc.INTERNAL_ERROR, self.init_error)
            return {
                "protocolVersion": params["protocolVersion"],
                "capabilities": self.capabilities,
                "serverInfo": {"name": "fake", "version": "1.0"},
            }
        key = {
            "tools/list": "tools",
            "prompts/list": "prompts",
            "resources/list": "resources",
            "resources/templates/list": "resourceTemplates",
        }.get(method)
        if method == "tools/list" and self.endless_tools:
            n = int(params.get("cursor") or 0)
            return {"tools": [tool(f"t{n}")], "nextCursor": str(n + 1)}
        if key is None or method not in self.pages:
            raise jsonrpc.RpcError(jsonrpc.METHOD_NOT_FOUND, f"no {method}")
        pages = self.pages[method]
        index = int(params.get("cursor") or 0)
        result: dict[str, Any] = {key: pages[index]}
        if index + 1 < len(pages):
            result["nextCursor"] = str(index + 1)
        return result


class FakeTransport:
    """Opens a Peer over memory streams to the next scripted server (the last one repeats). A script
    that is an exception is raised by ``open``, as a program that cannot be started would."""

    def __init__(self, *scripts: FakeServer | Exception) -> None:
        self.scripts = scripts
        self.returncode: int | None = None
        self.opened: list[float] = []  # when each run began (virtual time)
        self.received: list[list[dict[str, Any]]] = []  # what each run's server read
        self._new_open = trio.Event()

    async def wait_opens(self, count: int) -> None:
        with trio.fail_after(3600):  # virtual time
            while len(self.opened) < count:
                await self._new_open.wait()

    @asynccontextmanager
    async def open(self, name: str, handler: MessageHandler, max_message_bytes: int) -> AsyncIterator[Peer]:
        assert self.scripts, "this transport must never be opened"
        self.opened.append(trio.current_time())
        self._new_open.set()
        self._new_open = trio.Event()
        script = self.scripts[min(len(self.opened), len(self.scripts)) - 1]
        self.returncode = None
        if isinstance(script, Exception):
            raise script
        ours, theirs = trio.testing.memory_stream_pair()
        peer = Peer(name, ours, ours, max_message_bytes=max_message_bytes, handler=handler)
        received: list[dict[str, Any]] = []
        self.received.append(received)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.run)
            nursery.start_soon(self._serve, script, theirs, received)
            try:
                yield peer
            finally:
                nursery.cancel_scope.cancel()
                peer.fail(peer.close_reason or f"server {name} stopped")
        self.returncode = script.exit_code  # as StdioTransport: known once the process is stopped

    async def _serve(self, script: FakeServer, stream: trio.StapledStream[Any, Any], seen: list[Any]) -> None:
        buffer = jsonrpc.LineBuffer(1 << 20)
        with trio.move_on_after(script.live_for):
            while data := await stream.receive_some(65536):
                for line in buffer.feed(data):
                    msg = jsonrpc.decode(line)
                    seen.append(msg)
                    if msg.get("method") == "notifications/initialized" and script.first_words:
                        await stream.send_all(script.first_words)
                    if "id" not in msg or (
                        msg.get("method") == "server/discover" and script.silent_on_discover
                    ):
                        continue
                    try:
                        reply = jsonrpc.result_response(
                            msg["id"], script.answer(msg["method"], msg.get("params") or {})
                        )
                    except jsonrpc.RpcError as exc:
                        reply = jsonrpc.error_response(msg["id"], exc.code, exc.message)
                    await stream.send_all(jsonrpc.encode(reply))
        await stream.send_stream.aclose()  # the server exits: EOF


async def no_handler(peer: Peer, msg: dict[str, Any]) -> dict[str, Any] | None:
    await trio.lowlevel.checkpoint()
    return None


@attrs.define
class Change:
    at: float
    state: str
    error: str
    restarts: int


class Harness:
    """An Upstream over a FakeTransport; each catalog change is recorded and can be awaited."""

    def __init__(
        self, transport: FakeTransport, cfg: McpServer | None = None, *, max_message_bytes: int = 1 << 20
    ) -> None:
        self.transport = transport
        self.changes: list[Change] = []
        self._changed = trio.Event()
        self.upstream = Upstream(
            cfg or McpServer(name="x", command="unused"),
            transport,
            max_message_bytes=max_message_bytes,
            handler=no_handler,
            on_catalog_change=self._record,
            client_info={"name": "portero-tests", "version": "0"},
            clock=trio.current_time,
        )

    def _record(self) -> None:
        up = self.upstream
        self.changes.append(Change(trio.current_time(), up.state, up.last_error, up.restarts))
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changes(self, count: int) -> list[Change]:
        with trio.fail_after(3600):  # virtual time
            while len(self.changes) < count:
                await self._changed.wait()
        return self.changes

    async def wait_opens(self, count: int) -> None:
        await self.transport.wait_opens(count)


@asynccontextmanager
async def running(harness: Harness) -> AsyncIterator[Upstream]:
    with trio.fail_after(24 * 3600):  # virtual time: a hang is a failure, not a stuck test run
        async with trio.open_nursery() as nursery:
            nursery.start_soon(harness.upstream.run)
            try:
                yield harness.upstream
            finally:
                nursery.cancel_scope.cancel()


def deltas(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in zip(times, times[1:], strict=False)]


# ------------------------------------------------------------------------------------------ tests


async def test_initialize_then_ready_with_every_page_listed(autojump_clock: trio.testing.MockClock) -> None:
    server = FakeServer(
        capabilities=EVERYTHING,
        pages={
            "tools/list": [[tool("a"), tool("b")], [tool("c")], [tool("d")]],
            "prompts/list": [[{"name": "p"}]],
            "resources/list": [[{"uri": "file:///r", "name": "r"}], [{"uri": "file:///s", "name": "s"}]],
            # no resources/templates/list: optional, an error there leaves it empty
        },
    )
    h = Harness(FakeTransport(server))
    async with running(h) as up:
        await up.ready.wait()
        assert up.state == "ready"
        assert up.enabled
        assert up.peer is not None and not up.peer.closed
        assert up.last_error == ""
        assert [t["name"] for t in up.listing.tools] == ["a", "b", "c", "d"]
        assert up.listing.prompts == [{"name": "p"}]
        assert [r["name"] for r in up.listing.resources] == ["r", "s"]
        assert up.listing.templates == []
        assert up.capabilities == EVERYTHING
        assert up.server_info == {"name": "fake", "version": "1.0"}
        assert up.status() == {"name": "x", "state": "ready", "tools": 4, "restarts": 0}
        assert [(c.state, c.error) for c in h.changes] == [("ready", "")]

        seen = h.transport.received[0]
        init = seen[0]
        assert init["method"] == "initialize"
        assert init["params"]["protocolVersion"] == PROTOCOL_VERSION
        assert init["params"]["clientInfo"] == {"name": "portero-tests", "version": "0"}
        assert "sampling" in init["params"]["capabilities"]
        assert seen[1] == {"jsonrpc": "2.0", "method": "notifications/initialized"}
        tool_lists = [m for m in seen if m.get("method") == "tools/list"]
        assert [m.get("params") for m in tool_lists] == [None, {"cursor": "1"}, {"cursor": "2"}]


async def test_lists_of_capabilities_the_server_lacks_are_not_asked_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    h = Harness(FakeTransport(FakeServer(pages={"tools/list": [[tool("a")]]})))
    async with running(h) as up:
        await up.ready.wait()
        assert up.state == "ready"
        assert [m.get("method") for m in h.transport.received[0]] == [
            "initialize",
            "notifications/initialized",
            "tools/list",
        ]
        assert up.listing.prompts == [] and up.listing.resources == []


async def test_a_server_that_always_has_another_page_is_cut_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    h = Harness(FakeTransport(FakeServer(endless_tools=True)))
    async with running(h) as up:
        await up.ready.wait()
        assert up.state == "ready"
        assert len(up.listing.tools) == PAGE_LIMIT
        assert sum(m.get("method") == "tools/list" for m in h.transport.received[0]) == PAGE_LIMIT


async def test_refresh_reloads_only_what_is_asked(autojump_clock: trio.testing.MockClock) -> None:
    server = FakeServer(
        capabilities=EVERYTHING,
        pages={"tools/list": [[tool("a")]], "prompts/list": [[{"name": "p"}]], "resources/list": [[]]},
    )
    h = Harness(FakeTransport(server))
    async with running(h) as up:
        await up.ready.wait()
        server.pages["tools/list"] = [[tool("a"), tool("b")]]
        server.pages["prompts/list"] = [[]]
        await up.refresh(what="tools")
        assert [t["name"] for t in up.listing.tools] == ["a", "b"]
        assert up.listing.prompts == [{"name": "p"}]  # not reloaded
        methods = [m.get("method") for m in h.transport.received[0]]
        assert methods.count("tools/list") == 2
        assert methods.count("prompts/list") == 1


async def test_an_initialize_error_is_recorded_and_retried_after_back_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    h = Harness(
        FakeTransport(FakeServer(init_error="bad token"), FakeServer(pages={"tools/list": [[tool("a")]]}))
    )
    async with running(h) as up:
        await up.ready.wait()  # set when it gives up for now, too
        assert up.state == "restarting"
        assert up.last_error == "initialize failed: bad token"
        assert up.status() == {
            "name": "x",
            "state": "restarting",
            "tools": 0,
            "restarts": 0,
            "error": "initialize failed: bad token",
        }
        changes = await h.wait_changes(2)
        assert [(c.state, c.error, c.restarts) for c in changes] == [
            ("restarting", "initialize failed: bad token", 0),
            ("ready", "", 1),
        ]
        assert deltas(h.transport.opened) == [BACKOFF_START]
        assert changes[1].at - changes[0].at == pytest.approx(BACKOFF_START)
        assert up.state == "ready" and up.restarts == 1
        assert [t["name"] for t in up.listing.tools] == ["a"]


async def test_a_program_that_cannot_start_is_retried(autojump_clock: trio.testing.MockClock) -> None:
    h = Harness(
        FakeTransport(
            FileNotFoundError(2, "No such file or directory"), FakeServer(pages={"tools/list": [[]]})
        )
    )
    async with running(h) as up:
        changes = await h.wait_changes(2)
        assert changes[0].state == "restarting"
        assert changes[0].error.startswith("cannot start:")
        assert "No such file" in changes[0].error
        assert changes[1].state == "ready"
        assert up.restarts == 1


async def test_peer_death_restarts_with_doubling_back_off(autojump_clock: trio.testing.MockClock) -> None:
    # Each run is ready at once and dies 10 s later.
    h = Harness(FakeTransport(FakeServer(pages={"tools/list": [[tool("a")]]}, live_for=10)))
    async with running(h) as up:
        changes = await h.wait_changes(8)
        assert [c.state for c in changes] == ["ready", "restarting"] * 4
        for c in changes[1::2]:
            assert c.error == "server x exited"
        # Stopped at 10 s after each start, started again after 0.5, 1, 2 s of back-off.
        assert deltas(h.transport.opened[:4]) == [
            10 + BACKOFF_START,
            10 + 2 * BACKOFF_START,
            10 + 4 * BACKOFF_START,
        ]
        assert [c.restarts for c in changes[::2]] == [0, 1, 2, 3]
        await h.wait_opens(5)
        assert up.restarts == 4


async def test_a_remote_server_says_so_in_its_status(autojump_clock: trio.testing.MockClock) -> None:
    cfg = McpServer(name="x", url="https://mcp.example.com/mcp")
    h = Harness(FakeTransport(OSError("cannot reach https://mcp.example.com"), FakeServer()), cfg)
    async with running(h) as up:
        await up.ready.wait()
        assert up.status() == {
            "name": "x",
            "state": "restarting",
            "tools": 0,
            "restarts": 0,
            "error": "cannot reach https://mcp.example.com",
            "remote": True,  # /status and portero tools show it as "failed: <error>"
        }


async def test_state_while_a_dead_server_waits_for_its_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    h = Harness(FakeTransport(FakeServer(pages={"tools/list": [[tool("a")]]}, live_for=10)))
    async with running(h) as up:
        await h.wait_changes(2)
        assert up.state == "restarting"
        assert up.peer is None
        assert up.status() == {
            "name": "x",
            "state": "restarting",
            "tools": 0,
            "restarts": 0,
            "error": "server x exited",
        }
        await trio.sleep(BACKOFF_START / 2)
        assert len(h.transport.opened) == 1
        await trio.sleep(BACKOFF_START)
        assert len(h.transport.opened) == 2
        assert up.state == "ready"


async def test_back_off_doubles_up_to_its_cap(autojump_clock: trio.testing.MockClock) -> None:
    # A server that exits before it says anything: initialize fails at once, every time.
    h = Harness(FakeTransport(FakeServer(live_for=0)))
    async with running(h) as up:
        await h.wait_opens(10)
        assert deltas(h.transport.opened) == [0.5, 1, 2, 4, 8, 16, BACKOFF_CAP, BACKOFF_CAP, BACKOFF_CAP]
        assert up.restarts == 9
        assert up.state in ("starting", "restarting")
        assert up.last_error.startswith("initialize failed:")


@pytest.mark.parametrize(
    ("healthy_for", "next_back_off"), [(HEALTHY_RESET + 1, BACKOFF_START), (HEALTHY_RESET - 1, 4.0)]
)
async def test_back_off_resets_after_a_healthy_run(
    autojump_clock: trio.testing.MockClock, healthy_for: float, next_back_off: float
) -> None:
    dies = FakeServer(live_for=0)
    lives = FakeServer(pages={"tools/list": [[]]}, live_for=healthy_for)
    h = Harness(FakeTransport(dies, dies, dies, lives, dies))
    async with running(h):
        await h.wait_opens(6)
        assert deltas(h.transport.opened) == [0.5, 1, 2, healthy_for + next_back_off, 2 * next_back_off]


async def test_exit_status_is_added_to_the_reason(autojump_clock: trio.testing.MockClock) -> None:
    # The server floods a line over the cap and then exits with status 2.
    h = Harness(
        FakeTransport(
            FakeServer(pages={"tools/list": [[]]}, first_words=b"x" * 5000, live_for=1, exit_code=2),
            FakeServer(pages={"tools/list": [[]]}, live_for=1, exit_code=3),
        ),
        max_message_bytes=1000,
    )
    async with running(h):
        changes = await h.wait_changes(3)
        # The cap is hit while the initialize exchange is still going on (the tools/list).
        assert [c.state for c in changes] == ["restarting", "ready", "restarting"]
        assert changes[0].error.startswith(
            "initialize failed: server x sent a message of more than 1000 bytes"
        )
        assert changes[0].error.endswith("(exit status 2)")
        # "server x exited" already says it exited: no status appended then.
        assert changes[2].error == "server x exited"


async def test_catalog_change_on_ready_and_on_stop(autojump_clock: trio.testing.MockClock) -> None:
    h = Harness(FakeTransport(FakeServer(pages={"tools/list": [[tool("a")]]}, live_for=5)))
    async with running(h):
        start = trio.current_time()
        changes = await h.wait_changes(3)
        assert [(c.at - start, c.state) for c in changes] == [
            (0, "ready"),
            (5, "restarting"),
            (5 + BACKOFF_START, "ready"),
        ]


@pytest.mark.parametrize(
    ("cfg", "state", "error"),
    [
        (McpServer(name="x", command="unused", enabled=False), "disabled", None),
        (
            McpServer(name="x", command="unused", skip_reason="GITHUB_TOKEN is not set"),
            "skipped",
            "GITHUB_TOKEN is not set",
        ),
        (
            # Disabled wins; the reason it would be skipped is still shown.
            McpServer(name="x", command="unused", enabled=False, skip_reason="GITHUB_TOKEN is not set"),
            "disabled",
            "GITHUB_TOKEN is not set",
        ),
    ],
)
async def test_disabled_and_skipped_servers_never_open_the_transport(
    autojump_clock: trio.testing.MockClock, cfg: McpServer, state: str, error: str | None
) -> None:
    transport = FakeTransport()  # asserts if opened
    h = Harness(transport, cfg)
    up = h.upstream
    assert up.state == state
    assert not up.enabled
    with trio.fail_after(1):
        await up.run()  # returns at once
    assert up.ready.is_set()
    assert transport.opened == []
    assert h.changes == []
    assert up.state == state
    expected: dict[str, Any] = {"name": "x", "state": state, "tools": 0, "restarts": 0}
    if error is not None:
        expected["error"] = error
    assert up.status() == expected


# ------------------------------------------------------------------ the stateless era (protocol = "auto")
ENVELOPE_KEYS = {"io.modelcontextprotocol/protocolVersion", "io.modelcontextprotocol/clientCapabilities"}


def auto(name: str = "x") -> McpServer:
    return McpServer(name=name, command="unused", protocol="auto")


async def test_a_stateless_server_is_used_without_initialize(autojump_clock: trio.testing.MockClock) -> None:
    server = FakeServer(modern=True, pages={"tools/list": [[tool("a")], [tool("b")]]})
    h = Harness(FakeTransport(server), auto())
    async with running(h) as up:
        await up.ready.wait()
        assert up.state == "ready" and up.modern
        assert [t["name"] for t in up.listing.tools] == ["a", "b"]
        assert up.server_info == {"name": "fake", "version": "2.0"}
        seen = h.transport.received[0]
        assert [m.get("method") for m in seen][:1] == ["server/discover"]
        assert not any(m.get("method") in ("initialize", "notifications/initialized") for m in seen)
        for m in seen:  # every request carries the envelope
            assert ENVELOPE_KEYS <= set(m["params"]["_meta"]), m
        assert up.with_envelope({"name": "t"}, {"sampling": {}}, "info") == {
            "name": "t",
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {"sampling": {}},
                "io.modelcontextprotocol/clientInfo": {"name": "portero-tests", "version": "0"},
                "io.modelcontextprotocol/logLevel": "info",
            },
        }


async def test_a_handshake_server_gets_initialize_after_the_probe(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pages = {"tools/list": [[tool("a")]]}
    for server in (FakeServer(pages=pages), FakeServer(pages=pages, silent_on_discover=True)):
        h = Harness(FakeTransport(server), auto())
        async with running(h) as up:
            await up.ready.wait()
            assert up.state == "ready" and not up.modern
            methods = [m.get("method") for m in h.transport.received[0]]
            assert methods[0] == "server/discover" and "initialize" in methods
            assert up.with_envelope({"a": 1}) == {"a": 1}


async def test_the_default_never_probes(autojump_clock: trio.testing.MockClock) -> None:
    h = Harness(FakeTransport(FakeServer(modern=True)))
    async with running(h) as up:
        await up.ready.wait()
        assert not up.modern
        assert h.transport.received[0][0]["method"] == "initialize"
