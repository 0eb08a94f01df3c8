"""Deny with a reason and approve with edited arguments: the schema check, the reason's form, the window
after Deny (on trio's autojump clock) and the broker against a real store."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing

from portero.approvals import (
    EDIT_MAX_CHARS,
    MAX_REASON_CHARS,
    REASON_WINDOW,
    Approval,
    ApprovalBroker,
    Outcome,
    arguments_editable,
    clean_reason,
    denial_text,
    reason_state,
)
from portero.core.anonymize import Anonymizer, Rule
from portero.core.argschema import MAX_ERRORS, validate
from portero.store import Store
from portero.telegram import render

SCHEMA = {
    "type": "object",
    "properties": {
        "repo": {"type": "string", "minLength": 1},
        "count": {"type": "integer", "minimum": 1, "maximum": 10},
        "mode": {"enum": ["fast", "safe"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
    },
    "required": ["repo"],
    "additionalProperties": False,
}

# ------------------------------------------------------------------------------------- the schema check


def test_valid_arguments_have_no_problems() -> None:
    assert validate({"repo": "a", "count": 3, "mode": "safe", "tags": ["x"]}, SCHEMA) == []
    assert validate({"repo": "a", "count": 3.0}, SCHEMA) == []  # 3.0 is an integer in JSON Schema


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({}, "the arguments: missing required 'repo'"),
        ({"repo": 5}, "repo: expected string, got 5"),
        ({"repo": ""}, "repo: at least 1 characters"),
        ({"repo": "a", "count": True}, "count: expected integer, got true"),
        ({"repo": "a", "count": 1.5}, "count: expected integer, got 1.5"),
        ({"repo": "a", "count": 11}, "count: must be at most 10"),
        ({"repo": "a", "mode": "slow"}, 'mode: must be one of "fast", "safe"'),
        ({"repo": "a", "tags": ["x", 2]}, "tags[1]: expected string, got 2"),
        ({"repo": "a", "tags": ["x", "y", "z"]}, "tags: at most 2 items"),
        ({"repo": "a", "extra": 1}, "extra: not an accepted argument (accepted: count, mode, repo, tags)"),
        ([], "the arguments: expected object, got []"),
    ],
)
def test_problems_are_named(value: Any, problem: str) -> None:
    assert validate(value, SCHEMA) == [problem]


def test_combinators_nullable_types_and_unknown_keywords() -> None:
    schema = {
        "type": "object",
        "properties": {
            "id": {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^[a-z]+$"}]},
            "note": {"type": ["string", "null"]},
            "ref": {"$ref": "#/definitions/whatever"},
        },
    }
    assert validate({"id": 3, "note": None, "ref": [1]}, schema) == []
    assert validate({"id": "ABC"}, schema) == []  # pattern is not checked: accepting, never refusing
    assert validate({"id": 1.5}, schema) == [
        "id: matches none of the allowed forms (id: expected integer, got 1.5)"
    ]
    assert validate({"note": 1}, schema) == ["note: expected string or null, got 1"]
    assert validate({"a": {"b": 1}}, {"additionalProperties": {"type": "string"}}) == [
        'a: expected string, got {"b": 1}'
    ]


def test_problems_are_bounded() -> None:
    schema = {"type": "object", "properties": {f"k{i}": {"type": "string"} for i in range(10)}}
    problems = validate({f"k{i}": i for i in range(10)}, schema)
    assert len(problems) == MAX_ERRORS + 1 and problems[-1] == "… and 5 more"


def test_a_schema_that_says_nothing_accepts_anything() -> None:
    assert validate({"x": [1, {"y": None}]}, {}) == []
    assert validate({"x": 1}, True) == []


# ---------------------------------------------------------------------------- reasons, window, editing


def test_reason_is_one_bounded_line() -> None:
    assert (
        clean_reason("  use the staging\nrepository\tinstead \u200b ") == "use the staging repository instead"
    )
    assert clean_reason(" \n\t ") is None
    long = clean_reason("x" * (MAX_REASON_CHARS * 2))
    assert long is not None and len(long) == MAX_REASON_CHARS and long.endswith("…")


def test_denial_text() -> None:
    assert denial_text(None) == "approval denied by the admin"
    assert denial_text("use the staging repository instead.") == (
        "denied by the admin: use the staging repository instead"
    )


def test_only_small_arguments_are_editable() -> None:
    assert arguments_editable({"what": "x" * (EDIT_MAX_CHARS - 20)})
    assert not arguments_editable({"what": "x" * EDIT_MAX_CHARS})


def _denied(at: float) -> Approval:
    a = Approval(
        id="a1",
        tool="t/x",
        server="t",
        rule="rule:t/*",
        arguments_real={},
        arguments_fake={},
        session=None,
        created_at=0.0,
        expires_at=1.0,
        state="rejected",
        source="admin",
    )
    a.denied_at = at
    return a


def test_reason_window() -> None:
    a = _denied(100.0)
    assert reason_state(a, 100.0 + REASON_WINDOW) == "audit"
    assert reason_state(a, 100.0 + REASON_WINDOW + 0.1) == "late"
    a.reason = "because"
    assert reason_state(a, 101.0) == "already"
    b = _denied(100.0)
    b.source = "timeout"
    assert reason_state(b, 101.0) == "unknown"


def test_render_hints_and_answers() -> None:
    a = _denied(0.0)
    a.state, a.arguments_real = "pending", {"what": "Jane <Realname>"}
    text = render.approval_text(a, now=0.0, replies=True)
    assert render.DENY_REASON_HINT in text
    assert (
        "✏️ Reply with corrected JSON to approve with it:\n"
        "<code>{&quot;what&quot;: &quot;Jane &lt;Realname&gt;&quot;}</code>" in text
    )
    assert render.DENY_REASON_HINT not in render.approval_text(a, now=0.0)  # the bot asks for the hints
    assert "within 2m" in render.reason_hint(REASON_WINDOW)
    assert "Not valid JSON: Expecting value" in render.edit_answer("json", ["Expecting value"])
    answer = render.edit_answer("invalid", ["what: expected string, got 5"])
    assert "• what: expected string, got 5" in answer and "still waiting" in answer


# ---------------------------------------------------------------------------------- the broker, the store


class Approver:
    def __init__(self) -> None:
        self.available = True
        self.announced: list[Approval] = []
        self.new = trio.Event()

    async def announce(self, approval: Approval) -> None:
        await trio.lowlevel.checkpoint()
        self.announced.append(approval)
        self.new.set()
        self.new = trio.Event()

    async def settle(self, approval: Approval) -> None:
        await trio.lowlevel.checkpoint()

    async def next(self) -> Approval:
        while not self.announced:
            await self.new.wait()
        return self.announced.pop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(str(tmp_path / "gateway.db"))
    yield store
    await store.aclose()


ANON = Anonymizer([Rule("John Doe", "Jane Realname")])


async def ask(broker: ApprovalBroker, result: list[Outcome], **kwargs: Any) -> None:
    result.append(
        await broker.request(
            tool="t/delete_thing",
            server="t",
            rule="rule:t/delete_thing",
            arguments_real={"what": "files of Jane Realname"},
            arguments_fake={"what": "files of John Doe"},
            session="s1",
            input_schema={"type": "object", "properties": {"what": {"type": "string"}}},
            to_fake=ANON.to_fake,
            **kwargs,
        )
    )


def row(tmp_path: Path, approval_id: str) -> dict[str, Any]:
    conn = sqlite3.connect(tmp_path / "gateway.db")
    conn.row_factory = sqlite3.Row
    try:
        return dict(conn.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone())
    finally:
        conn.close()


async def test_deny_with_a_reason_reaches_the_outcome_anonymized(store: Store, tmp_path: Path) -> None:
    approver = Approver()
    broker = ApprovalBroker(store, timeout=60.0, approver=approver)
    result: list[Outcome] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, broker, result)
        approval = await approver.next()
        assert broker.deny_with_reason(approval.id, "  \n ") == "empty"  # still pending
        assert broker.deny_with_reason(approval.id, "ask Jane Realname\nfirst") == "ok"
        assert broker.deny_with_reason(approval.id, "again") == "already"
    [outcome] = result
    assert (outcome.decision, outcome.source) == ("rejected", "admin")
    assert outcome.reason == "denied by the admin: ask John Doe first"
    assert row(tmp_path, approval.id)["reason"] == "ask John Doe first"
    assert await broker.give_reason(approval.id, "more") == "already"


async def test_reason_after_the_button_is_recorded_within_the_window(
    store: Store, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    approver = Approver()
    broker = ApprovalBroker(store, timeout=60.0, approver=approver)
    result: list[Outcome] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, broker, result)
        approval = await approver.next()
        assert broker.decide(approval.id, False) == "ok"
    assert result[0].reason == "approval denied by the admin"  # answered at once
    await trio.sleep(REASON_WINDOW - 1)
    assert await broker.give_reason(approval.id, "Jane Realname said no") == "audit"
    assert row(tmp_path, approval.id)["reason"] == "John Doe said no"
    assert await broker.give_reason(approval.id, "again") == "already"
    assert await broker.give_reason("made-up", "x") == "unknown"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, broker, result)
        second = await approver.next()
        assert broker.decide(second.id, False) == "ok"
    await trio.sleep(REASON_WINDOW + 1)
    assert await broker.give_reason(second.id, "too late") == "unknown"  # forgotten after the window
    assert row(tmp_path, second.id)["reason"] is None


async def test_approve_with_edited_arguments(store: Store, tmp_path: Path) -> None:
    approver = Approver()
    broker = ApprovalBroker(store, timeout=60.0, approver=approver)
    result: list[Outcome] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, broker, result)
        approval = await approver.next()
        assert broker.approve_edited(approval.id, {"what": 5}) == (
            "invalid",
            ["what: expected string, got 5"],
        )
        assert broker.get(approval.id) is approval and approval.state == "pending"
        assert broker.approve_edited(approval.id, {"what": "the copy of Jane Realname"}) == ("ok", [])
        assert broker.approve_edited(approval.id, {"what": "again"}) == ("already", [])
    [outcome] = result
    assert outcome.approved and outcome.arguments == {"what": "the copy of Jane Realname"}  # real, as written
    assert outcome.reason == "approved by the admin with edited arguments"
    assert outcome.approval == approval.id
    stored = row(tmp_path, approval.id)
    assert json.loads(stored["arguments"]) == {"what": "files of John Doe"}
    assert json.loads(stored["edited_arguments"]) == {"what": "the copy of John Doe"}  # fake side


async def test_large_arguments_are_not_editable(store: Store) -> None:
    approver = Approver()
    broker = ApprovalBroker(store, timeout=60.0, approver=approver)
    result: list[Outcome] = []

    async def big() -> None:
        result.append(
            await broker.request(
                tool="t/x",
                server="t",
                rule="default",
                arguments_real={"text": "y" * EDIT_MAX_CHARS},
                arguments_fake={"text": "y" * EDIT_MAX_CHARS},
                session=None,
            )
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(big)
        approval = await approver.next()
        assert not approval.editable
        assert broker.approve_edited(approval.id, {"text": "z"}) == ("too-long", [])
        broker.decide(approval.id, False)
    assert not result[0].approved


def test_a_reply_names_its_approval_by_the_buttons_it_carries() -> None:
    # Telegram sends the replied-to message with its keyboard: a reply that arrives before the bot
    # learned the message's id (the answer to its sendMessage) still finds its approval.
    from portero.telegram import render
    from portero.telegram.bot import _approval_of_buttons

    markup = {
        "inline_keyboard": [[{"text": "✅ Approve", "callback_data": render.callback_data("a", "ab12")}]]
    }
    assert _approval_of_buttons(markup) == "ab12"
    assert _approval_of_buttons({"inline_keyboard": [[{"text": "x", "callback_data": "pin:a:k"}]]}) is None
    assert _approval_of_buttons(None) is None and _approval_of_buttons({"inline_keyboard": "no"}) is None
