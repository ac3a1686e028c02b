"""Spatial profiles for optimal extraction: from a stack, or accumulated integration by integration."""

from __future__ import annotations

import numpy as np

from nirbeam.transforms.extract_background import column_background
from nirbeam.transforms.extract_common import (
    aperture_weights,
)
from nirbeam.transforms.outliers import nanmedian_axis0
from nirbeam.transforms.trace import BAD_PIXEL_BITS, TraceModel


def savgol_filter(x: np.ndarray, window_length: int, polyorder: int, axis: int = -1) -> np.ndarray:
    """``scipy.signal.savgol_filter(x, window_length, polyorder, axis=axis, mode="interp")``
    computed as scipy computes it, without importing ``scipy.signal``.

    Savitzky-Golay: the value of a least-squares polynomial of degree ``polyorder`` fitted
    to the ``window_length`` points centred on each point, i.e. a fixed linear filter; in
    the ``window_length // 2`` points at each end, the polynomial fitted to the first (last)
    ``window_length`` points, evaluated there ("interp"). The same operations as scipy 1.x
    (filter coefficients by ``scipy.linalg.lstsq``, ``scipy.ndimage.convolve1d`` with
    ``mode="constant"``, the edge polynomials by scaled least squares and Horner), so the
    result is scipy's bit for bit (tests/test_savgol.py). ``scipy.signal`` is not imported
    because its import costs ~0.6-1.4 CPU-s (it pulls in scipy.stats) and nothing else on
    the ``nirbeam run`` path needs it; scipy.linalg and scipy.ndimage are loaded anyway.
    """
    from scipy.linalg import lstsq
    from scipy.ndimage import convolve1d

    x = np.asarray(x)
    if x.dtype != np.float64 and x.dtype != np.float32:
        x = x.astype(np.float64)
    window_length, polyorder = int(window_length), int(polyorder)
    if polyorder >= window_length:
        raise ValueError("polyorder must be less than window_length.")
    axis = axis % x.ndim
    n = x.shape[axis]
    if window_length > n:
        raise ValueError("If mode is 'interp', window_length must be less than or equal "
                         "to the size of x.")
    halflen, rem = divmod(window_length, 2)
    pos = halflen if rem else halflen - 0.5
    t = np.arange(-pos, window_length - pos, dtype=np.float64)[::-1]  # 'conv' order
    a = t ** np.arange(polyorder + 1, dtype=np.float64).reshape(-1, 1)
    rhs = np.zeros(polyorder + 1, np.float64)
    rhs[0] = 1.0
    coeffs = lstsq(a, rhs, cond=np.finfo(np.float64).eps * max(a.shape))[0]
    y = convolve1d(x, coeffs, axis=axis, mode="constant")
    for w0, i0, i1 in ((0, 0, halflen), (n - window_length, n - halflen, n)):
        edge = np.moveaxis(x.take(np.arange(w0, w0 + window_length), axis=axis), axis, 0)
        rest = edge.shape[1:]
        edge = edge.reshape(window_length, -1)
        u = np.arange(0, window_length, dtype=x.dtype)
        lhs = u[:, None] ** np.arange(polyorder + 1, dtype=x.dtype)[::-1][None, :]
        scale = np.sqrt(np.sum(lhs * lhs, axis=0))
        lhs /= scale
        c = lstsq(lhs, edge, cond=window_length * np.finfo(x.dtype).eps)[0]
        c = (c.T / scale).T
        v = np.arange(i0 - w0, i1 - w0, dtype=c.dtype).reshape(-1, 1)
        vals = np.zeros_like(v)
        for j in range(c.shape[0]):
            vals = vals * v + c[j, ...]
        vals = vals / 1.0  # scipy divides by delta ** deriv (1.0 here)
        sl = [slice(None)] * y.ndim
        sl[axis] = slice(i0, i1)
        y[tuple(sl)] = np.moveaxis(vals.reshape(i1 - i0, *rest), 0, axis)
    return y


def build_profile(
    images: np.ndarray,
    trace: TraceModel,
    half_width: float,
    *,
    dq: np.ndarray | None = None,
    background: np.ndarray | None = None,
    background_region: tuple[float, float] | None = None,
    smooth: int = 9,
    bad_bits: int = BAD_PIXEL_BITS,
) -> np.ndarray:
    """Spatial profile for optimal extraction from a stack of rate images.

    Each integration's columns are normalised to unit sum inside the aperture (removing
    transit and flux variations), the median over integrations is taken (bad pixels
    ignored), smoothed along x (Savitzky-Golay, ``smooth`` columns), normalised to
    unit column sum and then clipped to be non-negative (no renormalisation after the
    clip, which would bias the optimal flux high by the clipped wing noise; column sums
    are therefore 1 + the positive part of the wing noise, typically < 1e-3).

    Parameters
    ----------
    images : float, (nint, ny, nx) or (ny, nx), DN/s
    trace : TraceModel
    half_width : float, px
        Profile support ``|y - y_c(x)| <= half_width`` (use >= 4 PSF sigma).
    dq : uint32, same shape as images, optional
    background : float, (nint, nx) or (nx,), optional
        Per-column background to subtract first.
    background_region : (inner, outer) px, optional
        If given (and ``background`` is None), the background of each image is
        estimated with :func:`column_background` (median) and subtracted. Without
        either, any background pedestal becomes part of the profile and biases the
        optimal flux (by ~ pedestal x support pixels / column flux).
    smooth : int
        Savitzky-Golay window (columns, made odd; quadratic) along x; <= 2: none.

    Returns
    -------
    profile : float64, (ny, nx)
        >= 0, each column normalised to 1 over the support pixels (whole pixels touched
        by the aperture ``|y - y_c| <= half_width``; 0 outside) before the clip of
        negatives; columns without usable pixels are all-zero.
    """
    im = np.asarray(images, np.float64)
    if im.ndim == 2:
        im = im[None]
    if im.ndim != 3:
        raise ValueError(f"build_profile: images must be (nint, ny, nx), got {im.shape}")
    nint, ny, nx = im.shape
    if background is None and background_region is not None:
        d3 = None if dq is None else np.asarray(dq)
        if d3 is not None and d3.ndim == 2:
            d3 = np.broadcast_to(d3, im.shape)
        background = np.stack(
            [
                column_background(
                    im[i],
                    None if d3 is None else d3[i],
                    trace,
                    background_region,
                    bad_bits=bad_bits,
                )[0]
                for i in range(nint)
            ]
        )
    if background is not None:
        b = np.asarray(background, np.float64)
        im = im - (b[:, None, :] if b.ndim == 2 else b[None, None, :])
    bad = ~np.isfinite(im)
    if dq is not None:
        d = np.asarray(dq).astype(np.uint32)
        if d.ndim == 2:
            d = d[None]
        bad |= (d & np.uint32(bad_bits)) != 0
    w = aperture_weights(trace, (ny, nx), half_width)
    sup = w > 0
    vals = np.where(bad | ~sup[None], np.nan, im)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            csum = np.nansum(vals, axis=1)  # (nint, nx), whole support pixels
            norm = vals / np.where(csum > 0, csum, np.nan)[:, None, :]
            med = nanmedian_axis0(norm)
    med = np.where(np.isfinite(med) & sup, med, 0.0)
    if smooth > 2 and nx > smooth:
        # Savitzky-Golay (local quadratic) rather than a running mean: a curved trace moves
        # the profile by (slope x window) px, which a running mean blurs (biasing the
        # optimal flux high where the PSF is narrow); a local quadratic follows it.
        win = int(smooth) | 1
        med = savgol_filter(med, win, 2, axis=1)
    med = med * sup
    # Normalise BEFORE clipping negatives: the noise in the faint wings has zero mean, so
    # the column sum is unbiased; clipping first would bias the sum high (and the optimal
    # flux high by ~ sum of the clipped noise, 0.1% in tests). Clipped wing pixels then
    # carry P = 0 without renormalisation, which leaves f = sum(PD/V)/sum(P^2/V) unbiased.
    col = np.sum(med, axis=0)
    prof = np.where(col > 0, med / np.where(col > 0, col, 1.0), 0.0)
    return np.clip(prof, 0.0, None)



class ProfileAccumulator:
    """Streaming profile: collect the first ``n_first`` integrations, then refine.

    ``add`` returns the current profile (None until ``n_first`` images were seen; then the
    median profile of those, as :func:`build_profile`). After that, each further image
    updates a running mean of column-normalised images (a pixel deviating from the
    current profile by more than half the column's profile peak is skipped) and the
    profile is rebuilt from that mean every ``refresh`` images.

    Parameters
    ----------
    trace : TraceModel
    shape : (ny, nx)
    half_width : float
    n_first : int
    smooth : int
    refresh : int
    """

    def __init__(
        self,
        trace: TraceModel,
        shape: tuple[int, int],
        half_width: float,
        *,
        n_first: int = 20,
        smooth: int = 9,
        refresh: int = 50,
    ):
        self.trace = trace
        self.shape = tuple(shape)
        self.half_width = float(half_width)
        self.n_first = int(n_first)
        self.smooth = int(smooth)
        self.refresh = int(refresh)
        self._first: list[np.ndarray] = []
        self._first_dq: list[np.ndarray] = []
        self._sum = np.zeros(self.shape)
        self._n = np.zeros(self.shape)
        self._since = 0
        self.profile: np.ndarray | None = None

    def add(self, rate: np.ndarray, dq: np.ndarray | None = None) -> np.ndarray | None:
        """Feed one (background-subtracted) rate image; return the current profile."""
        rate = np.asarray(rate, np.float64)
        dq = np.zeros(self.shape, np.uint32) if dq is None else np.asarray(dq, np.uint32)
        if self.profile is None:
            self._first.append(rate)
            self._first_dq.append(dq)
            if len(self._first) >= self.n_first:
                st = np.stack(self._first)
                self.profile = build_profile(
                    st, self.trace, self.half_width, dq=np.stack(self._first_dq), smooth=self.smooth
                )
                w = aperture_weights(self.trace, self.shape, self.half_width) > 0
                csum = np.sum(np.where(np.isfinite(st), st, 0) * w[None], axis=1)
                norm = st / np.where(csum > 0, csum, np.nan)[:, None, :]
                ok = np.isfinite(norm)
                self._sum = np.sum(np.where(ok, norm, 0.0), axis=0)
                self._n = ok.sum(axis=0).astype(np.float64)
                self._first.clear()
                self._first_dq.clear()
            return self.profile
        w = aperture_weights(self.trace, self.shape, self.half_width) > 0
        good = np.isfinite(rate) & ((dq & np.uint32(BAD_PIXEL_BITS)) == 0)
        csum = np.sum(np.where(good, rate, 0.0) * w, axis=0)
        norm = rate / np.where(csum > 0, csum, np.nan)[None, :]
        pnorm = self.profile
        ok = good & np.isfinite(norm) & (np.abs(norm - pnorm) <= 0.5 * np.max(pnorm, axis=0))
        self._sum += np.where(ok, norm, 0.0)
        self._n += ok
        self._since += 1
        if self._since >= self.refresh:
            self._since = 0
            with np.errstate(all="ignore"):
                mean = np.where(self._n > 0, self._sum / np.maximum(self._n, 1), np.nan)
            self.profile = build_profile(
                np.where(w, mean, np.nan), self.trace, self.half_width, smooth=self.smooth
            )
        return self.profile


# ---------------------------------------------------------------------------------------
# numpy reference implementations (the code before the numba kernels): the tests and
# bench/extract_cost.py compare the kernels against these.
# ---------------------------------------------------------------------------------------
