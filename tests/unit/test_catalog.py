from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from portero.core.catalog import (
    Catalog,
    ChildListing,
    exposed_name,
    shorten,
    template_regex,
    unprefixed_renames,
)


def tool(name: str) -> dict:
    return {"name": name, "inputSchema": {"type": "object"}}


def test_prefixing_and_canonical_names() -> None:
    cat = Catalog.build(
        [
            ChildListing("github", True, tools=[tool("create_issue")]),
            ChildListing("fs", True, tools=[tool("read")]),
        ],
        "__",
    )
    e = cat.tools["github__create_issue"]
    assert (e.server, e.original, e.canonical) == ("github", "create_issue", "github/create_issue")
    assert e.item["name"] == "github__create_issue"
    assert cat.by_canonical["fs/read"].exposed == "fs__read"


def test_prefix_false_and_first_wins_on_clash() -> None:
    cat = Catalog.build(
        [ChildListing("a", False, tools=[tool("x"), tool("y")]), ChildListing("b", False, tools=[tool("x")])],
        "__",
    )
    assert cat.tools["x"].server == "a"
    assert cat.tools["y"].canonical == "a/y"
    # The later one is exposed prefixed instead of hidden, and the warning names both.
    assert cat.tools["b__x"].canonical == "b/x"
    assert cat.by_canonical["b/x"].exposed == "b__x"
    [warning] = cat.warnings
    assert "name clash" in warning and "b/x" in warning and "a/x" in warning and "'b__x'" in warning


def test_an_unprefixed_name_with_the_separator_is_exposed_prefixed() -> None:
    # The reproduction: a prefix = false server u exposed t__delete_thing, which the client cannot tell from
    # server t's delete_thing (denied by t/delete_*). Whichever order the servers are in.
    t = ChildListing("t", True, tools=[tool("delete_thing")])
    u = ChildListing("u", False, tools=[tool("t__delete_thing"), tool("plain")])
    for order in ([t, u], [u, t], [u]):
        cat = Catalog.build(order, "__")
        if t in order:
            assert cat.tools["t__delete_thing"].canonical == "t/delete_thing"
        else:
            assert "t__delete_thing" not in cat.tools
        assert cat.tools["u__t__delete_thing"].canonical == "u/t__delete_thing"
        assert cat.tools["plain"].canonical == "u/plain"
        [warning] = cat.warnings
        assert (
            "u/t__delete_thing" in warning
            and "t/delete_thing" in warning
            and "'u__t__delete_thing'" in warning
        )
    # Prompts follow the same rule.
    cat = Catalog.build([ChildListing("u", False, prompts=[tool("t__p")])], "__")
    assert list(cat.prompts) == ["u__t__p"] and "prompt name clash" in cat.warnings[0]


def test_an_unprefixed_name_equal_to_a_prefixed_one_yields_in_either_order() -> None:
    # A prefixed name without the separator: a server name long enough that shortening cuts it off.
    long_server = "s" * 60
    prefixed = exposed_name(long_server, "tool", prefix=True, separator="__")
    assert "__" not in prefixed
    p = ChildListing(long_server, True, tools=[tool("tool")])
    u = ChildListing("u", False, tools=[tool(prefixed)])
    for order in ([p, u], [u, p]):
        cat = Catalog.build(order, "__")
        assert cat.tools[prefixed].canonical == f"{long_server}/tool"
        moved = exposed_name("u", prefixed, prefix=True, separator="__")
        assert cat.tools[moved].canonical == f"u/{prefixed}"
        [warning] = cat.warnings
        assert f"u/{prefixed}" in warning and f"{long_server}/tool" in warning


def test_unprefixed_renames_is_pure_and_reusable() -> None:
    servers = [
        ("t", True, ["delete_thing"]),
        ("u", False, ["t__delete_thing", "x", "x"]),  # a server's own duplicate is not a rename
        ("v", False, ["x", "y"]),
        ("w", True, ["x"]),
    ]
    renames = unprefixed_renames(servers, "__")
    assert [(r.server, r.name, r.exposed, r.other) for r in renames] == [
        ("u", "t__delete_thing", "u__t__delete_thing", "t/delete_thing"),
        ("v", "x", "v__x", "u/x"),
    ]
    assert all("name clash" in r.warning for r in renames)
    assert unprefixed_renames([("a", False, ["x.y"])], ".")[0].exposed == "a.x.y"
    assert unprefixed_renames([("a", True, ["x__y"]), ("b", True, ["x"])], "__") == []


def test_long_names_are_shortened_stably_and_uniquely() -> None:
    long1 = "t" * 70 + "1"
    long2 = "t" * 70 + "2"
    n1 = exposed_name("srv", long1, prefix=True, separator="__")
    n2 = exposed_name("srv", long2, prefix=True, separator="__")
    assert len(n1) == 64 and len(n2) == 64 and n1 != n2
    assert n1 == exposed_name("srv", long1, prefix=True, separator="__")
    cat = Catalog.build([ChildListing("srv", True, tools=[tool(long1), tool(long2)])], "__")
    assert cat.tools[n1].original == long1 and cat.tools[n2].original == long2


@given(st.text(alphabet="abcdefghij_-", min_size=1, max_size=200))
def test_shorten_properties(name: str) -> None:
    out = shorten(name)
    assert len(out) <= 64
    if len(name) <= 64:
        assert out == name
    else:
        assert out.startswith(name[:55])


def test_resources_and_templates_route() -> None:
    cat = Catalog.build(
        [
            ChildListing(
                "a", True, resources=[{"uri": "file:///x"}], templates=[{"uriTemplate": "db://{table}/rows"}]
            ),
            ChildListing("b", True, resources=[{"uri": "file:///x"}, {"uri": "file:///y"}]),
        ],
        "__",
    )
    assert cat.route_resource("file:///x") == "a"
    assert cat.route_resource("file:///y") == "b"
    assert cat.route_resource("db://users/rows") == "a"
    assert cat.route_resource("db://a/b/rows") is None
    assert cat.route_resource("nope://") is None
    assert len(cat.resource_items) == 2


def test_template_regex_operators() -> None:
    assert template_regex("file:///{+path}").match("file:///a/b/c")
    assert not template_regex("x://{id}").match("x://a/b")
    assert template_regex("x://{id}{?q}").match("x://a?q=1")


def test_items_without_names_are_reported() -> None:
    cat = Catalog.build([ChildListing("a", True, tools=[{"description": "no name"}])], "__")
    assert cat.tools == {} and cat.warnings
