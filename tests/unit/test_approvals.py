"""The approval broker and grants, against a real store; timeouts run on trio's autojump clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from portero.approvals import Approval, ApprovalBroker, Grants, Outcome
from portero.core.policy import Decision, PolicyEngine, escape_glob, glob_match, grant_match
from portero.store import Store


class FakeApprover:
    """A test double for the Telegram bot. ``auto`` answers each announcement from the admin's side."""

    def __init__(self, broker: ApprovalBroker | None = None) -> None:
        self.broker = broker
        self.available = True
        self.announced: list[Approval] = []
        self.settled: list[tuple[str, str, str]] = []
        self.fail_announce = False
        self.fail_settle = False
        self.auto: dict[str, Any] | None = None
        self.new = trio.Event()

    async def announce(self, approval: Approval) -> None:
        await trio.lowlevel.checkpoint()
        if self.fail_announce:
            raise OSError("network is down")
        self.announced.append(approval)
        self.new.set()
        self.new = trio.Event()
        if self.auto is not None:
            assert self.broker is not None
            assert self.broker.decide(approval.id, **self.auto) == "ok"

    async def settle(self, approval: Approval) -> None:
        await trio.lowlevel.checkpoint()
        self.settled.append((approval.id, approval.state, approval.source))
        if self.fail_settle:
            raise OSError("cannot edit")

    async def next_announcement(self) -> Approval:
        count = len(self.announced)
        while len(self.announced) == count:
            await self.new.wait()
        return self.announced[-1]


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(str(tmp_path / "gateway.db"))
    yield store
    await store.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def approver() -> FakeApprover:
    return FakeApprover()


@pytest.fixture
def broker(store: Store, approver: FakeApprover, clock: Clock) -> ApprovalBroker:
    broker = ApprovalBroker(store, timeout=120.0, approver=approver, wall_clock=clock)
    approver.broker = broker
    return broker


async def ask(broker: ApprovalBroker, tool: str = "github/create_issue", **kwargs: Any) -> Outcome:
    return await broker.request(
        tool=tool,
        server=tool.split("/")[0],
        rule="rule:github/*",
        arguments_real={"owner": "Real Name"},
        arguments_fake={"owner": "John Doe"},
        session="s1",
        **kwargs,
    )


async def test_approve(broker: ApprovalBroker, approver: FakeApprover, store: Store) -> None:
    approver.auto = {"approved": True}
    outcome = await ask(broker)
    assert outcome == Outcome("approved", "admin", "approved by the admin")
    assert outcome.approved
    (approval,) = approver.announced
    assert approver.settled == [(approval.id, "approved", "admin")]
    assert broker.pending() == []
    record = await store.get_approval(approval.id)
    assert record is not None
    assert (record["state"], record["source"]) == ("approved", "admin")
    assert record["arguments"] == {"owner": "John Doe"}  # never the real side
    assert broker.grants.active() == []


async def test_deny(broker: ApprovalBroker, approver: FakeApprover, store: Store) -> None:
    async with trio.open_nursery() as nursery:
        results: list[Outcome] = []

        async def call() -> None:
            results.append(await ask(broker))

        nursery.start_soon(call)
        approval = await approver.next_announcement()
        assert broker.pending() == [approval]
        assert approval.arguments_real == {"owner": "Real Name"}
        assert len(approval.id) >= 16 and len(f"ap:{approval.id}".encode()) <= 64
        assert broker.decide(approval.id, False) == "ok"
    assert results == [Outcome("rejected", "admin", "approval denied by the admin")]
    record = await store.get_approval(approval.id)
    assert record is not None and record["state"] == "rejected"


async def test_timeout(
    broker: ApprovalBroker, approver: FakeApprover, store: Store, autojump_clock: trio.testing.MockClock
) -> None:
    start = trio.current_time()
    outcome = await ask(broker)
    assert trio.current_time() - start == pytest.approx(120.0)
    assert outcome == Outcome("expired", "timeout", "approval timed out after 2m")
    (approval,) = approver.announced
    assert approver.settled == [(approval.id, "expired", "timeout")]
    assert broker.decide(approval.id, True) == "already"
    record = await store.get_approval(approval.id)
    assert record is not None and (record["state"], record["source"]) == ("expired", "timeout")


async def test_wait_ticks(
    broker: ApprovalBroker, approver: FakeApprover, autojump_clock: trio.testing.MockClock
) -> None:
    ticks: list[tuple[float, float]] = []

    async def on_tick(elapsed: float, total: float) -> None:
        ticks.append((elapsed, total))
        if len(ticks) == 2:
            raise RuntimeError("client went quiet")  # ignored

    outcome = await ask(broker, on_wait_tick=on_tick)
    assert outcome.decision == "expired"
    assert len(ticks) == 23  # 5 s, 10 s, ... 115 s; at 120 s the timeout wins
    assert ticks[0] == (pytest.approx(5.0), 120.0)
    assert all(b[0] > a[0] for a, b in zip(ticks, ticks[1:], strict=False))


async def test_approve_30m_creates_grant(
    broker: ApprovalBroker, approver: FakeApprover, clock: Clock, store: Store
) -> None:
    approver.auto = {"approved": True, "grant_seconds": 1800.0}
    outcome = await ask(broker)
    assert outcome.approved
    assert outcome.reason == "approved by the admin (and granted for 30m)"
    (grant,) = broker.grants.active()
    assert grant.pattern == "github/create_issue"  # exactly this tool
    assert grant.expires_at == clock.now + 1800.0
    assert broker.grants.match("github/create_issue") == grant
    assert broker.grants.match("github/delete_repo") is None
    assert [g.id for g in await store.active_grants(clock.now)] == [grant.id]
    clock.now += 1800.0
    assert broker.grants.match("github/create_issue") is None


@pytest.mark.parametrize("tool", ["evil/create_*", "evil/*", "evil/a\\*b", "evil/back\\slash", "*/x*"])
async def test_approve_30m_on_a_tool_with_a_star_grants_that_tool_only(
    tmp_path: Path, approver: FakeApprover, clock: Clock, tool: str
) -> None:
    # The reproduction: "Approve 30m" on evil/create_* granted the glob, and evil/create_anything ran unasked.
    store = await Store.open(str(tmp_path / "gateway.db"))
    try:
        broker = ApprovalBroker(store, timeout=120.0, approver=approver, wall_clock=clock)
        approver.broker = broker
        approver.auto = {"approved": True, "grant_seconds": 1800.0}
        assert (await ask(broker, tool)).approved
        (grant,) = broker.grants.active()
        assert broker.grants.match(tool) == grant
        for other in ("evil/create_anything", "evil/create_", "evil/x", "evil/", tool + "x", "x" + tool):
            assert broker.grants.match(other) is None, other
        engine = PolicyEngine("allow", {"evil/*": "require-approval", "*/x*": "require-approval"})
        assert broker.grants.apply(engine.decide("evil/create_anything"), "evil/create_anything").action == (
            "require-approval"
        )
        assert broker.grants.apply(engine.decide(tool), tool) == Decision(
            "allow", f"grant:{grant.pattern}", grant.pattern
        )
    finally:
        await store.aclose()
    # ... and it stays exact after a restart (the pattern is what is stored).
    store = await Store.open(str(tmp_path / "gateway.db"))
    try:
        grants = await Grants.load(store, clock)
        assert grants.match(tool) is not None and grants.match("evil/create_anything") is None
    finally:
        await store.aclose()


async def test_admin_grant_patterns_stay_globs(store: Store, clock: Clock) -> None:
    grants = Grants(store, wall_clock=clock)
    await grants.add("evil/create_*", 60.0, "telegram")
    assert grants.match("evil/create_anything") is not None
    assert grants.match("evil/create_*") is not None
    assert grants.match("evil/delete") is None


def test_grant_pattern_escapes() -> None:
    assert escape_glob("github/create_issue") == "github/create_issue"  # nearly every name is its own pattern
    assert escape_glob("evil/create_*") == "evil/create_\\*"
    assert escape_glob("a/b\\c*") == "a/b\\\\c\\*"
    assert grant_match("evil/create_\\*", "evil/create_*")
    assert not grant_match("evil/create_\\*", "evil/create_x")
    assert grant_match("a/b\\c", "a/b\\c")  # a backslash before anything else is itself
    assert grant_match("a/b\\", "a/b\\")
    assert grant_match("a/*", "a/b") and grant_match("*", "x/y") and not grant_match("a/*", "b/a")
    # Rules are untouched: plain globs.
    assert glob_match("evil/create_\\*", "evil/create_\\anything")


@given(st.text(alphabet="ab*\\/_", max_size=12), st.text(alphabet="ab*\\/_", max_size=12))
def test_an_escaped_name_matches_only_itself(name: str, other: str) -> None:
    assert grant_match(escape_glob(name), name)
    assert grant_match(escape_glob(name), other) == (name == other)


async def test_grant_ignored_on_deny(broker: ApprovalBroker, approver: FakeApprover) -> None:
    approver.auto = {"approved": False, "grant_seconds": 1800.0}
    assert (await ask(broker)).decision == "rejected"
    assert broker.grants.active() == []


async def test_decide_twice_and_unknown(broker: ApprovalBroker, approver: FakeApprover) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, broker)
        approval = await approver.next_announcement()
        assert broker.decide(approval.id, True) == "ok"
        assert broker.decide(approval.id, False) == "already"
    assert broker.decide(approval.id, False) == "already"
    assert broker.decide("no-such-id", True) == "unknown"
    assert approval.state == "approved"


async def test_cancel_withdraws(broker: ApprovalBroker, approver: FakeApprover, store: Store) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, broker)
        approval = await approver.next_announcement()
        nursery.cancel_scope.cancel()
    assert broker.pending() == []
    assert approver.settled == [(approval.id, "expired", "cancelled")]
    assert broker.decide(approval.id, True) == "already"
    record = await store.get_approval(approval.id)
    assert record is not None and (record["state"], record["source"]) == ("expired", "cancelled")


async def test_many_concurrent_waiters(broker: ApprovalBroker, approver: FakeApprover) -> None:
    results: dict[str, Outcome] = {}

    async def call(i: int) -> None:
        results[f"t/{i}"] = await ask(broker, tool=f"t/{i}")

    async with trio.open_nursery() as nursery:
        for i in range(30):
            nursery.start_soon(call, i)
        while len(broker.pending()) < 30:
            await approver.next_announcement()
        assert len({a.id for a in broker.pending()}) == 30
        for approval in broker.pending():
            number = int(approval.tool.split("/")[1])
            assert broker.decide(approval.id, number % 2 == 0) == "ok"
    assert len(results) == 30
    for i in range(30):
        assert results[f"t/{i}"].decision == ("approved" if i % 2 == 0 else "rejected")


async def test_shutdown_rejects_all(broker: ApprovalBroker, approver: FakeApprover, store: Store) -> None:
    results: list[Outcome] = []

    async def call(i: int) -> None:
        results.append(await ask(broker, tool=f"t/{i}"))

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(call, i)
        while len(broker.pending()) < 5:
            await approver.next_announcement()
        ids = [a.id for a in broker.pending()]
        await broker.shutdown()
        # shutdown waited for every waiter to record its outcome
        for approval_id in ids:
            record = await store.get_approval(approval_id)
            assert record is not None and (record["state"], record["source"]) == ("rejected", "shutdown")
    assert [o.source for o in results] == ["shutdown"] * 5
    assert results[0].reason == "the gateway shut down before the admin decided"
    assert (await ask(broker)).source == "shutdown"  # no new approvals after shutdown


async def test_no_approver(store: Store) -> None:
    broker = ApprovalBroker(store, timeout=60.0, approver=None)
    outcome = await ask(broker)
    assert outcome == Outcome("rejected", "no-approver", "no approver configured (no [telegram] section)")
    approver = FakeApprover(broker)
    approver.auto = {"approved": True}
    broker.approver = approver  # the bot is created after the broker
    assert (await ask(broker)).approved


async def test_unreachable(broker: ApprovalBroker, approver: FakeApprover, store: Store) -> None:
    approver.available = False
    assert await ask(broker) == Outcome("rejected", "unreachable", "Telegram unreachable")
    assert approver.announced == []

    approver.available = True
    approver.fail_announce = True
    assert await ask(broker) == Outcome("rejected", "unreachable", "Telegram unreachable")
    assert approver.settled == []  # nothing was shown, so nothing to edit


async def test_settle_errors_are_ignored(broker: ApprovalBroker, approver: FakeApprover) -> None:
    approver.auto = {"approved": True}
    approver.fail_settle = True
    assert (await ask(broker)).approved


async def test_grants_persist_across_reopen(tmp_path: Path, clock: Clock) -> None:
    path = str(tmp_path / "gateway.db")
    store = await Store.open(path)
    grants = await Grants.load(store, clock)
    kept = await grants.add("github/*", 3600.0, "admin")
    await grants.add("fs/write", 60.0, "admin")
    await grants.add("fs/*", 7200.0, "admin")
    assert await grants.revoke("fs/*") == 1
    await store.aclose()

    clock.now += 120.0  # fs/write has expired meanwhile
    store = await Store.open(path)
    try:
        broker = await ApprovalBroker.open(store, timeout=60.0, approver=None, wall_clock=clock)
        assert broker.grants.active() == [kept]
        assert broker.grants.match("github/anything") == kept
        assert broker.grants.match("fs/write") is None
        assert await broker.grants.revoke(None) == 1
        assert broker.grants.active() == []
    finally:
        await store.aclose()


async def test_open_expires_stale_pending(tmp_path: Path, clock: Clock) -> None:
    path = str(tmp_path / "gateway.db")
    store = await Store.open(path)
    approver = FakeApprover()
    broker = ApprovalBroker(store, timeout=60.0, approver=approver, wall_clock=clock)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, broker)
        approval = await approver.next_announcement()
        # Simulate a crash: the row stays pending in the database.
        await store.aclose()
        nursery.cancel_scope.cancel()
    store = await Store.open(path)
    try:
        await ApprovalBroker.open(store, timeout=60.0, approver=None, wall_clock=clock)
        record = await store.get_approval(approval.id)
        assert record is not None and (record["state"], record["source"]) == ("expired", "timeout")
    finally:
        await store.aclose()


async def test_expired_grants_do_not_match(store: Store, clock: Clock) -> None:
    grants = Grants(store, wall_clock=clock)
    grant = await grants.add("*", 10.0, "admin")
    assert grants.match("a/b") == grant
    clock.now += 10.0
    assert grants.match("a/b") is None
    assert grants.active() == []


async def test_grant_validation(store: Store) -> None:
    grants = Grants(store)
    with pytest.raises(ValueError):
        await grants.add("has space", 10.0, "admin")
    with pytest.raises(ValueError):
        await grants.add("a/*", 0.0, "admin")


# --- several approvers (Telegram and the console) -------------------------------------------------------


async def test_approvers_first_decision_wins_and_all_settle(store: Store, clock: Clock) -> None:
    from portero.approvals import Approvers

    telegram, console = FakeApprover(), FakeApprover()
    both = Approvers(telegram, console)
    broker = ApprovalBroker(store, timeout=120.0, approver=both, wall_clock=clock)
    async with trio.open_nursery() as nursery:
        results: list[Outcome] = []

        async def run() -> None:
            results.append(await ask(broker))

        nursery.start_soon(run)
        approval = await console.next_announcement()
        assert telegram.announced == [approval]  # both were told
        assert broker.decide(approval.id, True, source="console") == "ok"
        assert broker.decide(approval.id, False) == "already"  # Telegram's press comes second
    assert results == [Outcome("approved", "console", "approved by the admin")]
    assert telegram.settled == console.settled == [(approval.id, "approved", "console")]


async def test_approvers_one_unavailable_or_failing_still_asks_the_other(store: Store, clock: Clock) -> None:
    from portero.approvals import Approvers

    telegram, console = FakeApprover(), FakeApprover()
    broker = ApprovalBroker(store, timeout=120.0, approver=Approvers(telegram, console), wall_clock=clock)
    console.broker = broker
    console.auto = {"approved": True, "source": "console"}
    telegram.available = False
    assert (await ask(broker)).approved and telegram.announced == []
    telegram.available = True
    telegram.fail_announce = True
    assert (await ask(broker)).approved
    # Every announcement fails: rejected at once as unreachable.
    console.fail_announce = True
    outcome = await ask(broker)
    assert (outcome.decision, outcome.source) == ("rejected", "unreachable")


async def test_approvers_none_available_says_why(store: Store, clock: Clock) -> None:
    from portero.approvals import Approvers
    from portero.front.console import ConsoleApprover

    console = ConsoleApprover()  # no password yet
    broker = ApprovalBroker(store, timeout=120.0, approver=Approvers(console), wall_clock=clock)
    outcome = await ask(broker)
    assert outcome == Outcome(
        "rejected", "unreachable", "the console has no password yet (portero console passwd)"
    )
    telegram = FakeApprover()
    telegram.available = False
    broker.approver = Approvers(telegram, console)
    outcome = await ask(broker)
    assert outcome.reason == "Telegram unreachable; the console has no password yet (portero console passwd)"
