"""detector1 in column bands (the IRS2 full-frame worker path) equals the unbanded path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nirbeam.transforms.detector1 import Detector1Params, RampTiming, run_detector1
from nirbeam.transforms.detector1_bands import run_detector1_bands
from nirbeam.transforms.flicker import make_group_hook
from nirbeam.transforms.flicker_params import FlickerParams
from nirbeam.transforms.reference import ReferenceArrays

NG, NY, NX = 6, 48, 70


def _case(seed=5, all_dnu_column=False):
    rng = np.random.default_rng(seed)
    refs = ReferenceArrays.flat(NY, NX, NG, bias=1000.0, readnoise=6.0, gain=1.5)
    sat = np.full((NY, NX), 60000.0, np.float32)
    sat[rng.random((NY, NX)) < 0.02] = 1400.0  # saturate mid-ramp (growth to neighbours)
    mask = np.zeros((NY, NX), np.uint32)
    mask[rng.random((NY, NX)) < 0.01] = 1  # DO_NOT_USE
    lin = np.zeros((3, NY, NX), np.float32)
    lin[1] = 1.0
    lin[2] = 1e-6
    dark = np.cumsum(rng.normal(0.3, 0.05, (NG, NY, NX)), axis=0).astype(np.float32)
    sb = (1000.0 + rng.normal(0, 5, (NY, NX))).astype(np.float32)
    refs = dataclasses.replace(refs, saturation=sat, mask=mask, linearity=lin, dark=dark,
                               superbias=sb)
    slope = np.where(rng.random((NY, NX)) < 0.1, 200.0, 2.0)
    ramp = 1000.0 + np.arange(NG)[:, None, None] * slope + rng.normal(0, 6, (NG, NY, NX))
    ramp += rng.normal(0, 4, (NG, 1, NX))  # 1/f: an offset per group and DMS column
    hit = rng.random((NY, NX)) < 0.01
    ramp[3:, hit] += 500.0  # jumps (neighbour flags cross band edges)
    ramp[3:, 20, 15] += 500.0  # one at a band edge (band 16: columns 15 | 16)
    ramp[3:, 21, 16] += 500.0
    if all_dnu_column:  # a whole column at the A/D floor (DO_NOT_USE) from group 2 on: jump
        ramp[2:, :, 33] = 0.0  # mode not local (a halo column alone would skip jump)
    return np.ascontiguousarray(ramp, np.float32), refs


TIMING = RampTiming(ngroups=NG, nframes=1, groupgap=0, tframe=1.0, tgroup=1.0)


def _same(a, b):
    for name in ("rate", "err", "dq", "var_poisson", "var_rnoise"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert (a.n_jumps, a.jump_skipped) == (b.n_jumps, b.jump_skipped)


@pytest.mark.parametrize("hook_kind", [None, "before", "after"])
@pytest.mark.parametrize("all_dnu_column", [False, True])
def test_bands_equal_unbanded(hook_kind, all_dnu_column, monkeypatch):
    import nirbeam.transforms.detector1_bands as bands

    seen = []
    is_local = bands._is_local
    monkeypatch.setattr(bands, "_is_local", lambda q: seen.append(is_local(q)) or seen[-1])
    ramp, refs = _case(all_dnu_column=all_dnu_column)
    bg = np.ones((NY, NX), bool)
    bg[20:28] = False  # a "slit"
    hook = None
    if hook_kind is not None:
        hook = make_group_hook(FlickerParams(before_jump=hook_kind == "before"), bg)
    params = Detector1Params()
    want = run_detector1(ramp.copy(), refs, TIMING, params, None, hook)
    want_steps = run_detector1(ramp.copy(), refs, TIMING, params, None, hook, fused=False)
    _same(want_steps, want)
    assert want.n_jumps > 0 and (want.dq != 0).any()
    got = run_detector1_bands(ramp.copy(), refs, TIMING, params, hook, band=16)
    _same(got, want)
    # handing the input over (overwritten in place, freed after the hook)
    holder = [ramp.copy()]
    got = run_detector1_bands(holder, refs, TIMING, params, hook, band=16,
                              overwrite_input=True)
    assert holder == []
    _same(got, want)
    assert (False in seen) == all_dnu_column  # the frame-wide jump mode case was met


def test_bands_one_band_is_unbanded():
    ramp, refs = _case()
    want = run_detector1(ramp.copy(), refs, TIMING)
    _same(run_detector1_bands(ramp, refs, TIMING, band=NX), want)
