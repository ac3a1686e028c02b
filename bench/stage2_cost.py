"""Benchmark: the spectra stage (stage 2) per integration, before and after, in one run.

Stage 2 of ``nirbeam run`` (``nirbeam.stream.products.run_spectra_stage``: the extraction
model from a sample of the rates, then the Beam stage that flags outliers along time,
extracts and writes the spectra and cleaned stages) is timed on the rateints store of a
finished run, in fresh processes, for two source trees interleaved: the baseline (a git
revision extracted to a temporary folder, as ``bench/end_to_end.py --baseline`` does) and
the current tree. Each process times the stage once cold (the first call in the process,
as in a run: numba caches loaded, first reads) and ``--reps - 1`` times warm (the stage
redone on a fresh copy of the store), and splits each time into the model
(``prepare_spectra``) and the rest (the Beam stage: reads, flags, extraction, writes).
Figures are CPU milliseconds (user + sys of the process) per integration (summed over
detectors), best of the processes of each tree; wall seconds beside them. The last
store of each tree is kept and the two are compared array by array (spectra, cleaned,
extraction), bit for bit.

Exposures: ``prism`` (``prism-sub512``, default 300 integrations) and ``g395h``
(``g395h-sub2048``, NRS1 + NRS2, default 60 integrations), simulated into ``--data`` and
run once with the current code to make the rateints (kept between invocations).

    python bench/stage2_cost.py [--baseline 4154a05] [--sections prism,g395h]
        [--prism-nints 300] [--g395h-nints 60] [--processes 2] [--reps 3]
        [--data /tmp/stage2-bench] [--out bench/results/stage2_cost.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)
from end_to_end import _extract_rev, _git, _load, machine_info, nirbeam_run, simulate  # noqa: E402

CHILD = r'''
import json, os, shutil, sys, time
store, sim, work, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
import apache_beam  # noqa: F401  (imported before stage 2 in a run)
from nirbeam.sinks import zarr_store
from nirbeam.stream import products
from nirbeam.stream.config import load_config_file
from nirbeam.stream.runners import RunnerSpec
from nirbeam.stream.settings import Settings
from nirbeam.stream.uncal import find_uncal_files, plan_exposures, scan_segment
cfg = os.path.join(sim, "nirbeam.toml")
settings = Settings.from_dict(load_config_file(cfg) if os.path.isfile(cfg) else {})
plans = plan_exposures([scan_segment(f) for f in find_uncal_files([sim])])
nints = sum(int(p.meta.nints) for p in plans)
prep = []
_prepare = products.prepare_spectra
def timed_prepare(*a, **k):
    c = time.process_time()
    try:
        return _prepare(*a, **k)
    finally:
        prep.append(time.process_time() - c)
products.prepare_spectra = timed_prepare
root = os.path.join(work, "cubes.zarr")
out = []
for rep in range(reps):
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(store, root)
    for p in plans:
        for st in ("spectra", "cleaned", "extraction"):
            shutil.rmtree(os.path.join(root, p.meta.group_name, st), ignore_errors=True)
    zarr_store.forget_cache()
    products._MODELS.clear() if hasattr(products, "_MODELS") else None
    try:
        from nirbeam.stream import spectra_stage
        spectra_stage._MODELS.clear()
    except ImportError:
        pass
    prep.clear()
    dead = os.path.join(work, "_dead")
    shutil.rmtree(dead, ignore_errors=True)
    w0, c0 = time.perf_counter(), time.process_time()
    products.run_spectra_stage(root, plans, settings, RunnerSpec(), dead)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    out.append({"cold": rep == 0, "cpu_s": round(cpu, 4), "wall_s": round(wall, 4),
                "prepare_cpu_s": round(sum(prep), 4), "nints": nints,
                "load": round(os.getloadavg()[0], 2)})
print("RESULT " + json.dumps(out))
'''


def stage2_child(src: str | None, store: str, sim: str, work: str, reps: int) -> list[dict]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
        env["NUMBA_CACHE_DIR"] = os.path.join(src, ".numba-cache")
    else:
        env["PYTHONPATH"] = REPO
    script = os.path.join(work, "child.py")
    os.makedirs(work, exist_ok=True)
    with open(script, "w") as fh:
        fh.write(CHILD)
    p = subprocess.run([sys.executable, script, store, sim, work, str(reps)], env=env,
                       cwd=src or REPO, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"stage-2 child ({src or 'current'}) exited {p.returncode}:\n"
                           f"{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def compare_stores(a: str, b: str) -> dict:
    """Every array of the spectra, cleaned and extraction stages, bit for bit (NaN == NaN)."""
    import numpy as np
    import zarr

    ga, gb = zarr.open_group(a, mode="r"), zarr.open_group(b, mode="r")
    n, bad = 0, []
    for gname, grp in ga.groups():
        for st in ("spectra", "cleaned", "extraction"):
            if st not in grp:
                continue
            for name, arr in grp[st].arrays():
                x = arr[...]
                y = gb[f"{gname}/{st}/{name}"][...]
                n += 1
                same = x.shape == y.shape and x.dtype == y.dtype and (
                    np.array_equal(x, y, equal_nan=True) if x.dtype.kind == "f"
                    else np.array_equal(x, y))
                if not same:
                    bad.append(f"{gname}/{st}/{name}")
    return {"arrays_compared": n, "all_identical": not bad, "different": bad}


def _summary(runs: list[list[dict]]) -> dict:
    cold = [r for rr in runs for r in rr if r["cold"]]
    warm = [r for rr in runs for r in rr if not r["cold"]]
    n = cold[0]["nints"]

    def ms(rows, key):
        return round(min(r[key] for r in rows) / n * 1e3, 3) if rows else None

    def blocks(rows):
        return round(min(r["cpu_s"] - r["prepare_cpu_s"] for r in rows) / n * 1e3, 3) if rows else None

    return {"nints": n,
            "cold_ms_per_int_cpu": ms(cold, "cpu_s"),
            "cold_wall_s": round(min(r["wall_s"] for r in cold), 3),
            "warm_ms_per_int_cpu": ms(warm, "cpu_s"),
            "warm_blocks_ms_per_int_cpu": blocks(warm),
            "warm_prepare_cpu_s": round(min(r["prepare_cpu_s"] for r in warm), 4) if warm else None,
            "runs": runs}


def bench_exposure(name, sim, data, base_src, args) -> dict:
    out = os.path.join(data, f"run-{name}")
    stamp = os.path.join(out, ".bench-complete")
    if not os.path.isfile(stamp):
        nirbeam_run(sim, out)  # the rateints, made once with the current code
        with open(stamp, "w") as fh:
            fh.write("ok")
    store = os.path.join(out, "cubes.zarr")
    trees = {"baseline": base_src, "current": None}
    for label, src in trees.items():  # numba caches compiled before anything is timed
        stage2_child(src, store, sim, os.path.join(data, f"warm-{name}-{label}"), 1)
    runs = {k: [] for k in trees}
    load0 = _load()
    for _ in range(args.processes):
        for label, src in trees.items():
            runs[label].append(stage2_child(src, store, sim, os.path.join(data, f"s2-{name}-{label}"),
                                            args.reps))
            print(f"  {name} {label}: {runs[label][-1]}", flush=True)
    sec = {"load_before": load0, "load_after": _load()}
    for label in trees:
        sec[label] = _summary(runs[label])
    cmp = compare_stores(os.path.join(data, f"s2-{name}-baseline", "cubes.zarr"),
                         os.path.join(data, f"s2-{name}-current", "cubes.zarr"))
    sec["products_vs_baseline"] = cmp
    b, c = sec["baseline"], sec["current"]
    sec["speedup_cpu"] = {k: round(b[k] / c[k], 2) for k in
                          ("cold_ms_per_int_cpu", "warm_ms_per_int_cpu", "warm_blocks_ms_per_int_cpu")}
    print(f"  {name}: cold {b['cold_ms_per_int_cpu']} -> {c['cold_ms_per_int_cpu']} ms/int, warm "
          f"{b['warm_ms_per_int_cpu']} -> {c['warm_ms_per_int_cpu']}, Beam stage alone "
          f"{b['warm_blocks_ms_per_int_cpu']} -> {c['warm_blocks_ms_per_int_cpu']}; identical: "
          f"{cmp['all_identical']} ({cmp['arrays_compared']} arrays)", flush=True)
    return sec


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="4154a05", help="git revision to compare against")
    ap.add_argument("--sections", default="prism,g395h")
    ap.add_argument("--prism-nints", type=int, default=300)
    ap.add_argument("--g395h-nints", type=int, default=60)
    ap.add_argument("--processes", type=int, default=2, help="fresh processes per tree")
    ap.add_argument("--reps", type=int, default=3, help="stage-2 runs per process (1 cold)")
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "stage2-bench"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "stage2_cost.json"))
    args = ap.parse_args(argv)
    start = provenance(argv)
    os.makedirs(args.data, exist_ok=True)
    base_src = _extract_rev(args.baseline)
    results = {"machine": machine_info(), "baseline": {"rev": args.baseline,
                                                       "commit": _git("rev-parse", args.baseline)},
               "processes": args.processes, "reps": args.reps, "sections": {}}
    presets = {"prism": ("prism-sub512", args.prism_nints), "g395h": ("g395h-sub2048", args.g395h_nints)}
    for name in args.sections.split(","):
        preset, nints = presets[name]
        sim = os.path.join(args.data, f"sim-{name}-{nints}")
        shape = simulate(sim, preset, nints)
        print(f"{name}: {shape}", flush=True)
        results["sections"][name] = {"preset": preset, "shape": shape,
                                     **bench_exposure(name, sim, args.data, base_src, args)}
        write_result(args.out, results, argv, start=start)
    shutil.rmtree(os.path.join(args.data, "unused"), ignore_errors=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
