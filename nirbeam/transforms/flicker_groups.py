"""1/f cleaning at group level: :func:`clean_groups` (group differences),
:func:`clean_groups_from_first` (each group against the first), their numpy references,
the detector1 hook (:func:`make_group_hook`) and the model's variance
(:func:`correction_variance`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nirbeam import dqflags
from nirbeam.transforms.flicker_hook import HookWorkPool, MaskLayout, hook_median_kernel
from nirbeam.transforms.flicker_image import (
    cosine_basis,
    make_cleaner,
)
from nirbeam.transforms.flicker_kernels import (
    groups_fft_model_kernel,
    groups_fft_normal_kernel,
    groups_median_kernel,
    model_mad,
)
from nirbeam.transforms.flicker_mask import (
    draft_mask_from_groups,
)
from nirbeam.transforms.flicker_params import (
    GROUP_BAD_BITS,
    MAD_TO_SIGMA,
    STATISTICS,
    FlickerParams,
    MaskWalk,
    check_2d,
    column_factor,
    variance_factors,
    with_walk,
)
from nirbeam.transforms.flicker_readout import noise_level, readout_wiener, rebuild_ramp
from nirbeam.transforms.flicker_sort import (
    BG_MEDIAN,
    BG_NONE,
    BG_SCALAR,
    sorting_network,
)

_MEDIAN_KW = frozenset({"background", "statistic", "clip_sigma", "min_pixels"})
_FFT_KW = frozenset(
    {
        "n_freq",
        "ridge",
        "alternating",
        "weights",
        "background",
        "min_pixels",
        "exclude_outliers",
        "outlier_sigma",
    }
)


def _fast_background(background):
    """(mode, value) of a background the fast path handles, or None."""
    if background is None:
        return BG_NONE, 0.0
    if isinstance(background, str):
        return (BG_MEDIAN, 0.0) if background == "median" else None
    bg = np.asarray(background)
    if bg.ndim == 0 and bg.dtype.kind in "biuf" and np.isfinite(bg):
        return BG_SCALAR, float(bg)
    return None


def clean_groups_fast(g, gdq, msk, method, bad_group_bits, return_model, kwargs,
                       from_first=False):
    """Fast path of :func:`clean_groups` (of :func:`clean_groups_from_first` if
    ``from_first``); None where it does not apply (the reference implementation then
    runs)."""
    ngroups, ny, nx = g.shape
    if ngroups < 2 or ny == 0 or nx == 0:
        return None
    if method == "median":
        if not set(kwargs) <= _MEDIAN_KW or kwargs.get("statistic", "median") not in STATISTICS:
            return None
    elif method == "fft":
        if not set(kwargs) <= _FFT_KW or kwargs.get("weights") is not None:
            return None
    else:
        return None
    bgm = _fast_background(kwargs.get("background"))
    if bgm is None:
        return None
    if g.dtype not in (np.float32, np.float64):
        g = g.astype(np.float64)
    g = np.ascontiguousarray(g)
    if gdq.dtype not in (np.uint8, np.uint16, np.uint32):
        gdq = gdq.astype(np.uint32)
    gdq = np.ascontiguousarray(gdq)
    msk = np.ascontiguousarray(msk)
    if from_first:  # every bad bit counts in both groups (the first and group k)
        jump, other = 0, int(np.uint32(bad_group_bits))
    else:  # JUMP_DET counts only in the later group of a difference
        jump = int(np.uint32(bad_group_bits & dqflags.JUMP_DET))
        other = int(np.uint32(bad_group_bits & ~dqflags.JUMP_DET))
    out = np.empty(g.shape, np.float32)
    models = np.zeros((ngroups - 1 if return_model else 0, ny, nx))
    if method == "median":
        groups_median_kernel(
            g,
            gdq,
            msk,
            other,
            jump,
            bgm[0],
            bgm[1],
            kwargs.get("statistic", "median") == "mean",
            float(kwargs.get("clip_sigma", 3.0)),
            int(kwargs.get("min_pixels", 4)),
            sorting_network(ny),
            out,
            models,
            from_first,
        )
    else:
        basis = cosine_basis(ny, kwargs.get("n_freq", 1), kwargs.get("alternating", False))
        p = basis.shape[1]
        normal = np.empty((ngroups - 1, nx, p, p))
        rhs = np.empty((ngroups - 1, nx, p, 1))
        good = np.empty((ngroups - 1, nx), np.bool_)
        groups_fft_normal_kernel(
            g,
            gdq,
            msk,
            other,
            jump,
            bgm[0],
            bgm[1],
            basis,
            float(kwargs.get("ridge", 4.0)),
            int(kwargs.get("min_pixels", 4)),
            bool(kwargs.get("exclude_outliers", True)),
            float(kwargs.get("outlier_sigma", 4.0)),
            sorting_network(ny),
            normal,
            rhs,
            good,
            from_first,
        )
        # one batched LAPACK call: the same per-column solves as clean_fft
        coef = np.ascontiguousarray(np.linalg.solve(normal, rhs)[..., 0])
        groups_fft_model_kernel(g, coef, good, basis, out, models, from_first)
    return (out, models) if return_model else out


def clean_groups(
    groups: np.ndarray,
    groupdq: np.ndarray,
    pixeldq: np.ndarray,
    mask: np.ndarray | None,
    method: str = "median",
    *,
    bad_group_bits: int = GROUP_BAD_BITS,
    bad_pixel_bits: int = dqflags.DO_NOT_USE,
    return_model: bool = False,
    **kwargs,
):
    """Clean 1/f noise on group differences and rebuild the ramp.

    Each difference ``groups[g] - groups[g-1]`` is cleaned with ``method`` using the
    background pixels of ``mask`` that are good in the pixel DQ and in both groups'
    DQ; the ramp is rebuilt as ``groups[0] + cumsum(cleaned differences)``, i.e.
    ``groups[g] - sum_{j<=g} model_j``: the first group is kept unchanged (its own
    1/f pattern relative to the bias is not corrected), all later groups are shifted
    by the cumulative noise model. Every pixel is corrected, including flagged ones
    (the noise is in the readout, not the pixel); DQ is not changed.

    ``method='median'`` and ``'fft'`` (without ``weights``; ``background`` None,
    ``'median'`` or a scalar) run as numba kernels in one pass over the cube, with
    results identical to the per-difference cleaners (:func:`clean_groups_reference`);
    other settings run the per-difference cleaners.

    Parameters
    ----------
    groups : float32, (ngroups, ny, nx), DN
    groupdq : uint8, (ngroups, ny, nx)
    pixeldq : uint32, (ny, nx)
    mask : bool, (ny, nx) or None
        Background pixels; None derives one with :func:`draft_mask_from_groups`.
    method : {'median', 'fft', 'nsclean'}
    bad_group_bits : int
        Group-DQ bits that exclude a pixel from the fit of a difference: in either of
        its two groups, except JUMP_DET, which counts only on the later group.
    bad_pixel_bits : int
        Pixel-DQ bits that exclude a pixel from the fit.
    return_model : bool
        Also return the per-difference noise models.
    **kwargs
        Passed to the cleaner (``background`` may be (ngroups - 1, ny, nx)).

    Returns
    -------
    cleaned : float32, (ngroups, ny, nx), DN
    model : float64, (ngroups - 1, ny, nx), DN, only if ``return_model``
    """
    make_cleaner(method)
    g = np.asarray(groups)
    if g.ndim != 3:
        raise ValueError(f"clean_groups groups: expected (ngroups, ny, nx), got shape {g.shape}")
    ngroups, ny, nx = g.shape
    gdq = np.asarray(groupdq)
    if gdq.shape != g.shape:
        raise ValueError(f"clean_groups groupdq: expected shape {g.shape}, got {gdq.shape}")
    pdq = check_2d("clean_groups pixeldq", pixeldq, (ny, nx)).astype(np.uint32)
    if mask is None:
        mask = draft_mask_from_groups(g, pdq)
    msk = check_2d("clean_groups mask", mask, (ny, nx)).astype(bool)
    fast_msk = msk & ((pdq & np.uint32(bad_pixel_bits)) == 0)
    res = clean_groups_fast(g, gdq, fast_msk, method, bad_group_bits, return_model, kwargs)
    if res is not None:
        return res
    return clean_groups_reference(
        g,
        gdq,
        pdq,
        msk,
        method,
        bad_group_bits=bad_group_bits,
        bad_pixel_bits=bad_pixel_bits,
        return_model=return_model,
        **kwargs,
    )


def clean_groups_reference(
    groups: np.ndarray,
    groupdq: np.ndarray,
    pixeldq: np.ndarray,
    mask: np.ndarray | None,
    method: str = "median",
    *,
    bad_group_bits: int = GROUP_BAD_BITS,
    bad_pixel_bits: int = dqflags.DO_NOT_USE,
    return_model: bool = False,
    **kwargs,
):
    """Plain numpy :func:`clean_groups`: one cleaner call (numpy temporaries) per
    difference. Reference for the numba fast path (tests, bench); same parameters and
    results. Also runs what the fast path does not cover (``nsclean``, array
    backgrounds, ``weights``).
    """
    fn = make_cleaner(method)
    g, gdq, pdq, msk = _group_inputs("clean_groups", groups, groupdq, pixeldq, mask,
                                     bad_pixel_bits)
    ngroups, ny, nx = g.shape
    models = np.zeros((max(ngroups - 1, 0), ny, nx)) if return_model else None
    bg_all = kwargs.pop("background", None)
    gdq32 = gdq.astype(np.uint32)
    # a difference k -> k+1 is bad if either group has a bad bit, except JUMP_DET, which
    # marks the jump in the difference *ending* at the flagged group
    jump = np.uint32(bad_group_bits & dqflags.JUMP_DET)
    other = np.uint32(bad_group_bits & ~dqflags.JUMP_DET)
    badg = (gdq32 & other) != 0
    jumped = (gdq32 & jump) != 0
    out = np.empty(g.shape, np.float32)
    out[0] = g[0]
    prev = g[0].astype(np.float64)
    acc = np.zeros((ny, nx))  # cumulative noise model
    for k in range(ngroups - 1):
        cur = g[k + 1].astype(np.float64)
        mk = msk & ~badg[k] & ~badg[k + 1] & ~jumped[k + 1]
        bg = bg_all
        if isinstance(bg, np.ndarray) and bg.ndim == 3:
            bg = bg[k]
        _, model = fn(cur - prev, mk, background=bg, **kwargs)
        acc += model
        out[k + 1] = cur - acc
        if models is not None:
            models[k] = model
        prev = cur
    if return_model:
        return out, models
    return out


def clean_groups_from_first(
    groups: np.ndarray,
    groupdq: np.ndarray,
    pixeldq: np.ndarray,
    mask: np.ndarray | None,
    method: str = "median",
    *,
    bad_group_bits: int = GROUP_BAD_BITS,
    bad_pixel_bits: int = dqflags.DO_NOT_USE,
    return_model: bool = False,
    **kwargs,
):
    """Clean 1/f noise group by group against the first group (no random walk).

    The model of group ``k`` is fitted to ``groups[k] - groups[0]`` on the background
    pixels of ``mask`` (good in the pixel DQ and in both groups' DQ) and subtracted:
    ``cleaned[k] = groups[k] - model_k``, ``cleaned[0] = groups[0]``. For a plain mean
    this equals :func:`clean_groups` (the models of the differences telescope); for a
    median or a clipped mean it does not: fitted on differences, each model's estimation
    error enters every later group, a random walk along the ramp that ramp fitting reads
    as extra slope noise (measured on white noise, 20 groups, 16 background pixels: the
    cumulative model variance grows from 14 to 32 DN^2 with the clipped mean and to 105
    with the median, against 12.5 for a mean). Here each model's error stays in its own
    group: white, like read noise, and reduced by the number of background pixels.

    ``method='median'`` and ``'fft'`` (the settings :func:`clean_groups` runs fast) run
    as numba kernels, with results identical to the per-group cleaners
    (:func:`clean_groups_from_first_reference`).

    Parameters and returns as :func:`clean_groups` (``model`` is (ngroups - 1, ny, nx):
    the model of each group k >= 1 relative to group 0).
    """
    make_cleaner(method)
    g, gdq, pdq, msk = _group_inputs("clean_groups_from_first", groups, groupdq, pixeldq, mask,
                                     bad_pixel_bits)
    res = clean_groups_fast(g, gdq, msk, method, bad_group_bits, return_model, kwargs,
                             from_first=True)
    if res is not None:
        return res
    return clean_groups_from_first_reference(
        g, gdq, pdq, msk, method, bad_group_bits=bad_group_bits,
        bad_pixel_bits=bad_pixel_bits, return_model=return_model, **kwargs)


def clean_groups_from_first_reference(
    groups: np.ndarray,
    groupdq: np.ndarray,
    pixeldq: np.ndarray,
    mask: np.ndarray | None,
    method: str = "median",
    *,
    bad_group_bits: int = GROUP_BAD_BITS,
    bad_pixel_bits: int = dqflags.DO_NOT_USE,
    return_model: bool = False,
    **kwargs,
):
    """Plain numpy :func:`clean_groups_from_first`: one cleaner call per group.
    Reference for the numba fast path (tests, bench); same parameters and results. Also
    runs what the fast path does not cover (``nsclean``, array backgrounds, ``weights``).
    """
    fn = make_cleaner(method)
    g, gdq, pdq, msk = _group_inputs("clean_groups_from_first", groups, groupdq, pixeldq, mask,
                                     bad_pixel_bits)
    ngroups, ny, nx = g.shape
    bg_all = kwargs.pop("background", None)
    badg = (gdq.astype(np.uint32) & np.uint32(bad_group_bits)) != 0
    out = np.empty(g.shape, np.float32)
    out[0] = g[0]
    g0 = g[0].astype(np.float64)
    models = np.zeros((max(ngroups - 1, 0), ny, nx)) if return_model else None
    for k in range(1, ngroups):
        cur = g[k].astype(np.float64)
        mk = msk & ~badg[0] & ~badg[k]
        bg = bg_all
        if isinstance(bg, np.ndarray) and bg.ndim == 3:
            bg = bg[k - 1]
        _, model = fn(cur - g0, mk, background=bg, **kwargs)
        out[k] = cur - model
        if models is not None:
            models[k - 1] = model
    if return_model:
        return out, models
    return out


def make_group_hook(
    params: FlickerParams, mask: np.ndarray | None = None, light: np.ndarray | None = None
) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Detector1 group hook ``hook(groups, groupdq, pixeldq) -> groups`` for 1/f cleaning.

    Parameters
    ----------
    params : FlickerParams
        ``enabled=False`` or ``level='rate'`` give an identity hook.
    mask : bool, (ny, nx), optional
        Background pixels (e.g. :func:`scene_mask` of a draft rate image). None: each
        integration derives its own from its ramp (:func:`draft_mask_from_groups`).
    light : float, (ny, nx), DN per group, optional
        Static light of the mask pixels (e.g. the PSF wings of the trace, from an
        exposure-level model): its mean over each column's mask pixels, times ``k - j``,
        is taken off the column model of each difference of groups ``j -> k`` (which
        otherwise removes that light from every pixel of the column). The models are
        fitted as without it (the same clipping in every integration): the light changes
        each column's model by a constant. Needs ``mask`` and ``params.background`` None.

    Returns
    -------
    hook : callable
        ``groups float32 (ngroups, ny, nx), groupdq uint8, pixeldq uint32 ->
        float32 (ngroups, ny, nx)``.
    """
    if not isinstance(params, FlickerParams):
        raise TypeError(
            f"make_group_hook params: expected FlickerParams, got {type(params).__name__}"
        )
    fixed = None if mask is None else np.asarray(mask, dtype=bool).copy()
    if fixed is not None and fixed.ndim != 2:
        raise ValueError(f"make_group_hook mask: expected (ny, nx), got shape {fixed.shape}")

    lit = None
    if light is not None:
        lit = np.ascontiguousarray(light, np.float64)
        if fixed is None or lit.shape != fixed.shape:
            raise ValueError(f"make_group_hook light: expected the mask's shape, got "
                             f"{lit.shape} (mask: {None if fixed is None else fixed.shape})")
        if params.background is not None:
            raise ValueError("make_group_hook light: needs FlickerParams.background None")
        n = fixed.sum(axis=0)
        lit = np.where(n > 0, np.where(fixed, lit, 0.0).sum(axis=0) / np.maximum(n, 1), 0.0)
    if not params.enabled or params.level != "group":

        def identity(groups, groupdq, pixeldq):
            return groups

        return identity

    kwargs = params.cleaner_kwargs()
    mask_kwargs = params.mask_kwargs()

    cleaner = clean_groups_from_first if params.group_reference == "first" else clean_groups

    from_first = params.group_reference == "first"

    def general(groups, groupdq, pixeldq):
        m = fixed if fixed is not None else draft_mask_from_groups(groups, pixeldq, **mask_kwargs)
        if params.readout_filter == "wiener":
            return _general_wiener(groups, groupdq, pixeldq, m)
        if lit is None:
            out = cleaner(groups, groupdq, pixeldq, m, params.method, **kwargs)
        else:
            out = _with_light(cleaner(groups, groupdq, pixeldq, m, params.method,
                                      return_model=True, **kwargs), groups, lit,
                              params.group_reference == "first")
        if not params.error_term:
            return out
        return out, with_walk(correction_variance(out, pixeldq, m, params), pixeldq, m, params)

    def _general_wiener(groups, groupdq, pixeldq, m):
        # the fused hook's steps with numpy: offsets and model variance as without the
        # filter, the offsets filtered along the readout order, the ramp rebuilt from
        # them, its model variance times the filter's mean weight
        out, models = cleaner(groups, groupdq, pixeldq, m, params.method, return_model=True,
                              **kwargs)
        offs = np.array(models[:, 0, :], np.float64)
        if lit is not None:
            out = _with_light((out, models), groups, lit, from_first)
            for k in range(1, offs.shape[0] + 1):
                offs[k - 1] = offs[k - 1] - (lit * np.float64(k) if from_first else lit * 1.0)
        var, kind = correction_variance(out, pixeldq, m, params)
        filt, gain, _ = readout_wiener(offs, noise_level(var[0]))
        out2 = rebuild_ramp(groups, filt, from_first)
        if not params.error_term:
            return out2
        var2, kind = correction_variance(out2, pixeldq, m, params)
        return out2, with_walk((var2 * gain, kind), pixeldq, m, params)

    hook = general
    if fixed is not None and params.method == "median":
        hook = _FusedMedianHook(params, fixed, general, lit)
    hook.before_jump = bool(params.before_jump)
    return hook


def _with_light(cleaned_models, groups, light, from_first):
    """The cleaned ramp rebuilt from the models less ``light`` (nx,) per group step (as
    the fused kernel: ``float32(g - (model - light * k))``, or the running sum of
    ``model - light`` for group differences)."""
    cleaned, models = cleaned_models
    g = np.asarray(groups)
    out = np.array(cleaned, np.float32, copy=True)
    acc = np.zeros(g.shape[1:])
    for k in range(1, g.shape[0]):
        mk = models[k - 1] - (light * np.float64(k) if from_first else light * 1.0)[None, :]
        acc = mk if from_first else acc + mk
        out[k] = (np.asarray(g[k], np.float64) - acc).astype(np.float32)
    return out


class _FusedMedianHook:
    """The group hook of ``method='median'`` with a fixed mask: one
    :func:`~nirbeam.transforms.flicker_hook.hook_median_kernel` call per integration
    (cleaning and the model variance), the mask's layout derived once; the same results
    as the general hook (:func:`clean_groups_from_first` / :func:`clean_groups` and
    :func:`correction_variance`), which runs for inputs outside the fast path (other
    dtypes or shapes: it raises the errors)."""

    def __init__(self, params: FlickerParams, mask: np.ndarray, general: Callable,
                 light: np.ndarray | None = None):
        self.general = general
        self.params, self.mask = params, mask
        self.light = np.zeros(0) if light is None else np.ascontiguousarray(light, np.float64)
        self.shape = mask.shape
        self.layout = MaskLayout.from_mask(mask)
        self.from_first = params.group_reference == "first"
        self.use_mean = params.statistic == "mean"
        self.bg_mode = BG_MEDIAN if params.background == "median" else BG_NONE
        self.min_pixels = int(params.min_pixels)
        self.error_term = bool(params.error_term)
        self.wiener = params.readout_filter == "wiener"
        self.kind = "group" if self.from_first else "difference"
        self.k, self.a, self.resid = variance_factors(params)  # as _variance_inputs
        self._work = HookWorkPool(self.layout)  # work arrays reused per call
        self._walk = MaskWalk(mask, params)  # with_walk for this mask, per call cheaper
        bits = np.uint32(GROUP_BAD_BITS)
        if self.from_first:  # every bad bit counts in both groups
            self.jump, self.other = 0, int(bits)
        else:  # JUMP_DET only in the later group of a difference
            self.jump = int(bits & np.uint32(dqflags.JUMP_DET))
            self.other = int(bits & ~np.uint32(dqflags.JUMP_DET))

    def __call__(self, groups, groupdq, pixeldq):
        g, q, p = groups, groupdq, pixeldq
        if not (isinstance(g, np.ndarray) and isinstance(q, np.ndarray)
                and isinstance(p, np.ndarray) and g.ndim == 3 and g.shape[0] >= 2
                and g.shape[1:] == self.shape and q.shape == g.shape and p.shape == self.shape
                and g.dtype in (np.float32, np.float64) and q.dtype in (np.uint8, np.uint16,
                                                                        np.uint32)
                and p.dtype.kind in "iu" and g.flags.c_contiguous and q.flags.c_contiguous
                and p.flags.c_contiguous):
            return self.general(groups, groupdq, pixeldq)
        lay = self.layout
        out = np.empty(g.shape, np.float32)
        want_var = self.error_term or self.wiener
        var = np.zeros(self.shape) if want_var else np.zeros((1, 1))
        offs = np.empty((g.shape[0] - 1, self.shape[1])) if self.wiener else np.empty((0, 0))
        work = self._work.take(g.shape[0], want_var, self.from_first,
                               self.bg_mode == BG_MEDIAN)
        args = (int(dqflags.DO_NOT_USE), self.other, self.jump, self.bg_mode, 0.0,
                self.use_mean, 3.0, self.min_pixels, self.from_first, lay.blocks,
                lay.slot_row, lay.slot_flat, lay.comps, lay.comp_off, lay.pixels)
        hook_median_kernel(g, q, p, *args, want_var, self.k, self.a, self.resid, 2.0,
                           self.light, out, var, offs,
                           1 if self.wiener else 0, work.store, work.count_min, *work.arrays)
        if self.wiener:  # the offsets filtered along the readout order, then applied
            filt, gain, _ = readout_wiener(offs, noise_level(var[0]))
            var = np.zeros(self.shape) if self.error_term else np.zeros((1, 1))
            hook_median_kernel(g, q, p, *args, self.error_term, self.k, self.a, self.resid,
                               2.0, self.light, out,
                               var, np.ascontiguousarray(filt), 2,
                               work.store and self.error_term, work.count_min,
                               *work.arrays)
            if self.error_term:
                var *= gain
        self._work.give(work)
        if not self.error_term:
            return out
        return out, self._walk((var, self.kind), p)


def correction_variance(cleaned: np.ndarray, pixeldq: np.ndarray, mask: np.ndarray,
                        params: FlickerParams) -> np.ndarray:
    """Variance (DN^2) of the fitted 1/f model, per pixel (ny, nx), and its kind.

    The model of a column is a statistic of its ``n`` usable background pixels, so every
    pixel of the column gets an error of variance ``k s^2 / n``: ``s^2`` is the robust
    (MAD) variance of the cleaned background values the model was fitted to (group minus
    first group for ``group_reference='first'``, group differences for ``'previous'``),
    ``k`` is 1 for the clipped mean, pi/2 for the median, ``1 + n_freq`` (+1 with the
    alternating term) for ``fft``, and 2 for ``nsclean`` (a rough bound); columns with
    fewer than ``min_pixels`` take their neighbours' model, and get twice the median
    column variance. With ``'first'`` the error is independent from group to group
    (white, like read noise); with ``'previous'`` it is independent from difference to
    difference (a random walk, like photon noise). Ramp fitting turns either into a slope
    variance (:func:`nirbeam.transforms.detector1.add_model_variance`).

    Returns
    -------
    var : float64, (ny, nx), DN^2
    kind : {'group', 'difference'}
    """
    msk, kind, k = _variance_inputs(cleaned, pixeldq, mask, params)
    ny, nx = msk.shape
    g = np.asarray(cleaned)
    if g.dtype not in (np.float32, np.float64):
        g = g.astype(np.float64)
    if g.shape[0] < 2 or not msk.any():
        return np.zeros((ny, nx)), kind
    mad = model_mad(np.ascontiguousarray(g), np.ascontiguousarray(msk), kind == "group")
    if mad == -1.0:
        return np.zeros((ny, nx)), kind
    s2 = (MAD_TO_SIGMA * np.float64(mad)) ** 2
    return _column_variance(msk, s2, k, params), kind


def _variance_inputs(cleaned, pixeldq, mask, params):
    msk = np.asarray(mask, bool) & (
        (np.asarray(pixeldq, np.uint32) & np.uint32(dqflags.DO_NOT_USE)) == 0)
    kind = "group" if params.group_reference == "first" else "difference"
    return msk, kind, variance_factors(params)


def _column_variance(msk, s2, factors, params):
    ny, nx = msk.shape
    k, a, resid = factors
    n = msk.sum(axis=0).astype(np.float64)
    good = n >= params.min_pixels
    var = np.where(good, column_factor(np.maximum(n, 1.0), k, a, resid) * s2, np.nan)
    fill = 2.0 * np.nanmedian(var) if good.any() else k * s2
    var = np.where(good, var, fill)
    return np.broadcast_to(var[None, :], (ny, nx)).copy()


def correction_variance_reference(cleaned: np.ndarray, pixeldq: np.ndarray,
                                   mask: np.ndarray, params: FlickerParams) -> np.ndarray:
    """Plain numpy :func:`correction_variance` (reference of its numba kernel)."""
    g = np.asarray(cleaned, np.float64)
    ny, nx = g.shape[1:]
    msk = np.asarray(mask, bool) & ((np.asarray(pixeldq, np.uint32) & np.uint32(dqflags.DO_NOT_USE)) == 0)
    kind = "group" if params.group_reference == "first" else "difference"
    if g.shape[0] < 2 or not msk.any():
        return np.zeros((ny, nx)), kind
    d = (g[1:] - g[:1])[:, msk] if kind == "group" else np.diff(g, axis=0)[:, msk]
    d = d[np.isfinite(d)]
    if d.size < 2:
        return np.zeros((ny, nx)), kind
    if kind == "group":  # each group's values scatter about their own (model) level
        dd = (g[1:] - g[:1])[:, msk]
        dd = dd - np.nanmedian(dd, axis=1, keepdims=True)
        d = dd[np.isfinite(dd)]
    med = np.median(d)
    s2 = (MAD_TO_SIGMA * np.median(np.abs(d - med))) ** 2
    k, a, resid = variance_factors(params)
    n = msk.sum(axis=0).astype(np.float64)
    good = n >= params.min_pixels
    var = np.where(good, column_factor(np.maximum(n, 1.0), k, a, resid) * s2, np.nan)
    fill = 2.0 * np.nanmedian(var) if good.any() else k * s2
    var = np.where(good, var, fill)
    return np.broadcast_to(var[None, :], (ny, nx)).copy(), kind


def _group_inputs(name, groups, groupdq, pixeldq, mask, bad_pixel_bits):
    """Checked ``(groups, groupdq, pixeldq uint32, background mask)`` of a group cleaner:
    the mask (a draft from the groups when None) without pixels with a bad-pixel bit."""
    g = np.asarray(groups)
    if g.ndim != 3:
        raise ValueError(f"{name} groups: expected (ngroups, ny, nx), got shape {g.shape}")
    ny, nx = g.shape[1:]
    gdq = np.asarray(groupdq)
    if gdq.shape != g.shape:
        raise ValueError(f"{name} groupdq: expected shape {g.shape}, got {gdq.shape}")
    pdq = check_2d(f"{name} pixeldq", pixeldq, (ny, nx)).astype(np.uint32)
    if mask is None:
        mask = draft_mask_from_groups(g, pdq)
    msk = check_2d(f"{name} mask", mask, (ny, nx)).astype(bool)
    msk = msk & ((pdq & np.uint32(bad_pixel_bits)) == 0)
    return g, gdq, pdq, msk
