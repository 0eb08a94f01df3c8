"""The audit record of a tools/call through the router: written before the server is asked, completed in
the same row after, and no call without it (fail closed). Real Router, real Store on a file in tmp_path,
fake MCP servers on memory streams (:mod:`tests.unit.fakes`); a second ``sqlite3`` connection holding the
write lock stands in for another process locking the database.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from portero.config import parse_config
from portero.core import jsonrpc
from portero.gateway.router import AUDIT_UNAVAILABLE, Router
from portero.gateway.sessions import RequestContext, Sessions
from portero.store import INTERRUPTED_ERROR, Store

from .fakes import FakeServer, Handler, Message, attach_fake_server, echo_call
from .test_audit_store import HANG, Ticker, WriteLock, rows

BUDGET = 0.3  # the store's audit budget in these tests

CONFIG = f"""
[server]
bearer_token = "{"t" * 32}"

[policies]
default = "allow"

[policies.rules]
"files/delete" = "deny"

[[replacements]]
fake = "Alice Example"
real = "Jane Realname"

[[mcp]]
name = "files"
command = "never-started"
"""

TOOLS: list[Message] = [
    {"name": "read", "description": "Read a file", "inputSchema": {"type": "object"}},
    {"name": "delete", "description": "Delete a file", "inputSchema": {"type": "object"}},
    {"name": "fail", "description": "Always fails", "inputSchema": {"type": "object"}},
]


@attrs.define
class Gateway:
    router: Router
    store: Store
    server: FakeServer
    path: Path
    sessions: Sessions
    ids: int = 0

    async def call(self, name: str, arguments: Message | None = None) -> dict[str, Any]:
        self.ids += 1
        params: Message = {"name": name, "arguments": arguments or {}}
        session = self.sessions.new()
        assert session is not None
        with trio.fail_after(10):
            resp = await self.router.handle(
                jsonrpc.request(self.ids, "tools/call", params), RequestContext(session=session)
            )
        assert resp is not None and "result" in resp, resp
        result: dict[str, Any] = resp["result"]
        return result

    def tool_calls(self) -> list[Message]:
        return [m["params"] for m in self.server.requests("tools/call")]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(str(tmp_path / "gateway.db"), audit_budget=BUDGET)
    yield store
    await store.aclose()


@pytest.fixture
async def gw(nursery: trio.Nursery, store: Store, tmp_path: Path) -> Gateway:
    config = parse_config(CONFIG, path="/tmp/x.toml", env={})
    sessions = Sessions(idle_timeout=3600)
    router = Router(config, {}, sessions=sessions, store=store)

    async def fail(server: FakeServer, params: Message) -> Message:
        return {"result": {"content": [{"type": "text", "text": "no such file"}], "isError": True}}

    server = await attach_fake_server(
        nursery,
        router.upstreams["files"],
        router.on_upstream_message,
        tools=TOOLS,
        handlers={"tools/call": _dispatching({"fail": fail})},
    )
    router.rebuild_catalog()
    with trio.fail_after(1):
        await router.settled()
    return Gateway(router, store, server, tmp_path / "gateway.db", sessions)


def _dispatching(special: dict[str, Handler]) -> Handler:
    """A tools/call handler: ``special[tool name]`` for those tools, the echo for the others."""

    async def handler(server: FakeServer, params: Message) -> Message:
        return await special.get(str(params.get("name")), echo_call)(server, params)

    return handler


def text_of(result: dict[str, Any]) -> str:
    return "".join(c["text"] for c in result["content"])


async def test_the_record_is_written_before_the_server_is_asked(gw: Gateway) -> None:
    seen_by_the_server: list[list[dict[str, Any]]] = []

    async def read(server: FakeServer, params: Message) -> Message:
        seen_by_the_server.append(rows(gw.path))  # what is on disk while the call runs
        return {"result": {"content": [{"type": "text", "text": "contents"}]}}

    gw.server.handlers["tools/call"] = _dispatching({"read": read})
    result = await gw.call("files__read", {"path": "/home/Alice Example/x"})
    assert text_of(result) == "contents" and not result.get("isError")
    [[pending]] = seen_by_the_server
    assert (pending["tool"], pending["decision"], pending["source"], pending["outcome"]) == (
        "files/read",
        "allow",
        "default",
        "pending",
    )
    assert json.loads(pending["arguments"]) == {"path": "/home/Alice Example/x"}  # the fake side
    # The server got the real side, and the same row got the outcome after.
    assert gw.tool_calls()[0]["arguments"] == {"path": "/home/Jane Realname/x"}
    [row] = rows(gw.path)
    assert row["id"] == pending["id"]
    assert (row["outcome"], row["error"], row["ts"]) == ("ok", None, pending["ts"])
    assert row["duration_ms"] > 0


async def test_every_call_leaves_exactly_one_row_with_its_outcome(gw: Gateway) -> None:
    calls = [("files__read", "ok"), ("files__fail", "error"), ("files__delete", "refused")] * 10
    results: list[dict[str, Any]] = []

    async def one(name: str) -> None:
        results.append(await gw.call(name, {"n": name}))

    async with trio.open_nursery() as nursery:
        for name, _ in calls:
            nursery.start_soon(one, name)
    assert len(results) == len(calls)
    got = sorted((r["tool"], r["outcome"], r["error"]) for r in rows(gw.path))
    assert got == sorted(
        [("files/read", "ok", None)] * 10
        + [("files/fail", "error", "no such file")] * 10
        + [("files/delete", "refused", "Call to files/delete denied by rule 'files/delete'.")] * 10
    )
    assert len(gw.tool_calls()) == 20  # the denied ones never reached the server


async def test_a_locked_audit_log_refuses_the_call_and_runs_nothing(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    ticker = Ticker()
    lock = WriteLock(gw.path)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker.run)
            start = time.perf_counter()
            with caplog.at_level(logging.ERROR, logger="portero.router"):
                result = await gw.call("files__read", {"path": "/x"})
            took = time.perf_counter() - start
            nursery.cancel_scope.cancel()
    finally:
        lock.release()
    assert result["isError"] is True
    assert text_of(result) == AUDIT_UNAVAILABLE
    assert BUDGET * 0.8 <= took < 5.0
    assert ticker.max_gap < HANG, f"the event loop was blocked for {ticker.max_gap:.3f} s"
    await trio.testing.wait_all_tasks_blocked()
    assert gw.tool_calls() == []  # nothing ran
    assert rows(gw.path) == []
    assert any(AUDIT_UNAVAILABLE in r.getMessage() and "files/read" in r.getMessage() for r in caplog.records)

    # The lock is gone: calls run and are recorded again.
    result = await gw.call("files__read", {"path": "/y"})
    assert not result.get("isError")
    assert [(r["tool"], r["outcome"]) for r in rows(gw.path)] == [("files/read", "ok")]


async def test_a_closed_store_refuses_the_call(gw: Gateway) -> None:
    await gw.store.aclose()
    result = await gw.call("files__read", {"path": "/x"})
    assert result["isError"] is True and text_of(result) == AUDIT_UNAVAILABLE
    await trio.testing.wait_all_tasks_blocked()
    assert gw.tool_calls() == []


async def test_a_failed_outcome_write_leaves_the_row_pending_then_interrupted(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    locks: list[WriteLock] = []

    async def read(server: FakeServer, params: Message) -> Message:
        locks.append(WriteLock(gw.path))  # someone locks the database while the call runs
        return {"result": {"content": [{"type": "text", "text": "contents"}]}}

    gw.server.handlers["tools/call"] = _dispatching({"read": read})
    try:
        with caplog.at_level(logging.ERROR, logger="portero.router"):
            result = await gw.call("files__read", {"path": "/x"})
    finally:
        for lock in locks:
            lock.release()
    # The call ran: its answer is the client's, though its outcome could not be written.
    assert text_of(result) == "contents" and not result.get("isError")
    [row] = rows(gw.path)
    assert row["outcome"] == "pending"
    assert any("stays pending" in r.getMessage() for r in caplog.records)

    await gw.store.aclose()
    reopened = await Store.open(str(gw.path))
    [row] = rows(gw.path)
    assert (row["outcome"], row["error"]) == ("interrupted", INTERRUPTED_ERROR)
    await reopened.aclose()


async def test_a_call_cancelled_while_running_completes_its_own_row(gw: Gateway) -> None:
    started = trio.Event()

    async def slow(server: FakeServer, params: Message) -> Message:
        started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    gw.server.handlers["tools/call"] = _dispatching({"read": slow})
    with trio.move_on_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gw.call, "files__read", {"path": "/x"})
            await started.wait()
            assert [r["outcome"] for r in rows(gw.path)] == ["pending"]
            nursery.cancel_scope.cancel()
    [row] = rows(gw.path)
    assert (row["outcome"], row["error"]) == ("error", "cancelled before it finished")
