"""Layer contracts (pyproject.toml [tool.importlinter], docs/ARCHITECTURE.md) hold, and
they can fail: a copy of the package with one wrong import breaks the named contract."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(cwd))
    return subprocess.run([LINT, "--no-cache"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def copy_of_package(tmp_path_factory):
    def make(edit_path: str, line: str) -> Path:
        d = tmp_path_factory.mktemp("arch")
        shutil.copytree(ROOT / "nirbeam", d / "nirbeam",
                        ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
        shutil.copy(ROOT / "pyproject.toml", d / "pyproject.toml")
        f = d / edit_path
        f.write_text(f.read_text() + "\n" + line + "\n")
        return d

    return make


def test_layer_contracts_hold():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


@pytest.mark.parametrize(("path", "line", "contract"), [
    # a kernel that imports Beam
    ("nirbeam/transforms/jump.py", "import apache_beam  # noqa", "never import Beam"),
    # a kernel that imports the orchestration (an arrow the wrong way)
    ("nirbeam/transforms/saturation.py", "from nirbeam.stream import pipeline  # noqa",
     "Layers"),
    # core importing a layer above it
    ("nirbeam/core/schema.py", "from nirbeam.sinks import zarr_store  # noqa",
     "nirbeam.core imports no other"),
    # production code looking for the simulator
    ("nirbeam/stream/products.py", "from nirbeam.sim import simulator  # noqa",
     "simulator is imported by no production module"),
])
def test_a_wrong_import_breaks_a_contract(copy_of_package, path, line, contract):
    r = _lint(copy_of_package(path, line))
    assert r.returncode != 0, r.stdout
    broken = r.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, r.stdout


def test_long_modules_say_why():
    """No module over 650 lines without a reason at its top (a "Size note:" in its
    docstring): issue 12's "no module over ~600 lines without a reason written there"."""
    import ast

    pkg = Path(__file__).resolve().parents[1] / "nirbeam"
    missing = []
    for p in sorted(pkg.rglob("*.py")):
        text = p.read_text()
        if text.count("\n") > 650:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "Size note:" not in doc:
                missing.append(f"{p.relative_to(pkg.parent)} ({text.count(chr(10))} lines)")
    assert not missing, f"long modules without a size note: {missing}"
