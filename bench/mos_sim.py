"""MOS on the simulator: every source's integrated flux against the truth, the bar-shadow
profile measured from the sky slitlets against the truth and against the reference
profile, the failed-open and stuck-closed shutters found or not.

    .venv/bin/python bench/mos_sim.py [--preset mos-small] [--seed 1] [--out DIR] [--compare]
        [--readout auto|traditional|NRSIRS2]
    .venv/bin/python bench/mos_sim.py --preset mos --stage2-from DIR --compare   # stage 2 only
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
        # per-element residual against the truth's bin averages (the spectrum's scatter)
        tb = np.array([np.mean(tf[(tw >= wi - d / 2) & (tw < wi + d / 2)]) if ok_i else np.nan
                       for wi, d, ok_i in zip(w, dw, ok, strict=True)])
        resid = (f - tb)[ok]
        rms = float(1.4826 * np.median(np.abs(resid - np.median(resid)))) if resid.size else float("nan")
        res["sources"][sid] = {"kind": t["kind"], "integrated_truth_ujy_um": ref, "resid_rms_ujy": rms,
                               "median_error_ujy": float(np.median(e[ok])) if ok.any() else float("nan"),
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


def stage2_only(sim_dir, first_out, out, background):
    """Stage 2 again on the stage-1 rates a finished run stored (``first_out/cubes.zarr``)."""
    from astropy.io import fits

    from nirbeam.pipelines.common import load_exposure_rate, scan_inputs
    from nirbeam.pipelines.mos import stage2_exposures

    exps = []
    for plan in scan_inputs([str(sim_dir)]):
        path = plan.segments[0].path
        ph = fits.getheader(path)
        keys = {k: ph[k] for k in ("MSAMETFL", "MSAMETID", "PATT_NUM", "NOD_TYPE")}
        rate, var, dq, vr, vp = load_exposure_rate(str(Path(first_out) / "cubes.zarr"),
                                                  plan.meta.group_name, parts=True)
        exps.append({"path": str(Path(path).resolve()), "meta": plan.meta, "keys": keys, "rate": rate,
                     "var": var, "dq": dq, "var_rnoise": vr, "var_poisson": vp, "refs": {}})
    stage2_exposures(exps, str(Path(sim_dir) / "refs"), str(out), max_plots=0,
                     options={"background": background})


def compare_backgrounds(nod: dict, master: dict) -> dict:
    """Per source: |ratio - 1| and the flux scatter (the spectrum's residual against the
    truth, binned to the elements, robust sigma / stated error) with either background."""
    out = {"per_source": {}}
    for sid in nod["sources"]:
        a, b = nod["sources"][sid], master["sources"][sid]
        out["per_source"][sid] = {"kind": a["kind"], "ratio_nod": a["ratio"], "ratio_master": b["ratio"],
                                  "error_nod": a["ratio_error"], "error_master": b["ratio_error"],
                                  "resid_rms_nod": a.get("resid_rms_ujy"), "resid_rms_master": b.get("resid_rms_ujy")}
    ps = out["per_source"].values()
    for k in ("nod", "master"):
        r = np.array([v[f"ratio_{k}"] for v in ps])
        e = np.array([v[f"error_{k}"] for v in ps])
        rr = np.array([v[f"resid_rms_{k}"] for v in ps], float)
        out[k] = {"mean_ratio": float(r.mean()), "std_ratio": float(r.std()), "max_abs_dev": float(np.abs(r - 1).max()),
                  "median_ratio_error": float(np.median(e)), "median_resid_rms_ujy": float(np.nanmedian(rr))}
    out["master_better_flux"] = int(sum(abs(v["ratio_master"] - 1) < abs(v["ratio_nod"] - 1) for v in ps))
    out["master_smaller_scatter"] = int(sum((v["resid_rms_master"] or np.inf) < (v["resid_rms_nod"] or np.inf)
                                            for v in ps))
    out["n_sources"] = len(out["per_source"])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="mos-small")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--background", choices=("nod", "master"), default="master",
                    help="[mos] background of the run (both are evaluated with --compare)")
    ap.add_argument("--stage2-from", default=None,
                    help="reuse the stage-1 rates of an earlier run in this folder (its sim/ and "
                         "out/cubes.zarr) and rerun stage 2 only, into OUT/out_<background>")
    ap.add_argument("--compare", action="store_true",
                    help="stage 2 with both backgrounds; the record holds both")
    ap.add_argument("--readout", default=None, choices=("auto", "traditional", "NRSIRS2"),
                    help="MOSSimConfig.readout (default: the preset's, auto: full frame IRS2)")
    a = ap.parse_args(argv)
    from nirbeam.pipelines.mos import run_uncal
    from nirbeam.sim.mos import simulate_mos

    over = {"readout": a.readout} if a.readout else {}
    base = Path(a.stage2_from or a.out or tempfile.mkdtemp(prefix="mos_sim_"))
    if a.stage2_from:
        sim_dir = base / "sim"
    else:
        sim = simulate_mos(base / "sim", preset=a.preset, seed=a.seed, **over)
        sim_dir = sim.outdir
        run_uncal([sim.outdir], str(base / "out"), str(sim.refs_dir), config={"mos": {"background": a.background}})
    backgrounds = ("nod", "master") if a.compare else (a.background,)
    per = {}
    for bkg in backgrounds:
        out = base / "out"
        if a.stage2_from or bkg != a.background:
            out = base / f"out_{bkg}"
            stage2_only(sim_dir, base / "out", out, bkg)
        per[bkg] = evaluate(sim_dir, out)
    res = dict(per[backgrounds[0]])
    if a.compare:
        res = {"background": per, "comparison": compare_backgrounds(per["nod"], per["master"]),
               "default_background": a.background}
        res.update({k: per[a.background][k] for k in ("sources", "max_abs_flux_error", "all_within_1pct",
                                                     "bar_shadow", "failed_open", "stuck_closed")})
    res["preset"], res["seed"] = a.preset, a.seed
    res["stage1"] = "reused from an earlier run (--stage2-from)" if a.stage2_from else "run here"
    if not a.stage2_from:
        res["readout"], res["readpatt"] = sim.config.readout, sim.config.readpatt
    print(json.dumps(res, indent=1))
    tag = f"_{a.readout}" if a.readout else ""
    write_result(REPO / "bench" / "results" / f"mos_sim_{a.preset}{tag}.json", res, argv)


if __name__ == "__main__":
    main()
