r"""Bidirectional fake <-> real replacement on decoded JSON values.

Clients only ever see *fake* values; the MCP servers behind the gateway only ever see *real* ones.
Client -> server, every rule's ``fake`` becomes its ``real`` (:meth:`Anonymizer.to_real`). Server -> client,
every ``real`` becomes its ``fake`` (bidirectional rules) or the rule's ``response_replacement`` (one-way
rules, ``[REDACTED]`` by default) (:meth:`Anonymizer.to_fake`).

Matching contract (both directions):

* One pass over each string with all rules at once. At each position the longest literal wins
  (leftmost-longest), and scanning resumes after the replaced text, so a replacement is never replaced again
  and rules never chain: with ``A -> B`` and ``B -> C``, ``"A"`` becomes ``"B"``, not ``"C"``; swapped pairs
  (``A -> B`` and ``B -> A``) work; fakes ``Ann`` and ``Anna`` can coexist.
* ``case_sensitive=False`` matches any case with the semantics of :data:`re.IGNORECASE` (one character
  matches one character, so the text is never lowered and lengths never shift), and writes the configured
  replacement exactly as configured.
* Two literals on the same side that can match the same text are ambiguous and rejected with
  :class:`ValueError` when the :class:`Anonymizer` is built: the same fake (or the same real) twice, or a
  case-insensitive literal equal, ignoring case, to another literal on that side.

Escaped spellings: a literal also matches where the text spells some of its characters as JSON string
escapes, so that JSON text inside a string (a tool that returns ``json.dumps(..., ensure_ascii=True)``
output, say) cannot carry a value past the rules. The characters that JSON encoders escape -- every
non-ASCII character (a ``\uXXXX`` escape, or a surrogate pair of them), control characters, and
``" \ / & ' + < = > ` `` -- match their raw form, their ``\uXXXX`` escape (hex digits in either case) or
their short escape (``\" \\ \/ \b \f \n \r \t``), and the same escapes escaped once more (JSON text
inside JSON text: ``\\u00e9``, ``\\\"``). Any mix of spellings matches, so encoders that escape only
some characters are covered. Other characters (ASCII letters, digits, space and the rest of ASCII
punctuation) are matched raw only, as no JSON encoder escapes them. A match that used an escape is
replaced by the replacement escaped the same number of times (``json.dumps(..., ensure_ascii=True)``
without its quotes), so the surrounding JSON stays valid and ASCII; a raw match gets the raw replacement.
Matching stays leftmost-longest over these spellings, with one exception: a literal that itself contains a
backslash can be read from some texts in more than one way (``\\`` is an escaped backslash, or two
backslashes), and then the reading chosen at the leftmost position is not always the longest.

JSON walking rewrites string values *and* object keys, at any depth, and leaves base64 payloads alone with
this exact rule: in a dict that has a ``"mimeType"`` key or a ``"uri"`` key, or whose ``"type"`` is
``"image"`` or ``"audio"``, a string value under the key ``"data"`` or ``"blob"`` is not rewritten if it is
strict base64 -- only ``A-Z a-z 0-9 + /``, at most two ``=`` at the end, line breaks (CR, LF) anywhere,
a multiple of 4 characters without the line breaks -- at least :data:`BASE64_MIN_CHARS` characters long,
and contains no literal of this direction that is at least :data:`BASE64_GUARD_CHARS` characters long
(such a literal cannot occur in random base64 by chance, so it is a value, not binary data). Every other
string under those keys (a name, a short token, text) is rewritten like any other string. If two keys of one
object become equal after rewriting, the later one wins, as in a JSON object with a duplicate key.

Cost: the literals of each side are compiled once into one regular expression shaped like a trie of the
literals (one per case mode), so a string is scanned once by the C regex engine, and a string that cannot
match is rejected by the engine's first-character prefilter without any Python-level work. Walking a JSON
value copies only the containers on the path to a changed string; when nothing changes, the input object
itself is returned, so callers can skip re-encoding with an ``is`` check. Inputs are never mutated.
Escaped spellings add alternatives only at the characters that have them (a literal of ASCII letters and
spaces compiles exactly as it would without them), and only a match that used an escape is read back in
Python to find its literal. Where the compiled ``ahocorasick_rs`` wheel is installed, a side whose rules are
all case-sensitive hands strings of 48 characters or more that contain no backslash (so no escaped
spelling) to its leftmost-longest Aho-Corasick automaton instead, with the same output (~2.7x faster on a
1 MB text with 1,000 rules; see :func:`_ac_sub`); everything else, and everything without the wheel, goes
through the regex.

This module is pure: no I/O, no clock, no environment.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs

try:  # A compiled wheel: without it (or in a zipapp built without it), the regex does all the work.
    import ahocorasick_rs as _ahocorasick
except ImportError:  # pragma: no cover - depends on the environment
    _ahocorasick = None  # type: ignore[assignment]

__all__ = ["BASE64_GUARD_CHARS", "BASE64_MIN_CHARS", "Anonymizer", "Rule"]

_Trie = dict[str, Any]  # char -> child trie; the key "" (never a char) holds the terminal's replacement.
_END = ""


@attrs.frozen
class Rule:
    """One replacement: ``fake`` is what clients see, ``real`` is what servers see (never shown in repr)."""

    fake: str
    real: str = attrs.field(repr=False)
    bidirectional: bool = True
    case_sensitive: bool = True
    response_replacement: str = "[REDACTED]"


class _RuleLike(Protocol):
    @property
    def fake(self) -> str: ...
    @property
    def real(self) -> str: ...
    @property
    def bidirectional(self) -> bool: ...
    @property
    def case_sensitive(self) -> bool: ...
    @property
    def response_replacement(self) -> str: ...


# --------------------------------------------------------------------------------------------------------
# Case-insensitive characters. ``re.IGNORECASE`` is an equivalence between single characters; we key the
# case-insensitive trie by a cheap canonical form (the lowercase when it is one character) and then merge
# sibling branches the regex engine itself considers equal (e.g. "i" and "İ", "s" and "ſ"), so that no two
# alternatives at one trie node can match the same character -- which is what makes the trie regex
# leftmost-longest.


def _canon(ch: str) -> str:
    low = ch.lower()
    return low if len(low) == 1 else ch


@functools.lru_cache(maxsize=4096)
def _ci_char(ch: str) -> re.Pattern[str]:
    return re.compile(re.escape(ch), re.IGNORECASE)


def _ci_equal(a: str, b: str) -> bool:
    return _ci_char(a).fullmatch(b) is not None


# --------------------------------------------------------------------------------------------------------
# Tries.


def _insert(root: _Trie, literal: str, value: str, key: Callable[[str], str], what: str) -> None:
    node = root
    for ch in literal:
        node = node.setdefault(key(ch), {})
    if _END in node:
        same = "same" if key is str else "same (ignoring case)"
        raise ValueError(f"ambiguous anonymization rules: two rules have the {same} {what} {literal!r}")
    node[_END] = value


def _merge_into(dst: _Trie, src: _Trie, what: str) -> None:
    for k, child in src.items():
        if k == _END:
            if _END in dst:
                raise ValueError(
                    f"ambiguous anonymization rules: two case-insensitive {what} values "
                    "are equal ignoring case"
                )
            dst[_END] = child
        elif k in dst:
            _merge_into(dst[k], child, what)
        else:
            dst[k] = child


def _merge_ci_siblings(root: _Trie, what: str) -> None:
    stack = [root]
    while stack:
        node = stack.pop()
        keys = [k for k in node if k != _END]
        if len(keys) > 1:
            i = 0
            while i < len(keys):
                j = i + 1
                while j < len(keys):
                    if _ci_equal(keys[i], keys[j]):
                        _merge_into(node[keys[i]], node.pop(keys[j]), what)
                        del keys[j]
                    else:
                        j += 1
                i += 1
        stack.extend(node[k] for k in keys)


def _ci_child(node: _Trie, ch: str) -> _Trie | None:
    child: _Trie | None = node.get(_canon(ch))
    if child is None:
        for k, c in node.items():
            if k != _END and _ci_equal(k, ch):
                return c  # type: ignore[no-any-return]
    return child


def _ci_lookup(root: _Trie, text: str) -> str | None:
    """The replacement of the case-insensitive literal equal to ``text`` ignoring case, if any."""
    node: _Trie | None = root
    for ch in text:
        assert node is not None
        node = _ci_child(node, ch)
        if node is None:
            return None
    assert node is not None
    value: str | None = node.get(_END)
    return value


# --------------------------------------------------------------------------------------------------------
# Escaped spellings (see the module docstring). A character's escapes all start with a backslash; for
# characters other than the backslash itself, no escape of one character is a prefix of an escape of
# another, so the trie regex stays leftmost-longest.

_ESCAPED_ASCII = frozenset("\"\\/&'+<=>`\x7f").union(map(chr, range(0x20)))
_SHORT_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}
_SHORT_DECODE = {v: k for k, v in _SHORT_ESCAPES.items()}
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")


def _escapable(ch: str) -> bool:
    o = ord(ch)
    return (o >= 0x80 and not 0xD800 <= o < 0xE000) or ch in _ESCAPED_ASCII


@functools.lru_cache(maxsize=4096)
def _escapes(ch: str) -> tuple[str, ...]:
    """The escaped spellings of an escapable ``ch`` (hex digits in lowercase): one level, then two."""
    o = ord(ch)
    if o > 0xFFFF:
        o -= 0x10000
        one = [f"\\u{0xD800 + (o >> 10):04x}\\u{0xDC00 + (o & 0x3FF):04x}"]
    else:
        one = [f"\\u{o:04x}"]
    if ch in _SHORT_ESCAPES:
        one.append("\\" + _SHORT_ESCAPES[ch])
    two = [s.replace("\\", "\\\\").replace('"', '\\"') for s in one]
    return (*one, *two)


def _spelling_rx(spelling: str) -> str:
    """A regex for an escaped spelling, its hex digits in either case (its only ``u`` is the escape's)."""
    out: list[str] = []
    hex_left = 0
    for ch in spelling:
        if hex_left:
            hex_left -= 1
            out.append(f"[{ch}{ch.upper()}]" if ch.isalpha() else ch)
        else:
            out.append(re.escape(ch))
            if ch == "u":
                hex_left = 4
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _escapes_rx(chars: str | tuple[str, ...]) -> str:
    """A regex for every escaped spelling of ``chars`` (starting with a literal backslash), or ``""``."""
    if len(chars) == 1 and not _escapable(chars[0]):
        return ""  # the common case, first
    spellings = sorted(
        {s[1:] for ch in chars if _escapable(ch) for s in _escapes(ch)}, key=lambda s: (-len(s), s)
    )
    if not spellings:
        return ""
    alts = [_spelling_rx(s) for s in spellings]  # longest first: see _trie_regex
    return "\\\\" + (alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")")


def _escapes_at(text: str, pos: int) -> list[tuple[str, int, int]]:
    """Every escaped spelling of an escapable character at ``text[pos:]``, as (character, end, levels)."""
    out: list[tuple[str, int, int]] = []
    for levels, lead in ((1, "\\"), (2, "\\\\")):
        if not text.startswith(lead, pos):
            break
        i = pos + len(lead)
        if text.startswith("u", i) and _HEX4.fullmatch(text, i + 1, i + 5):
            code, end = int(text[i + 1 : i + 5], 16), i + 5
            if 0xD800 <= code < 0xDC00:
                if text.startswith(lead + "u", end) and _HEX4.fullmatch(
                    text, end + len(lead) + 1, end + len(lead) + 5
                ):
                    low = int(text[end + len(lead) + 1 : end + len(lead) + 5], 16)
                    if 0xDC00 <= low < 0xE000:
                        char = chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))
                        out.append((char, end + len(lead) + 5, levels))
            elif not 0xDC00 <= code < 0xE000:
                out.append((chr(code), end, levels))
        nxt = text[i : i + 1]
        if levels == 2 and nxt == "\\":  # a twice-escaped quote or backslash: \\\" or \\\\\\
            nxt, i = text[i + 1 : i + 2], i + 1
            if nxt not in ('"', "\\"):
                continue
        elif levels == 2 and nxt in ('"', "\\"):
            continue
        if nxt in _SHORT_DECODE:
            out.append((_SHORT_DECODE[nxt], i + 1, levels))
    return [t for t in out if _escapable(t[0])]


# One escape as _escapes_at reads it: two leading backslashes (level 2) tried first; a surrogate pair whole.
_ESCAPE = re.compile(
    r"(\\\\|\\)(?:u(?:([dD][89abAB][0-9a-fA-F]{2})\1u([dD][c-fC-F][0-9a-fA-F]{2})|([0-9a-fA-F]{4}))"
    r'|(\\["\\]|["\\/bfnrt]))'
)


def _decode_escapes(text: str) -> tuple[str, int]:
    """``text`` with its escapes of escapable characters decoded, and the most levels one used: a quick
    reading that is right unless a literal contains a backslash (then _read_spelled decides)."""
    levels = 0

    def one(m: re.Match[str]) -> str:
        nonlocal levels
        lead, high, low, code, short = m.groups()
        level = len(lead)
        if high is not None:
            ch = chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00))
        elif code is not None:
            ch = chr(int(code, 16))
        elif level == 2 and len(short) == 2:  # \\\" or \\\\
            ch = short[1]
        elif len(short) == 2 or (level == 2 and short in ('"', "\\")):
            return m.group()
        else:
            ch = _SHORT_DECODE[short]
        if not _escapable(ch):
            return m.group()
        levels = max(levels, level)
        return ch

    decoded = _ESCAPE.sub(one, text)
    return decoded, levels


def _escape_value(value: str, levels: int) -> str:
    for _ in range(levels):
        value = json.dumps(value, ensure_ascii=True)[1:-1]
    return value


def _read_spelled(root: _Trie, text: str, ignore_case: bool) -> tuple[str, int] | None:
    """The replacement of a literal of the trie that ``text`` spells (raw or escaped), and how many levels
    of escaping the spelling used (0: raw). A depth-first search, escaped readings first, as in the regex."""
    stack: list[tuple[_Trie, int, int]] = [(root, 0, 0)]
    n = len(text)
    while stack:
        node, pos, levels = stack.pop()
        if pos == n:
            value = node.get(_END)
            if value is not None:
                return value, levels
            continue
        options = [(text[pos], pos + 1, 0)]
        if text[pos] == "\\":
            options.extend(_escapes_at(text, pos))  # tried first: pushed last
        for ch, end, lv in options:
            child = _ci_child(node, ch) if ignore_case else node.get(ch)
            if child is not None:
                stack.append((child, end, max(levels, lv)))
    return None


# Every character that has a case mapping, or that re.IGNORECASE relates to another, is below this bound
# (tests/unit/test_anonymize.py checks it against the running Python's Unicode tables).
_CASED_BOUND = 0x1F000


@functools.cache
def _cased_universe() -> str:
    # Built once, on the first case-insensitive rule set (~13 ms, ~0.5 MB); scanning it takes ~1 ms.
    return "".join(map(chr, itertools.chain(range(0xD800), range(0xE000, _CASED_BOUND))))


def _ci_variants(chars: Iterable[str]) -> dict[str, list[str]]:
    """For each of ``chars``, every character ``re.IGNORECASE`` matches against it (itself included)."""
    chars = set(chars)
    rx = re.compile("[" + "".join(map(re.escape, sorted(chars))) + "]", re.IGNORECASE)
    candidates = sorted(chars.union(rx.findall(_cased_universe())))
    return {c: [d for d in candidates if _ci_equal(c, d)] for c in chars}


def _trie_regex(root: _Trie, ignore_case: bool = False, escapes: bool = True) -> str:
    """A regex matching exactly the trie's literals, preferring the longest at a given position.

    Siblings start with different characters, so at most one alternative can proceed; an optional tail
    (``(?:...)?``) is greedy, so a longer literal is tried before the shorter one that ends here. With
    ``escapes``, an escapable character also matches its escaped spellings (the module docstring), tried
    before its raw form and longest first; no two characters share a spelling, so this holds still (but
    for a backslash, whose raw form is a prefix of every escape: hence that exception).

    The result is meant to be compiled *without* flags, for speed: the regex engine skips to candidate
    positions in C only when the pattern starts with a literal, a character set or a branch of literals,
    and it skips a branch alternative cheaply only when it starts with a literal or a set -- neither holds
    under ``re.IGNORECASE``. So a case-insensitive trie spells each character as the explicit set of its
    case variants (``[kK]`` plus the Kelvin sign), and its top level repeats each subtree once per variant
    of the first character (and once for its escapes, which all start with a backslash), so that it stays
    a branch of literals.
    """
    variants = _ci_variants(_trie_chars(root)) if ignore_case else {}

    def escaped(k: str) -> str:
        vs = variants.get(k)
        return _escapes_rx(k if vs is None else tuple(vs)) if escapes else ""

    def atom(k: str) -> str:
        vs = variants.get(k)
        raw = re.escape(k) if vs is None or len(vs) == 1 else "[" + "".join(map(re.escape, vs)) + "]"
        esc = escaped(k)
        return "(?:" + esc + "|" + raw + ")" if esc else raw

    def node_rx(node: _Trie, top: bool = False) -> str:
        # Walk straight chains in a loop so only branch points recurse (long literals are fine).
        prefix: list[str] = []
        while len(node) == 1 and _END not in node and not top:
            ((k, node),) = node.items()
            prefix.append(atom(k))
        leaves: list[str] = []
        branches: list[str] = []
        for k in sorted(k for k in node if k != _END):
            child = node[k]
            if top:
                # A set among the top alternatives would hide the first-character prefilter.
                rest = node_rx(child)
                esc = escaped(k)
                if esc:
                    branches.append(esc + rest)
                branches.extend(re.escape(v) + rest for v in variants.get(k, [k]))
            elif len(child) == 1 and _END in child and not escaped(k):
                leaves.extend(variants.get(k, [k]))
            else:
                branches.append(atom(k) + node_rx(child))
        if leaves:
            branches.append(
                re.escape(leaves[0]) if len(leaves) == 1 else "[" + "".join(map(re.escape, leaves)) + "]"
            )
        if not branches:  # a leaf
            return "".join(prefix)
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if _END in node:
            body = "(?:" + body + ")?"
        return "".join(prefix) + body

    return node_rx(root, top=True)


def _trie_chars(root: _Trie) -> set[str]:
    chars: set[str] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        for k, child in node.items():
            if k != _END:
                chars.add(k)
                stack.append(child)
    return chars


# --------------------------------------------------------------------------------------------------------
# One direction.


_SMALL_SET = 8  # up to this many exact literals, pre-check with `in` before running the regex


class _Replacer:
    """Rewrites every literal of one side into its replacement, leftmost-longest, in one pass."""

    __slots__ = ("_cs_table", "_cs_trie", "_cs", "_ci_trie", "_ci", "_escaped", "_ac", "sub")

    def __init__(self, pairs: Iterable[tuple[str, str, bool]], what: str, escapes: bool = True) -> None:
        """``pairs``: (literal, replacement, case_sensitive); ``escapes``: match escaped spellings too."""
        cs_trie: _Trie = {}
        ci_trie: _Trie = {}
        self._cs_table: dict[str, str] = {}
        for literal, replacement, case_sensitive in pairs:
            if case_sensitive:
                _insert(cs_trie, literal, replacement, str, what)
                self._cs_table[literal] = replacement
            else:
                _insert(ci_trie, literal, replacement, _canon, what)
        _merge_ci_siblings(ci_trie, what)
        for literal in self._cs_table:
            if _ci_lookup(ci_trie, literal) is not None:
                raise ValueError(
                    f"ambiguous anonymization rules: the {what} {literal!r} equals, ignoring case, "
                    f"the {what} of a case-insensitive rule"
                )
        self._cs_trie = cs_trie
        self._ci_trie = ci_trie
        self._escaped: dict[tuple[str, int], str] = {}  # (replacement, levels) -> escaped replacement
        self._cs = re.compile(_trie_regex(cs_trie, escapes=escapes)) if cs_trie else None
        self._ci = (  # sic: no flags
            re.compile(_trie_regex(ci_trie, ignore_case=True, escapes=escapes)) if ci_trie else None
        )
        # The hot path is a bound C method whenever only one case mode is in use.
        self.sub: Callable[[str], str]
        self._ac: Callable[[str], str] | None = None
        if self._cs is not None and self._ci is None:
            self._ac = _ac_sub(self._cs_table, functools.partial(self._cs.sub, self._cs_repl), escapes)
        if self._cs is not None and self._ci is not None:
            self.sub = self._sub_mixed
        elif self._cs is not None and len(self._cs_table) <= _SMALL_SET:
            # A few exact literals: `in` (CPython's fast substring search) rules out the common
            # no-match case ~4x faster than the regex engine, which tries a match at every
            # position whose first character could start one. A text that spells a literal (escaped
            # or not) contains its longest run of characters that have no escape, or else a backslash
            # or the literal's first character.
            full = self._ac or functools.partial(self._cs.sub, self._cs_repl)
            needles = tuple({n for literal in self._cs_table for n in _needles(literal, escapes)})

            def sub(s: str) -> str:
                for needle in needles:
                    if needle in s:
                        return full(s)
                return s

            self.sub = sub
        elif self._ac is not None:
            self.sub = self._ac
        elif self._cs is not None:
            self.sub = functools.partial(self._cs.sub, self._cs_repl)
        elif self._ci is not None:
            self.sub = functools.partial(self._ci.sub, self._ci_repl)
        else:
            self.sub = _same

    def found(self, s: str) -> bool:
        """Whether ``s`` contains a literal of this side."""
        return (self._cs is not None and self._cs.search(s) is not None) or (
            self._ci is not None and self._ci.search(s) is not None
        )

    def _cs_repl(self, m: re.Match[str]) -> str:
        value = self._cs_table.get(m.group())
        return self._spelled(self._cs_trie, m.group(), False) if value is None else value

    def _ci_repl(self, m: re.Match[str]) -> str:
        value = _ci_lookup(self._ci_trie, m.group())
        return self._spelled(self._ci_trie, m.group(), True) if value is None else value

    def _spelled(self, trie: _Trie, text: str, ignore_case: bool) -> str:
        """The replacement for a match that used escaped spellings, escaped as many times."""
        decoded, levels = _decode_escapes(text)
        found = _ci_lookup(trie, decoded) if ignore_case else self._cs_table.get(decoded)
        if found is not None:
            value = found
        else:  # a literal with a backslash: read the text the slow way
            read = _read_spelled(trie, text, ignore_case)
            assert read is not None, "the regex matched a text outside its trie"
            value, levels = read
        if not levels:
            return value
        key = (value, levels)
        escaped = self._escaped.get(key)
        if escaped is None:
            escaped = self._escaped[key] = _escape_value(value, levels)
        return escaped

    def _sub_mixed(self, s: str) -> str:
        # Two patterns (exact and ignore-case), each leftmost-longest on its own; merge their match streams:
        # take the earlier start, then the longer match. They never tie exactly: that would be a literal
        # equal ignoring case to a case-insensitive one, rejected at construction.
        assert self._cs is not None and self._ci is not None
        cs_search, ci_search = self._cs.search, self._ci.search
        m1, m2 = cs_search(s), ci_search(s)
        if m1 is None and m2 is None:
            return s
        out: list[str] = []
        pos = 0
        while m1 is not None or m2 is not None:
            if m2 is None or (
                m1 is not None
                and (m1.start() < m2.start() or (m1.start() == m2.start() and m1.end() >= m2.end()))
            ):
                assert m1 is not None
                m, repl = m1, self._cs_repl(m1)
            else:
                m, repl = m2, self._ci_repl(m2)
            out.append(s[pos : m.start()])
            out.append(repl)
            pos = m.end()
            if m1 is not None and m1.start() < pos:
                m1 = cs_search(s, pos)
            if m2 is not None and m2.start() < pos:
                m2 = ci_search(s, pos)
        out.append(s[pos:])
        return "".join(out)


def _same(s: str) -> str:
    return s


# The fast path (ahocorasick_rs) pays ~100 ns more a call than the regex, and the regex engine finds a
# literal prefix shared by every literal (fakes "Person0001" ... "Person0999") with a fast search of its own:
# bench/RESULTS.md, "Anonymizer with ahocorasick_rs". Tests lower both bounds to run every text through it.
_AC_MIN_CHARS = 48  # shorter strings go to the regex
_AC_MIN_FIRST_CHARS = 2  # literals that all start with one character stay with the regex


def _ac_sub(
    table: dict[str, str], regex_sub: Callable[[str], str], escapes: bool
) -> Callable[[str], str] | None:
    """The fast path: ``table``'s exact literals replaced by an Aho-Corasick automaton (ahocorasick_rs,
    leftmost-longest), or None when it does not apply; ``regex_sub`` does what it does not.

    It gives exactly the regex's output because it only runs where the regex could match nothing but raw
    literals: every escaped spelling starts with a backslash, so a text without one (and every text when
    ``escapes`` is off) can only spell a literal raw, and the trie regex is leftmost-longest over raw
    literals -- the automaton's contract too (then both resume after the match). Texts with a backslash
    or a lone surrogate (the automaton takes UTF-8) go to ``regex_sub``. Literals with a lone surrogate,
    or case-insensitive rules on this side (the caller does not ask then), keep the regex for everything.
    """
    if _ahocorasick is None or len({literal[0] for literal in table}) < max(1, _AC_MIN_FIRST_CHARS):
        return None
    literals = list(table)
    try:
        for literal in literals:
            literal.encode()
    except UnicodeEncodeError:
        return None
    automaton = _ahocorasick.AhoCorasick(literals, matchkind=_ahocorasick.MatchKind.LeftmostLongest)
    find = automaton.find_matches_as_indexes
    replacements = [table[literal] for literal in literals]
    min_chars = _AC_MIN_CHARS

    def sub(s: str) -> str:
        if len(s) < min_chars or (escapes and "\\" in s):
            return regex_sub(s)
        try:
            matches = find(s)
        except UnicodeEncodeError:
            return regex_sub(s)
        if not matches:
            return s
        out: list[str] = []
        pos = 0
        for index, start, end in matches:
            out.append(s[pos:start])
            out.append(replacements[index])
            pos = end
        out.append(s[pos:])
        return "".join(out)

    return sub


def _needles(literal: str, escapes: bool) -> tuple[str, ...]:
    """Substrings one of which every spelling of ``literal`` contains (``escapes``: escaped spellings too)."""
    if not escapes or not any(map(_escapable, literal)):
        return (literal,)
    runs = re.split("[" + "".join(map(re.escape, sorted(set(filter(_escapable, literal))))) + "]", literal)
    longest = max(runs, key=len)
    return (longest,) if longest else (literal[0], "\\")


_BINARY_MARKERS = ("mimeType", "uri")
_BINARY_TYPES = ("image", "audio")
_BINARY_KEYS = ("data", "blob")

BASE64_MIN_CHARS = 64
"""Shorter strings under ``data``/``blob`` are rewritten even when they are base64: a name can be base64."""
BASE64_GUARD_CHARS = 8
"""A literal this long made of base64 characters is rewritten even inside base64 payloads: random base64
contains a given 8-character string with odds below 1 in 10**14 per position, so it is a value, not data."""

_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_BASE64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _base64_payload(guard: _Replacer | None) -> Callable[[str], bool]:
    """The test of the module docstring's base64 rule: is ``s`` a base64 payload to leave alone?

    ``guard`` matches the long base64-alphabet literals of one direction (None: there are none)."""

    def is_payload(s: str) -> bool:
        if len(s) < BASE64_MIN_CHARS:
            return False
        if "\n" in s or "\r" in s:
            s = s.replace("\r", "").replace("\n", "")
        if len(s) % 4 or _BASE64.fullmatch(s) is None:
            return False
        return guard is None or not guard.found(s)

    return is_payload


def _base64_guard(literals: Iterable[tuple[str, bool]]) -> _Replacer | None:
    """A matcher of the (literal, case_sensitive) literals that could hide in base64 and are long enough."""
    pairs = [
        (lit, "", cs)
        for lit, cs in literals
        if len(lit) >= BASE64_GUARD_CHARS and _BASE64_ALPHABET.issuperset(lit)
    ]
    return _Replacer(pairs, "literal", escapes=False) if pairs else None


def _walker(sub: Callable[[str], str], is_payload: Callable[[str], bool]) -> Callable[[Any], Any]:
    """A function that rewrites the strings of a decoded JSON value with ``sub``, but leaves alone the
    strings under ``data``/``blob`` of binary-looking dicts for which ``is_payload`` holds.

    It returns its argument itself when nothing changed, and copies only the containers on the path to a
    changed string. Scalars and strings are handled inline in the container loops: this walk runs on every
    message, and a function call per leaf would cost as much as the regex scan.
    """

    def text(s: str) -> str:
        new = sub(s)
        return s if new is s or new == s else new

    def walk(obj: Any) -> Any:
        t = type(obj)
        if t is str:
            return text(obj)
        if t is dict:
            return walk_dict(obj)
        if t is list:
            return walk_list(obj)
        return obj

    def walk_dict(obj: dict[Any, Any]) -> dict[Any, Any]:
        # The base64 rule of the module docstring.
        binary = "mimeType" in obj or "uri" in obj or obj.get("type") in _BINARY_TYPES
        out: dict[Any, Any] | None = None
        i = 0
        for k, v in obj.items():
            nk = text(k) if type(k) is str else k
            t = type(v)
            if t is str:
                nv = v if binary and k in _BINARY_KEYS and is_payload(v) else text(v)
            elif t is dict:
                nv = walk_dict(v)
            elif t is list:
                nv = walk_list(v)
            else:
                nv = v
            if out is None:
                if nk is k and nv is v:
                    i += 1
                    continue
                out = dict(itertools.islice(obj.items(), i))
            out[nk] = nv
        return obj if out is None else out

    # walk_dict and walk_list repeat one dispatch on purpose: they are the hot loop of every
    # answer (1 MB results), and a shared helper costs a call per value.
    def walk_list(obj: list[Any]) -> list[Any]:
        out: list[Any] | None = None
        i = 0
        for v in obj:
            t = type(v)
            nv: Any
            if t is str:
                nv = text(v)
            elif t is dict:
                nv = walk_dict(v)
            elif t is list:
                nv = walk_list(v)
            else:
                nv = v
            if out is None:
                if nv is v:
                    i += 1
                    continue
                out = obj[:i]
            out.append(nv)
        return obj if out is None else out

    return walk


# --------------------------------------------------------------------------------------------------------


class Anonymizer:
    """Compiled replacement rules; cheap to call, immutable, safe to share between tasks."""

    __slots__ = ("_rules", "_to_real", "_to_fake", "_walk_to_real", "_walk_to_fake")

    def __init__(self, rules: Sequence[Rule]) -> None:
        """Compile ``rules`` once.

        Raises :class:`ValueError` if a fake or real value is empty, or if two rules are ambiguous on one
        side (see the module docstring). The message names fakes but never real values.
        """
        rules = tuple(rules)
        for r in rules:
            if not r.fake:
                raise ValueError("anonymization rule with an empty fake value")
            if not r.real:
                raise ValueError(f"anonymization rule {r.fake!r} has an empty real value")
        self._rules = rules
        self._to_real = _Replacer(((r.fake, r.real, r.case_sensitive) for r in rules), "fake")
        try:
            self._to_fake = _Replacer(
                (
                    (r.real, r.fake if r.bidirectional else r.response_replacement, r.case_sensitive)
                    for r in rules
                ),
                "real",
            )
        except ValueError:
            # The message of the inner error would quote a real value: say which rules clash instead.
            raise ValueError(
                "ambiguous anonymization rules: two rules have the same real value (or equal ignoring case); "
                "fakes: " + ", ".join(repr(r.fake) for r in rules if _shares_real(r, rules))
            ) from None
        self._walk_to_real = _walker(
            self._to_real.sub, _base64_payload(_base64_guard((r.fake, r.case_sensitive) for r in rules))
        )
        self._walk_to_fake = _walker(
            self._to_fake.sub, _base64_payload(_base64_guard((r.real, r.case_sensitive) for r in rules))
        )

    @classmethod
    def from_config(cls, replacements: Iterable[_RuleLike]) -> Anonymizer:
        """Build from config objects with attributes ``fake``, ``real``, ``bidirectional``,
        ``case_sensitive`` and ``response_replacement`` (such as ``portero.config.Replacement``)."""
        return cls(
            [
                Rule(
                    fake=r.fake,
                    real=r.real,
                    bidirectional=r.bidirectional,
                    case_sensitive=r.case_sensitive,
                    response_replacement=r.response_replacement,
                )
                for r in replacements
            ]
        )

    @property
    def empty(self) -> bool:
        """True when there are no rules: callers may skip walking messages altogether."""
        return not self._rules

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    def __repr__(self) -> str:
        return f"<Anonymizer {len(self._rules)} rules>"

    def to_real_text(self, s: str) -> str:
        """Client -> server: every fake (of every rule, one-way ones too) becomes its real value."""
        return self._to_real.sub(s) if self._rules else s

    def to_fake_text(self, s: str) -> str:
        """Server -> client: every real becomes its fake, or ``response_replacement`` for one-way rules."""
        return self._to_fake.sub(s) if self._rules else s

    def to_real(self, obj: Any) -> Any:
        """:meth:`to_real_text` applied to every string and key of a decoded JSON value.

        Returns ``obj`` itself when nothing changed; never mutates ``obj``.
        """
        if not self._rules:
            return obj  # no rules: nothing to walk (the common case, on every message)
        return self._walk_to_real(obj)

    def to_fake(self, obj: Any) -> Any:
        """:meth:`to_fake_text` applied to every string and key of a decoded JSON value.

        Returns ``obj`` itself when nothing changed; never mutates ``obj``.
        """
        if not self._rules:
            return obj
        return self._walk_to_fake(obj)


def _shares_real(rule: Rule, rules: Sequence[Rule]) -> bool:
    return any(
        other is not rule
        and (
            other.real == rule.real
            or (
                (not other.case_sensitive or not rule.case_sensitive)
                and _ci_text_equal(other.real, rule.real)
            )
        )
        for other in rules
    )


def _ci_text_equal(a: str, b: str) -> bool:
    return len(a) == len(b) and all(_ci_equal(x, y) for x, y in zip(a, b, strict=True))
