"""1/f cleaning: parameters (:class:`FlickerParams`), DQ bit sets and the small
array helpers the cleaners share. Public names are re-exported by
:mod:`nirbeam.transforms.flicker`."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from nirbeam import dqflags

#: Group-DQ bits that make a group difference unusable for the noise fit.
GROUP_BAD_BITS = (
    dqflags.DO_NOT_USE
    | dqflags.SATURATED
    | dqflags.JUMP_DET
    | dqflags.DROPOUT
    | dqflags.AD_FLOOR
    | dqflags.CHARGELOSS
)

#: Pixel-DQ bits that keep a pixel out of the scene mask by default.
MASK_BAD_BITS = dqflags.DO_NOT_USE | dqflags.SATURATED | dqflags.DEAD | dqflags.HOT

MAD_TO_SIGMA = 1.482602218505602

#: Clip level (in its own clipped std) of the hook's clipped mean (statistic='mean').
CLIP_SIGMA = 3.0

#: Finite-sample excess of the clipped mean's variance over its asymptotic value: the
#: variance of the 3-sigma-clipped mean of n Gaussian values (robust start, 3 rounds) is
#: ``clipped_mean_efficiency() * (1 + CLIP_FINITE_N / n) * sigma^2 / n``; 0.8 fits a
#: seeded Monte-Carlo of that estimator (2e5 draws per n, n = 4..256: within 3% for
#: n >= 4; tests/test_flicker_errors.py checks it against the kernel itself).
CLIP_FINITE_N = 0.8

#: The pooled MAD variance of the residuals about each column's clipped mean is smaller
#: than the values' variance by ``1 - RESID_B / n - RESID_C / n^2`` (a mean alone gives
#: 1 - 1/n; the clipping and the MAD of short columns take more): fitted to the plain
#: hook on seeded white noise, n = 4..64 (tests/test_flicker_errors.py checks the
#: reported / actual model variance within 5% for n = 4, 8, 16, 64).
RESID_B = 1.2
RESID_C = 1.7


@functools.lru_cache(maxsize=16)
def clipped_mean_efficiency(clip_sigma: float = CLIP_SIGMA) -> float:
    """Asymptotic variance factor (x sigma^2 / n) of the clipped mean of Gaussian values
    at ``clip_sigma`` times the *clipped* std (iterated to its fixed point).

    The clip limit ``L`` (in units of the true sigma) solves ``L = c s(L)`` with ``s(L)^2``
    the variance of the standard normal truncated to ``|x| < L``; the estimator is the
    M-estimator of psi(x) = x 1{|x| < L}, whose asymptotic variance is
    ``E psi^2 / (d/dtheta E psi(x - theta))^2 = 1 / (P(|x| < L) - 2 L phi(L))`` (both
    terms equal ``P - 2 L phi``; symmetric: the scale estimate does not enter).
    ``c = 3``: L = 2.949, factor 1.0346 (median: pi/2). A pure function of
    ``clip_sigma``, computed once per value (``lru_cache``: the fixed point is 200
    iterations of Python, ~85 us, which the group hook's :func:`with_walk` used to pay
    every integration)."""
    from math import erf, exp, pi, sqrt

    def core(x):  # P(|z| < x) - 2 x phi(x)
        return erf(x / sqrt(2.0)) - 2.0 * x * exp(-0.5 * x * x) / sqrt(2.0 * pi)

    lim = float(clip_sigma)
    for _ in range(200):
        lim = float(clip_sigma) * sqrt(core(lim) / erf(lim / sqrt(2.0)))
    return 1.0 / core(lim)

METHODS = ("median", "fft", "nsclean")
_LEVELS = ("group", "rate")
STATISTICS = ("median", "mean")
READOUT_FILTERS = ("none", "wiener")


# --------------------------------------------------------------------------- params
@dataclass(frozen=True)
class FlickerParams:
    """Parameters of 1/f cleaning.

    Attributes
    ----------
    method : {'median', 'fft', 'nsclean'}
        Noise model: per-column robust offset (:func:`clean_median`), low-pass cosine
        series per column (:func:`clean_fft`), or jwst-like apodized Fourier series in
        readout time over sections of columns (:func:`clean_nsclean`).
    level : {'group', 'rate'}
        Clean group differences before ramp fitting, or rate images after it.
    n_sigma : float
        Scene-mask threshold (sigma above the column background) for source pixels.
    mask_dilate : int
        Rows (along y) by which the detected trace is grown on each side; the trace is
        also grown by one column on each side.
    mask_smooth : int
        Columns averaged along x (dispersion) to detect the trace in the draft image.
    statistic : {'median', 'mean'}
        ``clean_median`` statistic: median (jwst), or 3-sigma-clipped mean (default:
        ~1.6x less estimation noise added to every pixel; with the median, group-level
        cleaning pushed the end-to-end rateints chi^2 to 1.24, with the mean it stays
        below 1.2).
    fft_n_freq : int
        Number of non-constant cosine terms along the column in ``clean_fft`` (0 gives a
        weighted per-column mean).
    fft_ridge : float
        Ridge penalty on the non-constant terms, in units of fully weighted pixels.
    fft_alternating : bool
        Also fit an alternating-row term ``(-1)**y`` per column (NSClean's Nyquist
        term, "alternating column noise" in detector coordinates).
    min_pixels : int
        Columns with fewer usable background pixels take the mean model of the
        nearest usable column on each side.
    detector : {'NRS1', 'NRS2'}
        Readout direction of the columns for ``method='nsclean'`` (NRS2 reads them
        from high x to low x).
    background : {'median', None}
        Background removed before fitting and kept in the output: scalar median of
        the masked pixels of each image, or nothing (TSO after bias: ~0).
    before_jump : bool
        Group level: clean the groups before jump detection (default; a 1/f excursion
        in one group difference is common to whole columns and would otherwise be
        flagged as a jump in every pixel of them), or after it (the order before
        issue 13).
    group_reference : {'first', 'previous'}
        Group level: fit the 1/f model of each group against the first group
        (:func:`clean_groups_from_first`, default: its estimation error stays white) or
        of each group difference (:func:`clean_groups`: the errors of a median or
        clipped mean add up along the ramp, a random walk; the order before issue 13).
    mask_aperture : float
        Also exclude from the scene mask every pixel within this many pixels (along
        y) of the trace centre fitted on the draft image (the extraction aperture and
        the faint PSF wings a 2-sigma clip keeps); 0 disables.
    light_model : bool
        Group level with the pipeline's fixed scene mask: take an exposure-level model of
        the static light the mask pixels see (the trace's PSF wings: the median uncleaned
        rate of the first integrations, as a ratio to the trace flux smoothed along x;
        ``nirbeam.transforms.flicker_light``; its mean over each column's mask pixels)
        off the column offsets the hook fits. Without it the offsets include that light
        and remove it from every pixel of the column (issue 13: -0.19 sigma on the PRISM
        rates).
    readout_filter : {'none', 'wiener'}
        Group level, ``method='median'``: ``'wiener'`` filters each group's column
        offsets along the readout order (x, the slow read) with a Wiener weight per
        DCT coefficient from a 1/f power fitted per integration against the offsets'
        estimation noise (:func:`~nirbeam.transforms.flicker_readout.readout_wiener`),
        and scales the model variance by the filter's mean weight; ``'none'``: the
        offsets as fitted.
    error_term : bool
        Group level: add the variance of the fitted 1/f model (estimated from the
        number of background pixels per column, :func:`correction_variance`) to
        VAR_RNOISE and ERR.
    enabled : bool
        False turns cleaning into the identity.
    """

    method: str = "median"
    level: str = "group"
    n_sigma: float = 2.0
    mask_dilate: int = 2
    mask_smooth: int = 9
    statistic: str = "mean"
    fft_n_freq: int = 1
    fft_ridge: float = 4.0
    fft_alternating: bool = False
    min_pixels: int = 4
    detector: str = "NRS1"
    background: str | None = None
    before_jump: bool = True
    group_reference: str = "first"
    mask_aperture: float = 6.0
    light_model: bool = True
    readout_filter: str = "none"
    error_term: bool = True
    enabled: bool = True

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(
                f"FlickerParams.method: expected one of {METHODS}, got {self.method!r}"
            )
        if self.level not in _LEVELS:
            raise ValueError(f"FlickerParams.level: expected one of {_LEVELS}, got {self.level!r}")
        if self.statistic not in STATISTICS:
            raise ValueError(
                f"FlickerParams.statistic: expected one of {STATISTICS}, got {self.statistic!r}"
            )
        if self.detector not in ("NRS1", "NRS2"):
            raise ValueError(
                f"FlickerParams.detector: expected 'NRS1' or 'NRS2', got {self.detector!r}"
            )
        if self.readout_filter not in READOUT_FILTERS:
            raise ValueError(
                f"FlickerParams.readout_filter: expected one of {READOUT_FILTERS}, got "
                f"{self.readout_filter!r}"
            )
        if self.readout_filter != "none" and self.method != "median":
            raise ValueError(
                f"FlickerParams.readout_filter {self.readout_filter!r}: needs method "
                f"'median' (per-column offsets), got {self.method!r}"
            )
        if self.group_reference not in ("first", "previous"):
            raise ValueError(
                f"FlickerParams.group_reference: expected 'first' or 'previous', got "
                f"{self.group_reference!r}"
            )
        if self.background not in (None, "median"):
            raise ValueError(
                f"FlickerParams.background: expected None or 'median', got {self.background!r}"
            )
        if not self.n_sigma > 0:
            raise ValueError(f"FlickerParams.n_sigma: expected > 0, got {self.n_sigma!r}")
        for name in ("mask_dilate", "fft_n_freq"):
            if int(getattr(self, name)) < 0:
                raise ValueError(
                    f"FlickerParams.{name}: expected >= 0, got {getattr(self, name)!r}"
                )
        for name in ("mask_smooth", "min_pixels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(
                    f"FlickerParams.{name}: expected >= 1, got {getattr(self, name)!r}"
                )
        if self.mask_aperture < 0:
            raise ValueError(
                f"FlickerParams.mask_aperture: expected >= 0, got {self.mask_aperture!r}"
            )
        if self.fft_ridge < 0:
            raise ValueError(f"FlickerParams.fft_ridge: expected >= 0, got {self.fft_ridge!r}")

    def cleaner_kwargs(self) -> dict:
        """Keyword arguments for the cleaner of ``method`` (:func:`clean_median`,
        :func:`clean_fft` or :func:`clean_nsclean`); use as
        ``clean_rate(rate, mask, p.method, **p.cleaner_kwargs())`` at rate level."""
        common = {"background": self.background, "min_pixels": self.min_pixels}
        if self.method == "median":
            return {**common, "statistic": self.statistic}
        if self.method == "nsclean":
            return {**common, "reverse_columns": self.detector == "NRS2"}
        return {
            **common,
            "n_freq": self.fft_n_freq,
            "ridge": self.fft_ridge,
            "alternating": self.fft_alternating,
        }

    def mask_kwargs(self) -> dict:
        """Keyword arguments for :func:`scene_mask`."""
        return {"n_sigma": self.n_sigma, "dilate": self.mask_dilate, "smooth": self.mask_smooth,
                "aperture": self.mask_aperture}

    def for_detector(self, detector: str) -> FlickerParams:
        """These parameters with ``detector`` set from a DETECTOR keyword (NRS1/NRS2:
        the readout direction ``method='nsclean'`` needs); other values keep them."""
        import dataclasses

        d = str(detector).strip().upper()
        if d in ("NRS1", "NRS2") and d != self.detector:
            return dataclasses.replace(self, detector=d)
        return self


# --------------------------------------------------------------------------- helpers
def check_2d(name: str, arr: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (ny, nx) array, got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {arr.shape}")
    return arr


def out_dtype(image: np.ndarray) -> np.dtype:
    return np.dtype(np.float64) if image.dtype == np.float64 else np.dtype(np.float32)


def masked_column_median(data: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Median along axis 0 of ``data[use]`` per column; NaN where a column has none.

    Same value as ``np.nanmedian`` (mean of the two middle values for even counts),
    via one sort instead of numpy's slow NaN-median path. ``use`` must exclude
    non-finite values.
    """
    n = use.sum(axis=0)
    s = np.sort(np.where(use, data, np.inf), axis=0)
    cols = np.arange(data.shape[1])
    lo = np.maximum((n - 1) // 2, 0)
    hi = np.maximum(n // 2, 0)
    hi = np.where(n > 0, hi, 0)
    with np.errstate(invalid="ignore"):
        med = 0.5 * (s[lo, cols] + s[hi, cols])
    med[n == 0] = np.nan
    return med


def resolve_background(background, image: np.ndarray, use: np.ndarray) -> np.ndarray | float:
    """Background to remove before fitting: None, 'median', a scalar or an (ny, nx) array."""
    if background is None:
        return 0.0
    if isinstance(background, str):
        if background != "median":
            raise ValueError(
                f"background: expected None, 'median', a number or an array, got {background!r}"
            )
        vals = image[use]
        return float(np.median(vals)) if vals.size else 0.0
    bg = np.asarray(background, dtype=np.float64)
    if bg.ndim == 0:
        return float(bg)
    return check_2d("background", bg, image.shape)


def fill_columns(values: np.ndarray, good: np.ndarray) -> np.ndarray:
    """Replace bad columns by the mean of the nearest good column on each side.

    Parameters
    ----------
    values : float64, (nx, ...)
        Per-column quantities (offsets, or model columns).
    good : bool, (nx,)

    Returns
    -------
    float64, (nx, ...)
        Copy with bad columns filled; zeros everywhere if no column is good.
    """
    nx = good.size
    out = np.array(values, dtype=np.float64, copy=True)
    if good.all():
        return out
    if not good.any():
        out[...] = 0.0
        return out
    idx = np.arange(nx)
    left = np.where(good, idx, -1)
    left = np.maximum.accumulate(left)
    right = np.where(good, idx, nx)
    right = np.minimum.accumulate(right[::-1])[::-1]
    bad = np.flatnonzero(~good)
    lo, hi = left[bad], right[bad]
    has_lo, has_hi = lo >= 0, hi < nx
    acc = np.zeros((bad.size,) + out.shape[1:])
    cnt = (has_lo.astype(np.float64) + has_hi.astype(np.float64)).reshape(
        (-1,) + (1,) * (out.ndim - 1)
    )
    acc[has_lo] += out[lo[has_lo]]
    acc[has_hi] += out[hi[has_hi]]
    out[bad] = acc / cnt
    return out


def robust_sigma(resid: np.ndarray, use: np.ndarray) -> float:
    vals = resid[use]
    if vals.size == 0:
        return 0.0
    med = np.median(vals)
    return float(MAD_TO_SIGMA * np.median(np.abs(vals - med)))


def variance_factors(params: FlickerParams) -> tuple[float, float, bool]:
    """``(k, a, resid)`` of :func:`~nirbeam.transforms.flicker_groups._column_variance`: the model of a column with ``n``
    pixels has the variance ``e sigma^2 / n``, ``e = k (1 + a / n)`` the estimator's
    variance factor (clipped mean: :func:`clipped_mean_efficiency` at
    :data:`CLIP_SIGMA`, analytic, and ``a`` = :data:`CLIP_FINITE_N`, its finite-sample
    excess). ``sigma^2`` is estimated by the pooled MAD variance ``s2`` of the residuals
    about the column models, smaller than it by ``1 - RESID_B / n - RESID_C / n^2``
    (``resid``: divided out), i.e. ``var = e s2 / (n - RESID_B - RESID_C / n)``.
    The median keeps ``pi/2 s2 / n`` (asymptotic, no residual term: an overestimate of
    ~5-10% at 16 pixels, left so), ``fft`` ``k = 1 + n_freq`` (+1 with the alternating
    term) and ``nsclean`` 2 (a rough bound), both ``k s2 / n``."""
    if params.method == "median":
        if params.statistic == "median":
            return np.pi / 2, 0.0, False
        return clipped_mean_efficiency(CLIP_SIGMA), CLIP_FINITE_N, True
    if params.method == "fft":
        return 1.0 + params.fft_n_freq + (1.0 if params.fft_alternating else 0.0), 0.0, False
    return 2.0, 0.0, False


def column_factor(n, k: float, a: float, resid: bool):
    """Per-column variance factor: ``var = column_factor(n, ...) * s2``
    (:func:`variance_factors`); ``n`` >= 1 (array or scalar), same operations as
    :func:`~nirbeam.transforms.flicker_hook.column_variance_kernel`."""
    e = k * (1.0 + a / n)
    return e / (np.maximum(n - RESID_B - RESID_C / n, 1.0) if resid else n)


#: The column statistic's own nonlinear error (issue 13 cause 5, 'previous'): for ``n``
#: Gaussian values the statistic is the values' mean plus a part ``delta`` uncorrelated
#: with it, of variance ``x(n)`` times the mean's. The mean part telescopes along a ramp
#: cleaned difference by difference; ``delta`` does not (a random walk). ``x`` measured
#: by seeded Monte-Carlo (plain numpy, 2e6 values per n, 8 runs: standard errors
#: 0.0002-0.003), at n = 4..256, and its limit (clipped mean: clipped_mean_efficiency - 1;
#: median: pi/2 - 1); interpolated linearly in 1/n. Even n (the median of an odd n is
#: less efficient: its x is up to ~10% higher, not tabled).
WALK_N = (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256)
WALK_X_CLIPPED = (0.2088, 0.1787, 0.1498, 0.1112, 0.0877, 0.0639, 0.0524, 0.0434, 0.0401,
                  0.0376, 0.0357, 0.0345)
WALK_X_MEDIAN = (0.1927, 0.2887, 0.3460, 0.4103, 0.4464, 0.4831, 0.5048, 0.5274, 0.5365,
                 0.5479, 0.5513, 0.5577)


class ModelVariance(tuple):
    """``(var, kind)`` of a group hook's model variance, unpacks as that pair, with
    ``walk`` (per column or pixel, or None) the fraction of ``var`` that is the
    statistic's nonlinear part (:func:`walk_fraction`), read by
    :func:`nirbeam.transforms.detector1.add_model_variance`."""

    def __new__(cls, var, kind, walk=None):
        obj = super().__new__(cls, (var, kind))
        obj.walk = walk
        return obj


def walk_fraction(n, params: FlickerParams):
    """Fraction ``x / (1 + x)`` of a column model's variance that is not the mean of its
    ``n`` values' noise (:data:`WALK_X_CLIPPED`, :data:`WALK_X_MEDIAN`; ``n`` < 4 as 4);
    0 for ``fft`` (a linear fit: all of it telescopes); None for ``nsclean`` (not
    measured: the model variance stays a pure random walk / white per group). A new
    array every call (the interpolation table is built once per statistic)."""
    if params.method == "fft":
        return np.zeros(np.shape(n))
    if params.method != "median":
        return None
    xp, fp = _walk_table(params.statistic == "median")
    inv = 1.0 / np.maximum(np.asarray(n, np.float64), float(WALK_N[0]))
    x = np.interp(inv, xp, fp)
    return x / (1.0 + x)


@functools.lru_cache(maxsize=2)
def _walk_table(median: bool):
    """(1/n knots ascending, x at them) of :func:`walk_fraction`, float64 (read-only)."""
    tab = WALK_X_MEDIAN if median else WALK_X_CLIPPED
    lim = np.pi / 2 - 1.0 if median else clipped_mean_efficiency(CLIP_SIGMA) - 1.0
    xp = np.asarray([0.0] + [1.0 / k for k in WALK_N[::-1]], np.float64)
    fp = np.asarray([lim] + list(tab[::-1]), np.float64)
    xp.setflags(write=False)
    fp.setflags(write=False)
    return xp, fp


def with_walk(var_kind, pixeldq, mask, params: FlickerParams) -> ModelVariance:
    """A group hook's ``(var, kind)`` as a :class:`ModelVariance` with the walk fraction of
    each column (:func:`walk_fraction` of its usable mask pixels: in ``mask``, without
    DO_NOT_USE; columns under ``min_pixels``, which take their neighbours' models, the
    median of the others).

    The walk fraction depends only on the per-column counts and ``params``: it is
    computed once per distinct (counts, params) and shared (read-only) by the
    integrations that have them (:func:`_column_walk`; the counts rarely change within an
    exposure: DO_NOT_USE pixels are the mask's)."""
    msk = np.asarray(mask, bool) & (
        (np.asarray(pixeldq, np.uint32) & np.uint32(dqflags.DO_NOT_USE)) == 0)
    n = msk.sum(axis=0)
    return ModelVariance(var_kind[0], var_kind[1], _column_walk(n, params))


#: :func:`_column_walk`'s results, keyed by (params, counts' dtype, shape and bytes, and
#: the :func:`walk_fraction` in use: bench/model_variance_err.py swaps it); cleared when
#: it holds :data:`_WALK_CACHE_MAX` entries.
_WALK_CACHE: dict = {}
_WALK_CACHE_MAX = 64


def _column_walk(n: np.ndarray, params: FlickerParams):
    """:func:`with_walk`'s walk fraction of column counts ``n`` (read-only array, or None
    for a method without one), cached per (``params``, ``n``)."""
    key = (params, n.dtype.str, n.shape, n.tobytes(), walk_fraction)
    hit = _WALK_CACHE.get(key, _MISS)
    if hit is not _MISS:
        return hit
    f = _column_walk_uncached(n, params)
    if f is not None:
        f = np.asarray(f)
        f.setflags(write=False)
    if len(_WALK_CACHE) >= _WALK_CACHE_MAX:
        _WALK_CACHE.clear()
    _WALK_CACHE[key] = f
    return f


_MISS = object()


def _column_walk_uncached(n: np.ndarray, params: FlickerParams):
    f = walk_fraction(n, params)
    good = n >= params.min_pixels
    if f is not None and good.any() and not good.all():
        f = np.where(good, f, np.median(f[good]))
    return f


class MaskWalk:
    """:func:`with_walk` for one fixed ``mask`` and ``params`` (a fused hook's, called
    once per integration): the same :class:`ModelVariance` values, cheaper. The walk
    depends on ``pixeldq`` only through the mask's DO_NOT_USE pixels, and ``pixeldq``
    rarely changes between the integrations of an exposure: the last ``pixeldq`` (its
    dtype, shape and bytes) and its walk are kept, and a call with an equal ``pixeldq``
    (:func:`walk_fraction` not swapped since) reuses that walk (one comparison instead of
    the mask arithmetic, column sums and cache key of :func:`with_walk`). Safe from
    several threads: the kept tuple is replaced whole."""

    def __init__(self, mask: np.ndarray, params: FlickerParams):
        self.mask, self.params = mask, params
        self._last = None  # (dtype, shape, bytes of pixeldq, walk, walk_fraction)

    def __call__(self, var_kind, pixeldq) -> ModelVariance:
        p = np.asarray(pixeldq)
        b, last = p.tobytes(), self._last  # C-order bytes: equal bytes, equal values
        if (last is None or last[4] is not walk_fraction or p.dtype != last[0]
                or p.shape != last[1] or b != last[2]):
            r = with_walk(var_kind, p, self.mask, self.params)
            self._last = (p.dtype, p.shape, b, r.walk, walk_fraction)
            return r
        return ModelVariance(var_kind[0], var_kind[1], last[3])
