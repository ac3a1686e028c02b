"""Pseudo-reference pixels of edgeless subarrays (SUB512) that see light (issue 13).

Simulated here in plain numpy: a SUB512 ramp whose first/last four columns carry a
trace (up to 10^4 DN/s in a pixel, wings of ~1 DN/s, as the prism-sub512 preset's),
dark science pixels, read noise, and a per-group offset common to each DMS-row parity
(a constant per integration plus a random walk up the ramp). jwst's plain means take
the light's ramp for a drift and subtract it from every pixel (all slopes biased low);
the detrended pseudo-reference means do not, and still remove the drift's curvature.
"""

from __future__ import annotations

import numpy as np
import pytest

from nirbeam.transforms.refpix import (
    RefPixParams,
    SubarrayGeometry,
    apply_refpix,
    reference_mask,
    refpix_means,
    uses_pseudo_reference,
)

NG, NY, NX = 8, 32, 512
GEOM = SubarrayGeometry(substrt1=1045, subsize1=NX, substrt2=1001, subsize2=NY, name="SUB512")


def _ramps(rng, nint=30, rn=6.0):
    t = np.arange(NG, dtype=np.float64)
    y = np.arange(NY)[:, None]
    light = np.zeros((NY, NX))
    prof = np.exp(-0.5 * ((y - 16.2) / 1.0) ** 2) + 3e-3 / (1 + ((y - 16.2) / 3.0) ** 2)
    light[:, :4] = 2500.0 * prof            # DN per group in the pseudo columns
    light[:, -4:] = 40.0 * prof
    out = []
    for _ in range(nint):
        parity = (np.arange(NY) % 2)[None, :, None]
        off = rng.normal(0, 3.0, 2)[None, :] + np.cumsum(rng.normal(0, 0.5, (NG, 2)), axis=0)
        common = np.where(parity == 0, off[:, 0][:, None, None], off[:, 1][:, None, None])
        g = (t[:, None, None] * light[None] + common
             + rng.normal(0, rn, (NG, NY, NX))).astype(np.float32)
        out.append((g, common[:, :, 0]))
    return out, light


def _slopes(groups):
    t = np.arange(NG) - 0.5 * (NG - 1)
    return np.tensordot(t, groups.astype(np.float64), axes=(0, 0)) / np.sum(t * t)


@pytest.mark.parametrize("mode", ["detrend", "jwst"])
def test_pseudo_reference_light_does_not_bias_rates(mode):
    rng = np.random.default_rng(512)
    ramps, light = _ramps(rng)
    params = RefPixParams(pseudo_light=mode)
    mask = reference_mask(GEOM, (NY, NX), params)
    assert mask[:, :4].all() and mask[:, -4:].all() and mask.sum() == 8 * NY
    detrend = uses_pseudo_reference(GEOM, (NY, NX), params)
    assert detrend == (mode == "detrend")
    pdq = np.zeros((NY, NX), np.uint32)
    dark = np.zeros(NX, bool)
    dark[8:-8] = True
    bias = []
    for g, _ in ramps:
        means = refpix_means(g, np.zeros((NY, NX), np.float32), pdq, mask, GEOM.row_parity0,
                             True, 3.0, detrend)
        gc = g.copy()
        apply_refpix(gc, means, GEOM.row_parity0)
        bias.append(_slopes(gc)[:, dark].mean())
    bias = float(np.mean(bias))
    print(mode, "mean slope of dark pixels (DN/group):", bias)
    if mode == "detrend":
        # the straight-line part of the random walk remains: mean zero, ~0.1 DN/group
        # scatter per integration over 30 integrations
        assert abs(bias) < 0.1, bias
    else:
        assert bias < -0.3, bias  # the light's ramp subtracted from every pixel


def test_detrended_means_remove_a_curved_drift_exactly():
    """No noise: light (linear) + a quadratic per-parity drift; detrended means leave the
    dark pixels with the drift's straight-line part only."""
    t = np.arange(NG, dtype=np.float64)
    y = np.arange(NY)[:, None]
    light = np.zeros((NY, NX))
    light[:, :4] = 2500.0 * np.exp(-0.5 * ((y - 16.2) / 1.0) ** 2) + 1.0
    drift = np.stack([0.3 * (t - 3) ** 2, -0.2 * (t - 4) ** 2 + t], axis=1)  # (ng, parity)
    par = (np.arange(NY) + GEOM.row_parity0) % 2
    g = (t[:, None, None] * light[None] + drift[:, par][:, :, None]).astype(np.float32)
    mask = reference_mask(GEOM, (NY, NX))
    means = refpix_means(g, np.zeros((NY, NX), np.float32), np.zeros((NY, NX), np.uint32),
                         mask, GEOM.row_parity0, True, 0.0, True)
    gc = g.copy()
    apply_refpix(gc, means, GEOM.row_parity0)
    c = np.polyfit(t, drift, 1)
    line = c[0][None, :] * t[:, None] + c[1][None, :]
    np.testing.assert_allclose(gc[:, :, 100], line[:, par], atol=2e-3)


def test_real_reference_pixels_are_not_detrended():
    """SUB2048 touches the detector's reference rows and columns: plain means (jwst)."""
    g = SubarrayGeometry(substrt1=1, subsize1=2048, substrt2=1, subsize2=32, name="SUB2048")
    assert not uses_pseudo_reference(g, (32, 2048), RefPixParams())
    assert not uses_pseudo_reference(None, (32, 512), RefPixParams())
    assert not uses_pseudo_reference(GEOM, (NY, NX), RefPixParams(pseudo_reference=False))
    with pytest.raises(ValueError, match="pseudo_light"):
        RefPixParams(pseudo_light="median")
