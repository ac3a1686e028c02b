"""Benchmark: what a first run on a fresh install costs in numba compilation.

Every kernel is ``@njit(cache=True)``: compiled once per machine and source version, then
loaded from the cache. A fresh install (or a cleared cache) pays the compilation inside its
first ``nirbeam run``. This script runs the same ``nirbeam run`` twice in fresh
processes, each against the same new, empty ``NUMBA_CACHE_DIR``: the first run compiles
(cold), the second loads (warm). The cold child records numba's ``numba:compile`` events,
so the record also names the kernels whose compilation costs most (times are inclusive:
a kernel's time contains the compilation of the kernels it calls for the first time).

    python bench/cold_compile.py SIM_DIR [--work DIR] [--out bench/results/cold_compile.json]

SIM_DIR: a ``nirbeam simulate`` folder (``SIM_DIR/refs`` its references).
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


def child(sim: str, out: str, record: str, cache: str) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": REPO}
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sim")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "cold_compile.json"))
    args = ap.parse_args()
    start = provenance()
    work = args.work or tempfile.mkdtemp(prefix="nirbeam-cold-")
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
