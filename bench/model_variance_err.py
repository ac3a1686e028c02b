"""Benchmark (science): does ERR follow the rate scatter with the 1/f cleaning's model
variance, for ``group_reference='first'`` and ``'previous'`` (issue 13 cause 5)?

The end-to-end case of ``tests/test_flicker_readout.py`` (``_readout_cube``: 32 x 512,
16 mask rows, the simulator's 1/f in readout order, 8 DN; 14 DN CDS read noise; a 3 DN/s
source on rows >= 18; ``run_detector1`` with the group hook): for 5, 20 and 70 groups,
``(var(rate - truth) / mean ERR^2)`` over the source rows, divided by the same for the
ramps without 1/f and without cleaning (1 = ERR follows), and the rate variance over
that without 1/f. Cases: 'first' / 'previous', plain / wiener, and each with the old
model variance (no walk fraction: 'first' white per group, 'previous' a pure random
walk of the whole variance), the latter by replacing
``flicker_params.walk_fraction`` in this process.

    python bench/model_variance_err.py [--groups 5 20 70] [--out bench/results/model_variance_err_s8.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)
from test_flicker_readout import _readout_cube  # noqa: E402  (the test's cube)

import nirbeam.transforms.flicker_params as fp  # noqa: E402
from nirbeam.transforms.detector1 import RampTiming, run_detector1  # noqa: E402
from nirbeam.transforms.flicker import FlickerParams, make_group_hook  # noqa: E402
from nirbeam.transforms.reference import ReferenceArrays  # noqa: E402


def stats(params, amp, ng, seeds):
    v, e = [], []
    for seed in seeds:
        ramp, rate = _readout_cube(seed, ng=ng, amp=amp)
        _, ny, nx = ramp.shape
        refs = ReferenceArrays.flat(ny, nx, ng, bias=10000.0, readnoise=14.0, gain=1.0)
        mask = np.zeros(rate.shape, bool)
        mask[:16] = True
        hook = None if params is None else make_group_hook(params, mask)
        res = run_detector1(ramp, refs, RampTiming(ng, 1, 0, 1.0, 1.0), group_hook=hook)
        v.append((res.rate - rate)[18:])
        e.append(res.err[18:])
    return float(np.var(np.concatenate(v))), float(np.mean(np.concatenate(e) ** 2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, nargs="+", default=[5, 20, 70])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results",
                                                  "model_variance_err_s8.json"))
    a = ap.parse_args()
    argv = ["python", "bench/model_variance_err.py"] + sys.argv[1:]
    start = provenance(argv)
    load0 = os.getloadavg()
    cases = {"first": {}, "previous": {"group_reference": "previous"},
             "first_wiener": {"readout_filter": "wiener"},
             "previous_wiener": {"group_reference": "previous", "readout_filter": "wiener"}}
    new_walk = fp.walk_fraction
    res = {}
    for ng in a.groups:
        seeds = range(a.seeds)
        v0, e0 = stats(None, 0.0, ng, seeds)
        row = {"no_1f_var_over_err2": v0 / e0}
        for name, kw in cases.items():
            for label, walk in (("new", new_walk), ("old", lambda n, p: None)):
                fp.walk_fraction = walk
                try:
                    v, e = stats(FlickerParams(**kw), 8.0, ng, seeds)
                finally:
                    fp.walk_fraction = new_walk
                row[f"{name}_{label}"] = {"err_follows": (v / e) / (v0 / e0),
                                          "rate_var_over_no_1f": v / v0}
        res[str(ng)] = row
        print(ng, {k: (round(x["err_follows"], 4) if isinstance(x, dict) else x)
                   for k, x in row.items()}, flush=True)
    result = {"description": "var(rate - truth)/mean ERR^2 relative to the no-1/f ramps "
                             "('err_follows', 1 = ERR follows the scatter), and the rate "
                             "variance over the no-1/f one; new: walk fraction reported "
                             "by the hooks, old: none (session 7 formulas)",
              "seeds": a.seeds, "source_pixels_per_seed": 14 * 512,
              "load_average_before": list(load0), "load_average_after": list(os.getloadavg()),
              "groups": res}
    write_result(a.out, result, argv, start=start)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
