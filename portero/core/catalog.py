"""Naming and aggregation of the children's tools, prompts and resources — pure.

A tool ``create_issue`` of server ``github`` is exposed as ``github__create_issue`` (with the
configured separator) and its canonical name is ``github/create_issue``. With ``prefix = false``
the exposed name is the tool's own name; the canonical name keeps the server. An exposed name
longer than 64 characters is shortened deterministically: its first 55 characters, ``_`` and 8 hex
digits of its SHA-256, so it is stable across restarts and still routes to the right tool.

A ``prefix = false`` name is exposed prefixed instead (``server__name``), with a warning naming both
sides, when a client could take it for another tool (:func:`unprefixed_renames`):

- it contains the separator: ``t__delete_thing`` of an unprefixed server ``u`` reads as ``t``'s
  ``delete_thing`` (which a rule may deny), so it is exposed as ``u__t__delete_thing``;
- a prefixed server exposes the same name, whichever comes first in the config: the prefixed one
  keeps it;
- an earlier unprefixed server already exposes it: the first in config order keeps it.

Exposed names are unique, and no server shadows another. A clash that remains after that (two
prefixed names that are equal because a server name contains the separator -- ``gh`` + ``pr-list`` and
``gh-pr`` + ``list`` with ``-`` -- or a shortened name): the first in config order keeps the name and the
later tool is exposed as :func:`disambiguated` (prefixed, then a hash of its canonical name), with a
warning. Only a server listing the same name twice loses the duplicate.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Container, Iterable, Sequence
from typing import Any

import attrs

MAX_NAME = 64


def shorten(name: str, limit: int = MAX_NAME) -> str:
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9]}_{digest}"


def exposed_name(server: str, name: str, *, prefix: bool, separator: str) -> str:
    return shorten(f"{server}{separator}{name}" if prefix else name)


def canonical_name(server: str, name: str) -> str:
    return f"{server}/{name}"


def disambiguated(server: str, name: str, taken: Container[str], *, separator: str) -> str | None:
    """An exposed name for ``server``'s ``name`` that is not in ``taken``: the prefixed name, else the
    prefixed name cut to fit with ``_`` and 8 hex digits of the SHA-256 of the canonical name (stable,
    and unique per tool). None only if even that is taken (a hash collision)."""
    prefixed = exposed_name(server, name, prefix=True, separator=separator)
    if prefixed not in taken:
        return prefixed
    digest = hashlib.sha256(canonical_name(server, name).encode()).hexdigest()[:8]
    hashed = f"{prefixed[: MAX_NAME - 9]}_{digest}"
    return hashed if hashed not in taken else None


@attrs.frozen
class Renamed:
    """A ``prefix = false`` name exposed prefixed instead: ``server``'s ``name`` is exposed as ``exposed``
    because a client could take its own name for ``other`` (a canonical name); ``warning`` says so."""

    server: str
    name: str
    exposed: str
    other: str
    warning: str


def unprefixed_renames(
    servers: Iterable[tuple[str, bool, Iterable[str]]], separator: str, *, what: str = "tool"
) -> list[Renamed]:
    """Which ``prefix = false`` names must be exposed prefixed instead, in config order. Pure.

    ``servers`` is ``(server name, prefix flag, its tool names)`` in config order. A ``prefix = false``
    name is renamed when it contains ``separator`` (it would read as another server's prefixed tool), when
    a prefixed server exposes the same name (in either config order), or when an earlier ``prefix =
    false`` server already exposes it. Shared by :meth:`Catalog.build` and ``portero check``.
    """
    listed = [
        (server, prefix, [n for n in names if isinstance(n, str) and n]) for server, prefix, names in servers
    ]
    prefixed: dict[str, str] = {}  # exposed name -> canonical name, of every prefixed server
    for server, prefix, names in listed:
        if prefix:
            for name in names:
                exposed = exposed_name(server, name, prefix=True, separator=separator)
                prefixed.setdefault(exposed, canonical_name(server, name))
    taken: dict[str, tuple[str, str]] = {}  # plain exposed name -> (server, canonical) of its holder
    out: list[Renamed] = []
    for server, prefix, names in listed:
        if prefix:
            continue
        for name in names:
            plain = exposed_name(server, name, prefix=False, separator=separator)
            canonical = canonical_name(server, name)
            instead = exposed_name(server, name, prefix=True, separator=separator)
            holder = taken.get(plain)
            if separator and (separator in name or separator in plain):
                head, _, tail = (name if separator in name else plain).partition(separator)
                other = canonical_name(head, tail)
                why = f"contains the separator {separator!r}, so {plain!r} would read as {other}"
            elif plain in prefixed:
                other = prefixed[plain]
                why = f"would be exposed as {plain!r}, the exposed name of {other}"
            elif holder is not None and holder[0] != server:
                other = holder[1]
                why = f"would be exposed as {plain!r}, like {other} earlier in the config"
            else:
                taken.setdefault(plain, (server, canonical))
                continue
            warning = f"{what} name clash: {canonical} (prefix = false) {why}; exposed as {instead!r} instead"
            out.append(Renamed(server=server, name=name, exposed=instead, other=other, warning=warning))
    return out


@attrs.frozen
class Entry:
    """One tool or prompt as the client sees it, and where it really lives."""

    exposed: str
    server: str
    original: str
    item: dict[str, Any]  # the child's definition with ``name`` set to ``exposed``

    @property
    def canonical(self) -> str:
        return canonical_name(self.server, self.original)


@attrs.frozen
class ChildListing:
    """What one ready child listed (config order matters for clashes)."""

    server: str
    prefix: bool
    tools: Sequence[dict[str, Any]] = ()
    prompts: Sequence[dict[str, Any]] = ()
    resources: Sequence[dict[str, Any]] = ()
    templates: Sequence[dict[str, Any]] = ()


def _names(items: Sequence[dict[str, Any]]) -> list[str]:
    return [n for n in (item.get("name") for item in items) if isinstance(n, str) and n]


def _tool_names(lst: ChildListing) -> list[str]:
    return _names(lst.tools)


def _prompt_names(lst: ChildListing) -> list[str]:
    return _names(lst.prompts)


_TEMPLATE_VAR = re.compile(r"\{([+#./;?&]?)([A-Za-z0-9_,.*%]+)\}")


def template_regex(template: str) -> re.Pattern[str]:
    """A regex matching the URIs an RFC 6570 template can produce (enough for routing)."""
    out: list[str] = []
    pos = 0
    for m in _TEMPLATE_VAR.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        op = m.group(1)
        out.append(".*" if op in ("+", "#", "?", "&", "/", ";", ".") else "[^/]*")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


@attrs.define
class Catalog:
    tools: dict[str, Entry] = attrs.Factory(dict)
    prompts: dict[str, Entry] = attrs.Factory(dict)
    resources: dict[str, str] = attrs.Factory(dict)  # uri -> server
    resource_items: list[dict[str, Any]] = attrs.Factory(list)
    templates: list[tuple[re.Pattern[str], str, dict[str, Any]]] = attrs.Factory(list)
    warnings: list[str] = attrs.Factory(list)
    by_canonical: dict[str, Entry] = attrs.Factory(dict)

    @classmethod
    def build(cls, listings: Iterable[ChildListing], separator: str) -> Catalog:
        cat = cls()
        listings = list(listings)
        renames: dict[str, dict[tuple[str, str], Renamed]] = {}
        for what, items_of in (("tool", _tool_names), ("prompt", _prompt_names)):
            found = unprefixed_renames(
                ((lst.server, lst.prefix, items_of(lst)) for lst in listings), separator, what=what
            )
            renames[what] = {(r.server, r.name): r for r in found}
        for lst in listings:
            cat._add_named(cat.tools, "tool", lst, lst.tools, separator, renames["tool"])
            cat._add_named(cat.prompts, "prompt", lst, lst.prompts, separator, renames["prompt"])
            for res in lst.resources:
                uri = res.get("uri")
                if not isinstance(uri, str):
                    continue
                if uri in cat.resources:
                    owner = cat.resources[uri]
                    if owner != lst.server:
                        cat.warnings.append(f"resource {uri} of {lst.server} is hidden by {owner}'s")
                    continue
                cat.resources[uri] = lst.server
                cat.resource_items.append(res)
            for tpl in lst.templates:
                t = tpl.get("uriTemplate")
                if isinstance(t, str):
                    cat.templates.append((template_regex(t), lst.server, tpl))
        return cat

    def _add_named(
        self,
        table: dict[str, Entry],
        what: str,
        lst: ChildListing,
        items: Sequence[dict[str, Any]],
        separator: str,
        renames: dict[tuple[str, str], Renamed],
    ) -> None:
        for item in items:
            name = item.get("name")
            if not isinstance(name, str) or not name:
                self.warnings.append(f"{lst.server}: a {what} without a name was ignored")
                continue
            renamed = renames.get((lst.server, name))
            if renamed is not None:
                exposed = renamed.exposed
                self.warnings.append(renamed.warning)
            else:
                exposed = exposed_name(lst.server, name, prefix=lst.prefix, separator=separator)
            if exposed in table:
                other = table[exposed]
                instead = (
                    None
                    if other.server == lst.server
                    else disambiguated(lst.server, name, table, separator=separator)
                )
                if instead is None:  # the server listed the name twice (or a hash collision)
                    self.warnings.append(
                        f"{what} name clash: {exposed!r} of {lst.server} is hidden by {other.canonical}"
                    )
                    continue
                self.warnings.append(
                    f"{what} name clash: {canonical_name(lst.server, name)} would be exposed as {exposed!r}, "
                    f"like {other.canonical}; exposed as {instead!r} instead"
                )
                exposed = instead
            entry = Entry(exposed=exposed, server=lst.server, original=name, item={**item, "name": exposed})
            table[exposed] = entry
            if what == "tool":
                self.by_canonical[entry.canonical] = entry

    def route_resource(self, uri: str) -> str | None:
        server = self.resources.get(uri)
        if server is not None:
            return server
        for rx, srv, _ in self.templates:
            if rx.match(uri):
                return srv
        return None

    def template_items(self) -> list[dict[str, Any]]:
        return [tpl for _, _, tpl in self.templates]
