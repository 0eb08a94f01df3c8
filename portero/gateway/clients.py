"""What each client may see and do: its tool globs and its policy, composed with the global rules.

Pure: no trio, no I/O. The router keeps one :class:`ClientView` per configured client (rebuilt on
reload) and asks the view of the client whose token opened the session:

- :meth:`ClientView.sees` -- whether a canonical name (``server/tool``, ``server/prompt``,
  ``server/uri``) is among the client's ``tools`` globs (:func:`~portero.core.policy.glob_match`,
  as policy patterns match). What a client does not see is neither listed nor served: a call to it is
  refused as an unknown tool would be.
- :attr:`ClientView.policy` -- the client's own rules composed with the global ones
  (``PolicyEngine(default, global, first=own)``: see :mod:`portero.core.policy`); ``None`` for a client
  without rules of its own, which follows the global engine (also across reloads).

``server.bearer_token`` is the client "default": every name, no rules of its own. A name that is not
configured (a client removed by a reload while one of its calls was running) sees nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from ..config import DEFAULT_CLIENT, ClientSection, PoliciesSection
from ..core.policy import PolicyEngine, glob_match

__all__ = ["NOBODY", "ClientView", "client_views"]


@attrs.define(eq=False)
class ClientView:
    name: str
    tools: tuple[str, ...] = ("*",)
    policy: PolicyEngine | None = None  # None: the global engine
    _seen: dict[str, bool] = attrs.field(factory=dict, repr=False)

    def sees(self, canonical: str) -> bool:
        """Whether ``canonical`` matches one of the client's tool globs (cached per name)."""
        seen = self._seen.get(canonical)
        if seen is None:
            seen = any(glob_match(pattern, canonical) for pattern in self.tools)
            if len(self._seen) < _SEEN_LIMIT:
                self._seen[canonical] = seen
        return seen


_SEEN_LIMIT = 100_000  # names remembered per client (client-chosen resource URIs must not grow it forever)

NOBODY = ClientView(name="", tools=())


def client_views(clients: Iterable[ClientSection], policies: PoliciesSection) -> dict[str, ClientView]:
    """One view per configured client, and "default" (every name, the global rules) unless a
    ``[[client]]`` entry takes that name. Raises ValueError for rules the engine refuses (the config
    checks have refused them already)."""
    views = {DEFAULT_CLIENT: ClientView(name=DEFAULT_CLIENT)}
    for c in clients:
        engine = PolicyEngine(policies.default, dict(policies.rules), first=c.policy) if c.policy else None
        views[c.name] = ClientView(name=c.name, tools=tuple(c.tools), policy=engine)
    return views
