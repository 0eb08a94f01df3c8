"""Policy decisions and grants: pure functions of names, rules and a given time.

Nothing here reads a clock, touches the event loop or does I/O; callers pass ``now`` (wall-clock epoch
seconds). Every name is a *canonical* tool name such as ``github/create_issue`` (see SPEC, Names).

Patterns use one wildcard: ``*`` matches any run of characters, ``/`` included; every other character is
literal. Precedence, when several rules match a name:

1. an exact rule (a pattern without ``*``) beats every pattern;
2. among patterns, the one with more literal (non-``*``) characters wins;
3. a tie goes to the stricter action: ``deny`` > ``require-approval`` > ``allow``;
4. nothing matches: the configured default.

A client's own rules (``[[client]] policy``) are composed with the global ones into one engine per
client (``PolicyEngine(default, global_rules, first=client_rules)``): the same precedence over the
union, and at equal specificity the client's rule wins whatever its action (an exact client rule
replaces a global rule for the same name). So a client's ``github/create_pull_request = "allow"`` beats
a global ``github/* = "require-approval"``, while a global exact ``deny`` still beats a client's broad
``github/* = "allow"``. Their decisions say so: source ``client-rule:<pattern>``.

Rules the admin adds from the chat (Telegram ``/allow`` ``/deny`` ``/ask``, Always allow / Always deny;
kept in the store) join the same union (``PolicyEngine(..., chat=chat_rules)``): specificity still comes
first, and at equal specificity a client's own rule beats a chat rule, which beats a config rule, whatever
their actions (an exact chat rule replaces the config's exact rule for the same name; a client's exact
rule replaces both). Their decisions say ``chat-rule:<pattern>``.

A grant turns ``require-approval`` into ``allow`` for the names it matches until it expires. Its pattern is a
glob with one addition (see :func:`grant_match`): ``\\*`` is a literal ``*`` and ``\\\\`` a literal
backslash, so :func:`escape_glob` turns any canonical name into a grant pattern that matches that name only
(a server may name a tool ``create_*``). A grant never overrides ``deny`` -- :func:`apply_grant` only ever
touches ``require-approval`` decisions, so callers that route every decision through it cannot get that
wrong.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

import attrs

ACTIONS = ("allow", "deny", "require-approval")
# "Approve 30m" (Telegram's button, the console's): approve the call and grant that one tool this long.
QUICK_GRANT_SECONDS = 30 * 60

# Higher is stricter; used to break ties between equally specific patterns.
_STRICTNESS = {"allow": 0, "require-approval": 1, "deny": 2}

MAX_PATTERN_LENGTH = 200


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    body = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.compile(body, re.DOTALL)


def glob_match(pattern: str, name: str) -> bool:
    """Whether ``name`` matches ``pattern`` as a whole (``*`` = any run of characters, including ``/``)."""
    return _compile(pattern).fullmatch(name) is not None


def escape_glob(name: str) -> str:
    """The grant pattern that matches exactly ``name`` and nothing else (see :func:`grant_match`).

    ``\\`` and ``*`` are escaped with a backslash; every other character is literal anyway. A name without
    either (nearly every name) is its own pattern: ``github/create_issue`` stays ``github/create_issue``.
    """
    return name.replace("\\", "\\\\").replace("*", "\\*")


@functools.lru_cache(maxsize=1024)
def _compile_grant(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and pattern[i + 1 : i + 2] in ("\\", "*"):
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        parts.append(".*" if ch == "*" else re.escape(ch))
        i += 1
    return re.compile("".join(parts), re.DOTALL)


def grant_match(pattern: str, name: str) -> bool:
    """Whether the grant ``pattern`` matches ``name`` as a whole.

    Like :func:`glob_match` (``*`` = any run of characters), except that ``\\*`` matches a literal ``*`` and
    ``\\\\`` a literal backslash; a backslash before anything else is itself. Rules stay plain globs.
    """
    return _compile_grant(pattern).fullmatch(name) is not None


def literal_length(pattern: str) -> int:
    """How many characters of ``pattern`` are not ``*``: the measure of a pattern's specificity."""
    return len(pattern) - pattern.count("*")


def validate_pattern(pattern: str) -> str | None:
    """Return what is wrong with ``pattern`` as a one-line message, or ``None`` when it is usable."""
    if not isinstance(pattern, str):
        return "a pattern must be a string"
    if not pattern:
        return "a pattern must not be empty"
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"a pattern must be at most {MAX_PATTERN_LENGTH} characters (this one has {len(pattern)})"
    if any(ch.isspace() for ch in pattern):
        return "a pattern must not contain whitespace"
    if not pattern.isprintable():
        return "a pattern must contain only printable characters"
    return None


@attrs.frozen
class Decision:
    """What to do with a call: ``action`` is one of :data:`ACTIONS`.

    ``source`` says why, as recorded in the audit log: ``rule:<pattern>``, ``client-rule:<pattern>``,
    ``chat-rule:<pattern>``, ``default`` or ``grant:<pattern>``.
    ``rule`` is the matching pattern (of the rule or grant), ``None`` for the default.
    """

    action: str
    source: str
    rule: str | None = None


class PolicyEngine:
    """Decides the action for canonical names from a default action and a mapping of pattern → action.

    Construction validates everything and raises :class:`ValueError` with one message per problem. Results
    are cached per name: the set of tool names is small and fixed between ``tools/list`` refreshes.
    """

    def __init__(
        self,
        default: str,
        rules: Mapping[str, str],
        *,
        first: Mapping[str, str] | None = None,
        chat: Mapping[str, str] | None = None,
    ) -> None:
        problems: list[str] = []
        if default not in ACTIONS:
            problems.append(f"default action {default!r} is not one of {', '.join(ACTIONS)}")
        first = dict(first or {})
        chat = dict(chat or {})
        for pattern, action in [*rules.items(), *first.items(), *chat.items()]:
            error = validate_pattern(pattern)
            if error is not None:
                problems.append(f"rule {pattern!r}: {error}")
            if action not in ACTIONS:
                problems.append(f"rule {pattern!r}: action {action!r} is not one of {', '.join(ACTIONS)}")
        if problems:
            raise ValueError("; ".join(problems))
        self.default = default
        self.rules, self.first, self.chat = dict(rules), first, chat  # as given: see with_chat
        # (pattern, action, source prefix, rank): the lower rank wins a tie of specificity -- a client's
        # own rule (0), then a rule from the chat (1), then the config's (2).
        tagged = [
            *((p, a, "rule", 2) for p, a in rules.items()),
            *((p, a, "chat-rule", 1) for p, a in chat.items()),
            *((p, a, "client-rule", 0) for p, a in first.items()),
        ]
        self._exact: dict[str, tuple[str, str]] = {}
        for p, a, prefix, _rank in tagged:  # lowest rank last: it replaces the others' exact rule
            if "*" not in p:
                self._exact[p] = (a, prefix)
        # Most specific first, then by rank, then strictest first: the first match is the winner.
        self._patterns: list[tuple[str, str, str]] = [
            (p, a, prefix)
            for p, a, prefix, _rank in sorted(
                (item for item in tagged if "*" in item[0]),
                key=lambda item: (-literal_length(item[0]), item[3], -_STRICTNESS[item[1]], item[0]),
            )
        ]
        self._cache: dict[str, Decision] = {}

    def with_chat(self, chat: Mapping[str, str]) -> PolicyEngine:
        """This engine with ``chat`` as its rules from the chat (replacing the ones it has); itself when
        they are the same."""
        if dict(chat) == self.chat:
            return self
        return PolicyEngine(self.default, self.rules, first=self.first, chat=chat)

    def decide(self, canonical: str) -> Decision:
        """The policy decision for ``canonical`` (grants not applied; see :func:`apply_grant`)."""
        cached = self._cache.get(canonical)
        if cached is not None:
            return cached
        decision = self._decide(canonical)
        self._cache[canonical] = decision
        return decision

    def _decide(self, canonical: str) -> Decision:
        exact = self._exact.get(canonical)
        if exact is not None:
            action, prefix = exact
            return Decision(action, f"{prefix}:{canonical}", canonical)
        for pattern, action, prefix in self._patterns:
            if glob_match(pattern, canonical):
                return Decision(action, f"{prefix}:{pattern}", pattern)
        return Decision(self.default, "default", None)

    def visible(self, canonical: str) -> bool:
        """Whether the tool is listed at all: denied tools are left out of ``tools/list``."""
        return self.decide(canonical).action != "deny"


@attrs.frozen
class Grant:
    """A temporary allowance for names matching ``pattern``; times are wall-clock epoch seconds.

    A grant is live while ``now < expires_at``: at ``expires_at`` exactly it has expired. A grant with a
    ``client`` applies to that client's calls only; without one, to every client's.
    """

    pattern: str
    expires_at: float
    created_at: float
    id: int | None = None
    created_by: str = ""
    client: str | None = None

    def live(self, now: float) -> bool:
        return now < self.expires_at

    def covers(self, client: str | None) -> bool:
        """Whether the grant applies to a call of ``client``."""
        return self.client is None or self.client == client


def match_grant(
    grants: Iterable[Grant], canonical: str, now: float, client: str | None = None
) -> Grant | None:
    """The live grant matching ``canonical`` for a call of ``client`` that lasts longest, or ``None``."""
    best: Grant | None = None
    for grant in grants:
        if grant.live(now) and grant.covers(client) and grant_match(grant.pattern, canonical):
            if best is None or grant.expires_at > best.expires_at:
                best = grant
    return best


def apply_grant(
    decision: Decision, grants: Iterable[Grant], canonical: str, now: float, client: str | None = None
) -> Decision:
    """Turn a ``require-approval`` decision into ``allow`` when a live grant matches (one of ``client``'s
    or one for every client); else return it as is.

    ``deny`` and ``allow`` decisions are never changed: a grant cannot override a deny.
    """
    if decision.action != "require-approval":
        return decision
    grant = match_grant(grants, canonical, now, client)
    if grant is None:
        return decision
    return Decision("allow", f"grant:{grant.pattern}", grant.pattern)
