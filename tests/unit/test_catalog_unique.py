"""Exposed names are unique: a clash is resolved by prefixing, never by letting one server shadow another."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from portero.core.catalog import MAX_NAME, Catalog, ChildListing


def tools(*names: str) -> list[dict[str, str]]:
    return [{"name": n} for n in names]


def exposed_by_canonical(cat: Catalog) -> dict[str, str]:
    return {e.canonical: e.exposed for e in cat.tools.values()}


def test_two_unprefixed_servers_with_the_same_tool_name() -> None:
    a = ChildListing("a", False, tools=tools("search", "only_a"))
    b = ChildListing("b", False, tools=tools("search"))
    for order, first, second in (([a, b], "a", "b"), ([b, a], "b", "a")):
        cat = Catalog.build(order, "__")
        # Both are there, each under its own name and routing to its own server; the later one is prefixed.
        assert exposed_by_canonical(cat)[f"{first}/search"] == "search"
        assert exposed_by_canonical(cat)[f"{second}/search"] == f"{second}__search"
        assert cat.tools[f"{second}__search"].server == second
        assert exposed_by_canonical(cat)["a/only_a"] == "only_a"
        [warning] = cat.warnings
        assert f"{second}/search" in warning and f"{first}/search" in warning


def test_a_prefixed_name_equal_to_another_servers_unprefixed_name() -> None:
    # Server u (prefix = false) names a tool "gh__create_issue", gh's prefixed name: gh keeps it either way.
    gh = ChildListing("gh", True, tools=tools("create_issue"))
    u = ChildListing("u", False, tools=tools("gh__create_issue"))
    for order in ([gh, u], [u, gh]):
        cat = Catalog.build(order, "__")
        assert cat.tools["gh__create_issue"].canonical == "gh/create_issue"
        assert cat.tools["u__gh__create_issue"].canonical == "u/gh__create_issue"
        assert len(cat.tools) == 2 and len(cat.warnings) == 1


def test_two_prefixed_names_that_join_to_the_same_string() -> None:
    # With "-" as the separator, gh + pr-list and gh-pr + list are both "gh-pr-list" (a server name with the
    # separator is only a config warning). The first keeps it; the other is exposed with a stable hash.
    gh = ChildListing("gh", True, tools=tools("pr-list"))
    ghpr = ChildListing("gh-pr", True, tools=tools("list"))
    cat = Catalog.build([gh, ghpr], "-")
    names = exposed_by_canonical(cat)
    assert names["gh/pr-list"] == "gh-pr-list"
    assert (
        names["gh-pr/list"].startswith("gh-pr-list_") and len(names["gh-pr/list"]) == len("gh-pr-list_") + 8
    )
    assert names == exposed_by_canonical(Catalog.build([gh, ghpr], "-"))  # stable across rebuilds
    [warning] = cat.warnings
    assert "gh-pr/list" in warning and "gh/pr-list" in warning and repr(names["gh-pr/list"]) in warning


def test_a_server_listing_a_name_twice_keeps_the_first() -> None:
    cat = Catalog.build([ChildListing("a", True, tools=[{"name": "x", "v": 1}, {"name": "x", "v": 2}])], "__")
    assert [e.item["v"] for e in cat.tools.values()] == [1]
    assert "hidden by a/x" in cat.warnings[0]


# Few names, so that they clash often: server names with the separator, tool names with it, long ones.
_server_names = st.sampled_from(["a", "b", "a-b", "b-a", "s" * 60])
_tool_names = st.sampled_from(
    ["x", "b-x", "a-x", "b__x", "a__b__x", "b.x", "x" * 70, "b-" + "x" * 70]
) | st.text(alphabet="ab_-.", min_size=1, max_size=6)
_servers = st.lists(
    st.tuples(_server_names, st.booleans(), st.lists(_tool_names, max_size=5)),
    max_size=5,
    unique_by=lambda s: s[0],
)


@given(_servers, st.sampled_from(["__", "-", ".", "_"]))
@example([("a", True, ["b-x"]), ("a-b", True, ["x"])], "-")  # before the fix: a-b/x was hidden
@settings(max_examples=500)
def test_every_tool_of_every_server_is_exposed_once(
    servers: list[tuple[str, bool, list[str]]], separator: str
) -> None:
    cat = Catalog.build([ChildListing(n, p, tools=tools(*names)) for n, p, names in servers], separator)
    wanted = {(server, name) for server, _, names in servers for name in names}
    assert {(e.server, e.original) for e in cat.tools.values()} == wanted
    assert len(cat.tools) == len(wanted)  # one exposed name each, none shadowed
    assert all(e.item["name"] == exposed and len(exposed) <= MAX_NAME for exposed, e in cat.tools.items())
