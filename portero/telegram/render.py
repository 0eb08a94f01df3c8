"""Telegram message rendering and command parsing: plain data in, plain data out.

Nothing here does I/O, reads the clock or the environment: callers pass ``now`` (wall-clock seconds). Every
function that produces message text returns Telegram HTML (``parse_mode="HTML"``) in which every value
coming from outside (tool names, arguments, child names, audit records) is escaped, so ``<``, ``&`` or emoji
in a value can never break a message.

Length: Telegram rejects a message whose text, *after* entity parsing, is longer than 4096 UTF-16 code units.
We bound each piece of visible text before escaping it (escaping only adds markup that Telegram strips again),
so the rendered text stays under :data:`TEXT_BUDGET` visible code units by construction; the long parts (the
arguments block, the log listing) are cut with an explicit "… (truncated)" note.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..durations import format_duration

__all__ = [
    "CALLBACK_DATA_MAX_BYTES",
    "COMMANDS",
    "GRANT_BUTTON_SECONDS",
    "TEXT_BUDGET",
    "TEXT_LIMIT",
    "approval_keyboard",
    "approval_text",
    "callback_answer",
    "callback_data",
    "escape",
    "grant_text",
    "help_text",
    "logs_text",
    "outcome_label",
    "parse_callback",
    "parse_command",
    "parse_logs_count",
    "revoke_text",
    "settled_text",
    "status_text",
    "utf16_len",
    "validate_pattern",
]

TEXT_LIMIT = 4096
"""Telegram's limit on a message's text after entity parsing, in UTF-16 code units."""
TEXT_BUDGET = 3900
"""What we allow ourselves: well under :data:`TEXT_LIMIT`, leaving room for the truncation notes."""
CALLBACK_DATA_MAX_BYTES = 64
GRANT_BUTTON_SECONDS = 30 * 60
"""How long the "Approve 30m" button grants the tool for."""

_ARGS_BUDGET = 3000
_FIELD_MAX = 200
_TRUNCATED = "… (truncated)"

# (command, description) in the order /help and setMyCommands show them.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("status", "Children, pending approvals, grants, uptime"),
    ("pending", "List pending approvals with their buttons"),
    ("grant", "/grant <pattern> <duration>: allow matching tools without asking"),
    ("revoke", "/revoke [pattern]: revoke all grants, or one pattern"),
    ("logs", "/logs [n]: the last n audit records (default 10, max 50)"),
    ("help", "Show this help"),
)

ACTIONS = {"a": "approve", "d": "deny", "g": "grant"}


# --------------------------------------------------------------------------------------------- basics


def escape(value: object) -> str:
    """HTML-escape any value for Telegram's HTML parse mode."""
    return html.escape(str(value), quote=True)


def utf16_len(text: str) -> int:
    """Length of ``text`` as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _cut(text: str, budget: int, note: str = _TRUNCATED) -> str:
    """``text`` if it fits ``budget`` UTF-16 units, else a prefix plus ``note`` that fits.

    Cuts on code points, so a surrogate pair (an emoji) is never split.
    """
    if utf16_len(text) <= budget:
        return text
    room = budget - utf16_len(note) - 1
    out: list[str] = []
    used = 0
    for ch in text:
        units = 2 if ord(ch) > 0xFFFF else 1
        if used + units > room:
            break
        out.append(ch)
        used += units
    return "".join(out) + "\n" + note


def _field(value: object) -> str:
    """A short single value (tool name, rule, child name), bounded and escaped."""
    return escape(_cut(str(value), _FIELD_MAX, "…"))


# ------------------------------------------------------------------------------------------ durations

# ------------------------------------------------------------------------------------------- patterns


def validate_pattern(text: str) -> str:
    """Check a grant pattern: a canonical tool name (``server/tool``) where ``*`` matches any run.

    ``github/create_issue``, ``github/*``, ``*/delete_*`` and ``*`` are valid; so is any printable name
    without whitespace that contains a ``/``. Raises ValueError otherwise (e.g. ``/grant 30m github/*``).
    """
    p = text.strip()
    if not p:
        raise ValueError("missing pattern (examples: github/create_issue, github/*)")
    if len(p) > 200:
        raise ValueError("pattern is too long (200 characters at most)")
    if any(ch.isspace() for ch in p) or not p.isprintable():
        raise ValueError(f"bad pattern {p!r}: no spaces or control characters")
    server, slash, tool = p.partition("/")
    if p != "*" and not (slash and server and tool):
        raise ValueError(
            f"bad pattern {p!r}: use a canonical tool name server/tool, where * matches anything "
            "(examples: github/create_issue, github/*)"
        )
    return p


# ------------------------------------------------------------------------------------------- commands


def parse_command(text: str, bot_username: str | None) -> tuple[str, list[str]] | None:
    """``"/grant@my_bot github/* 2h"`` → ``("grant", ["github/*", "2h"])``.

    Returns None when the text is not a command, or is a command addressed to another bot.
    The command name is lower-cased; ``bot_username`` is compared case-insensitively.
    """
    if not text.startswith("/"):
        return None
    head, *args = text.split()
    name = head[1:]
    if "@" in name:
        name, _, target = name.partition("@")
        if bot_username is None or target.lower() != bot_username.lower():
            return None
    if not name or not re.fullmatch(r"[A-Za-z0-9_]+", name):
        return None
    return name.lower(), args


def parse_logs_count(args: Sequence[str], *, default: int = 10, maximum: int = 50) -> int:
    """The ``n`` of ``/logs [n]``: default 10, clamped to 1..maximum. Raises ValueError if not a number."""
    if not args:
        return default
    try:
        n = int(args[0])
    except ValueError:
        raise ValueError(f"/logs takes a number, got {args[0]!r}") from None
    return max(1, min(maximum, n))


# ------------------------------------------------------------------------------------------- buttons


def callback_data(action: str, approval_id: str) -> str:
    """``"a:<id>"`` (approve), ``"d:<id>"`` (deny) or ``"g:<id>"`` (approve and grant 30m).

    Raises ValueError if the result exceeds Telegram's 64-byte limit.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    data = f"{action}:{approval_id}"
    if len(data.encode("utf-8")) > CALLBACK_DATA_MAX_BYTES:
        raise ValueError(f"callback data would be {len(data.encode())} bytes; Telegram allows 64")
    return data


def parse_callback(data: str | None) -> tuple[str, str] | None:
    """``"a:<id>"`` → ``("approve", "<id>")``; anything malformed → None."""
    if not data or len(data.encode("utf-8")) > CALLBACK_DATA_MAX_BYTES:
        return None
    action, sep, approval_id = data.partition(":")
    if not sep or action not in ACTIONS or not approval_id:
        return None
    return ACTIONS[action], approval_id


def approval_keyboard(approval_id: str) -> dict[str, Any]:
    """The inline keyboard for an approval: Approve / Deny on one row, Approve 30m on the next."""
    return {
        "inline_keyboard": [
            [
                {"text": "✅ Approve", "callback_data": callback_data("a", approval_id)},
                {"text": "❌ Deny", "callback_data": callback_data("d", approval_id)},
            ],
            [
                {
                    "text": f"✅ Approve {format_duration(GRANT_BUTTON_SECONDS)}",
                    "callback_data": callback_data("g", approval_id),
                }
            ],
        ]
    }


def callback_answer(result: str, action: str | None) -> str:
    """The toast shown for a button press, from ``broker.decide``'s result."""
    if result == "ok":
        return {
            "approve": "Approved",
            "deny": "Denied",
            "grant": f"Approved; allowed for {format_duration(GRANT_BUTTON_SECONDS)}",
        }.get(action or "", "Done")
    if result == "already":
        return "Already decided"
    return "Unknown or expired request"


# ------------------------------------------------------------------------------------------ approvals


def _arguments_block(arguments: object) -> str:
    try:
        text = json.dumps(arguments, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(arguments)
    return f"<pre>{escape(_cut(text, _ARGS_BUDGET))}</pre>"


def _header(approval: Any) -> list[str]:
    return [
        f"Tool: <code>{_field(approval.tool)}</code>",
        f"Server: <code>{_field(approval.server)}</code>",
        f"Rule: <code>{_field(approval.rule)}</code>",
    ]


def approval_text(approval: Any, *, now: float) -> str:
    """The message asking the admin: tool, server, rule, real arguments, time left."""
    left = format_duration(max(0.0, float(approval.expires_at) - now))
    lines = ["🔐 <b>Approval needed</b>", *_header(approval)]
    session = getattr(approval, "session", None)
    if session:
        lines.append(f"Session: <code>{_field(session)}</code>")
    lines.append("Arguments:")
    lines.append(_arguments_block(approval.arguments_real))
    lines.append(f"⏳ {left} left to decide; then it is denied.")
    return "\n".join(lines)


def outcome_label(state: str, source: str) -> str:
    """One line saying how an approval ended."""
    if state == "approved":
        return "✅ Approved"
    if source == "shutdown":
        return "🛑 Gateway shut down: denied"
    if source == "cancelled":
        return "↩️ Withdrawn: the client went away"
    if source == "timeout" or state == "expired":
        return "⌛ Timed out: denied"
    if state == "rejected" and source == "admin":
        return "❌ Denied"
    return f"❌ Denied ({escape(_cut(source or state, 60, '…'))})"


def settled_text(approval: Any, *, state: str, source: str, note: str | None = None) -> str:
    """The approval message after the outcome: the outcome line on top, details kept, no time left."""
    lines = [f"<b>{outcome_label(state, source)}</b>"]
    if note:
        lines.append(escape(_cut(note, 300, "…")))
    lines.extend(_header(approval))
    lines.append("Arguments:")
    lines.append(_arguments_block(approval.arguments_real))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- commands


def help_text() -> str:
    lines = ["<b>Portero commands</b>"]
    for name, desc in COMMANDS:
        lines.append(f"/{name}: {escape(desc)}")
    lines.append("Durations: 45s, 30m, 2h, 1h30m. Patterns: github/create_issue, github/*, */delete_*.")
    return "\n".join(lines)


def _lines_within(lines: Iterable[str], budget: int, more: str) -> str:
    """Join escaped ``lines`` while the *visible* text stays under ``budget``; note what was left out."""
    all_lines = list(lines)
    out: list[str] = []
    used = 0
    for i, line in enumerate(all_lines):
        visible = utf16_len(html.unescape(re.sub(r"<[^>]*>", "", line))) + 1
        if used + visible > budget:
            out.append(escape(more.format(n=len(all_lines) - i)))
            break
        out.append(line)
        used += visible
    return "\n".join(out)


def status_text(
    status: Mapping[str, Any],
    *,
    pending: Sequence[Any],
    grants: Sequence[Any],
    telegram_state: str,
    now: float,
) -> str:
    """/status: children, pending approvals, active grants with time left, Telegram state, uptime."""
    lines = ["<b>Portero status</b>"]
    uptime = status.get("uptime_s")
    if isinstance(uptime, int | float):
        lines.append(f"Uptime: {format_duration(uptime)}")
    lines.append(f"Telegram: {escape(telegram_state)}")
    children = status.get("children") or []
    lines.append(f"<b>Children</b> ({len(children)})")
    for child in children:
        if not isinstance(child, Mapping):
            continue
        lines.append(
            f"• <code>{_field(child.get('name', '?'))}</code> {_field(child.get('state', '?'))}, "
            f"{_field(child.get('tools', 0))} tools, {_field(child.get('restarts', 0))} restarts"
        )
    if not children:
        lines.append("none")
    lines.append(f"<b>Pending approvals</b> ({len(pending)})")
    for a in pending:
        left = format_duration(max(0.0, float(a.expires_at) - now))
        lines.append(f"• <code>{_field(a.tool)}</code> ({_field(a.rule)}), {left} left")
    lines.append(f"<b>Grants</b> ({len(grants)})")
    for g in grants:
        left = format_duration(max(0.0, float(g.expires_at) - now))
        lines.append(f"• <code>{_field(g.pattern)}</code>, {left} left")
    return _lines_within(lines, TEXT_BUDGET, "… and {n} more lines")


def grant_text(pattern: str, seconds: float, *, expires_at: float) -> str:
    when = time.strftime("%H:%M UTC", time.gmtime(expires_at))
    return (
        f"✅ Granted <code>{_field(pattern)}</code> for {format_duration(seconds)} (until {when}). "
        "Matching require-approval tools run without asking; deny rules still apply."
    )


def revoke_text(count: int, pattern: str | None) -> str:
    what = f"matching <code>{_field(pattern)}</code>" if pattern else "in total"
    noun = "grant" if count == 1 else "grants"
    return f"Revoked {count} {noun} {what}."


def _ts(value: object) -> str:
    if isinstance(value, int | float):
        return time.strftime("%m-%d %H:%M:%S", time.gmtime(value))
    text = str(value or "?")
    # ISO 8601: show date and time without the noise.
    m = re.match(r"\d{4}-(\d\d-\d\dT\d\d:\d\d:\d\d)", text)
    return m.group(1).replace("T", " ") if m else text


def logs_text(records: Sequence[Mapping[str, Any]]) -> str:
    """/logs: one line per audit record, in the order the store returns them (newest first)."""
    if not records:
        return "No audit records yet."
    lines = [f"<b>Last {len(records)} tool calls</b>"]
    for r in records:
        dur = r.get("duration_ms")
        dur_s = f" {int(dur)}ms" if isinstance(dur, int | float) else ""
        lines.append(
            f"{escape(_ts(r.get('ts')))} <code>{_field(r.get('tool', '?'))}</code> "
            f"{_field(r.get('decision', '?'))} ({_field(r.get('source', '?'))}) "
            f"{_field(r.get('outcome', '?'))}{dur_s}"
        )
    return _lines_within(lines, TEXT_BUDGET, "… and {n} more")
