"""The MOS and IFU simulators' readout (issue 15): full frames in IRS2 (NRSIRS2, as real MOS
and IFU exposures are) with the matched REFPIX reference in ``refs/``; cut-down test
frames in traditional NRSRAPID. The FS simulator's is in tests/test_irs2_run.py."""

from __future__ import annotations

import pytest
from astropy.io import fits

from nirbeam.sim import ifu as simifu
from nirbeam.sim import mos as simmos
from nirbeam.sim.irs2 import TFRAME_IRS2_FULL

slow = pytest.mark.slow


def test_mos_presets_readout():
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
