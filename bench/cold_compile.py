"""Benchmark: what a first run on a fresh install costs in numba compilation.

Every kernel is ``@njit(cache=True)``: compiled once per machine and source version, then
loaded from the cache. A fresh install (or a cleared cache) pays the compilation inside its
first ``nirbeam run``. This script runs the same ``nirbeam run`` twice in fresh
processes, each against the same new, empty ``NUMBA_CACHE_DIR``: the first run compiles
(cold), the second loads (warm). The cold child records numba's ``numba:compile`` events,
so the record also names the kernels whose compilation costs most (times are inclusive:
a kernel's time contains the compilation of the kernels it calls for the first time).

    python bench/cold_compile.py SIM_DIR [--work DIR] [--out bench/results/cold_compile.json]
    python bench/cold_compile.py SIM_DIR --opt default,0,1,2 [--reps 2] [--warm-reps 2]

SIM_DIR: a ``nirbeam simulate`` folder (``SIM_DIR/refs`` its references).

``--opt``: compare numba optimisation levels. For every repetition and every level in turn
(interleaved, so load drifts hit all levels alike) a cold run sets ``NUMBA_OPT`` to the level
(``default``: leaves it unset) against a fresh cache of its own, then ``--warm-reps`` warm runs
load that cache (what a warm run costs depends on the level only through the cached machine
code). The record keeps every CPU-s and the minimum per level, and whether each level's
products are bit-identical to the first level's (``bench/compare_products.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)

CHILD = r"""
import collections, json, sys, time
from numba.core import event as ev
from nirbeam.stream import cli
sim, out, record = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
with ev.install_recorder("numba:compile") as rec:
    try:
        cli.main(["run", sim, "--refs", sim + "/refs", "--out", out])
    except SystemExit as e:
        if e.code not in (0, None):
            raise
starts = {}
agg = collections.defaultdict(lambda: [0, 0.0])
for ts, e in rec.buffer:
    f = e.data["dispatcher"].py_func
    key = (f.__module__ + "." + f.__qualname__, str(e.data["args"]))
    if e.is_start:
        starts.setdefault(key, []).append(ts)
    else:
        agg[key[0]][0] += 1
        agg[key[0]][1] += ts - starts[key].pop()
rows = sorted(([n, c, round(t, 3)] for n, (c, t) in agg.items()), key=lambda r: -r[2])
json.dump({"wall_s": time.perf_counter() - t0, "compiled": rows}, open(record, "w"))
"""


def child(sim: str, out: str, record: str, cache: str, opt: str | None = None) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": REPO}
    env.pop("NUMBA_OPT", None)
    if opt is not None:
        env["NUMBA_OPT"] = opt
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD, sim, out, record], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rec = json.load(open(record))
    timings = json.load(open(os.path.join(out, "run.json"))).get("timings_s", {})
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "timings_s": timings,
            "n_kernels_compiled": len(rec["compiled"]), "compiled": rec["compiled"]}


def identical(a: str, b: str) -> bool:
    """bench/compare_products.py's verdict on two run folders."""
    r = subprocess.run([sys.executable, os.path.join(HERE, "compare_products.py"), a, b],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return r.returncode == 0


def opt_levels(args, start: dict, work: str) -> None:
    """Cold and warm CPU-s of the whole run under each NUMBA_OPT level (interleaved)."""
    levels = args.opt.split(",")
    res: dict = {"benchmark": "cold_compile_opt", "sim": args.sim, "reps": args.reps,
                 "warm_reps": args.warm_reps, "load_start": list(os.getloadavg()),
                 "levels": {lv: {"cold_cpu_s": [], "cold_wall_s": [], "warm_cpu_s": [],
                                 "warm_wall_s": []} for lv in levels}}
    for rep in range(args.reps):
        for lv in levels:
            cache = os.path.join(work, f"cache-{lv}-{rep}")
            shutil.rmtree(cache, ignore_errors=True)
            row = res["levels"][lv]
            out = os.path.join(work, f"cold-{lv}-{rep}")
            shutil.rmtree(out, ignore_errors=True)
            c = child(args.sim, out, os.path.join(work, f"cold-{lv}.json"), cache,
                      None if lv == "default" else lv)
            row["cold_cpu_s"].append(c["cpu_s"])
            row["cold_wall_s"].append(c["wall_s"])
            if rep == 0:
                row["n_kernels_compiled"] = c["n_kernels_compiled"]
                row["top_kernels_inclusive_s"] = c["compiled"][:8]
            print(lv, rep, "cold", c["wall_s"], "s wall", c["cpu_s"], "CPU-s", flush=True)
            for w in range(args.warm_reps):
                wout = os.path.join(work, f"warm-{lv}-{rep}-{w}")
                shutil.rmtree(wout, ignore_errors=True)
                r = child(args.sim, wout, os.path.join(work, f"warm-{lv}.json"), cache)
                assert r["n_kernels_compiled"] == 0, (lv, r["compiled"][:3])
                row["warm_cpu_s"].append(r["cpu_s"])
                row["warm_wall_s"].append(r["wall_s"])
                print(lv, rep, "warm", r["wall_s"], "s wall", r["cpu_s"], "CPU-s", flush=True)
                shutil.rmtree(wout, ignore_errors=True)
            if rep:
                shutil.rmtree(out, ignore_errors=True)
            summarise(res, levels, work)
            write_result(args.out, res, sys.argv[1:], start=start)  # partial results survive
    print(json.dumps({lv: {k: v for k, v in row.items() if not isinstance(v, list)}
                      for lv, row in res["levels"].items()}, indent=1))


def summarise(res: dict, levels: list[str], work: str) -> None:
    """Minimum per level, compile CPU-s, ratios to the first level, products identity."""
    levels = [lv for lv in levels if res["levels"][lv]["warm_cpu_s"]]
    ref = os.path.join(work, f"cold-{levels[0]}-0")
    for lv in levels:
        row = res["levels"][lv]
        row["cold_cpu_min_s"] = min(row["cold_cpu_s"])
        row["warm_cpu_min_s"] = min(row["warm_cpu_s"])
        row["compile_cpu_s"] = round(row["cold_cpu_min_s"] - row["warm_cpu_min_s"], 2)
        key = "products_identical_to_" + levels[0]
        if lv != levels[0] and key not in row:
            row[key] = identical(ref, os.path.join(work, f"cold-{lv}-0"))
    base = res["levels"][levels[0]]
    for lv in levels:
        row = res["levels"][lv]
        row["compile_over_" + levels[0]] = round(row["compile_cpu_s"] / base["compile_cpu_s"], 3)
        row["warm_over_" + levels[0]] = round(row["warm_cpu_min_s"] / base["warm_cpu_min_s"], 3)
    res["load_end"] = list(os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sim")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "cold_compile.json"))
    ap.add_argument("--opt", default=None,
                    help="comma-separated NUMBA_OPT levels to compare, e.g. default,0,1,2")
    ap.add_argument("--reps", type=int, default=1, help="cold runs per level (--opt)")
    ap.add_argument("--warm-reps", type=int, default=1, help="warm runs per cold run (--opt)")
    args = ap.parse_args()
    start = provenance()
    work = args.work or tempfile.mkdtemp(prefix="nirbeam-cold-")
    if args.opt:
        opt_levels(args, start, work)
        return
    cache = os.path.join(work, "numba-cache")
    shutil.rmtree(cache, ignore_errors=True)
    res: dict = {"benchmark": "cold_compile", "sim": args.sim, "load_start": list(os.getloadavg())}
    for name in ("cold", "warm"):
        out = os.path.join(work, name)
        shutil.rmtree(out, ignore_errors=True)
        res[name] = child(args.sim, out, os.path.join(work, f"{name}.json"), cache)
        print(name, res[name]["wall_s"], "s wall", res[name]["cpu_s"], "CPU-s",
              res[name]["n_kernels_compiled"], "kernels compiled", flush=True)
    res["warm"].pop("compiled")
    res["compile_cpu_s"] = round(res["cold"]["cpu_s"] - res["warm"]["cpu_s"], 2)
    res["cold_over_warm_cpu"] = round(res["cold"]["cpu_s"] / res["warm"]["cpu_s"], 2)
    res["top_kernels_inclusive_s"] = res["cold"]["compiled"][:15]
    res["load_end"] = list(os.getloadavg())
    write_result(args.out, res, sys.argv[1:], start=start)
    print(json.dumps({k: res[k] for k in ("compile_cpu_s", "cold_over_warm_cpu")}))


if __name__ == "__main__":
    main()
