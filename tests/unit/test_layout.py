"""The layout's rules, checked on the source: imports point down, and core/ is pure.

front → gateway → upstream / approvals / store / telegram → config / core. A module may import
from its own layer and the layers below it, never above; ``core`` imports nothing of Portero but
core, and no I/O, clock or environment modules at all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "portero"

# Lower number = lower layer. A module may import layers <= its own.
LAYERS = {
    "core": 0,
    "durations": 0,
    "config": 1,
    "logs": 1,
    "systemd": 1,
    "metrics": 1,
    "tracing": 1,
    "store": 2,
    "upstream": 2,
    "approvals": 3,
    "telegram": 4,
    "gateway": 4,
    "front": 5,
    "app": 6,
    "cli": 7,
    "__main__": 8,
    "__init__": 0,
}
CORE_FORBIDDEN = {"trio", "httpx", "sqlite3", "quart", "quart_trio", "hypercorn", "time", "os", "socket",
                  "subprocess", "datetime", "random", "secrets", "asyncio", "anyio"}  # fmt: skip


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _layer_of(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _portero_imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level portero part, inside `if TYPE_CHECKING`) for each import of a portero module."""
    tree = ast.parse(path.read_text())
    rel_pkg = path.relative_to(PKG).parent.parts
    found: list[tuple[str, bool]] = []
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in ast.walk(node):
                type_only.add(id(sub))
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel_pkg[: len(rel_pkg) - (node.level - 1)])
                mod = [*base, *(node.module.split(".") if node.module else [])]
                if mod:
                    targets.append(mod[0])
                else:  # `from .. import x` at the top of the package: x is a module or a name
                    targets += [a.name if a.name in LAYERS else "__init__" for a in node.names]
            elif node.module and node.module.split(".")[0] == "portero":
                parts = node.module.split(".")
                targets.append(parts[1] if len(parts) > 1 else node.names[0].name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "portero" and len(parts) > 1:
                    targets.append(parts[1])
        found += [(t, id(node) in type_only) for t in targets]
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down(path: Path) -> None:
    layer = _layer_of(path)
    for target, type_only in _portero_imports(path):
        if type_only:
            continue  # annotations only: no import at run time
        assert target in LAYERS, f"{path.name} imports an unknown part portero.{target}: add it to LAYERS"
        assert LAYERS[target] <= LAYERS[layer], (
            f"{path.relative_to(PKG)} ({layer}) imports {target}, a layer above"
        )


@pytest.mark.parametrize("path", sorted((PKG / "core").glob("*.py")), ids=lambda p: p.name)
def test_core_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            assert top not in CORE_FORBIDDEN, f"core/{path.name} imports {name}"
            if top == "portero":
                assert name.startswith("portero.core"), f"core/{path.name} imports {name}"
        if isinstance(node, ast.Attribute) and ast.unparse(node) in ("os.environ", "time.time"):
            pytest.fail(f"core/{path.name} reads {ast.unparse(node)}")


def test_every_module_has_a_layer() -> None:
    assert {_layer_of(p) for p in _modules()} <= set(LAYERS)
