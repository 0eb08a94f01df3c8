"""Telegram message rendering and command parsing: plain data in, plain data out.

Nothing here does I/O, reads the clock or the environment: callers pass ``now`` (wall-clock seconds). Every
function that produces message text returns Telegram HTML (``parse_mode="HTML"``) in which every value
coming from outside (tool names, arguments, child names, audit records) is escaped, so ``<``, ``&`` or emoji
in a value can never break a message.

Length: Telegram rejects a message whose text, *after* entity parsing, is longer than 4096 UTF-16 code units.
We bound each piece of visible text before escaping it (escaping only adds markup that Telegram strips again),
so the rendered text stays under :data:`TEXT_BUDGET` visible code units by construction; the long parts (the
arguments block, the log listing) are cut with an explicit "truncated" note.

Arguments: an approval message shows every argument key (as far as the count of keys allows, and says how
many more there are otherwise), each value shortened on its own -- the room left after the other lines is
shared fairly among the values, at every level of nesting -- so a long argument cannot push another one out of
the message. Control and formatting characters (C0/C1 controls, U+2028/U+2029, bidi overrides and isolates,
zero-width characters, U+FEFF and the rest of Unicode's format characters) are shown as ``⟨U+2028⟩``, so a
value cannot hide, reorder or fake lines of the message. The "Full arguments" button sends the complete
arguments *as the client sent them* (the fake side, never the real values) as up to
:data:`FULL_ARGUMENTS_MAX_MESSAGES` messages or, above that, as a JSON document
(:func:`full_arguments_messages`, :func:`full_arguments_document`). Messages show only the first 8
characters of a session id.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..core.policy import QUICK_GRANT_SECONDS
from ..durations import format_duration

__all__ = [
    "CALLBACK_DATA_MAX_BYTES",
    "COMMANDS",
    "GRANT_BUTTON_SECONDS",
    "TEXT_BUDGET",
    "TEXT_LIMIT",
    "always_buttons",
    "approval_keyboard",
    "approval_text",
    "callback_answer",
    "callback_data",
    "escape",
    "full_arguments_document",
    "full_arguments_json",
    "full_arguments_messages",
    "grant_text",
    "help_text",
    "logs_text",
    "mark_hidden",
    "outcome_label",
    "parse_callback",
    "parse_command",
    "parse_logs_count",
    "revoke_text",
    "rule_added_text",
    "rule_removed_text",
    "rules_text",
    "settled_text",
    "server_state",
    "status_text",
    "utf16_len",
    "validate_pattern",
]

TEXT_LIMIT = 4096
"""Telegram's limit on a message's text after entity parsing, in UTF-16 code units."""
TEXT_BUDGET = 3900
"""What we allow ourselves: well under :data:`TEXT_LIMIT`, leaving room for the truncation notes."""
CALLBACK_DATA_MAX_BYTES = 64
GRANT_BUTTON_SECONDS = QUICK_GRANT_SECONDS
"""How long the "Approve 30m" button grants the tool for."""

FULL_ARGUMENTS_MAX_MESSAGES = 3
"""Full arguments longer than this many messages are sent as a document instead."""
FULL_ARGUMENTS_BUTTON = "📄 Full arguments"
SESSION_PREFIX = 8
"""How many characters of a session id a message shows."""

_FIELD_MAX = 200
_TRUNCATED = "… (truncated)"
_KEY_MAX = 100  # visible units of one argument key
_MIN_VALUE = 24  # every value shown gets at least this much room (when it is that long)
_DEPTH_MAX = 6  # deeper values are shown as compact JSON, cut as one piece

# (command, description) in the order /help and setMyCommands show them.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("status", "Children, pending approvals, grants, uptime"),
    ("pending", "List pending approvals with their buttons"),
    ("grant", "/grant [client] <pattern> <duration>: allow matching tools without asking (one client's)"),
    ("revoke", "/revoke [client] [pattern]: revoke all grants, one pattern, or one client's"),
    ("allow", "/allow <pattern>: a rule from the chat, kept across restarts: run without asking"),
    ("deny", "/deny <pattern>: a rule from the chat: refuse (and hide) matching tools"),
    ("ask", "/ask <pattern>: a rule from the chat: ask the admin before each call"),
    ("unrule", "/unrule <pattern>: remove the rule from the chat for exactly this pattern"),
    ("rules", "The config's rules and the rules from the chat, and which wins"),
    ("logs", "/logs [n]: the last n audit records (default 10, max 50)"),
    ("help", "Show this help"),
)

# The one-letter actions in callback data (Telegram allows 64 bytes) -- not policy actions.
CALLBACK_ACTIONS = {"a": "approve", "d": "deny", "g": "grant", "f": "full"}
# Always allow / Always deny: decide and add the exact rule from the chat ("r" for rule, two letters so
# they collide with no one-letter action).
CALLBACK_ACTIONS.update({"ra": "always-allow", "rd": "always-deny"})
ALWAYS_ACTIONS = {"always-allow": "allow", "always-deny": "deny"}

# Characters that hide, reorder or fake text: Unicode 15's Cc (C0/C1 controls), Cf (format: zero-width, bidi
# embeddings/overrides/isolates, U+FEFF, soft hyphen, tags...), Cs (lone surrogates), Zl and Zp (U+2028,
# U+2029), and the invisible fillers U+034F, U+115F, U+1160, U+17B4, U+17B5, U+3164, U+FFA0.
_HIDDEN = re.compile(
    r"[\x00-\x1f\x7f-\x9f\xad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
    r"\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f"
    r"\u3164\ud800-\udfff\ufeff\ufff9-\ufffb\uffa0\U000110bd\U000110cd\U00013430-\U0001343f"
    r"\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)


# --------------------------------------------------------------------------------------------- basics


def escape(value: object) -> str:
    """HTML-escape any value for Telegram's HTML parse mode."""
    return html.escape(str(value), quote=True)


def utf16_len(text: str) -> int:
    """Length of ``text`` as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _prefix(text: str, budget: int) -> tuple[str, int]:
    """The longest prefix of ``text`` within ``budget`` UTF-16 units, cut on code points (a
    surrogate pair, an emoji, is never split), and its width."""
    used = 0
    for i, ch in enumerate(text):
        units = 2 if ord(ch) > 0xFFFF else 1
        if used + units > budget:
            return text[:i], used
        used += units
    return text, used


def _cut(text: str, budget: int, note: str = _TRUNCATED) -> str:
    """``text`` if it fits ``budget`` UTF-16 units, else a prefix plus ``note`` that fits."""
    if utf16_len(text) <= budget:
        return text
    return _prefix(text, budget - utf16_len(note) - 1)[0] + "\n" + note


def mark_hidden(text: str) -> str:
    """``text`` with every control or formatting character shown as ``⟨U+XXXX⟩`` (see :data:`_HIDDEN`)."""
    return _HIDDEN.sub(lambda m: f"⟨U+{ord(m.group()):04X}⟩", text)


def _field(value: object) -> str:
    """A short single value (tool name, rule, child name), hidden characters marked, bounded and escaped."""
    return escape(_cut(mark_hidden(str(value)), _FIELD_MAX, "…"))


def _visible_len(markup: str) -> int:
    """The length Telegram counts for our own markup (tags stripped, entities decoded)."""
    return utf16_len(html.unescape(re.sub(r"<[^>]*>", "", markup)))


def _session(session: object) -> str:
    """The first :data:`SESSION_PREFIX` characters of a session id: enough to tell sessions apart."""
    text = str(session)
    return text if len(text) <= SESSION_PREFIX else text[:SESSION_PREFIX] + "…"


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
    """``"a:<id>"`` (approve), ``"d:<id>"`` (deny), ``"g:<id>"`` (approve and grant 30m) or ``"f:<id>"``
    (send the full arguments; decides nothing).

    Raises ValueError if the result exceeds Telegram's 64-byte limit.
    """
    if action not in CALLBACK_ACTIONS:
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
    if not sep or action not in CALLBACK_ACTIONS or not approval_id:
        return None
    return CALLBACK_ACTIONS[action], approval_id


def approval_keyboard(approval_id: str, *, always: bool = False) -> dict[str, Any]:
    """The inline keyboard for an approval: Approve / Deny on one row, Approve 30m on the next, with
    ``always`` Always allow / Always deny on the next (rules from the chat for this one tool), then Full
    arguments."""
    keyboard = {
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
            [{"text": FULL_ARGUMENTS_BUTTON, "callback_data": callback_data("f", approval_id)}],
        ]
    }
    if always:
        keyboard["inline_keyboard"].insert(-1, always_buttons(approval_id))
    return keyboard


def always_buttons(approval_id: str) -> list[dict[str, str]]:
    """The Always allow / Always deny row of an approval's keyboard."""
    return [
        {"text": "♾️ Always allow", "callback_data": callback_data("ra", approval_id)},
        {"text": "⛔ Always deny", "callback_data": callback_data("rd", approval_id)},
    ]


def callback_answer(result: str, action: str | None) -> str:
    """The toast shown for a button press, from ``broker.decide``'s result."""
    if result == "ok":
        return {
            "approve": "Approved",
            "deny": "Denied",
            "grant": f"Approved; allowed for {format_duration(GRANT_BUTTON_SECONDS)}",
            "full": "Sending the full arguments",
            "always-allow": "Approved; always allowed from now on",
            "always-deny": "Denied; always denied from now on",
        }.get(action or "", "Done")
    if result == "already":
        return "Already decided"
    return "Unknown or expired request"


# ------------------------------------------------------------------------------------------ approvals


def _char(ch: str) -> str:
    """One character of a JSON string as shown: JSON escapes for ``"``, ``\\`` and C0; markers for the
    other hidden characters; itself otherwise."""
    if " " <= ch <= "~":
        return '\\"' if ch == '"' else "\\\\" if ch == "\\" else ch
    if ch < " ":
        return json.dumps(ch)[1:-1]
    return mark_hidden(ch)


def _whole_string(text: str) -> str:
    """``text`` as a JSON string, hidden characters marked: what :func:`_char` does to each character."""
    return mark_hidden(json.dumps(text, ensure_ascii=False))


def _string(text: str, budget: int) -> str:
    """``text`` as a JSON string in at most ``budget`` units, cut with a note saying how long it is."""
    if len(text) + 2 <= budget:  # it may fit: every character takes at least one unit
        whole = _whole_string(text)
        if utf16_len(whole) <= budget:
            return whole
    pieces: list[str] = []
    widths: list[int] = []
    for ch in text[: max(budget, 0)]:  # every character takes at least one unit
        piece = _char(ch)
        pieces.append(piece)
        widths.append(utf16_len(piece))
    if len(pieces) == len(text) and sum(widths) + 2 <= budget:
        return '"' + "".join(pieces) + '"'
    note = f'…" (truncated: {len(text):,} characters)'
    room = budget - 1 - utf16_len(note)
    if room < 0:  # no room for the length: just mark the cut
        note = '…"'
        room = budget - 1 - utf16_len(note)
        if room < 0:
            return _cut_plain('"' + "".join(pieces), budget)
    used = 0
    shown = 0
    for width in widths:
        if used + width > room:
            break
        used += width
        shown += 1
    return '"' + "".join(pieces[:shown]) + note


def _cut_plain(text: str, budget: int) -> str:
    """``text`` cut to ``budget`` units with a trailing ``…`` (on code points), or as is if it fits."""
    if utf16_len(text) <= budget:
        return text
    out: list[str] = []
    used = 0
    for ch in text:
        units = 2 if ord(ch) > 0xFFFF else 1
        if used + units > budget - 1:
            break
        out.append(ch)
        used += units
    return "".join(out) + "…" if budget > 0 else ""


def _compact(value: object) -> str:
    """A scalar (or a container too deep to lay out) as one line of JSON, hidden characters marked."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        text = "⟨cannot be shown as JSON⟩"
    return mark_hidden(text)


def _scalar(value: object, budget: int) -> str:
    if isinstance(value, str):
        return _string(value, budget)
    text = _compact(value)
    if utf16_len(text) <= budget:
        return text
    if budget > utf16_len(_TRUNCATED) + 1:
        return _cut_plain(text, budget - utf16_len(_TRUNCATED) + 1) + _TRUNCATED[1:]
    return _cut_plain(text, budget)


def _key(key: object) -> str:
    return _string(str(key), _KEY_MAX)


def _items(value: object, depth: int) -> list[tuple[object, object]] | None:
    """The (key, value) entries of a non-empty container that is laid out line by line (key ``None`` in a
    list); None for anything else."""
    if depth >= _DEPTH_MAX:
        return None
    if isinstance(value, dict) and value:
        return list(value.items())
    if isinstance(value, list | tuple) and value:
        return [(None, v) for v in value]
    return None


def _entry_cost(key: str | None, indent: int) -> int:
    """Units of one entry's line besides its value: indentation, key, ``": "``, ``","`` and the newline."""
    return indent + 2 + (utf16_len(key) + 2 if key is not None else 0) + 2


def _measure(value: object, cap: int, indent: int, depth: int) -> int:
    """The length of ``value`` laid out in full, or ``cap`` if it is at least that long."""
    items = _items(value, depth)
    if items is None:
        if isinstance(value, str):
            if len(value) >= cap:  # every character takes at least one unit, and there are the quotes
                return cap
            return min(cap, utf16_len(_whole_string(value)))
        return min(cap, utf16_len(_compact(value)))
    total = 2 + indent + 1  # "{" "\n" ... indent "}"
    for key, item in items:
        total += _entry_cost(None if key is None else _key(key), indent)
        if total >= cap:
            return cap
        total += _measure(item, cap - total, indent + 2, depth + 1)
        if total >= cap:
            return cap
    return total


def _more(count: int, keys: bool) -> str:
    noun = ("key" if count == 1 else "keys") if keys else ("item" if count == 1 else "items")
    return f"… and {count:,} more {noun}"


def _layout(value: object, budget: int, indent: int = 0, depth: int = 0) -> str:
    """``value`` as indented JSON in at most ``budget`` UTF-16 units: every entry of a container gets a line
    (as many as the budget allows; a note says how many more there are), and the room left for the values is
    shared fairly -- a value shorter than its share leaves the rest to the others -- so each one is
    shortened on its own."""
    entries = _items(value, depth)
    if entries is None:
        return _scalar(value, budget)
    is_dict = isinstance(value, dict)
    total = len(entries)
    # Each entry takes at least 4 units: no more than this many can be shown.
    items = [(None if k is None else _key(k), v) for k, v in entries[: max(budget, 0) // 4 + 1]]
    opening, closing = ("{", "}") if is_dict else ("[", "]")
    frame = 2 + indent + 1
    pad = " " * (indent + 2)
    # Every value gets at least min(_MIN_VALUE, its length). If that leaves no room for every entry, as many
    # entries as fit, and a line saying how many more there are.
    costs = [_entry_cost(key, indent) for key, _item in items]
    reserves = [_measure(item, _MIN_VALUE, indent + 2, depth + 1) for _key, item in items]
    shown = len(items)
    if shown < total or frame + sum(costs) + sum(reserves) > budget:
        used = frame
        shown = 0
        for cost, reserve in zip(costs, reserves, strict=True):
            rest = total - shown - 1
            note = indent + 2 + utf16_len(_more(rest, is_dict)) + 2 if rest else 0
            if used + cost + reserve + note > budget:
                break
            used += cost + reserve
            shown += 1
    fixed = sum(costs[:shown])
    hidden = total - shown
    note_cost = indent + 2 + utf16_len(_more(hidden, is_dict)) + 2 if hidden else 0
    if shown == 0 and frame + note_cost > budget:
        return _scalar(value, budget)
    room = budget - frame - fixed - note_cost
    demands = [_measure(item, room, indent + 2, depth + 1) for _key, item in items[:shown]]
    allowed = [0] * shown
    left, count = room, shown
    for i in sorted(range(shown), key=lambda i: demands[i]):
        allowed[i] = min(demands[i], left // count)
        left -= allowed[i]
        count -= 1
    lines = []
    for (key, item), allow in zip(items[:shown], allowed, strict=True):
        text = _layout(item, allow, indent + 2, depth + 1)
        lines.append(pad + (f"{key}: " if key is not None else "") + text)
    if hidden:
        lines.append(pad + _more(hidden, is_dict))
    return opening + "\n" + ",\n".join(lines) + "\n" + " " * indent + closing


def _arguments_block(arguments: object, budget: int) -> str:
    """The arguments in a ``<pre>`` block whose visible text takes at most ``budget`` units."""
    return f"<pre>{escape(_layout(arguments, max(budget, 0)))}</pre>"


def _arguments_fit(arguments: object, budget: int) -> bool:
    return _measure(arguments, budget + 1, 0, 0) <= budget


def _header(approval: Any) -> list[str]:
    lines = [
        f"Tool: <code>{_field(approval.tool)}</code>",
        f"Server: <code>{_field(approval.server)}</code>",
        f"Rule: <code>{_field(approval.rule)}</code>",
    ]
    client = getattr(approval, "client", None)
    if client:  # which [[client]]'s token made the call
        lines.insert(0, f"Client: <code>{_field(client)}</code>")
    return lines


def _client_note(value: object) -> str:
    """`` [laptop]`` after a line about one client's call or grant; nothing when no client is named."""
    return f" [{_field(value)}]" if value else ""


def _with_arguments(lines: list[str], arguments: object, tail: list[str]) -> str:
    """``lines``, the arguments block in the room the other lines leave, then ``tail``."""
    others = "\n".join([*lines, *tail])
    budget = TEXT_BUDGET - _visible_len(others) - 2  # the two newlines around the block
    return "\n".join([*lines, _arguments_block(arguments, budget), *tail])


def approval_text(approval: Any, *, now: float, replies: bool = False) -> str:
    """The message asking the admin: tool, server, rule, real arguments (each value shortened on its own),
    time left; with ``replies``, how to deny with a reason and (small arguments only: ``approval.editable``)
    how to approve with edited arguments, by replying."""
    left = format_duration(max(0.0, float(approval.expires_at) - now))
    lines = ["🔐 <b>Approval needed</b>", *_header(approval)]
    session = getattr(approval, "session", None)
    if session:
        lines.append(f"Session: <code>{_field(_session(session))}</code>")
    lines.append("Arguments:")
    tail = [f"⏳ {left} left to decide; then it is denied."]
    if replies:
        tail.insert(0, DENY_REASON_HINT)
        if getattr(approval, "editable", False):
            tail.insert(0, edit_hint(approval.arguments_real))
    hint = f"Shortened: press {FULL_ARGUMENTS_BUTTON} for all of them (as the client sent them)."
    others = _visible_len("\n".join([*lines, *tail, hint])) + 2
    if not _arguments_fit(approval.arguments_real, TEXT_BUDGET - others):
        tail.insert(0, escape(hint))
    return _with_arguments(lines, approval.arguments_real, tail)


def full_arguments_json(arguments: object) -> str:
    """The complete arguments as indented JSON, exactly: every control or formatting character (see
    :data:`_HIDDEN`) is written as a JSON escape (``\\u2028``), so the text is valid JSON of the same value
    and nothing in it is invisible."""

    def escaped(m: re.Match[str]) -> str:
        ch = m.group()
        if ch == "\n":  # only the layout's own newlines: JSON escapes those inside strings
            return ch
        data = ch.encode("utf-16-le", "surrogatepass")
        return "".join(f"\\u{int.from_bytes(data[i : i + 2], 'little'):04x}" for i in range(0, len(data), 2))

    try:
        text = json.dumps(arguments, indent=2, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        try:
            text = json.dumps(arguments, ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):
            text = json.dumps("⟨cannot be shown as JSON⟩", ensure_ascii=False)
    return _HIDDEN.sub(escaped, text)


def _full_header(approval: Any, part: str = "") -> str:
    session = getattr(approval, "session", None)
    where = f" (session <code>{_field(_session(session))}</code>)" if session else ""
    return (
        f"📄 <b>Full arguments{part}</b> of <code>{_field(approval.tool)}</code>{where}, as the client sent "
        "them (anonymized values in their fake form):"
    )


def _chunks(text: str, budget: int) -> list[str]:
    """``text`` in pieces of at most ``budget`` UTF-16 units, cut after a newline where possible (on code
    points otherwise); joined they give ``text`` back."""
    out: list[str] = []
    current: list[str] = []
    used = 0
    for line in text.splitlines(keepends=True):
        width = utf16_len(line)
        if used + width > budget and current:
            out.append("".join(current))
            current, used = [], 0
        while width > budget:  # a line longer than a message: cut it on code points
            head, units = _prefix(line, budget)
            out.append(head)
            line = line[len(head) :]
            width -= units
        current.append(line)
        used += width
    if current:
        out.append("".join(current))
    return out


def full_arguments_messages(approval: Any) -> list[str] | None:
    """The complete arguments *as the client sent them* (``approval.arguments_fake``: never the real values)
    as at most :data:`FULL_ARGUMENTS_MAX_MESSAGES` messages, each a header and a ``<pre>`` block; their
    blocks joined are :func:`full_arguments_json`. None when it takes more: send
    :func:`full_arguments_document` instead."""
    text = full_arguments_json(approval.arguments_fake)
    budget = TEXT_BUDGET - _visible_len(_full_header(approval, " (10/10)")) - 1
    if utf16_len(text) > budget * FULL_ARGUMENTS_MAX_MESSAGES:
        return None
    chunks = _chunks(text, budget)
    if len(chunks) > FULL_ARGUMENTS_MAX_MESSAGES:
        return None
    parts = [f" ({i}/{len(chunks)})" if len(chunks) > 1 else "" for i in range(1, len(chunks) + 1)]
    return [
        f"{_full_header(approval, part)}\n<pre>{escape(chunk)}</pre>"
        for part, chunk in zip(parts, chunks, strict=True)
    ]


def full_arguments_document(approval: Any) -> tuple[str, bytes, str]:
    """``(file name, content, caption)`` of a JSON document with the complete arguments as the client sent
    them (``approval.arguments_fake``), for arguments too long for :func:`full_arguments_messages`."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(approval.tool)).strip("._-")[:60] or "tool"
    content = full_arguments_json(approval.arguments_fake).encode("utf-8")
    # The caption is at most ~400 visible units (the tool name is bounded), under Telegram's 1024.
    return f"{stem}-arguments.json", content, _full_header(approval)


def outcome_label(state: str, source: str) -> str:
    """One line saying how an approval ended."""
    if state == "approved":
        return "✅ Approved in the console" if source == "console" else "✅ Approved"
    if state == "rejected" and source == "console":
        return "❌ Denied in the console"
    if source == "shutdown":
        return "🛑 Gateway shut down: denied"
    if source == "cancelled":
        return "↩️ Withdrawn: the client went away"
    if source == "timeout" or state == "expired":
        return "⌛ Timed out: denied"
    if state == "rejected" and source == "admin":
        return "❌ Denied"
    return f"❌ Denied ({escape(_cut(mark_hidden(source or state), 60, '…'))})"


def settled_text(approval: Any, *, state: str, source: str, note: str | None = None) -> str:
    """The approval message after the outcome: the outcome line on top, details kept, no time left."""
    lines = [f"<b>{outcome_label(state, source)}</b>"]
    if note:
        lines.append(escape(_cut(mark_hidden(note), 300, "…")))
    lines.extend(_header(approval))
    lines.append("Arguments:")
    return _with_arguments(lines, approval.arguments_real, [])


# ------------------------------------------------------------------------------------------- commands


def help_text() -> str:
    lines = ["<b>Portero commands</b>"]
    for name, desc in COMMANDS:
        lines.append(f"/{name}: {escape(desc)}")
    lines.append(
        escape("/whoami: your chat id (answers anyone); /unpair: release a chat paired with /pair <code>")
    )
    lines.append("Durations: 45s, 30m, 2h, 1h30m. Patterns: github/create_issue, github/*, */delete_*.")
    lines.append(
        escape("In a grant pattern \\* is a literal * (Approve 30m grants one tool: evil/create_\\*).")
    )
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


def server_state(child: Mapping[str, Any]) -> str:
    """A server's state as a user reads it (``/status``, ``portero tools``): its ``state``, except that a
    remote server that is down reads ``failed: <last error>``. A local process keeps ``restarting``,
    which is what is being done to it; a remote server is only being reconnected to, with back-off."""
    state = str(child.get("state", "?"))
    if child.get("remote") is True and state == "restarting":
        error = child.get("error")
        return f"failed: {error}" if error else "failed"
    return state


def status_text(
    status: Mapping[str, Any],
    *,
    pending: Sequence[Any],
    grants: Sequence[Any],
    telegram_state: str,
    now: float,
    chat_rules: int | None = None,
) -> str:
    """/status: children, pending approvals, active grants with time left, Telegram state, uptime, and
    how many rules from the chat there are (``chat_rules``; None: not shown)."""
    lines = ["<b>Portero status</b>"]
    uptime = status.get("uptime_s")
    if isinstance(uptime, int | float):
        lines.append(f"Uptime: {format_duration(uptime)}")
    lines.append(f"Telegram: {escape(telegram_state)}")
    if chat_rules is not None:
        lines.append(f"Rules from the chat: {chat_rules} (/rules)")
    children = status.get("children") or []
    lines.append(f"<b>Children</b> ({len(children)})")
    for child in children:
        if not isinstance(child, Mapping):
            continue
        lines.append(
            f"• <code>{_field(child.get('name', '?'))}</code> {_field(server_state(child))}, "
            f"{_field(child.get('tools', 0))} tools, {_field(child.get('restarts', 0))} restarts"
        )
    if not children:
        lines.append("none")
    lines.append(f"<b>Pending approvals</b> ({len(pending)})")
    for a in pending:
        left = format_duration(max(0.0, float(a.expires_at) - now))
        client = _client_note(getattr(a, "client", None))
        lines.append(f"• <code>{_field(a.tool)}</code> ({_field(a.rule)}), {left} left{client}")
    lines.append(f"<b>Grants</b> ({len(grants)})")
    for g in grants:
        left = format_duration(max(0.0, float(g.expires_at) - now))
        only = f" (client {_field(g.client)} only)" if getattr(g, "client", None) else ""
        lines.append(f"• <code>{_field(g.pattern)}</code>{only}, {left} left")
    return _lines_within(lines, TEXT_BUDGET, "… and {n} more lines")


def grant_text(pattern: str, seconds: float, *, expires_at: float, client: str | None = None) -> str:
    when = time.strftime("%H:%M UTC", time.gmtime(expires_at))
    whom = f" to client <code>{_field(client)}</code>" if client else ""
    return (
        f"✅ Granted <code>{_field(pattern)}</code>{whom} for {format_duration(seconds)} (until {when}). "
        "Matching require-approval tools run without asking; deny rules still apply."
    )


# ------------------------------------------------------------------------------ rules from the chat


def rule_added_text(pattern: str, action: str, before: str | None) -> str:
    """/allow, /deny, /ask: one line saying what the rule from the chat now is (and was)."""
    was = f" (was {escape(before)})" if before is not None and before != action else ""
    return f"Rule from the chat: <code>{_field(pattern)}</code> → {escape(action)}{was}. /rules shows all."


def rule_removed_text(pattern: str, before: str | None) -> str:
    """/unrule: one line."""
    if before is None:
        return f"No rule from the chat for <code>{_field(pattern)}</code> (/rules lists them)."
    return f"Removed the rule from the chat <code>{_field(pattern)}</code> → {escape(before)}."


def _by_precedence(rules: Mapping[str, str]) -> list[tuple[str, str]]:
    """Exact rules first, then patterns by literal characters (most first): the order in which they win."""
    return sorted(rules.items(), key=lambda r: ("*" in r[0], -(len(r[0]) - r[0].count("*")), r[0]))


def rules_text(default: str, config_rules: Mapping[str, str], chat_rules: Mapping[str, str]) -> str:
    """/rules: the rules from the chat and the config's, most specific first, and which wins where both
    have a rule for the same pattern."""
    lines = [f"<b>Rules</b> (default: {escape(default)})", f"<b>From the chat</b> ({len(chat_rules)})"]
    for pattern, action in _by_precedence(chat_rules):
        theirs = config_rules.get(pattern)
        over = f" — beats the config's {escape(theirs)}" if theirs is not None else ""
        lines.append(f"• <code>{_field(pattern)}</code> → {escape(action)}{over}")
    if not chat_rules:
        lines.append("none (/allow, /deny, /ask, or Always allow / Always deny on an approval)")
    lines.append(f"<b>From the config</b> ({len(config_rules)})")
    for pattern, action in _by_precedence(config_rules):
        under = " — overridden by the chat's rule" if pattern in chat_rules else ""
        lines.append(f"• <code>{_field(pattern)}</code> → {escape(action)}{under}")
    if not config_rules:
        lines.append("none")
    lines.append(
        "The most specific rule wins (exact, then more literal characters); at equal specificity a rule "
        "from the chat beats the config's, and a client's own rule beats both. /unrule &lt;pattern&gt; "
        "removes a rule from the chat."
    )
    return _lines_within(lines, TEXT_BUDGET, "… and {n} more lines")


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
            f"{escape(_ts(r.get('ts')))}{_client_note(r.get('client'))} "
            f"<code>{_field(r.get('tool', '?'))}</code> "
            f"{_field(r.get('decision', '?'))} ({_field(r.get('source', '?'))}) "
            f"{_field(r.get('outcome', '?'))}{dur_s}"
        )
    return _lines_within(lines, TEXT_BUDGET, "… and {n} more")


# -------------------------------------------------------------------------------- pinned definitions
# One message per quarantined tool definition (portero.core.pins.Question): server, tool, the summary (first
# sight) or the diff, the description checks' flags, and Approve / Keep blocked. Their callback data is
# ``pin:a:<key>`` / ``pin:b:<key>``: "pin" is no approval action, so parse_callback never takes it for one.

PIN_CALLBACK_PREFIX = "pin:"
PIN_ACTIONS = {"a": "approve", "b": "block"}
_PIN_FLAG_MAX = 300  # visible units of one flag line
_PIN_FLAGS_MAX = 8  # flag lines shown; more are counted


def pin_callback_data(action: str, key: str) -> str:
    """``pin:a:<key>`` (approve) or ``pin:b:<key>`` (keep blocked). Raises ValueError past 64 bytes."""
    if action not in PIN_ACTIONS:
        raise ValueError(f"unknown pin action {action!r}")
    data = f"{PIN_CALLBACK_PREFIX}{action}:{key}"
    if len(data.encode("utf-8")) > CALLBACK_DATA_MAX_BYTES:
        raise ValueError(f"callback data would be {len(data.encode())} bytes; Telegram allows 64")
    return data


def parse_pin_callback(data: str | None) -> tuple[str, str] | None:
    """``"pin:a:<key>"`` → ``("approve", "<key>")``; not a pin button's data → None."""
    if not data or not data.startswith(PIN_CALLBACK_PREFIX) or len(data.encode()) > CALLBACK_DATA_MAX_BYTES:
        return None
    action, sep, key = data[len(PIN_CALLBACK_PREFIX) :].partition(":")
    if not sep or action not in PIN_ACTIONS or not key:
        return None
    return PIN_ACTIONS[action], key


def pin_keyboard(key: str) -> dict[str, Any]:
    return {
        "inline_keyboard": [
            [
                {"text": "✅ Approve", "callback_data": pin_callback_data("a", key)},
                {"text": "🚫 Keep blocked", "callback_data": pin_callback_data("b", key)},
            ]
        ]
    }


def pin_text(question: Any) -> str:
    """The question about a quarantined definition (``question``: a :class:`portero.core.pins.Question`).
    The summary or diff is at most :data:`portero.core.pins.DIFF_BUDGET` characters already; flags are
    bounded here, so the message stays under :data:`TEXT_BUDGET`."""
    title = "New tool: approve its definition?" if question.first_sight else "Tool definition changed"
    lines = [
        f"<b>🔒 {title}</b>",
        f"Server: <code>{_field(question.server)}</code>",
        f"Tool: <code>{_field(question.tool)}</code> (definition {escape(question.hash[:12])})",
        "What the model will read:" if question.first_sight else "Changes since the approved definition:",
        f"<pre>{escape(_cut(mark_hidden(question.text), 3200, '…'))}</pre>",
    ]
    flags = list(question.flags)
    if flags:
        lines.append(f"<b>⚠️ Description checks ({len(flags)}):</b>")
        lines.extend(f"• {escape(_cut(mark_hidden(f), _PIN_FLAG_MAX, '…'))}" for f in flags[:_PIN_FLAGS_MAX])
        if len(flags) > _PIN_FLAGS_MAX:
            lines.append(f"… and {len(flags) - _PIN_FLAGS_MAX} more")
    else:
        lines.append("Description checks: nothing flagged.")
    lines.append("The tool is hidden from clients and refused until you approve it.")
    text = "\n".join(lines)
    while _visible_len(text) > TEXT_BUDGET and len(lines) > 6:
        del lines[-2]  # flags last to first, then the pre block shrinks no further: it is bounded
        text = "\n".join(lines)
    return text


def pin_decided_text(server: str, tool: str, digest: str, state: str, by: str = "admin") -> str:
    """The message after a decision (or when its buttons are pressed again), without buttons."""
    name = f"<code>{_field(server)}/{_field(tool)}</code> (definition {escape(digest[:12])})"
    if state == "approved":
        return f"<b>✅ Approved</b> by the {escape(by)}: {name} is listed again."
    if state == "blocked":
        return f"<b>🚫 Kept blocked</b> by the {escape(by)}: {name} stays hidden and refused."
    return f"{name}: waiting for a decision."


PIN_SUPERSEDED = (
    "<b>↪️ Superseded</b>: this tool's definition changed again since this message (a newer message asks "
    "about it), or its pin is gone. Nothing was decided."
)


def pin_callback_answer(result: str, action: str) -> str:
    """The toast for a press on a pin button, from ``PinGuard.decide``'s result."""
    if result == "ok":
        return "Approved" if action == "approve" else "Kept blocked"
    if result == "already":
        return "Already decided"
    return "This definition changed since: nothing decided"


# ------------------------------------------------------------- replies: deny reasons, edited arguments


def edit_hint(arguments: object) -> str:
    """The line offering to approve with edited arguments: the real arguments as one line of JSON (tap to
    copy), to correct and send back as a reply."""
    text = json.dumps(arguments, ensure_ascii=False, separators=(", ", ": "), default=str)
    return f"✏️ Reply with corrected JSON to approve with it:\n<code>{escape(mark_hidden(text))}</code>"


DENY_REASON_HINT = "💬 To deny with a reason the model reads, reply to this message with it."


def reason_hint(window: float) -> str:
    """The line under an approval denied with the button: the reason can still be recorded."""
    return escape(
        f"💬 Reply to this message within {format_duration(window)} to record why in the audit (the model "
        "already has its refusal; next time reply instead of pressing Deny to tell the model)."
    )


def reason_answer(result: str, window: float) -> str:
    """The answer to a reply to an approval: ``"denied"`` (it was pending: denied with the reason) or
    :meth:`ApprovalBroker.give_reason`'s result."""
    return {
        "denied": "💬 Denied: the model reads your reason in the refusal.",
        "audit": "💬 Reason recorded in the audit. The call had already answered: the model did not see it.",
        "late": f"Too late: a reason is taken within {escape(format_duration(window))} of Deny.",
        "already": "A reason was already given for this call. Nothing changed.",
        "empty": "An empty reason: nothing recorded.",
    }.get(result, NOT_AN_APPROVAL)


NOT_AN_APPROVAL = (
    "That message is not a pending or lately denied approval: reply to a denied approval with the reason, "
    "or to a pending one with corrected JSON to approve with it."
)


def edit_answer(result: str, problems: Sequence[str] = (), *, max_chars: int = 0) -> str:
    """The answer to JSON sent in reply to a pending approval, from :meth:`ApprovalBroker.approve_edited`'s
    result (or ``"json"`` / ``"not-object"`` with the parser's problem)."""
    still = "The call is still waiting: reply again with corrected JSON, or press Approve or Deny."
    if result == "ok":
        return "✏️ Approved with your arguments."
    if result == "json":
        return f"Not valid JSON: {escape(problems[0] if problems else '?')}. {still}"
    if result == "not-object":
        return f"The arguments must be a JSON object ({{…}}). {still}"
    if result == "invalid":
        lines = "\n".join(f"• {escape(_cut(mark_hidden(p), 200, '…'))}" for p in problems)
        return f"Not approved: the arguments do not match the tool's input schema:\n{lines}\n{still}"
    if result == "too-long":
        return escape(
            f"This call's arguments are too long to edit from the chat ({max_chars:,} characters of JSON "
            "at most). Press Approve or Deny."
        )
    if result == "already":
        return "That call was already decided. Nothing changed."
    return NOT_AN_APPROVAL
