"""The router against fake MCP servers on memory streams (real Peers, real Upstreams, real store).

Each test builds a Router from a parsed config, then connects every configured server to a
scripted :class:`~tests.unit.fakes.FakeServer` instead of starting its process. Anonymization is
checked on both sides: the servers must see the real values, the client and the audit log only the
fake ones.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from portero.config import parse_config
from portero.core import jsonrpc
from portero.gateway.router import CANONICAL_META, Router
from portero.gateway.sessions import LATEST_PROTOCOL, ClientSession, RequestContext, Sessions
from portero.store import Store

from .fakes import Collector, FakeServer, Handler, Message, attach_fake_server

REAL = "Jane Realname"
FAKE = "Alice Example"
REAL_HOST = "db.corp.internal"
FAKE_HOST = "db.example.test"

CONFIG = f"""
[server]
bearer_token = "{"t" * 32}"

[policies]
default = "allow"

[policies.rules]
"files/delete" = "deny"
"files/publish" = "require-approval"

[[replacements]]
fake = "{FAKE}"
real = "{REAL}"

[[replacements]]
fake = "{FAKE_HOST}"
real = "{REAL_HOST}"

[[mcp]]
name = "files"
command = "never-started"

[[mcp]]
name = "notes"
command = "never-started"
"""

SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}}
TOOLS: dict[str, list[Message]] = {
    "files": [
        {"name": "read", "description": f"Read a file of {REAL} on {REAL_HOST}", "inputSchema": SCHEMA},
        {"name": "delete", "description": "Delete a file", "inputSchema": SCHEMA},
        {"name": "publish", "description": "Publish a file", "inputSchema": SCHEMA},
        {"name": "slow", "description": "Takes its time", "inputSchema": {"type": "object"}},
        {"name": "sample", "description": "Asks the client's model", "inputSchema": {"type": "object"}},
    ],
    "notes": [
        {
            "name": "write",
            "description": "Write a note",
            "inputSchema": {"type": "object"},
            "_meta": {"x.test/kept": True},
        }
    ],
}


@attrs.define
class Gateway:
    router: Router
    sessions: Sessions
    store: Store
    servers: dict[str, FakeServer]
    ids: int = 0

    def session(self, capabilities: Message | None = None) -> ClientSession:
        s = self.sessions.new()
        assert s is not None
        s.capabilities = capabilities or {}
        return s

    async def call(
        self, ctx: RequestContext, name: Any, arguments: Any = None, **extra: Any
    ) -> dict[str, Any] | None:
        self.ids += 1
        params: dict[str, Any] = {"name": name, **extra}
        if arguments is not None:
            params["arguments"] = arguments
        with trio.fail_after(5):
            return await self.router.handle(jsonrpc.request(self.ids, "tools/call", params), ctx)

    async def audit(self) -> list[dict[str, Any]]:
        return await self.store.recent_audit(100)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(str(tmp_path / "gateway.db"))
    yield store
    await store.aclose()


@pytest.fixture
async def gw(nursery: trio.Nursery, store: Store) -> Gateway:
    config = parse_config(CONFIG, path="/tmp/x.toml", env={})
    sessions = Sessions(idle_timeout=3600)
    router = Router(config, {}, sessions=sessions, store=store)
    servers = {}
    for name, up in router.upstreams.items():
        servers[name] = await attach_fake_server(nursery, up, router.on_upstream_message, tools=TOOLS[name])
    router.rebuild_catalog()
    with trio.fail_after(1):
        await router.settled()
    return Gateway(router, sessions, store, servers)


def text_of(response: dict[str, Any] | None) -> str:
    assert response is not None and "result" in response, response
    return "".join(c["text"] for c in response["result"]["content"])


def tool_calls(server: FakeServer) -> list[Message]:
    return [m["params"] for m in server.requests("tools/call")]


# ------------------------------------------------------------------------------------ initialize


async def test_initialize_answers_and_fills_the_session(gw: Gateway) -> None:
    s = gw.session()
    params = {
        "protocolVersion": "2025-06-18",
        "capabilities": {"sampling": {}, "roots": {"listChanged": True}},
        "clientInfo": {"name": "test-client", "version": "1.0"},
    }
    resp = await gw.router.handle(jsonrpc.request(1, "initialize", params), RequestContext(session=s))
    assert resp is not None
    assert resp["id"] == 1
    result = resp["result"]
    assert result["protocolVersion"] == "2025-06-18"
    assert result["serverInfo"]["name"] == "portero"
    assert {"tools", "prompts", "resources", "logging"} <= set(result["capabilities"])
    assert "<server>__<tool>" in result["instructions"]
    assert s.protocol_version == "2025-06-18"
    assert s.client_info == {"name": "test-client", "version": "1.0"}
    assert s.wants("sampling") and s.wants("roots") and not s.wants("elicitation")
    assert s.inflight == {}

    # A version the gateway does not speak gets the latest; junk capabilities are dropped.
    other = gw.session()
    params = {"protocolVersion": "1999-01-01", "capabilities": ["sampling"], "clientInfo": "me"}
    resp = await gw.router.handle(jsonrpc.request(2, "initialize", params), RequestContext(session=other))
    assert resp is not None and resp["result"]["protocolVersion"] == LATEST_PROTOCOL
    assert other.protocol_version == LATEST_PROTOCOL
    assert other.capabilities == {} and other.client_info == {}


# ------------------------------------------------------------------------------------ tools/list


async def test_tools_list_prefixes_hides_denied_and_anonymizes(gw: Gateway) -> None:
    resp = await gw.router.handle(jsonrpc.request(1, "tools/list"), RequestContext(session=gw.session()))
    assert resp is not None
    tools = {t["name"]: t for t in resp["result"]["tools"]}
    assert set(tools) == {"files__read", "files__publish", "files__slow", "files__sample", "notes__write"}
    assert "files__delete" not in tools  # denied: not even listed
    assert tools["files__read"]["description"] == f"Read a file of {FAKE} on {FAKE_HOST}"
    assert tools["files__read"]["inputSchema"] == SCHEMA
    assert REAL not in json.dumps(resp) and REAL_HOST not in json.dumps(resp)


async def test_tools_list_items_carry_their_canonical_name_in_meta(gw: Gateway) -> None:
    resp = await gw.router.handle(jsonrpc.request(1, "tools/list"), RequestContext(session=gw.session()))
    assert resp is not None
    tools = {t["name"]: t for t in resp["result"]["tools"]}
    assert tools["files__read"]["_meta"] == {CANONICAL_META: "files/read"}
    # The server's own _meta stays beside it; the catalog's item is not changed.
    assert tools["notes__write"]["_meta"] == {"x.test/kept": True, CANONICAL_META: "notes/write"}
    assert gw.router.catalog.tools["notes__write"].item["_meta"] == {"x.test/kept": True}


# ------------------------------------------------------------------------------------ tools/call


async def test_allowed_call_sends_real_arguments_and_answers_fake(gw: Gateway) -> None:
    s = gw.session()
    args = {"path": f"/home/{FAKE}/notes.txt", "host": FAKE_HOST}
    resp = await gw.call(RequestContext(session=s), "files__read", args)

    # The server got its own tool name and the real values.
    [sent] = tool_calls(gw.servers["files"])
    assert sent["name"] == "read"
    assert sent["arguments"] == {"path": f"/home/{REAL}/notes.txt", "host": REAL_HOST}
    assert tool_calls(gw.servers["notes"]) == []

    # It echoed them back; the client sees the fake ones only.
    assert json.loads(text_of(resp)) == args
    assert REAL not in json.dumps(resp)
    assert resp is not None and resp["id"] == gw.ids and not resp["result"].get("isError")
    assert s.inflight == {}

    [row] = await gw.audit()
    assert row["tool"] == "files/read"
    assert row["session"] == s.id
    assert (row["decision"], row["source"], row["outcome"]) == ("allow", "default", "ok")
    assert row["arguments"] == args
    assert row["error"] is None


async def test_denied_call_never_reaches_the_server(gw: Gateway) -> None:
    resp = await gw.call(RequestContext(session=gw.session()), "files__delete", {"path": "/x"})
    assert resp is not None and resp["result"]["isError"] is True
    assert "denied" in text_of(resp) and "files/delete" in text_of(resp)
    await trio.testing.wait_all_tasks_blocked()
    assert tool_calls(gw.servers["files"]) == []

    [row] = await gw.audit()
    assert row["tool"] == "files/delete"
    assert (row["decision"], row["source"], row["outcome"]) == ("deny", "rule:files/delete", "refused")
    assert row["arguments"] == {"path": "/x"}


async def test_require_approval_without_a_broker_is_refused(gw: Gateway) -> None:
    resp = await gw.call(RequestContext(session=gw.session()), "files__publish", {"path": f"/{FAKE}"})
    assert resp is not None and resp["result"]["isError"] is True
    assert "no approver" in text_of(resp)
    await trio.testing.wait_all_tasks_blocked()
    assert tool_calls(gw.servers["files"]) == []

    [row] = await gw.audit()
    assert row["tool"] == "files/publish"
    assert (row["decision"], row["source"], row["outcome"]) == ("rejected", "no-approver", "refused")
    assert row["arguments"] == {"path": f"/{FAKE}"}


async def test_unknown_tool_is_an_invalid_params_error_and_audited(gw: Gateway) -> None:
    s = gw.session()
    resp = await gw.call(RequestContext(session=s), "files__nope", {"a": 1})
    assert resp is not None and "result" not in resp
    assert resp["error"]["code"] == jsonrpc.INVALID_PARAMS
    assert "files__nope" in resp["error"]["message"]

    [row] = await gw.audit()
    assert row["tool"] == "files__nope"
    assert (row["decision"], row["source"], row["outcome"]) == ("deny", "invalid", "refused")
    assert row["session"] == s.id
    assert "Unknown tool" in row["error"]


async def test_tool_of_a_server_that_is_down_names_the_server(gw: Gateway) -> None:
    notes = gw.router.upstreams["notes"]
    notes.state, notes.peer = "restarting", None  # what the supervisor does when its process died
    gw.router.rebuild_catalog()

    listed = await gw.router.handle(jsonrpc.request(1, "tools/list"), RequestContext(session=None))
    assert listed is not None
    assert "notes__write" not in {t["name"] for t in listed["result"]["tools"]}

    resp = await gw.call(RequestContext(session=gw.session()), "notes__write", {"text": "hi"})
    assert resp is not None and resp["result"]["isError"] is True
    assert "notes" in text_of(resp) and "not running" in text_of(resp)
    assert tool_calls(gw.servers["notes"]) == []

    [row] = await gw.audit()
    assert row["tool"] == "notes/write"
    assert (row["decision"], row["outcome"]) == ("allow", "error")
    assert "notes" in row["error"]


async def test_server_error_reaches_the_client_anonymized(gw: Gateway) -> None:
    async def failing(server: FakeServer, params: Message) -> Message:
        path = params["arguments"]["path"]
        return {"error": {"code": -32000, "message": f"cannot open {path}", "data": {"path": path}}}

    gw.servers["files"].handlers["tools/call"] = failing
    resp = await gw.call(RequestContext(session=gw.session()), "files__read", {"path": f"/home/{FAKE}"})
    assert resp is not None and "result" not in resp
    assert resp["error"] == {
        "code": -32000,
        "message": f"cannot open /home/{FAKE}",
        "data": {"path": f"/home/{FAKE}"},
    }
    assert REAL not in json.dumps(resp)
    # ...while the server did get the real path.
    [sent] = tool_calls(gw.servers["files"])
    assert sent["arguments"] == {"path": f"/home/{REAL}"}

    [row] = await gw.audit()
    assert (row["decision"], row["outcome"]) == ("allow", "error")
    assert row["error"] == f"cannot open /home/{FAKE}"
    assert REAL not in json.dumps(row)


async def test_progress_token_is_remapped_both_ways(gw: Gateway) -> None:
    seen_tokens: list[Any] = []

    async def with_progress(server: FakeServer, params: Message) -> Message:
        token = params["_meta"]["progressToken"]
        seen_tokens.append(token)
        await server.send(
            jsonrpc.notification(
                "notifications/progress",
                {"progressToken": token, "progress": 1, "total": 2, "message": f"half of {REAL}"},
            )
        )
        return {"result": {"content": [{"type": "text", "text": "done"}]}}

    gw.servers["files"].handlers["tools/call"] = with_progress
    client = Collector()
    meta = {"progressToken": "client-token", "note": FAKE}
    resp = await gw.call(client.context(gw.session()), "files__slow", {}, _meta=meta)
    assert text_of(resp) == "done"

    # The server saw a gateway token (and the rest of _meta on the real side), not the client's.
    [sent] = tool_calls(gw.servers["files"])
    [gw_token] = seen_tokens
    assert gw_token != "client-token"
    assert sent["_meta"] == {"progressToken": gw_token, "note": REAL}

    # The client got its own token back, the message anonymized, before the answer.
    [progress] = client.messages
    assert progress["method"] == "notifications/progress"
    assert progress["params"] == {
        "progressToken": "client-token",
        "progress": 1,
        "total": 2,
        "message": f"half of {FAKE}",
    }
    # The gateway token is released with the call: a late notification goes nowhere.
    assert gw.router.attribution.progress_target(gw_token) is None


async def test_two_sessions_with_the_same_progress_token_see_only_their_own(gw: Gateway) -> None:
    release = trio.Event()

    async def with_progress(server: FakeServer, params: Message) -> Message:
        await release.wait()
        token = params["_meta"]["progressToken"]
        await server.send(
            jsonrpc.notification("notifications/progress", {"progressToken": token, "progress": 1})
        )
        return {"result": {"content": [{"type": "text", "text": params["arguments"]["who"]}]}}

    gw.servers["files"].handlers["tools/call"] = with_progress
    a, b = Collector(), Collector()
    answers: dict[str, str] = {}

    async def call(who: str, client: Collector) -> None:
        resp = await gw.call(
            client.context(gw.session()), "files__slow", {"who": who}, _meta={"progressToken": 1}
        )
        answers[who] = text_of(resp)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "a", a)
        nursery.start_soon(call, "b", b)
        await gw.servers["files"].wait_for(lambda m: len(gw.servers["files"].requests("tools/call")) == 2)
        release.set()
    assert answers == {"a": "a", "b": "b"}
    assert [m["params"]["progressToken"] for m in a.messages] == [1]
    assert [m["params"]["progressToken"] for m in b.messages] == [1]
    tokens = {m["params"]["_meta"]["progressToken"] for m in gw.servers["files"].requests("tools/call")}
    assert len(tokens) == 2


async def test_client_cancellation_cancels_the_server_request(gw: Gateway) -> None:
    async def forever(server: FakeServer, params: Message) -> Message:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    gw.servers["files"].handlers["tools/call"] = forever
    s = gw.session()
    responses: list[dict[str, Any] | None] = []

    async def call() -> None:
        responses.append(
            await gw.router.handle(
                jsonrpc.request("c-1", "tools/call", {"name": "files__slow"}), RequestContext(session=s)
            )
        )

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            sent = await gw.servers["files"].wait_for_method("tools/call")
            assert "c-1" in s.inflight
            cancel = jsonrpc.notification("notifications/cancelled", {"requestId": "c-1", "reason": "user"})
            assert await gw.router.handle(cancel, RequestContext(session=s)) is None
    assert responses == [None]  # a cancelled request gets no response
    assert s.inflight == {}

    notice = await gw.servers["files"].wait_for_method("notifications/cancelled")
    assert notice["params"]["requestId"] == sent["id"]

    [row] = await gw.audit()
    assert row["tool"] == "files/slow"
    assert (row["decision"], row["outcome"]) == ("allow", "error")
    assert row["error"] == "cancelled before it finished"


async def test_cancelling_an_unknown_request_does_nothing(gw: Gateway) -> None:
    s = gw.session()
    other = gw.session()
    resp_holder: list[dict[str, Any] | None] = []
    release = trio.Event()

    async def wait(server: FakeServer, params: Message) -> Message:
        await release.wait()
        return {"result": {"content": [{"type": "text", "text": "ok"}]}}

    gw.servers["files"].handlers["tools/call"] = wait

    async def call() -> None:
        resp_holder.append(await gw.call(RequestContext(session=s), "files__slow", {}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await gw.servers["files"].wait_for_method("tools/call")
        # Another session cancelling the same id, and a cancel for an id not in flight: no effect.
        for ctx, rid in ((RequestContext(session=other), gw.ids), (RequestContext(session=s), 999)):
            note = jsonrpc.notification("notifications/cancelled", {"requestId": rid})
            assert await gw.router.handle(note, ctx) is None
        release.set()
    assert text_of(resp_holder[0]) == "ok"
    assert gw.servers["files"].notifications("notifications/cancelled") == []


# ------------------------------------------------------------------------------- server → client


def sampling_tool(results: list[Message]) -> Handler:
    """A tools/call handler that asks the client's model, keeps the answer and reports it."""

    async def handler(server: FakeServer, params: Message) -> Message:
        answer = await server.request(
            "sampling/createMessage",
            {
                "messages": [{"role": "user", "content": {"type": "text", "text": f"About {REAL}"}}],
                "maxTokens": 10,
            },
        )
        results.append(answer)
        return {"result": {"content": [{"type": "text", "text": json.dumps(answer, sort_keys=True)}]}}

    return handler


async def test_sampling_goes_to_the_session_with_a_request_in_flight(gw: Gateway) -> None:
    answers: list[Message] = []
    gw.servers["files"].handlers["tools/call"] = sampling_tool(answers)
    s = gw.session({"sampling": {}})
    bystander = gw.session({"sampling": {}})
    bystander.open_stream()  # listening, but with nothing in flight on that server
    client = Collector()
    responses: list[dict[str, Any] | None] = []

    async def call() -> None:
        responses.append(await gw.call(client.context(s), "files__sample", {}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        ask = await client.wait_for(lambda m: m.get("method") == "sampling/createMessage")
        assert isinstance(ask["id"], str) and ask["id"] in s.waiting
        assert ask["params"]["messages"][0]["content"]["text"] == f"About {FAKE}"
        reply = {
            "jsonrpc": "2.0",
            "id": ask["id"],
            "result": {"role": "assistant", "content": {"type": "text", "text": f"Hi {FAKE}"}},
        }
        assert await gw.router.handle(reply, RequestContext(session=s)) is None

    # The server got the answer to its own id, on the real side.
    [answer] = answers
    assert answer["id"] == 1000  # FakeServer's first own id, not the gateway's "g…" one
    assert answer["result"] == {"role": "assistant", "content": {"type": "text", "text": f"Hi {REAL}"}}
    # The client sees the fake side of it in the tool result.
    assert json.loads(text_of(responses[0]))["result"]["content"]["text"] == f"Hi {FAKE}"
    assert s.waiting == {}
    assert not any(m.get("method") == "sampling/createMessage" for _, m in bystander.events_after(0))


async def test_sampling_is_refused_when_the_client_did_not_declare_it(gw: Gateway) -> None:
    answers: list[Message] = []
    gw.servers["files"].handlers["tools/call"] = sampling_tool(answers)
    s = gw.session({"roots": {}})
    client = Collector()
    resp = await gw.call(client.context(s), "files__sample", {})
    assert text_of(resp)  # the tool answered, with the error it got
    [answer] = answers
    assert answer["error"]["code"] == jsonrpc.METHOD_NOT_FOUND
    assert "sampling" in answer["error"]["message"]
    assert client.messages == []  # the client was never asked


async def test_ending_the_session_cancels_its_call_and_answers_the_server(gw: Gateway) -> None:
    answers: list[Message] = []
    gw.servers["files"].handlers["tools/call"] = sampling_tool(answers)
    s, other = gw.session({"sampling": {}}), gw.session({"sampling": {}})
    client = Collector()
    responses: list[dict[str, Any] | None] = []

    async def call() -> None:
        responses.append(
            await gw.router.handle(
                jsonrpc.request(1, "tools/call", {"name": "files__sample"}), client.context(s)
            )
        )

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            ask = await client.wait_for(lambda m: m.get("method") == "sampling/createMessage")
            # Another session cannot answer for this one.
            stolen = {"jsonrpc": "2.0", "id": ask["id"], "result": {"content": {"type": "text", "text": "x"}}}
            assert await gw.router.handle(stolen, RequestContext(session=other)) is None
            assert not s.waiting[ask["id"]].event.is_set()
            assert gw.sessions.end(s.id) is True
    assert responses == [None]  # the call was cancelled with its session
    refused = await gw.servers["files"].wait_for(lambda m: m.get("id") == 1000 and "error" in m)
    assert refused["error"]["code"] == jsonrpc.INTERNAL_ERROR
    assert "did not answer" in refused["error"]["message"]
    await gw.servers["files"].wait_for_method("notifications/cancelled")
    [row] = await gw.audit()
    assert (row["tool"], row["outcome"], row["error"]) == (
        "files/sample",
        "error",
        "cancelled before it finished",
    )


def withdrawing_tool(asked: trio.Event) -> Handler:
    """A tools/call handler that asks the client's model, then withdraws the question."""

    async def handler(server: FakeServer, params: Message) -> Message:
        ask = {"messages": [{"role": "user", "content": {"type": "text", "text": "?"}}], "maxTokens": 5}
        await server.send(jsonrpc.request(2000, "sampling/createMessage", ask))
        await asked.wait()
        await server.send(
            jsonrpc.notification("notifications/cancelled", {"requestId": 2000, "reason": f"{REAL} left"})
        )
        return {"result": {"content": [{"type": "text", "text": "withdrawn"}]}}

    return handler


async def withdraw_a_sampling_request(gw: Gateway) -> tuple[ClientSession, Collector, dict[str, Any] | None]:
    asked = trio.Event()
    gw.servers["files"].handlers["tools/call"] = withdrawing_tool(asked)
    s = gw.session({"sampling": {}})
    client = Collector()
    responses: list[dict[str, Any] | None] = []

    async def call() -> None:
        responses.append(await gw.call(client.context(s), "files__sample", {}))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await client.wait_for(lambda m: m.get("method") == "sampling/createMessage")
            asked.set()
        await trio.testing.wait_all_tasks_blocked()
    return s, client, responses[0]


async def test_a_server_withdrawing_its_request_tells_the_client(gw: Gateway) -> None:
    s, client, resp = await withdraw_a_sampling_request(gw)
    assert text_of(resp) == "withdrawn"
    ask, cancelled = client.messages
    assert ask["method"] == "sampling/createMessage" and isinstance(ask["id"], str)
    assert cancelled == {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": ask["id"], "reason": f"{FAKE} left"},
    }
    assert s.waiting == {}


async def test_a_withdrawn_server_request_gets_no_response(gw: Gateway) -> None:
    await withdraw_a_sampling_request(gw)
    answers = [m for m in gw.servers["files"].received if m.get("id") == 2000]
    assert answers == []


async def test_sampling_is_refused_when_two_sessions_are_in_flight(gw: Gateway) -> None:
    answers: list[Message] = []
    release = trio.Event()
    sample = sampling_tool(answers)

    async def dispatch(server: FakeServer, params: Message) -> Message:
        if params["name"] == "slow":
            await release.wait()
            return {"result": {"content": [{"type": "text", "text": "slow done"}]}}
        return await sample(server, params)

    gw.servers["files"].handlers["tools/call"] = dispatch
    a, b = gw.session({"sampling": {}}), gw.session({"sampling": {}})
    ca, cb = Collector(), Collector()
    results: dict[str, dict[str, Any] | None] = {}

    async def call(key: str, ctx: RequestContext, tool: str) -> None:
        results[key] = await gw.call(ctx, tool, {})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "a", ca.context(a), "files__slow")
        await gw.servers["files"].wait_for_method("tools/call")
        nursery.start_soon(call, "b", cb.context(b), "files__sample")
        await gw.servers["files"].wait_for(lambda m: m.get("id") == 1000 and "method" not in m)
        release.set()
    [answer] = answers
    assert answer["error"]["code"] == jsonrpc.METHOD_NOT_FOUND
    assert "several client sessions" in answer["error"]["message"]
    assert ca.messages == [] and cb.messages == []
    assert text_of(results["a"]) == "slow done"


# ------------------------------------------------------------------------------- hostile input

HOSTILE: list[Message] = [
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": {"a": 1}}},
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": [1]}},
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": "nope"},
    {"jsonrpc": "2.0", "method": "notifications/cancelled"},
    {"jsonrpc": "2.0", "id": {"a": 1}, "result": {}},
    {"jsonrpc": "2.0", "id": ["g1"], "error": {"code": 1, "message": "x"}},
    {"jsonrpc": "2.0", "id": "g-unknown", "result": {}},
    {"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"},
    {"jsonrpc": "2.0", "id": True, "method": "ping"},
    {"jsonrpc": "2.0", "id": 1.5, "method": "ping"},
    {"jsonrpc": "1.0", "id": 1, "method": "ping"},
    {"jsonrpc": "2.0", "id": 1, "method": 5},
    {"jsonrpc": "2.0", "id": 1, "method": "no/such/method"},
    {},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": "not an object"},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": [1, 2]},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "files__read", "arguments": "x"}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "files__read", "arguments": [1]}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": 5}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": {"a": 1}, "arguments": {}}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": ["files__read"]}},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}},
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "files__read", "arguments": {}, "_meta": "x"},
    },
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "files__read", "arguments": {}, "_meta": {"progressToken": {"a": 1}}},
    },
    {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": 5, "clientInfo": []}},
    {"jsonrpc": "2.0", "id": 1, "method": "logging/setLevel", "params": {"level": {"a": 1}}},
    {"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": 5}},
    {"jsonrpc": "2.0", "id": 1, "method": "prompts/get", "params": {"name": ["x"]}},
    {"jsonrpc": "2.0", "id": 1, "method": "completion/complete", "params": {"ref": "x"}},
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "completion/complete",
        "params": {"ref": {"type": "ref/prompt", "name": {}}},
    },
]


@pytest.mark.parametrize("msg", HOSTILE, ids=lambda m: json.dumps(m)[:60])
async def test_hostile_messages_never_raise(gw: Gateway, msg: Message) -> None:
    for ctx in (RequestContext(session=gw.session()), RequestContext(session=None)):
        with trio.fail_after(5):
            resp = await gw.router.handle(dict(msg), ctx)
        if resp is None:
            assert jsonrpc.kind(msg) in ("notification", "response")
            continue
        assert resp["jsonrpc"] == "2.0"
        assert ("result" in resp) != ("error" in resp)
        expected_id = msg.get("id") if jsonrpc.valid_id(msg.get("id")) else None
        assert resp["id"] == expected_id
        if "error" in resp:
            assert isinstance(resp["error"]["code"], int) and isinstance(resp["error"]["message"], str)


async def test_every_invalid_tools_call_is_audited_once(gw: Gateway) -> None:
    ctx = RequestContext(session=gw.session())
    bad = [
        {"name": 5},
        {"name": {"a": 1}},
        {"name": "files__read", "arguments": "x"},
        {"name": "files__nope"},
    ]
    for params in bad:
        resp = await gw.router.handle(jsonrpc.request(1, "tools/call", params), ctx)
        assert resp is not None and resp["error"]["code"] == jsonrpc.INVALID_PARAMS
    rows = await gw.audit()
    assert [(r["tool"], r["decision"], r["outcome"], r["error"]) for r in reversed(rows)] == [
        ("5", "deny", "refused", "tools/call needs a tool name"),
        ("{'a': 1}", "deny", "refused", "tools/call needs a tool name"),
        ("files/read", "deny", "refused", "tools/call arguments must be an object"),
        ("files__nope", "deny", "refused", "Unknown tool: files__nope"),
    ]
    await trio.testing.wait_all_tasks_blocked()
    assert tool_calls(gw.servers["files"]) == []


# ----------------------------------------------------------------- tasks of a stateless-era server
async def test_a_servers_task_is_relayed_namespaced_and_bound_to_its_client(gw: Gateway) -> None:
    files = gw.servers["files"]
    gw.router.upstreams["files"].modern = True  # as after server/discover with protocol = "auto"
    task = {"resultType": "task", "taskId": "t-1", "status": "working", "ttlMs": None}

    async def create(server: FakeServer, params: Message) -> Message:
        return {"result": task}

    async def get(server: FakeServer, params: Message) -> Message:
        assert params["taskId"] == "t-1"  # the server sees its own id
        done = {
            **task,
            "status": "completed",
            "result": {"content": [{"type": "text", "text": f"for {REAL}"}]},
        }
        return {"result": done}

    files.handlers["tools/call"] = create
    files.handlers["tasks/get"] = get
    caps = {"extensions": {"io.modelcontextprotocol/tasks": {}}}
    mine = gw.sessions.transient("2026-07-28", caps, {}, None)
    resp = await gw.call(RequestContext(session=mine), "files__read", {"path": "/x"})
    assert resp is not None and resp["result"]["taskId"] == "files/t-1"
    assert resp["result"]["resultType"] == "task"
    sent = files.requests("tools/call")[-1]["params"]["_meta"]
    assert sent["io.modelcontextprotocol/clientCapabilities"] == caps  # the server knows it may make tasks

    get_it = jsonrpc.request(9, "tasks/get", {"taskId": "files/t-1"})
    got = await gw.router.handle(get_it, RequestContext(session=mine))
    assert (
        got is not None and got["result"]["taskId"] == "files/t-1" and got["result"]["status"] == "completed"
    )
    assert REAL not in json.dumps(got)  # anonymized like any answer
    # Another client, or an id the gateway never handed out, is told the task does not exist.
    other = gw.sessions.transient("2026-07-28", caps, {}, None)
    other.client = "someone-else"
    for ctx, task_id in (
        (RequestContext(session=other), "files/t-1"),
        (RequestContext(session=mine), "files/t-2"),
    ):
        refused = await gw.router.handle(jsonrpc.request(10, "tasks/get", {"taskId": task_id}), ctx)
        assert refused is not None and refused["error"]["code"] == jsonrpc.INVALID_PARAMS
    assert len(files.requests("tasks/get")) == 1
