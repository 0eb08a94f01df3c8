"""Policy precedence, glob matching and grants: pure, synchronous, property-based where it pays."""

from __future__ import annotations

import functools

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from portero.core.policy import (
    ACTIONS,
    Decision,
    Grant,
    PolicyEngine,
    apply_grant,
    glob_match,
    literal_length,
    match_grant,
    validate_pattern,
)

STRICTNESS = {"allow": 0, "require-approval": 1, "deny": 2}

# A small alphabet makes collisions between names and patterns likely, which is where the bugs are.
name_chars = st.sampled_from("ab/_.-")
names = st.text(name_chars, min_size=1, max_size=10)
patterns = st.text(st.sampled_from("ab/_.-*"), min_size=1, max_size=8)
actions = st.sampled_from(ACTIONS)


def reference_match(pattern: str, name: str) -> bool:
    """A deliberately naive recursive matcher to check the regex one against."""

    @functools.cache
    def go(i: int, j: int) -> bool:
        if i == len(pattern):
            return j == len(name)
        if pattern[i] == "*":
            return go(i + 1, j) or (j < len(name) and go(i, j + 1))
        return j < len(name) and pattern[i] == name[j] and go(i + 1, j + 1)

    return go(0, 0)


def reference_decide(default: str, rules: dict[str, str], name: str) -> tuple[str, str]:
    if name in rules:
        return rules[name], f"rule:{name}"
    matching = [(p, a) for p, a in rules.items() if "*" in p and reference_match(p, name)]
    if not matching:
        return default, "default"
    best = max(literal_length(p) for p, _ in matching)
    tied = [(p, a) for p, a in matching if literal_length(p) == best]
    action = max((a for _, a in tied), key=STRICTNESS.__getitem__)
    return action, ""


# --- glob_match -------------------------------------------------------------------------------------------


@given(patterns, names)
def test_glob_match_agrees_with_reference(pattern: str, name: str) -> None:
    assert glob_match(pattern, name) == reference_match(pattern, name)


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("github/*", "github/create_issue", True),
        ("*", "a/b/c", True),
        ("*/delete_*", "filesystem/delete_file", True),
        ("*/delete_*", "filesystem/undelete_file", False),
        ("github/*", "github", False),
        ("a.b", "axb", False),  # regex metacharacters are literal
        ("a?b", "axb", False),
        ("[ab]", "a", False),
        ("a*", "a\nb", True),  # '*' spans anything, newlines included
    ],
)
def test_glob_match_examples(pattern: str, name: str, expected: bool) -> None:
    assert glob_match(pattern, name) is expected


def test_validate_pattern() -> None:
    assert validate_pattern("github/*") is None
    assert validate_pattern("") is not None
    assert validate_pattern("a b") is not None
    assert validate_pattern("a\tb") is not None
    assert validate_pattern("a\x00b") is not None
    assert validate_pattern("x" * 200) is None
    assert validate_pattern("x" * 201) is not None


def test_engine_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="default action"):
        PolicyEngine("maybe", {})
    with pytest.raises(ValueError, match="action 'yes'"):
        PolicyEngine("allow", {"a/*": "yes"})
    with pytest.raises(ValueError, match="whitespace"):
        PolicyEngine("allow", {"a /b": "deny"})


# --- precedence -------------------------------------------------------------------------------------------


@given(actions, st.dictionaries(patterns, actions, max_size=6), names)
def test_decide_matches_reference(default: str, rules: dict[str, str], name: str) -> None:
    engine = PolicyEngine(default, rules)
    decision = engine.decide(name)
    action, source = reference_decide(default, rules, name)
    assert decision.action == action
    if source:
        assert decision.source == source
    if decision.source == "default":
        assert decision.rule is None
    else:
        assert decision.rule is not None
        assert decision.source == f"rule:{decision.rule}"
        assert rules[decision.rule] == decision.action
        assert glob_match(decision.rule, name)
    assert engine.decide(name) == decision  # cached result is the same
    assert engine.visible(name) == (decision.action != "deny")


@given(actions, actions, st.dictionaries(patterns, actions, max_size=6), names)
def test_exact_rule_beats_any_pattern(default: str, exact: str, rules: dict[str, str], name: str) -> None:
    assume("*" not in name)
    rules = {**rules, name: exact}
    decision = PolicyEngine(default, rules).decide(name)
    assert decision == Decision(exact, f"rule:{name}", name)


@given(actions, actions, actions)
def test_more_literal_characters_win(default: str, specific: str, general: str) -> None:
    engine = PolicyEngine(default, {"*": general, "github/*": specific, "git*": general})
    assert engine.decide("github/create_issue") == Decision(specific, "rule:github/*", "github/*")


@given(actions, actions, actions)
def test_tie_goes_to_stricter_action(default: str, first: str, second: str) -> None:
    # Both patterns have four literal characters and both match.
    engine = PolicyEngine(default, {"*/del*": first, "fs/d*": second})
    stricter = max(first, second, key=STRICTNESS.__getitem__)
    assert engine.decide("fs/delete_file").action == stricter


@given(actions, names)
def test_no_match_gives_default(default: str, name: str) -> None:
    engine = PolicyEngine(default, {"zzz/*": "deny", "q": "allow"})
    assume(not name.startswith("zzz/") and name != "q")
    assert engine.decide(name) == Decision(default, "default", None)


def test_spec_example() -> None:
    engine = PolicyEngine(
        "allow",
        {
            "github/create_pull_request": "require-approval",
            "filesystem/read_file": "allow",
            "filesystem/delete_file": "deny",
            "*/delete_*": "require-approval",
        },
    )
    assert engine.decide("filesystem/delete_file").action == "deny"
    assert engine.decide("github/delete_repo").source == "rule:*/delete_*"
    assert engine.decide("github/list_issues") == Decision("allow", "default")
    assert not engine.visible("filesystem/delete_file")
    assert engine.visible("github/delete_repo")


# --- grants -----------------------------------------------------------------------------------------------


def test_grant_expiry_boundary() -> None:
    grant = Grant("github/*", expires_at=100.0, created_at=0.0)
    assert match_grant([grant], "github/x", 99.999) == grant
    assert match_grant([grant], "github/x", 100.0) is None
    assert match_grant([grant], "github/x", 100.001) is None
    assert match_grant([grant], "gitlab/x", 50.0) is None


def test_match_grant_prefers_longest_lived() -> None:
    short = Grant("github/*", expires_at=50.0, created_at=0.0, id=1)
    long = Grant("*", expires_at=80.0, created_at=0.0, id=2)
    dead = Grant("github/x", expires_at=10.0, created_at=0.0, id=3)
    assert match_grant([short, long, dead], "github/x", 20.0) == long
    assert match_grant([short, dead], "github/x", 20.0) == short


@given(
    actions,
    st.dictionaries(patterns, actions, max_size=5),
    st.lists(st.tuples(patterns, st.floats(0, 200)), max_size=4),
    names,
    st.floats(0, 200),
)
def test_grant_never_overrides_deny(
    default: str, rules: dict[str, str], raw_grants: list[tuple[str, float]], name: str, now: float
) -> None:
    grants = [Grant(p, expires_at=e, created_at=0.0) for p, e in raw_grants]
    decision = PolicyEngine(default, rules).decide(name)
    result = apply_grant(decision, grants, name, now)
    if decision.action != "require-approval":
        assert result is decision
    else:
        grant = match_grant(grants, name, now)
        if grant is None:
            assert result is decision
        else:
            assert result == Decision("allow", f"grant:{grant.pattern}", grant.pattern)
            assert now < grant.expires_at


def test_apply_grant_examples() -> None:
    engine = PolicyEngine("allow", {"fs/delete_file": "deny", "fs/*": "require-approval"})
    grants = [Grant("fs/*", expires_at=100.0, created_at=0.0)]
    assert apply_grant(engine.decide("fs/delete_file"), grants, "fs/delete_file", 1.0).action == "deny"
    assert apply_grant(engine.decide("fs/write"), grants, "fs/write", 1.0) == Decision(
        "allow", "grant:fs/*", "fs/*"
    )
    assert apply_grant(engine.decide("fs/write"), grants, "fs/write", 100.0).action == "require-approval"
