"""Time the simulator presets: seconds, CPU s, peak RSS, MB/s written, ms per integration.

Usage: .venv/bin/python bench/simulate_speed.py [--baseline REV] [--workers 1,2]
           [--cases prism,g395h] [--workdir DIR] [--out FILE]

Each simulation runs in a fresh process (wall s, CPU s = user + sys of that process and
its threads, peak RSS). ``--baseline REV`` runs the same simulations with the code of git
revision REV (extracted to a temporary folder), interleaved with the current code's, and
checks that the two wrote the same data (every image and table of every file). The
reference in the same run is the volume written (uncal bytes): MB/s is the figure to
compare between machines; the machine is shared, so every row carries the load average
and only ratios within one invocation mean much. Writes ``bench/results/simulate_speed.json``
with its provenance.

First, in this process, one G395H integration through the ramp kernel and through the
numpy expressions it replaced (``per_integration``: CPU ms, best of 5, interleaved).

Cases: ``prism``: prism-sub512 400 x 5, NRS1; ``g395h``: g395h-sub2048 20 x 70, NRS1 +
NRS2 (the WASP-39b layout, 20 of its 465 integrations).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _provenance import RESULTS, provenance, write_result

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CASES = {
    "prism": dict(preset="prism-sub512", nints=400, overrides={}),
    "g395h": dict(preset="g395h-sub2048", nints=20,
                  overrides={"ngroups": 70, "detectors": ["NRS1", "NRS2"]}),
    "warm": dict(preset="prism-sub512", nints=4, overrides={}),  # numba's cache, untimed
}

_CHILD = """
import json, sys, time, resource
from pathlib import Path
from nirbeam.sim.simulator import simulate
a = json.loads(sys.argv[1])
kw = dict(a["overrides"])
if "detectors" in kw:
    kw["detectors"] = tuple(kw["detectors"])
if a["workers"]:
    kw["workers"] = a["workers"]
t = time.perf_counter()
res = simulate(a["out"], a["preset"], nints=a["nints"], seed=1, **kw)
dt = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall_s": dt, "cpu_s": ru.ru_utime + ru.ru_stime,
                  "peak_rss_mib": ru.ru_maxrss / 1024,
                  "uncal_bytes": sum(p.stat().st_size for p in res.uncal),
                  "ngroups": res.config.ngroups, "detectors": list(res.config.detectors)}))
"""


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_child(out: Path, case: str, src: Path | None, workers: int | None) -> dict:
    c = CASES[case]
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
        env["NUMBA_CACHE_DIR"] = str(src / ".numba-cache")
    arg = json.dumps({**c, "out": str(out), "workers": workers})
    load0 = _load()
    p = subprocess.run([sys.executable, "-c", _CHILD, arg], env=env, cwd=str(src or REPO),
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"simulate {case} ({src or 'current'}) failed:\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    ndet = len(r["detectors"])
    n = c["nints"]
    row = {"case": case, "preset": c["preset"], "nints": n, "ngroups": r["ngroups"],
           "detectors": r["detectors"], "wall_s": round(r["wall_s"], 2),
           "cpu_s": round(r["cpu_s"], 2), "peak_rss_mib": round(r["peak_rss_mib"], 1),
           "uncal_mb": round(r["uncal_bytes"] / 1e6, 1),
           "mb_per_s": round(r["uncal_bytes"] / 1e6 / r["wall_s"], 1),
           "ms_per_int_per_det": round(r["wall_s"] / n / ndet * 1e3, 1),
           "cpu_ms_per_int_per_det": round(r["cpu_s"] / n / ndet * 1e3, 1),
           "load_before": load0, "load_after": _load()}
    return row


def per_integration(reps: int = 5) -> dict:
    """One G395H integration (70 x 32 x 2048, NRS2 readout) in this process: the ramp
    kernel (``simulate_integration``) against the numpy expressions it replaced
    (``_simulate_integration_reference``), interleaved, same streams; CPU ms, best of
    ``reps``, and whether the ramps are identical."""
    import dataclasses

    import numpy as np

    from nirbeam.sim import physics as phys
    from nirbeam.sim.simulator import PRESETS

    cfg = dataclasses.replace(PRESETS["g395h-sub2048"], ngroups=70)
    props = phys.make_detector_props(np.random.default_rng([1, 1, 1]), cfg)
    rate = phys.make_scene(cfg, 1, props.refpix, cfg.tgroup).rate_oot
    fns = {"kernel": phys.simulate_integration, "numpy_reference": phys._simulate_integration_reference}
    best = {k: float("inf") for k in fns}
    same = True
    fns["kernel"](np.random.default_rng(0), cfg, props, rate, 63.0, True)  # compile / warm
    for i in range(reps):
        out = {}
        for k, f in fns.items():
            c = time.process_time()
            out[k] = f(np.random.default_rng([1, 1, 2, i]), cfg, props, rate, 63.0, True)[0]
            best[k] = min(best[k], time.process_time() - c)
        same &= bool(np.array_equal(out["kernel"], out["numpy_reference"]))
    return {"shape": [70, 32, 2048], "reps": reps,
            "cpu_ms_best": {k: round(v * 1e3, 1) for k, v in best.items()},
            "ratio_reference_over_kernel": round(best["numpy_reference"] / best["kernel"], 2),
            "identical": same, "load": _load()}


def same_files(a: Path, b: Path) -> dict:
    """Every image and table column of every FITS file under ``a`` equals ``b``'s."""
    import numpy as np
    from astropy.io import fits

    files = sorted(p.relative_to(a) for p in a.rglob("*.fits"))
    diff = []
    for rel in files:
        with fits.open(a / rel) as fa, fits.open(b / rel) as fb:
            for ha, hb in zip(fa, fb, strict=True):
                da, db = ha.data, hb.data
                if da is None:
                    continue
                if getattr(da, "dtype", None) is not None and da.dtype.names is None:
                    ok = np.array_equal(da, db, equal_nan=True)
                else:
                    ok = all(np.array_equal(np.asarray(da[k]), np.asarray(db[k]),
                                            equal_nan=np.asarray(da[k]).dtype.kind == "f")
                             for k in da.dtype.names)
                if not ok:
                    diff.append(f"{rel}[{ha.name}]")
    return {"files": len(files), "identical": not diff, "different": diff}


def _extract(rev: str) -> Path:
    commit = subprocess.run(["git", "rev-parse", rev], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.strip()
    d = Path(tempfile.gettempdir()) / f"nirbeam-src-{commit[:12]}"
    if not (d / ".bench-extracted").is_file():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        tar = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True,
                             check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(d)], input=tar, check=True)
        (d / ".bench-extracted").write_text(commit)
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default=None, help="git revision to compare against")
    ap.add_argument("--workers", default="1", help="comma-separated thread counts, current code")
    ap.add_argument("--cases", default="prism,g395h")
    ap.add_argument("--per-integration-only", action="store_true",
                    help="only the in-process per-integration comparison (kept with the "
                         "other rows of an existing --out)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=str(RESULTS / "simulate_speed.json"))
    args = ap.parse_args(argv)
    prov = provenance(argv)
    pint = per_integration()
    print(f"one integration 70 x 32 x 2048: {pint}", flush=True)
    if args.per_integration_only:
        old = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
        old["runs_provenance"] = old.pop("provenance", None) or old.get("runs_provenance")
        write_result(args.out, {**old, "benchmark": "simulate_speed", "per_integration": pint},
                     argv, start=prov)
        print(f"wrote {args.out}")
        return 0
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="simbench-"))
    base_src = _extract(args.baseline) if args.baseline else None
    rows, checks = [], {}
    try:
        run_child(base / "warm", "warm", None, None)  # compile the current code's kernel
        for case in args.cases.split(","):
            runs = ([("baseline", base_src, None)] if base_src else []) + [
                (f"current_w{w}", None, int(w)) for w in args.workers.split(",")]
            for label, src, w in runs:
                out = base / f"{case}-{label}"
                shutil.rmtree(out, ignore_errors=True)
                row = {"code": label, **run_child(out, case, src, w)}
                rows.append(row)
                print(f"{case:6s} {label:12s}: wall {row['wall_s']:7.1f} s, cpu {row['cpu_s']:7.1f} s, "
                      f"peak {row['peak_rss_mib']:6.0f} MiB, {row['ms_per_int_per_det']:7.1f} ms/int/det "
                      f"(cpu {row['cpu_ms_per_int_per_det']:7.1f}), load {row['load_before']}", flush=True)
            if base_src:
                ref = base / f"{case}-baseline"
                for label, _, _ in runs[1:]:
                    checks[f"{case}:{label}"] = same_files(ref, base / f"{case}-{label}")
                    print(f"  {case} {label} identical to baseline: "
                          f"{checks[f'{case}:{label}']['identical']}", flush=True)
                b = next(r for r in rows if r["case"] == case and r["code"] == "baseline")
                for r in rows:
                    if r["case"] == case and r["code"] != "baseline":
                        r["speedup_vs_baseline"] = {"wall": round(b["wall_s"] / r["wall_s"], 2),
                                                    "cpu": round(b["cpu_s"] / r["cpu_s"], 2)}
            for p in base.glob(f"{case}-*"):
                shutil.rmtree(p, ignore_errors=True)
    finally:
        if not args.workdir:
            shutil.rmtree(base, ignore_errors=True)
    res = {"benchmark": "simulate_speed", "per_integration": pint, "runs": rows, "same_data_as_baseline": checks,
           "baseline": args.baseline,
           "machine": {"cpus": os.cpu_count(), "loadavg_at_end": list(os.getloadavg())},
           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_result(args.out, res, argv, start=prov)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
