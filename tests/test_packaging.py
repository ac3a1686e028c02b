"""Packaging: a lean core, extras that name what they bring, lower bounds pinned for CI."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PROJ = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OPTIONAL = ("dask", "distributed", "matplotlib", "batman", "xarray", "s3fs")


def _names(reqs):
    return {Requirement(r).name for r in reqs}


def test_core_is_lean_and_extras_exist():
    core = _names(PROJ["dependencies"])
    for heavy in ("dask", "matplotlib", "batman-package", "pyarrow", "xarray", "s3fs", "jwst"):
        assert heavy not in core, heavy
    extras = PROJ["optional-dependencies"]
    for name in ("dask", "plots", "fit", "jwst", "s3", "test"):
        assert name in extras, name
    assert "matplotlib" in _names(extras["plots"])
    assert "batman-package" in _names(extras["fit"])
    assert "s3fs" in _names(extras["s3"])
    assert {"dask", "apache-beam"} <= _names(extras["dask"])
    # the test extra pulls in every extra the tests import
    test = " ".join(extras["test"])
    for e in ("dask", "plots", "fit", "parquet", "xarray"):
        assert e in test.split("nirbeam[", 1)[1].split("]", 1)[0], e


def test_every_lower_bound_is_pinned_in_ci_constraints():
    pins = {}
    for line in (ROOT / "ci" / "lower-bounds.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            r = Requirement(line)
            (spec,) = r.specifier
            assert spec.operator == "==", line
            pins[r.name.lower()] = spec.version
    reqs = list(PROJ["dependencies"])
    for extra, rs in PROJ["optional-dependencies"].items():
        if extra not in ("all", "jwst"):
            reqs += [r for r in rs if not r.startswith("nirbeam[")]
    for r in map(Requirement, reqs):
        lows = [s.version for s in r.specifier if s.operator == ">="]
        if not lows or r.name in ("ruff",):
            continue
        assert r.name.lower() in pins, f"{r.name}: lower bound {lows[0]} not in ci/lower-bounds.txt"
        assert pins[r.name.lower()] == lows[0] or r.specifier.contains(pins[r.name.lower()]), r


def test_core_modules_import_without_the_optional_packages():
    """With dask, matplotlib, batman, xarray and s3fs unimportable, the core still loads and
    ``nirbeam config --defaults`` runs; a plot says which extra to install."""
    code = f"""
import sys
for m in {OPTIONAL!r}:
    sys.modules[m] = None          # import m -> ImportError
import nirbeam, nirbeam.api
import nirbeam.stream.cli, nirbeam.stream.pipeline, nirbeam.stream.products
import nirbeam.stream.streaming, nirbeam.stream.runners
import nirbeam.sinks.plots, nirbeam.sinks.diagnostics, nirbeam.sinks.report
import nirbeam.transforms.transit, nirbeam.sim.simulator
from nirbeam.stream.cli import main
assert main(["-q", "config", "--defaults"]) == 0
from nirbeam._extras import MissingExtraError
try:
    nirbeam.sinks.plots.plot_white_light([1.0, 2.0], [1.0, 1.0], "x.png")
except MissingExtraError as e:
    print("MISSING:", e, file=sys.stderr)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[detector1.jump]" in r.stdout
    assert 'MISSING:' in r.stderr and 'pip install "nirbeam[plots]"' in r.stderr


def test_ci_workflow_runs_the_suite_and_the_lower_bounds_job():
    """The CI workflow has a job with the README's test command and one at the lower
    bounds, on the lowest Python the package declares."""
    import yaml

    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    jobs = wf["jobs"]
    runs = {name: " ".join(s.get("run", "") for s in job["steps"]) for name, job in jobs.items()}
    assert any("./run test" in r for r in runs.values()), runs
    lb = [name for name, r in runs.items() if "./run lower-bounds" in r]
    assert lb, f"no job runs ./run lower-bounds: {runs}"
    pyver = [s["with"]["python-version"] for s in jobs[lb[0]]["steps"] if "with" in s
             and "python-version" in s["with"]]
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert pyver and meta["requires-python"] == f">={pyver[0]}", (pyver, meta["requires-python"])
    run_script = (ROOT / "run").read_text()
    assert "lower-bounds)" in run_script and "ci/lower-bounds.txt" in run_script
