"""1/f cleaning: an exposure-level model of the static light the scene-mask pixels see
(the trace's PSF wings), which the group hook takes off the column offsets it fits
(:func:`~nirbeam.transforms.flicker_groups.make_group_hook` ``light=``; issue 13: without
it the offsets remove that light from every pixel of the column, -0.19 sigma on the
PRISM rates). Made by the driver from the first integrations' uncleaned rates
(:func:`nirbeam.stream.rate_steps.draft_scene_mask`). numpy only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from nirbeam import dqflags


@dataclass(frozen=True, eq=False)
class SceneModel:
    """The 1/f scene mask of an exposure and the static light of its pixels.

    ``mask`` bool (ny, nx): background pixels of the group-level 1/f fit. ``light``
    float (ny, nx), DN/s, or None: an exposure-level model of the light those pixels see
    (the trace's PSF wings; :func:`scene_light`), which the hook takes off before it
    fits the column offsets, so that they do not remove it from every pixel."""

    mask: np.ndarray
    light: np.ndarray | None = None


LIGHT_NINTS = 16
"""Integrations (the first ones) whose uncleaned median rate the light model is made of,
at most: :func:`light_nints` takes fewer for longer ramps."""
LIGHT_GROUPS = 80
"""Groups (integrations x NGROUPS) the light model is made of: 16 integrations of a
5-group PRISM ramp; a 20-group G395H exposure needs 4 (its rates are ~9x less noisy per
integration), which keeps the draft's cost (it runs detector1 on each) near the 3
integrations the scene mask needs."""

LIGHT_OFFSET_SE = 0.5
"""DN/s: the light model's common offset (:func:`common_offset`) is taken off only when
its standard error is below this (else the flux does not change enough along x to tell
it from the wings, and it is left in)."""
LIGHT_SMOOTH = 33
"""Columns over which the light model's ratio to the trace flux is averaged."""


LIGHT_DEGREE = 3
"""Degree in x of the per-row wing-to-flux ratio in :func:`common_offset`'s fit."""
LIGHT_MAX_ROWS = 256
"""Rows above which no light model is made (a full frame: its slits' light is not one
trace's wings, and :func:`common_offset`'s dense fit, ``rows x (LIGHT_DEGREE + 1)``
coefficients, would not fit in memory)."""


def light_nints(ngroups: int, n_min: int = 3) -> int:
    """How many of the first integrations the light model uses: ``ceil(LIGHT_GROUPS /
    ngroups)``, between ``n_min`` (the draft scene mask's count) and ``LIGHT_NINTS``."""
    need = -(-LIGHT_GROUPS // max(int(ngroups), 1))
    return int(min(LIGHT_NINTS, max(n_min, need)))


def light_applies(shape, trace_mask=None) -> bool:
    """Whether the draft makes a light model for a frame of ``shape``: a subarray of at
    most :data:`LIGHT_MAX_ROWS` rows whose scene mask comes from the data alone (no mode
    ``trace_mask``: one trace, as BOTS)."""
    return trace_mask is None and int(shape[-2]) <= LIGHT_MAX_ROWS


def common_offset(rate: np.ndarray, mask: np.ndarray, degree: int = LIGHT_DEGREE):
    """``(c, its standard error)``, DN/s: the offset common to every pixel of ``rate``
    (what the per-integration offsets left uncorrected by the reference pixels average
    to), fitted with the wings over the mask pixels as ``rate = c + F(x) P_y(x)``:
    ``F`` the trace flux per column, ``P_y`` a polynomial of ``degree`` in x per row (the
    wings scale with the flux and change slowly along x; ``c`` does not scale). Least
    squares, twice with 4-sigma (MAD) clipping; (0, inf) when it cannot be fitted."""
    r = np.asarray(rate, np.float64)
    m = np.asarray(mask, bool)
    ny, nx = r.shape
    if ny > LIGHT_MAX_ROWS:  # the dense fit below has ny * (degree + 1) coefficients
        return 0.0, np.inf
    ok = np.isfinite(r)
    flux = np.maximum(np.where(~m & ok, r, 0.0).sum(axis=0), 0.0)
    use = m & ok & (flux[None, :] > 0)
    if use.sum() < 10 * (ny * (degree + 1) + 1):
        return 0.0, np.inf
    xs = np.linspace(-1.0, 1.0, nx)
    basis = np.polynomial.legendre.legvander(xs, degree)  # (nx, degree + 1)
    yy, xx = np.nonzero(use)
    f = flux / max(float(np.median(flux[flux > 0])), 1e-30)  # O(1) columns
    w = f[xx, None] * basis[xx]  # each pixel's row coefficients' factors
    b = r[yy, xx]
    keep = np.ones(b.size, bool)
    try:
        for _ in range(3):
            c, theta, _s = _offset_fit(yy[keep], w[keep], b[keep], ny)
            res = b - c - np.sum(w * theta[yy], axis=1)
            sig = 1.4826 * np.median(np.abs(res[keep] - np.median(res[keep])))
            keep = np.abs(res) <= 4.0 * max(sig, 1e-30)
        dof = max(int(keep.sum()) - (1 + (degree + 1) * np.unique(yy).size), 1)
        s2 = float(np.sum(res[keep] ** 2)) / dof
        schur = _offset_fit(yy[keep], w[keep], b[keep], ny)[2]
    except np.linalg.LinAlgError:
        return 0.0, np.inf
    if not schur > 0:
        return 0.0, np.inf
    return float(c), float(np.sqrt(s2 / schur))


def _offset_fit(yy, w, b, ny):
    """``(c, theta (ny, k), the sum of c's column projected off every row's block)``:
    the least squares of ``b = c + w . theta[yy]`` (``yy`` sorted), one row at a time:
    with each row's ``theta`` eliminated (its projection, by a small ``np.linalg.lstsq``
    of the row's pixels: minimum norm, as the dense fit), ``c`` is the ratio of the
    projected sums and its variance ``s2 /`` the last value. No BLAS call here is large
    enough to run threaded: OpenBLAS's rounding changes with its thread count, and the
    dense ``np.linalg.lstsq`` of session 6 gave another ``c``, so another scene light and
    other rateints, in a process started with OPENBLAS_NUM_THREADS=1 (issue 14)."""
    k = w.shape[1]
    t_b, t_1 = np.zeros((ny, k)), np.zeros((ny, k))
    s_b = s_1 = 0.0
    bounds = np.searchsorted(yy, np.arange(ny + 1))
    for y in range(ny):
        lo, hi = bounds[y], bounds[y + 1]
        if lo == hi:
            continue
        wy = w[lo:hi]
        rhs = np.stack([b[lo:hi], np.ones(hi - lo)], axis=1)
        t = np.linalg.lstsq(wy, rhs, rcond=None)[0]  # (k, 2)
        proj = rhs - np.sum(wy[:, :, None] * t[None, :, :], axis=1)
        s_b += float(np.sum(proj[:, 0]))
        s_1 += float(np.sum(proj[:, 1]))
        t_b[y], t_1[y] = t[:, 0], t[:, 1]
    if not s_1 > 0:
        raise np.linalg.LinAlgError("common_offset: the offset is not constrained")
    c = s_b / s_1
    return c, t_b - c * t_1, s_1


def light_model(rate: np.ndarray, mask: np.ndarray, smooth: int = LIGHT_SMOOTH) -> np.ndarray:
    """Static light of the scene-mask pixels (DN/s, (ny, nx); 0 off the mask) from a
    median rate of many uncleaned integrations (``rate``).

    The PSF wings scale with the trace's flux ``F(x)`` (the column sum of ``rate`` over
    the non-mask rows) and change slowly along x, while the rate's noise (read noise,
    what is left of 1/f and of the integrations' common offsets after the median) does
    not: the model is ``F(x) R(y, x)``, ``R`` the ratio ``rate / F`` averaged over
    ``smooth`` columns per row with weights ``F^2`` (its least-squares estimate for noise
    of constant variance), so that each column's model averages ~``smooth`` columns'
    noise and a column without flux gets no light. Non-finite values have no weight.
    """
    r = np.asarray(rate, np.float64)
    m = np.asarray(mask, bool)
    ok = np.isfinite(r)
    flux = np.maximum(np.where(~m & ok, r, 0.0).sum(axis=0), 0.0)
    kern = np.ones(max(int(smooth), 1))

    def along_x(a):
        return np.stack([np.convolve(row, kern, mode="same") for row in a])

    num = along_x(np.where(m & ok, r, 0.0) * flux[None, :])
    den = along_x(np.where(m & ok, 1.0, 0.0) * (flux**2)[None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return np.where(m, ratio * flux[None, :], 0.0)


def scene_light(rates: list, dqs: list, mask: np.ndarray):
    """``(light float32 (ny, nx) DN/s, c, its standard error)``: :func:`light_model` of
    the median of uncleaned ``rates`` (DO_NOT_USE pixels of ``dqs`` left out), less their
    :func:`common_offset` ``c`` where its standard error is below
    :data:`LIGHT_OFFSET_SE` (else ``c`` = 0: the flux does not change enough along x to
    tell it from the wings, and it is left in)."""
    stack = np.stack(rates)
    bad = (np.stack(dqs) & np.uint32(dqflags.DO_NOT_USE)) != 0
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: NaN, no light
        med = np.nanmedian(np.where(bad, np.nan, stack), axis=0)
    c, se = common_offset(med, mask)
    if not (np.isfinite(se) and se < LIGHT_OFFSET_SE):
        c = 0.0
    return light_model(med - c, mask).astype(np.float32), c, se
