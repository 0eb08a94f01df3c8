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
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import trio

from portero import metrics
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


@attrs.frozen
class Outcome:
    """How an approval ended: ``decision`` is ``approved``, ``rejected`` or ``expired``; ``source`` is who
    or what decided (for the audit record); ``reason`` is one line for the model."""

    decision: str
    source: str
    reason: str

    @property
    def approved(self) -> bool:
        return self.decision == "approved"


NO_APPROVER_REASON = "no approver configured (no [telegram] section)"
UNREACHABLE_REASON = "Telegram unreachable"


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
        self._resolve(approval, "approved" if approved else "rejected", source)
        return "ok"

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
    ) -> Outcome:
        """Ask the admin and wait for the outcome (at most ``timeout`` seconds).

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
            return Outcome("rejected", "unreachable", UNREACHABLE_REASON)

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
        )
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
            reason = UNREACHABLE_REASON
        elif source == "timeout":
            reason = f"approval timed out after {format_duration(self.timeout)}"
        elif source == "shutdown":
            reason = "the gateway shut down before the admin decided"
        elif source == "cancelled":
            reason = "the call was cancelled while waiting for approval"
        elif state == "approved":
            reason = "approved by the admin"
            if approval.grant_seconds:
                reason += f" (and granted for {format_duration(approval.grant_seconds)})"
        else:
            reason = "approval denied by the admin"
        return Outcome(state, source, reason)
