"""Benchmark: the fixed (per-run) and per-integration I/O costs of a whole ``nirbeam run``.

A 24-integration run costs what every run costs regardless of NINTS (imports, reference
and numba cache loading, the extraction model, products, the quick-look fits, the
plots); a 300-integration run adds the per-integration work. For each code version (the
current tree and, with ``--baseline REV``, the tree of git revision REV) and each size,
the script runs ``nirbeam run`` on the same simulated PRISM exposure in fresh processes,
interleaved (base, current, base, current ...), and reports per run:

- ``cpu_s`` (user + sys of the process, from ``wait4``), ``wall_s``, ``peak_rss_mib``;
- ``phases_cpu_s``: CPU seconds inside ``finalize_products``, ``plot_products``, the
  quick-look fits (``fit_transit`` + ``fit_spectroscopic``), ``run_spectra_stage``,
  ``build_extraction_model``, measured by wrapping those functions in the child
  (``time.process_time``; the process is otherwise idle during the products);
- ``write``: the rateints writes alone, per code version, in a fresh process on the
  rates of the largest run: one ``write_block`` per block of ``RATE_BLOCK`` integrations
  into block-aligned chunks (the batch path) and one ``write_integration`` per
  integration into chunks of one (the streaming ``WriteRateints`` path); CPU ms per
  integration (``process_time``: zarr compresses and writes on its own threads) and
  wall, best of 3. (The run's ``write_rateints.block_ms`` metric is the time a block
  write is in flight, from its hand-over to the writer thread until the next block has
  been calibrated, not the write's cost.)
- ``imports_cpu_s``: CPU seconds of a fresh process importing, in order, every module
  the run had loaded (``sys.modules`` at its end): the import cost of the run path.

The figures read are the minimum over ``--repeat`` runs of each (the machine may be
shared: each run carries its load average). Products of the last current and base run
of each size are compared bit for bit with ``bench/compare_products.py`` (PNGs are not
compared: the plots are images, drawn differently).

    python bench/fixed_costs.py [--baseline 4154a05] [--nints 24,300] [--repeat 2]
        [--data /tmp/nirbeam-fixed] [--out bench/results/fixed_costs.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)
from end_to_end import child, extract_rev, src_env  # noqa: E402  (the same runner)
from end_to_end import load_average as _load  # noqa: E402

# The child: run the CLI with phase timers around a few functions, then report.
CHILD = r"""
import json, sys, threading, time
report_path = sys.argv[1]
sys.argv = ["nirbeam"] + sys.argv[2:]
phases = {}
lock = threading.Lock()

def timed(fn, key, clock=time.process_time, acc=phases):
    def w(*a, **k):
        t = clock()
        try:
            return fn(*a, **k)
        finally:
            with lock:
                acc[key] = acc.get(key, 0.0) + clock() - t
    w.__wrapped__ = fn
    return w

def patch(module_names, name, key, clock=time.process_time, acc=phases):
    import importlib
    mods = [importlib.import_module(m) for m in module_names]
    fn = getattr(mods[0], name)
    w = timed(fn, key, clock, acc)
    for m in list(sys.modules.values()):
        try:
            if getattr(m, name, None) is fn:
                setattr(m, name, w)
        except Exception:
            pass

from nirbeam.stream import cli  # noqa: E402
import nirbeam.stream.pipeline, nirbeam.stream.products, nirbeam.stream.fit_products  # noqa
import nirbeam.sinks.diagnostics, nirbeam.transforms.spectra, nirbeam.transforms.transit  # noqa
from nirbeam.sinks import zarr_store  # noqa: E402
patch(["nirbeam.stream.products"], "finalize_products", "finalize_products")
patch(["nirbeam.stream.products"], "run_spectra_stage", "run_spectra_stage")
patch(["nirbeam.sinks.diagnostics"], "plot_products", "plot_products")
patch(["nirbeam.transforms.transit"], "fit_transit", "fits")
patch(["nirbeam.transforms.transit"], "fit_spectroscopic", "fits")
patch(["nirbeam.transforms.spectra"], "build_extraction_model", "build_extraction_model")
t0 = time.process_time()
rc = cli.main(sys.argv[1:])
mods = [m for m in sys.modules if not m.startswith(("__main__", "_distutils_hack"))]
with open(report_path, "w") as fh:
    json.dump({"rc": rc, "phases_cpu_s": {k: round(v, 3) for k, v in phases.items()},
               "main_cpu_s": round(time.process_time() - t0, 3), "modules": mods}, fh)
"""

IMPORTS = r"""
import importlib, json, sys, time, warnings
warnings.simplefilter("ignore")
mods = json.load(open(sys.argv[1]))
t = time.process_time()
if "batman" in mods:  # batman as the run imports it (a bare import_module("batman.openmp")
    try:               # would load the compiler probe the run never loads)
        from nirbeam.transforms.transit_model import batman_module
        batman_module()
    except Exception:
        pass
for m in mods:
    if m in sys.modules:
        continue
    try:
        importlib.import_module(m)
    except Exception:
        pass
print(json.dumps({"imports_cpu_s": round(time.process_time() - t, 3),
                  "matplotlib.pyplot": "matplotlib.pyplot" in sys.modules,
                  "scipy.signal": "scipy.signal" in sys.modules,
                  "scipy.stats": "scipy.stats" in sys.modules,
                  "distutils": "distutils" in sys.modules,
                  "pkg_resources": "pkg_resources" in sys.modules,
                  "modules": len(mods)}))
"""


WRITE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])  # bench/ of the current tree; nirbeam from PYTHONPATH
from end_to_end import rate_writes, rates_of
src = rates_of(sys.argv[2])
res = rate_writes(src, best_by="cpu_s", labels=("block", "per_integration"))
res["mib_per_integration"] = round(sum(v[0].nbytes for v in src.values()) / 2**20, 3)
print(json.dumps(res))
"""


def write_cost(src: str, store: str) -> dict:
    """The rateints writes alone (see the module doc), in a fresh process of ``src``."""
    out = subprocess.run([sys.executable, "-c", WRITE, HERE, store], env=src_env(src), cwd=src,
                         capture_output=True, text=True, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "load_after": _load()}


def simulate(path: str, nints: int) -> None:
    if os.path.isfile(os.path.join(path, ".bench-complete")):
        return
    subprocess.run([sys.executable, "-m", "nirbeam.stream.cli", "simulate", "--preset",
                    "prism-sub512", "--nints", str(nints), "--seed", "1", path],
                   check=True, cwd=REPO, env=src_env(REPO))
    with open(os.path.join(path, ".bench-complete"), "w") as fh:
        fh.write("ok")


def run_once(src: str, sim: str, out: str) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryDirectory() as d:
        rep = os.path.join(d, "report.json")
        script = os.path.join(d, "child.py")
        with open(script, "w") as fh:
            fh.write(CHILD)
        cmd = [sys.executable, script, rep, "run", sim, "--refs", os.path.join(sim, "refs"),
               "--out", out, "--no-progress", "--config", os.path.join(sim, "nirbeam.toml")]
        run = child(cmd, env=src_env(src), cwd=src)  # a fresh process: wall, CPU, peak RSS
        r = json.load(open(rep))
        mods = os.path.join(d, "mods.json")
        with open(mods, "w") as fh:
            json.dump(r.pop("modules"), fh)
        imp = subprocess.run([sys.executable, "-c", IMPORTS, mods], env=src_env(src), cwd=src,
                             capture_output=True, text=True, check=True)
        imp = json.loads(imp.stdout.strip().splitlines()[-1])
    rj = json.load(open(os.path.join(out, "run.json")))
    nints = sum(e["processed"] for e in rj["exposures"])
    run.pop("stdout_tail", None)
    return {
        **run, "integrations": nints, **r,
        "imports": imp, "run_json_timings_s": rj.get("timings_s"),
        "write_rateints_block_ms": rj.get("metrics", {}).get("write_rateints.block_ms"),
    }


def _best(runs: list[dict]) -> dict:
    """The run of least CPU, with the minimum of every phase over the runs beside it."""
    b = dict(min(runs, key=lambda r: r["cpu_s"]))
    keys = {k for r in runs for k in r["phases_cpu_s"]}
    b["phases_cpu_s_min"] = {k: min(r["phases_cpu_s"].get(k, float("inf")) for r in runs)
                             for k in sorted(keys)}
    b["imports_cpu_s_min"] = min(r["imports"]["imports_cpu_s"] for r in runs)
    b["cpu_s_all"] = [r["cpu_s"] for r in runs]
    return b


def compare(a: str, b: str) -> dict:
    """compare_products.py on two output folders: the count and the arrays that differ."""
    with tempfile.TemporaryDirectory() as d:
        js = os.path.join(d, "cmp.json")
        out = subprocess.run([sys.executable, os.path.join(HERE, "compare_products.py"), a, b,
                              "--json", js], capture_output=True, text=True, cwd=REPO,
                             env=src_env(REPO))
        if not os.path.isfile(js):
            return {"rc": out.returncode, "stdout_tail": out.stdout[-2000:],
                    "stderr_tail": out.stderr[-2000:]}
        r = json.load(open(js))
    arrays = r["arrays"]
    return {"arrays_compared": len(arrays), "all_identical": r["all_identical"],
            "different": {k: v for k, v in arrays.items() if not v["identical"]},
            "summary": out.stdout.strip().splitlines()[0] if out.stdout else ""}


BATMAN = r"""
import sys, time
import numpy, scipy.ndimage  # loaded before the fit in a run
from nirbeam.transforms import transit_model
t = time.process_time()
if sys.argv[1] == "plain":
    import batman
else:
    transit_model.batman_module()
print(time.process_time() - t, "distutils" in sys.modules, "pkg_resources" in sys.modules)
"""


def _content_box_before(rgba, pad):
    """``plots._content_box`` as it was at 577ea37 (four channel compares + any)."""
    import numpy as np

    bg = rgba[0, 0]
    ink = np.any(rgba != bg, axis=2)
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return slice(None), slice(None)
    ny, nx = ink.shape
    if rows[0] == 0 or cols[0] == 0 or rows[-1] == ny - 1 or cols[-1] == nx - 1:
        return None
    return (slice(max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, ny)),
            slice(max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, nx)))


def parts(plots_dir: str, repeat: int = 7) -> dict:
    """The two cuts of session 7 measured alone, interleaved, ``repeat`` times each:

    - ``batman_import``: CPU s of importing batman in a fresh process (numpy, scipy.ndimage
      and transit_model loaded first), plain ``import batman`` (what 577ea37 did) against
      ``transit_model.batman_module()`` (the stand-in ``batman.openmp``);
    - ``content_box``: CPU ms of ``plots._content_box`` over the canvases of a run's plots
      (each PNG of ``plots_dir`` with the 1-inch blank margin the one draw adds), the
      577ea37 version against the current one (same boxes checked).
    """
    import glob
    import statistics

    import numpy as np
    from PIL import Image

    from nirbeam.sinks import plots

    out: dict = {"repeat": repeat, "load_before": _load()}
    t = {"plain": [], "batman_module": []}
    flags = {}
    for _ in range(repeat):
        for how in t:
            p = subprocess.run([sys.executable, "-c", BATMAN, how], env=src_env(REPO), cwd=REPO,
                               capture_output=True, text=True, check=True)
            c, du, pk = p.stdout.split()
            t[how].append(float(c))
            flags[how] = {"distutils": du == "True", "pkg_resources": pk == "True"}
    out["batman_import"] = {h: {"cpu_s_min": round(min(v), 4),
                                "cpu_s_median": round(statistics.median(v), 4),
                                "cpu_s_all": [round(x, 4) for x in v], **flags[h]}
                            for h, v in t.items()}
    m = int(round(plots.MARGIN_INCHES * plots.DPI))
    pad = int(round(plots.PAD_INCHES * plots.DPI))
    canv = []
    for f in sorted(glob.glob(os.path.join(plots_dir, "*.png"))):
        a = np.asarray(Image.open(f).convert("RGBA"))
        c = np.empty((a.shape[0] + 2 * m, a.shape[1] + 2 * m, 4), np.uint8)
        c[:] = a[0, 0]
        c[m:-m, m:-m] = a
        canv.append(c)
        assert _content_box_before(c, pad) == plots._content_box(c, pad)
    tb = {"before": [], "current": []}
    for _ in range(repeat):
        for name, fn in (("before", _content_box_before), ("current", plots._content_box)):
            c0 = time.process_time()
            for c in canv:
                fn(c, pad)
            tb[name].append(1e3 * (time.process_time() - c0))
    out["content_box"] = {"figures": len(canv),
                          "pixels": int(sum(c.shape[0] * c.shape[1] for c in canv)),
                          **{k: {"cpu_ms_min": round(min(v), 2),
                                 "cpu_ms_median": round(statistics.median(v), 2)}
                             for k, v in tb.items()}}
    out["load_after"] = _load()
    return out


_kept: dict = {}


def _save(path: str, key: str | None, res: dict, start: dict) -> None:
    """``res`` as the record (``key`` None) or under ``key`` of the existing record, whose
    other keys stay as they were; the provenance they were written with is kept beside
    them as ``provenance_except_<key>`` (the top-level provenance is this run's)."""
    if key is None:
        write_result(path, res, sys.argv, start=start)
        return
    if not _kept:  # the file as it was before this run
        old = json.load(open(path)) if os.path.isfile(path) else {}
        old.pop(key, None)
        prov = old.pop("provenance", None)
        _kept.update(old)
        if prov is not None:
            _kept[f"provenance_except_{key}"] = prov
    write_result(path, {**_kept, key: res}, sys.argv, start=start)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=None, help="git revision to compare (e.g. 4154a05)")
    ap.add_argument("--baseline-src", default=None,
                    help="an extracted tree of --baseline to use (with its numba cache)")
    ap.add_argument("--nints", default="24,300")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "nirbeam-fixed"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "fixed_costs.json"))
    ap.add_argument("--key", default=None,
                    help="write the record under this key of the --out file, keeping its "
                         "other keys (their provenance moves to provenance_except_KEY)")
    ap.add_argument("--parts", default=None, metavar="PLOTS_DIR",
                    help="only measure the session-7 cuts alone (see parts()) on the plots "
                         "of a run")
    args = ap.parse_args(argv)
    start = provenance(sys.argv[1:])  # (sys.argv[0] is the script, named apart)
    if args.parts:
        r = parts(args.parts, max(args.repeat, 3))
        _save(args.out, args.key, r, start)
        print(json.dumps(r, indent=1))
        return
    versions = {"current": REPO}
    if args.baseline:
        versions = {"baseline": args.baseline_src or extract_rev(args.baseline), **versions}
    res = {"what": __doc__.splitlines()[0], "baseline": args.baseline,
           "load_start": _load(), "sizes": {}}
    for n in [int(x) for x in args.nints.split(",")]:
        sim = os.path.join(args.data, f"sim{n}")
        simulate(sim, n)
        for name, src in versions.items():  # numba caches compiled before anything is timed
            run_once(src, sim, os.path.join(args.data, f"warm_{name}"))
        runs = {name: [] for name in versions}
        for rep in range(args.repeat):
            for name, src in versions.items():
                r = run_once(src, sim, os.path.join(args.data, f"out{n}_{name}"))
                runs[name].append(r)
                print(f"  {n} ints {name} #{rep}: {r['cpu_s']} CPU-s, phases {r['phases_cpu_s']}, "
                      f"imports "
                      f"{r['imports']['imports_cpu_s']} s, load {r['load_after'][0]}", flush=True)
        entry = {name: {"best": _best(rs), "runs": rs} for name, rs in runs.items()}
        if "baseline" in versions:
            b, c = entry["baseline"]["best"], entry["current"]["best"]
            entry["cpu_s_baseline_over_current"] = round(b["cpu_s"] / c["cpu_s"], 3)
            entry["products_vs_baseline"] = compare(os.path.join(args.data, f"out{n}_baseline"),
                                                    os.path.join(args.data, f"out{n}_current"))
        res["sizes"][str(n)] = entry
        _save(args.out, args.key, res, start)
    s = res["sizes"]
    big = max(s, key=int)
    res["write"] = {name: write_cost(src, os.path.join(args.data, f"out{big}_{name}", "cubes.zarr"))
                    for name, src in versions.items()}
    if len(s) >= 2:
        lo, hi = sorted(s, key=int)[:2]
        res["per_integration_cpu_ms"] = {
            name: round(1e3 * (s[hi][name]["best"]["cpu_s"] - s[lo][name]["best"]["cpu_s"])
                        / (int(hi) - int(lo)), 2) for name in versions}
    res["load_end"] = _load()
    _save(args.out, args.key, res, start)
    print(json.dumps({k: v for k, v in res.items() if k != "sizes"}, indent=1))


if __name__ == "__main__":
    main()
