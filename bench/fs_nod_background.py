"""FS nod background: the non-over-subtracting joint nod fit vs jwst's nod difference.

For 2-, 3- and 5-point nods: simulate an ALLSLITS nod set (``nirbeam.sim.fs``; the point
source in S1600A1 with PSF wings that reach the other nods, an extended source in S200A2),
run the FS pipeline, and compare each source's integrated flux with ``truth.json``: the
point source with the joint nod fit (the product) and with the nod difference (jwst's
way, box + aperture correction from the same PSF reference), the extended source with the
masked background. Integrated = sum over the good columns of the spectrum, against the
truth interpolated at the same wavelengths (the same columns for both methods).

Usage: ``.venv/bin/python bench/fs_nod_background.py [--columns N] [--out PATH]``
(``--columns``: a cut-down frame of N columns from column 1201, for a quick run).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import provenance, write_result  # noqa: E402

from nirbeam.pipelines.fs import run_fs  # noqa: E402
from nirbeam.sim.fs import simulate_fs  # noqa: E402


def integrated_ratio(sp: dict, truth: dict) -> tuple[float, float, int]:
    w = np.asarray(sp["wavelength"], float)
    f = np.asarray(sp["flux"], float)
    e = np.asarray(sp["flux_error"], float)
    dq = np.asarray(sp["dq"], np.int64)
    ok = np.isfinite(w) & np.isfinite(f) & ((dq & 1) == 0)
    ref = np.interp(w[ok], truth["wavelength_um"], truth["flux_ujy"])
    return float(f[ok].sum() / ref.sum()), float(np.sqrt((e[ok] ** 2).sum()) / ref.sum()), int(ok.sum())


def one(nod_type: str, columns: int | None, seed: int, work: Path) -> dict:
    sim_dir, out = work / f"sim_{nod_type}", work / f"out_{nod_type}"
    t0 = time.perf_counter()
    over = {"x_window": (1201, columns)} if columns else {}
    sim = simulate_fs(sim_dir, "fs", seed, nod_type=nod_type, **over)
    t1 = time.perf_counter()
    res = run_fs([str(sim_dir)], str(out), refs_dir=str(sim.refs_dir), overwrite=True)
    t2 = time.perf_counter()
    truth = json.loads(sim.truth_json.read_text())["sources"]
    rows = {}
    for r in res.summary["slits"].values():
        for sid, t in truth.items():
            if t["slit"] != r["slit"]:
                continue
            for m, sp in r["spectra"].items():
                ratio, err, n = integrated_ratio(sp, t)
                rows[f"{r['slit']}:{m}"] = {"source_id": int(sid), "source_type": t["source_type"],
                                           "method": m, "how": sp["how"],
                                           "integrated_over_truth": round(ratio, 5),
                                           "statistical_error": round(err, 5), "columns": n,
                                           "product": m == r["main"]}
            if r["primary"]:
                rows[f"{r['slit']}:centers"] = {"header": r["centers_header"],
                                               "fitted": r.get("centers_fitted")}
    return {"nod_type": nod_type, "offsets_arcsec": list(sim.config.offsets),
            "nints": sim.config.nints, "ngroups": sim.config.ngroups,
            "frame": sim.config.frame, "columns": columns or 2048,
            "simulate_s": round(t1 - t0, 1), "pipeline_s": round(t2 - t1, 1), "results": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--columns", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "fs_nod_background.json"))
    ap.add_argument("--nods", default="2-POINT-NOD,3-POINT-NOD,5-POINT-NOD")
    a = ap.parse_args(argv)
    start = provenance(argv if argv is not None else sys.argv[1:])
    runs = []
    with tempfile.TemporaryDirectory(prefix="fs_bench_") as tmp:
        for nod in a.nods.split(","):
            r = one(nod, a.columns, a.seed, Path(tmp))
            runs.append(r)
            for k, v in r["results"].items():
                if "integrated_over_truth" in v:
                    print(f"{nod:12s} {k:24s} {v['integrated_over_truth']:.5f} +- {v['statistical_error']:.5f}")
    summary = {}
    for r in runs:
        res = r["results"]
        summary[r["nod_type"]] = {
            "S1600A1_point_joint": res["S1600A1:joint"]["integrated_over_truth"],
            "S1600A1_point_nod_difference": res["S1600A1:nod"]["integrated_over_truth"],
            "S200A2_extended_masked": res.get("S200A2:masked", {}).get("integrated_over_truth"),
        }
    write_result(a.out, {"benchmark": "fs_nod_background", "summary": summary, "runs": runs},
                 argv, start=start)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
