"""Benchmark: the fixed per-process cost of ``nirbeam run`` (issue 14, session 9).

For the base tree (``--baseline REV``, extracted with ``git archive``) and the current
tree, alternately (base, current, base, current ...), in fresh processes on the same
simulated PRISM exposure(s):

- ``runs.<nints>.<tree>``: ``python -m nirbeam.stream.cli run`` (the command, as a user
  runs it): ``cpu_s`` (user + sys, ``wait4``), ``wall_s``, and from its run.json the
  driver's own ``run_wall_s`` / ``run_cpu_s`` (from the start of ``pipeline.run`` to the
  summary) and stage timings; ``outside_wall_s`` / ``outside_cpu_s`` = process minus
  driver: imports, mode classification, the report page and the process exit.
- ``imports.<tree>``: CPU and wall of a fresh process importing what a run imports before
  its first stage (``nirbeam.stream.cli``, ``nirbeam.modes``, ``nirbeam.stream.pipeline``),
  measured inside the child; ``cli_only`` the same for ``nirbeam.stream.cli`` alone;
  ``products_*`` then the products' table and plot modules (``nirbeam.sinks.tables``,
  ``nirbeam.sinks.plots``), after ``cli_support.skip_unused_table_io`` where the tree has
  it, as a run command imports them.
- ``summary.<nints>``: the minimum over runs of each figure per tree, and the
  difference base - current.
- ``products.<nints>``: ``bench/compare_products.py`` on the last pair (every array,
  ECSV column, x1dints column) and a byte comparison of every file of the two output
  folders (files that carry a time or a path are listed apart: run.json, nirbeam.log,
  report.html, zarr metadata; PNGs as images drawn by the same code).

Each tree keeps its own numba cache (``NUMBA_CACHE_DIR`` under ``--data``); one run of
each tree first compiles it (not timed). The machine may be shared: each run carries the
load average before and after.

    python bench/startup_cost.py [--baseline fba3ed2] [--nints 20,1200] [--repeat 3]
        [--sim DIR] [--data /tmp/nirbeam-startup] [--out bench/results/startup_cost_s9.json]

``--sim DIR`` runs an existing exposure (e.g. /work/prism/sim, refs in DIR/refs, DIR
itself read only) instead of simulating; its records are keyed ``sim``.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)
from end_to_end import child, extract_rev, load_average  # noqa: E402
from fixed_costs import compare  # noqa: E402

IMPORTS = r"""
import json, resource, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import nirbeam.stream.cli
t1, c1 = time.perf_counter(), time.process_time()
if sys.argv[1] == "run":
    import nirbeam.modes, nirbeam.stream.pipeline, nirbeam.stream.run_commands
t2, c2 = time.perf_counter(), time.process_time()
import nirbeam.stream.cli_support as cs  # the products' imports, as a run command makes them
getattr(cs, "skip_unused_table_io", lambda: None)()
import nirbeam.sinks.tables, nirbeam.sinks.plots
t3, c3 = time.perf_counter(), time.process_time()
print(json.dumps({"cli_only_cpu_s": round(c1 - c0, 3), "cli_only_wall_s": round(t1 - t0, 3),
                  "cpu_s": round(c2 - c0, 3), "wall_s": round(t2 - t0, 3),
                  "products_cpu_s": round(c3 - c2, 3), "products_wall_s": round(t3 - t2, 3),
                  "modules": len(sys.modules)}))
"""

#: files whose bytes carry a time, a path or a version of the run (compared apart)
VARYING = ("run.json", "nirbeam.log", "report.html", "zarr.json", ".zattrs", ".png",
           "index.json", "effective_config.toml")


def env_of(src: str, data: str, name: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = src
    env["NUMBA_CACHE_DIR"] = os.path.join(data, f"numba-{name}")
    return env


def simulate(data: str, nints: int) -> str:
    sim = os.path.join(data, f"sim{nints}")
    if not os.path.isfile(os.path.join(sim, "nirbeam.toml")):
        shutil.rmtree(sim, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "nirbeam.stream.cli", "simulate", sim, "--preset",
                        "prism-sub512", "--nints", str(nints), "--seed", "0"], check=True,
                       env=env_of(REPO, data, "current"), cwd=REPO, capture_output=True)
    return sim


def run_once(sim: str, out: str, src: str, env: dict) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cfg = os.path.join(sim, "nirbeam.toml")
    cmd = [sys.executable, "-m", "nirbeam.stream.cli", "run", sim, "--refs",
           os.path.join(sim, "refs"), "--out", out, "--no-progress",
           *(["--config", cfg] if os.path.isfile(cfg) else [])]
    r = child(cmd, env=env, cwd=src)
    r.pop("stdout_tail", None)
    with open(os.path.join(out, "run.json")) as fh:
        rj = json.load(fh)
    r["run_wall_s"] = rj["wall_s"]
    r["run_cpu_s"] = rj["cpu"]["cpu_s"]
    r["timings_s"] = rj["timings_s"]
    r["outside_wall_s"] = round(r["wall_s"] - r["run_wall_s"], 3)
    r["outside_cpu_s"] = round(r["cpu_s"] - r["run_cpu_s"], 3)
    r["exit_code"] = rj["exit_code"]
    return r


def imports_once(src: str, env: dict) -> dict:
    load0 = load_average()
    p = subprocess.run([sys.executable, "-c", IMPORTS, "run"], env=env, cwd=src,
                       capture_output=True, text=True, check=True)
    return {**json.loads(p.stdout.strip().splitlines()[-1]), "load_before": load0}


def byte_compare(a: str, b: str) -> dict:
    same, differ, varying, only = 0, [], [], []
    for root, _, files in os.walk(a):
        for f in files:
            pa = os.path.join(root, f)
            rel = os.path.relpath(pa, a)
            pb = os.path.join(b, rel)
            if not os.path.isfile(pb):
                only.append(rel)
            elif filecmp.cmp(pa, pb, shallow=False):
                same += 1
            elif rel.endswith(VARYING) or os.path.basename(rel) in VARYING:
                varying.append(rel)
            else:
                differ.append(rel)
    for root, _, files in os.walk(b):
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), b)
            if not os.path.exists(os.path.join(a, rel)):
                only.append(rel)
    return {"identical_files": same, "different_files": sorted(differ),
            "different_varying_files": sorted(varying), "in_one_only": sorted(only)}


def summarise(runs: dict) -> dict:
    keys = ("cpu_s", "wall_s", "run_cpu_s", "run_wall_s", "outside_cpu_s", "outside_wall_s")
    out = {t: {k: min(r[k] for r in rs) for k in keys} for t, rs in runs.items()}
    if {"base", "current"} <= set(out):
        out["base_minus_current"] = {k: round(out["base"][k] - out["current"][k], 3)
                                     for k in keys}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="fba3ed2")
    ap.add_argument("--nints", default="20,1200")
    ap.add_argument("--sim", default=None, help="an existing exposure folder (with refs/) "
                    "to run instead of simulating --nints (its records go under 'sim')")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--imports-repeat", type=int, default=5)
    ap.add_argument("--data", default="/tmp/nirbeam-startup")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "startup_cost_s9.json"))
    args = ap.parse_args()
    start = provenance(sys.argv[1:])
    os.makedirs(args.data, exist_ok=True)
    trees = {"base": extract_rev(args.baseline), "current": REPO}
    envs = {t: env_of(src, args.data, t) for t, src in trees.items()}
    res: dict = {"what": __doc__.splitlines()[0], "baseline": args.baseline,
                 "load_start": load_average(), "runs": {}, "summary": {}, "products": {},
                 "imports": {t: [] for t in trees}}
    sizes = ["sim"] if args.sim else [int(x) for x in args.nints.split(",") if x]
    for n in sizes:
        sim = args.sim if args.sim else simulate(args.data, n)
        for t, src in trees.items():  # compile each tree's numba cache: not timed
            run_once(sim, os.path.join(args.data, f"warm-{t}"), src, envs[t])
        runs: dict = {t: [] for t in trees}
        for _ in range(args.repeat):
            for t, src in trees.items():
                runs[t].append(run_once(sim, os.path.join(args.data, f"out{n}-{t}"), src, envs[t]))
                print(n, t, {k: runs[t][-1][k] for k in ("cpu_s", "wall_s", "outside_cpu_s",
                                                        "outside_wall_s")}, flush=True)
        res["runs"][str(n)] = runs
        res["summary"][str(n)] = summarise(runs)
        a, b = (os.path.join(args.data, f"out{n}-{t}") for t in ("base", "current"))
        res["products"][str(n)] = {"compare_products": compare(a, b), "bytes": byte_compare(a, b)}
    for _ in range(args.imports_repeat):
        for t, src in trees.items():
            res["imports"][t].append(imports_once(src, envs[t]))
    res["imports_min"] = {t: {k: min(r[k] for r in rs) for k in
                              ("cli_only_cpu_s", "cli_only_wall_s", "cpu_s", "wall_s",
                               "products_cpu_s", "products_wall_s")}
                          for t, rs in res["imports"].items()}
    res["load_end"] = load_average()
    write_result(args.out, res, sys.argv[1:], start=start)
    print(json.dumps({"summary": res["summary"], "imports_min": res["imports_min"],
                      "products": {k: {"all_identical": v["compare_products"].get("all_identical"),
                                       "different_files": v["bytes"]["different_files"]}
                                   for k, v in res["products"].items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
