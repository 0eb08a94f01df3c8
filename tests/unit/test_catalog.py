from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from portero.core.catalog import Catalog, ChildListing, exposed_name, shorten, template_regex


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
    assert any("clash" in w and "b/x" not in w and "'x'" in w for w in cat.warnings)


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
