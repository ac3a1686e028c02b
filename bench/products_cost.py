"""Benchmark: CPU cost of the products step alone (``finalize_products`` + the store's
consolidation + ``report.html``, what a run does after stage 2) on one existing run folder,
the current tree against a baseline revision, fresh processes interleaved.

Each code version works on its own copy of the run folder (made once); each child
imports ``nirbeam.stream.pipeline`` first (Beam, zarr, astropy as in a run), then times
with ``time.process_time`` the products step and its phases (``_write_x1dints``,
``plot_products``, ``_write_speclc``, ``trace_diagnostics``; a phase run in a child process,
e.g. the plots beside the writers, is not among them), plus the CPU of child processes
waited for (``RUSAGE_CHILDREN``, in ``products_cpu_s``) and the step's wall time. After the runs the two
folders' products are compared (``bench/compare_products.py``: stores, tables, x1dints)
and the files are compared byte for byte (``cmp``), PNGs apart (drawn images).

    python bench/products_cost.py RUN_FOLDER --baseline 849d0cb [--repeat 3]
        [--work /tmp/products-cost] [--out bench/results/products_cost_s8.json]

The PNGs are compared decoded (``png_pixels``: identical pixels or difference stats) and ``plots/index.json`` byte for byte.
"""

from __future__ import annotations

import argparse
import filecmp
import glob
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _provenance import provenance, write_result  # noqa: E402
from end_to_end import extract_rev, src_env  # noqa: E402
from end_to_end import load_average as _load  # noqa: E402

CHILD = r"""
import json, os, sys, time, warnings
warnings.simplefilter("ignore")
out = sys.argv[1]
import nirbeam.stream.pipeline  # noqa: F401  (what a run has loaded before its products)
import nirbeam.sinks.diagnostics as D
import nirbeam.stream.products as P
from nirbeam.sinks import zarr_store
from nirbeam.sinks.report import write_report
from nirbeam.stream.settings import Settings
from nirbeam.stream.uncal import find_uncal_files, plan_exposures, scan_segment
phases = {}
def timed(mod, name, key):
    fn = getattr(mod, name)
    def w(*a, **k):
        t = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            phases[key] = phases.get(key, 0.0) + time.process_time() - t
    setattr(mod, name, w)
for name in ("_write_x1dints", "_write_speclc", "trace_diagnostics"):
    timed(P, name, name)
timed(D, "plot_products", "plot_products")
import nirbeam.stream.fit_products as F
F.__dict__  # plot_all imports plot_products from diagnostics at call time (patched above)
rj = json.load(open(os.path.join(out, "run.json")))
settings = Settings.from_dict(rj["config_input"])
plans = plan_exposures([scan_segment(f) for f in find_uncal_files(rj["inputs"])])
root = os.path.join(out, "cubes.zarr")
import resource
def kids():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
t, t_kids, t_wall = time.process_time(), kids(), time.perf_counter()
P.finalize_products(out, root, plans, settings)
zarr_store.consolidate(root, {"nirbeam_version": "bench"})
write_report(out, redraw=False)
cpu, child = time.process_time() - t, kids() - t_kids
print(json.dumps({"products_cpu_s": round(cpu + child, 3),
                  "products_cpu_s_this_process": round(cpu, 3),
                  "products_cpu_s_children": round(child, 3),
                  "products_wall_s": round(time.perf_counter() - t_wall, 3),
                  "phases_cpu_s": {k: round(v, 3) for k, v in phases.items()}}))
"""


def run_child(src: str, folder: str) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, folder], env=src_env(src), cwd=src,
                       capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(p.stderr[-3000:])
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["load"] = _load()
    return r


def same_files(a: str, b: str) -> dict:
    """Byte comparison of the products' files (PNGs and run.json/logs apart)."""
    out = {}
    for f in sorted(glob.glob(os.path.join(a, "*"))):
        n = os.path.basename(f)
        if os.path.isfile(f) and n.endswith((".fits", ".ecsv", ".parquet", ".json")) \
                and n != "run.json":
            out[n] = filecmp.cmp(f, os.path.join(b, n), shallow=False)
    return out


def png_pixels(a: str, b: str) -> dict:
    """Per PNG of ``plots/``: decoded pixels identical, or the image difference stats."""
    import numpy as np
    from PIL import Image

    out = {}
    for f in sorted(glob.glob(os.path.join(a, "plots", "*.png"))):
        n = os.path.basename(f)
        pa = np.asarray(Image.open(f).convert("RGBA"), np.int16)
        pb = np.asarray(Image.open(os.path.join(b, "plots", n)).convert("RGBA"), np.int16)
        r = {"bytes": [os.path.getsize(f), os.path.getsize(os.path.join(b, "plots", n))],
             "same_shape": pa.shape == pb.shape}
        if pa.shape == pb.shape:
            d = np.abs(pa - pb)
            r.update(pixels_identical=bool(not d.any()), max_abs_diff=int(d.max()),
                     frac_pixels_differing=float((d.any(axis=2)).mean()))
        out[n] = r
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--baseline", default="849d0cb")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", default="/tmp/products-cost")
    ap.add_argument("--out", default=os.path.join(REPO, "bench/results/products_cost_s8.json"))
    args = ap.parse_args(argv)
    prov = provenance(argv if argv is not None else sys.argv[1:])
    base = extract_rev(args.baseline)
    folders = {}
    for k in ("baseline", "current"):
        folders[k] = os.path.join(args.work, k)
        if not os.path.isdir(folders[k]):
            shutil.copytree(args.run, folders[k])
    srcs = {"baseline": base, "current": REPO}
    runs: dict[str, list] = {"baseline": [], "current": []}
    for i in range(args.repeat):
        for k in ("baseline", "current") if i % 2 == 0 else ("current", "baseline"):
            r = run_child(srcs[k], folders[k])
            runs[k].append(r)
            print(k, r, flush=True)
    cmp = subprocess.run([sys.executable, os.path.join(HERE, "compare_products.py"),
                          folders["baseline"], folders["current"]], capture_output=True, text=True)
    res = {"benchmark": "products_cost", "run_folder": args.run, "baseline": args.baseline,
           "runs": runs,
           **{f"{k}_products_cpu_s_min": min(r["products_cpu_s"] for r in v)
              for k, v in runs.items()},
           **{f"{k}_products_wall_s_min": min(r.get("products_wall_s", 0) for r in v)
              for k, v in runs.items()},
           "phases_cpu_s_min": {k: {p: min(r["phases_cpu_s"].get(p, 0) for r in v)
                                    for p in v[0]["phases_cpu_s"]} for k, v in runs.items()},
           "compare_products_exit": cmp.returncode,
           "compare_products_tail": cmp.stdout[-1500:],
           "files_byte_identical": same_files(folders["baseline"], folders["current"]),
           "png_pixels": png_pixels(folders["baseline"], folders["current"]),
           "plots_index_identical": filecmp.cmp(
               os.path.join(folders["baseline"], "plots", "index.json"),
               os.path.join(folders["current"], "plots", "index.json"), shallow=False)}
    res["ratio_baseline_over_current"] = round(
        res["baseline_products_cpu_s_min"] / res["current_products_cpu_s_min"], 3)
    write_result(args.out, res, start=prov)
    print(json.dumps({k: v for k, v in res.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
