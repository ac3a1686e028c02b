"""Benchmark: the batch rolling-median kernel ``outliers._flag_rolling``, old vs new, A/B.

The old kernel is ``nirbeam/transforms/outliers.py`` at ``--baseline`` (``git show``, imported
as a module of its own from a temporary folder); the new one is the working tree's. Both run
in one process, alternating, on the same seeded PRISM-shaped stack (``--nints`` x 32 x 512
float32, ~1 % invalid pixels, or with ``--store`` a finished run's rateints sci/err/dq; window
25, ``store=True`` as the motion reference calls it);
CPU (``time.process_time``) min and median over repeats. Stored medians and DQ of both are
hashed and must agree bit for bit.

    python bench/rolling_ab.py [--baseline 554f279] [--nints 1200] [--repeat 5]
        [--store RUN/cubes.zarr --group jw01366004001_04101_00001_nrs1]
        [--out bench/results/rolling_ab_s14.json]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # this tree's nirbeam, not an installed one
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)


def _module_at(rev: str, folder: str):
    src = subprocess.run(["git", "-C", os.path.dirname(HERE), "show",
                          f"{rev}:nirbeam/transforms/outliers.py"],
                         check=True, capture_output=True, text=True).stdout
    path = os.path.join(folder, "outliers_base.py")
    with open(path, "w") as fh:
        fh.write(src)
    spec = importlib.util.spec_from_file_location("outliers_base", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def stack(nints: int, seed: int = 14):
    rng = np.random.default_rng(seed)
    cube = (100 + rng.normal(0, 3, (nints, 32, 512))).astype(np.float32)
    err = np.full(cube.shape, 3.0, np.float32)
    dq = np.zeros(cube.shape, np.uint32)
    dq[rng.random(cube.shape) < 0.01] = 1
    cube[rng.random(cube.shape) < 0.001] = np.nan
    return cube, err, dq


def main(argv=None):
    from nirbeam.transforms import outliers as new

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="554f279")
    ap.add_argument("--nints", type=int, default=1200)
    ap.add_argument("--window", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--store", help="a run's cubes.zarr: its rateints instead of seeded data")
    ap.add_argument("--group", default="jw01366004001_04101_00001_nrs1")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "rolling_ab_s14.json"))
    args = ap.parse_args(argv)
    start = provenance(argv)
    if args.store:
        from nirbeam.sinks import zarr_store

        cube, err, dq = (np.ascontiguousarray(zarr_store.read_stack(
            args.store, args.group, "rateints", k, slice(0, args.nints)))
            for k in ("sci", "err", "dq"))
        dq = dq.astype(np.uint32)
    else:
        cube, err, dq = stack(args.nints)
    valid = new._valid(cube, dq, 1)
    with tempfile.TemporaryDirectory() as tmp:
        mods = {"old": _module_at(args.baseline, tmp), "new": new}

        def once(name):
            med = np.empty(cube.shape, np.float64)
            t = time.process_time()
            out = mods[name]._flag_rolling(cube, err, valid, dq, args.window, 5.0,
                                           np.uint32(new.OUTLIER_BITS), True, med, 0, -1)
            dt = time.process_time() - t
            h = hashlib.sha256(med.tobytes())
            h.update(out.tobytes())
            return dt, h.hexdigest()[:16]

        for name in mods:  # compile / load
            once(name)
        times, digests = {"old": [], "new": []}, {}
        for _ in range(args.repeat):
            for name in ("old", "new"):
                dt, digests[name] = once(name)
                times[name].append(dt)
    data = f"{args.store}'s rateints" if args.store else "a seeded stack"
    res = {"what": f"outliers._flag_rolling (store=True, window {args.window}) on {data}, "
                   f"{cube.shape}, old (--baseline) vs new (working tree) alternating in one "
                   "process, CPU s per call",
           "baseline": args.baseline, "repeat": args.repeat,
           "cpu_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
           "min_s": {k: round(min(v), 4) for k, v in times.items()},
           "median_s": {k: round(statistics.median(v), 4) for k, v in times.items()},
           "speedup_min": round(min(times["old"]) / min(times["new"]), 2),
           "outputs_identical": digests["old"] == digests["new"],
           "load_avg": os.getloadavg()}
    print(res)
    write_result(args.out, res, argv, start=start)
    return 0 if res["outputs_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
