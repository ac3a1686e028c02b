"""Benchmark: detector1's numba kernels alone on real PRISM integrations, A/B.

Step 1 (``--capture``, once): the whole ``nirbeam run`` of ``--sim`` in a fresh process
with ``detector1._fused_hooked`` wrapped to pickle the inputs of its first ``--nints``
calls (raw ramp, references, timing, parameters, geometry, and the group hook's
FlickerParams, scene mask and static light) into ``--data``.

Step 2: for the current tree and a baseline revision (``--baseline REV``, extracted with
``git archive``, its own numba cache), fresh processes interleaved (base, current, ...,
``--repeat`` each). Each child rebuilds the hook, runs ``run_detector1`` on the captured
integrations once (warm-up: numba cache loads), then ``--inner`` more times with the
kernels wrapped by ``time.process_time`` (``_fused_band``, ``_calibrate_cube``,
``hook_median_kernel``; and the whole ``run_detector1``), and times ``jump.screen_row``
alone: a numba driver over contiguous per-row copies of the hooked cubes (the rows
``_fused_band`` screens), no Python dispatch. The minimum over the inner and outer
repeats is reported per kernel, as ms per integration and M pixel-groups per CPU-s.
Every child also hashes the outputs of ``run_detector1`` (rate, err, dq, var_poisson,
var_rnoise of every integration, and n_jumps): the two versions must agree.

    python bench/detector1_kernels.py --capture --data /tmp/nirbeam-d1k/cap.pkl
    python bench/detector1_kernels.py --baseline f44f42b --data /tmp/nirbeam-d1k/cap.pkl
        [--repeat 3] [--inner 5] [--out bench/results/detector1_kernels_s12.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)
from end_to_end import extract_rev, src_env  # noqa: E402  (the same tree extraction)

CAPTURE = r"""
import os, pickle, sys
import numpy as np
from nirbeam.transforms import detector1 as d1
path, n, sim, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
cap = []
orig = d1._fused_hooked
def patched(ramp, refs, timing, params, geometry, hook, parallel):
    if len(cap) < n:
        cap.append(dict(ramp=np.array(ramp), timing=timing, params=params, geometry=geometry,
                        fparams=hook.params, mask=hook.mask, light=hook.light, refs=refs))
        if len(cap) == n:
            with open(path, "wb") as fh:
                pickle.dump(cap, fh)
    return orig(ramp, refs, timing, params, geometry, hook, parallel)
d1._fused_hooked = patched
from nirbeam.stream import cli
sys.exit(cli.main(["run", sim, "--refs", os.path.join(sim, "refs"), "--out", out,
                   "--workers", "1", "--overwrite", "-q"]))
"""

CHILD = r"""
import hashlib, json, pickle, sys, time
import numpy as np
from numba import njit
from nirbeam.transforms import detector1 as d1
from nirbeam.transforms import flicker_groups as fg
from nirbeam.transforms import jump as J
from nirbeam.transforms.flicker import make_group_hook
data, inner = sys.argv[1], int(sys.argv[2])
cap = pickle.load(open(data, "rb"))
c0 = cap[0]
hook = make_group_hook(c0["fparams"], c0["mask"])
hook.light = c0["light"]
acc = {}
rows = []
def wrap(name, fn, keep=False):
    def w(*a):
        if keep:
            rows.append((np.array(a[4]), np.array(a[5]), a[32], a[31], a[33], a[35], a[34]))
        t = time.process_time()
        r = fn(*a)
        acc[name] = acc.get(name, 0.0) + time.process_time() - t
        return r
    return w
for name in ("_fused_band", "_calibrate_cube"):
    setattr(d1, name, wrap(name, getattr(d1, name), name == "_fused_band"))
fg.hook_median_kernel = wrap("hook_median_kernel", fg.hook_median_kernel)

def once():
    acc.clear()
    h = hashlib.sha256()
    t = time.process_time()
    for c in cap:
        r = d1.run_detector1(c["ramp"], c["refs"], c["timing"], c["params"], c["geometry"],
                             hook)
        for a in (r.rate, r.err, r.dq, r.var_poisson, r.var_rnoise):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(str(r.n_jumps).encode())
    acc["run_detector1"] = time.process_time() - t
    return dict(acc), h.hexdigest()[:16]

_, digest = once()  # warm-up (numba cache loads); keeps the hooked rows
G = np.stack([r[0] for r in rows]); Q = np.stack([r[1] for r in rows])
ni, ng, ny, nx = G.shape
GR = np.ascontiguousarray(G.transpose(0, 2, 1, 3).reshape(ni * ny, ng, nx))
QR = np.ascontiguousarray(Q.transpose(0, 2, 1, 3).reshape(ni * ny, ng, nx))
gain = np.ascontiguousarray(np.tile(rows[0][2], (ni, 1)))
rn = np.ascontiguousarray(np.tile(rows[0][3], (ni, 1)))
nframes, rej, single = rows[0][4], rows[0][5], rows[0][6]

@njit
def drive(GR, QR, gain, rn, nframes, rej, single, OK, KLO, KHI):
    nr, ng, nx = GR.shape
    nd = ng - 1
    A = np.empty((nd, nx)); K = np.empty((nd, nx), np.float32)
    R = np.empty((nd, nx), np.int32); W = np.empty((5, nx)); IW = np.empty((3, nx), np.int32)
    for r in range(nr):
        J.screen_row(GR[r], QR[r], gain[r], rn[r], nframes, rej, A, K, R, W, IW, OK[r],
                     KLO[r], KHI[r], single)

OK = np.zeros((ni * ny, nx), np.bool_)
KLO = np.zeros((ni * ny, nx), np.int64)
KHI = np.zeros((ni * ny, nx), np.int64)
drive(GR, QR, gain, rn, nframes, rej, single, OK, KLO, KHI)
best = {}
for _ in range(inner):
    a, d = once()
    assert d == digest
    t = time.process_time()
    drive(GR, QR, gain, rn, nframes, rej, single, OK, KLO, KHI)
    a["screen_row"] = time.process_time() - t
    for k, v in a.items():
        best[k] = min(best.get(k, 1e9), v)
sh = hashlib.sha256(OK.tobytes() + KLO.tobytes() + KHI.tobytes()).hexdigest()[:16]
print("RESULT " + json.dumps(dict(best=best, nints=len(cap), shape=[ng, ny, nx],
                                  outputs_sha256_16=digest, screen_sha256_16=sh,
                                  ok_fraction=float(OK.mean()))))
"""


def capture(args):
    os.makedirs(os.path.dirname(os.path.abspath(args.data)), exist_ok=True)
    out = os.path.join(os.path.dirname(os.path.abspath(args.data)), "capture_run")
    subprocess.run([sys.executable, "-c", CAPTURE, args.data, str(args.nints), args.sim, out],
                   env=src_env(None, {"PYTHONPATH": REPO}), cwd=REPO, check=True)
    print("captured", args.nints, "integrations into", args.data)


def one(src, args):
    env = src_env(src) if src else src_env(None, {"PYTHONPATH": REPO})
    p = subprocess.run([sys.executable, "-c", CHILD, args.data, str(args.inner)], env=env,
                       cwd=src or REPO, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stdout[-3000:] + p.stderr[-3000:])
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def summarise(runs):
    best = {}
    for r in runs:
        for k, v in r["best"].items():
            best[k] = min(best.get(k, 1e9), v)
    r0 = runs[0]
    n = r0["nints"]
    ng, ny, nx = r0["shape"]
    pg = n * ng * ny * nx
    return {k: {"ms_per_integration": round(v / n * 1e3, 4),
                "M_pixel_groups_per_cpu_s": round(pg / v / 1e6, 1)} for k, v in best.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", action="store_true")
    ap.add_argument("--sim", default="/work/prism/sim")
    ap.add_argument("--nints", type=int, default=40)
    ap.add_argument("--data", default="/tmp/nirbeam-d1k/cap.pkl")
    ap.add_argument("--baseline", default="f44f42b")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--inner", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "detector1_kernels_s12.json"))
    args = ap.parse_args(argv)
    if args.capture:
        capture(args)
        return 0
    start = provenance(argv)
    base_src = extract_rev(args.baseline)
    runs = {"base": [], "current": []}
    for _ in range(args.repeat):
        runs["base"].append(one(base_src, args))
        runs["current"].append(one(None, args))
    s = {k: summarise(v) for k, v in runs.items()}
    ratio = {k: round(s["base"][k]["ms_per_integration"] / s["current"][k]["ms_per_integration"], 3)
             for k in s["current"]}
    b, c = runs["base"][0], runs["current"][0]
    res = {
        "what": "detector1 numba kernels alone on captured real PRISM integrations (hooked "
                "default path), CPU (process_time) per integration, min over repeats",
        "baseline": args.baseline,
        "data": args.data, "nints": c["nints"], "shape_ngroups_ny_nx": c["shape"],
        "repeat": args.repeat, "inner": args.inner,
        "base": s["base"], "current": s["current"], "speedup_base_over_current": ratio,
        "outputs_identical": b["outputs_sha256_16"] == c["outputs_sha256_16"],
        "screen_row_outputs_identical": b["screen_sha256_16"] == c["screen_sha256_16"],
        "screen_ok_fraction": c["ok_fraction"],
        "load_avg": os.getloadavg()[0],
    }
    print(json.dumps(res, indent=2))
    write_result(args.out, res, argv, start=start)
    return 0 if res["outputs_identical"] and res["screen_row_outputs_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
