"""Picture-frame residual on simulated full frames: nirbeam's correction against jwst's
``picture_frame`` step function on the same groups, both against the simulator's truth.

A full-frame ramp (``--ngroups``, DN): bias + a few bright slit-like
stripes (the scene) + read noise + ``amplitude[g] * template`` with the amplitude
growing non-linearly in time (a drifting picture frame), ``template`` =
:func:`nirbeam.sim.irs2.picture_frame_template`; the PICTUREFRAME reference given to both
corrections is the same template (``--template-error`` perturbs it: real references
are not exact). Reported, on the slope image ``(last - first) / (ngroups - 1)``: the
RMS of (corrected - truth) over the light-sensitive area, the edge-minus-centre median
offset of that residual, for uncorrected, jwst and nirbeam. jwst runs with
``mask_science_regions=False`` (no WCS offline), n_sigma 2, as nirbeam's clipping-only mask,
and with its draft rate (a ramp_fit step needing CRDS READNOISE/GAIN) replaced by the
last-minus-first slope: the rest (masking, regions, scaling, subtraction) is jwst's.

    .venv-jwst/bin/python bench/picture_frame_vs_jwst.py [--ngroups 4] [--seed 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _provenance import provenance, write_result  # bench/ is sys.path[0]

HERE = Path(__file__).resolve().parent


def simulate(ng: int, seed: int, template_error: float, diffuse_sky: float = 0.0):
    from nirbeam.sim.irs2 import picture_frame_template

    rng = np.random.default_rng(seed)
    n = 2048
    t = np.arange(ng, dtype=np.float64)
    # light only in the slits (between them, and at the edges, the detector is dark, as
    # in MOS/FS): both corrections read a centre-edge difference of the background as
    # picture frame (--sky puts a diffuse level on the centre to show that bias)
    sky = np.zeros((n, n))
    sky[100:1950, 100:1950] = diffuse_sky
    scene = np.zeros((n, n))
    for y0 in rng.integers(200, 1800, 12):  # bright horizontal "slits"
        scene[y0:y0 + 6, 100:1950] = rng.uniform(50, 400)
    rate = sky + scene
    truth = 12000.0 + rate[None] * t[:, None, None]
    noisy = truth + rng.standard_normal((ng, n, n)) * 5.0
    amp = 30.0 * (t / max(ng - 1, 1)) ** 1.5  # DN, drifting
    tmpl = picture_frame_template(n).astype(np.float64)
    tmpl[:4] = tmpl[-4:] = 0.0
    tmpl[:, :4] = tmpl[:, -4:] = 0.0
    data = (noisy + amp[:, None, None] * tmpl).astype(np.float32)
    ref = tmpl * (1.0 + template_error * rng.standard_normal((n, n)))
    return data, noisy.astype(np.float32), ref.astype(np.float32), scene > 0


def slope(groups):
    return (groups[-1].astype(np.float64) - groups[0]) / (groups.shape[0] - 1)


def stats(corrected, target):
    r = slope(corrected) - slope(target)
    inner = r[4:-4, 4:-4]
    y, x = np.mgrid[:2048, :2048]
    edge = ((y < 75) | (y >= 1985) | (x < 75) | (x >= 1985)) & (y >= 4) & (y < 2044) & (x >= 4) & (x < 2044)
    centre = (y >= 76) & (y < 1984) & (x >= 76) & (x < 1984)
    return {"rms_dn_per_group": float(inner.std()),
            "edge_minus_centre_dn_per_group": float(np.median(r[edge]) - np.median(r[centre]))}


def run_jwst(data, ref):
    from jwst.clean_flicker_noise import clean_flicker_noise as cfn
    from jwst.picture_frame.picture_frame import correct_picture_frame
    from stdatamodels.jwst import datamodels

    def draft_rate(model):
        # jwst's make_rate runs the ramp_fit step, which asks CRDS for READNOISE/GAIN (not
        # reachable offline): the draft rate that only feeds the background mask is the
        # last-minus-first slope instead, as nirbeam's hook takes it
        d = model.data[0]
        img = datamodels.ImageModel(data=((d[-1] - d[0]) / (d.shape[0] - 1)).astype(np.float32),
                                    dq=np.zeros(d.shape[1:], np.uint32))
        img.update(model)
        return img

    cfn.make_rate = draft_rate

    ng = data.shape[0]
    m = datamodels.RampModel(data=data[None].copy(), pixeldq=np.zeros((2048, 2048), np.uint32),
                             groupdq=np.zeros((1, ng, 2048, 2048), np.uint8),
                             err=np.zeros((1, ng, 2048, 2048), np.float32))
    m.meta.instrument.name = "NIRSPEC"
    m.meta.instrument.detector = "NRS1"
    m.meta.subarray.name = "FULL"
    m.meta.exposure.type = "NRS_MSASPEC"
    m.meta.exposure.readpatt = "NRSIRS2"
    m.meta.exposure.ngroups = ng
    m.meta.exposure.nframes = 5
    m.meta.exposure.groupgap = 0
    m.meta.exposure.frame_time = 14.58889
    m.meta.exposure.group_time = 72.94445
    m.meta.exposure.nints = 1
    pf = datamodels.PictureFrameModel(data=ref)
    out, _, _, status = correct_picture_frame(m, pf, mask_science_regions=False, n_sigma=2.0)
    return np.asarray(out.data[0]), status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ngroups", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--template-error", type=float, default=0.0)
    ap.add_argument("--sky", type=float, default=0.0, help="diffuse DN/group on the centre")
    ap.add_argument("--out", default=str(HERE / "results" / "picture_frame_vs_jwst.json"))
    args = ap.parse_args()
    prov = provenance()
    from nirbeam.transforms.picture_frame import PictureFrameHook

    data, truth_plus_noise, ref, _scene = simulate(args.ngroups, args.seed, args.template_error,
                                                 args.sky)
    res = {"ngroups": args.ngroups, "seed": args.seed, "template_error": args.template_error,
           "diffuse_sky": args.sky,
           "uncorrected": stats(data, truth_plus_noise)}
    t = time.perf_counter()
    mine = PictureFrameHook(ref)(data.copy(), None, np.zeros((2048, 2048), np.uint32))
    res["nirbeam"] = {**stats(mine, truth_plus_noise), "seconds": time.perf_counter() - t}
    try:
        t = time.perf_counter()
        jw, status = run_jwst(data, ref)
        res["jwst"] = {**stats(jw, truth_plus_noise), "seconds": time.perf_counter() - t,
                       "status": status}
        res["nirbeam_minus_jwst_slope_rms"] = float((slope(mine) - slope(jw))[4:-4, 4:-4].std())
    except (ImportError, SystemExit) as exc:  # crds exits when it needs a server
        res["jwst"] = f"not run: {exc}"
    import json

    print(json.dumps(res, indent=2))
    write_result(args.out, res, start=prov)


if __name__ == "__main__":
    main()
