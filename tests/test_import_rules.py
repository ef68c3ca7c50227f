"""The package rules, checked on every import statement (function bodies and lazy imports included).

The core points inward: ``envs`` imports none of ``agents``, ``training``, ``serving``; ``agents`` (the
policies) none of ``serving`` or ``training`` (how they are scored); ``serving`` (the live service) none of
``training`` (the workbench); ``forecasting`` none of ``agents``. A rule broken inside a function is still
broken, so the check walks the whole syntax tree of every module, not only its top-level imports.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN: dict[str, frozenset[str]] = {
    "envs": frozenset({"agents", "training", "serving"}),
    "agents": frozenset({"serving", "training"}),
    "serving": frozenset({"training"}),
    "forecasting": frozenset({"agents"}),
}
KNOWN_BREAKS: frozenset[tuple[str, int, str]] = frozenset()
"""(module path, line, imported module) of breaks that are known and being removed elsewhere"""


class Import(NamedTuple):
    path: str
    line: int
    module: str


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = ROOT) -> list[Import]:
    """Every module ``path`` imports, wherever the statement is (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(root).as_posix()
    package = _module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(Import(rel, node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.append(Import(rel, node.lineno, module))
    return out


def broken_rules(root: Path = ROOT) -> list[Import]:
    """Imports that break :data:`FORBIDDEN`."""
    out = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            out.extend(imp for imp in imports_of(path, root) if imp.module.split(".")[0] in forbidden)
    return out


def test_no_package_imports_what_its_rule_forbids() -> None:
    broken = [imp for imp in broken_rules() if tuple(imp) not in KNOWN_BREAKS]
    assert not broken, "package rules broken:\n" + "\n".join(
        f"  {imp.path}:{imp.line} imports {imp.module} "
        f"({imp.path.split('/')[0]} must not import {imp.module.split('.')[0]})"
        for imp in broken
    )


def test_known_breaks_are_still_there() -> None:
    """A known break that is gone must leave :data:`KNOWN_BREAKS` too (so the list only shrinks)."""
    found = {tuple(imp) for imp in broken_rules()}
    stale = sorted(KNOWN_BREAKS - found)
    assert not stale, f"these known breaks are fixed: remove them from KNOWN_BREAKS: {stale}"


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("import training.train\n", "training.train"),
        ("def f():\n    from serving import service\n", "serving"),
        ("class A:\n    def m(self):\n        import agents.registry as r\n", "agents.registry"),
        ("if False:\n    from ..training import x\n", "training"),
    ],
)
def test_the_walk_sees_lazy_and_relative_imports(tmp_path: Path, source: str, module: str) -> None:
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "__init__.py").write_text("")
    (tmp_path / "envs" / "mod.py").write_text(source)
    broken = broken_rules(tmp_path)
    assert [imp.module for imp in broken] == [module]
