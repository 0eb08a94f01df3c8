"""A small JSON Schema check for arguments the admin edits on Telegram (pure and synchronous).

Why not the ``jsonschema`` package: it is in our virtualenv only as a dependency of the test-only ``mcp``
SDK, and as a runtime dependency it would bring three more packages (one a compiled Rust wheel) into the
zipapp for one admin-only feature. The edited arguments go to the same server that validates its own input
anyway; this check is there so that the admin hears about a typo *before* the call runs.

Supported keywords: ``type`` (a name or a list of names; ``integer`` accepts 3.0, ``number`` rejects
booleans), ``enum``, ``const``, ``properties``, ``required``, ``additionalProperties`` (false or a schema),
``items`` (a schema), ``minimum`` / ``maximum``, ``minLength`` / ``maxLength``, ``minItems`` /
``maxItems``, and ``anyOf`` / ``oneOf`` / ``allOf``. Any other keyword (``$ref``, ``pattern``,
``format``…) is not checked: the check errs on the side of accepting, never of refusing valid input.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["MAX_ERRORS", "validate"]

# At most this many problems are reported (the rest are counted), so that a reply stays short.
MAX_ERRORS = 5
_DEPTH_MAX = 32


def _is_type(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if name == "number":
        return isinstance(value, int | float)
    if name == "integer":
        return isinstance(value, int) or (
            isinstance(value, float) and math.isfinite(value) and value.is_integer()
        )
    return True  # an unknown type name: not ours to refuse


def _where(path: str) -> str:
    return path or "the arguments"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:39] + "…"


def _check(value: Any, schema: Any, path: str, out: list[str], depth: int) -> None:
    if not isinstance(schema, dict) or depth > _DEPTH_MAX:
        return  # true / {} / an unusable schema: anything goes
    types = schema.get("type")
    if isinstance(types, str):
        types = [types]
    if isinstance(types, list) and types and not any(_is_type(value, str(t)) for t in types):
        out.append(f"{_where(path)}: expected {' or '.join(map(str, types))}, got {_show(value)}")
        return
    if "const" in schema and value != schema["const"]:
        out.append(f"{_where(path)}: must be {_show(schema['const'])}")
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        out.append(f"{_where(path)}: must be one of {', '.join(_show(e) for e in enum)}")
    if isinstance(value, dict):
        _check_object(value, schema, path, out, depth)
    elif isinstance(value, list):
        items = schema.get("items")
        for i, item in enumerate(value):
            _check(item, items, f"{path}[{i}]", out, depth + 1)
        _bounds(len(value), schema, "minItems", "maxItems", f"{_where(path)}: ", "items", out)
    elif isinstance(value, str):
        _bounds(len(value), schema, "minLength", "maxLength", f"{_where(path)}: ", "characters", out)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        low, high = schema.get("minimum"), schema.get("maximum")
        if isinstance(low, int | float) and value < low:
            out.append(f"{_where(path)}: must be at least {low}")
        if isinstance(high, int | float) and value > high:
            out.append(f"{_where(path)}: must be at most {high}")
    for key in ("allOf", "anyOf", "oneOf"):
        subs = schema.get(key)
        if not isinstance(subs, list) or not subs:
            continue
        results = []
        for sub in subs:
            found: list[str] = []
            _check(value, sub, path, found, depth + 1)
            results.append(found)
        if key == "allOf":
            for found in results:
                out.extend(found)
        elif key == "anyOf" and all(results):
            out.append(f"{_where(path)}: matches none of the allowed forms ({results[0][0]})")
        elif key == "oneOf" and sum(1 for r in results if not r) != 1:
            out.append(f"{_where(path)}: must match exactly one of the allowed forms")


def _bounds(n: int, schema: dict[str, Any], lo: str, hi: str, where: str, unit: str, out: list[str]) -> None:
    low, high = schema.get(lo), schema.get(hi)
    if isinstance(low, int) and n < low:
        out.append(f"{where}at least {low} {unit}")
    if isinstance(high, int) and n > high:
        out.append(f"{where}at most {high} {unit}")


def _check_object(
    value: dict[str, Any], schema: dict[str, Any], path: str, out: list[str], depth: int
) -> None:
    required = schema.get("required")
    if isinstance(required, list):
        for name in required:
            if isinstance(name, str) and name not in value:
                out.append(f"{_where(path)}: missing required {name!r}")
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key in props:
            _check(item, props[key], where, out, depth + 1)
        elif extra is False:
            out.append(f"{where}: not an accepted argument (accepted: {', '.join(sorted(props)) or 'none'})")
        else:
            _check(item, extra, where, out, depth + 1)


def validate(value: Any, schema: Any) -> list[str]:
    """The problems of ``value`` against ``schema`` as short lines for a human (``[]``: valid). At most
    :data:`MAX_ERRORS` lines, then one saying how many more there are."""
    out: list[str] = []
    _check(value, schema, "", out, 0)
    if len(out) > MAX_ERRORS:
        out = [*out[:MAX_ERRORS], f"… and {len(out) - MAX_ERRORS} more"]
    return out
