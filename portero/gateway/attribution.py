"""Which client session a server's own message belongs to.

stdio carries nothing that says which client session a server's message is for, and one process
serves every session. The rules, in order:

- progress notifications follow their progress token, which the gateway rewrites per call
  (``pt<n>``), so two sessions using the same token never see each other's progress;
- a ``per_session = true`` server's process belongs to one session: everything it sends is that
  session's;
- otherwise a message is attributed only when that is certain: exactly one session has requests in
  flight on that server (its most recent request's stream gets it). With several sessions in flight
  a server→client request (sampling, elicitation, roots) is refused with an error to the server —
  never guessed — and a log message goes to every session's GET stream, as with none in flight.
"""

from __future__ import annotations

import itertools
from typing import Any

from .sessions import AnswerSlot, ClientSession, RequestContext


class Attribution:
    def __init__(self) -> None:
        # Gateway progress token -> (request context, the client's own progress token)
        self._progress: dict[str, tuple[RequestContext, Any]] = {}
        self._progress_ids = itertools.count(1)
        # Per upstream (by name): request contexts with a request in flight on it, in start order.
        self._active: dict[str, list[RequestContext]] = {}
        # Upstream name -> the session that owns it (per_session processes)
        self._owner: dict[str, ClientSession] = {}
        # (upstream, its request id) -> (where we asked, our id, slot): for its notifications/cancelled
        self._asks: dict[tuple[str, Any], tuple[RequestContext, str, AnswerSlot]] = {}
        self._ask_ids = itertools.count(1)

    # -- progress ----------------------------------------------------------------------------
    def progress_token(self, ctx: RequestContext, client_token: Any) -> str:
        token = f"pt{next(self._progress_ids)}"
        self._progress[token] = (ctx, client_token)
        return token

    def release_progress(self, token: str) -> None:
        self._progress.pop(token, None)

    def progress_target(self, token: Any) -> tuple[RequestContext, Any] | None:
        return self._progress.get(str(token))

    # -- requests in flight --------------------------------------------------------------------
    def begin(self, upstream: str, ctx: RequestContext) -> None:
        self._active.setdefault(upstream, []).append(ctx)

    def end(self, upstream: str, ctx: RequestContext) -> None:
        active = self._active.get(upstream)
        if active is not None:
            active.remove(ctx)
            if not active:
                del self._active[upstream]

    def set_owner(self, upstream: str, session: ClientSession) -> None:
        self._owner[upstream] = session

    def drop_owner(self, upstream: str) -> None:
        self._owner.pop(upstream, None)

    def attributed(self, upstream: str) -> RequestContext | None:
        """Where a message of ``upstream`` goes when it is certain; None otherwise (see above)."""
        owner = self._owner.get(upstream)
        active = self._active.get(upstream) or []
        if owner is not None:
            if owner.closed:
                return None
            mine = [c for c in active if c.session is owner]
            return mine[-1] if mine else RequestContext(session=owner)
        if not active:
            return None
        sessions = {id(c.session) for c in active}
        return active[-1] if len(sessions) == 1 else None

    def busy_sessions(self, upstream: str) -> int:
        return len({id(c.session) for c in self._active.get(upstream) or []})

    # -- the server's requests to a client ---------------------------------------------------------
    def ask(self, upstream: str, their_id: Any, ctx: RequestContext) -> tuple[str, AnswerSlot]:
        our_id = f"g{next(self._ask_ids)}"
        slot = AnswerSlot()
        self._asks[(upstream, their_id)] = (ctx, our_id, slot)
        return our_id, slot

    def forget_ask(self, upstream: str, their_id: Any) -> None:
        self._asks.pop((upstream, their_id), None)

    def asked(self, upstream: str, their_id: Any) -> tuple[RequestContext, str, AnswerSlot] | None:
        try:
            return self._asks.get((upstream, their_id))
        except TypeError:  # an unhashable id from a hostile server
            return None
