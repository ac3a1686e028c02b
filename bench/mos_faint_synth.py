"""A faint galaxy like CEERS 933 (S/N ~2 per spectral element) on synthetic level-2-like
nods where the truth is known: is the optimal extraction or the box biased?

Three 3-shutter nods of a 25-row slitlet (rows 0-2 and 24 off the slit, 5 % of the pixels
flagged at random), sky 0.1 per pixel (MJy/sr-like, structured along the slit), a
Gaussian source (sigma 0.95 px) at rows 14 / 19 / 9, column flux 0.05, read-noise
variance 2e-4 and a Poisson variance 3.4e-3 x signal per pixel (the CEERS file's medians).
The files' variances are computed the way jwst does it (Poisson part from the noisy
pixel value, floored at 0: data-dependent weights); ``--variance files`` weights by them,
``model`` (nirbeam's level-2 default) by a variance model, ``true`` by the true variances. ``--sky-scale a1,a2`` multiplies the sky of nods 2 and 3 (on CEERS the
source-free pixels of the three nods differ by 3-7 %: see ``bench/mos_ceers.py``).

    PYTHONPATH=. python bench/mos_faint_synth.py [--n 16] [--variance files|model|true] [--sky-scale 0.97,0.975]
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

NY, NX = 25, 200
CENTERS = (14.0, 19.0, 9.0)


def faint_nods(seed, *, sky_scale=(1.0, 1.0, 1.0), sigma=0.95, flux=0.05, nx=NX):
    """dict of three synthetic nods (see the module notes): R, V (the files' way), VR, VP
    (the files' VAR_RNOISE, VAR_POISSON), Vtrue, Q, wl, truth (column flux)."""
    from scipy.special import ndtr

    rng = np.random.default_rng([seed, 933])
    y = np.arange(NY, dtype=float)[:, None]
    x = np.arange(nx, dtype=float)[None, :]
    wl = np.broadcast_to(1.0 + 4.0 * x / (nx - 1), (NY, nx)).copy()
    off = np.zeros((NY, nx), bool)
    off[:3] = off[24:] = True
    wl[off] = np.nan
    sky = 0.1 * (1.0 + 0.4 * np.sin(y / 2.2)) * (1.0 + 0.2 * np.cos(x / 37.0))
    f_col = flux * (1.0 + 0.5 * np.sin(x[0] / 23.0))
    R, V, Q, VP, VT = [], [], [], [], []
    vr = 2e-4
    c = 3.4e-3
    for k, yc in enumerate(CENTERS):
        prof = ndtr((y + 0.5 - yc) / sigma) - ndtr((y - 0.5 - yc) / sigma)
        true = sky_scale[k] * sky + prof * f_col[None, :]
        var_true = vr + c * true
        d = true + rng.normal(size=true.shape) * np.sqrt(var_true)
        q = np.where(off | (rng.random(true.shape) < 0.05), 1, 0).astype(np.uint32)
        vp = np.where(q > 0, np.nan, c * np.maximum(d, 0.0))  # jwst: from the pixel's own slope
        d = np.where(q > 0, np.nan, d)
        R.append(d)
        VP.append(vp)
        V.append(vr + vp)
        VT.append(np.where(q > 0, np.nan, var_true))
        Q.append(q)
    st = np.stack
    return {"R": st(R), "V": st(V), "VR": np.full(st(R).shape, vr), "VP": st(VP), "Vtrue": st(VT),
            "Q": st(Q), "wl": wl, "truth": f_col}


def run_one(seed, variance="model", **kw):
    """One realisation; ``variance``: ``files`` (weights from the files' data-derived
    variances), ``model`` (nirbeam's level-2 default, :func:`extract_modelled`) or
    ``true`` (the true variances: the reference)."""
    from nirbeam.pipelines.mos import extract_ensemble, extract_modelled

    d = faint_nods(seed, **kw)
    f = d["truth"]
    info = {"slitlet": "synth", "detector": "NRS2", "source_id": 933, "source_name": "synth"}
    args = (info, lambda a, lam: np.asarray(a, float), {}, {})
    if variance == "model":
        res = extract_modelled(d["R"], d["V"], d["VR"], d["VP"], 0.0, d["Q"], d["wl"], *args)
    else:
        res = extract_ensemble(d["R"], d["Vtrue"] if variance == "true" else d["V"], d["Q"], d["wl"], *args)
    opt = res.spectrum.flux
    box = res.nod_difference_ujy
    ok = np.isfinite(opt) & np.isfinite(box)
    c = res.summary["comparison"]
    return {"optimal_over_truth": float(opt[ok].sum() / f[ok].sum()),
            "box_apcorr_over_truth": float(box[ok].sum() / f[ok].sum()),
            "box_raw_over_truth": float(c["nod_difference_box_raw_over_optimal_sum"] * opt[ok].sum() / f[ok].sum()),
            "median_snr": res.summary["snr"]["median_snr_per_element"],
            "sigma_fit": res.summary["profile"]["sigma0_px"]}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--sky-scale", default="1,1")
    ap.add_argument("--variance", choices=("files", "model", "true"), default="model")
    a = ap.parse_args(argv)
    s = tuple(float(v) for v in a.sky_scale.split(","))
    rows = [run_one(i, a.variance, sky_scale=(1.0,) + s) for i in range(a.n)]
    out = {"sky_scale": [1.0, *s], "variance": a.variance, "n": a.n}
    for k in rows[0]:
        v = np.array([r[k] for r in rows])
        out[k] = {"mean": round(float(v.mean()), 4), "sem": round(float(v.std(ddof=1) / np.sqrt(v.size)), 4)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
