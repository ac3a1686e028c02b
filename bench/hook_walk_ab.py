"""Benchmark: the fused group hook's walk fraction per integration, old vs new, A/B.

In one process on captured real PRISM integrations (bench/detector1_kernels.py
--capture): ``run_detector1`` over them with the hook's walk by ``with_walk`` every call
(old, session 12) and by :class:`~nirbeam.transforms.flicker_params.MaskWalk` (new),
alternating, CPU (process_time) min over repeats; the outputs of both are hashed and
must agree.

    python bench/hook_walk_ab.py --data /tmp/kernels/cap.pkl [--repeat 7]
        [--out bench/results/hook_walk_s13.json]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)


def main(argv=None):
    from nirbeam.transforms import detector1 as d1
    from nirbeam.transforms import flicker_params as fp
    from nirbeam.transforms.flicker import make_group_hook

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/tmp/kernels/cap.pkl")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "hook_walk_s13.json"))
    args = ap.parse_args(argv)
    start = provenance(argv)
    with open(args.data, "rb") as fh:
        cap = pickle.load(fh)
    hook = make_group_hook(cap[0]["fparams"], cap[0]["mask"])
    hook.light = cap[0]["light"]
    new = hook._walk
    acc = {"t": 0.0}

    def timed(walk):
        def w(var_kind, p):
            t = time.process_time()
            r = walk(var_kind, p)
            acc["t"] += time.process_time() - t
            return r
        return w

    walks = {"old": timed(lambda vk, p: fp.with_walk(vk, p, hook.mask, hook.params)),
             "new": timed(new)}

    def once(name):
        hook._walk = walks[name]
        acc["t"] = 0.0
        h = hashlib.sha256()
        t = time.process_time()
        for c in cap:
            r = d1.run_detector1(c["ramp"], c["refs"], c["timing"], c["params"],
                                 c["geometry"], hook)
            for a in (r.rate, r.err, r.dq, r.var_poisson, r.var_rnoise):
                h.update(np.ascontiguousarray(a).tobytes())
        return time.process_time() - t, acc["t"], h.hexdigest()[:16]

    once("old")  # warm-up
    best, digests = {}, {}
    for _ in range(args.repeat):
        for name in ("old", "new"):
            tot, walk, dig = once(name)
            b = best.setdefault(name, [1e9, 1e9])
            b[0], b[1] = min(b[0], tot), min(b[1], walk)
            digests[name] = dig
    n = len(cap)
    res = {"what": "fused group hook's walk fraction per integration: with_walk every call "
                   "(old) vs MaskWalk (new), in one process alternating, CPU min over repeats",
           "data": args.data, "nints": n, "repeat": args.repeat,
           "walk_ms_per_integration": {k: round(v[1] / n * 1e3, 4) for k, v in best.items()},
           "run_detector1_ms_per_integration": {k: round(v[0] / n * 1e3, 3)
                                                for k, v in best.items()},
           "walk_speedup_old_over_new": round(best["old"][1] / best["new"][1], 2),
           "outputs_identical": digests["old"] == digests["new"],
           "load_avg": os.getloadavg()[0]}
    print(res)
    write_result(args.out, res, argv, start=start)
    return 0 if res["outputs_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
