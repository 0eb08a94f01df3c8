"""Tests for portero.core.anonymize: examples, properties, and a differential test against a naive one."""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import itertools
import json
import re
import sys
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import portero.core.anonymize as anonymize_module
from portero.core.anonymize import _CASED_BOUND, Anonymizer, Rule

_AHOCORASICK = anonymize_module._ahocorasick
_HAVE_AHOCORASICK = _AHOCORASICK is not None
_DEFAULT_BOUNDS = (anonymize_module._AC_MIN_CHARS, anonymize_module._AC_MIN_FIRST_CHARS)


@pytest.fixture(scope="module", autouse=True, params=["ahocorasick", "regex"])
def matcher(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test of this module runs twice: with the ahocorasick_rs fast path taking every text it can
    (the length and first-character bounds lowered), and with the module's reference to it set to None,
    as when the wheel is missing. Module-scoped, so Hypothesis tests may use it; Anonymizers built at
    import time would not see it (hence _fixed())."""
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "ahocorasick":
            if not _HAVE_AHOCORASICK:
                pytest.skip("ahocorasick_rs is not installed")
            mp.setattr(anonymize_module, "_AC_MIN_CHARS", 0)
            mp.setattr(anonymize_module, "_AC_MIN_FIRST_CHARS", 1)
        else:
            mp.setattr(anonymize_module, "_ahocorasick", None)
        yield request.param


# ------------------------------------------------------------------------------------------------ examples


def test_longest_match_first_ann_anna() -> None:
    a = Anonymizer([Rule("Ann", "Alice"), Rule("Anna", "Beatrice")])
    assert a.to_real_text("Ann and Anna, Annabel") == "Alice and Beatrice, Beatricebel"
    assert a.to_fake_text("Alice and Beatrice") == "Ann and Anna"


def test_rules_never_chain() -> None:
    a = Anonymizer([Rule("A", "B"), Rule("B", "C")])
    assert a.to_real_text("A B") == "B C"
    assert a.to_fake_text("B C") == "A B"


def test_swapped_pairs() -> None:
    a = Anonymizer([Rule("Alice", "Bob"), Rule("Bob", "Alice")])
    assert a.to_real_text("Alice met Bob") == "Bob met Alice"
    assert a.to_fake_text("Bob met Alice") == "Alice met Bob"


def test_real_containing_fake() -> None:
    a = Anonymizer([Rule("Ann", "Ann Smith")])
    assert a.to_real_text("Ann") == "Ann Smith"
    assert a.to_fake_text("Ann Smith and Ann") == "Ann and Ann"


def test_case_insensitive_writes_configured_value() -> None:
    a = Anonymizer([Rule("acme", "Globex Corp", case_sensitive=False)])
    assert a.to_real_text("ACME, Acme, acme") == "Globex Corp, Globex Corp, Globex Corp"
    assert a.to_fake_text("GLOBEX CORP and globex corp") == "acme and acme"


def test_case_sensitive_is_exact() -> None:
    a = Anonymizer([Rule("acme", "Globex")])
    assert a.to_real_text("ACME acme") == "ACME Globex"


def test_mixed_case_modes_leftmost_longest() -> None:
    a = Anonymizer([Rule("ab", "1"), Rule("ABC", "2", case_sensitive=False), Rule("b", "3")])
    assert a.to_real_text("abc") == "2"
    assert a.to_real_text("abd") == "1d"
    assert a.to_real_text("xbabC") == "x32"


def test_unicode() -> None:
    a = Anonymizer(
        [
            Rule("Zoë", "Jürgen Müller"),
            Rule("東京", "大阪"),
            Rule("straße", "Weg", case_sensitive=False),
            Rule("🙂", "🙃"),
        ]
    )
    out = a.to_real_text("Zoë in 東京 🙂 STRASSE STRAßE")
    assert out == "Jürgen Müller in 大阪 🙃 STRASSE Weg"
    assert a.to_fake_text("Jürgen Müller in 大阪 🙃") == "Zoë in 東京 🙂"


def test_case_insensitive_chars_whose_lowercase_changes_length() -> None:
    # "İ".lower() is two characters; matching must not shift positions in the text.
    a = Anonymizer([Rule("İx", "R", case_sensitive=False), Rule("y", "Y")])
    assert a.to_real_text("İx y ix y") == "R Y R Y"
    b = Anonymizer([Rule("ſa", "1", case_sensitive=False), Rule("sab", "2", case_sensitive=False)])
    assert b.to_real_text("sab ſa SA ſAB") == "2 1 1 2"


def test_one_way_rules() -> None:
    a = Anonymizer(
        [
            Rule("client-x", "Acme Ltd", bidirectional=False),
            Rule("KEY-1", "secret", bidirectional=False, response_replacement="***"),
        ]
    )
    assert a.to_real_text("ask client-x, key KEY-1") == "ask Acme Ltd, key secret"
    assert a.to_fake_text("Acme Ltd uses secret") == "[REDACTED] uses ***"


def test_json_values_and_keys_nested() -> None:
    a = Anonymizer([Rule("Ann", "Alice")])
    obj = {"Ann": [{"name": "Ann", "n": 1, "ok": True, "x": None, "f": 1.5}, "Ann's"], "other": {"k": "v"}}
    before = copy.deepcopy(obj)
    out = a.to_real(obj)
    assert out == {
        "Alice": [{"name": "Alice", "n": 1, "ok": True, "x": None, "f": 1.5}, "Alice's"],
        "other": {"k": "v"},
    }
    assert obj == before  # never mutated
    assert out["other"] is obj["other"]  # unchanged branches are shared, not copied
    assert a.to_fake(out) == obj


def test_identity_when_nothing_changes() -> None:
    a = Anonymizer([Rule("Ann", "Alice")])
    obj = {"content": [{"type": "text", "text": "nobody here"}], "isError": False, "n": [1, 2.5, None]}
    assert a.to_real(obj) is obj
    assert a.to_fake(obj) is obj
    assert a.to_real("plain") == "plain"
    assert a.to_real(5) == 5


def test_replacement_equal_to_original_counts_as_unchanged() -> None:
    a = Anonymizer([Rule("same", "same")])
    obj = {"a": ["same"]}
    assert a.to_real(obj) is obj


_PNG = base64.b64encode(bytes(range(256)) * 2).decode()  # 684 characters of real base64


def test_base64_fields_left_alone() -> None:
    a = Anonymizer([Rule("QUJD", "REAL")])
    payload = "QUJD" * 20  # strict base64, 80 characters: the short fake in it is not a value
    image = {"type": "image", "data": payload, "mimeType": "image/png"}
    audio = {"type": "audio", "data": payload}
    blob = {"uri": "file:///QUJD", "blob": payload}
    typed = {"data": payload, "mimeType": "application/octet-stream"}
    msg = {"content": [image, audio, {"type": "resource", "resource": blob}, typed]}
    out = a.to_real(msg)
    assert out["content"][0] is image
    assert out["content"][1] is audio
    assert out["content"][2]["resource"] == {"uri": "file:///REAL", "blob": payload}
    assert out["content"][3] is typed
    # Outside such dicts, "data" is ordinary text.
    assert a.to_real({"type": "text", "data": payload}) == {"type": "text", "data": "REAL" * 20}
    assert a.to_real({"data": "QUJD"}) == {"data": "REAL"}
    # Non-string values under those keys are still walked.
    assert a.to_real({"mimeType": "x", "data": ["QUJD"]}) == {"mimeType": "x", "data": ["REAL"]}


def test_data_beside_uri_that_is_not_base64_is_rewritten() -> None:
    a = Anonymizer([Rule("John Doe", "Jane Realname"), Rule("Bob", "Ann")])
    owner = {"uri": "crm://owner/1", "data": "Jane Realname"}
    assert a.to_fake({"structuredContent": {"owner": owner}}) == {
        "structuredContent": {"owner": {"uri": "crm://owner/1", "data": "John Doe"}}
    }
    for value in (
        "JaneRealname",  # valid base64 (12 characters) -- but far too short to be a payload
        "Ann" + "A" * 62,  # 65 characters: not a multiple of 4
        "Ann " + "A" * 64,  # a space is not base64
        "Ann-" + "A" * 64,  # nor is base64url's "-"
        "Ann" + "A" * 63 + "=" * 3,  # three padding characters
        "Ann" + "A" * 62 + "=" + "A" * 2,  # padding in the middle
    ):
        for binary in ({"uri": "u"}, {"mimeType": "m"}, {"type": "image"}, {"type": "audio"}):
            for key in ("data", "blob"):
                got = a.to_fake({**binary, key: value})[key]
                assert got == value.replace("Ann", "Bob"), (binary, key, value)


def test_base64_payloads_keep_short_literals_but_not_long_ones() -> None:
    a = Anonymizer(
        [
            Rule("short", "AAEC"),  # occurs in _PNG by chance: payload bytes are left alone
            Rule("token", "U2VjcmV0S2V5MTIz"),  # 16 base64 characters: a value wherever it is
            Rule("key", "topsecretkey", case_sensitive=False),
        ]
    )
    assert "AAEC" in _PNG
    image = {"type": "image", "mimeType": "image/png", "data": _PNG}
    assert a.to_fake(image) is image
    wrapped = {"uri": "file:///x.pem", "blob": "\r\n".join(_PNG[i : i + 76] for i in range(0, len(_PNG), 76))}
    assert a.to_fake(wrapped) is wrapped  # MIME line breaks are allowed
    leaky = {"uri": "file:///k", "blob": _PNG[:100] + "U2VjcmV0S2V5MTIz" + _PNG[100:]}
    assert a.to_fake(leaky)["blob"] == leaky["blob"].replace("U2VjcmV0S2V5MTIz", "token").replace(
        "AAEC", "short"
    )
    ci = {"uri": "file:///k", "blob": "TOPSECRETKEY" + _PNG}
    assert a.to_fake(ci)["blob"].startswith("key")
    # The fakes guard the other direction.
    b = Anonymizer([Rule("FakeNameLongEnough", "x")])
    sent = {"type": "image", "data": "FakeNameLongEnough" + "A" * 50 + "=="}
    assert b.to_real(sent)["data"] == "x" + "A" * 50 + "=="


# ------------------------------------------------------------------------------- escaped spellings


def test_json_text_written_with_ensure_ascii() -> None:
    a = Anonymizer([Rule("John Doe", "José Müller"), Rule("Zoë", "Jürgen")])
    text = json.dumps({"name": "José Müller", "boss": "Jürgen"})
    assert "\\u00e9" in text
    out = a.to_fake_text(text)
    assert json.loads(out) == {"name": "John Doe", "boss": "Zoë"}
    assert out.isascii()  # the replacement is escaped as the match was
    assert a.to_fake_text("J\\u00FCrgen, J\\u00fcrgen") == "Zo\\u00eb, Zo\\u00eb"  # hex in either case
    # To the server: an escaped fake becomes the escaped real.
    assert json.loads(a.to_real_text(json.dumps({"Zoë": "Zoë"}))) == {"Jürgen": "Jürgen"}
    # The same inside a decoded JSON value.
    result = {"content": [{"type": "text", "text": text}]}
    assert json.loads(a.to_fake(result)["content"][0]["text"])["name"] == "John Doe"


def test_partly_escaped_and_short_escapes() -> None:
    a = Anonymizer(
        [
            Rule("A", "Jos\u00e9 M\u00fcller"),
            Rule("B", 'say "hi" & <b>/c'),
            Rule("C", "C:\\Users\\jane"),
            Rule("D", "line1\nline2\ttab"),
            Rule("E", "smile 🙂"),
        ]
    )
    cases = {
        "Jos\u00e9 M\\u00fcller": "A",  # only some characters escaped
        'say \\"hi\\" \\u0026 \\u003cb\\u003e\\/c': "B",  # Go, .NET and PHP style escapes
        "C:\\\\Users\\\\jane": "C",
        "C:\\Users\\jane": "C",  # raw
        "line1\\nline2\\ttab": "D",
        "smile \\ud83d\\ude42": "E",  # a surrogate pair
        "smile \\uD83D\\uDE42": "E",
    }
    for text, fake in cases.items():
        assert a.to_fake_text(f"[{text}]") == f"[{fake}]", text
    # Not an escape of the literal's character: no match.
    assert a.to_fake_text("smile \\ud83d") == "smile \\ud83d"
    assert a.to_fake_text("Jos\\u0065") == "Jos\\u0065"  # "e" is never escaped by encoders


def test_json_in_json() -> None:
    a = Anonymizer([Rule('Zoë "Z"', 'José "Pepe" Müller'), Rule("acme", "Initech", case_sensitive=False)])
    inner = {"who": 'José "Pepe" Müller', "at": "INITECH"}
    for ensure_ascii in (True, False):
        twice = json.dumps({"body": json.dumps(inner, ensure_ascii=ensure_ascii)}, ensure_ascii=ensure_ascii)
        out = a.to_fake_text(twice)
        assert json.loads(json.loads(out)["body"]) == {"who": 'Zoë "Z"', "at": "acme"}
        back = a.to_real_text(out)
        assert json.loads(json.loads(back)["body"]) == {"who": inner["who"], "at": "Initech"}


def test_escaped_case_insensitive_and_one_way() -> None:
    a = Anonymizer(
        [
            Rule("someone", "josé", case_sensitive=False),
            Rule("kelvin", "k-ß", case_sensitive=False),
            Rule("x", "Straße 5", bidirectional=False),
        ]
    )
    assert a.to_fake_text("JOS\\u00c9 Jos\\u00E9 jos\\u00e9 JOSÉ") == "someone someone someone someone"
    assert a.to_fake_text("\\u212a-\\u00df K-ß") == "kelvin kelvin"  # the Kelvin sign, escaped
    assert a.to_fake_text('{"a": "Stra\\u00dfe 5"}') == '{"a": "[REDACTED]"}'


def test_literals_without_escapable_characters_compile_as_before() -> None:
    from portero.core.anonymize import _trie_regex

    # ASCII letters, digits, spaces and "@.-_" have no escapes: the regex (and its speed) is unchanged.
    trie: dict[str, Any] = {}
    for word in ("Jane Realname", "jane.realname@corp.example", "ACME-1_x"):
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = "r"
    assert _trie_regex(trie) == _trie_regex(trie, escapes=False)


def test_few_literals_prefilter_sees_escaped_spellings() -> None:
    # Up to 8 exact literals are pre-checked with `in`; an all-escapable literal has no raw run to look for.
    a = Anonymizer([Rule("Tokyo", "東京"), Rule("q", '"/')])
    assert a.to_fake_text("\\u6771\\u4eac") == "Tokyo"
    assert a.to_fake_text('\\"\\/') == "q"
    assert a.to_fake_text("nothing here") == "nothing here"


def test_empty() -> None:
    assert Anonymizer([]).empty
    assert not Anonymizer([Rule("a", "b")]).empty
    obj = {"a": "b"}
    assert Anonymizer([]).to_real(obj) is obj


def test_invalid_rules() -> None:
    with pytest.raises(ValueError, match="empty"):
        Anonymizer([Rule("", "x")])
    with pytest.raises(ValueError, match="empty"):
        Anonymizer([Rule("x", "")])
    with pytest.raises(ValueError, match="'Ann'"):
        Anonymizer([Rule("Ann", "x"), Rule("Ann", "y")])
    with pytest.raises(ValueError, match="ignoring case"):
        Anonymizer([Rule("ann", "x", case_sensitive=False), Rule("ANN", "y", case_sensitive=False)])
    with pytest.raises(ValueError, match="ignoring case"):
        Anonymizer([Rule("Ann", "x"), Rule("aNN", "y", case_sensitive=False)])


def test_duplicate_real_error_does_not_leak_real() -> None:
    with pytest.raises(ValueError) as info:
        Anonymizer([Rule("f1", "top-secret"), Rule("f2", "top-secret")])
    assert "top-secret" not in str(info.value)
    assert "'f1'" in str(info.value) and "'f2'" in str(info.value)
    with pytest.raises(ValueError) as info:
        Anonymizer([Rule("f1", "top-secret"), Rule("f2", "TOP-SECRET", case_sensitive=False)])
    assert "secret" not in str(info.value).lower()


def test_repr_hides_real() -> None:
    r = Rule("Ann", "hunter2-real")
    assert "hunter2-real" not in repr(r)
    assert "hunter2-real" not in repr(Anonymizer([r]))


def test_from_config_duck_typed() -> None:
    @attrs.frozen
    class Replacement:
        fake: str
        real: str
        bidirectional: bool = True
        case_sensitive: bool = True
        response_replacement: str = "[REDACTED]"

    a = Anonymizer.from_config([Replacement("Ann", "Alice"), Replacement("K", "key", bidirectional=False)])
    assert a.to_real_text("Ann K") == "Alice key"
    assert a.to_fake_text("Alice key") == "Ann [REDACTED]"


def test_long_literals_and_many_rules() -> None:
    rules = [Rule(f"fake{i:04d}", f"real{i:04d}") for i in range(2000)] + [Rule("x" * 5000, "long")]
    a = Anonymizer(rules)
    assert a.to_real_text("fake0001 fake1999 " + "x" * 5000) == "real0001 real1999 long"


def test_special_regex_characters() -> None:
    a = Anonymizer(
        [
            Rule("a.b", "1"),
            Rule("[x]", "2"),
            Rule("\\", "3"),
            Rule("-^", "4"),
            Rule("]", "5"),
            Rule("(?i)", "6", case_sensitive=False),
        ]
    )
    assert a.to_real_text("a.b axb [x] \\ -^ ] (?I)") == "1 axb 2 3 4 5 6"


def test_cased_bound_covers_this_pythons_unicode() -> None:
    # _ci_closure only scans characters below _CASED_BOUND. That is exact if nothing at or above the bound
    # has a case mapping (re.IGNORECASE relates characters through their lowercase) and nothing below it
    # is case-insensitively equal to a character above it.
    high = "".join(map(chr, range(_CASED_BOUND, sys.maxunicode + 1)))
    assert high.lower() == high and high.upper() == high
    low = "".join(map(chr, itertools.chain(range(0xD800), range(0xE000, _CASED_BOUND))))
    above = re.compile(f"[{re.escape(chr(_CASED_BOUND))}-{re.escape(chr(sys.maxunicode))}]", re.IGNORECASE)
    assert above.search(low) is None


def test_case_insensitive_first_characters_with_odd_variants() -> None:
    a = Anonymizer(
        [
            Rule("kelvin", "1", case_sensitive=False),
            Rule("sun", "2", case_sensitive=False),
            Rule("ion", "3", case_sensitive=False),
        ]
    )
    assert a.to_real_text("\u212aELVIN \u017fUN \u0130ON \u0131on Kelvin") == "1 2 3 3 1"


# --------------------------------------------------------------------------------------- naive reference


# The documented escaped spellings, written independently of the implementation.
_REF_ESCAPED_ASCII = set("\"\\/&'+<=>`\x7f") | {chr(i) for i in range(0x20)}
_REF_SHORT = {
    '"': '\\"',
    "\\": "\\\\",
    "/": "\\/",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _ref_escapable(c: str) -> bool:
    return (ord(c) >= 0x80 and not 0xD800 <= ord(c) < 0xE000) or c in _REF_ESCAPED_ASCII


def _ref_spellings(c: str) -> list[tuple[str, int]]:
    """(spelling, levels of escaping): the raw character, then its escapes, once and twice."""
    if not _ref_escapable(c):
        return [(c, 0)]
    units = c.encode("utf-16-be")
    once = ["".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))]
    once += [_REF_SHORT[c]] if c in _REF_SHORT else []
    return [(c, 0)] + [(s, 1) for s in once] + [(json.dumps(s)[1:-1], 2) for s in once]


def _ref_spelled_at(text: str, i: int, spelling: str, levels: int) -> bool:
    chunk = text[i : i + len(spelling)]
    if len(chunk) != len(spelling):
        return False
    hex_positions = {k + d for k, ch in enumerate(spelling) if levels and ch == "u" for d in range(1, 5)}
    return all(
        a == b or (k in hex_positions and a.lower() == b)
        for k, (a, b) in enumerate(zip(chunk, spelling, strict=True))
    )


_UNIVERSE = "".join(map(chr, itertools.chain(range(0xD800), range(0xE000, 0x1F000))))


@functools.cache
def _ref_variants(c: str) -> tuple[str, ...]:
    """Every character re.IGNORECASE matches against ``c`` (none above _UNIVERSE: see test_cased_bound...)."""
    return tuple(sorted({c, *re.findall(re.escape(c), _UNIVERSE, re.IGNORECASE)}))


def _ref_match(text: str, i: int, literal: str, case_sensitive: bool) -> tuple[int, int] | None:
    """Where a spelling of ``literal`` at ``text[i:]`` ends, and the most escape levels it used."""
    states = {(i, 0)}
    for c in literal:
        states = {
            (p + len(sp), max(lv, sp_lv))
            for p, lv in states
            for d in ((c,) if case_sensitive else _ref_variants(c))
            for sp, sp_lv in _ref_spellings(d)
            if _ref_spelled_at(text, p, sp, sp_lv)
        }
    return max(states) if states else None


def _reference_sub(text: str, pairs: list[tuple[str, str, bool]]) -> str:
    """Scan position by position; at each, try every spelling of every literal; the longest wins (no two
    literals without backslashes share a spelling). An escaped match gets the replacement escaped alike."""
    out: list[str] = []
    i = 0
    while i < len(text):
        best: tuple[int, int, str] | None = None
        for literal, replacement, case_sensitive in pairs:
            m = _ref_match(text, i, literal, case_sensitive)
            if m is not None and (best is None or m[0] > best[0]):
                best = (*m, replacement)
        if best is None:
            out.append(text[i])
            i += 1
            continue
        i, levels, replacement = best
        for _ in range(levels):
            replacement = json.dumps(replacement)[1:-1]
        out.append(replacement)
    return "".join(out)


def _reference_ambiguous(literals: list[tuple[str, bool]]) -> bool:
    for i, (a, a_cs) in enumerate(literals):
        for b, b_cs in literals[i + 1 :]:
            if a == b:
                return True
            if (not a_cs or not b_cs) and re.fullmatch(re.escape(a), b, re.IGNORECASE):
                return True
    return False


_ASCII = "abAB."
_TRICKY = "aAiIİısSſkKK."  # characters whose case folding is irregular


def _rules(alphabet: str) -> st.SearchStrategy[list[Rule]]:
    lit = st.text(alphabet, min_size=1, max_size=4)
    rule = st.builds(
        Rule,
        fake=lit,
        real=lit,
        bidirectional=st.booleans(),
        case_sensitive=st.booleans(),
        response_replacement=st.sampled_from(["[REDACTED]", "", "#"]),
    )
    return st.lists(rule, max_size=8)


@pytest.mark.parametrize("alphabet", [_ASCII, _TRICKY])
@settings(max_examples=400, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_matches_reference(alphabet: str, data: st.DataObject) -> None:
    rules = data.draw(_rules(alphabet))
    text = data.draw(st.text(alphabet, max_size=40))
    ambiguous = _reference_ambiguous([(r.fake, r.case_sensitive) for r in rules]) or _reference_ambiguous(
        [(r.real, r.case_sensitive) for r in rules]
    )
    if ambiguous:
        with pytest.raises(ValueError):
            Anonymizer(rules)
        return
    a = Anonymizer(rules)
    to_real = [(r.fake, r.real, r.case_sensitive) for r in rules]
    to_fake = [
        (r.real, r.fake if r.bidirectional else r.response_replacement, r.case_sensitive) for r in rules
    ]
    assert a.to_real_text(text) == _reference_sub(text, to_real)
    assert a.to_fake_text(text) == _reference_sub(text, to_fake)


_ESCAPABLE = 'aé"/\n🙂<'  # escapable characters of every kind, and a letter
_ESCAPABLE_CASES = "aAéÉſsK\u212aİ/"  # escapable characters whose case variants are (partly) escapable too


def _spelled_text(alphabet: str) -> st.SearchStrategy[str]:
    """Texts mixing raw characters, escape fragments and every spelling of the alphabet's characters."""
    chars = sorted({d for c in alphabet for d in _ref_variants(c)})

    def spell(c: str, k: int, upper: bool) -> str:
        sp, levels = _ref_spellings(c)[k % len(_ref_spellings(c))]
        return sp.upper().replace("\\U", "\\u") if upper and levels else sp

    piece = st.one_of(
        st.text(alphabet + "\\u0", max_size=3),
        st.builds(spell, st.sampled_from(chars), st.integers(0, 10), st.booleans()),
    )
    return st.lists(piece, max_size=16).map("".join)


@pytest.mark.parametrize("alphabet", [_ESCAPABLE, _ESCAPABLE_CASES])
@settings(max_examples=400, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(data=st.data())
def test_escaped_spellings_match_reference(alphabet: str, data: st.DataObject) -> None:
    rules = data.draw(_rules(alphabet))
    text = data.draw(_spelled_text(alphabet))
    ambiguous = _reference_ambiguous([(r.fake, r.case_sensitive) for r in rules]) or _reference_ambiguous(
        [(r.real, r.case_sensitive) for r in rules]
    )
    assume(not ambiguous)
    a = Anonymizer(rules)
    to_real = [(r.fake, r.real, r.case_sensitive) for r in rules]
    to_fake = [
        (r.real, r.fake if r.bidirectional else r.response_replacement, r.case_sensitive) for r in rules
    ]
    assert a.to_real_text(text) == _reference_sub(text, to_real)
    assert a.to_fake_text(text) == _reference_sub(text, to_fake)


_BACKSLASHED = 'a\\"/é\n'


@settings(max_examples=300, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(data=st.data())
def test_literals_with_backslashes_always_find_their_reading(data: st.DataObject) -> None:
    # A text can then spell two literals at once, so there is no exact reference; but every match the
    # regex finds must be read back to its literal (the reader asserts it).
    rules = data.draw(_rules(_BACKSLASHED))
    try:
        a = Anonymizer(rules)
    except ValueError:
        assume(False)
        raise
    text = data.draw(_spelled_text(_BACKSLASHED))
    a.to_real_text(text)
    a.to_fake_text(text)


def test_backslash_literal_read_the_slow_way() -> None:
    # 'say \"x' in JSON is 'say \\\"x': read quickly, that is an escaped quote (level 2), which is not the
    # literal; the slow reading finds an escaped backslash and an escaped quote (level 1).
    a = Anonymizer([Rule("F", 'say \\"x'), Rule("G", "C:\\new")])
    assert a.to_fake_text(json.dumps('say \\"x')) == '"F"'
    assert a.to_fake_text(json.dumps(json.dumps('say \\"x'))) == '"\\"F\\""'
    assert a.to_fake_text(json.dumps("C:\\new")) == '"G"'
    assert a.to_fake_text("C:\\new") == "G"
    # Spelled with mixed levels: a twice-escaped quote, an escaped backslash, a raw quote.
    assert Anonymizer([Rule("H", '"\\"')]).to_fake_text('\\\\\\"\\\\"') == "H"


# Literals without JSON punctuation, digits, spaces or hex letters other than "a", whose escapes contain no
# "a" either: a match can neither straddle two JSON tokens nor start inside an escape.
_JSON_SAFE = "aéü/\n🙂<&"
_json_strings = st.recursive(
    st.text(_JSON_SAFE + "xy", max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(_JSON_SAFE, max_size=4), children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    rules=st.lists(
        st.builds(
            Rule,
            fake=st.text(_JSON_SAFE.replace("\n", "") + "xyß", min_size=1, max_size=4),
            real=st.text(_JSON_SAFE, min_size=1, max_size=4),
            case_sensitive=st.booleans(),
        ),
        max_size=5,
    ),
    value=_json_strings,
    ensure_ascii=st.booleans(),
    twice=st.booleans(),
)
def test_json_text_of_a_value_is_anonymized_like_the_value(
    rules: list[Rule], value: Any, ensure_ascii: bool, twice: bool
) -> None:
    try:
        a = Anonymizer(rules)
    except ValueError:
        assume(False)
        raise
    text = json.dumps(value, ensure_ascii=ensure_ascii)
    if twice:
        text = json.dumps({"json": text}, ensure_ascii=ensure_ascii)
    out = a.to_fake_text(text)
    decoded = json.loads(json.loads(out)["json"]) if twice else json.loads(out)
    assert decoded == a.to_fake(value)


# ------------------------------------------------------------------------------------------- properties


def _substring_free(tokens: list[str]) -> bool:
    return all(x == y or x not in y for x in tokens for y in tokens)


@settings(max_examples=300, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    fakes=st.lists(st.text("abc", min_size=1, max_size=5), min_size=1, max_size=6, unique=True),
    reals=st.lists(st.text("xyz", min_size=1, max_size=5), min_size=1, max_size=6, unique=True),
    pieces=st.lists(st.tuples(st.integers(0, 5), st.text(" .-_", min_size=1, max_size=3)), max_size=12),
)
def test_round_trip(fakes: list[str], reals: list[str], pieces: list[tuple[int, str]]) -> None:
    n = min(len(fakes), len(reals))
    fakes, reals = fakes[:n], reals[:n]
    assume(_substring_free(fakes) and _substring_free(reals))
    a = Anonymizer([Rule(f, r) for f, r in zip(fakes, reals, strict=True)])
    text = "".join(fakes[i % n] + filler for i, filler in pieces)
    assert a.to_fake_text(a.to_real_text(text)) == text
    obj = {text: [text, {"k": text}]}
    assert a.to_fake(a.to_real(obj)) == obj


@settings(max_examples=300)
@given(
    rules=st.lists(
        st.builds(
            Rule,
            fake=st.text("abcABC", min_size=1, max_size=4),
            real=st.text("xyz", min_size=1, max_size=4),
            case_sensitive=st.booleans(),
        ),
        max_size=6,
    ),
    text=st.text("abcABC xyz", max_size=60),
)
def test_to_real_leaves_no_fake(rules: list[Rule], text: str) -> None:
    try:
        a = Anonymizer(rules)
    except ValueError:
        assume(False)
        raise
    out = a.to_real_text(text)
    for r in rules:
        if r.case_sensitive:
            assert r.fake not in out
        else:
            assert re.search(re.escape(r.fake), out, re.IGNORECASE) is None


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=30,
)
_FIXED_RULES = [
    Rule("a", "b"),
    Rule("b", "a"),
    Rule("ab", "X", bidirectional=False),
    Rule("é", "E", case_sensitive=False),
    Rule("data", "DATA"),
    Rule("image", "picture"),
    Rule("Fake+Name/Long", "RealNameLong", case_sensitive=False),  # long base64-alphabet literals
]


@functools.cache
def _fixed_for(ahocorasick: object, min_chars: int) -> Anonymizer:
    return Anonymizer(_FIXED_RULES)


def _fixed() -> Anonymizer:
    """_FIXED_RULES, built under the matcher fixture's settings."""
    return _fixed_for(anonymize_module._ahocorasick, anonymize_module._AC_MIN_CHARS)


_FAKES = [(r.fake, r.case_sensitive) for r in _FIXED_RULES]
_REALS = [(r.real, r.case_sensitive) for r in _FIXED_RULES]
_B64_ALPHABET = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _reference_payload(s: str, literals: list[tuple[str, bool]]) -> bool:
    """The documented base64 rule, written with binascii's strict decoder."""
    t = s.replace("\r", "").replace("\n", "")
    if len(s) < 64 or len(t) % 4 or t.endswith("==="):
        return False
    try:
        binascii.a2b_base64(t, strict_mode=True)
    except binascii.Error:
        return False
    return not any(
        len(lit) >= 8
        and set(lit) <= _B64_ALPHABET
        and (lit in t if cs else re.search(re.escape(lit), t, re.IGNORECASE) is not None)
        for lit, cs in literals
    )


def _reference_walk(obj: Any, sub: Any, literals: list[tuple[str, bool]]) -> Any:
    if isinstance(obj, str):
        return sub(obj)
    if isinstance(obj, list):
        return [_reference_walk(v, sub, literals) for v in obj]
    if isinstance(obj, dict):
        binary = "mimeType" in obj or "uri" in obj or obj.get("type") in ("image", "audio")
        return {
            sub(k): v
            if binary and k in ("data", "blob") and isinstance(v, str) and _reference_payload(v, literals)
            else _reference_walk(v, sub, literals)
            for k, v in obj.items()
        }
    return obj


@settings(max_examples=300)
@given(obj=_json, text=st.text())
def test_json_walk_never_raises_and_never_mutates(obj: Any, text: str) -> None:
    fixed = _fixed()
    fixed.to_real_text(text)
    fixed.to_fake_text(text)
    snapshot = json.dumps(obj)
    for walk, sub, literals in (
        (fixed.to_real, fixed.to_real_text, _FAKES),
        (fixed.to_fake, fixed.to_fake_text, _REALS),
    ):
        out = walk(obj)
        assert json.dumps(obj) == snapshot
        assert out == _reference_walk(obj, sub, literals)
        if out == obj:
            assert out is obj


def _b64ish() -> st.SearchStrategy[str]:
    """Real base64 of 48-96 bytes, sometimes broken or carrying a literal, and short or plain strings."""

    def tamper(raw: bytes, insert: str, at: int, wrap: bool) -> str:
        s = base64.b64encode(raw).decode()
        s = s[: at % (len(s) + 1)] + insert + s[at % (len(s) + 1) :]
        return "\n".join(s[i : i + 20] for i in range(0, len(s), 20)) if wrap else s

    inserts = ["", "", "a", "ab", "data", "abab", " ", "-", "=", "==", "\r\n", "RealNameLong", "REALNAMELONG"]
    inserts += ["Fake+Name/Long", "FAKE+NAME/LONG", "RealNameLon"]
    return st.one_of(
        st.builds(
            tamper,
            st.binary(min_size=48, max_size=96),
            st.sampled_from(inserts),
            st.integers(0, 200),
            st.booleans(),
        ),
        st.text("abRealNmeFk+/= \n", max_size=80),
    )


@settings(max_examples=300)
@given(obj=_json, data=_b64ish(), blob=_b64ish())
def test_json_walk_binary_dicts(obj: Any, data: str, blob: str) -> None:
    fixed = _fixed()
    for extra in ({"type": "image"}, {"type": "audio"}, {"mimeType": "a"}, {"uri": "u"}, {"type": "text"}):
        d = {**extra, "data": data, "blob": blob, "nested": obj}
        for walk, sub, literals in (
            (fixed.to_real, fixed.to_real_text, _FAKES),
            (fixed.to_fake, fixed.to_fake_text, _REALS),
        ):
            out = walk(d)
            assert out == _reference_walk(d, sub, literals)
            if out == d:
                assert out is d


# ------------------------------------------------------------------- ahocorasick_rs fast path vs regex


def _build(rules: list[Rule], fast: bool) -> Anonymizer:
    """``rules`` with the fast path taking every text it can (``fast``), or with the regex alone."""
    saved = (
        anonymize_module._ahocorasick,
        anonymize_module._AC_MIN_CHARS,
        anonymize_module._AC_MIN_FIRST_CHARS,
    )
    try:
        if fast:
            anonymize_module._ahocorasick = _AHOCORASICK
            anonymize_module._AC_MIN_CHARS, anonymize_module._AC_MIN_FIRST_CHARS = 0, 1
        else:
            anonymize_module._ahocorasick = None
        return Anonymizer(rules)
    finally:
        (
            anonymize_module._ahocorasick,
            anonymize_module._AC_MIN_CHARS,
            anonymize_module._AC_MIN_FIRST_CHARS,
        ) = saved


def _uses_fast_path(a: Anonymizer) -> tuple[bool, bool]:
    return a._to_real._ac is not None, a._to_fake._ac is not None


needs_ahocorasick = pytest.mark.skipif(not _HAVE_AHOCORASICK, reason="ahocorasick_rs is not installed")

# Overlapping literals (one a prefix, suffix or infix of another), a backslash (texts with one take the
# regex path), escapable and non-ASCII characters, and an astral one (character offsets must stay exact).
_FAST_ALPHABET = 'ab\\é"🙂'


def _fast_rules() -> st.SearchStrategy[list[Rule]]:
    lit = st.text(_FAST_ALPHABET, min_size=1, max_size=4)
    rule = st.builds(
        Rule,
        fake=lit,
        real=lit,
        bidirectional=st.booleans(),
        case_sensitive=st.booleans() | st.just(True),  # mostly case-sensitive: the fast path's sets
        response_replacement=st.sampled_from(["[REDACTED]", "", "a", "ab"]),
    )
    return st.lists(rule, max_size=8)


@needs_ahocorasick
@settings(max_examples=600, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(
    rules=_fast_rules(),
    text=st.one_of(
        st.text(_FAST_ALPHABET.replace("\\", ""), max_size=40),  # no backslash: the automaton's texts
        st.text(_FAST_ALPHABET + "u0", max_size=40),
        _spelled_text(_FAST_ALPHABET),  # escaped spellings: the regex's texts
    ),
)
def test_fast_path_matches_regex_path(rules: list[Rule], text: str) -> None:
    try:
        fast = _build(rules, fast=True)
    except ValueError:
        assume(False)
        raise
    slow = _build(rules, fast=False)
    assert _uses_fast_path(slow) == (False, False)
    if rules and all(r.case_sensitive for r in rules):
        assert _uses_fast_path(fast) == (True, True)
    assert fast.to_real_text(text) == slow.to_real_text(text)
    assert fast.to_fake_text(text) == slow.to_fake_text(text)
    obj = {text: [text, {"k": text}]}
    assert fast.to_real(obj) == slow.to_real(obj)
    assert fast.to_fake(obj) == slow.to_fake(obj)


@needs_ahocorasick
@settings(max_examples=200)
@given(
    fakes=st.lists(st.text("abcé🙂", min_size=1, max_size=6), min_size=1, max_size=30, unique=True),
    text=st.text("abcé🙂 \\", max_size=300),
)
def test_fast_path_matches_regex_path_many_overlapping_literals(fakes: list[str], text: str) -> None:
    rules = [Rule(f, f"<{i}>") for i, f in enumerate(fakes)]
    fast, slow = _build(rules, fast=True), _build(rules, fast=False)
    assert _uses_fast_path(fast) == (True, True)
    assert (
        fast.to_real_text(text)
        == slow.to_real_text(text)
        == _reference_sub(text, [(r.fake, r.real, True) for r in rules])
    )


@needs_ahocorasick
def test_fast_path_examples() -> None:
    rules = [
        Rule("Ann", "Alice"),
        Rule("Anna", "Beatrice"),
        Rule("A", "B"),
        Rule("B", "C"),
        Rule("x", "Ann Smith"),  # a real that contains another rule's fake
        Rule("Zoë", "Jürgen 🙂"),
    ]
    a = _build(rules, fast=True)
    assert _uses_fast_path(a) == (True, True)
    assert (
        a.to_real_text("Ann, Anna, Annabel, A B x Zoë!")
        == "Alice, Beatrice, Beatricebel, B C Ann Smith Jürgen 🙂!"
    )
    assert a.to_fake_text("🙂 Alice Ann Smith B C Jürgen 🙂") == "🙂 Ann x A B Zoë"
    # A backslash sends the text to the regex, which also reads escaped spellings.
    assert a.to_fake_text('"J\\u00fcrgen \\ud83d\\ude42", Alice') == '"Zo\\u00eb", Ann'
    # A lone surrogate cannot go to the automaton (UTF-8): the regex takes the text.
    assert a.to_real_text("Ann \ud800 Zoë") == "Alice \ud800 Jürgen 🙂"


@needs_ahocorasick
def test_fast_path_is_not_used_where_it_does_not_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    # Any case-insensitive rule on a side keeps that side on the regex.
    a = _build([Rule("Ann", "Alice", case_sensitive=False), Rule("Bob", "Carl")], fast=True)
    assert _uses_fast_path(a) == (False, False)
    assert a.to_real_text("ANN Bob") == "Alice Carl"
    # A literal with a lone surrogate keeps the regex.
    b = _build([Rule("a\udc80", "x"), Rule("b", "y")], fast=True)
    assert _uses_fast_path(b) == (False, True)
    assert b.to_real_text("a\udc80 b") == "x y"
    # Default bounds: literals that all start with one character stay with the regex; short strings too.
    monkeypatch.setattr(anonymize_module, "_ahocorasick", _AHOCORASICK)
    monkeypatch.setattr(anonymize_module, "_AC_MIN_CHARS", _DEFAULT_BOUNDS[0])
    monkeypatch.setattr(anonymize_module, "_AC_MIN_FIRST_CHARS", _DEFAULT_BOUNDS[1])
    c = Anonymizer([Rule("Person0001", "Jane Doe"), Rule("Person0002", "Bob Roe")])
    assert _uses_fast_path(c) == (False, True)
    assert c.to_fake_text("Jane Doe") == "Person0001"
    assert c.to_fake_text("Jane Doe and Bob Roe, " * 5) == "Person0001 and Person0002, " * 5
