"""The console as an approver, next to the Telegram bot (:class:`portero.approvals.Approvers`).

An approval needs no message here: the console's pages read the broker's pending table (and refresh
themselves every two seconds). :meth:`ConsoleApprover.settle` keeps the
last decisions, so the page can say "already decided: approved in Telegram" to a second approver.

The console can approve only once a password is set (``portero console passwd``, maybe by another process
while the gateway runs): :meth:`ConsoleApprover.watch_password` reads the setting every
:data:`PASSWORD_POLL` seconds, and ``available`` follows it.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

import attrs
import trio

from .auth import PASSWORD_KEY

if TYPE_CHECKING:
    from ...approvals import Approval
    from ...store import Store

log = logging.getLogger("portero.console")

PASSWORD_POLL = 2.0  # seconds between two reads of the password setting
RECENT_DECISIONS = 50


@attrs.frozen
class Decided:
    """An approval that has left the broker, as the console lists it."""

    id: str
    tool: str
    client: str | None
    state: str
    source: str
    decided_at: float | None
    reason: str | None


def decided_by(source: str) -> str:
    """Who or what decided, for a person: ``admin`` is Telegram's admin."""
    return {
        "console": "in the console",
        "admin": "in Telegram",
        "timeout": "by the timeout",
        "shutdown": "by the shutdown",
        "cancelled": "by the client going away",
        "unreachable": "because no approver was reachable",
    }.get(source, f"({source})")


class ConsoleApprover:
    def __init__(self) -> None:
        self.password: str | None = None  # the stored hash, None while no password is set
        self.recent: deque[Decided] = deque(maxlen=RECENT_DECISIONS)

    @property
    def available(self) -> bool:
        return self.password is not None

    @property
    def unavailable_reason(self) -> str:
        return "the console has no password yet (portero console passwd)"

    async def announce(self, approval: Approval) -> None:
        """Nothing to send: the pages read the broker's pending table (and refresh themselves)."""

    async def settle(self, approval: Approval) -> None:
        self.recent.appendleft(
            Decided(
                id=approval.id,
                tool=approval.tool,
                client=approval.client,
                state=approval.state,
                source=approval.source,
                decided_at=approval.decided_at,
                reason=approval.reason,
            )
        )

    def find(self, approval_id: str) -> Decided | None:
        return next((d for d in self.recent if d.id == approval_id), None)

    async def refresh(self, store: Store) -> str | None:
        """Read the stored password hash now (after a login attempt, say); returns it."""
        try:
            value = await store.get_setting(PASSWORD_KEY)
        except Exception:
            log.warning("could not read the console password setting", exc_info=True)
            return self.password
        if (value is None) != (self.password is None):
            log.info("console password %s", "removed" if value is None else "set: the console can log in")
        self.password = value
        return value

    async def watch_password(
        self, store: Store, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await self.refresh(store)
        if self.password is None:
            log.warning(
                "[console] is enabled but has no password: run `portero console passwd` to log in to /console"
            )
        task_status.started()
        while True:
            await trio.sleep(PASSWORD_POLL)
            await self.refresh(store)
