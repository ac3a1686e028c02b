"""MOS on the three real CEERS nods (source 933): nirbeam's spectrum against jwst 3.0's own
extraction of the same files, in the same run.

nirbeam: ``nirbeam.pipelines.mos`` (fitted profile, joint nod fit, optimal, nod
combination, SB * PIXAR_SR). jwst: ``bench/mos_ceers_jwst_reference.py`` run with
``.venv-jwst`` (jwst's nod background, then ``run_extract1d`` box on the trace nirbeam
fitted, +/- 2.5 rows); nirbeam's box on the same aperture and background is compared too,
to separate the extraction method from the flux scale.

    .venv/bin/python bench/mos_ceers.py            # writes bench/results/mos_ceers.json
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = "/work/shared/data/modes/mos_ceers"
JWST_PY = next((p for p in (REPO / ".venv-jwst" / "bin" / "python",
                            Path(os.environ.get("NIRBEAM_JWST_VENV", "/work/main/.venv-jwst")) / "bin" / "python")
                if p.exists()), REPO / ".venv-jwst" / "bin" / "python")


def _binned(w, f, v, edges):
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = np.isfinite(w) & np.isfinite(f) & np.isfinite(v) & (v > 0) & (w >= lo) & (w < hi)
        out.append(np.nan if m.sum() < 3 else float(np.sum(f[m] / v[m]) / np.sum(1 / v[m])))
    return np.array(out)


def nod_sky(profile: dict) -> dict:
    """The nods' levels on pixels the source does not reach in any nod (> 3 sigma from
    every fitted centre along the trace): a ratio of sums to nod 1, and the mean
    difference (MJy/sr), per band of rows between the source positions."""
    import glob

    from nirbeam.sources.level2 import read_level2

    S = [read_level2(p)[0] for p in sorted(glob.glob(os.path.join(DATA, "*.fits")))]
    R = np.stack([x.sci for x in S]).astype(float)
    Q = np.stack([x.dq for x in S])
    ny, nx = R.shape[1:]
    yy = np.arange(ny)[:, None] - profile["trace_slope_rows_per_col"] * (np.arange(nx)[None, :] - profile["x_ref"])
    far = np.ones((ny, nx), bool)
    for c in profile["centers_px"]:
        far &= np.abs(yy - c) > 3 * max(profile["sigma0_px"], 1.0)
    g = far & np.isfinite(R).all(0) & ((Q & 1) == 0).all(0)
    out = {"pixels": int(g.sum()), "ratio_to_nod1": [float(R[k][g].sum() / R[0][g].sum()) for k in range(3)],
           "mean_diff_to_nod1_mjy_sr": [float((R[k][g] - R[0][g]).mean()) for k in range(3)],
           "mean_level_mjy_sr": float(R[0][g].mean())}
    return out


def main(argv=None):
    from astropy.table import Table

    from nirbeam.pipelines.mos import run_level2

    runs = {}
    for variance in ("model", "files"):
        out = tempfile.mkdtemp(prefix=f"mos_ceers_{variance}_")
        summ = run_level2([DATA], out, variance=variance)
        t = Table.read(os.path.join(out, "spec1d_933.ecsv"))
        runs[variance] = (summ, [np.asarray(t[c], float) for c in ("wavelength", "flux", "flux_error")])
    summ, (w, f, e) = runs["model"]
    s = summ["slitlets"][0]
    res = {"nirbeam": {k: s[k] for k in ("profile", "flux_conversion", "outliers_rejected",
                                          "good_elements", "median_flux_ujy", "snr", "comparison",
                                          "joint_fit_chi2_per_dof", "variance")},
           "wall_s": summ["wall_s"], "nod_sky": nod_sky(s["profile"])}
    _, (_, f_files, e_files) = runs["files"]
    sf = runs["files"][0]["slitlets"][0]
    res["nirbeam_files_variance"] = {k: sf[k] for k in ("profile", "snr", "comparison")}
    prof = s["profile"]
    if JWST_PY.exists():
        cmd = [str(JWST_PY), str(REPO / "bench" / "mos_ceers_jwst_reference.py"),
               "--centers", ",".join(str(c) for c in prof["centers_px"]),
               "--slope", str(prof["trace_slope_rows_per_col"]), "--x-ref", str(prof["x_ref"]),
               "--half", "2.5"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            res["jwst"] = {"error": r.stderr[-2000:]}
        else:
            ref = json.loads(r.stdout)
            wj = np.asarray(ref["nods"][0]["wavelength"], float)
            fj = np.array([n["flux_jy"] for n in ref["nods"]], float) * 1e6  # uJy
            ej = np.array([n["flux_error_jy"] for n in ref["nods"]], float) * 1e6
            ok = np.isfinite(fj) & np.isfinite(ej) & (ej > 0)
            wgt = np.where(ok, 1 / np.where(ok, ej, 1) ** 2, 0)
            fjc = np.where(wgt.sum(0) > 0, (wgt * np.nan_to_num(fj)).sum(0) / wgt.sum(0), np.nan)
            ejc = np.where(wgt.sum(0) > 0, 1 / np.sqrt(wgt.sum(0)), np.nan)
            edges = np.arange(1.35, 5.36, 0.25)
            bn = _binned(w, f, e ** 2, edges)
            bj = _binned(wj, fjc, ejc ** 2, edges)
            m = np.isfinite(bn) & np.isfinite(bj)
            both = np.isfinite(f) & np.isfinite(fjc) & (np.abs(w - wj) < 0.05)
            res["jwst"] = {
                "version": ref["jwst"], "aperture": "box, trace +/- 2.5 rows, nod background",
                "sum_ratio_nirbeam_optimal_over_jwst_box": float(f[both].sum() / fjc[both].sum()),
                "sum_ratio_nirbeam_optimal_files_variance_over_jwst_box":
                    float(f_files[both].sum() / fjc[both].sum()) if np.isfinite(f_files[both]).all() else None,
                "sum_ratio_jwst_box_equal_weight_nods_over_jwst_box":
                    float(np.nanmean(fj, axis=0)[both].sum() / fjc[both].sum()),
                "binned_ratio_median": float(np.median(bn[m] / bj[m])),
                "binned_ratio_range": [float(np.min(bn[m] / bj[m])), float(np.max(bn[m] / bj[m]))],
                "binned_shape_correlation": float(np.corrcoef(bn[m], bj[m])[0, 1]),
                "bins_um": 0.25, "n_bins": int(m.sum()),
                "median_snr_per_element_jwst_box": float(np.nanmedian(fjc / ejc)),
                "median_snr_per_element_nirbeam_optimal": float(np.nanmedian(f / e)),
                "wavelength_max_abs_diff_um": float(np.nanmax(np.abs(w[both] - wj[both]))),
            }
    else:
        res["jwst"] = {"skipped": "no .venv-jwst (pip install jwst==3.0.0 into .venv-jwst)"}
    print(json.dumps(res, indent=1))
    write_result(REPO / "bench" / "results" / "mos_ceers.json", res, argv)


if __name__ == "__main__":
    main()
