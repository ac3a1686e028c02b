"""MOS stage 2 alone on the simulator: where do flux biases come from?

Stage 2 (:func:`nirbeam.pipelines.mos.stage2_exposures`) is run on rates of three kinds,
the same scene (the simulator's preset and seed):

* ``truth`` -- the simulator's noiseless rates, with the variances a ramp fit would give
  (read noise + Poisson of the true rate): any flux bias is the model's (profile, bar
  shadow, background, extraction), not the noise's;
* ``noisy`` -- the same plus Gaussian noise of those variances (seeded): biases from the
  noise in stage 2 (weights, profile fit);
* ``noisy-datavar`` -- the same noisy rates with the Poisson variance computed from them
  (as a ramp fit does: weights that follow each pixel's own noise);
* ``stage1`` -- the rates of a finished ``run_uncal`` (``--stage1 OUT``: its
  ``cubes.zarr``): the whole pipeline, without rerunning stage 1.

    PYTHONPATH=. python bench/mos_stage2_probe.py --sim /tmp/mos/full/sim --kind truth --out /tmp/mos/p1
"""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mos_sim import evaluate  # noqa: E402


def truth_rates(sim_dir: Path, preset: str, seed: int):
    """The simulator's noiseless rates (3, ny, nx) for ``preset``/``seed``: the scene is
    rebuilt in memory (the uncal writer replaced by a capture; nothing is written over
    ``sim_dir``)."""
    import tempfile

    import nirbeam.sim.mos as sm

    got = {}
    orig = sm._write_uncal

    def capture(cfg, out, nod, rate, rng):
        got[nod] = np.array(rate, np.float64)
        got["cfg"] = cfg
        return out / "none"

    sm._write_uncal = capture
    try:
        with tempfile.TemporaryDirectory(dir="/tmp") as d:
            sm.simulate_mos(d, preset=preset, seed=seed)
    finally:
        sm._write_uncal = orig
    return np.stack([got[k] for k in (1, 2, 3)]), got["cfg"]


def rate_variances(rate, cfg):
    """Ramp-fit variances of a slope from ``ngroups`` equally spaced reads (least squares,
    uniform weights): read noise per read ``rn / sqrt 2`` and Poisson of ``rate``."""
    n, tg = cfg.ngroups, cfg.tgroup
    rn = cfg.read_noise_cds / math.sqrt(2.0)
    vr = 12.0 * rn ** 2 / (n * (n * n - 1) * tg ** 2) / cfg.gain ** 2 * np.ones_like(rate)
    vp = 6.0 * (n * n + 1) / (5.0 * n * (n * n - 1)) * np.clip(rate, 0, None) / (tg * cfg.gain)
    return vr, vp


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sim", required=True, help="a simulate_mos output (uncal files for the metadata)")
    ap.add_argument("--preset", default="mos")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kind", choices=("truth", "noisy", "noisy-datavar", "stage1"), default="truth")
    ap.add_argument("--stage1", default=None, help="a finished run_uncal OUT (its cubes.zarr)")
    ap.add_argument("--noise-seed", type=int, default=5)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default=None, help="JSON of stage-2 options (mos_options)")
    a = ap.parse_args(argv)
    from astropy.io import fits

    from nirbeam.pipelines.common import load_exposure_rate, scan_inputs
    from nirbeam.pipelines.mos import stage2_exposures

    sim = Path(a.sim)
    plans = scan_inputs([str(sim)])
    exps = []
    if a.kind != "stage1":
        R, cfg = truth_rates(sim, a.preset, a.seed)
    rng = np.random.default_rng(a.noise_seed)
    for plan in plans:
        path = plan.segments[0].path
        ph = fits.getheader(path)
        keys = {k: ph[k] for k in ("MSAMETFL", "MSAMETID", "PATT_NUM", "NOD_TYPE")}
        if a.kind == "stage1":
            rate, var, dq, vr, vp = load_exposure_rate(str(Path(a.stage1) / "cubes.zarr"),
                                                      plan.meta.group_name, parts=True)
        else:
            r = R[int(keys["PATT_NUM"]) - 1]
            vr, vp = rate_variances(r, cfg)
            rate = r + (rng.normal(size=r.shape) * np.sqrt(vr + vp) if a.kind != "truth" else 0.0)
            if a.kind == "noisy-datavar":  # the Poisson variance from the noisy rate, as a ramp fit has it
                vp = rate_variances(rate, cfg)[1]
            var = vr + vp
            dq = np.zeros(r.shape, np.uint32)
        exps.append({"path": str(Path(path).resolve()), "meta": plan.meta, "keys": keys, "rate": rate,
                     "var": var, "dq": dq, "var_rnoise": vr, "var_poisson": vp, "refs": {}})
    opts = json.loads(a.config) if a.config else None
    kw = {"options": opts} if opts else {}
    stage2_exposures(exps, str(sim / "refs"), a.out, max_plots=0, **kw)
    res = evaluate(sim, Path(a.out))
    res["kind"], res["options"] = a.kind, opts
    r = {k: round(v["ratio"], 4) for k, v in res["sources"].items()}
    print(json.dumps(r))
    rat = np.array(list(r.values()))
    kinds = np.array([v["kind"] for v in res["sources"].values()])
    for kd in ("point", "extended"):
        m = kinds == kd
        print(kd, "mean", round(float(rat[m].mean()), 4), "std", round(float(rat[m].std()), 4),
              "min", float(rat[m].min()), "max", float(rat[m].max()))
    Path(a.out, "eval.json").write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
