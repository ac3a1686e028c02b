"""Science regression: white-light RMS / theory and depth pull over many seeds.

For each preset (``prism-sub512``, ``g395h-sub2048``) and seed, the simulator writes a
short exposure with every realistic effect of its preset on (1/f noise in readout
order, even/odd drifts along the fast axis, kTC, noisy references, trace jitter,
snowballs: see ``nirbeam.sim.simulator.SimConfig``), ``nirbeam run`` reduces it with
default settings (simulated references, the simulator's transit parameters as the fit
start), and per detector we record

* ``ratio``: white-light residual RMS of the quick-look fit / the simulator's
  theoretical photon + read noise (median ``theoretical_sigma_white``);
* ``pull``: (fitted Rp/R* - true white-light Rp/R*) / fitted error, where the true value
  is the flux-weighted ``sqrt(mean(rp^2))`` over the columns of the TRACE truth table;
* ``oracle_ratio``: the same white-light statistic for the simulator's own photon-noise
  draw alone: the Poisson increments are re-drawn from the simulator's random streams
  (``photon_oracle``; reproduces the uncal ramps exactly when every other effect is off,
  checked in tests/test_science_regression_oracle.py), fitted with an unweighted
  least-squares slope per pixel and summed over the +-``aperture_halfwidth`` box around
  the true trace, divided by the photon-only theory. With 80 integrations an RMS
  scatters by ~8% (1/sqrt(2 N)), so a curve at 1.2x may be its photon draw: the
  pipeline is judged by ``ratio_vs_draw`` = RMS / sqrt(draw RMS^2 + read^2), the draw
  fitted with stcal's optimal weights (the pipeline's ramp fit) and its read-noise
  variance. Not exactly 1.0 for a pipeline that adds nothing: groups lost to
  saturation count as excess, and stcal's weights chosen from each ramp's own S/N are
  not the oracle's (prism-sub512 seed 100, 80 integrations, an ideal detector and a
  bare pipeline: 1.057 on the aperture sums, 1.037 without its 48 saturating pixels);
* ``chi2``: mean of ((rate - TRUE_RATE - dark) / ERR)^2 over good pixels within the
  aperture is not computed here (see tests/test_g395h_noise.py); jumps per integration
  (from run.json's counters when present) are not either.

Run::

    .venv/bin/python bench/science_regression.py [--seeds 10] [--nints 60] [--ngroups 20]
        [--presets prism-sub512,g395h-sub2048] [--out bench/results/science_regression.json]
        [--set FIELD=VALUE ...] [--config FILE] [--pipeline-path DIR]

The JSON holds every (preset, seed, detector) row, the distribution (median, 10/90%,
max of ratio; median and max |pull|), the git hash and the command line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)

RESULTS = Path(__file__).resolve().parent / "results" / "science_regression.json"


def _git_hash() -> str:
    try:
        h = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                           cwd=Path(__file__).parent, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=Path(__file__).parent,
                               check=True).stdout.strip()
        return h + ("-dirty" if dirty else "")
    except Exception:  # noqa: BLE001
        return "unknown"


def true_white_rp(truth_path) -> float:
    """Flux-weighted white-light Rp/R* of one detector's truth file."""
    tr = fits.getdata(truth_path, "TRACE")
    f = np.asarray(tr["stellar_flux_dn_s"], np.float64)
    rp = np.asarray(tr["rp_rs"], np.float64)
    return float(np.sqrt(np.sum(f * rp**2) / np.sum(f)))


def photon_draw(res, det: str):
    """``(props, draw)``: the simulator's detector properties of ``det`` and a function
    ``draw(i, rate) -> float64 (ngroups, ny, nx)``, the linear accumulated signal (DN,
    before non-linearity, bias and read noise) of integration ``i`` (0-based) for the
    source rate ``rate`` (DN/s, ``TRUE_RATE[i]``): its Poisson increments from the
    simulator's stream ``default_rng([seed, detector index, 2, i])`` (the stream's first
    draw, see ``nirbeam.sim.physics.simulate_integration``). Reads the simulator's
    internals: a benchmark diagnostic only."""
    import dataclasses

    from nirbeam.sim import physics as phys
    from nirbeam.sim.simulator import DETECTORS

    cfg = res.config
    didx = DETECTORS.index(det)
    dcfg = dataclasses.replace(cfg, substrt2=cfg.substrt2_for(det))
    props = phys.make_detector_props(np.random.default_rng([res.seed, didx, 1]), dcfg)
    gain = props.gain.astype(np.float64)
    ng, tg = cfg.ngroups, cfg.tgroup

    def draw(i: int, rate: np.ndarray) -> np.ndarray:
        lam = ((np.asarray(rate, np.float64) * props.qe + props.dark_rate) * gain) * tg
        inc = np.random.default_rng([res.seed, didx, 2, int(i)]).poisson(
            np.broadcast_to(lam, (ng,) + lam.shape)).astype(np.float64)
        return np.cumsum(inc, axis=0) / gain

    return props, draw


#: stcal's optimal-weighting powers and their S/N limits (ramp_fit OLS_C: |(i - mid)/mid|**P)
_OPT_POWERS = (0.0, 0.4, 1.0, 3.0, 6.0, 10.0)
_OPT_SNR = (5.0, 10.0, 20.0, 50.0, 100.0)


def _slope_weights(ng: int, power: float, tgroup: float) -> np.ndarray:
    """Weights c (ngroups,) with slope = sum c_k S_k for stcal's weights |(k - mid)/mid|**P
    (P = 0: unweighted least squares)."""
    k = np.arange(ng, dtype=np.float64)
    mid = 0.5 * (ng - 1)
    w = np.abs((k - mid) / mid) ** power if power > 0 else np.ones(ng)
    xm = np.sum(w * k) / np.sum(w)
    return w * (k - xm) / (np.sum(w * (k - xm) ** 2) * tgroup)


def photon_oracle(res, det: str) -> dict:
    """The simulator's photon-noise draw alone, as a white-light curve (module notes).

    Every pixel's accumulated signal (:func:`photon_draw`) is fitted with a slope, and the
    slope errors are summed over the +-aperture_halfwidth box around the true trace
    centre (the simulator's aperture of ``theoretical_sigma_white``): once unweighted
    (the estimator of the truth's theory: ``oracle_rms_ppm``, ``oracle_ratio``), once with
    stcal's optimal weights (power from each pixel's expected S/N over the ramp, the
    pipeline's ramp fit on a clean ramp: ``oracle_opt_rms_ppm``, with ``read_opt_ppm``
    the read-noise part of the theory scaled by that estimator's read variance).

    Returns oracle_rms_ppm, oracle_opt_rms_ppm (std over integrations of the summed error
    / aperture flux), photon_theory_ppm (the unweighted slope's Poisson variance,
    summed), read_theory_ppm (the rest of the truth's ``theoretical_sigma_white``),
    read_opt_ppm and oracle_ratio = oracle_rms_ppm / photon_theory_ppm.
    """
    cfg = res.config
    props, draw = photon_draw(res, det)
    truth = fits.getdata(res.truth[det], "TRUE_RATE")
    tr = fits.getdata(res.truth[det], "TRACE")
    lc = fits.getdata(res.truth[det], "LIGHTCURVE")
    nints, ny, nx = truth.shape
    ng, tg = cfg.ngroups, cfg.tgroup
    gain = props.gain.astype(np.float64)
    ap = np.abs(np.arange(ny)[:, None] - tr["y_center"][None, :]) <= cfg.aperture_halfwidth
    ap &= props.qe > 0
    ols = _slope_weights(ng, 0.0, tg)
    opt = np.stack([_slope_weights(ng, p, tg) for p in _OPT_POWERS])  # (6, ng)
    kp = 6.0 * (ng * ng + 1) / (5.0 * ng * (ng * ng - 1))
    # the power of each pixel from its expected S/N over the ramp (stcal: dd g / sqrt(rn_e^2 + dd g))
    mean_rate = truth.mean(axis=0).astype(np.float64) * props.qe + props.dark_rate
    dd = mean_rate * (ng - 1) * tg
    rn_e2 = (props.rn_cds.astype(np.float64) * gain) ** 2 / 2.0
    snr = dd * gain / np.sqrt(np.maximum(rn_e2 + dd * gain, 1e-30))
    pidx = np.searchsorted(np.asarray(_OPT_SNR), snr, side="right")
    copt = opt[pidx]  # (ny, nx, ng)
    # read-noise part of the theory, scaled from the unweighted to the weighted estimator
    rn2 = props.rn_cds.astype(np.float64) ** 2 / 2.0
    r_ols = float((rn2 * np.sum(ols**2))[ap].sum())
    r_opt = float((rn2 * np.sum(copt**2, axis=-1))[ap].sum())
    err = np.empty(nints)
    err_opt = np.empty(nints)
    vphot = np.empty(nints)
    for i in range(nints):
        rate = truth[i].astype(np.float64)
        sig = draw(i, rate)
        true = rate * props.qe + props.dark_rate
        err[i] = float(((np.tensordot(ols, sig, axes=(0, 0)) - true) * ap).sum())
        err_opt[i] = float(((np.einsum("yxk,kyx->yx", copt, sig) - true) * ap).sum())
        vphot[i] = float((kp * np.maximum(true, 0) / (gain * tg))[ap].sum())
    apf = np.asarray(lc["aperture_flux_dn_s"], np.float64)
    oracle = 1e6 * float(np.std(err / apf))
    oracle_opt = 1e6 * float(np.std(err_opt / apf))
    photon = 1e6 * float(np.median(np.sqrt(vphot) / apf))
    theory = 1e6 * float(np.median(lc["theoretical_sigma_white"]))
    read = float(np.sqrt(max(theory**2 - photon**2, 0.0)))
    read_opt = read * float(np.sqrt(r_opt / r_ols)) if r_ols > 0 else read
    return {"oracle_rms_ppm": oracle, "oracle_opt_rms_ppm": oracle_opt,
            "photon_theory_ppm": photon, "read_theory_ppm": read, "read_opt_ppm": read_opt,
            "oracle_ratio": oracle / photon if photon > 0 else float("nan")}


def floor_terms(rms_ppm: float, theory_ppm: float, draw_ppm: float, read_ppm: float,
                criterion: float = 1.05) -> dict:
    """What a reduction could reach on this curve: ``floor_ratio`` = the photon draw
    (stcal-weighted) + its read noise, in units of the theory (no reduction that keeps
    the photons can go below it); ``excess_ppm`` = the pipeline's RMS above that floor,
    in quadrature; ``excess_allowed_ppm`` = the most excess that keeps the curve at
    ``criterion`` x theory (NaN when the floor alone is above it: not reachable)."""
    floor = float(np.hypot(draw_ppm, read_ppm))
    allowed2 = (criterion * theory_ppm) ** 2 - floor**2
    return {"floor_ratio": floor / theory_ppm,
            "excess_ppm": float(np.sqrt(max(rms_ppm**2 - floor**2, 0.0))),
            "excess_allowed_ppm": float(np.sqrt(allowed2)) if allowed2 >= 0 else float("nan")}


def run_one(preset: str, seed: int, nints: int, ngroups: int | None, workdir: Path,
            overrides: dict, config: str | None, pipeline_path: str | None = None,
            fix_geometry: bool = True, oracle: bool = True) -> list[dict]:
    """Simulate, reduce and score one exposure; one row per detector."""
    from nirbeam.sim.simulator import simulate
    from nirbeam.stream.cli import main, write_sim_config

    kw = dict(overrides)
    if ngroups is not None:
        kw["ngroups"] = ngroups
    if preset.startswith("g395h"):
        kw.setdefault("detectors", ("NRS1", "NRS2"))
        kw.setdefault("ints_per_segment", nints)
    t0 = time.perf_counter()
    res = simulate(workdir / "sim", preset=preset, nints=nints, seed=seed, **kw)
    t_sim = time.perf_counter() - t0
    cfg = write_sim_config(res)
    if fix_geometry:
        # the depth pull needs a well-posed fit: a/R* and inclination at the simulator's
        # values (known), only t0 and Rp/R* free (40-60 points do not constrain a and inc)
        txt = Path(cfg).read_text().replace('free = ["t0", "rp", "a", "inc"]', 'free = ["t0", "rp"]')
        Path(cfg).write_text(txt)
    if config:
        # append the user's sections after the [fit] section of the sim config
        with open(cfg, "a") as fh:
            fh.write("\n" + Path(config).read_text())
    out = workdir / "out"
    t0 = time.perf_counter()
    args = ["run", str(res.outdir), "--refs", str(res.refs_dir), "--out", str(out),
            "--config", cfg, "--no-progress"]
    if pipeline_path:
        # another nirbeam (e.g. `git archive <commit> nirbeam`) on the same simulated files
        import os

        env = {**os.environ, "PYTHONPATH": str(pipeline_path)}
        code = "import sys; from nirbeam.stream.cli import main; sys.exit(main(sys.argv[1:]))"
        rc = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=str(workdir),
                            capture_output=True, text=True).returncode  # cwd: not this checkout
    else:
        rc = main(args)
    t_run = time.perf_counter() - t0
    rows = []
    for det in res.config.detectors:
        group = f"{res.exposure}_{det.lower()}"
        row = {"preset": preset, "seed": seed, "detector": det, "nints": nints,
               "ngroups": res.config.ngroups, "rc": rc, "sim_s": round(t_sim, 1),
               "run_s": round(t_run, 1)}
        fp = out / f"fit_{group}.json"
        if rc != 0 or not fp.exists():
            row["error"] = f"run rc={rc}, fit file present={fp.exists()}"
            rows.append(row)
            continue
        fit = json.loads(fp.read_text())
        lc = fits.getdata(res.truth[det], "LIGHTCURVE")
        theory = 1e6 * float(np.median(lc["theoretical_sigma_white"]))
        rp_true = true_white_rp(res.truth[det])
        rp, erp = fit["params"]["rp"], fit["errors"]["rp"]
        row.update({
            "rms_ppm": float(fit["rms_ppm"]), "theory_ppm": theory,
            "ratio": float(fit["rms_ppm"]) / theory,
            "rp": rp, "rp_err": erp, "rp_true": rp_true,
            "pull": (rp - rp_true) / erp if erp and erp > 0 else float("nan"),
            "fit_points": fit.get("n_points"),  # white-light points the fit used (not flagged)
        })
        if oracle:
            o = photon_oracle(res, det)
            row.update(o)
            # the pipeline against the same estimator on the photon draw alone, plus that
            # estimator's read noise: 1.0 when the pipeline adds nothing else
            row["ratio_vs_draw"] = float(fit["rms_ppm"]) / float(
                np.hypot(o["oracle_opt_rms_ppm"], o["read_opt_ppm"]))
            row.update(floor_terms(row["rms_ppm"], theory, o["oracle_opt_rms_ppm"],
                                   o["read_opt_ppm"]))
        rows.append(row)
    return rows


def _aperture_residuals(work: Path, det: str, hw: float):
    """Per integration and column: the sum over the box +-``hw`` px around the true trace
    of ``rateints - TRUE_RATE`` (NaN where a box pixel is DO_NOT_USE or JUMP_DET) and of
    ERR^2, from a kept work folder (``--keep``)."""
    import zarr

    tf = next((work / "sim").glob(f"*_{det.lower()}_truth.fits"))
    truth = fits.getdata(tf, "TRUE_RATE").astype(np.float64)
    yc = np.asarray(fits.getdata(tf, "TRACE")["y_center"], np.float64)
    root = zarr.open_group(str(work / "out" / "cubes.zarr"), mode="r")
    g = root[next(k for k in root.group_keys() if k.endswith(det.lower()))]["rateints"]
    sci, err, dq = (g["sci"][:].astype(np.float64), g["err"][:].astype(np.float64),
                    g["dq"][:])
    ap = np.abs(np.arange(sci.shape[1])[:, None] - yc[None, :]) <= hw
    r = np.where(ap, sci - truth, 0.0).sum(axis=1)
    r[(((dq & 5) != 0) & ap[None]).any(axis=1)] = np.nan
    return r, np.where(ap, err**2, 0.0).sum(axis=1)


def column_noise(keep_a: Path, keep_b: Path, det: str = "NRS1", hw: float = 4.0,
                 widths=(1, 8, 64)) -> list[dict]:
    """Two runs' spectroscopic noise on the same simulated files (two ``--keep`` folders
    of one preset and seeds, e.g. two settings): per work folder and bin width ``w``
    (columns summed), the variance of the aperture residuals over integrations (static
    part removed) of run b over run a (``var_ratio_sum`` over all bins, and the median
    bin's) and each run's median chi^2 of the binned sums against their ERR (integrations
    where every column of the bin is usable)."""
    out = []
    for wa in sorted(Path(keep_a).iterdir()):
        wb = Path(keep_b) / wa.name
        if not (wb / "out").exists():
            continue
        (ra, ea), (rb, eb) = _aperture_residuals(wa, det, hw), _aperture_residuals(wb, det, hw)
        bad = ~(np.isfinite(ra) & np.isfinite(rb))
        ra[bad] = rb[bad] = np.nan
        row = {"work": wa.name, "detector": det}
        for w in widths:
            nb = ra.shape[1] // w
            stats = []
            for r, e in ((ra, ea), (rb, eb)):
                rr = r[:, :nb * w].reshape(r.shape[0], nb, w).sum(axis=2)  # NaN if any
                ee = e[:, :nb * w].reshape(e.shape[0], nb, w).sum(axis=2)
                with np.errstate(invalid="ignore"):
                    rr = rr - np.nanmean(rr, axis=0)
                    stats.append((np.nanvar(rr, axis=0), np.nanmean(rr**2 / ee, axis=0)))
            (va, ca), (vb, cb) = stats
            m = np.isfinite(va) & np.isfinite(vb) & (va > 0)
            row[f"w{w}"] = {"bins": int(m.sum()),
                            "var_ratio_sum": float(vb[m].sum() / va[m].sum()),
                            "var_ratio_median": float(np.median(vb[m] / va[m])),
                            "chi2_a": float(np.median(ca[m])), "chi2_b": float(np.median(cb[m]))}
        out.append(row)
    return out


def summarise(rows: list[dict]) -> dict:
    """Distribution per (preset, detector)."""
    out = {}
    keys = sorted({(r["preset"], r["detector"]) for r in rows})
    for p, d in keys:
        sel = [r for r in rows if r["preset"] == p and r["detector"] == d and "ratio" in r]
        if not sel:
            continue
        ratio = np.array([r["ratio"] for r in sel])
        pull = np.array([r["pull"] for r in sel])
        extra = {}
        if all("oracle_ratio" in r for r in sel):
            orc = np.array([r["oracle_ratio"] for r in sel])
            vd = np.array([r["ratio_vs_draw"] for r in sel])
            extra = {
                "oracle_ratio_median": float(np.median(orc)),
                "oracle_ratio_max": float(orc.max()),
                "n_oracle_above_1.05": int((orc > 1.05).sum()),
                "ratio_vs_draw_median": float(np.median(vd)),
                "ratio_vs_draw_p10": float(np.percentile(vd, 10)),
                "ratio_vs_draw_p90": float(np.percentile(vd, 90)),
                "ratio_vs_draw_max": float(vd.max()),
                "n_ratio_vs_draw_above_1.05": int((vd > 1.05).sum()),
                # curves whose photon draw + read noise alone is above 1.05 x theory
                "n_floor_above_1.05": int(sum(r.get("floor_ratio", 0.0) > 1.05 for r in sel)),
                # pooled over seeds: sqrt(mean ratio^2), less scatter than any one curve
                "ratio_pooled": float(np.sqrt(np.mean(ratio**2))),
                "oracle_ratio_pooled": float(np.sqrt(np.mean(orc**2))),
            }
        out[f"{p}/{d}"] = {
            "n": len(sel),
            "ratio_median": float(np.median(ratio)),
            "ratio_p10": float(np.percentile(ratio, 10)),
            "ratio_p90": float(np.percentile(ratio, 90)),
            "ratio_max": float(ratio.max()),
            "n_ratio_above_1.25": int((ratio > 1.25).sum()),
            "n_ratio_above_1.05": int((ratio > 1.05).sum()),
            "pull_median": float(np.median(pull)),
            "pull_rms": float(np.sqrt(np.mean(pull**2))),
            "abs_pull_max": float(np.abs(pull).max()),
            "n_abs_pull_above_3": int((np.abs(pull) > 3).sum()),
            **extra,
        }
    return out


def main(argv=None) -> int:
    import dataclasses

    from nirbeam.sim.simulator import SimConfig, _parse_value

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--seed0", type=int, default=100)
    ap.add_argument("--nints", default="60",
                    help="integrations: N, or per preset, e.g. g395h-sub2048=40,prism-sub512=80")
    ap.add_argument("--ngroups", type=int, default=None)
    ap.add_argument("--presets", default="prism-sub512,g395h-sub2048")
    ap.add_argument("--set", action="append", default=[], help="SimConfig FIELD=VALUE")
    ap.add_argument("--config", default=None, help="extra nirbeam TOML appended to the run config")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--keep", default=None, help="keep the work folders under this path")
    ap.add_argument("--free-geometry", action="store_true",
                    help="also fit a/R* and inclination (the sim config's default)")
    ap.add_argument("--no-oracle", action="store_true",
                    help="skip the photon-draw oracle (photon_oracle)")
    ap.add_argument("--pipeline-path", default=None,
                    help="run `nirbeam run` from this folder (PYTHONPATH), e.g. an older commit")
    ap.add_argument("--column-noise", nargs=2, metavar=("KEEP_A", "KEEP_B"),
                    help="only compare two --keep folders' per-column noise (column_noise)")
    ap.add_argument("--detectors", default="NRS1", help="with --column-noise")
    a = ap.parse_args(argv)
    if a.column_noise:
        prov = provenance()
        rows = [r for d in a.detectors.split(",") for r in column_noise(*a.column_noise, d)]
        for r in rows:
            print(json.dumps(r), flush=True)
        write_result(a.out, {"column_noise": rows, "keep": a.column_noise}, start=prov,
                     indent=1)
        return 0
    types = {f.name: f.type for f in dataclasses.fields(SimConfig)}
    overrides = {}
    for item in a.set:
        k, v = item.split("=", 1)
        overrides[k] = _parse_value(types[k], v)
    rows: list[dict] = []
    git = _git_hash()  # the code measured (taken before the runs)
    prov = provenance()
    t_all = time.perf_counter()
    nints_for = {}
    for item in str(a.nints).split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            nints_for[k.strip()] = int(v)
        else:
            nints_for["*"] = int(item)
    for preset in a.presets.split(","):
        nints = nints_for.get(preset, nints_for.get("*", 60))
        ng = a.ngroups
        if ng is None:
            ng = 20 if preset.startswith("g395h") else None
        for s in range(a.seeds):
            seed = a.seed0 + s
            base = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="nb_sci_"))
            work = base / f"{preset}_{seed}"
            if work.exists():
                shutil.rmtree(work)
            work.mkdir(parents=True)
            try:
                rr = run_one(preset, seed, nints, ng, work, overrides, a.config,
                             a.pipeline_path, not a.free_geometry, not a.no_oracle)
            finally:
                if not a.keep:
                    shutil.rmtree(base, ignore_errors=True)
            for r in rr:
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                  for k, v in r.items()}), flush=True)
            rows.extend(rr)
    summary = summarise(rows)
    doc = {
        "git": git,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "wall_s": round(time.perf_counter() - t_all, 1),
        "summary": summary,
        "rows": rows,
    }
    write_result(a.out, doc, start=prov, indent=1)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
