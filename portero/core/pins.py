"""Pinned tool definitions — pure: what is pinned, its hash, the diff shown to the admin, the decision.

A server's tool is pinned by its *definition*: the fields a model reads or acts on (:data:`PINNED_FIELDS`:
name, title, description, inputSchema, outputSchema, annotations). ``_meta`` and anything else a server
adds are left out, so a server that stamps a timestamp or a request id into ``_meta`` does not look changed.
The hash is the SHA-256 of the definition's canonical JSON (keys sorted, no whitespace, non-ASCII kept as
UTF-8), hex.

:func:`evaluate` is the whole policy: given ``[pins] mode``, the stored pin (or None) and the definition a
server lists now, it says whether the tool is approved, quarantined or blocked, whether the admin must be
asked (once per change: a quarantined tool that comes back with the same definition after a restart is not
asked about again), and the pin to store (None when nothing changed).

:func:`diff` renders old → new for a human (the Telegram message, ``portero pins diff``), shortened to a
budget with "…"; :func:`summary` does the same for a definition seen for the first time.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = [
    "MODES",
    "PINNED_FIELDS",
    "STATES",
    "DIFF_BUDGET",
    "Pin",
    "Verdict",
    "Question",
    "question",
    "question_key",
    "definition_of",
    "definition_hash",
    "canonical_json",
    "evaluate",
    "approve",
    "block",
    "diff",
    "summary",
    "shorten",
]

MODES = ("approve", "trust-first", "off")
STATES = ("approved", "quarantined", "blocked")
PINNED_FIELDS = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
TEXT_FIELDS = ("name", "title", "description")
DIFF_BUDGET = 3000  # characters of a diff or summary: with the header and flags, fits one Telegram message
ELLIPSIS = "…"


def definition_of(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The pinned part of a tool as a server lists it: :data:`PINNED_FIELDS` that are present."""
    return {key: tool[key] for key in PINNED_FIELDS if key in tool}


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: equal definitions give equal text whatever the key order.
    A lone surrogate (valid JSON, not UTF-8) is escaped, so the text always encodes."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        text.encode()
    except UnicodeEncodeError:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return text


def definition_hash(definition: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``definition`` (already reduced by :func:`definition_of`)."""
    return hashlib.sha256(canonical_json(dict(definition)).encode()).hexdigest()


@attrs.frozen
class Pin:
    """One stored pin (a row of the ``pins`` table). ``definition`` is the one ``hash`` is over;
    ``approved_*`` the last definition the admin (or trust-first) approved, None if never."""

    server: str
    tool: str
    hash: str
    definition: dict[str, Any]
    state: str
    approved_hash: str | None = None
    approved_definition: dict[str, Any] | None = None
    first_seen: float = 0.0
    updated_at: float = 0.0
    decided_by: str | None = None

    @property
    def canonical(self) -> str:
        return f"{self.server}/{self.tool}"


@attrs.frozen
class Verdict:
    """What :func:`evaluate` decided: ``state`` (one of :data:`STATES`), ``ask`` (send the admin one
    message about this change), ``pin`` (the row to store, None when the stored one stands)."""

    state: str
    ask: bool
    pin: Pin | None


def evaluate(
    mode: str,
    stored: Pin | None,
    definition: Mapping[str, Any],
    *,
    server: str,
    tool: str,
    now: float,
) -> Verdict:
    """Decide a tool's state from ``mode``, its stored pin and the ``definition`` its server lists now.

    - ``off``: approved, nothing stored, nobody asked.
    - First sight: ``approve`` quarantines it and asks; ``trust-first`` pins it as approved.
    - Same hash as stored: the stored state stands (no new question: one message per change).
    - Back to the last approved definition: approved again, without asking.
    - Any other change: quarantined (in both modes), asked; the last approved definition is kept for
      the diff.
    """
    if mode not in MODES:
        raise ValueError(f"unknown pins mode {mode!r}")
    if mode == "off":
        return Verdict("approved", False, None)
    definition = dict(definition)
    digest = definition_hash(definition)
    if stored is None:
        if mode == "trust-first":
            pin = Pin(
                server, tool, digest, definition, "approved", digest, definition, now, now, "trust-first"
            )
            return Verdict("approved", False, pin)
        return Verdict(
            "quarantined", True, Pin(server, tool, digest, definition, "quarantined", None, None, now, now)
        )
    if stored.hash == digest:
        return Verdict(stored.state, False, None)
    if stored.approved_hash == digest:
        pin = attrs.evolve(stored, hash=digest, definition=definition, state="approved", updated_at=now)
        return Verdict("approved", False, pin)
    pin = attrs.evolve(
        stored, hash=digest, definition=definition, state="quarantined", updated_at=now, decided_by=None
    )
    return Verdict("quarantined", True, pin)


@attrs.frozen
class Question:
    """What the admin is asked about one change: ``server``'s ``tool`` with definition ``hash``, seen for
    the first time (``first_sight``, ``text`` a :func:`summary`) or changed (``text`` the :func:`diff`
    from the last approved definition), the description checks' ``flags`` (one line each), and ``key``,
    which names this pin *and* this definition (so a button pressed for an older definition decides
    nothing)."""

    server: str
    tool: str
    hash: str
    first_sight: bool
    text: str
    flags: tuple[str, ...]
    key: str


def question_key(pin: Pin) -> str:
    """20 hex digits naming ``pin``'s server, tool and current hash: short enough for a button's data."""
    return hashlib.sha256(f"{pin.server}/{pin.tool}\0{pin.hash}".encode()).hexdigest()[:20]


def question(pin: Pin, *, flags: Sequence[str] = (), budget: int = DIFF_BUDGET) -> Question:
    """The question about ``pin`` (quarantined): its summary or its diff from the last approved one."""
    first = pin.approved_definition is None
    text = (
        summary(pin.definition, budget=budget)
        if first
        else diff(pin.approved_definition, pin.definition, budget=budget)
    )
    return Question(pin.server, pin.tool, pin.hash, first, text, tuple(flags), question_key(pin))


def approve(pin: Pin, *, by: str, now: float) -> Pin:
    """``pin`` approved: its current definition becomes the approved one."""
    return attrs.evolve(
        pin,
        state="approved",
        approved_hash=pin.hash,
        approved_definition=pin.definition,
        updated_at=now,
        decided_by=by,
    )


def block(pin: Pin, *, by: str, now: float) -> Pin:
    """``pin`` blocked: hidden and refused until its definition changes (then asked about again) or
    someone approves it. The last approved definition stays for the diff."""
    return attrs.evolve(pin, state="blocked", updated_at=now, decided_by=by)


# ------------------------------------------------------------------------------------------- display


def shorten(text: str, budget: int) -> str:
    """``text`` if it has at most ``budget`` characters, else a prefix and "…" that have ``budget``."""
    if len(text) <= budget:
        return text
    return text[: max(budget - 1, 0)] + ELLIPSIS


def _pretty(value: Any) -> list[str]:
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False, default=str).splitlines()


_WORDS = re.compile(r"\s+|[^\s]+")
_CONTEXT_WORDS = 4


def _word_diff(old: str, new: str) -> str:
    """Changed runs of words as ``[-old-]{+new+}``, with a few words of context around each, and "…"
    for the unchanged text left out."""
    a, b = _WORDS.findall(old), _WORDS.findall(new)
    out: list[str] = []
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    for index, (tag, i1, i2, j1, j2) in enumerate(ops):
        if tag == "equal":
            chunk = a[i1:i2]
            words = [w for w in chunk if not w.isspace()]
            first, last = index == 0, index == len(ops) - 1
            if len(words) <= 2 * _CONTEXT_WORDS:
                out.append("".join(chunk))
                continue
            head = "" if first else _take_words(chunk, _CONTEXT_WORDS)
            tail = "" if last else _take_words(chunk[::-1], _CONTEXT_WORDS, reverse=True)
            out.append(f"{head} {ELLIPSIS} {tail}".strip() if head or tail else ELLIPSIS)
            if not last:
                out.append(" ")
            continue
        if tag == "delete":
            out.append(_marked("[-", "".join(a[i1:i2]), "-]"))
        elif tag == "insert":
            out.append(_marked("{+", "".join(b[j1:j2]), "+}"))
        else:
            out.append(f"[-{''.join(a[i1:i2])}-]{{+{''.join(b[j1:j2])}+}}")
    return "".join(out).strip()


def _marked(opening: str, text: str, closing: str) -> str:
    """``text`` between the markers, its leading and trailing spaces outside them (``a {+b+}``)."""
    core = text.strip()
    if not core:
        return f"{opening}{text}{closing}"
    start = text.index(core)
    return f"{text[:start]}{opening}{core}{closing}{text[start + len(core) :]}"


def _take_words(tokens: list[str], count: int, *, reverse: bool = False) -> str:
    """The first ``count`` words of ``tokens`` with the spaces between them (tokens given reversed
    when ``reverse``, and then returned in reading order)."""
    taken: list[str] = []
    words = 0
    for token in tokens:
        if not token.isspace():
            if words == count:
                break
            words += 1
        taken.append(token)
    if reverse:
        taken.reverse()
    return "".join(taken).strip()


def _line_diff(old: Any, new: Any) -> str:
    """A JSON value's change as the changed lines of its pretty-printed form, ``-``/``+``, one line of
    context."""
    a = [] if old is None else _pretty(old)
    b = [] if new is None else _pretty(new)
    lines = [
        line
        for line in difflib.unified_diff(a, b, lineterm="", n=1)
        if not line.startswith(("---", "+++", "@@"))
    ]
    return "\n".join(lines)


def diff(old: Mapping[str, Any] | None, new: Mapping[str, Any], *, budget: int = DIFF_BUDGET) -> str:
    """A readable old → new of two definitions: each changed field by name (``description:``), text
    fields as a word diff (``[-removed-]{+added+}``), schemas and annotations as changed JSON lines;
    shortened to ``budget`` characters with "…". Without ``old`` it is :func:`summary` of ``new``."""
    if old is None:
        return summary(new, budget=budget)
    parts: list[str] = []
    for field in PINNED_FIELDS:
        before, after = old.get(field), new.get(field)
        if before == after:
            continue
        if before is None:
            what = "added"
        elif after is None:
            what = "removed"
        else:
            what = "changed"
        if field in TEXT_FIELDS and isinstance(before or "", str) and isinstance(after or "", str):
            body = _word_diff(str(before or ""), str(after or ""))
        else:
            body = _line_diff(before, after)
        parts.append(f"{field} ({what}):\n{body}")
    if not parts:
        return "(no change in the pinned fields)"
    return shorten("\n\n".join(parts), budget)


def summary(definition: Mapping[str, Any], *, budget: int = DIFF_BUDGET) -> str:
    """A definition seen for the first time: title, description, and the arguments (the input schema's
    property names and types, required ones marked ``*``), then any other pinned field as JSON;
    shortened to ``budget`` characters with "…"."""
    parts: list[str] = []
    title = definition.get("title")
    if title is not None:
        parts.append(f"title: {title}")
    description = definition.get("description")
    parts.append(f"description: {description}" if description is not None else "description: (none)")
    schema = definition.get("inputSchema")
    props = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(props, dict) and props:
        required = schema.get("required") if isinstance(schema, dict) else None
        required = required if isinstance(required, list) else []
        args = []
        for key, prop in props.items():
            kind = prop.get("type") if isinstance(prop, dict) else None
            mark = "*" if key in required else ""
            args.append(f"{key}{mark}: {kind}" if isinstance(kind, str) else f"{key}{mark}")
        parts.append("arguments: " + ", ".join(args))
    elif schema is not None:
        parts.append("inputSchema: " + canonical_json(schema))
    for field in ("outputSchema", "annotations"):
        if field in definition:
            parts.append(f"{field}: " + canonical_json(definition[field]))
    return shorten("\n".join(parts), budget)


# ------------------------------------------------------------------------------------------ lock file
# ``portero pins export > portero.lock`` / ``portero check --lock portero.lock``: the approved definitions
# a team commits, and the check that fails when the gateway's current definitions drift from them.

LOCK_VERSION = 1


def export_lock(pinned: Sequence[Pin]) -> str:
    """The lock file of ``pinned``: JSON, keys sorted, one entry ``"server/tool": {hash, definition}`` per
    pin that has an approved definition (the approved one, also while a change waits). Deterministic: the
    same pins give the same bytes."""
    tools = {
        p.canonical: {"hash": p.approved_hash, "definition": p.approved_definition}
        for p in pinned
        if p.approved_hash is not None and p.approved_definition is not None
    }
    return (
        json.dumps(
            {"portero_lock": LOCK_VERSION, "tools": tools}, sort_keys=True, indent=2, ensure_ascii=False
        )
        + "\n"
    )


def parse_lock(text: str) -> dict[str, str]:
    """``canonical name -> hash`` of a lock file; ValueError naming what is wrong (not JSON, not a lock,
    an entry whose hash is not its definition's: edited by hand)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if (
        not isinstance(data, dict)
        or data.get("portero_lock") != LOCK_VERSION
        or not isinstance(data.get("tools"), dict)
    ):
        raise ValueError(
            f'not a Portero lock file (expected {{"portero_lock": {LOCK_VERSION}, "tools": {{...}}}})'
        )
    out: dict[str, str] = {}
    for name, entry in data["tools"].items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("hash"), str)
            or not isinstance(entry.get("definition"), dict)
        ):
            raise ValueError(f'{name}: expected {{"hash": ..., "definition": {{...}}}}')
        if definition_hash(entry["definition"]) != entry["hash"]:
            raise ValueError(f"{name}: the hash is not the hash of its definition (edited by hand?)")
        out[name] = entry["hash"]
    return out


def lock_drift(locked: Mapping[str, str], current: Sequence[Pin]) -> list[str]:
    """One line per tool whose current definition (what its server lists now, approved or not) is not the
    locked one: changed, or not in the lock at all. Locked tools the store has never seen are not drift
    (their server may not run here). Sorted by name; empty means no drift."""
    out: list[str] = []
    for p in sorted(current, key=lambda p: p.canonical):
        want = locked.get(p.canonical)
        if want is None:
            out.append(f"{p.canonical}: not in the lock (definition {p.hash[:12]}, {p.state})")
        elif want != p.hash:
            out.append(
                f"{p.canonical}: definition {p.hash[:12]} ({p.state}) differs from the locked {want[:12]}"
            )
    return out
