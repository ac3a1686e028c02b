"""A run must not depend on the process it runs in (issue 14, session 7).

Session 6 found a stream == batch mismatch (<= 6e-11 relative in the white light) when
``nirbeam run`` ran in the pytest process after tests/test_runners.py. The mechanism: a
dask ``LocalCluster`` with worker processes runs its nannies in the calling process,
and a nanny sets ``distributed.nanny.pre-spawn-environ`` (OMP_NUM_THREADS,
MKL_NUM_THREADS, OPENBLAS_NUM_THREADS = 1) in that process's ``os.environ``; every
process started from it afterwards (``nirbeam stream``, ``nirbeam run`` in a subprocess,
Beam workers) has a one-thread BLAS, while the process itself keeps the threads its BLAS
started with. OpenBLAS's rounding changes with its thread count (gemm, gemv, LAPACK), and
the draft's light-model offset fit (:func:`nirbeam.transforms.flicker_light.
common_offset`, then ``np.linalg.lstsq``) was the one BLAS-threaded computation a run's
products depended on: another scene light, other rateints, other everything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import own_resource_tracker

REPO = Path(__file__).resolve().parents[1]
_BLAS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

_PROBE = r"""
import hashlib, json
import numpy as np
from nirbeam.transforms.flicker_light import common_offset
rng = np.random.default_rng(5)
ny, nx = 32, 512
y = np.arange(ny)[:, None]
x = np.linspace(0.5, 1.5, nx)[None, :]
rate = (rng.normal(0.0, 1.0, (ny, nx)) + 1000.0 * np.exp(-0.5 * ((y - 16) / 1.5) ** 2) * x
        + 20.0 * np.exp(-np.abs(y - 16) / 4.0) * x + 0.7)
mask = np.broadcast_to(np.abs(y - 16) >= 4, (ny, nx)).copy()
c, se = common_offset(rate, mask)
a = rng.normal(size=(3000, 129))
b = rng.normal(size=3000)
ctrl = hashlib.sha1(np.linalg.lstsq(a, b, rcond=None)[0].tobytes()).hexdigest()
print(json.dumps({"c": c.hex(), "se": se.hex(), "control": ctrl}))
"""


def _probe(threads: int) -> dict:
    env = {**os.environ, **{k: str(threads) for k in _BLAS_ENV},
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env,
                       check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_common_offset_does_not_depend_on_the_blas_thread_count():
    """The light model's offset fit gives the same bits with 1 and 2 BLAS threads (with
    np.linalg.lstsq it did not: c differed in its last ~10 bits). The control, an
    np.linalg.lstsq of the same size, shows that the BLAS here rounds differently with
    the thread count (else the test cannot tell, and is skipped)."""
    one, two = _probe(1), _probe(2)
    if one["control"] == two["control"]:
        pytest.skip("this BLAS rounds the same with 1 and 2 threads (one core?)")
    assert float.fromhex(one["c"]) != 0.0 and np.isfinite(float.fromhex(one["se"]))
    assert (one["c"], one["se"]) == (two["c"], two["se"])


def test_common_offset_equals_the_dense_least_squares():
    """The row-block elimination is the dense fit's least squares (the one session 6
    made with np.linalg.lstsq, clipping included): c and its standard error agree to
    1e-9 of the standard error on a trace with wings, a common offset, noise, hot pixels
    and a NaN patch."""
    from nirbeam.transforms.flicker_light import common_offset

    rng = np.random.default_rng(3)
    ny, nx, deg = 32, 512, 3
    y = np.arange(ny)[:, None]
    x = np.linspace(0.3, 1.7, nx)[None, :] * (1 + 0.3 * np.sin(np.arange(nx) / 40.0))[None, :]
    rate = (2000.0 * np.exp(-0.5 * ((y - 17) / 1.3) ** 2) * x
            + 30.0 * np.exp(-np.abs(y - 17) / 4.0) * x * (1 + 0.1 * y / ny)
            + 0.4 + rng.normal(0.0, 0.5, (ny, nx)))
    rate[rng.random((ny, nx)) < 0.002] += 100.0
    rate[3, 10:20] = np.nan
    mask = np.broadcast_to(np.abs(y - 17) >= 5, (ny, nx)).copy()
    # the dense fit, as session 6 wrote it (the oracle)
    ok = np.isfinite(rate)
    flux = np.maximum(np.where(~mask & ok, rate, 0.0).sum(axis=0), 0.0)
    use = mask & ok & (flux[None, :] > 0)
    basis = np.polynomial.legendre.legvander(np.linspace(-1.0, 1.0, nx), deg)
    yy, xx = np.nonzero(use)
    f = flux / np.median(flux[flux > 0])
    a = np.zeros((yy.size, 1 + ny * (deg + 1)))
    a[:, 0] = 1.0
    cols = 1 + yy[:, None] * (deg + 1) + np.arange(deg + 1)[None, :]
    np.put_along_axis(a, cols, f[xx, None] * basis[xx], axis=1)
    a = a[:, np.abs(a).sum(axis=0) > 0]
    b = rate[yy, xx]
    keep = np.ones(b.size, bool)
    for _ in range(3):
        coef = np.linalg.lstsq(a[keep], b[keep], rcond=None)[0]
        res = b - a @ coef
        sig = 1.4826 * np.median(np.abs(res[keep] - np.median(res[keep])))
        keep = np.abs(res) <= 4.0 * sig
    s2 = np.sum(res[keep] ** 2) / (keep.sum() - a.shape[1])
    se_ref = np.sqrt(np.linalg.inv(a[keep].T @ a[keep])[0, 0] * s2)
    c, se = common_offset(rate, mask, deg)
    assert abs(coef[0] - 0.4) < 5 * se_ref  # the fit finds the injected offset
    assert abs(c - coef[0]) < 1e-9 * se_ref
    assert abs(se - se_ref) < 1e-9 * se_ref


NINTS = 24  # tests/test_streaming.py's exposure: its draft's offset fit is taken off (se < 0.5)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from nirbeam.sim.simulator import simulate

    d = tmp_path_factory.mktemp("sim")
    res = simulate(d, preset="prism-sub512", nints=NINTS, seed=11, ints_per_segment=8,
                   trace_jitter_px=0.0, trace_drift_px=0.0)
    wmap = str(res.wavelength_maps["NRS1"])
    (d / "fast.toml").write_text("[products]\nfit = false\nplots = false\n"
                                 f'[extract]\nwavelength_map = "{wmap}"\n')
    return res


def test_run_after_a_dask_cluster_equals_a_fresh_process_run(sim, tmp_path, no_leaked_children):
    """After a dask LocalCluster (what tests/test_runners.py and ``--runner dask:N``
    start) this process's environment says one BLAS thread: ``nirbeam run`` in this
    process (its BLAS keeps its threads) and in a fresh process started from it (one
    thread) give the same products, bit for bit (bench/compare_products.py)."""
    distributed = pytest.importorskip("distributed")
    saved = {k: os.environ.get(k) for k in _BLAS_ENV}
    try:
        with own_resource_tracker(), distributed.LocalCluster(
                n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None):
            pass  # the tracker its nanny's spawn started stopped too: no child left
        leaked = {k: os.environ.get(k) for k in _BLAS_ENV}
        args = ["run", *map(str, sim.uncal), "--refs", str(sim.refs_dir), "--config",
                str(sim.outdir / "fast.toml"), "--no-progress"]
        from nirbeam.stream.cli import main

        assert main([*args, "--out", str(tmp_path / "here")]) == 0
        r = subprocess.run([sys.executable, "-m", "nirbeam.stream.cli", *args, "--out",
                            str(tmp_path / "fresh")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    c = subprocess.run([sys.executable, str(REPO / "bench" / "compare_products.py"),
                        str(tmp_path / "here"), str(tmp_path / "fresh")],
                       capture_output=True, text=True)
    assert c.returncode == 0, (leaked, c.stdout[-3000:])
    assert "identical" in c.stdout
