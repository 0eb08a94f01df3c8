"""Description checks: what a tool definition shows the model that tool-poisoning attacks use — pure.

:func:`check_tool` reads one MCP tool definition and returns :class:`Flag` objects, one per kind of finding
and place (at most :data:`MAX_PLACES_PER_CODE` places per kind, the rest summed up in the last one). A flag
is a hint for the human who approves the definition, not a verdict: nothing here blocks anything.

Where it looks: the tool's ``description`` and ``title``, ``annotations.title``, and every ``description``,
``title``, ``default``, ``enum``, ``examples`` and ``const`` text anywhere inside ``inputSchema`` and
``outputSchema`` (property names are checked for invisible characters too). Hidden characters are dropped
(and Unicode tag characters decoded to the ASCII they smuggle) before the phrase checks, so
``ig\\u200bnore previous instructions`` is still found.

The codes, stable (the approval message and ``portero pins`` show them):

``invisible-unicode``
    zero-width and other format characters, bidi overrides and isolates, Unicode tag characters
    (U+E0000–E007F, "ASCII smuggling"), runs of variation selectors (text hidden after an emoji), control
    characters other than tab and newlines, private-use and blank filler characters. Left alone: one
    variation selector after a visible character (``⚠️``), a zero-width joiner inside an emoji sequence,
    and a subdivision flag's tag sequence (🏴 + tags + cancel tag).
``instructions-to-model``
    text addressed to the model rather than describing the tool: "ignore previous instructions", "do not
    tell the user", "you must always", "before using any other tool", chat-role markers such as
    ``<|im_start|>`` or ``[INST]``, "reveal your system prompt".
``hidden-block``
    ``<IMPORTANT>``-style tags (important, system, secret, hidden, instructions, …) and HTML or Markdown
    comments.
``cross-server-reference``
    the name of another server's tool (``others``). A name that is one plain word (``search``, ``fetch``)
    counts only next to the word "tool" or in quotes or backticks, or written with its server
    (``github/search``, ``github__search``), so that ordinary English does not match.
``reads-secrets``
    well-known secret files (``~/.ssh``, ``id_rsa``, ``.env``, ``mcp.json``, ``/etc/passwd``, cloud and
    package-manager credentials, …) anywhere; and secret words ("API key", "private key", "password",
    "access token", "credentials", …) when the same sentence asks to read, send, include or print
    something — so that a ``password`` parameter's "Database password" is not flagged.
``too-long``
    a text longer than :data:`MAX_DESCRIPTION` characters (room to hide instructions, and context spent).
``name-collision``
    the tool's name equals another server's tool name, exactly or ignoring case and ``-``/``_``/``.``/space.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

__all__ = ["MAX_DESCRIPTION", "Flag", "check_tool", "override_descriptions", "render_flags"]

MAX_DESCRIPTION = 2000  # characters; the published servers' longest are under 600
QUOTE = 60  # characters of the text a flag quotes
MAX_PLACES_PER_CODE = 3  # places reported for one code; more are summed up in the last flag
MAX_DEPTH = 32  # how deep the schema walk goes
MAX_TEXTS = 2000  # texts looked at per definition (a schema can be huge)


@attrs.frozen
class Flag:
    """One finding. ``code`` is a short stable id; ``detail`` one human line: what was found and where."""

    code: str
    detail: str


def render_flags(flags: Iterable[Flag]) -> list[str]:
    """One line per flag, for a message: ``code: detail``."""
    return [f"{flag.code}: {flag.detail}" for flag in flags]


def override_descriptions(
    tools: Sequence[dict[str, Any]], overrides: Mapping[str, str]
) -> tuple[Sequence[dict[str, Any]], list[str]]:
    """The tools with the configured descriptions (``[[mcp]] descriptions``, tool name as the server names
    it -> text) in place of the server's own, and the overridden names that no tool has (sorted).

    The given definitions are not changed (pins hash the server's original); an overridden tool is a copy.
    """
    if not overrides:
        return tools, []
    names = {t.get("name") for t in tools}
    out = [
        {**t, "description": overrides[t["name"]]}
        if isinstance(t.get("name"), str) and t["name"] in overrides
        else t
        for t in tools
    ]
    return out, sorted(name for name in overrides if name not in names)


# ------------------------------------------------------------------------------------- invisible text

_VS = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")
_BLANK_FILLERS = frozenset("\u034f\u115f\u1160\u2800\u3164\uffa0")
# A subdivision flag (England, Scotland, Wales): black flag, 2-6 tag letters or digits, cancel tag.
_TAG_FLAG = re.compile("\U0001f3f4[\U000e0030-\U000e0039\U000e0061-\U000e007a]{2,6}\U000e007f")
_ZWJ = "\u200d"


def _is_tag(ch: str) -> bool:
    return 0xE0000 <= ord(ch) <= 0xE007F


def _pictographic(ch: str) -> bool:
    # Close enough to Extended_Pictographic for a joiner's neighbours: symbols and emoji modifiers.
    return unicodedata.category(ch) in ("So", "Sk") or 0x1F3FB <= ord(ch) <= 0x1F3FF


def _hidden_positions(text: str) -> list[int]:
    """Indexes of the characters that hide text (see the module docstring for what is left alone)."""
    allowed: set[int] = set()
    for m in _TAG_FLAG.finditer(text):
        allowed.update(range(m.start() + 1, m.end()))
    out: list[int] = []
    for i, ch in enumerate(text):
        if i in allowed:
            continue
        cat = unicodedata.category(ch)
        prev = text[i - 1] if i else ""
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if _VS.fullmatch(ch):
            # One selector after a visible character picks its glyph; a run of them encodes hidden bytes.
            if not prev or prev.isspace() or _VS.fullmatch(prev) or _VS.fullmatch(nxt or "x"):
                out.append(i)
        elif ch == _ZWJ:
            before = text[i - 2] if i >= 2 and _VS.fullmatch(prev) else prev
            if not (before and nxt and _pictographic(before) and _pictographic(nxt)):
                out.append(i)
        elif cat in ("Cf", "Co") or ch in _BLANK_FILLERS or (cat == "Cc" and ch not in "\t\n\r"):
            out.append(i)
    return out


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _show(text: str) -> str:
    """``text`` on one line, every character that is not plainly visible written as a ``\\u`` escape."""
    hidden = set(_hidden_positions(text))
    out = []
    for i, ch in enumerate(text):
        if ch in "\t\n\r":
            out.append(" ")
        elif i in hidden or (not ch.isprintable() and ch != " "):
            out.append(_escape(ch))
        else:
            out.append(ch)
    return "".join(out)


def _quote(text: str, start: int = 0, end: int | None = None) -> str:
    """About :data:`QUOTE` characters of ``text`` from a little before ``start``, hidden ones escaped."""
    end = start if end is None else end
    lo = max(0, start - 12)
    hi = min(len(text), max(lo + QUOTE, end) if end - lo <= QUOTE else lo + QUOTE)
    lo = max(0, min(lo, hi - QUOTE))
    return ("…" if lo > 0 else "") + _show(text[lo:hi]) + ("…" if hi < len(text) else "")


def _char_names(text: str, positions: Sequence[int], limit: int = 3) -> str:
    names: list[str] = []
    for i in positions:
        ch = text[i]
        label = f"U+{ord(ch):04X}" + (f" {unicodedata.name(ch)}" if unicodedata.name(ch, "") else "")
        if _is_tag(ch):
            label = "U+E00xx TAG characters"
        if label not in names:
            names.append(label)
    more = ", …" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _plain(text: str) -> str:
    """What a model reads: hidden characters dropped, tag characters decoded to ASCII, NFKC, single spaces."""
    hidden = set(_hidden_positions(text))
    chars = []
    for i, ch in enumerate(text):
        if i not in hidden:
            chars.append(ch)
        elif 0xE0020 <= ord(ch) <= 0xE007E:
            chars.append(chr(ord(ch) - 0xE0000))
    return re.sub(r"[^\S\n]+", " ", unicodedata.normalize("NFKC", "".join(chars)))


# ------------------------------------------------------------------------------------------- phrases

_I = re.IGNORECASE
_INSTRUCTIONS = [
    re.compile(
        r"\b(?:ignore|disregard|forget|override|bypass)\s+(?:all\s+|any\s+|the\s+|your\s+)*"
        r"(?:previous|prior|above|earlier|preceding|former|other|original|system)\s+"
        r"(?:instructions?|prompts?|rules|directions|directives|guidelines|messages|context)\b",
        _I,
    ),
    re.compile(
        r"\b(?:do\s+not|don'?t|never|must\s+not|mustn'?t|should\s+not|shouldn'?t)\s+(?:\w+\s+){0,3}?"
        r"(?:tell|mention|inform|notify|alert|reveal|disclose|say)\b[^.!?\n]{0,120}?\buser'?s?\b",
        _I,
    ),
    re.compile(r"\bwithout\s+(?:telling|informing|notifying|alerting)\s+(?:the\s+)?user\b", _I),
    re.compile(r"\b(?:hide|conceal|keep)\s+(?:this|it|that)\s+(?:secret\s+)?from\s+(?:the\s+)?user\b", _I),
    re.compile(r"\bthe\s+user\s+(?:must|should)\s+(?:not|never)\s+(?:know|see|be\s+told|find\s+out)\b", _I),
    re.compile(r"\byou\s+(?:must|should|have\s+to|need\s+to)\s+always\b", _I),
    re.compile(
        r"\b(?:before|prior\s+to)\s+(?:using|calling|invoking|running)\s+(?:any|every|all)\s+"
        r"(?:of\s+the\s+)?(?:other\s+)?tools?\b",
        _I,
    ),
    re.compile(r"\balways\s+(?:call|use|invoke|run)\s+this\s+tool\s+(?:first|before)\b", _I),
    re.compile(r"\bdo\s+not\s+(?:use|call|invoke)\s+(?:any\s+)?other\s+tools?\b", _I),
    re.compile(r"\b(?:new|updated|real|actual)\s+instructions\s*:", _I),
    re.compile(
        r"\b(?:reveal|print|output|show|repeat|leak)\s+(?:your|the)\s+(?:system\s+prompt|instructions)\b", _I
    ),
    re.compile(r"\byou\s+are\s+now\s+(?:a|an|the|in)\b", _I),
    re.compile(r"<\|(?:im_start|im_end|system|endoftext)\|>|\[/?INST\]|<<SYS>>|^\s*#{2,}\s*system\b", _I),
]

_HIDDEN_TAGS = (
    "important|system|secret|hidden|instructions?|admin|critical|urgent|assistant|note|private|context"
    "|ai|model|llm|directive|override|priority|sys"
)
_HIDDEN_BLOCK = [
    re.compile(rf"<\s*/?\s*(?:{_HIDDEN_TAGS})(?:[\s_-][^<>]*)?\s*/?\s*>", _I),
    re.compile(r"<!--"),
    re.compile(r"^\s*\[//\]\s*:\s*#", re.MULTILINE),
]

_SECRET_FILES = re.compile(
    r"~/\.ssh\b|(?<![\w.])\.ssh/|\bid_(?:rsa|dsa|ecdsa|ed25519)\b|\bauthorized_keys\b"
    r"|(?<![\w.-])\.env(?![\w-])|\bmcp\.json\b|\bclaude_desktop_config\.json\b|/etc/(?:passwd|shadow|sudoers)\b"
    r"|\.aws/credentials\b|\.config/gcloud\b|\.azure/|\.kube/config\b|\.docker/config\.json\b"
    r"|(?<![\w.])\.(?:npmrc|pypirc|netrc|pgpass|git-credentials|bash_history|zsh_history)\b"
    r"|\.gnupg\b|\bwallet\.dat\b|\bcredentials\.json\b|\bkeychain\b",
    _I,
)
_SECRET_WORDS = re.compile(
    r"\b(?:api[\s_-]?keys?|private[\s_-]keys?|secret[\s_-]keys?|ssh[\s_-]keys?|access[\s_-]tokens?"
    r"|auth(?:entication)?[\s_-]tokens?|bearer\s+tokens?|session\s+cookies?|passwords?|passphrases?"
    r"|credentials|seed\s+phrases?|recovery\s+phrases?|secrets)\b",
    _I,
)
_ACCESS_VERBS = re.compile(
    r"\b(?:read|cat|open|include|send|attach|upload|copy|print|output|append|forward|leak|exfiltrate"
    r"|extract|collect|dump|reveal|paste|post|embed|transmit|share|retrieve|fetch)(?:s|ed|ing)?\b",
    _I,
)
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|\n|$)")


# ---------------------------------------------------------------------------------------------- texts


@attrs.frozen
class _Text:
    where: str  # "description", "inputSchema.properties.path.description", ...
    text: str
    prose: bool  # shown to the model as words (False: a property name, the tool's name)


_PROSE_KEYS = ("description", "title", "default", "const")
_PROSE_LISTS = ("enum", "examples")


def _schema_texts(node: Any, where: str, depth: int, out: list[_Text]) -> None:
    if depth > MAX_DEPTH or len(out) >= MAX_TEXTS:
        return
    if isinstance(node, Mapping):
        for key, value in node.items():
            if len(out) >= MAX_TEXTS:
                return
            path = f"{where}.{key}"
            if key in _PROSE_KEYS and isinstance(value, str):
                out.append(_Text(path, value, True))
            elif key in _PROSE_LISTS and isinstance(value, list):
                out.extend(_Text(f"{path}[{i}]", v, True) for i, v in enumerate(value) if isinstance(v, str))
            else:
                if key == "properties" and isinstance(value, Mapping):
                    out.extend(_Text(f"{path} (name)", k, False) for k in value if isinstance(k, str))
                _schema_texts(value, path, depth + 1, out)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _schema_texts(value, f"{where}[{i}]", depth + 1, out)


def _texts(tool: Mapping[str, Any]) -> list[_Text]:
    out: list[_Text] = []
    name = tool.get("name")
    if isinstance(name, str):
        out.append(_Text("name", name, False))
    for key in ("description", "title"):
        value = tool.get(key)
        if isinstance(value, str):
            out.append(_Text(key, value, True))
    annotations = tool.get("annotations")
    if isinstance(annotations, Mapping) and isinstance(annotations.get("title"), str):
        out.append(_Text("annotations.title", annotations["title"], True))
    for key in ("inputSchema", "outputSchema"):
        _schema_texts(tool.get(key), key, 0, out)
    return out[:MAX_TEXTS]


# --------------------------------------------------------------------------------------------- checks


def _fold(name: str) -> str:
    """A name as a reader would confuse it: hidden characters, case and separators ignored."""
    return re.sub(r"[\s_.\-]+", "", _plain(name)).casefold()


def _invisible(t: _Text) -> Iterator[Flag]:
    positions = _hidden_positions(t.text)
    if not positions:
        return
    n = len(positions)
    detail = (
        f"{t.where}: {n} invisible character{'s' if n > 1 else ''} ({_char_names(t.text, positions)}): "
        f"'{_quote(t.text, positions[0])}'"
    )
    smuggled = "".join(chr(ord(c) - 0xE0000) for c in t.text if 0xE0020 <= ord(c) <= 0xE007E)
    if smuggled:
        detail += f"; tag characters spell '{_quote(smuggled)}'"
    yield Flag("invisible-unicode", detail)


def _first(patterns: Iterable[re.Pattern[str]], text: str) -> re.Match[str] | None:
    found = [m for m in (p.search(text) for p in patterns) if m is not None]
    return min(found, key=lambda m: m.start()) if found else None


def _phrase(
    code: str, what: str, patterns: Sequence[re.Pattern[str]], t: _Text, plain: str
) -> Iterator[Flag]:
    m = _first(patterns, plain)
    if m is not None:
        yield Flag(code, f"{t.where}: {what}: '{_quote(plain, m.start(), m.end())}'")


def _secrets(t: _Text, plain: str) -> Iterator[Flag]:
    m = _SECRET_FILES.search(plain)
    if m is not None:
        yield Flag(
            "reads-secrets",
            f"{t.where}: names a secret file {m.group(0)!r}: '{_quote(plain, m.start(), m.end())}'",
        )
        return
    for sentence in _SENTENCE.finditer(plain):
        word = _SECRET_WORDS.search(sentence.group(0))
        verb = _ACCESS_VERBS.search(sentence.group(0))
        if word is not None and verb is not None:
            start = sentence.start() + min(word.start(), verb.start())
            end = sentence.start() + max(word.end(), verb.end())
            yield Flag(
                "reads-secrets",
                f"{t.where}: asks to {verb.group(0).lower()} {word.group(0).lower()}: "
                f"'{_quote(plain, start, end)}'",
            )
            return


def _reference_patterns(others: Mapping[str, str], own: str) -> list[tuple[re.Pattern[str], str, str]]:
    out: list[tuple[re.Pattern[str], str, str]] = []
    own_folded = _fold(own) if own else ""
    for name, server in others.items():
        if not name or _fold(name) == own_folded:
            continue  # the tool's own name is a name-collision, not a reference
        esc = re.escape(name)
        qualified = rf"{re.escape(server)}(?:__|/|\.|:|_|-){esc}"
        word = rf"(?<![\w-]){esc}(?![\w-])"
        if re.search(r"[_\-./:]|\d|[a-z][A-Z]", name):
            body = rf"(?<![\w-])(?:{qualified}|{esc})(?![\w-])"
        else:  # one plain word: only where it is clearly a tool's name
            body = (
                rf"(?<![\w-]){qualified}(?![\w-])|[`'\"]{esc}[`'\"]"
                rf"|\btools?\s+(?:named\s+|called\s+)?{word}|{word}\s+tool\b"
            )
        out.append((re.compile(body, _I), name, server))
    return out


def _references(t: _Text, plain: str, patterns: list[tuple[re.Pattern[str], str, str]]) -> Iterator[Flag]:
    hits: list[tuple[re.Match[str], str, str]] = []
    for rx, name, server in patterns:
        m = rx.search(plain)
        if m is not None:
            hits.append((m, name, server))
    if not hits:
        return
    hits.sort(key=lambda h: h[0].start())
    names = ", ".join(f"{server}/{name}" for _, name, server in hits[:3]) + (", …" if len(hits) > 3 else "")
    m = hits[0][0]
    yield Flag(
        "cross-server-reference",
        f"{t.where}: names another server's tool ({names}): '{_quote(plain, m.start(), m.end())}'",
    )


def _collisions(name: str, others: Mapping[str, str]) -> Iterator[Flag]:
    if not name:
        return
    if name in others:
        yield Flag("name-collision", f"name {_show(name)!r} is also a tool of server {others[name]!r}")
        return
    folded = _fold(name)
    for other, server in others.items():
        if other and _fold(other) == folded:
            yield Flag(
                "name-collision",
                f"name {_show(name)!r} reads like {other!r} of server {server!r} (case, separators or "
                "hidden characters aside)",
            )
            return


def _cap(flags: list[Flag]) -> list[Flag]:
    """At most :data:`MAX_PLACES_PER_CODE` flags per code, the last one saying how many more places."""
    counts: dict[str, int] = {}
    for flag in flags:
        counts[flag.code] = counts.get(flag.code, 0) + 1
    out: list[Flag] = []
    seen: dict[str, int] = {}
    for flag in flags:
        n = seen[flag.code] = seen.get(flag.code, 0) + 1
        if n < MAX_PLACES_PER_CODE or (n == MAX_PLACES_PER_CODE and counts[flag.code] == n):
            out.append(flag)
        elif n == MAX_PLACES_PER_CODE:
            more = counts[flag.code] - n
            out.append(attrs.evolve(flag, detail=f"{flag.detail} (and {more} more place{'s' * (more > 1)})"))
    return out


def check_tool(tool: Mapping[str, Any], *, server: str, others: Mapping[str, str] = {}) -> list[Flag]:
    """Flags for one MCP tool definition of ``server``, in a stable order (by code, then place).

    ``others`` maps every *other* server's tool name to that server (for name collisions and references
    to other servers' tools). Never raises on a malformed definition: what is not a string is skipped.
    """
    raw = tool.get("name")
    name = raw if isinstance(raw, str) else ""
    texts = _texts(tool)
    refs = _reference_patterns(others, name)
    by_code: dict[str, list[Flag]] = {code: [] for code in _ORDER}
    for t in texts:
        by_code["invisible-unicode"] += _invisible(t)
        if not t.prose:
            continue
        plain = _plain(t.text)
        by_code["instructions-to-model"] += _phrase(
            "instructions-to-model", "addresses the model", _INSTRUCTIONS, t, plain
        )
        by_code["hidden-block"] += _phrase("hidden-block", "hidden block", _HIDDEN_BLOCK, t, plain)
        by_code["cross-server-reference"] += _references(t, plain, refs)
        by_code["reads-secrets"] += _secrets(t, plain)
        if len(t.text) > MAX_DESCRIPTION:
            by_code["too-long"].append(
                Flag("too-long", f"{t.where}: {len(t.text)} characters (more than {MAX_DESCRIPTION})")
            )
    by_code["name-collision"] += _collisions(name, others)
    return [flag for code in _ORDER for flag in _cap(by_code[code])]


_ORDER = (
    "name-collision",
    "invisible-unicode",
    "hidden-block",
    "instructions-to-model",
    "cross-server-reference",
    "reads-secrets",
    "too-long",
)
