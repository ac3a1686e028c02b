"""Seeded ramp simulator + stcal harness for the detector1 tests, and truth tests.

The helpers here (``simulate``, ``stcal_*``) are imported by the other
``test_detector1_*`` modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from nirbeam import dqflags
from nirbeam.transforms.detector1 import Detector1Params, RampTiming, run_detector1
from nirbeam.transforms.reference import ReferenceArrays

DQFLAGS = dict(dqflags.FLAGS)


@dataclass
class Sim:
    ramp: np.ndarray  # uint16 (ng, ny, nx)
    rate: np.ndarray  # DN/s truth
    crs: list  # (group index of first affected group, y, x, amplitude DN)
    refs: ReferenceArrays
    timing: RampTiming


def simulate(seed=0, ng=10, ny=24, nx=32, rate=None, rate_range=(0.5, 200.0), gain=1.5,
             rn_cds=14.0, bias=10000.0, tgroup=1.0, ncr=0, cr_amp=(300.0, 3000.0),
             saturation=65000.0, quantize=True):
    """Poisson + read-noise ramps (NFRAMES=1) with known rates and injected jumps.

    Read noise per read is ``rn_cds / sqrt(2)`` DN (the READNOISE reference is CDS).
    """
    rng = np.random.default_rng(seed)
    if rate is None:
        rate = rng.uniform(*rate_range, (ny, nx))
    rate = np.broadcast_to(np.asarray(rate, np.float64), (ny, nx)).copy()
    electrons = np.cumsum(rng.poisson(rate * gain * tgroup, (ng, ny, nx)), axis=0) / gain
    sig = bias + electrons + rng.normal(0.0, rn_cds / np.sqrt(2.0), (ng, ny, nx))
    crs = []
    if ncr:
        flat = rng.choice(ny * nx, size=ncr, replace=False)
        for f in flat:
            y, x = divmod(int(f), nx)
            g = int(rng.integers(1, ng))
            amp = float(rng.uniform(*cr_amp))
            sig[g:, y, x] += amp
            crs.append((g, y, x, amp))
    sig = np.clip(sig, 0, 65535)
    ramp = (np.round(sig) if quantize else sig).astype(np.uint16)
    refs = ReferenceArrays.flat(ny, nx, ng, bias=bias, saturation=saturation, readnoise=rn_cds,
                                gain=gain)
    return Sim(ramp, rate, crs, refs, RampTiming(ng, 1, 0, tgroup, tgroup))


# --------------------------------------------------------------------------- stcal harness


def stcal_jump(groups, groupdq, pixeldq, readnoise, gain, nframes=1, rej=4.0, thr3=6.0,
               thr4=5.0, flag4=True):
    """stcal 1.20 detect_jumps_data on one integration (copies its inputs)."""
    from stcal.jump.jump import detect_jumps_data
    from stcal.jump.jump_class import JumpData

    jd = JumpData(gain2d=np.array(gain, np.float32), rnoise2d=np.array(readnoise, np.float32),
                  dqflags=DQFLAGS)
    jd.init_arrays_from_arrays(np.array(groups, np.float32)[None].copy(),
                               np.array(groupdq, np.uint8)[None].copy(),
                               np.array(pixeldq, np.uint32).copy())
    jd.nframes = nframes
    jd.dt_group = np.ones(1)
    jd.n_reads_groupdiff = np.ones(1) * 2 * nframes
    jd.set_detection_settings(rej, thr3, thr4, 1000, 10, flag4)
    jd.max_cores = "none"
    gdq, pdq, n, _ = detect_jumps_data(jd)
    return gdq[0], pdq, n


def stcal_ramp_fit(groups, groupdq, pixeldq, readnoise, gain, tgroup, tframe, nframes=1,
                   suppress_one_group=True):
    """stcal 1.20 OLS_C ramp fit, ``max_cores='none'``; groups (ng, ny, nx) or (nints, ...)."""
    from stcal.ramp_fitting.ramp_fit import ramp_fit_data
    from stcal.ramp_fitting.ramp_fit_class import RampData

    data = np.array(groups, np.float32)
    gdq = np.array(groupdq, np.uint8)
    if data.ndim == 3:
        data, gdq = data[None], gdq[None]
    ng = data.shape[1]
    rd = RampData()
    rd.set_arrays(data.copy(), gdq.copy(), np.array(pixeldq, np.uint32).copy(),
                  np.zeros(data.shape[-2:], np.float32))
    rd.set_meta(name="NIRSPEC", frame_time=tframe, group_time=tgroup,
                groupgap=1 if nframes > 1 else 0, nframes=nframes, drop_frames1=None)
    rd.set_dqflags(DQFLAGS)
    rd.start_row = 0
    rd.num_rows = data.shape[2]
    rd.algorithm = "OLS_C"
    rd.suppress_one_group_ramps = bool(suppress_one_group and ng > 1)
    _, integ, _ = ramp_fit_data(rd, False, np.array(readnoise, np.float32).copy(),
                                np.array(gain, np.float32).copy(), "OLS_C", "optimal", "none")
    slope, dq, vp, vr, err = (integ[k] for k in ("slope", "dq", "var_poisson", "var_rnoise",
                                                 "err"))
    if np.ndim(groups) == 3:
        return slope[0], dq[0], vp[0], vr[0], err[0]
    return slope, dq, vp, vr, err


# --------------------------------------------------------------------------- truth tests


def _chi2(res, sim, sel):
    z = (res.rate[sel] - sim.rate[sel]) / res.err[sel]
    return float(np.mean(z**2))


@pytest.mark.parametrize("regime,rate,ng", [("readnoise", 0.5, 10), ("poisson", 2000.0, 10),
                                            ("poisson-long", 800.0, 40)])
def test_chi2_against_truth(regime, rate, ng):
    sim = simulate(seed=11, ng=ng, ny=40, nx=50, rate=rate)
    res = run_detector1(sim.ramp, sim.refs, sim.timing)
    clean = (res.dq & (dqflags.DO_NOT_USE | dqflags.JUMP_DET | dqflags.SATURATED)) == 0
    assert clean.mean() > 0.95
    chi2 = _chi2(res, sim, clean)
    assert 0.9 < chi2 < 1.1, (regime, chi2)
    # unbiased: mean pull consistent with zero
    z = (res.rate[clean] - sim.rate[clean]) / res.err[clean]
    assert abs(z.mean()) < 5 / np.sqrt(clean.sum())


def test_cosmic_rays_recovered_and_clean_ramps_rarely_flagged():
    ng, ny, nx = 12, 60, 60
    sim = simulate(seed=5, ng=ng, ny=ny, nx=nx, rate=20.0, ncr=300, cr_amp=(200.0, 3000.0))
    res = run_detector1(sim.ramp, sim.refs, sim.timing)
    from nirbeam.transforms.detector1 import calibrate_groups

    _, gdq, _, info = calibrate_groups(sim.ramp, sim.refs, sim.timing)
    sigma_diff = np.sqrt(20.0 * 1.0 / 1.5 + 14.0**2)  # DN, per difference
    big = [(g, y, x) for g, y, x, a in sim.crs if a > 8 * sigma_diff]
    assert len(big) > 250
    found = np.mean([bool(gdq[g, y, x] & dqflags.JUMP_DET) for g, y, x in big])
    assert found >= 0.99, found
    # pixels far from any CR: false-alarm rate per pixel small
    hit = np.zeros((ny, nx), bool)
    for _, y, x, _ in sim.crs:
        hit[max(0, y - 1):y + 2, max(0, x - 1):x + 2] = True
    flagged = np.any(gdq & dqflags.JUMP_DET, axis=0)
    false_rate = flagged[~hit].mean()
    # 4 sigma two-sided on 11 diffs: ~1e-3 per ramp expected (plus clipping effects)
    assert false_rate < 0.01, false_rate
    # the flagged pixels' rates remain unbiased by the CR
    ok = (res.dq & dqflags.DO_NOT_USE) == 0
    rel = np.abs(res.rate[ok] - 20.0) / res.err[ok]
    assert np.median(rel) < 1.0
    assert info["n_jumps"] == res.n_jumps


def test_no_jump_ramps_rarely_flagged():
    sim = simulate(seed=9, ng=20, ny=50, nx=50, rate=5.0)
    res = run_detector1(sim.ramp, sim.refs, sim.timing)
    frac = np.mean(res.dq & dqflags.JUMP_DET > 0)
    assert frac < 0.01, frac


def test_saturating_pixels_use_unsaturated_groups():
    sim = simulate(seed=3, ng=10, ny=10, nx=10, rate=100.0, saturation=10000.0 + 650.0)
    res = run_detector1(sim.ramp, sim.refs, sim.timing,
                        Detector1Params())
    # saturation after ~6 groups; the rate is still measured from the good groups
    assert np.all(res.dq & dqflags.SATURATED)
    ok = np.isfinite(res.rate)
    assert ok.mean() > 0.9
    assert abs(np.median(res.rate[ok]) - 100.0) < 3.0
