"""Kernels on one slit's 2-D cut-outs across an ensemble of nods (FS, MOS slitlets).

All arrays of an ensemble share one region (the same detector pixels), stacked along the
first axis: ``rate`` float (N, ny, nx) DN/s, ``var`` (N, ny, nx) (DN/s)^2, ``dq`` uint32
(N, ny, nx); ``along_slit`` float (ny, nx) is the along-slit coordinate of each pixel
centre (arcsec, or slit units: any linear unit, the same as ``centers``), NaN outside the
slit. ``centers`` float (N,) is the source's along-slit position in each nod.

Background
----------
* :func:`nod_difference_background` -- jwst's way (``bkg_subtract`` with nod exposures):
  each nod's background is the mean of the *other* nods, pixel by pixel. Where PSF wings
  of the source in another nod reach the aperture, that light is subtracted too: the
  known over-subtraction (worst in S1600A1 with its short throws).
* :func:`masked_background` -- the background that is the same at a detector pixel in
  every nod, estimated from the nods where the source is masked at that pixel, and
  filled along the slit by a low-order polynomial where every nod is masked.
* :func:`joint_nod_fit` -- the source profile fitted jointly in all nods (the positive
  trace of each nod and, implicitly, the negative traces of nod differences): per column,
  ``D_k(y) = b(y) + F P_k(y)`` with ``b`` free per pixel (anything the same in every
  nod: sky, thermal, detector residuals) and ``P_k`` the profile of nod ``k``. Only the
  differences between nods constrain ``F``; wings that overlap are modelled, not
  subtracted.

Extraction (:func:`box_extract_nods`, :func:`optimal_extract_nods`) runs the BOTS kernels
of :mod:`nirbeam.transforms.extract` on each nod's background-subtracted image (no copy of
a kernel); :func:`combine_nods` combines the nods' spectra by inverse variance, and
:func:`combine_integrations` the integrations of one nod into an exposure rate.
Outliers: :func:`flag_ensemble_outliers` runs the time-series kernel
(:func:`nirbeam.transforms.outliers.flag_outliers`) over the integrations of one nod, and
the joint fit rejects residuals across nods.

numpy only (the per-column loops are vectorised over columns); no Beam, no I/O.

Size note: over 600 lines on purpose: the slit kernels used together by FS and MOS (nod difference, masked background, joint nod fit, combination); one public API, documented in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nirbeam import dqflags
from nirbeam.transforms.extract import aperture_weights, box_extract, optimal_extract
from nirbeam.transforms.outliers import flag_outliers
from nirbeam.transforms.trace import BAD_PIXEL_BITS, TraceModel

__all__ = [
    "NodFit",
    "NodSpectra",
    "good_pixels",
    "combine_integrations",
    "flag_ensemble_outliers",
    "nod_difference_background",
    "source_masks",
    "masked_background",
    "pixel_edges",
    "profiles_from_cdf",
    "poisson_factor",
    "joint_nod_fit",
    "fit_nod_centers",
    "trace_of",
    "box_extract_nods",
    "optimal_extract_nods",
    "combine_nods",
]

DO_NOT_USE = np.uint32(dqflags.DO_NOT_USE)


def _stack(rate, var, dq):
    rate = np.asarray(rate, np.float64)
    if rate.ndim != 3:
        raise ValueError(f"slit2d: rate must be (N, ny, nx), got shape {rate.shape}")
    var = np.asarray(var, np.float64)
    if var.shape != rate.shape:
        raise ValueError(f"slit2d: var shape {var.shape} != rate shape {rate.shape}")
    if dq is None:
        dq = np.zeros(rate.shape, np.uint32)
    dq = np.asarray(dq, np.uint32)
    if dq.shape != rate.shape:
        raise ValueError(f"slit2d: dq shape {dq.shape} != rate shape {rate.shape}")
    return rate, var, dq


def good_pixels(rate, var, dq, bad_bits: int = BAD_PIXEL_BITS) -> np.ndarray:
    """bool, same shape: finite data, finite positive variance, none of ``bad_bits``."""
    rate = np.asarray(rate)
    var = np.asarray(var)
    return (np.isfinite(rate) & np.isfinite(var) & (var > 0)
            & ((np.asarray(dq, np.uint32) & np.uint32(bad_bits)) == 0))


# ---------------------------------------------------------------------------------------
# ensemble: integrations -> exposure, outliers


def combine_integrations(sci, var, dq, bad_bits: int = BAD_PIXEL_BITS, *,
                         weights: str = "equal"):
    """Integrations of one exposure (or nod) -> one rate image.

    Parameters
    ----------
    sci : float, (nint, ny, nx), DN/s
    var : float, (nint, ny, nx), (DN/s)^2
    dq : uint32, (nint, ny, nx)
    weights : ``"equal"`` (default) or ``"inverse_variance"``
        The integrations of one exposure share their exposure time, so their true
        variances are equal: the plain mean of the good ones is unbiased, with variance
        ``sum(var) / n^2``. Weights from each integration's own (data-derived Poisson)
        variance pull the mean low by ~1/(S/N)^2 per pixel (an upward fluctuation gets a
        larger variance and a smaller weight); ``"inverse_variance"`` is kept for inputs
        whose variances differ for other reasons (``1 / sum(1/var)``).

    Returns
    -------
    rate : float64, (ny, nx), DN/s
        Mean of the good integrations; NaN where none is good.
    rate_var : float64, (ny, nx), (DN/s)^2
    rate_dq : uint32, (ny, nx)
        AND of the integrations' DQ (a bit survives where every integration has it),
        DO_NOT_USE cleared where an integration is good and set where none is.
    """
    if weights not in ("equal", "inverse_variance"):
        raise ValueError(f"combine_integrations weights={weights!r}: 'equal' or 'inverse_variance'")
    sci, var, dq = _stack(sci, var, dq)
    ok = good_pixels(sci, var, dq, bad_bits)
    if weights == "equal":
        w = ok.astype(np.float64)
    else:
        w = np.where(ok, 1.0 / np.where(ok, var, 1.0), 0.0)
    sw = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(sw > 0, (w * np.where(ok, sci, 0.0)).sum(axis=0) / sw, np.nan)
        if weights == "equal":
            rvar = np.where(sw > 0, np.where(ok, var, 0.0).sum(axis=0) / sw ** 2, np.nan)
        else:
            rvar = np.where(sw > 0, 1.0 / sw, np.nan)
    rdq = np.bitwise_and.reduce(dq, axis=0)
    rdq = np.where(sw > 0, rdq & ~DO_NOT_USE, rdq | DO_NOT_USE).astype(np.uint32)
    return rate, rvar, rdq


def flag_ensemble_outliers(sci, err, dq, n_sigma: float = 5.0) -> np.ndarray:
    """Outliers among the integrations of one nod: the BOTS kernel
    (:func:`~nirbeam.transforms.outliers.flag_outliers`) with the window = all
    integrations (the median of the nod's integrations is each pixel's reference). With
    fewer than 3 integrations nothing can be told apart and DQ is returned unchanged.

    Parameters
    ----------
    sci, err : float32, (nint, ny, nx), DN/s
    dq : uint32, (nint, ny, nx)

    Returns
    -------
    uint32, (nint, ny, nx): ``dq`` with ``DO_NOT_USE | OUTLIER`` on flagged pixels.
    """
    sci = np.ascontiguousarray(sci, np.float32)
    n = sci.shape[0]
    if n < 3:
        return np.asarray(dq, np.uint32).copy()
    return flag_outliers(sci, np.ascontiguousarray(err, np.float32),
                         np.ascontiguousarray(dq, np.uint32), window=n, n_sigma=n_sigma)


# ---------------------------------------------------------------------------------------
# background


def nod_difference_background(rate, var, dq, bad_bits: int = BAD_PIXEL_BITS):
    """Each nod's background = the mean of the other nods at the same pixel (jwst).

    Parameters
    ----------
    rate, var, dq : (N, ny, nx), N >= 2

    Returns
    -------
    background : float64, (N, ny, nx), DN/s
        NaN where no other nod is good.
    background_var : float64, (N, ny, nx), (DN/s)^2
        Variance of that mean.
    """
    rate, var, dq = _stack(rate, var, dq)
    n = rate.shape[0]
    if n < 2:
        raise ValueError("nod_difference_background: needs at least 2 nods")
    ok = good_pixels(rate, var, dq, bad_bits)
    r0 = np.where(ok, rate, 0.0)
    v0 = np.where(ok, var, 0.0)
    cnt = ok.sum(axis=0)
    sr, sv = r0.sum(axis=0), v0.sum(axis=0)
    m = cnt[None] - ok  # other nods that are good
    with np.errstate(invalid="ignore", divide="ignore"):
        bkg = np.where(m > 0, (sr[None] - r0) / m, np.nan)
        bvar = np.where(m > 0, (sv[None] - v0) / m.astype(float) ** 2, np.nan)
    return bkg, bvar


def source_masks(along_slit, centers, half_width: float) -> np.ndarray:
    """bool (N, ny, nx): pixels within ``half_width`` (along-slit units) of each nod's
    source position ``centers`` (N,)."""
    s = np.asarray(along_slit, np.float64)
    c = np.asarray(centers, np.float64).reshape(-1, 1, 1)
    with np.errstate(invalid="ignore"):
        return np.abs(s[None] - c) <= half_width


def masked_background(rate, var, dq, masks, along_slit, *, order: int = 1,
                      bad_bits: int = BAD_PIXEL_BITS):
    """The background common to all nods, with the source masked in every nod.

    At each pixel: the inverse-variance mean over the nods in which the pixel is good and
    outside that nod's source mask. Then, per column, a polynomial of ``order`` in
    ``along_slit`` is fitted (weighted) to those estimates and fills the pixels masked in
    every nod (and pixels with no estimate). Nothing is taken from a nod at a pixel its
    own source covers, so no source light enters the background beyond the wings outside
    the masks.

    Parameters
    ----------
    rate, var, dq : (N, ny, nx)
    masks : bool, (N, ny, nx)
        True where nod ``k``'s source is (e.g. :func:`source_masks`).
    along_slit : float, (ny, nx)
        NaN outside the slit (those pixels get NaN).
    order : int
        Polynomial order along the slit for the fill (0: the column mean).

    Returns
    -------
    background : float64, (ny, nx), DN/s
    background_var : float64, (ny, nx), (DN/s)^2
    filled : bool, (ny, nx)
        Pixels whose value is the polynomial (masked in every nod).
    """
    rate, var, dq = _stack(rate, var, dq)
    masks = np.asarray(masks, bool)
    s = np.asarray(along_slit, np.float64)
    if masks.shape != rate.shape or s.shape != rate.shape[1:]:
        raise ValueError(f"masked_background: masks {masks.shape} / along_slit {s.shape} do not "
                         f"match rate {rate.shape}")
    ok = good_pixels(rate, var, dq, bad_bits) & ~masks & np.isfinite(s)[None]
    w = np.where(ok, 1.0 / np.where(ok, var, 1.0), 0.0)
    sw = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = np.where(sw > 0, (w * np.where(ok, rate, 0.0)).sum(axis=0) / sw, np.nan)
        est_var = np.where(sw > 0, 1.0 / sw, np.nan)
    have = sw > 0
    inslit = np.isfinite(s)
    fill_needed = inslit & ~have
    bkg = est.copy()
    bvar = est_var.copy()
    cols = np.flatnonzero(fill_needed.any(axis=0))
    for x in cols:
        h = have[:, x]
        if h.sum() <= order:
            bkg[fill_needed[:, x], x] = np.nan
            continue
        sx = s[h, x]
        wx = sw[h, x]
        A = np.vander(sx, order + 1)
        Aw = A * np.sqrt(wx)[:, None]
        coef, *_ = np.linalg.lstsq(Aw, est[h, x] * np.sqrt(wx), rcond=None)
        cov = np.linalg.pinv(Aw.T @ Aw)
        ys = np.flatnonzero(fill_needed[:, x])
        Af = np.vander(s[ys, x], order + 1)
        bkg[ys, x] = Af @ coef
        bvar[ys, x] = np.einsum("ij,jk,ik->i", Af, cov, Af)
    bkg[~inslit] = np.nan
    bvar[~inslit] = np.nan
    return bkg, bvar, fill_needed


# ---------------------------------------------------------------------------------------
# profiles


def pixel_edges(along_slit) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper along-slit edges (ny, nx) of each pixel: midpoints between rows,
    the end rows extrapolated by half a row (same unit as ``along_slit``; the sense
    follows the map, ``lo <= hi`` is not assumed -- :func:`profiles_from_cdf` sorts)."""
    s = np.asarray(along_slit, np.float64)
    ny = s.shape[0]
    if ny < 2:
        raise ValueError("pixel_edges: need at least 2 rows")
    mid = 0.5 * (s[1:] + s[:-1])
    first = s[0] - 0.5 * (s[1] - s[0])
    last = s[-1] + 0.5 * (s[-1] - s[-2])
    lo = np.concatenate([first[None], mid], axis=0)
    hi = np.concatenate([mid, last[None]], axis=0)
    return lo, hi


def profiles_from_cdf(cdf: Callable[[np.ndarray, np.ndarray], np.ndarray], along_slit,
                      wavelength, centers, slit_limits: tuple[float, float]) -> np.ndarray:
    """Per-pixel spatial profile of a point source in each nod, from a cumulative profile.

    ``P_k(y, x) = cdf(u_hi, lam) - cdf(u_lo, lam)`` with ``u`` the pixel's along-slit
    edges minus ``centers[k]``, the edges clipped to the slit (``slit_limits``, the slit's
    ends in along-slit units: light beyond them never enters the slit). So ``sum_y P_k``
    is the fraction of the source's light that the slit passes along its length (< 1).

    Parameters
    ----------
    cdf : callable ``(u, lam) -> F``
        Cumulative along-slit profile of a point source at wavelength ``lam`` (µm),
        ``F(-inf) = 0``, ``F(+inf) = 1`` (e.g. from a PSF reference file).
    along_slit, wavelength : float, (ny, nx)
    centers : float, (N,)
    slit_limits : (float, float)

    Returns
    -------
    float64, (N, ny, nx); 0 outside the slit and where the wavelength is unknown.
    """
    s = np.asarray(along_slit, np.float64)
    lam = np.asarray(wavelength, np.float64)
    lo, hi = pixel_edges(np.where(np.isfinite(s), s, np.nan))
    a, b = np.minimum(lo, hi), np.maximum(lo, hi)
    smin, smax = sorted(float(v) for v in slit_limits)
    a = np.clip(a, smin, smax)
    b = np.clip(b, smin, smax)
    out = []
    good = np.isfinite(a) & np.isfinite(b) & np.isfinite(lam)
    fill = float(np.nanmedian(lam[good])) if good.any() else 1.0  # a valid placeholder
    lam0 = np.where(good, lam, fill)
    for c in np.asarray(centers, np.float64):
        p = np.asarray(cdf(np.where(good, b - c, 0.0), lam0)) - np.asarray(
            cdf(np.where(good, a - c, 0.0), lam0))
        out.append(np.where(good, p, 0.0))
    return np.stack(out)


# ---------------------------------------------------------------------------------------
# joint fit


@dataclass(frozen=True, eq=False)
class NodFit:
    """Result of :func:`joint_nod_fit`.

    Attributes
    ----------
    flux : float64, (nx,), DN/s
        Amplitude ``F`` of the profile (the source's flux in the profile's normalisation:
        with profiles from :func:`profiles_from_cdf`, the flux before the slit's ends
        truncate it). NaN where a column cannot be fitted.
    flux_var : float64, (nx,), (DN/s)^2
    background : float64, (ny, nx), DN/s
        ``b(y)``, the part common to every nod.
    dq : uint32, (nx,)
        OR of the DQ of rejected/bad pixels in the source's footprint (less DO_NOT_USE),
        DO_NOT_USE where the column has no fit.
    rejected : bool, (N, ny, nx)
        Pixels rejected by the residual clip.
    chi2 : float64, (nx,)
    dof : int64, (nx,)
    """

    flux: np.ndarray
    flux_var: np.ndarray
    background: np.ndarray
    dq: np.ndarray
    rejected: np.ndarray
    chi2: np.ndarray
    dof: np.ndarray

    def model(self, profiles) -> np.ndarray:
        """(N, ny, nx) model ``b + F P_k``."""
        return self.background[None] + self.flux[None, None, :] * np.asarray(profiles)


def _joint_solve(D, V, P, M):
    w = np.where(M, 1.0 / np.where(M, V, 1.0), 0.0)
    sw = w.sum(axis=0)  # (ny, nx)
    with np.errstate(invalid="ignore", divide="ignore"):
        Dbar = np.where(sw > 0, (w * D).sum(axis=0) / sw, 0.0)
        Pbar = np.where(sw > 0, (w * P).sum(axis=0) / sw, 0.0)
    dD = np.where(M, D - Dbar[None], 0.0)
    dP = np.where(M, P - Pbar[None], 0.0)
    num = (w * dD * dP).sum(axis=(0, 1))
    den = (w * dP * dP).sum(axis=(0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        F = np.where(den > 0, num / den, np.nan)
        Fvar = np.where(den > 0, 1.0 / den, np.nan)
    b = np.where(sw > 0, Dbar - np.nan_to_num(F)[None, :] * Pbar, np.nan)
    resid = np.where(M, D - b[None] - np.nan_to_num(F)[None, None, :] * P, 0.0)
    chi = resid * np.sqrt(w)
    return F, Fvar, b, chi


def poisson_factor(rate, var_poisson, min_rate: float | None = None) -> float:
    """``k`` with ``var_poisson ~ k * rate`` (1 / (gain x exposure time)): the median of
    ``var_poisson / rate`` over pixels brighter than ``min_rate`` (default: the 90th
    percentile of the positive rates)."""
    r = np.asarray(rate, np.float64)
    vp = np.asarray(var_poisson, np.float64)
    ok = np.isfinite(r) & np.isfinite(vp) & (r > 0) & (vp > 0)
    if not ok.any():
        return 0.0
    thr = np.percentile(r[ok], 90) if min_rate is None else min_rate
    sel = ok & (r >= thr)
    return float(np.median(vp[sel] / r[sel])) if sel.any() else 0.0


def joint_nod_fit(rate, var, dq, profiles, *, sigma_clip: float | None = 5.0,
                  max_iter: int = 10, bad_bits: int = BAD_PIXEL_BITS,
                  footprint: float = 1e-3, var_rnoise=None, poisson_k: float | None = None,
                  model_iter: int = 3) -> NodFit:
    """Fit ``D_k(y) = b(y) + F P_k(y)`` per column in all nods at once (see the module notes).

    Closed form per column: with inverse-variance weights ``w`` and the nod-weighted
    means ``Dbar(y)``, ``Pbar(y)`` at each pixel, ``b`` is eliminated and::

        F = sum w (D - Dbar)(P - Pbar) / sum w (P - Pbar)^2,  var F = 1 / sum w (P - Pbar)^2

    (the generalised-least-squares estimate; a pixel good in one nod only carries no
    information on ``F``). Pixels whose residual exceeds ``sigma_clip`` are rejected
    (all above the threshold at once, the worst pass by pass), until none changes.

    Parameters
    ----------
    rate, var, dq : (N, ny, nx), N >= 2
    profiles : float, (N, ny, nx)
        ``P_k`` (e.g. :func:`profiles_from_cdf`); the nods must differ somewhere.
    footprint : float
        Profile level above which a pixel counts as the source's (for the column DQ).
    var_rnoise : float, (N, ny, nx), optional, and poisson_k : float
        Variance model: after each fit the weights are revised from the model,
        ``V = var_rnoise + poisson_k * max(b + F P, 0)`` (``model_iter`` times), so a
        pixel's weight does not depend on its own noise (weights from data-derived
        Poisson variances bias ``F`` low by ~1/(S/N)^2). Without them ``var`` is used.

    Returns
    -------
    NodFit
    """
    D, V, dq = _stack(rate, var, dq)
    P = np.asarray(profiles, np.float64)
    if P.shape != D.shape:
        raise ValueError(f"joint_nod_fit: profiles {P.shape} != rate {D.shape}")
    if D.shape[0] < 2:
        raise ValueError("joint_nod_fit: needs at least 2 nods")
    M0 = good_pixels(D, V, dq, bad_bits)
    D = np.where(M0, D, 0.0)
    M = M0.copy()
    modelled = var_rnoise is not None and poisson_k is not None
    if modelled:
        vr = np.broadcast_to(np.asarray(var_rnoise, np.float64), D.shape)
        vr = np.where(np.isfinite(vr) & (vr > 0), vr, np.where(M0, V, 1.0))
    for _ in range(max_iter if sigma_clip else 1):
        F, Fvar, b, chi = _joint_solve(D, V, P, M)
        if modelled:
            for _m in range(model_iter):
                model = np.nan_to_num(b)[None] + np.nan_to_num(F)[None, None, :] * P
                V = vr + float(poisson_k) * np.maximum(model, 0.0)
                F, Fvar, b, chi = _joint_solve(D, V, P, M)
        if not sigma_clip:
            break
        bad = M & (np.abs(chi) > sigma_clip)
        if not bad.any():
            break
        M &= ~bad
    rejected = M0 & ~M
    foot = P > footprint
    col_dq = np.bitwise_or.reduce(np.where(foot & ~M, dq, 0).astype(np.uint32), axis=(0, 1))
    col_dq = col_dq | np.where(rejected.any(axis=(0, 1)), np.uint32(dqflags.OUTLIER), 0)
    col_dq = (col_dq & ~DO_NOT_USE).astype(np.uint32)
    col_dq[~np.isfinite(F)] |= DO_NOT_USE
    chi2 = (chi ** 2).sum(axis=(0, 1))
    n_used = (M & (np.abs(P) >= 0)).sum(axis=0)  # (ny, nx)
    dof = (np.maximum(n_used - 1, 0).sum(axis=0) - 1).astype(np.int64)
    return NodFit(F, Fvar, b, col_dq, rejected, chi2, dof)


def fit_nod_centers(rate, var, dq, profile_fn: Callable[[np.ndarray], np.ndarray], centers0,
                    *, search: float, steps: int = 21, iterations: int = 2,
                    bad_bits: int = BAD_PIXEL_BITS) -> np.ndarray:
    """Profile fit of the source's along-slit position in each nod.

    The nod centres are refined one nod at a time over a grid of ``steps`` values within
    ``±search`` of the current value (then a grid 10x finer around the best), the
    criterion being the total chi^2 of :func:`joint_nod_fit` (no clipping). The
    centres are determined up to a common shift only when the profiles' truncation by the
    slit's ends is negligible; nod 0 is therefore refined too, against the others.

    Parameters
    ----------
    profile_fn : callable ``centers (N,) -> profiles (N, ny, nx)``
    centers0 : float, (N,)
        Start (e.g. the commanded nod offsets from the header).

    Returns
    -------
    float64, (N,)
    """
    c = np.asarray(centers0, np.float64).copy()

    def chi2(cc):
        f = joint_nod_fit(rate, var, dq, profile_fn(cc), sigma_clip=None, bad_bits=bad_bits)
        return float(np.nansum(f.chi2))

    for _ in range(iterations):
        for k in range(c.size):
            half = search
            for _level in range(2):
                grid = c[k] + np.linspace(-half, half, steps)
                vals = []
                for g in grid:
                    cc = c.copy()
                    cc[k] = g
                    vals.append(chi2(cc))
                c[k] = grid[int(np.argmin(vals))]
                half = 2 * half / (steps - 1)
    return c


# ---------------------------------------------------------------------------------------
# extraction per nod (the BOTS kernels), combination


@dataclass(frozen=True, eq=False)
class NodSpectra:
    """Per-nod spectra, (N, nx) each: flux and variance in the profile's normalisation
    (total flux when aperture-corrected), DQ, and the pixels used."""

    flux: np.ndarray
    flux_var: np.ndarray
    dq: np.ndarray
    npixels: np.ndarray
    method: str


def trace_of(along_slit, center: float, x_range: tuple[float, float] | None = None,
             degree: int = 3) -> TraceModel:
    """The row ``y(x)`` where ``along_slit == center``, per column (linear interpolation
    between rows), fitted by a polynomial: a :class:`~nirbeam.transforms.trace.TraceModel`
    for the BOTS extraction kernels."""
    s = np.asarray(along_slit, np.float64)
    ny, nx = s.shape
    ys = np.arange(ny, dtype=np.float64)
    xs, yc = [], []
    for x in range(nx):
        col = s[:, x]
        ok = np.isfinite(col)
        if ok.sum() < 2:
            continue
        cy, yy = col[ok], ys[ok]
        o = np.argsort(cy)
        if not (cy[o][0] <= center <= cy[o][-1]):
            continue
        xs.append(x)
        yc.append(np.interp(center, cy[o], yy[o]))
    if len(xs) <= degree:
        raise ValueError(f"trace_of: along-slit position {center} is in fewer than "
                         f"{degree + 1} columns of the cut-out")
    xr = x_range or (0.0, float(nx - 1))
    t = (np.asarray(xs) - 0.5 * (xr[0] + xr[1])) / max(0.5 * (xr[1] - xr[0]), 1.0)
    coef = np.polynomial.polynomial.polyfit(t, yc, degree)
    return TraceModel(tuple(float(v) for v in coef), (1.0,), (float(xr[0]), float(xr[1])),
                      float(np.std(np.polynomial.polynomial.polyval(t, coef) - yc)), "config")


def box_extract_nods(rate, var, dq, background, background_var, along_slit, centers,
                     half_width_px: float, profiles=None, bad_bits: int = BAD_PIXEL_BITS,
                     ) -> NodSpectra:
    """Box extraction of each nod (the BOTS curved-box kernel
    :func:`~nirbeam.transforms.extract.box_extract`) about the trace at ``centers[k]``,
    on ``rate - background``.

    ``background`` is (N, ny, nx) (e.g. :func:`nod_difference_background`) or (ny, nx)
    (one for all nods). With ``profiles`` (N, ny, nx), each nod's flux is divided by the
    fraction of its profile inside the aperture (the aperture correction; the profile's
    normalisation, e.g. the flux before the slit's ends truncate it).
    """
    D, V, dq = _stack(rate, var, dq)
    n, ny, nx = D.shape
    bkg = np.broadcast_to(np.asarray(background, np.float64), D.shape)
    bvar = np.broadcast_to(np.asarray(background_var, np.float64), D.shape)
    flux = np.full((n, nx), np.nan)
    fvar = np.full((n, nx), np.nan)
    fdq = np.zeros((n, nx), np.uint32)
    npx = np.zeros((n, nx))
    for k in range(n):
        tr = trace_of(along_slit, float(centers[k]))
        bad_b = ~np.isfinite(bkg[k])
        img = np.where(bad_b, np.nan, D[k] - np.nan_to_num(bkg[k]))
        vv = V[k] + np.nan_to_num(bvar[k])
        prof = None
        if profiles is not None:
            p = np.asarray(profiles[k], np.float64)
            tot = p.sum(axis=0)
            prof = np.where(tot > 0, p / np.where(tot > 0, tot, 1.0), 0.0)
        sp = box_extract(img, vv, dq[k], tr, half_width_px, profile=prof, bad_bits=bad_bits)
        f, e = np.asarray(sp.flux, np.float64), np.asarray(sp.flux_error, np.float64)
        if profiles is not None:
            wgt = aperture_weights(tr, (ny, nx), half_width_px)
            inside = (wgt * np.asarray(profiles[k])).sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                f = np.where(inside > 0, f / inside, np.nan)
                e = np.where(inside > 0, e / inside, np.nan)
        flux[k], fvar[k], fdq[k], npx[k] = f, e ** 2, sp.dq, sp.npixels
    return NodSpectra(flux, fvar, fdq, npx, "box")


def optimal_extract_nods(rate, var, dq, background, background_var, profiles, *,
                         sigma_clip: float | None = 5.0, bad_bits: int = BAD_PIXEL_BITS,
                         var_rnoise=None, var_poisson=None) -> NodSpectra:
    """Optimal extraction (the BOTS Horne kernel
    :func:`~nirbeam.transforms.extract.optimal_extract`) of each nod on
    ``rate - background``, with the nod's profile ``profiles[k]``. The kernel returns the
    flux in the profile's support; it is divided by ``sum_y P_k`` so the result is in the
    profile's normalisation (for :func:`profiles_from_cdf`: before the slit's ends).

    With ``var_rnoise`` and ``var_poisson`` (N, ny, nx) the kernel models the variance
    (its ``V = var_rnoise + k max(P f, 0)``; the background's Poisson part
    ``k max(background, 0)`` is added to ``var_rnoise`` here), so weights do not follow
    each pixel's own noise."""
    D, V, dq = _stack(rate, var, dq)
    n, ny, nx = D.shape
    P = np.asarray(profiles, np.float64)
    bkg = np.broadcast_to(np.asarray(background, np.float64), D.shape)
    bvar = np.broadcast_to(np.asarray(background_var, np.float64), D.shape)
    flux = np.full((n, nx), np.nan)
    fvar = np.full((n, nx), np.nan)
    fdq = np.zeros((n, nx), np.uint32)
    npx = np.zeros((n, nx))
    for k in range(n):
        tot = P[k].sum(axis=0)
        prof = np.where(tot > 0, P[k] / np.where(tot > 0, tot, 1.0), 0.0)
        img = D[k] - bkg[k]
        vv = V[k] + np.nan_to_num(bvar[k])
        d = dq[k] | np.where(np.isfinite(bkg[k]), 0, DO_NOT_USE).astype(np.uint32)
        kw = {}
        if var_rnoise is not None and var_poisson is not None:
            k_p = poisson_factor(D[k], var_poisson[k])
            kw = {"var_rnoise": np.asarray(var_rnoise[k], np.float64) + k_p * np.maximum(
                np.nan_to_num(bkg[k]), 0.0) + np.nan_to_num(bvar[k]),
                  "var_poisson": np.asarray(var_poisson[k], np.float64)}
        sp = optimal_extract(np.where(np.isfinite(img), img, 0.0), vv, d, prof,
                             sigma_clip=sigma_clip, bad_bits=bad_bits, **kw)
        with np.errstate(invalid="ignore", divide="ignore"):
            flux[k] = np.where(tot > 0, sp.flux / tot, np.nan)
            fvar[k] = np.where(tot > 0, (np.asarray(sp.flux_error) / tot) ** 2, np.nan)
        fdq[k], npx[k] = sp.dq, sp.npixels
    return NodSpectra(flux, fvar, fdq, npx, "optimal")


def combine_nods(flux, flux_var, dq, bad_bits: int = int(dqflags.DO_NOT_USE)):
    """Inverse-variance combination of the nods' spectra.

    Parameters
    ----------
    flux, flux_var : float, (N, nx)
    dq : uint32, (N, nx)

    Returns
    -------
    flux : float64, (nx,); flux_var : float64, (nx,); dq : uint32, (nx,)
        The DQ is the OR of the nods used (less DO_NOT_USE); DO_NOT_USE and NaN where
        no nod is usable.
    """
    f = np.asarray(flux, np.float64)
    v = np.asarray(flux_var, np.float64)
    q = np.asarray(dq, np.uint32)
    ok = np.isfinite(f) & np.isfinite(v) & (v > 0) & ((q & np.uint32(bad_bits)) == 0)
    w = np.where(ok, 1.0 / np.where(ok, v, 1.0), 0.0)
    sw = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(sw > 0, (w * np.where(ok, f, 0.0)).sum(axis=0) / sw, np.nan)
        ovar = np.where(sw > 0, 1.0 / sw, np.nan)
    odq = np.bitwise_or.reduce(np.where(ok, q, 0).astype(np.uint32), axis=0) & ~DO_NOT_USE
    odq = np.where(sw > 0, odq, odq | DO_NOT_USE).astype(np.uint32)
    return out, ovar, odq
