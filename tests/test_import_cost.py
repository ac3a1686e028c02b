"""What a whole ``nirbeam run`` imports (issue 14, fixed costs).

A fresh process runs ``nirbeam run`` on a small simulated PRISM exposure and reports its
``sys.modules``. Modules that no run needs must not be there: setuptools' ``distutils`` /
``pkg_resources`` (batman's ``openmp`` compiler probe, ~0.2-1 s), ``scipy.signal`` /
``scipy.stats`` (``savgol_filter``: nirbeam has its own), ``matplotlib.pyplot`` (the
plots draw on their own Agg canvases). A run without plots and fit must not import
matplotlib or batman at all. The run with plots and fit must import both (so the check
would see them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: never imported by a run
NEVER = ("distutils", "distutils.ccompiler", "setuptools", "pkg_resources", "scipy.signal",
         "scipy.stats", "matplotlib.pyplot")

CHILD = r"""
import json, sys
from nirbeam.stream.cli import main
rc = main(sys.argv[2:])
json.dump({"rc": rc, "modules": sorted(sys.modules)}, open(sys.argv[1], "w"))
"""


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # the fit and plots in this process: a plot child process's imports (matplotlib,
    # batman) would not be in this process's sys.modules (the same modules either way)
    env["NIRBEAM_PLOTS_PROCESS"] = "0"
    return env


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from nirbeam.sim.simulator import simulate
    from nirbeam.stream.cli import write_sim_config

    d = tmp_path_factory.mktemp("imports")
    s = simulate(d / "sim", preset="prism-sub512", nints=8, seed=3)
    return s, write_sim_config(s), d


def _run_modules(sim, *extra: str) -> set[str]:
    s, cfg, d = sim
    out = d / f"out{len(list(d.iterdir()))}"
    rep = d / f"rep{len(list(d.iterdir()))}.json"
    cmd = [sys.executable, "-c", CHILD, str(rep), "run", str(s.outdir), "--refs",
           str(s.refs_dir), "--config", str(cfg), "--out", str(out), "--no-progress", *extra]
    p = subprocess.run(cmd, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(rep.read_text())
    assert r["rc"] == 0
    return set(r["modules"])


def test_full_run_imports_nothing_it_does_not_need(sim):
    mods = _run_modules(sim)
    assert {"batman", "matplotlib", "apache_beam", "numba"} <= mods  # it did fit and plot
    assert not mods & set(NEVER), sorted(mods & set(NEVER))
    # batman's own openmp module is the stand-in; the real one was never loaded
    assert "batman.openmp" in mods and "batman._openmp_probe" not in mods


def test_run_without_plots_or_fit_imports_no_matplotlib_or_batman(sim):
    mods = _run_modules(sim, "--set", "products.plots=false", "--set", "products.fit=false")
    bad = {m for m in mods if m.split(".")[0] in ("matplotlib", "batman", "PIL")}
    assert not bad, sorted(bad)[:10]
    assert not mods & set(NEVER), sorted(mods & set(NEVER))


BATMAN = r"""
import json, sys
import numpy as np
if sys.argv[1] == "nirbeam":
    from nirbeam.transforms.transit_model import batman_module
    bm = batman_module()
else:
    import batman as bm
before = "distutils" in sys.modules
p = bm.TransitParams()
p.t0, p.per, p.rp, p.a, p.inc, p.ecc, p.w = 0.0, 1.0, 0.1, 10.0, 88.0, 0.0, 90.0
p.limb_dark, p.u = "quadratic", [0.1, 0.3]
t = np.linspace(-0.1, 0.1, 301)
flux = bm.TransitModel(p, t).light_curve(p)
hasfn = bm.openmp.hasfunction  # a name of the real module: loads it
print(json.dumps({"distutils_before": before, "flux": flux.tolist(),
                  "hasfunction_file": hasfn.__code__.co_filename,
                  "detect_is": type(bm.openmp.detect).__name__,
                  "tests_detect_same": bm.tests.detect is bm.openmp.detect,
                  "distutils_after": "distutils" in sys.modules}))
"""


def _batman(how: str) -> dict:
    p = subprocess.run([sys.executable, "-c", BATMAN, how], env=_env(), cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_batman_without_its_compiler_probe_is_batman():
    pytest.importorskip("batman")
    ours, plain = _batman("nirbeam"), _batman("plain")
    assert plain["distutils_before"] is True  # batman's own import pulls distutils
    assert ours["distutils_before"] is False
    assert ours["flux"] == plain["flux"]  # the same light curve, bit for bit
    assert min(ours["flux"]) < 0.995  # (a transit)
    # the real batman.openmp, from batman's own file, on first use of one of its names
    assert ours["hasfunction_file"] == plain["hasfunction_file"]
    assert ours["hasfunction_file"].endswith(os.path.join("batman", "openmp.py"))
    assert ours["distutils_after"] is True
    assert ours["tests_detect_same"] and plain["tests_detect_same"]
