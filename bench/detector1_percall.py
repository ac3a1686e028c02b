"""Benchmark: detector1's per-integration Python around its numba kernels, A/B.

For the current tree and a baseline revision (``--baseline REV``, extracted with
``git archive``, its own numba cache), the whole ``nirbeam run`` on the same simulated
PRISM exposure runs in fresh processes, interleaved (base, current, base, current ...).
In each child, ``time.thread_time`` is summed (the calibration runs on the calling
thread, single-threaded numba; zarr's writer thread is not counted) over:

- ``calibrate_cpu_s``: :meth:`nirbeam.stream.rate_steps.Calibrate.owned` (detector1 of
  one record, hook included), over every integration;
- ``kernels_cpu_s``: the numba kernels it calls (``_fused_band`` through ``_run_bands``,
  ``_calibrate_cube``, ``hook_median_kernel``, saturation's ``first_saturated_group``,
  ``grow_min``, ``saturation_aux``, refpix's ``refpix_means_at``), each too;
- ``python_cpu_s`` = calibrate - kernels: the per-integration Python/numpy overhead;
- the Python functions this issue-14 item changed: ``with_walk``,
  ``add_model_variance``, ``_calib_setup`` (inclusive of their kernels).

Also ``timings_s.detector1`` of run.json (wall of the stage) and the child's CPU (user +
sys). The minimum over ``--repeat`` runs of each figure is reported. Products of the last
base and current run are compared with ``bench/compare_products.py`` (must be identical).
With ``--profile`` one more run per version under cProfile: cumulative seconds of a few
functions.

    python bench/detector1_percall.py --baseline 86bedb6 [--repeat 3]
        [--sim /work/prism/sim] [--data /tmp/nirbeam-percall]
        [--out bench/results/detector1_percall_s11.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)
from end_to_end import child, extract_rev, src_env  # noqa: E402  (the same runner)

CHILD = r"""
import cProfile, json, sys, threading, time
report_path, prof_path = sys.argv[1], sys.argv[2]
sys.argv = ["nirbeam"] + sys.argv[3:]
acc, lock = {}, threading.Lock()

def timed(fn, key):
    def w(*a, **k):
        t = time.thread_time()
        try:
            return fn(*a, **k)
        finally:
            with lock:
                acc[key] = acc.get(key, 0.0) + time.thread_time() - t
                acc[key + "#n"] = acc.get(key + "#n", 0) + 1
    w.__wrapped__ = fn
    return w

import importlib
def patch(mod, name, key):
    m = importlib.import_module(mod)
    if hasattr(m, name):
        setattr(m, name, timed(getattr(m, name), key))

from nirbeam.stream import cli  # noqa: E402
import nirbeam.stream.rate_steps as rs
rs.Calibrate.owned = timed(rs.Calibrate.owned, "calibrate")
for mod, name in [("nirbeam.transforms.detector1", "_fused_band"),
                  ("nirbeam.transforms.detector1", "_calibrate_cube"),
                  ("nirbeam.transforms.flicker_groups", "hook_median_kernel"),
                  ("nirbeam.transforms.saturation", "first_saturated_group"),
                  ("nirbeam.transforms.saturation", "grow_min"),
                  ("nirbeam.transforms.saturation", "saturation_aux"),
                  ("nirbeam.transforms.refpix", "refpix_means_at")]:
    patch(mod, name, "kernel:" + name)
for mod, name in [("nirbeam.transforms.flicker_groups", "with_walk"),
                  ("nirbeam.transforms.detector1", "add_model_variance"),
                  ("nirbeam.transforms.detector1", "_calib_setup"),
                  ("nirbeam.transforms.detector1", "_empty_result")]:
    patch(mod, name, "py:" + name)
prof = cProfile.Profile() if prof_path != "-" else None
if prof is not None:
    prof.enable()
rc = cli.main(sys.argv[1:])
if prof is not None:
    prof.disable()
    prof.dump_stats(prof_path)
with open(report_path, "w") as fh:
    json.dump({"rc": rc, "acc": acc}, fh)
"""

PROFILED = ("_fused_hooked", "_calib_setup", "add_model_variance", "with_walk",
            "walk_fraction", "clipped_mean_efficiency", "owned", "process")


def one_run(sim, out, src, report, prof="-"):
    shutil.rmtree(out, ignore_errors=True)
    env = src_env(src) if src else {**os.environ, "PYTHONPATH": REPO}
    if not src:
        env.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(out), "numba-current"))
    cmd = [sys.executable, "-c", CHILD, report, prof, "run", sim, "--refs",
           os.path.join(sim, "refs"), "--out", out, "--no-progress"]
    r = child(cmd, env=env, cwd=src or REPO)
    with open(report) as fh:
        acc = json.load(fh)["acc"]
    with open(os.path.join(out, "run.json")) as fh:
        rj = json.load(fh)
    kernels = sum(v for k, v in acc.items() if k.startswith("kernel:") and "#" not in k)
    return {"cpu_s": r["cpu_s"], "wall_s": r["wall_s"], "load_before": r["load_before"],
            "timings_s_detector1": rj["timings_s"]["detector1"],
            "calibrate_cpu_s": round(acc["calibrate"], 3),
            "kernels_cpu_s": round(kernels, 3),
            "python_cpu_s": round(acc["calibrate"] - kernels, 3),
            "n_integrations": acc.get("calibrate#n", 0),
            "functions_cpu_s": {k: round(v, 4) for k, v in acc.items() if "#" not in k
                                and k != "calibrate"}}


def profile_summary(path):
    import pstats

    st = pstats.Stats(path)
    out = {}
    for (file, _line, name), (_cc, nc, tt, ct, _callers) in st.stats.items():
        if name in PROFILED and ("nirbeam" in file):
            key = f"{os.path.basename(file)}:{name}"
            out[key] = {"ncalls": nc, "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3)}
    return dict(sorted(out.items()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sim", default="/work/prism/sim")
    ap.add_argument("--data", default="/tmp/nirbeam-percall")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results",
                                                  "detector1_percall_s11.json"))
    a = ap.parse_args(argv)
    start = provenance(sys.argv[1:] if argv is None else argv)
    os.makedirs(a.data, exist_ok=True)
    base_src = extract_rev(a.baseline)
    srcs = {"base": base_src, "current": None}
    for label, src in srcs.items():  # numba caches compiled before anything is timed
        one_run(a.sim, os.path.join(a.data, f"warm-{label}"), src,
                os.path.join(a.data, f"warm-{label}.json"))
    runs = {"base": [], "current": []}
    for i in range(a.repeat):
        for label, src in srcs.items():
            r = one_run(a.sim, os.path.join(a.data, f"out-{label}"), src,
                        os.path.join(a.data, f"rep-{label}.json"))
            print(label, i, {k: r[k] for k in ("cpu_s", "timings_s_detector1",
                                                "calibrate_cpu_s", "python_cpu_s")},
                  flush=True)
            runs[label].append(r)
    cmp = subprocess.run([sys.executable, os.path.join(HERE, "compare_products.py"),
                          os.path.join(a.data, "out-base"), os.path.join(a.data, "out-current")],
                         capture_output=True, text=True)
    best = {}
    for label, rs in runs.items():
        keys = ("cpu_s", "timings_s_detector1", "calibrate_cpu_s", "kernels_cpu_s",
                "python_cpu_s")
        b = {k: min(r[k] for r in rs) for k in keys}
        fkeys = rs[0]["functions_cpu_s"].keys()
        b["functions_cpu_s"] = {k: min(r["functions_cpu_s"].get(k, 0.0) for r in rs)
                                for k in fkeys}
        b["n_integrations"] = rs[0]["n_integrations"]
        best[label] = b
    ratio = {k: round(best["base"][k] / best["current"][k], 3)
             for k in ("cpu_s", "timings_s_detector1", "calibrate_cpu_s", "python_cpu_s")}
    n = best["current"]["n_integrations"] or 1
    per_int = {label: {"calibrate_ms": round(best[label]["calibrate_cpu_s"] / n * 1e3, 3),
                       "python_ms": round(best[label]["python_cpu_s"] / n * 1e3, 3)}
               for label in best}
    result = {"benchmark": "detector1 per-integration Python overhead, base vs current "
                           "(whole nirbeam run, interleaved fresh processes)",
              "units": "CPU seconds (thread_time of the calibrating thread; cpu_s: the "
                       "whole process, user + sys); minimum over repeats",
              "sim": a.sim, "baseline": a.baseline, "repeat": a.repeat,
              "best": best, "base_over_current": ratio, "per_integration": per_int,
              "products_identical": cmp.returncode == 0,
              "compare_products_tail": cmp.stdout.strip().splitlines()[-1:],
              "runs": runs}
    if a.profile:
        prof = {}
        for label, src in srcs.items():
            p = os.path.join(a.data, f"prof-{label}.out")
            one_run(a.sim, os.path.join(a.data, f"prof-{label}"), src,
                    os.path.join(a.data, f"prof-{label}.json"), prof=p)
            prof[label] = profile_summary(p)
        result["cprofile"] = prof
    write_result(a.out, result, start=start)
    print(json.dumps({"base_over_current": ratio, "per_integration": per_int,
                      "products_identical": result["products_identical"]}, indent=1))


if __name__ == "__main__":
    main()
