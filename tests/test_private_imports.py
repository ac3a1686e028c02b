"""No nirbeam module uses a private name (``_name``) of another nirbeam module.

An AST scan of every module: ``from nirbeam.x import _name`` (absolute or relative), and
``m._name`` where ``m`` is bound to a nirbeam module (``import nirbeam.x as m``, ``from
nirbeam import x``). Dunder names are allowed. The remaining uses in modules owned by
other work are listed in :data:`KNOWN_GAPS`, each named; a gap that is fixed must be
removed from the list (the test fails on a stale entry too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nirbeam"

#: (importing module, "imported module.name"): known, named, to be cleared at merge.
KNOWN_GAPS: set[tuple[str, str]] = set()


def _modname(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def private_uses(package: Path = PACKAGE) -> set[tuple[str, str]]:
    """``{(module, "other_module.private_name")}`` over every ``*.py`` under ``package``."""
    files = sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)
    mods = {_modname(p, package) for p in files}
    root = package.name
    found = set()
    for p in files:
        me = _modname(p, package)
        tree = ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
        bound: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:
                    base = me.split(".")
                    if p.name != "__init__.py":
                        base = base[:-1]
                    base = base[:len(base) - node.level + 1]
                    mod = ".".join(base + ([mod] if mod else []))
                if mod != root and not mod.startswith(root + "."):
                    continue
                for a in node.names:
                    full = f"{mod}.{a.name}"
                    if full in mods:
                        bound[a.asname or a.name] = full
                    elif a.name.startswith("_") and not a.name.startswith("__") and mod != me:
                        found.add((me, full))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith(root + ".") and a.asname:
                        bound[a.asname] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in bound and node.attr.startswith("_")
                    and not node.attr.startswith("__") and bound[node.value.id] != me):
                found.add((me, f"{bound[node.value.id]}.{node.attr}"))
    return found


def test_no_module_imports_a_private_name_of_another():
    found = private_uses()
    new = sorted(found - KNOWN_GAPS)
    assert not new, ("private names of other modules used (give them a public name in "
                     f"their module): {new}")
    stale = sorted(KNOWN_GAPS - found)
    assert not stale, f"known gaps that are gone: remove them from KNOWN_GAPS: {stale}"


@pytest.mark.parametrize("code, expected", [
    ("from nirbeam.a import _x\n", {("nirbeam.b", "nirbeam.a._x")}),
    ("from .a import _x as y\n", {("nirbeam.b", "nirbeam.a._x")}),
    ("import nirbeam.a as m\nm._y\n", {("nirbeam.b", "nirbeam.a._y")}),
    ("from nirbeam import a\na._z()\n", {("nirbeam.b", "nirbeam.a._z")}),
    ("from nirbeam.a import x, __version__\nimport numpy as np\nnp._f\n", set()),
])
def test_the_scan_sees_each_form(tmp_path, code, expected):
    """The scanner on a small package: each form of private use is found, public ones not."""
    pkg = tmp_path / "nirbeam"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("x = 1\n_x = 2\n_y = 3\n\ndef _z():\n    pass\n")
    (pkg / "b.py").write_text(code)
    assert private_uses(pkg) == expected
