"""Benchmark: ``nirbeam warmup`` on this machine, then the first ``nirbeam run`` after it.

Against a new, empty ``NUMBA_CACHE_DIR``: ``nirbeam warmup`` (the console command, in a
fresh process; ``--jobs`` processes), then the same ``nirbeam run`` as
``bench/cold_compile.py``'s children (recording numba's compile events: after a complete
warm-up it compiles nothing). Compare with the cold run of ``cold_compile.py`` (a run
against an empty cache, which compiles inside the run).

    python bench/warmup_cost.py SIM_DIR [--jobs 2] [--work DIR] [--out bench/results/warmup_cost.json]
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
from cold_compile import child  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sim")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "warmup_cost.json"))
    args = ap.parse_args()
    start = provenance()
    work = args.work or tempfile.mkdtemp(prefix="nirbeam-warmup-")
    cache = os.path.join(work, "numba-cache")
    shutil.rmtree(cache, ignore_errors=True)
    res: dict = {"benchmark": "warmup_cost", "sim": args.sim, "jobs": args.jobs,
                 "load_start": list(os.getloadavg())}
    env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": REPO}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "nirbeam.stream.cli", "warmup", "--jobs",
                          str(args.jobs)], env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res["warmup"] = {"wall_s": round(wall, 2),
                     "cpu_s": round(after.ru_utime - before.ru_utime + after.ru_stime
                                    - before.ru_stime, 2), "stdout": out.stdout.strip()}
    print("warmup", res["warmup"], flush=True)
    run_out = os.path.join(work, "run")
    shutil.rmtree(run_out, ignore_errors=True)
    first = child(args.sim, run_out, os.path.join(work, "run.json"), cache)
    res["first_run_after_warmup"] = {k: first[k] for k in ("wall_s", "cpu_s", "timings_s",
                                                          "n_kernels_compiled", "compiled")}
    print("first run", first["wall_s"], "s wall", first["cpu_s"], "CPU-s",
          first["n_kernels_compiled"], "kernels compiled", flush=True)
    res["warmup_plus_first_run_cpu_s"] = round(res["warmup"]["cpu_s"] + first["cpu_s"], 2)
    res["load_end"] = list(os.getloadavg())
    write_result(args.out, res, sys.argv[1:], start=start)
    print(json.dumps({k: res[k] for k in ("warmup", "warmup_plus_first_run_cpu_s")}))


if __name__ == "__main__":
    main()
