"""The approval broker: ``require-approval`` calls wait here for the admin's decision; and the grants.

A call that needs approval becomes an :class:`Approval` in the broker's table of pending approvals, is
recorded in the store (with the *fake* arguments only) and announced by the :class:`Approver` (the Telegram
bot). The calling task then waits on the approval's ``trio.Event`` until

- the admin decides (:meth:`ApprovalBroker.decide`, called by the bot; ids are single-use),
- the timeout passes (``expired`` / ``timeout``),
- the gateway shuts down (:meth:`ApprovalBroker.shutdown`: ``rejected`` / ``shutdown``), or
- the waiting task is cancelled because its client went away (``expired`` / ``cancelled``; the record is
  written under a shield and ``Cancelled`` propagates).

On every path the approval leaves the table, its decision is committed to the store, an "Approve 30m"
grant is added (for exactly that tool: :meth:`Grants.add_tool`), and the approver is asked to edit its
message to the outcome (bounded by :data:`SETTLE_TIMEOUT`; its errors are logged and ignored). Without an
approver, or with one that is not available or fails to announce, the call is rejected at once with a reason
the model can read.

:class:`Grants` keeps the live grants in memory (so :meth:`Grants.match` is synchronous and cheap) and
writes every change through to the store. Grants turn ``require-approval`` into ``allow``; they never
override ``deny`` (see :func:`portero.core.policy.apply_grant`).

**Deny with a reason.** The admin replies to the approval message with a line of text instead of pressing
a button (:meth:`ApprovalBroker.deny_with_reason`): the call is denied at once and its refusal carries the
reason, anonymized to the fake side ("denied by the admin: use the staging repository instead"); the
approval keeps it (``approvals.reason``) and the audit row's error text has it. After the **Deny button** the
call answers at once with the plain refusal, and a reply within :data:`REASON_WINDOW` is recorded in the
approval only (:meth:`ApprovalBroker.give_reason`); the admin is told that the model did not see it.

Why not hold a denied call for a while in case a reason comes: every Deny without one (most of them) would
then stall the agent for that grace, and a reason typed a little too slowly would still miss it. Replying
*instead of* Deny costs nothing when there is no reason and loses no reason when there is one; the window
after Deny is only for the record. The window runs on trio's clock (:func:`reason_state` takes ``now``).

**Approve with edited arguments.** For a call whose arguments take under :data:`EDIT_MAX_CHARS` characters of
JSON, the admin may reply with other arguments (a JSON object, real values as the child will get them):
:meth:`ApprovalBroker.approve_edited` checks them against the tool's ``inputSchema``
(:func:`portero.core.argschema.validate`) and, when they fit, approves the call with them; when not, the
approval stays pending. The approval keeps both (``arguments`` as the client sent them, ``edited_arguments``
anonymized to the fake side).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import trio

from portero import metrics
from portero.core.argschema import validate as validate_arguments
from portero.core.policy import (
    Decision,
    Grant,
    apply_grant,
    escape_glob,
    match_grant,
    validate_pattern,
)
from portero.durations import format_duration
from portero.store import Store

log = logging.getLogger(__name__)

# How often a waiting call reports progress through ``on_wait_tick``.
TICK_INTERVAL = 5.0
# Upper bound for the approver's ``settle`` (editing the Telegram message) on each path.
SETTLE_TIMEOUT = 5.0
# How long :meth:`ApprovalBroker.shutdown` waits for woken waiters to record their outcome.
SHUTDOWN_GRACE = 5.0
# How many decided ids are remembered so that a second button press answers "already", not "unknown".
_REMEMBERED = 1024
# After the Deny button, how long a reply to the approval message is recorded as the reason (trio clock
# seconds). The call has answered by then: see the module docstring.
REASON_WINDOW = 120.0
# A reason is one line of at most this many characters (longer ones are cut).
MAX_REASON_CHARS = 500
# Editing is offered for arguments whose compact JSON is shorter than this.
EDIT_MAX_CHARS = 1000

WallClock = Callable[[], float]
WaitTick = Callable[[float, float], Awaitable[None]]


@attrs.define(eq=False)
class Approval:
    """One call waiting for the admin. Times are wall-clock epoch seconds.

    ``arguments_real`` is what the admin is shown (the arguments after anonymization, as the child will
    receive them); it is never stored or logged. ``arguments_fake`` (as the client sent them) is stored.
    ``handle`` is a slot for the approver's own use, e.g. the Telegram message id to edit later.
    """

    id: str
    tool: str
    server: str
    rule: str
    arguments_real: dict[str, Any] = attrs.field(repr=False)
    arguments_fake: dict[str, Any] = attrs.field(repr=False)
    session: str | None
    created_at: float
    expires_at: float
    state: str = "pending"
    source: str = ""
    grant_seconds: float | None = None
    decided_at: float | None = None
    handle: Any = attrs.field(default=None, repr=False)
    event: trio.Event = attrs.field(factory=trio.Event, repr=False)
    client: str | None = None  # the [[client]] whose call it is ("default": server.bearer_token's)
    # The tool's inputSchema (edited arguments are checked against it), and real -> fake for what the admin
    # writes (a reason, edited arguments) before it is stored or shown to the model.
    input_schema: Any = attrs.field(default=None, repr=False)
    to_fake: Callable[[Any], Any] = attrs.field(default=lambda value: value, repr=False)
    reason: str | None = None  # the admin's reason for a Deny (fake side)
    denied_at: float | None = None  # trio clock, when the admin denied it
    edited_arguments: dict[str, Any] | None = attrs.field(default=None, repr=False)  # real side

    @property
    def editable(self) -> bool:
        """Whether the admin is offered to approve with edited arguments (small arguments only)."""
        return arguments_editable(self.arguments_real)

    def to_record(self) -> dict[str, Any]:
        """The row for :meth:`Store.add_approval` (fake arguments only)."""
        return {
            "id": self.id,
            "created_at": self.created_at,
            "tool": self.tool,
            "server": self.server,
            "rule": self.rule,
            "arguments": self.arguments_fake,
            "session": self.session,
            "state": "pending",
            "expires_at": self.expires_at,
            "client": self.client,
        }


class Approver(Protocol):
    """What the broker needs from the admin's side (the Telegram bot)."""

    @property
    def available(self) -> bool:
        """False when the approver cannot reach the admin (Telegram unreachable or stopped)."""
        ...

    async def announce(self, approval: Approval) -> None:
        """Show the approval to the admin with its buttons. Raising means the admin is unreachable."""
        ...

    async def settle(self, approval: Approval) -> None:
        """Replace the buttons with the outcome (``approval.state`` / ``approval.source``)."""
        ...


class Approvers:
    """Several approvers at once (the Telegram bot and the web console): each is told of every approval,
    the first to decide wins (:meth:`ApprovalBroker.decide` takes an id once), and each is asked to settle
    it, so the other shows who decided ("approved in the console").

    ``available`` when any member is; :meth:`announce` announces to the available members concurrently
    and raises only when every one of them failed. ``unavailable_reason`` is what the model reads when
    none is available: each member's own (``unavailable_reason``, else "Telegram unreachable")."""

    def __init__(self, *members: Approver) -> None:
        self.members: list[Approver] = list(members)

    def add(self, member: Approver) -> None:
        self.members.append(member)

    @property
    def available(self) -> bool:
        return any(m.available for m in self.members)

    @property
    def unavailable_reason(self) -> str:
        return "; ".join(_unreachable(m) for m in self.members) or UNREACHABLE_REASON

    async def announce(self, approval: Approval) -> None:
        failures: list[BaseException] = []
        told = 0

        async def one(member: Approver) -> None:
            nonlocal told
            try:
                await member.announce(approval)
            except Exception as exc:
                failures.append(exc)
                log.warning("could not announce approval %s through %s", approval.id, type(member).__name__)
            else:
                told += 1

        async with trio.open_nursery() as nursery:
            for member in self.members:
                if member.available:
                    nursery.start_soon(one, member)
        if told == 0:
            raise RuntimeError("no approver could be told") from (failures[0] if failures else None)

    async def settle(self, approval: Approval) -> None:
        async def one(member: Approver) -> None:
            try:
                await member.settle(approval)
            except Exception:
                log.warning("could not settle approval %s through %s", approval.id, type(member).__name__)

        async with trio.open_nursery() as nursery:
            for member in self.members:
                nursery.start_soon(one, member)


@attrs.frozen
class Outcome:
    """How an approval ended: ``decision`` is ``approved``, ``rejected`` or ``expired``; ``source`` is who
    or what decided (for the audit record); ``reason`` is one line for the model."""

    decision: str
    source: str
    reason: str
    arguments: dict[str, Any] | None = None  # approved with these (real) arguments instead of the client's
    approval: str | None = attrs.field(default=None, eq=False)  # the approval's id (for the audit note)

    @property
    def approved(self) -> bool:
        return self.decision == "approved"


NO_APPROVER_REASON = "no approver configured (no [telegram] section)"
UNREACHABLE_REASON = "Telegram unreachable"
_SPACES = re.compile(r"\s+")


def _unreachable(approver: Approver | None) -> str:
    return str(getattr(approver, "unavailable_reason", UNREACHABLE_REASON))


def arguments_editable(arguments: Any) -> bool:
    """Whether ``arguments`` are small enough to be edited from the chat (:data:`EDIT_MAX_CHARS`)."""
    try:
        text = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        return False
    return len(text) < EDIT_MAX_CHARS


def clean_reason(text: str) -> str | None:
    """The admin's reply as one line for the model: whitespace runs (newlines included) become one space,
    control characters go, at most :data:`MAX_REASON_CHARS` characters; None when nothing is left."""
    text = "".join(ch if ch.isprintable() or ch.isspace() else " " for ch in text)
    text = _SPACES.sub(" ", text).strip()
    if not text:
        return None
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 1].rstrip() + "…"
    return text


def denial_text(reason: str | None) -> str:
    """What the model reads when the admin denied its call: with the reason when one was given."""
    if reason is None:
        return "approval denied by the admin"
    return "denied by the admin: " + reason.rstrip(" .")


def reason_state(approval: Approval, now: float) -> str:
    """What a reply to ``approval``, denied with the button, at trio time ``now`` would do: ``"audit"``
    (recorded: within :data:`REASON_WINDOW`), ``"late"`` (the window closed), ``"already"`` (it has a
    reason) or ``"unknown"`` (not denied by the admin)."""
    if approval.state != "rejected" or approval.source != "admin" or approval.denied_at is None:
        return "unknown"
    if approval.reason is not None:
        return "already"
    return "late" if now - approval.denied_at > REASON_WINDOW else "audit"


class Grants:
    """The live grants, cached in memory and written through to the store."""

    def __init__(self, store: Store, *, wall_clock: WallClock = time.time, grants: list[Grant] | None = None):
        self._store = store
        self._clock = wall_clock
        self._grants: list[Grant] = list(grants or [])

    @classmethod
    async def load(cls, store: Store, wall_clock: WallClock = time.time) -> Grants:
        """The grants that are still live in the store."""
        return cls(store, wall_clock=wall_clock, grants=await store.active_grants(wall_clock()))

    async def add(self, pattern: str, seconds: float, created_by: str, client: str | None = None) -> Grant:
        """Grant ``pattern`` for ``seconds`` from now, to ``client``'s calls only (``None``: every
        client's); committed before returning.

        Raises ValueError for an unusable pattern or a non-positive duration."""
        error = validate_pattern(pattern)
        if error is not None:
            raise ValueError(error)
        if not seconds > 0:
            raise ValueError("a grant must last a positive time")
        now = self._clock()
        expires_at = now + seconds
        grant_id = await self._store.add_grant(pattern, expires_at, now, created_by, client)
        grant = Grant(
            pattern=pattern,
            expires_at=expires_at,
            created_at=now,
            id=grant_id,
            created_by=created_by,
            client=client,
        )
        self._grants.append(grant)
        return grant

    async def add_tool(
        self, canonical: str, seconds: float, created_by: str, client: str | None = None
    ) -> Grant:
        """Grant exactly the tool ``canonical`` (the "Approve 30m" button): its pattern is the name with
        ``*`` and ``\\`` escaped (:func:`~portero.core.policy.escape_glob`), so a tool that a server named
        ``create_*`` does not grant ``create_anything``."""
        return await self.add(escape_glob(canonical), seconds, created_by, client)

    async def revoke(self, pattern: str | None, client: str | None = None) -> int:
        """Revoke the live grants with exactly ``pattern`` (``None``: all), only ``client``'s when given;
        returns how many were revoked."""
        now = self._clock()
        count = await self._store.revoke_grants(pattern, now, client)
        self._grants = [
            g
            for g in self._grants
            if (pattern is not None and g.pattern != pattern) or (client is not None and g.client != client)
        ]
        return count

    def active(self) -> list[Grant]:
        """Live grants, soonest to expire first (expired ones are dropped from the cache)."""
        now = self._clock()
        self._grants = [g for g in self._grants if g.live(now)]
        return sorted(self._grants, key=lambda g: g.expires_at)

    def apply(self, decision: Decision, canonical: str, client: str | None = None) -> Decision:
        """``decision`` with a live grant for a call of ``client`` applied (require-approval → allow;
        never over a deny)."""
        return apply_grant(decision, self._grants, canonical, self._clock(), client)

    def match(self, canonical: str, client: str | None = None) -> Grant | None:
        """The live grant for ``canonical`` (a call of ``client``) that lasts longest, or None."""
        return match_grant(self._grants, canonical, self._clock(), client)


class ApprovalBroker:
    """Matches ``require-approval`` calls with the admin's decisions. See the module docstring.

    ``approver`` may be set after construction (the bot is created after the broker) and may be None
    (no ``[telegram]`` section: every approval is rejected at once). ``timeout`` is in seconds and runs on
    trio's clock, so tests can use ``autojump_clock``; ``wall_clock`` only stamps records.
    """

    def __init__(
        self,
        store: Store,
        *,
        timeout: float,
        approver: Approver | None,
        wall_clock: WallClock = time.time,
        grants: Grants | None = None,
    ) -> None:
        self.store = store
        self.timeout = timeout
        self.approver = approver
        self._clock = wall_clock
        self.grants = grants if grants is not None else Grants(store, wall_clock=wall_clock)
        self._pending: dict[str, Approval] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        # Approvals the admin denied, by id, oldest first: a reply may give the reason (REASON_WINDOW).
        self._denied: OrderedDict[str, Approval] = OrderedDict()
        self._inflight = 0
        self._drained: trio.Event | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        store: Store,
        *,
        timeout: float,
        approver: Approver | None,
        wall_clock: WallClock = time.time,
    ) -> ApprovalBroker:
        """The start-up path: close approvals left pending by a previous run and load the live grants."""
        closed = await store.expire_stale_pending(wall_clock())
        if closed:
            log.info("closed %d approval(s) left pending by the previous run as expired", closed)
        grants = await Grants.load(store, wall_clock)
        return cls(store, timeout=timeout, approver=approver, wall_clock=wall_clock, grants=grants)

    def pending(self) -> list[Approval]:
        """Approvals still waiting for a decision, oldest first."""
        return sorted((a for a in self._pending.values() if a.state == "pending"), key=lambda a: a.created_at)

    def get(self, approval_id: str) -> Approval | None:
        return self._pending.get(approval_id)

    def decide(
        self,
        approval_id: str,
        approved: bool,
        *,
        grant_seconds: float | None = None,
        source: str = "admin",
    ) -> str:
        """Decide a pending approval; returns ``"ok"``, ``"already"`` (decided, expired or withdrawn) or
        ``"unknown"``.

        Ids are single-use. ``grant_seconds`` (only with ``approved``) also grants this tool for that long.
        """
        approval = self._pending.get(approval_id)
        if approval is None:
            return "already" if approval_id in self._finished else "unknown"
        if approval.state != "pending":
            return "already"
        if approved:
            approval.grant_seconds = grant_seconds
        elif source == "admin":
            self._remember_denied(approval)
        self._resolve(approval, "approved" if approved else "rejected", source)
        return "ok"

    def deny_with_reason(self, approval_id: str, text: str, *, source: str = "admin") -> str:
        """Deny a pending approval with the admin's reason, which the model reads in the refusal
        (:func:`clean_reason`, then anonymized with :attr:`Approval.to_fake`: the admin writes real names,
        the model knows the fake ones). Returns ``"ok"``, ``"empty"`` (nothing in ``text``: still
        pending), or ``"already"`` / ``"unknown"`` as :meth:`decide`."""
        approval = self._pending.get(approval_id)
        if approval is None:
            return "already" if approval_id in self._finished else "unknown"
        if approval.state != "pending":
            return "already"
        reason = clean_reason(text)
        if reason is None:
            return "empty"
        approval.reason = str(approval.to_fake(reason))
        if source == "admin":
            self._remember_denied(approval)
        self._resolve(approval, "rejected", source)
        return "ok"

    def approve_edited(self, approval_id: str, arguments: dict[str, Any]) -> tuple[str, list[str]]:
        """Approve a pending approval with ``arguments`` (real values, as the admin wrote them) instead of
        the client's. Returns ``("ok", [])``; ``("invalid", problems)`` when they do not fit the tool's
        ``inputSchema`` (the approval stays pending); ``("too-long", [])`` when editing was not offered
        (:data:`EDIT_MAX_CHARS`); or ``("already" | "unknown", [])`` as :meth:`decide`."""
        approval = self._pending.get(approval_id)
        if approval is None:
            return ("already" if approval_id in self._finished else "unknown"), []
        if approval.state != "pending":
            return "already", []
        if not approval.editable:
            return "too-long", []
        schema = approval.input_schema if isinstance(approval.input_schema, dict) else {"type": "object"}
        problems = validate_arguments(arguments, schema)
        if problems:
            return "invalid", problems
        approval.edited_arguments = arguments
        self._resolve(approval, "approved", "admin")
        return "ok", []

    def denied(self, approval_id: str) -> Approval | None:
        """An approval the admin denied lately (for the reply that gives the reason), or None."""
        self._forget_denied()
        return self._denied.get(approval_id)

    async def give_reason(self, approval_id: str, text: str) -> str:
        """The admin's reason for ``approval_id``, denied with the button: recorded in the approval
        (anonymized like :meth:`deny_with_reason`'s); the call has answered already. Returns
        :func:`reason_state`'s answer (``"audit"``: recorded), or ``"empty"`` for a reply with nothing in
        it."""
        approval = self.denied(approval_id)
        if approval is None:
            return "unknown"
        state = reason_state(approval, trio.current_time())
        if state != "audit":
            return state
        reason = clean_reason(text)
        if reason is None:
            return "empty"
        reason = str(approval.to_fake(reason))
        approval.reason = reason
        try:
            await self.store.set_approval_reason(approval.id, reason)
        except Exception:
            log.exception("could not record the deny reason of approval %s", approval.id)
        return state

    def _remember_denied(self, approval: Approval) -> None:
        approval.denied_at = trio.current_time()
        self._denied[approval.id] = approval
        self._forget_denied()

    def _forget_denied(self) -> None:
        now = trio.current_time()
        while self._denied:
            oldest = next(iter(self._denied.values()))
            if len(self._denied) <= _REMEMBERED and now - (oldest.denied_at or 0.0) <= REASON_WINDOW:
                break
            self._denied.popitem(last=False)

    def _resolve(self, approval: Approval, state: str, source: str) -> None:
        approval.state = state
        approval.source = source
        approval.decided_at = self._clock()
        metrics.approval_decided(state, approval.decided_at - approval.created_at)
        approval.event.set()

    async def shutdown(self) -> None:
        """Reject every pending approval (``shutdown``) and refuse new ones; waits briefly for the woken
        callers to record their outcome, so the store can be closed next."""
        self._closed = True
        for approval in list(self._pending.values()):
            if approval.state == "pending":
                self._resolve(approval, "rejected", "shutdown")
        if self._inflight:
            self._drained = trio.Event()
            with trio.move_on_after(SHUTDOWN_GRACE):
                await self._drained.wait()

    async def request(
        self,
        *,
        tool: str,
        server: str,
        rule: str,
        arguments_real: dict[str, Any],
        arguments_fake: dict[str, Any],
        session: str | None,
        on_wait_tick: WaitTick | None = None,
        client: str | None = None,
        input_schema: Any = None,
        to_fake: Callable[[Any], Any] | None = None,
    ) -> Outcome:
        """Ask the admin and wait for the outcome (at most ``timeout`` seconds).

        ``input_schema`` is the tool's, for edited arguments; ``to_fake`` anonymizes what the admin writes.

        ``on_wait_tick(elapsed, timeout)`` is awaited about every :data:`TICK_INTERVAL` seconds while
        waiting (for progress notifications); its errors are logged and ignored. Cancellation withdraws the
        approval (recorded as ``expired`` / ``cancelled``) and propagates.
        """
        approver = self.approver
        if self._closed:
            return Outcome("rejected", "shutdown", "the gateway is shutting down")
        if approver is None:
            return Outcome("rejected", "no-approver", NO_APPROVER_REASON)
        if not approver.available:
            return Outcome("rejected", "unreachable", _unreachable(approver))

        now = self._clock()
        approval = Approval(
            id=secrets.token_urlsafe(12),
            tool=tool,
            server=server,
            rule=rule,
            arguments_real=arguments_real,
            arguments_fake=arguments_fake,
            session=session,
            created_at=now,
            expires_at=now + self.timeout,
            client=client,
            input_schema=input_schema,
        )
        if to_fake is not None:
            approval.to_fake = to_fake
        await self.store.add_approval(approval.to_record())
        self._pending[approval.id] = approval
        self._inflight += 1
        announced = False
        try:
            with trio.move_on_after(self.timeout):
                try:
                    await approver.announce(approval)
                except Exception:
                    log.warning("could not announce approval %s for %s", approval.id, tool, exc_info=True)
                    if approval.state == "pending":
                        self._resolve(approval, "rejected", "unreachable")
                else:
                    announced = True
                await self._wait(approval, on_wait_tick)
            if approval.state == "pending":
                self._resolve(approval, "expired", "timeout")
        finally:
            if approval.state == "pending":
                # Only reachable while an exception (in practice Cancelled: the client went away) unwinds.
                self._resolve(approval, "expired", "cancelled")
            del self._pending[approval.id]
            self._remember(approval.id)
            with trio.CancelScope(shield=True):
                await self._conclude(approval, approver if announced else None)
            self._inflight -= 1
            if self._inflight == 0 and self._drained is not None:
                self._drained.set()
        return self._outcome(approval)

    async def _wait(self, approval: Approval, on_wait_tick: WaitTick | None) -> None:
        if on_wait_tick is None:
            await approval.event.wait()
            return
        started = trio.current_time()
        while not approval.event.is_set():
            with trio.move_on_after(TICK_INTERVAL):
                await approval.event.wait()
            if approval.event.is_set():
                break
            # A slow callback must not hold up the outcome past the next tick.
            with trio.move_on_after(TICK_INTERVAL):
                try:
                    await on_wait_tick(trio.current_time() - started, self.timeout)
                except Exception:
                    log.debug("on_wait_tick failed for approval %s", approval.id, exc_info=True)

    async def _conclude(self, approval: Approval, approver: Approver | None) -> None:
        """Record the decision, add the grant, settle the message. Never raises (runs in ``finally``)."""
        assert approval.decided_at is not None
        try:
            await self.store.decide_approval(
                approval.id, approval.state, approval.source, approval.decided_at
            )
        except Exception:
            log.exception("could not record the decision of approval %s", approval.id)
        if approval.reason is not None:
            try:
                await self.store.set_approval_reason(approval.id, approval.reason)
            except Exception:
                log.exception("could not record the deny reason of approval %s", approval.id)
        if approval.edited_arguments is not None:
            try:
                await self.store.set_approval_edited_arguments(
                    approval.id, approval.to_fake(approval.edited_arguments)
                )
            except Exception:
                log.exception("could not record the edited arguments of approval %s", approval.id)
        if approval.state == "approved" and approval.grant_seconds:
            try:
                # "Approve 30m" grants the tool to the client that asked, not to every client.
                await self.grants.add_tool(
                    approval.tool, approval.grant_seconds, created_by=approval.source, client=approval.client
                )
            except Exception:
                log.exception("could not add the grant for %s", approval.tool)
        if approver is not None:
            with trio.move_on_after(SETTLE_TIMEOUT) as scope:
                try:
                    await approver.settle(approval)
                except Exception:
                    log.warning("could not settle approval %s", approval.id, exc_info=True)
            if scope.cancelled_caught:
                log.warning("settling approval %s timed out", approval.id)

    def _remember(self, approval_id: str) -> None:
        self._finished[approval_id] = None
        while len(self._finished) > _REMEMBERED:
            self._finished.popitem(last=False)

    def _outcome(self, approval: Approval) -> Outcome:
        state, source = approval.state, approval.source
        if source == "no-approver":
            reason = NO_APPROVER_REASON
        elif source == "unreachable":
            reason = _unreachable(self.approver)
        elif source == "timeout":
            reason = f"approval timed out after {format_duration(self.timeout)}"
        elif source == "shutdown":
            reason = "the gateway shut down before the admin decided"
        elif source == "cancelled":
            reason = "the call was cancelled while waiting for approval"
        elif state == "approved":
            reason = "approved by the admin"
            if approval.edited_arguments is not None:
                reason += " with edited arguments"
            if approval.grant_seconds:
                reason += f" (and granted for {format_duration(approval.grant_seconds)})"
        else:
            reason = denial_text(approval.reason)
        return Outcome(state, source, reason, approval.edited_arguments, approval.id)
