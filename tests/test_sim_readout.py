"""The MOS and IFU simulators' readout (issue 15): full frames in IRS2 (NRSIRS2, as real MOS
and IFU exposures are) with the matched REFPIX reference in ``refs/``; cut-down test
frames in traditional NRSRAPID. The FS simulator's is in tests/test_irs2_run.py."""

from __future__ import annotations

import math

import pytest
from astropy.io import fits

from nirbeam.sim import ifu as simifu
from nirbeam.sim import mos as simmos
from nirbeam.sim.irs2 import TFRAME_IRS2_FULL, cds_read_noise

slow = pytest.mark.slow


def test_mos_presets_readout():
    from nirbeam.sim import fs as simfs

    assert simfs.TFRAME_IRS2_FULL == TFRAME_IRS2_FULL  # one IRS2 TFRAME for FS, MOS, IFU
    full = simmos.resolved_readout(simmos.MOS_PRESETS["mos"])
    assert (full.readout, full.readpatt, full.tframe) == ("NRSIRS2", "NRSIRS2", TFRAME_IRS2_FULL)
    for name in ("mos-small", "mos-test"):  # cut-down frames: traditional
        c = simmos.resolved_readout(simmos.MOS_PRESETS[name])
        assert (c.readout, c.readpatt, c.tframe) == ("traditional", "NRSRAPID", 10.737), name
    trad = simmos.resolved_readout(simmos.MOSSimConfig(readout="traditional"))
    assert (trad.readpatt, trad.tframe) == ("NRSRAPID", 10.737)
    with pytest.raises(ValueError, match="full frame only"):
        simmos.MOSSimConfig(readout="NRSIRS2", ny=300, nx=180, substrt1=5, substrt2=5)
    with pytest.raises(ValueError, match="MOSSimConfig.readout"):
        simmos.MOSSimConfig(readout="cutdown")


def test_ifu_presets_readout():
    full = simifu.resolved_readout(simifu.IFU_PRESETS["ifu"])
    assert (full.readout, full.readpatt, full.tframe) == ("NRSIRS2", "NRSIRS2", TFRAME_IRS2_FULL)
    small = simifu.resolved_readout(simifu.IFU_PRESETS["ifu-small"])  # cut-down: traditional
    assert (small.readout, small.readpatt, small.tframe) == ("TRADITIONAL", "NRSRAPID", 10.737)
    trad = simifu.resolved_readout(simifu.IFUSimConfig(readout="traditional"))
    assert (trad.readout, trad.readpatt) == ("TRADITIONAL", "NRSRAPID")
    with pytest.raises(ValueError, match="full frame only"):
        simifu.resolved_readout(simifu.IFU_PRESETS["ifu-small"].__class__(
            nrows=1040, ncols=136, readout="NRSIRS2"))
    with pytest.raises(ValueError, match="IFUSimConfig.readout"):
        simifu.resolved_readout(simifu.IFUSimConfig(readout="NRSIRS3"))


def _check_irs2_uncal(path, ngroups):
    with fits.open(path) as f:
        h = f[0].header
        assert (h["READPATT"], h["NRS_NORM"], h["NRS_REF"], h["SUBARRAY"]) == (
            "NRSIRS2", 16, 4, "FULL")
        assert (h["SUBSIZE1"], h["SUBSIZE2"]) == (2048, 2048)
        assert h["TFRAME"] == pytest.approx(TFRAME_IRS2_FULL)
        assert f["SCI"].data.shape == (1, ngroups, 3200, 2048)  # interleaved reference samples
        g = f["GROUP"].data
        # group end times: reset + g frames of the IRS2 TFRAME after the integration start
        dt = (g["end_milliseconds"][1] - g["end_milliseconds"][0]) / 1e3
        assert dt == pytest.approx(TFRAME_IRS2_FULL, abs=2e-3)


@slow
def test_mos_full_frame_writes_irs2_and_refpix(tmp_path):
    from nirbeam.stream.refs import read_irs2_reference

    sim = simmos.simulate_mos(tmp_path, "mos", seed=3, ngroups=2)
    assert sim.config.readout == "NRSIRS2"
    for p in sim.uncal:
        _check_irs2_uncal(p, 2)
    ref = read_irs2_reference(sim.refs_dir / "jwst_nirspec_refpix_nrs1_sim.fits")
    assert ref.beta.shape == (4, 712 * 2048)
    with fits.open(next(sim.refs_dir.glob("*_dark_*.fits"))) as f:
        assert f[0].header["READPATT"] == "NRSIRS2"
    with fits.open(next(sim.refs_dir.glob("*_readnoise_*.fits"))) as f:  # IRS2 noise included
        assert float(f["SCI"].data[100, 100]) == pytest.approx(math.hypot(9.0, cds_read_noise()), rel=1e-6)


@slow
def test_ifu_full_frame_writes_irs2_and_refpix(tmp_path):
    from nirbeam.stream.refs import read_irs2_reference

    sim = simifu.simulate_ifu(tmp_path, "ifu", seed=3, ngroups=2, dithers=((0.0, 0.0),),
                              n_cosmic=0, n_hot_once=1)
    assert sim.config.readout == "NRSIRS2"
    _check_irs2_uncal(sim.uncal[0], 2)
    ref = read_irs2_reference(sim.refs_dir / "jwst_nirspec_refpix_nrs1_sim.fits")
    assert ref.beta.shape == (4, 712 * 2048)
    with fits.open(next(sim.refs_dir.glob("*_dark_*.fits"))) as f:
        assert f[0].header["READPATT"] == "NRSIRS2"
    with fits.open(next(sim.refs_dir.glob("*_readnoise_*.fits"))) as f:  # IRS2 noise included
        assert float(f["SCI"].data[100, 100]) == pytest.approx(
            math.hypot(6.0 * math.sqrt(2.0), cds_read_noise()), rel=1e-6)


@slow
def test_irs2_cds_read_noise_matches_a_corrected_dark():
    """The READNOISE of an IRS2 simulation adds :func:`cds_read_noise`: the CDS noise of a
    dark written by the IRS2 readout and corrected with the matched REFPIX reference
    (simulator truth: a flat bias, nothing else), within 3 %."""
    import numpy as np

    from nirbeam.sim import irs2 as si
    from nirbeam.transforms.irs2 import subtract_reference_irs2

    raw = si.to_irs2(np.full((2, 2048, 2048), 12000.0), "NRS1", np.random.default_rng(7))
    cor = subtract_reference_irs2(raw, si.matched_reference(), "NRS1")
    d = (cor[1].astype(np.float64) - cor[0])[8:-8, 8:-8]
    assert d.std() == pytest.approx(si.cds_read_noise(), rel=0.03)
    # without the 1/f and ACN parts: the white part alone
    white = si.IRS2Noise(one_over_f=0.0, common=0.0, acn=0.0)
    raw = si.to_irs2(np.full((2, 2048, 2048), 12000.0), "NRS1", np.random.default_rng(8), white)
    cor = subtract_reference_irs2(raw, si.matched_reference(), "NRS1")
    d = (cor[1].astype(np.float64) - cor[0])[8:-8, 8:-8]
    assert d.std() == pytest.approx(si.cds_read_noise(white), rel=0.03)
