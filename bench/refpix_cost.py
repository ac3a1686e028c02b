"""Benchmark: ``refpix.refpix_means_at`` per call, the previous code vs the current one.

The previous code is the verbatim oracle kept in ``tests/test_refpix_identity.py``
(``old_refpix_means_at``, git 4377bcb); both run in this process on the same arrays,
interleaved (old, new, old, new ...), and every call's result is checked bit for bit.
Inputs: uint16 raw ramps as the detector1 setup passes them (a float32 bias of
~10^4 DN, read noise 8 DN, a per-group common drift, 1 % outliers of 50-5000 DN,
0.5 % DO_NOT_USE pixels), reference pixels ``np.nonzero(reference_mask(...))``:

- ``bench_g395h_20``: 20 x 32 x 2048, SUBSTRT2 = 1 (4 reference rows + 8 columns: 8,416
  pixels; the geometry of bench/detector1_vs_stcal.py's G395H case);
- ``g395h_nrs1_20``: 20 x 32 x 2048 at SUBSTRT2 = 963 (real NRS1 G395H: 256 pixels);
- ``prism_sub512_8_detrend``: 8 x 32 x 512 SUB512 pseudo-reference pixels, detrended.

Reported per case: median and minimum ms per call over ``--repeat`` interleaved pairs,
and the load average before and after.

    python bench/refpix_cost.py [--repeat 200] [--out bench/results/refpix_cost.json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)
from test_refpix_identity import old_refpix_means_at  # noqa: E402  (the oracle)

from nirbeam import dqflags  # noqa: E402
from nirbeam.transforms.refpix import (  # noqa: E402
    SubarrayGeometry,
    reference_mask,
    refpix_means_at,
    uses_pseudo_reference,
)

CASES = {
    "bench_g395h_20": (20, SubarrayGeometry(1, 2048, 1, 32, "SUB2048")),
    "g395h_nrs1_20": (20, SubarrayGeometry(1, 2048, 963, 32, "SUB2048")),
    "prism_sub512_8_detrend": (8, SubarrayGeometry(1045, 512, 1001, 32, "SUB512")),
}


def inputs(ng, geom, seed=14):
    rng = np.random.default_rng(seed)
    ny, nx = geom.subsize2, geom.subsize1
    bias = rng.uniform(9000, 12000, (ny, nx)).astype(np.float32)
    sig = rng.normal(0, 8.0, (ng, ny, nx)) + np.cumsum(rng.normal(0, 2, ng))[:, None, None]
    hit = rng.random(sig.shape) < 0.01
    sig[hit] += rng.choice([-1.0, 1.0], hit.sum()) * rng.uniform(50, 5e3, hit.sum())
    raw = np.clip(np.rint(bias + 100.0 * np.arange(ng)[:, None, None] / ng + sig), 0,
                  65535).astype(np.uint16)
    pdq = np.where(rng.random((ny, nx)) < 0.005, np.uint32(dqflags.DO_NOT_USE),
                   np.uint32(0)).astype(np.uint32)
    ys, xs = np.nonzero(reference_mask(geom, (ny, nx)))
    detrend = uses_pseudo_reference(geom, (ny, nx))
    return (raw, bias, pdq, ys, xs, geom.row_parity0, True, 3.0, detrend)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "refpix_cost.json"))
    a = ap.parse_args(argv)
    start = provenance(argv)
    load0 = os.getloadavg()
    res = {}
    for name, (ng, geom) in CASES.items():
        args = inputs(ng, geom)
        ref = old_refpix_means_at(*args)  # compile / warm both
        got = refpix_means_at(*args)
        assert np.array_equal(ref.view(np.uint32), got.view(np.uint32)), name
        t_old, t_new = [], []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            old_refpix_means_at(*args)
            t1 = time.perf_counter()
            out = refpix_means_at(*args)
            t2 = time.perf_counter()
            t_old.append(t1 - t0)
            t_new.append(t2 - t1)
        assert np.array_equal(ref.view(np.uint32), out.view(np.uint32)), name
        n_ref = int(args[3].size)
        res[name] = {
            "shape": [ng, geom.subsize2, geom.subsize1], "substrt2": geom.substrt2,
            "reference_pixels": n_ref, "detrend": bool(args[8]),
            "old_ms_median": 1e3 * float(np.median(t_old)),
            "new_ms_median": 1e3 * float(np.median(t_new)),
            "old_ms_min": 1e3 * float(np.min(t_old)), "new_ms_min": 1e3 * float(np.min(t_new)),
            "speedup_median": float(np.median(t_old) / np.median(t_new)),
            "bit_identical": True,
        }
        print(f"{name}: old {res[name]['old_ms_median']:.3f} ms -> new "
              f"{res[name]['new_ms_median']:.3f} ms (median of {a.repeat}; min "
              f"{res[name]['old_ms_min']:.3f} -> {res[name]['new_ms_min']:.3f}), "
              f"x{res[name]['speedup_median']:.2f}", flush=True)
    load1 = os.getloadavg()
    result = {"description": "refpix_means_at ms per call, previous (oracle in "
                             "tests/test_refpix_identity.py) vs current, same process, "
                             "interleaved, bit-identical",
              "repeat": a.repeat, "machine": "2 cores, shared",
              "load_average_before": list(load0), "load_average_after": list(load1),
              "cases": res}
    write_result(a.out, result, argv, start=start)
    print("wrote", a.out, "load", load0, "->", load1)


if __name__ == "__main__":
    main()
