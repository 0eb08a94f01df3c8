"""Pinned tool definitions in the running gateway: which tools are quarantined, and keeping the store current.

:class:`PinGuard` holds every pin in memory (loaded once at start), so deciding whether a tool is shown
never waits for the database: :meth:`PinGuard.review` runs inside ``Router.rebuild_catalog`` (whenever a
server's listing is loaded: start, restart, list_changed refresh) and is synchronous. It applies the pure
decision of :func:`portero.core.pins.evaluate` to each listed tool; the pins that changed are written by
:meth:`PinGuard.run` in the background, and each change the admin must look at becomes one
:class:`~portero.core.pins.Question` for :attr:`PinGuard.on_question` (the Telegram bot; kept until one is
attached, and logged either way).

Decisions come from the Telegram buttons (:meth:`PinGuard.decide`) or from ``portero pins approve|block``,
another process writing the store: :meth:`PinGuard.run` reads the pins' stamp (a count and the latest
``updated_at``: one aggregate read) every :data:`POLL_INTERVAL` seconds and reloads the pins when it moved.
Every change of a state goes through :attr:`PinGuard.around_change`, so the router can tell sessions that
the tool list changed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import trio

from ..core import pins
from ..core.descriptions import check_tool, render_flags
from ..core.pins import Pin, Question

if TYPE_CHECKING:
    from ..store import Store

log = logging.getLogger("portero.pins")

POLL_INTERVAL = 1.0  # seconds between two reads of the pins' stamp (decisions made by `portero pins`)
MAX_WAITING_QUESTIONS = 100  # questions kept while no bot is attached (the oldest dropped)

REASONS = {
    "quarantined": "waiting for the admin to approve its definition",
    "blocked": "blocked by the admin",
}


class PinGuard:
    """The pins of the running gateway. ``mode`` is ``[pins] mode``; ``store`` None keeps them in memory."""

    def __init__(self, mode: str, store: Store | None, *, clock: Callable[[], float] = time.time) -> None:
        self.mode = mode
        self._store = store
        self._clock = clock
        self._pins: dict[tuple[str, str], Pin] = {}
        self._unsaved: dict[tuple[str, str], Pin] = {}
        self._dirty = trio.Event()
        self._flush_lock = trio.Lock()
        self._generation = 0  # moves on every change made here: a reload read meanwhile is stale
        self._stamp: tuple[int, float] | None = None
        # server -> (the tools list reviewed last, what review decided for it): a rebuild that does not
        # come with a new listing costs no hashing.
        self._reviewed: dict[str, list[dict[str, Any]]] = {}
        self._waiting: list[Question] = []
        self.on_question: Callable[[Question], None] | None = None
        # Called with a function that changes states: the router compares what sessions see around it.
        self.around_change: Callable[[Callable[[], None]], None] = lambda change: change()

    # -- reading ---------------------------------------------------------------------------------

    def refusal(self, server: str, tool: str) -> str | None:
        """Why ``server``'s ``tool`` is hidden and refused, or None when it is not."""
        if self.mode == "off":
            return None
        pin = self._pins.get((server, tool))
        return None if pin is None else REASONS.get(pin.state)

    def pin(self, server: str, tool: str) -> Pin | None:
        return self._pins.get((server, tool))

    def held(self) -> list[Pin]:
        """The pins the admin has to look at (quarantined) and those blocked, quarantined first, each
        group by name; none in ``off`` mode."""
        if self.mode == "off":
            return []
        found = [p for p in self._pins.values() if p.state in REASONS]
        return sorted(found, key=lambda p: (p.state != "quarantined", p.server, p.tool))

    # -- reviewing listings --------------------------------------------------------------------------

    def review(self, listings: Mapping[str, Sequence[dict[str, Any]]]) -> None:
        """Apply the mode to every tool the ready servers list (``server -> tools``, as sent). Synchronous:
        the states change in memory at once; the store write and the questions follow."""
        if self.mode == "off":
            return
        now = self._clock()
        for server, tools in listings.items():
            if self._reviewed.get(server) is tools:
                continue
            held: list[str] = []
            for tool in tools:
                name = tool.get("name")
                if not isinstance(name, str) or not name:
                    continue
                if self._review_one(server, name, pins.definition_of(tool), listings, now):
                    held.append(name)
            if len(held) == 1:
                log.warning(
                    "tool %s/%s is quarantined: %s; `portero pins approve %s/%s` or the Telegram buttons",
                    server,
                    held[0],
                    REASONS["quarantined"],
                    server,
                    held[0],
                )
            elif held:  # one line for a server's many (a first start in approve mode)
                log.warning(
                    "%d tools of %s are quarantined, waiting for the admin to approve their definitions: "
                    "`portero pins` lists them, `portero pins approve '%s/*'` approves them all",
                    len(held),
                    server,
                    server,
                )
            if isinstance(tools, list):
                self._reviewed[server] = tools

    def _review_one(
        self,
        server: str,
        name: str,
        definition: dict[str, Any],
        listings: Mapping[str, Sequence[dict[str, Any]]],
        now: float,
    ) -> bool:
        """Review one tool; True when it was just quarantined (or held blocked)."""
        key = (server, name)
        verdict = pins.evaluate(self.mode, self._pins.get(key), definition, server=server, tool=name, now=now)
        if verdict.pin is None:
            return False
        pin = verdict.pin
        self._pins[key] = pin
        self._unsaved[key] = pin
        self._generation += 1
        self._dirty.set()
        if verdict.state != "approved":
            log.debug(
                "tool %s/%s is quarantined (%s)", server, name, "changed" if pin.approved_hash else "new"
            )
        if verdict.ask:
            others = {
                str(t.get("name")): other
                for other, tools in listings.items()
                if other != server
                for t in tools
                if isinstance(t.get("name"), str)
            }
            flags = render_flags(check_tool(definition, server=server, others=others))
            self._ask(pins.question(pin, flags=flags))
        return verdict.state != "approved"

    def _ask(self, question: Question) -> None:
        if self.on_question is not None:
            self.on_question(question)
            return
        self._waiting.append(question)
        del self._waiting[:-MAX_WAITING_QUESTIONS]

    def attach(self, on_question: Callable[[Question], None]) -> None:
        """Send questions to ``on_question`` from now on, starting with those asked before."""
        self.on_question = on_question
        waiting, self._waiting = self._waiting, []
        for question in waiting:
            current = self._pins.get((question.server, question.tool))
            if current is not None and current.hash == question.hash and current.state == "quarantined":
                on_question(question)

    def set_mode(self, mode: str) -> None:
        """SIGHUP: a new ``[pins] mode``; every listing is reviewed again under it (``off`` shows every
        tool, stored states stay for when pinning is back)."""
        if mode == self.mode:
            return

        def change() -> None:
            self.mode = mode
            self._reviewed.clear()
            self._generation += 1

        self.around_change(change)

    # -- deciding ------------------------------------------------------------------------------------

    async def decide(self, key: str, approve: bool, *, by: str) -> tuple[str, Pin | None]:
        """Approve or block the pin a question's ``key`` names (see :func:`portero.core.pins.question_key`).

        Returns ``("ok", pin)``, ``("already", pin)``, or ``("unknown", None)`` when no pin has that key any
        more (its definition changed since the question: a new question was asked)."""
        found = next((p for p in self._pins.values() if pins.question_key(p) == key), None)
        if found is None:
            return "unknown", None
        state = "approved" if approve else "blocked"
        new: Pin | None
        if self._store is None:
            if found.state == state:
                return "already", found
            now = self._clock()
            result = "ok"
            new = pins.approve(found, by=by, now=now) if approve else pins.block(found, by=by, now=now)
        else:
            await self._flush(self._store)  # the pin may not be written yet (asked a moment ago)
            result, new = await self._store.decide_pin(
                found.server, found.tool, state, by=by, expect_hash=found.hash
            )
            if result == "changed":
                return "unknown", None
        if new is not None:
            self._apply([new])
        return result, new

    def _apply(self, changed: Sequence[Pin]) -> None:
        """Put pins read or decided elsewhere in memory, telling the router when a state changes."""
        moved = [
            p for p in changed if (old := self._pins.get((p.server, p.tool))) is None or old.state != p.state
        ]

        def change() -> None:
            for p in changed:
                self._pins[(p.server, p.tool)] = p
            self._generation += 1

        if moved:
            for p in moved:
                log.info("tool %s/%s is %s (%s)", p.server, p.tool, p.state, p.decided_by or "-")
            self.around_change(change)
        else:
            change()

    # -- life ----------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read every pin from the store (once, before the servers start)."""
        if self._store is None:
            return
        self._stamp = await self._store.pins_stamp()
        self._pins = {(p.server, p.tool): p for p in await self._store.all_pins()}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write changed pins, and pick up decisions made by ``portero pins``, until cancelled."""
        task_status.started()
        if self._store is None:
            return
        while True:
            with trio.move_on_after(POLL_INTERVAL):
                await self._dirty.wait()
            self._dirty = trio.Event()
            try:
                await self._flush(self._store)
                await self._poll(self._store)
            except Exception as exc:  # the database is busy or broken: keep the pins in memory, retry
                log.warning("pins: the store could not be read or written: %s", exc)
                await trio.sleep(POLL_INTERVAL)

    async def _flush(self, store: Store) -> None:
        async with self._flush_lock:
            if not self._unsaved:
                return
            batch = list(self._unsaved.values())
            await store.save_pins(batch)
            for p in batch:
                if self._unsaved.get((p.server, p.tool)) is p:
                    del self._unsaved[(p.server, p.tool)]

    async def _poll(self, store: Store) -> None:
        stamp = await store.pins_stamp()
        if stamp == self._stamp:
            return
        generation = self._generation
        stored = await store.all_pins()
        if generation != self._generation or self._unsaved:
            return  # something changed here meanwhile: read again next time
        self._stamp = stamp
        changed = [p for p in stored if self._pins.get((p.server, p.tool)) != p]
        if changed:
            self._apply(changed)
