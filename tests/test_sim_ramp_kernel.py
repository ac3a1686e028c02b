"""The simulator's numba ramp assembly (nirbeam/sim/ramp_kernel.py) against the numpy
expressions it replaced (physics._simulate_integration_reference): the same stream gives the
same uint16 ramp, bit for bit, with every effect on and off, cosmic rays (several hits on
one element), saturation, NRS2's reversed readout; and the threaded simulator writes the
same files as the serial one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from astropy.io import fits

from nirbeam.sim import physics as phys
from nirbeam.sim.simulator import PRESETS, simulate


def _setup(preset: str, **kw):
    cfg = dataclasses.replace(PRESETS[preset], **kw)
    props = phys.make_detector_props(np.random.default_rng([11, 0, 1]), cfg)
    scene = phys.make_scene(cfg, 0, props.refpix, cfg.tgroup)
    return cfg, props, scene.rate_oot


CASES = [
    ("prism-sub512", {}),
    ("prism-sub512", {"ngroups": 9, "ktc_dn": 0.0, "bias_drift_dn": 0.0, "even_odd_dn": 0.0,
                      "even_odd_drift_dn": 0.0, "one_over_f": False}),
    ("prism-sub512", {"ngroups": 3, "one_over_f_alpha": 1.6, "cr_rate": 2e-3,
                      "snowball_rate": 2e-5}),
    ("g395h-sub2048", {"ngroups": 12, "subsize1": 256, "cr_rate": 5e-4}),
]


@pytest.mark.parametrize("preset,kw", CASES)
@pytest.mark.parametrize("reverse", [False, True])
def test_kernel_equals_numpy_reference(preset, kw, reverse):
    cfg, props, rate = _setup(preset, **kw)
    for i in range(3):
        a, ha = phys.simulate_integration(np.random.default_rng([5, 1, 2, i]), cfg, props,
                                          rate * (1 + i), 30.0, fast_reversed=reverse)
        b, hb = phys._simulate_integration_reference(np.random.default_rng([5, 1, 2, i]), cfg,
                                                     props, rate * (1 + i), 30.0,
                                                     fast_reversed=reverse)
        assert a.dtype == np.uint16 and a.shape == b.shape
        assert np.array_equal(a, b), (preset, kw, reverse, i, int((a != b).sum()))
        assert np.array_equal(ha.y, hb.y) and np.array_equal(ha.amplitude_dn, hb.amplitude_dn)


def test_kernel_case_coverage():
    """The cases above reach what the kernel must get right: repeated cosmic-ray hits on one
    element (add.at order), saturated and clipped values."""
    cfg, props, rate = _setup("prism-sub512", ngroups=3, cr_rate=2e-3, snowball_rate=2e-5)
    ramp, hits = phys.simulate_integration(np.random.default_rng([5, 1, 2, 2]), cfg, props,
                                           rate * 3, 30.0)
    flat = (hits.group.astype(np.int64) * 32 + hits.y) * 512 + hits.x
    assert np.unique(flat).size < flat.size  # some element has several hits
    assert (ramp == np.round(np.minimum(65535, props.sat_hard))).any()  # saturated


def test_one_over_f_parts_build_the_reference_cube():
    for rev in (False, True):
        a = phys.one_over_f_pixels(np.random.default_rng(3), 6, 32, 200, 9.0, fast_reversed=rev,
                                   alpha=1.3)
        b = phys._one_over_f_pixels_reference(np.random.default_rng(3), 6, 32, 200, 9.0,
                                              fast_reversed=rev, alpha=1.3)
        assert np.array_equal(a, b)


def test_threads_write_the_same_files(tmp_path):
    kw = dict(nints=5, ngroups=4, subsize1=256, detectors=("NRS1", "NRS2"), ints_per_segment=2,
              seed=4)
    a = simulate(tmp_path / "a", "g395h-sub2048", workers=1, **kw)
    b = simulate(tmp_path / "b", "g395h-sub2048", workers=3, **kw)
    for pa, pb in zip(a.uncal, b.uncal, strict=True):
        assert np.array_equal(fits.getdata(pa, "SCI"), fits.getdata(pb, "SCI")), pa.name
    for det in ("NRS1", "NRS2"):
        for ext in ("TRUE_RATE", "LIGHTCURVE", "COSMIC_RAYS"):
            ta, tb = fits.getdata(a.truth[det], ext), fits.getdata(b.truth[det], ext)
            for k in ta.dtype.names or (None,):
                ca, cb = (ta, tb) if k is None else (np.asarray(ta[k]), np.asarray(tb[k]))
                assert np.array_equal(ca, cb, equal_nan=ca.dtype.kind == "f"), (det, ext, k)
    with pytest.raises(ValueError, match="workers"):
        simulate(tmp_path / "c", "prism-sub512", nints=1, workers=0)
