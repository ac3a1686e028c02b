"""MOS on the simulator: every source's integrated flux against the truth, the bar-shadow
profile measured from the sky slitlets against the truth and against the reference
profile, the failed-open and stuck-closed shutters found or not.

    .venv/bin/python bench/mos_sim.py [--preset mos-small] [--seed 1] [--out DIR]
        [--readout auto|traditional|NRSIRS2]
    # writes bench/results/mos_sim_<preset>.json (mos_sim_<preset>_<readout>.json when
    # --readout is given)
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def evaluate(sim_dir, out_dir) -> dict:
    """Compare a finished run (``out_dir``) with the simulation's truth (``sim_dir``)."""
    from astropy.table import Table

    from nirbeam.transforms.barshadow import profile_rms

    truth = json.loads((Path(sim_dir) / "truth.json").read_text())
    run = json.loads((Path(out_dir) / "run.json").read_text())
    res = {"sources": {}}
    for sid, t in truth["sources"].items():
        tab = Table.read(Path(out_dir) / f"spec1d_{sid}.ecsv")
        w = np.asarray(tab["wavelength"], float)
        f = np.asarray(tab["flux"], float)
        e = np.asarray(tab["flux_error"], float)
        ok = np.isfinite(w) & np.isfinite(f)
        dw = np.gradient(w)
        lo, hi = w[ok].min() - dw[ok][0] / 2, w[ok].max() + dw[ok][-1] / 2
        tw = np.asarray(t["wavelength_um"])
        tf = np.asarray(t["flux_ujy"])
        m = (tw >= lo) & (tw <= hi)
        ref = float(np.sum(tf[m] * np.gradient(tw)[m]))
        # the measured integral from the first to the last good element (interior gaps
        # interpolated in the spectrum itself, never from the truth), the truth's over the
        # same wavelengths
        span = (w >= w[ok].min()) & (w <= w[ok].max())  # the same range as the truth's
        fi = np.interp(w, w[ok], f[ok])
        got = float(np.sum((fi * dw)[span]))
        err = float(np.sqrt(np.sum((np.where(ok, e, 0) * dw)[span] ** 2)))
        res["sources"][sid] = {"kind": t["kind"], "integrated_truth_ujy_um": ref,
                               "integrated_measured_ujy_um": got, "ratio": got / ref,
                               "ratio_error": err / ref, "missing_elements": int((~ok).sum())}
    ratios = np.array([v["ratio"] for v in res["sources"].values()])
    res["max_abs_flux_error"] = float(np.max(np.abs(ratios - 1)))
    res["all_within_1pct"] = bool(np.all(np.abs(ratios - 1) < 0.01))
    bsh = truth["bar_shadow"]
    tt = np.asarray(bsh["truth"])
    rows = tt > 0.2
    meas = np.asarray(run["bar_shadow"]["measured"], float)
    refp = np.asarray(run["bar_shadow"]["reference_profile"], float)
    res["bar_shadow"] = {"rms_measured_vs_truth": profile_rms(meas, tt, rows),
                         "rms_reference_vs_truth": profile_rms(refp, tt, rows),
                         "max_abs_measured_vs_truth": float(np.nanmax(np.abs(meas - tt)[rows])),
                         "max_abs_reference_vs_truth": float(np.nanmax(np.abs(refp - tt)[rows])),
                         "rows": int(rows.sum()), "sky_slitlets": run["bar_shadow"]["sky_slitlets"]}
    fo = truth["failed_open"]
    found = [u for u in run["unplanned_light"]
             if u["rows"][0] < fo["detector_rows"][1] and u["rows"][1] > fo["detector_rows"][0]]
    res["failed_open"] = {"truth": fo, "found": found, "detected": bool(found),
                          "false_detections": len(run["unplanned_light"]) - len(found)}
    st = truth["stuck_closed"]
    hit = [s for s in run["stuck_closed_shutters"] if s["shutter_column"] == st["column"]]
    res["stuck_closed"] = {"truth": st, "found": run["stuck_closed_shutters"], "detected": bool(hit),
                           "false_detections": len(run["stuck_closed_shutters"]) - len(hit)}
    res["wall_s"] = run["wall_s"]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="mos-small")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--readout", default=None, choices=("auto", "traditional", "NRSIRS2"),
                    help="MOSSimConfig.readout (default: the preset's, auto: full frame IRS2)")
    a = ap.parse_args(argv)
    from nirbeam.pipelines.mos import run_uncal
    from nirbeam.sim.mos import simulate_mos

    base = Path(a.out or tempfile.mkdtemp(prefix="mos_sim_"))
    over = {"readout": a.readout} if a.readout else {}
    sim = simulate_mos(base / "sim", preset=a.preset, seed=a.seed, **over)
    run_uncal([sim.outdir], str(base / "out"), str(sim.refs_dir))
    res = evaluate(sim.outdir, base / "out")
    res["preset"], res["seed"] = a.preset, a.seed
    res["readout"], res["readpatt"] = sim.config.readout, sim.config.readpatt
    print(json.dumps(res, indent=1))
    tag = f"_{a.readout}" if a.readout else ""
    write_result(REPO / "bench" / "results" / f"mos_sim_{a.preset}{tag}.json", res, argv)


if __name__ == "__main__":
    main()
