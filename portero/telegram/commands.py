"""The admin's commands (/status /grant /revoke /pending /logs /help, and the rules from the chat: /allow
/deny /ask /unrule /rules): what each does, and what it answers.

A command gets its arguments and returns a :class:`Reply`; the bot sends it (and decides who may command).
The handlers only read the broker, the store and the status provider, except /grant and /revoke, which
change the broker's grants, and /allow /deny /ask /unrule, which change the rules from the chat
(:class:`RuleBook`, the router).
"""

from __future__ import annotations

import functools
import inspect
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from ..durations import format_duration, parse_duration
from ..store import StoreError
from . import render

if TYPE_CHECKING:
    from ..approvals import Approval, ApprovalBroker
    from ..core.policy import PolicyEngine
    from ..store import Store

__all__ = ["AdminCommands", "Reply", "RuleBook", "StatusProvider"]

# Returns (or returns an awaitable of)
# ``{"children": [{"name", "state", "tools", "restarts"}], "uptime_s": float, "pending": int}``.
StatusProvider = Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]


class RuleBook(Protocol):
    """Where the rules from the chat live (the router): the engine in force (its ``default`` and
    ``rules``, the config's), the rules from the chat, and adding or removing one (stored, then applied).
    ``add_chat_rule`` raises ValueError for a rule the policy engine refuses."""

    @property
    def policy(self) -> PolicyEngine: ...

    @property
    def chat_rules(self) -> Mapping[str, str]: ...

    async def add_chat_rule(self, pattern: str, action: str, by: str = ...) -> str | None: ...

    async def remove_chat_rule(self, pattern: str) -> str | None: ...


# The rule-adding commands and the action each adds.
RULE_COMMANDS = {"allow": "allow", "deny": "deny", "ask": "require-approval"}


@attrs.frozen
class Reply:
    """What a command answers: a text message, or approvals to show (each its own message, with buttons)."""

    text: str | None = None
    approvals: Sequence[Approval] = ()


class AdminCommands:
    """The handlers of the admin's commands. ``telegram_state()`` is the bot's state, for /status;
    ``max_grant`` is the longest /grant in seconds."""

    def __init__(
        self,
        broker: ApprovalBroker,
        store: Store,
        status_provider: StatusProvider,
        *,
        telegram_state: Callable[[], str],
        max_grant: float,
    ) -> None:
        self._broker = broker
        self._store = store
        self._status_provider = status_provider
        self._telegram_state = telegram_state
        self.max_grant = max_grant
        self.rules: RuleBook | None = None  # set by the gateway (app.py); None: no rules from the chat
        self._handlers: dict[str, Callable[[list[str]], Awaitable[Reply]]] = {
            "help": self.help,
            "start": self.help,
            "status": self.status,
            "grant": self.grant,
            "revoke": self.revoke,
            "pending": self.pending,
            "logs": self.logs,
            "allow": functools.partial(self.add_rule, "allow"),
            "deny": functools.partial(self.add_rule, "deny"),
            "ask": functools.partial(self.add_rule, "ask"),
            "unrule": self.unrule,
            "rules": self.list_rules,
        }

    async def run(self, name: str, args: list[str]) -> Reply | None:
        """Run the command ``name``; None if there is no such command."""
        handler = self._handlers.get(name)
        return None if handler is None else await handler(args)

    async def help(self, args: list[str]) -> Reply:
        return Reply(render.help_text())

    async def status(self, args: list[str]) -> Reply:
        status = self._status_provider()
        if inspect.isawaitable(status):
            status = await status
        text = render.status_text(
            status if isinstance(status, dict) else {},
            pending=list(self._broker.pending()),
            grants=list(self._broker.grants.active()),
            telegram_state=self._telegram_state(),
            now=time.time(),
            chat_rules=len(self.rules.chat_rules) if self.rules is not None else None,
        )
        return Reply(text)

    async def grant(self, args: list[str]) -> Reply:
        client, args = split_grant_client(args)
        parsed = parse_grant(args, self.max_grant)
        if isinstance(parsed, str):
            return Reply(parsed)
        pattern, seconds = parsed
        try:
            scope = {"client": client} if client is not None else {}  # without: every client's calls
            grant = await self._broker.grants.add(pattern, float(seconds), "telegram", **scope)
        except ValueError as e:
            return Reply(f"Not granted: {render.escape(str(e))}")
        expires_at = float(getattr(grant, "expires_at", time.time() + seconds))
        return Reply(render.grant_text(pattern, seconds, expires_at=expires_at, client=client))

    async def revoke(self, args: list[str]) -> Reply:
        # /revoke [pattern] for every client's grants; /revoke <client> <pattern> for one client's.
        client: str | None = None
        if len(args) == 2 and _CLIENT_NAME_RE.fullmatch(args[0]):
            client, args = args[0], args[1:]
        pattern: str | None = None
        if args:
            try:
                pattern = render.validate_pattern(args[0])
            except ValueError as e:
                return Reply(_sentence(e))
        count = await self._broker.grants.revoke(pattern, client)
        text = render.revoke_text(int(count), pattern)
        return Reply(
            text if client is None else f"{text[:-1]} of client <code>{render.escape(client)}</code>."
        )

    async def add_rule(self, command: str, args: list[str]) -> Reply:
        """/allow, /deny, /ask <pattern>: add (or change) a rule from the chat."""
        if self.rules is None:
            return Reply(_NO_RULES)
        try:
            pattern = parse_rule_pattern(command, args)
        except ValueError as e:
            return Reply(str(e))
        action = RULE_COMMANDS[command]
        try:
            before = await self.rules.add_chat_rule(pattern, action, "telegram")
        except (ValueError, StoreError) as e:
            return Reply(f"Not added: {render.escape(str(e))}")
        return Reply(render.rule_added_text(pattern, action, before))

    async def unrule(self, args: list[str]) -> Reply:
        """/unrule <pattern>: remove the rule from the chat for exactly this pattern."""
        if self.rules is None:
            return Reply(_NO_RULES)
        try:
            pattern = parse_rule_pattern("unrule", args)
        except ValueError as e:
            return Reply(str(e))
        try:
            before = await self.rules.remove_chat_rule(pattern)
        except StoreError as e:
            return Reply(f"Not removed: {render.escape(str(e))}")
        return Reply(render.rule_removed_text(pattern, before))

    async def list_rules(self, args: list[str]) -> Reply:
        """/rules: the config's rules and the rules from the chat, and which wins."""
        if self.rules is None:
            return Reply(_NO_RULES)
        engine = self.rules.policy
        return Reply(render.rules_text(engine.default, engine.rules, self.rules.chat_rules))

    async def pending(self, args: list[str]) -> Reply:
        pending = list(self._broker.pending())
        if not pending:
            return Reply("No pending approvals.")
        return Reply(approvals=pending)

    async def logs(self, args: list[str]) -> Reply:
        try:
            n = render.parse_logs_count(args)
        except ValueError as e:
            return Reply(render.escape(str(e)))
        records = await self._store.recent_audit(n)
        return Reply(render.logs_text(list(records)))


_CLIENT_NAME_RE = re.compile(r"[A-Za-z0-9-]+")
_NO_RULES = "Rules from the chat are not available here."


def parse_rule_pattern(command: str, args: list[str]) -> str:
    """``/allow <pattern>`` (and /deny /ask /unrule): the pattern, validated like a config rule's (see
    :func:`render.validate_pattern`). Raises ValueError with the message to answer (HTML, escaped)."""
    usage = f"Usage: /{command} &lt;pattern&gt;, e.g. /{command} github/create_issue or /{command} github/*"
    if len(args) != 1:
        raise ValueError(usage)
    try:
        return render.validate_pattern(args[0])
    except ValueError as e:
        raise ValueError(f"{_sentence(e)}\n{usage}") from None


def split_grant_client(args: list[str]) -> tuple[str | None, list[str]]:
    """``/grant laptop github/* 30m``: the client a grant is scoped to, and the rest of the arguments.

    The first argument names a client when it is a client name (letters, digits, '-') and what follows
    it is a pattern and a duration -- while the arguments after the first alone are not a duration
    (``/grant github 1h 30m`` grants the pattern ``github`` to every client)."""
    if len(args) < 3 or not _CLIENT_NAME_RE.fullmatch(args[0]):
        return None, args
    if _is_duration(args[1:]) or not _is_duration(args[2:]):
        return None, args
    return args[0], args[1:]


def _is_duration(args: list[str]) -> bool:
    try:
        parse_duration("".join(args))
    except ValueError:
        return False
    return True


def parse_grant(args: list[str], max_grant: float) -> tuple[str, float] | str:
    """``/grant <pattern> <duration>``: the pattern and the seconds, or the error to answer."""
    usage = (
        "Usage: /grant &lt;pattern&gt; &lt;duration&gt;, e.g. /grant github/* 30m "
        "(one client's calls only: /grant laptop github/* 30m)"
    )
    if len(args) < 2:
        return usage
    try:
        pattern = render.validate_pattern(args[0])
        seconds = parse_duration("".join(args[1:]))
    except ValueError as e:
        return f"{_sentence(e)}\n{usage}"
    if seconds > max_grant:
        return f"{format_duration(seconds)} is longer than the maximum grant ({format_duration(max_grant)})."
    return pattern, seconds


def _sentence(e: Exception) -> str:
    text = render.escape(str(e))
    return text[:1].upper() + text[1:]
