"""``nirbeam warmup``: the list of specialisations covers what a default run asks for.

The fast test runs a small default PRISM exposure in a fresh process and records every
kernel specialisation Python asks numba for (:func:`nirbeam.stream.warmup.top_level_calls`,
whether the cache has it or not): each must be in ``warmup_signatures.SIGNATURES``, or
the warm-up misses it and a fresh install's first run compiles it. The slow test does the
whole thing: a warm-up into an empty ``NUMBA_CACHE_DIR``, then a run against that cache
must compile nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nirbeam.stream import warmup
from nirbeam.stream.warmup_signatures import SIGNATURES

REPO = Path(__file__).resolve().parents[1]

RUN_CHILD = r"""
import json, sys
from numba.core import event as ev
from nirbeam.stream import cli, warmup
sim, out, rec = sys.argv[1:4]
with ev.install_recorder("numba:compile") as compiles, warmup.top_level_calls() as found:
    rc = cli.main(["run", sim, "--refs", sim + "/refs", "--out", out, "--no-progress"])
names = sorted({e.data["dispatcher"].py_func.__qualname__ for _, e in compiles.buffer})
json.dump({"rc": rc, "found": [list(k) for k in found], "compiled": names}, open(rec, "w"))
"""


@pytest.fixture(scope="module")
def small_sim(tmp_path_factory):
    from nirbeam.sim.simulator import simulate

    d = tmp_path_factory.mktemp("warmup")
    simulate(d / "sim", preset="prism-sub512", nints=4, seed=3)
    return d


def _run(sim_dir: Path, tmp: Path, env: dict) -> dict:
    rec = tmp / "rec.json"
    subprocess.run([sys.executable, "-c", RUN_CHILD, str(sim_dir / "sim"), str(tmp / "out"),
                    str(rec)], env={**os.environ, "PYTHONPATH": str(REPO), **env},
                   check=True, stdout=subprocess.DEVNULL, timeout=1200)
    return json.loads(rec.read_text())


def test_signatures_parse_and_plan():
    keys = {(m, f, t) for m, f, t, _ in SIGNATURES}
    assert len(keys) == len(SIGNATURES)
    for entry in SIGNATURES:
        assert warmup.format_types(warmup.parse_types(entry[2])) == entry[2]
    parts = warmup.plan(SIGNATURES, 2)
    assert sorted(e for p in parts for e in p) == sorted(SIGNATURES)
    for p in parts:  # one kernel's specialisations stay in one process (one index file)
        for q in parts:
            if p is not q:
                assert not {e[:2] for e in p} & {e[:2] for e in q}


def test_default_run_needs_only_listed_specialisations(small_sim, tmp_path):
    res = _run(small_sim, tmp_path, {})
    assert res["rc"] == 0
    listed = {(m, f, t) for m, f, t, _ in SIGNATURES}
    missing = [tuple(k) for k in res["found"] if tuple(k) not in listed]
    assert not missing, ("the warm-up misses these (nirbeam warmup --record SIM_DIR "
                         f"rewrites the list): {missing}")
    assert len(res["found"]) >= 15  # the recorder saw the run's kernels


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("NIRBEAM_TEST_WARMUP"),
                    reason="compiles every kernel into an empty cache (~2-4 min on 2 cores): "
                           "set NIRBEAM_TEST_WARMUP=1; the fast test above guards the list")
def test_warm_up_then_run_compiles_nothing(small_sim, tmp_path):
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "nirbeam.stream.cli", "warmup", "--jobs", "2"],
                         env={**os.environ, "PYTHONPATH": str(REPO), **env}, check=True,
                         capture_output=True, text=True, timeout=1200).stdout
    assert "compiled" in out
    res = _run(small_sim, tmp_path, env)
    assert res["rc"] == 0
    assert res["compiled"] == [], f"compiled after the warm-up: {res['compiled']}"
