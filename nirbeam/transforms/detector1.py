"""detector1: one integration's raw ramp -> rate images, fused in one numba pass.

Steps (jwst calwebb_detector1 near-IR order, those on by default for NIRSpec TSO):
dq_init -> saturation -> superbias -> refpix -> linearity -> dark_current ->
[group hook, e.g. 1/f cleaning] -> jump -> ramp_fit. Each step lives in its own module
(``nirbeam.transforms.<step>``) with per-pixel numba helpers; this module chains them.

Three entry points:

* :func:`calibrate_groups` runs dq_init..jump step by step on whole arrays and returns
  the calibrated groups and DQ (the intermediate a group hook needs);
* :func:`fit_ramps` fits them;
* :func:`run_detector1` does both. Without a hook it runs the **fused** kernel: after
  light prepasses (first saturated group per pixel with growth, reference-pixel means,
  whether any group is DO_NOT_USE everywhere) it walks the rows once, calibrating and
  jump-testing each pixel in a small per-pixel buffer, keeps a 3-row ring so the
  neighbour flags of jumps reach the row above and below, and fits each row as soon as
  its neighbours are known. Nothing of size (ngroups, ny, nx) besides the input is
  allocated. With a group hook before jump (the default 1/f cleaning) the fused kernel
  is split in two: the calibration rows go into one (ngroups, ny, nx) cube, the hook
  runs on it, and the jump + fit walk reads its rows from the cube. Fused and unfused
  paths give identical results (tested, with and without a hook).

The Beam layer (:class:`Detector1`, :func:`calibrate_record`) is at the end; kernels
import nothing of Beam.

Known differences from jwst/stcal (all documented in the step modules): everything is
per integration, so equal to stcal called on one integration, while jwst calls stcal on
the whole exposure, where the jump step takes the median difference over all
integrations (and sigma-clips across integrations for >= 100 of them) and the Poisson
variance uses the median rate averaged over integrations; the reference-pixel correction
is jwst's subarray one (no IRS2, no side-pixel smoothing of full frames); the average dark current entering
the Poisson variance is zero; CHARGELOSS read-noise recomputation is not done.

Size note: over 600 lines on purpose: the fused kernel, its step-by-step twin and the shared row calibration they are checked against each other with; splitting them would put one numba row function's two callers in two modules.
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numba import njit, prange

from nirbeam import dqflags
from nirbeam.transforms import dark as _dark
from nirbeam.transforms import irs2 as _irs2
from nirbeam.transforms import jump as _jump
from nirbeam.transforms import linearity as _lin
from nirbeam.transforms import ramp_fit as _rf
from nirbeam.transforms import refpix as _refpix
from nirbeam.transforms import sat_tail as _tail
from nirbeam.transforms import saturation as _sat
from nirbeam.transforms import superbias as _sb
from nirbeam.transforms.dark import DarkParams
from nirbeam.transforms.dq_init import DQInitParams, dq_init
from nirbeam.transforms.jump import JumpParams
from nirbeam.transforms.linearity import LinearityParams
from nirbeam.transforms.picture_frame import PictureFrameParams
from nirbeam.transforms.ramp_fit import RampFitParams
from nirbeam.transforms.reference import ReferenceArrays
from nirbeam.transforms.refpix import RefPixParams, SubarrayGeometry
from nirbeam.transforms.saturation import SaturationParams
from nirbeam.transforms.superbias import SuperbiasParams

__all__ = [
    "RampTiming",
    "SubarrayGeometry",
    "Detector1Params",
    "RateResult",
    "calibrate_groups",
    "fit_ramps",
    "run_detector1",
    "calibrate_record",
    "Detector1",
]

_SAT = np.uint8(dqflags.SATURATED)
_DNU = np.uint8(dqflags.DO_NOT_USE)
_ADF = np.uint8(dqflags.AD_FLOOR)
_JUMP = np.uint8(dqflags.JUMP_DET)
_BAD = np.uint8(dqflags.SATURATED | dqflags.DO_NOT_USE)
_U_BADGAIN = np.uint32(dqflags.NO_GAIN_VALUE | dqflags.DO_NOT_USE)
_U_DNU = np.uint32(dqflags.DO_NOT_USE)
_U_NOLIN = np.uint32(dqflags.NO_LIN_CORR)
#: Most group differences for which the fused walk screens rows (jump.screen_row) and
#: fits clean pixels per row. With the rank counts (O(nd^2) per pixel) the screen was
#: slower than the scalar walk at 69 differences (1.4-1.8x); with jump.py's sorting
#: network (from 20-21 differences) a 2048-pixel row at 70 groups screens in 0.63 ms
#: against 1.90 ms for the scalar walk (bench/results/jump_screen_cost_s8.json).
#: jump.py's identity tests cover up to 80 differences.
_SCREEN_MAX_DIFFS = 80
_U_SAT = np.uint32(dqflags.SATURATED)


@dataclass(frozen=True)
class RampTiming:
    """Readout timing of one integration.

    Attributes
    ----------
    ngroups, nframes, groupgap : int
    tframe, tgroup : float, s
    """

    ngroups: int
    nframes: int = 1
    groupgap: int = 0
    tframe: float = 0.90156
    tgroup: float = 0.90156

    @classmethod
    def from_meta(cls, meta) -> RampTiming:
        """From an :class:`~nirbeam.stream.records.ExposureMeta`."""
        return cls(int(meta.ngroups), int(meta.nframes), int(meta.groupgap), float(meta.tframe),
                   float(meta.tgroup))


@dataclass(frozen=True)
class Detector1Params:
    """Parameters of every detector1 step (jwst defaults)."""

    dq_init: DQInitParams = field(default_factory=DQInitParams)
    saturation: SaturationParams = field(default_factory=SaturationParams)
    superbias: SuperbiasParams = field(default_factory=SuperbiasParams)
    refpix: RefPixParams = field(default_factory=RefPixParams)
    linearity: LinearityParams = field(default_factory=LinearityParams)
    dark: DarkParams = field(default_factory=DarkParams)
    jump: JumpParams = field(default_factory=JumpParams)
    ramp_fit: RampFitParams = field(default_factory=RampFitParams)
    picture_frame: PictureFrameParams = field(default_factory=PictureFrameParams)  # issue 15

    def describe(self) -> str:
        """Compact text of the non-default settings, for provenance (computed once per
        instance, which is frozen: every integration's record carries it)."""
        text = self.__dict__.get("_described")
        if text is None:
            default = Detector1Params()
            parts = []
            for f in dataclasses.fields(self):
                a, b = getattr(self, f.name), getattr(default, f.name)
                if a != b:
                    diff = {k: v for k, v in dataclasses.asdict(a).items()
                            if v != dataclasses.asdict(b)[k]}
                    parts.append(f"{f.name}={diff}")
            text = "defaults" if not parts else "; ".join(parts)
            object.__setattr__(self, "_described", text)  # not a field: eq, hash unchanged
        return text


@dataclass
class RateResult:
    """Rate images of one integration.

    Attributes
    ----------
    rate, err : float32, (ny, nx), DN/s
    dq : uint32, (ny, nx)
    var_poisson, var_rnoise : float32, (ny, nx), (DN/s)^2
    n_jumps : int, primary jumps flagged (groups)
    jump_skipped : bool, True when the jump step had too few usable groups
    """

    rate: np.ndarray
    err: np.ndarray
    dq: np.ndarray
    var_poisson: np.ndarray
    var_rnoise: np.ndarray
    n_jumps: int = 0
    jump_skipped: bool = False


# ---------------------------------------------------------------------------------------
# helpers


def _check_inputs(ramp, refs: ReferenceArrays, timing: RampTiming):
    if ramp.ndim != 3:
        raise ValueError(f"detector1: ramp must be (ngroups, ny, nx), got shape {ramp.shape}")
    ng, ny, nx = ramp.shape
    if ng != timing.ngroups:
        raise ValueError(f"detector1: NGROUPS={timing.ngroups} but the ramp has {ng} groups")
    if refs.shape != (ny, nx):
        raise ValueError(f"detector1: references are {refs.shape}, ramp is {(ny, nx)}")
    if refs.dark is not None and refs.dark.shape[0] < ng:
        raise ValueError(f"detector1: DARK has {refs.dark.shape[0]} groups, ramp has {ng}")


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def _u32(a):
    return np.ascontiguousarray(a, dtype=np.uint32)


@functools.lru_cache(maxsize=32)
def _tables(ng: int):
    return _rf.weight_tables(ng)


def _time32(t: float) -> float:
    return float(np.float32(t))


def _refpix_setup(refs, geometry, shape, params: Detector1Params):
    """(reference mask (ny, nx) bool, DMS-row parity of y = 0); an all-False mask
    when the step is off or there are no reference pixels."""
    if not params.refpix.enabled or geometry is None:
        return np.zeros(shape, np.bool_), 0
    ref = _refpix.reference_mask(geometry, shape, params.refpix, refs.mask)
    return np.ascontiguousarray(ref), geometry.row_parity0


# ---------------------------------------------------------------------------------------
# unfused path


def calibrate_groups(ramp, refs: ReferenceArrays, timing: RampTiming,
                     params: Detector1Params = Detector1Params(),
                     subarray_geometry: SubarrayGeometry | None = None,
                     pre_jump_hook: Callable | None = None):
    """dq_init .. jump on one integration, step by step.

    ``pre_jump_hook`` ``(groups, groupdq, pixeldq) -> groups`` runs after dark_current
    and before jump (group-level 1/f cleaning: a common-mode column offset in one group
    difference would otherwise read as a jump in every pixel of those columns).

    Parameters
    ----------
    ramp : uint16, (ngroups, ny, nx), DN, raw (bias included)
    refs : ReferenceArrays, cut to the subarray
    timing : RampTiming
    params : Detector1Params
    subarray_geometry : SubarrayGeometry or None (None: no reference-pixel correction)

    Returns
    -------
    groups : float32, (ngroups, ny, nx), DN
    groupdq : uint8, (ngroups, ny, nx)
    pixeldq : uint32, (ny, nx)
    info : dict with ``n_jumps`` (int) and ``jump_skipped`` (bool)
    """
    _check_inputs(ramp, refs, timing)
    ng, ny, nx = ramp.shape
    groups = ramp.astype(np.float32)
    groupdq, pixeldq = dq_init(refs.mask, ng, params.dq_init.enabled)
    if params.saturation.enabled:
        _sat.flag_saturation(ramp, groupdq, pixeldq, refs.saturation, refs.saturation_dq,
                             refs.superbias, timing.nframes, timing.groupgap, params.saturation)
    if params.superbias.enabled and refs.superbias is not None:
        _sb.subtract_superbias(groups, pixeldq, _f32(refs.superbias), _u32(refs.superbias_dq))
    refmask, parity0 = _refpix_setup(refs, subarray_geometry, (ny, nx), params)
    if refmask.any():
        means = _refpix.refpix_means(groups, np.zeros((ny, nx), np.float32), pixeldq, refmask,
                                     parity0, params.refpix.odd_even_columns,
                                     float(params.refpix.sigma_clip),
                                     _refpix.uses_pseudo_reference(subarray_geometry, (ny, nx),
                                                                   params.refpix, refs.mask))
        _refpix.apply_refpix(groups, means, parity0)
    if params.linearity.enabled and refs.linearity is not None:
        _lin.apply_linearity(groups, groupdq, pixeldq, _f32(refs.linearity),
                             _u32(refs.linearity_dq))
    if params.dark.enabled and refs.dark is not None:
        _dark.subtract_dark(groups, pixeldq, _f32(refs.dark), _u32(refs.dark_dq))
    hook_var = None
    if pre_jump_hook is not None:
        groups, hook_var = _hook_output(pre_jump_hook(groups, groupdq, pixeldq))
        if groups.shape != ramp.shape:
            raise ValueError(f"detector1: group_hook returned shape {groups.shape}, "
                             f"expected {ramp.shape}")
    n_jumps, skipped = 0, False
    if params.jump.enabled:
        n_jumps, skipped = _jump.detect_jumps(groups, groupdq, pixeldq, _f32(refs.readnoise),
                                              _f32(refs.gain), timing.nframes, params.jump)
    return groups, groupdq, pixeldq, {"n_jumps": n_jumps, "jump_skipped": skipped,
                                      "hook_var": hook_var}


def _hook_output(out):
    """A group hook returns groups, or (groups, (var, kind)): the variance (DN^2,
    (ny, nx)) its correction adds, per group (``kind='group'``, white) or per group
    difference (``'difference'``, a random walk)."""
    if isinstance(out, tuple):
        g, v = out
        return np.ascontiguousarray(g, np.float32), v
    return np.ascontiguousarray(out, np.float32), None


def add_model_variance(res: RateResult, var_kind, ngroups: int, tgroup: float) -> None:
    """Add to VAR_RNOISE (and ERR) the slope variance of a correction's own error.

    ``var_kind = (var, kind)``, ``(var, kind, walk)`` or a
    :class:`~nirbeam.transforms.flicker_params.ModelVariance` (``walk`` an attribute); ``var`` (DN^2, (ny, nx)) is the
    variance of each fitted offset (``kind='group'``: group ``g`` against the first group,
    1/f cleaning with ``group_reference='first'``; ``'difference'``: difference
    ``g-1 -> g``, ``'previous'``), ``walk`` (broadcastable to ``var``, 0..1) the fraction
    of it that is *not* the mean of the mask pixels' noise (the part a clipped mean or a
    median adds to the mean's variance; 0 for a linear fit). The offset's error is then
    ``rho_g - rho_0 + delta_g`` with ``rho_g`` the mean of the mask pixels' noise in group
    ``g`` (white, variance ``(1 - walk) var / 2``) and ``delta`` the estimator's own,
    nonlinear part (variance ``walk var``, uncorrelated with every ``rho``):

    - ``rho``: both kinds telescope to ``rho_g - rho_0`` (group 0 is not corrected), so
      the least-squares slope sees ``sum_g w_g rho_g``: ``6 (1 - walk) var / (N (N^2 - 1)
      tgroup^2)``;
    - ``delta``, ``'group'``: one per group ``g >= 1`` (all sharing the noise of group 0:
      correlation ``+LAG``), ``sum_{g>=1} w_g delta_g``; ``'difference'``: one per
      difference and *summed* (a random walk; neighbouring differences share a group:
      correlation ``-LAG``): ``sum_k b_k delta_k``, ``b_k = sum_{g>=k} w_g``.

    ``LAG`` = 0.05 (Monte Carlo of the clipped mean and the median, 4 to 128 pixels:
    0.043-0.058, median 0.045-0.09 at 4 pixels).
    With ``'previous'`` the walk dominates from ~10 groups (at 20 groups, 16 mask pixels:
    7.4x the ``rho`` term; the random walk of all of ``var``, the default without
    ``walk``, 81x). Without ``walk``: 0 for ``'group'``, 1 for ``'difference'`` (a pure
    random walk, an upper bound). ``N`` is NGROUPS (ramps cut by jumps or saturation have
    fewer groups: the term is then a lower bound).
    """
    kind = var_kind[1]
    n = int(ngroups)
    if n < 2:
        return
    var = var_kind[0]
    walk = getattr(var_kind, "walk", None)  # flicker_params.ModelVariance
    if walk is None and len(var_kind) > 2:
        walk = var_kind[2]
    shape = res.err.shape
    if walk is None:  # walk 0 ('group') or 1 ('difference'), no lag: closed forms
        if kind == "group":
            c = 6.0 / (n * (n * n - 1)) / float(tgroup) ** 2
        else:
            c = 6.0 * (n * n + 1) / (5.0 * n * (n * n - 1)) / float(tgroup) ** 2
        a, b, f = 1.0, 0.0, _ZERO_WALK  # var * (1 + 0 f) = var, then * c
    else:  # rho telescoped, delta per group or summed over differences (lag-1 correlated)
        c_rho, c_walk = _walk_constants(n, float(tgroup), kind == "group")
        a, b, c = c_rho, c_walk - c_rho, 1.0  # var * (c_rho + (c_walk - c_rho) f)
        f = np.asarray(walk, np.float64)
    rows = shape[0] if f.ndim == 2 and f.shape[0] != 1 else 1  # one row: per column
    var = _readonly_c(np.asarray(var, np.float64), shape)
    f = _readonly_c(f, (rows, shape[1]))
    res.var_rnoise = np.ascontiguousarray(res.var_rnoise, np.float32)
    res.err = np.ascontiguousarray(res.err, np.float32)
    _add_variance(var, f, a, b, float(c), np.ascontiguousarray(res.var_poisson, np.float32),
                  res.var_rnoise, res.err)


_ZERO_WALK = np.zeros(1)  # the walk of the closed forms (multiplied by b = 0)
_ZERO_WALK.setflags(write=False)


def _readonly_c(a, shape):
    """``a`` broadcast to ``shape``, C-contiguous (copied only when it must be) and seen
    read-only (one numba signature of :func:`_add_variance`; the caller's array keeps
    its flags). Fast path, same array: ``a`` C-contiguous with ``shape``'s trailing dims
    and only 1s before them (the (ny, nx) variance, the (nx,) walk to (1, nx)) is a
    reshaped view, without :func:`numpy.broadcast_to`'s iterator (~20 us a call)."""
    shape = tuple(shape)
    lead = len(shape) - a.ndim
    if (lead >= 0 and a.flags.c_contiguous and a.shape == shape[lead:]
            and all(d == 1 for d in shape[:lead])):
        out = a.reshape(shape)  # a new view (its flags are its own)
        out.setflags(write=False)
        return out
    out = np.ascontiguousarray(np.broadcast_to(a, shape)).view()
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=64)
def _walk_constants(n: int, tgroup: float, group: bool) -> tuple[float, float]:
    """(``c_rho``, ``c_walk``) of :func:`add_model_variance` with a walk fraction: the
    slope variance per unit offset variance of its ``rho`` and ``delta`` parts, for
    ``n`` groups ``tgroup`` apart, ``'group'`` (True) or ``'difference'``; computed once
    per (n, tgroup, kind)."""
    lag = 0.05  # lag: Monte Carlo, clipped mean and median, n = 4-128
    t = np.arange(n) * float(tgroup)
    w = (t - t.mean()) / ((t - t.mean()) ** 2).sum()  # OLS slope weights
    c_rho = 0.5 * float((w * w).sum())  # = 6 / (N (N^2 - 1) tgroup^2)
    if group:  # delta_g on groups 1..N-1, correlation +lag
        c_walk = (1.0 - lag) * float((w[1:] ** 2).sum()) + lag * float(w[1:].sum()) ** 2
    else:  # sum_k b_k delta_k, b_k = sum_{g>=k} w_g, k = 1..N-1, correlation -lag
        b = np.cumsum(w[::-1])[::-1][1:]
        c_walk = float((b * b).sum()) - 2.0 * lag * float((b[1:] * b[:-1]).sum())
    return c_rho, c_walk


@njit(cache=True, nogil=True, error_model="numpy")
def _add_variance(var, f, a, b, c, var_p, var_r, err):
    """In place, where VAR_RNOISE is finite and ERR > 0: ``var_r += c * v`` with
    ``v = var * (a + b * f)`` (float64; non-finite ``v`` counts 0; the sum in float64,
    stored float32) and ``err = sqrt(var_p + var_r)``. ``var``: (ny, nx); ``f``: (ny, nx)
    or (1, nx) (per column: no (ny, nx) temporary); the arithmetic, in this order, is
    that of the numpy expressions it replaced (bit-identical)."""
    ny, nx = err.shape
    per_pixel = f.shape[0] > 1
    for y in range(ny):
        fy = y if per_pixel else 0
        for x in range(nx):
            vr = var_r[y, x]
            if not (np.isfinite(vr) and err[y, x] > 0):
                continue
            v = var[y, x] * (a + b * f[fy, x])
            v = (v if np.isfinite(v) else 0.0) * c
            nv = np.float32(np.float64(vr) + v)
            var_r[y, x] = nv
            tot = np.float64(var_p[y, x]) + np.float64(nv)
            err[y, x] = np.float32(np.sqrt(tot if not (tot < 0.0) else 0.0))


def fit_ramps(groups, groupdq, pixeldq, refs: ReferenceArrays, timing: RampTiming,
              params: Detector1Params = Detector1Params()) -> RateResult:
    """Fit calibrated groups (stcal OLS_C conventions, one integration).

    Parameters
    ----------
    groups : float32, (ngroups, ny, nx), DN
    groupdq : uint8, (ngroups, ny, nx) (not modified)
    pixeldq : uint32, (ny, nx)
    refs : ReferenceArrays (readnoise, gain used)
    timing : RampTiming
    params : Detector1Params

    Returns
    -------
    RateResult
    """
    ng, ny, nx = groups.shape
    out = _empty_result(ny, nx)
    _rf.fit_ramps_cube(
        _f32(groups), np.array(groupdq, np.uint8, copy=True), _u32(pixeldq),
        _f32(refs.readnoise), _f32(refs.gain), int(timing.nframes), _time32(timing.tgroup),
        _time32(timing.tframe), np.zeros((ny, nx), np.float32),
        bool(params.ramp_fit.suppress_one_group), out.rate, out.err, out.dq, out.var_poisson,
        out.var_rnoise,
    )
    return out


def _empty_result(ny, nx) -> RateResult:
    return RateResult(
        rate=np.zeros((ny, nx), np.float32), err=np.zeros((ny, nx), np.float32),
        dq=np.zeros((ny, nx), np.uint32), var_poisson=np.zeros((ny, nx), np.float32),
        var_rnoise=np.zeros((ny, nx), np.float32),
    )


# ---------------------------------------------------------------------------------------
# fused path


@njit(cache=True, nogil=True, error_model="numpy")
def _count_all_dnu_groups_fused(ramp, satidx, psat, n_grow, thresh, bias, mean0, last2, nreads1,
                                readpatt):
    """Groups DO_NOT_USE in every pixel after saturation flagging (early exit)."""
    ng, ny, nx = ramp.shape
    seen = np.zeros(ng, np.bool_)
    nseen = 0
    q = np.zeros(ng, np.uint8)
    for y in range(ny):
        for x in range(nx):
            for g in range(ng):
                q[g] = 0
            _sat.flag_pixel(ramp, y, x, q, satidx[y, x], psat, n_grow, thresh[y, x], bias[y, x],
                            mean0, last2, nreads1, readpatt, True)
            for g in range(ng):
                if not seen[g] and not (q[g] & _DNU):
                    seen[g] = True
                    nseen += 1
            if nseen == ng:
                return 0
    return ng - nseen


@njit(cache=True, nogil=True, error_model="numpy")
def _calib_row(ramp, cr, s, D, Q, PDQ, LOK, VR, RR, LG,
               do_dqinit, mask,
               do_sat, satidx, psat, n_grow, thresh, sat_pdq, readpatt, mean0, last2, nreads1,
               bias, sb_dq,
               refmeans, parity0, do_refpix,
               do_lin, coeffs, lin_dq,
               do_dark, dark, dark_dq):
    """dq_init .. dark_current of row ``cr`` of the raw ramp into ring slot ``s``:
    ``D[s]`` (nx, ng) float32 DN, ``Q[s]`` (nx, ng) group DQ, ``PDQ[s]`` (nx,) pixel DQ;
    ``LOK``, ``LG`` bool (nx,), ``VR``, ``RR`` float32 (nx,): work buffers.
    Loops that touch the (ngroups, ny, nx) inputs run group-outer / column-inner
    (contiguous rows, no TLB thrashing); per-pixel work runs on pixel-major buffers."""
    ng = ramp.shape[0]
    nx = ramp.shape[2]
    for x in range(nx):
        q = Q[s, x]
        for g in range(ng):
            q[g] = 0
        pdq = mask[cr, x] if do_dqinit else np.uint32(0)
        if do_sat:
            _sat.flag_pixel(ramp, cr, x, q, satidx[cr, x], psat, n_grow, thresh[cr, x],
                            bias[cr, x], mean0, last2, nreads1, readpatt, False)
            pdq |= sat_pdq[cr, x]
        PDQ[s, x] = pdq | sb_dq[cr, x]
    if do_lin:
        _lin_status_row(coeffs, lin_dq, cr, PDQ[s], LOK)
    if do_dark:
        for x in range(nx):
            PDQ[s, x] |= dark_dq[cr, x]
    for g in range(ng):
        mrow = refmeans[g, (parity0 + cr) % 2]  # DMS-row parity = detector column
        for x in range(nx):
            r = ramp[g, cr, x]
            if do_sat and r <= 0:
                Q[s, x, g] |= _ADF | _DNU
            v = np.float32(np.float32(r) - bias[cr, x])
            if do_refpix:
                v = np.float32(v - mrow)
            VR[x] = v
            LG[x] = LOK[x] and not (Q[s, x, g] & _SAT)
        _lin_dark_row(VR, RR, LG, g, cr, do_lin, coeffs, do_dark, dark)
        for x in range(nx):
            D[s, x, g] = VR[x]


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _lin_status_row(coeffs, lin_dq, cr, pdq, LOK):
    """:func:`~nirbeam.transforms.linearity.linearity_pixel_status` for every pixel of
    row ``cr``, in loops over the pixels without branches (they vectorise): ``LOK[x]``
    whether the correction applies, ``pdq[x] |= lin_dq | extra`` (``extra``:
    NO_LIN_CORR for NaN coefficients or a zero linear term, unless the reference DQ has
    NO_LIN_CORR already)."""
    nc = coeffs.shape[0]
    nx = LOK.shape[0]
    for x in range(nx):
        LOK[x] = True  # no NaN coefficient yet
    for k in range(nc):
        ck = coeffs[k, cr]
        for x in range(nx):
            LOK[x] = LOK[x] & (not np.isnan(ck[x]))
    if nc > 1:
        c1 = coeffs[1, cr]
        for x in range(nx):
            LOK[x] = LOK[x] & (c1[x] != 0)
    for x in range(nx):
        ld = lin_dq[cr, x]
        nolin = (ld & _U_NOLIN) != 0
        bad = not LOK[x]
        pdq[x] |= ld | (_U_NOLIN if (bad and not nolin) else np.uint32(0))
        LOK[x] = not (nolin or bad)



@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _poly6(c0, c1, c2, c3, c4, c5, x, v):
    """The six-coefficient linearity polynomial at pixel ``x`` of value ``v``, Horner's
    form in float32, each step rounded as the references' float32 (shared by the
    linearity row pass and the fused calibration cube)."""
    r = np.float32(c5[x] * v)
    r = np.float32(np.float32(r + c4[x]) * v)
    r = np.float32(np.float32(r + c3[x]) * v)
    r = np.float32(np.float32(r + c2[x]) * v)
    r = np.float32(np.float32(r + c1[x]) * v)
    return np.float32(r + c0[x])

@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _lin_dark_row(V, R, LG, g, cr, do_lin, coeffs, do_dark, dark):
    """Linearity (where ``LG[x]``: the pixel's correction applies and group ``g`` is not
    SATURATED) then dark_current of group ``g`` of row ``cr``, in place in ``V`` (float32,
    (nx,), contiguous); ``R`` float32 (nx,) work. The one helper of :func:`_calib_row` and
    :func:`_calibrate_cube`. The polynomial is :func:`~nirbeam.transforms.linearity.
    correct_value`'s Horner scheme, the same float32 operations in the same order, with
    the pixel as the innermost loop (the correction computed for every pixel and
    selected) so that the loops vectorise. Six coefficients (NIRSpec's references) run
    the whole polynomial per pixel in registers, the coefficient rows hoisted (the
    pass-per-coefficient form over ``R`` did not vectorise, aliasing: 0.30 of the cube's
    0.73 ms per PRISM integration); other counts run a pass per coefficient."""
    nx = V.shape[0]
    if do_lin and coeffs.shape[0] == 6:  # NIRSpec's: per pixel, in registers
        c0 = coeffs[0, cr]
        c1 = coeffs[1, cr]
        c2 = coeffs[2, cr]
        c3 = coeffs[3, cr]
        c4 = coeffs[4, cr]
        c5 = coeffs[5, cr]
        for x in range(nx):
            v = V[x]
            c = _poly6(c0, c1, c2, c3, c4, c5, x, v)
            V[x] = c if LG[x] else v
    elif do_lin:
        nc = coeffs.shape[0]
        for x in range(nx):
            R[x] = np.float32(coeffs[nc - 1, cr, x] * V[x])
        for j in range(nc - 2, 0, -1):
            for x in range(nx):
                R[x] = np.float32(np.float32(R[x] + coeffs[j, cr, x]) * V[x])
        for x in range(nx):
            c = np.float32(R[x] + coeffs[0, cr, x])
            V[x] = c if LG[x] else V[x]
    if do_dark:
        for x in range(nx):
            V[x] = np.float32(V[x] - _dark.dark_value(dark[g, cr, x]))


@njit(cache=True, nogil=True, error_model="numpy")
def _calibrate_cube(ramp, do_dqinit, mask,
                    do_sat, satidx, psat, n_grow, thresh, sat_pdq, readpatt, mean0, last2, nreads1,
                    bias, sb_dq,
                    refmeans, parity0, do_refpix,
                    do_lin, coeffs, lin_dq,
                    do_dark, dark, dark_dq,
                    groups, groupdq, pixeldq):
    """dq_init .. dark_current of the whole ramp (the fused kernel's arithmetic) into
    ``groups`` float32, ``groupdq`` uint8 (ngroups, ny, nx) and ``pixeldq`` uint32 (ny, nx):
    the input of a group hook."""
    # :func:`_calib_row`'s arithmetic, written group-major straight into the cube, in
    # loops over a row's pixels without branches (they vectorise): SATURATED from the
    # pixel's first saturated group on and A/D floor as selects, then the sparse
    # saturation flags (partial saturation of a neighbour, the group-2 read-pattern
    # check) pixel by pixel. Only SATURATED gates linearity; DO_NOT_USE (the sparse
    # flags) does not, so the order of the flags does not change any value.
    ng, ny, nx = ramp.shape
    LOK = np.zeros(nx, np.bool_)
    LG = np.zeros(nx, np.bool_)
    RR = np.empty(nx, np.float32)
    S = np.full(nx, ng, np.int32)  # int32: an int64 one cost the loops' vector width
    sat8 = _SAT if do_sat else np.uint8(0)
    adf8 = (_ADF | _DNU) if do_sat else np.uint8(0)
    # NIRSpec's six linearity coefficients: each group-row in ONE pass over its pixels
    # (raw -> bias, refpix, linearity, dark), the coefficient rows hoisted; the same
    # float32 operations in the same order as _lin_dark_row (0.28 -> 0.19 ms per PRISM
    # integration, session 14). Other counts: three passes, _lin_dark_row.
    six = do_lin and coeffs.shape[0] == 6
    for cr in range(ny):
        for x in range(nx):
            pdq = mask[cr, x] if do_dqinit else np.uint32(0)
            if do_sat:
                pdq |= sat_pdq[cr, x]
                S[x] = satidx[cr, x]
            pixeldq[cr, x] = pdq | sb_dq[cr, x]
        if do_lin:
            _lin_status_row(coeffs, lin_dq, cr, pixeldq[cr], LOK)
        if do_dark:
            for x in range(nx):
                pixeldq[cr, x] |= dark_dq[cr, x]
        b = bias[cr]
        if six:
            c0 = coeffs[0, cr]
            c1 = coeffs[1, cr]
            c2 = coeffs[2, cr]
            c3 = coeffs[3, cr]
            c4 = coeffs[4, cr]
            c5 = coeffs[5, cr]
            for g in range(ng):
                mrow = refmeans[g, (parity0 + cr) % 2]  # DMS-row parity = detector column
                R = ramp[g, cr]
                V = groups[g, cr]
                QG = groupdq[g, cr]
                dk = dark[g, cr] if do_dark else dark[0, 0]
                for x in range(nx):
                    r = R[x]
                    satg = g >= S[x]
                    q = sat8 if satg else np.uint8(0)
                    q = (q | adf8) if r <= 0 else q
                    QG[x] = q
                    v = np.float32(np.float32(r) - b[x])
                    if do_refpix:
                        v = np.float32(v - mrow)
                    c = _poly6(c0, c1, c2, c3, c4, c5, x, v)
                    v = c if (LOK[x] & (not satg)) else v
                    if do_dark:
                        v = np.float32(v - _dark.dark_value(dk[x]))
                    V[x] = v
        else:
            for g in range(ng):
                mrow = refmeans[g, (parity0 + cr) % 2]  # DMS-row parity = detector column
                V = groups[g, cr]
                for x in range(nx):
                    r = ramp[g, cr, x]
                    satg = g >= S[x]
                    q = sat8 if satg else np.uint8(0)
                    q = (q | adf8) if r <= 0 else q
                    groupdq[g, cr, x] = q
                    v = np.float32(np.float32(r) - bias[cr, x])
                    if do_refpix:
                        v = np.float32(v - mrow)
                    V[x] = v
                    LG[x] = LOK[x] and not satg
                _lin_dark_row(V, RR, LG, g, cr, do_lin, coeffs, do_dark, dark)
        if do_sat and (psat.shape[0] > 0 or (readpatt and ng > 2)):
            for x in range(nx):  # the sparse flags of _sat.flag_pixel (DO_NOT_USE only)
                if psat.shape[0] > 0 or S[x] == 2:
                    _sat.flag_pixel_sparse(ramp, cr, x, groupdq[:, cr, x], S[x], psat, n_grow,
                                           thresh[cr, x], bias[cr, x], mean0, last2, nreads1,
                                           readpatt)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _load_px(D, Q, LD, s, x, g_in, q_in, row):
    """Pixel ``x`` of the input cube's row ``row`` into ring slot ``s`` pixel-major
    (``D[s, x]``, ``Q[s, x]``), once per ring fill (``LD[s, x]``)."""
    if not LD[s, x]:
        for g in range(D.shape[2]):
            D[s, x, g] = g_in[g, row, x]
            Q[s, x, g] = q_in[g, row, x]
        LD[s, x] = True


@njit(cache=True, nogil=True, error_model="numpy")
def _fused_band(ramp, r0, r1, pre, g_in, q_in, p_in,
                do_dqinit, mask,
                do_sat, satidx, psat, n_grow, thresh, sat_pdq, readpatt, mean0, last2, nreads1,
                bias, sb_dq,
                refmeans, parity0, do_refpix,
                do_lin, coeffs, lin_dq,
                do_dark, dark, dark_dq,
                do_jump, readnoise, gain, nframes, single_pass, rej, thr2, thr3, do_nb, nb_min,
                nb_max,
                tgroup, tframe, suppress1g, wtab, stab,
                rate, err, dq, var_p, var_r):
    ng, ny, nx = ramp.shape
    D = np.empty((3, nx, ng), np.float32)
    Q = np.empty((3, nx, ng), np.uint8)
    NB = np.zeros((3, nx, ng), np.uint8)
    PANY = np.zeros((3, nx), np.bool_)
    RANY = np.zeros(3, np.bool_)
    PDQ = np.zeros((3, nx), np.uint32)
    fd = np.empty(ng + 1, np.float64)
    wk = np.empty(ng + 1, np.float64)
    keys = np.empty(ng + 1, np.float32)
    kpos = np.empty(ng + 1, np.int64)
    LOK = np.zeros(nx, np.bool_)
    LG = np.zeros(nx, np.bool_)
    VR = np.empty(nx, np.float32)
    RR = np.empty(nx, np.float32)
    KLO = np.full((3, nx), -1, np.int64)
    KHI = np.full((3, nx), -1, np.int64)
    ss = np.empty(ng + 1, np.int64)
    se = np.empty(ng + 1, np.int64)
    gl = np.empty(ng, np.uint8)
    # the row screen of clean pixels (jump.screen_row): its rank counts cost (ng - 1)^2
    # per pixel, slower than the scalar walk beyond _SCREEN_MAX_DIFFS differences
    screen = do_jump and 4 <= ng - 1 <= _SCREEN_MAX_DIFFS
    SA = np.empty((max(ng - 1, 1), nx), np.float64)
    SK = np.empty((max(ng - 1, 1), nx), np.float32)
    SR = np.empty((max(ng - 1, 1), nx), np.int32)
    SW = np.empty((5, nx), np.float64)
    SI = np.empty((3, nx), np.int32)
    GR = np.empty((3, ng, nx), np.float32)  # the ring's rows, group-major (screen, fit)
    QA = np.zeros((3, nx), np.uint8)  # OR of a pixel's input group DQ (pre and screen)
    LD = np.zeros((3, nx), np.bool_)  # D, Q of the pixel loaded (pre and screen)
    QR = np.empty((ng, nx), np.uint8)
    FW = np.empty((8, nx), np.float64)
    FPW = np.empty(nx, np.int64)
    SOK = np.zeros(nx, np.bool_)
    SLO = np.empty(nx, np.int64)
    SHI = np.empty(nx, np.int64)
    SOKR = np.zeros((3, nx), np.bool_)  # SOK of the ring's rows
    FS = np.empty(nx, np.float64)  # ramp_fit.fit_clean_row outputs of the row finalized
    FC = np.zeros(nx, np.bool_)  # the row's pixels finalized by the vectorised pass
    FE = np.empty(nx, np.float64)
    FP = np.empty(nx, np.float64)
    FR = np.empty(nx, np.float64)
    # saturated-tail pixels (clean up to their first flagged group, SATURATED /
    # DO_NOT_USE from there: sat_tail), screened and fitted per row, gathered together
    TSR = np.full((3, nx), -1, np.int64)  # first flagged group of a screened tail pixel
    TSATR = np.zeros((3, nx), np.bool_)  # a tail group has SATURATED
    TSG = np.empty(nx, np.int64)
    TT = np.zeros(nx, np.bool_)
    TTS = np.zeros(nx, np.bool_)
    TI = np.empty(nx, np.int64)
    GT = np.empty((ng, nx), np.float32)
    TG = np.empty(nx, np.float32)
    TRN = np.empty(nx, np.float32)
    TSS = np.empty(nx, np.int64)
    TSC = np.zeros(nx, np.bool_)
    TPQ = np.empty(nx, np.uint32)
    TOK = np.zeros(nx, np.bool_)
    TKL = np.empty(nx, np.int64)
    TKH = np.empty(nx, np.int64)
    TIW = np.empty((4, nx), np.int32)
    FTS = np.empty(nx, np.float64)
    FTE = np.empty(nx, np.float64)
    FTQ = np.empty(nx, np.uint32)
    FTP = np.empty(nx, np.float64)
    FTR = np.empty(nx, np.float64)
    XS = np.empty(nx, np.float64)  # the tail fit of the row finalized, per pixel
    XE = np.empty(nx, np.float64)
    XQ = np.empty(nx, np.uint32)
    XP = np.empty(nx, np.float64)
    XR = np.empty(nx, np.float64)
    dcur = 0.0
    total = 0
    c0 = max(r0 - 1, 0)
    c1 = min(r1 + 1, ny)
    for cr in range(c0, c1 + 1):
        if cr < c1:
            # ---- calibrate (or load) + jump-test row cr into ring slot s
            s = cr % 3
            rany = False
            if pre and screen:
                # calibrated (and group-hooked) groups given, screened: the row is copied
                # group-major only (contiguous, for screen_row and fit_clean_row); its
                # pixel-major copy (D, Q) is made per pixel, only for the pixels that
                # need it (jump_pixel, a neighbour's JUMP flags, fit_pixel): _load_px
                for x in range(nx):
                    PDQ[s, x] = p_in[cr, x]
                    QA[s, x] = 0
                    LD[s, x] = False
                for g in range(ng):
                    for x in range(nx):
                        GR[s, g, x] = g_in[g, cr, x]
                        qv = q_in[g, cr, x]
                        QR[g, x] = qv
                        QA[s, x] |= qv
            elif pre:  # calibrated (and group-hooked) groups given: load the row
                for x in range(nx):
                    PDQ[s, x] = p_in[cr, x]
                for g in range(ng):
                    for x in range(nx):
                        D[s, x, g] = g_in[g, cr, x]
                        Q[s, x, g] = q_in[g, cr, x]
            else:
                _calib_row(ramp, cr, s, D, Q, PDQ, LOK, VR, RR, LG, do_dqinit, mask, do_sat, satidx, psat,
                           n_grow, thresh, sat_pdq, readpatt, mean0, last2, nreads1, bias,
                           sb_dq, refmeans, parity0, do_refpix, do_lin, coeffs, lin_dq,
                           do_dark, dark, dark_dq)
            if screen:
                for g in range(ng):
                    if not pre:
                        for x in range(nx):
                            GR[s, g, x] = D[s, x, g]
                            QR[g, x] = Q[s, x, g]
                _jump.screen_row(GR[s], QR, gain[cr], readnoise[cr], nframes, rej, SA, SK, SR,
                                 SW, SI, SOK, SLO, SHI, single_pass)
                nfail = 0  # failed with the last group flagged: maybe a saturated tail
                for x in range(nx):
                    TSR[s, x] = -1
                    nfail += np.int64((not SOK[x]) and QR[ng - 1, x] != 0)
                if nfail > 0:
                    # pixels failing the screen for a saturated tail: the tail screen
                    _tail.tail_pattern_row(QR, TSG, TT, TTS)
                    nt = np.int64(0)
                    for x in range(nx):
                        if TT[x] and not SOK[x]:
                            TI[nt] = x
                            nt += 1
                    if nt > 0:
                        for g in range(ng):
                            for t in range(nt):
                                GT[g, t] = GR[s, g, TI[t]]
                        for t in range(nt):
                            x = TI[t]
                            TG[t] = gain[cr, x]
                            TRN[t] = readnoise[cr, x]
                            TSS[t] = TSG[x]
                        _tail.screen_tail_row(GT, TSS, nt, TG, TRN, nframes, single_pass, rej,
                                              thr2, thr3, SA, SK, SR, SW, TIW, TOK, TKL, TKH)
                        for t in range(nt):
                            if TOK[t]:  # no jump: what jump_pixel would return
                                x = TI[t]
                                SOK[x] = True
                                SLO[x] = TKL[t]
                                SHI[x] = TKH[t]
                                TSR[s, x] = TSS[t]
                                TSATR[s, x] = TTS[x]
                for x in range(nx):
                    SOKR[s, x] = SOK[x]
            if screen:
                # the screened pixels first, in a loop without branches (vectorises): the
                # bad-gain flag of every pixel, what jump_pixel would return where SOK
                # (stored for every pixel: the loop below rewrites the others' KLO, KHI,
                # PANY; a select keeping the old value compiles to slow masked stores)
                for x in range(nx):
                    PDQ[s, x] |= np.uint32(0) if gain[cr, x] > 0 else _U_BADGAIN
                    KLO[s, x] = SLO[x]
                    KHI[s, x] = SHI[x]
                    PANY[s, x] = False
            for x in range(nx):
                anynb = False
                if screen and SOK[x]:  # done above
                    continue
                if do_jump:
                    gn = gain[cr, x]
                    if not screen and not (gn > 0):
                        PDQ[s, x] |= _U_BADGAIN
                    if pre and screen:
                        _load_px(D, Q, LD, s, x, g_in, q_in, cr)
                    n, anynb, klo, khi = _jump.jump_pixel(
                        D[s, x], Q[s, x], ng, gn, readnoise[cr, x], nframes, single_pass, rej,
                        thr2, thr3, do_nb, nb_min, nb_max, fd, wk, NB[s, x], keys, kpos)
                    KLO[s, x] = klo
                    KHI[s, x] = khi
                    if cr >= r0 and cr < r1:  # halo rows are counted by their own band
                        total += n
                PANY[s, x] = anynb
                rany = rany or anynb
            RANY[s] = rany
        # ---- finalize row f = cr - 1 (its neighbours cr - 2 and cr are done)
        f = cr - 1
        if f < r0 or f >= r1:
            continue
        sf = f % 3
        up = (f - 1) % 3 if f - 1 >= c0 else -1
        dn = (f + 1) % 3 if f + 1 < c1 else -1
        near = RANY[sf] or (up >= 0 and RANY[up]) or (dn >= 0 and RANY[dn])
        if screen:
            _rf.fit_clean_row(GR[sf], gain[f], readnoise[f], nframes, tgroup, dcur, wtab, stab,
                              KLO[sf], KHI[sf], FW, FPW, FS, FE, FP, FR)
            # the tail pixels of the row that may be clean (fit_pixel for the others)
            nt = np.int64(0)
            for x in range(nx):
                if (TSR[sf, x] >= 0 and gain[f, x] > 0
                        and not (PDQ[sf, x] & (_U_DNU | _U_SAT))):
                    TI[nt] = x
                    nt += 1
            if nt > 0:
                for g in range(ng):
                    for t in range(nt):
                        GT[g, t] = GR[sf, g, TI[t]]
                for t in range(nt):
                    x = TI[t]
                    TSS[t] = TSR[sf, x]
                    TSC[t] = TSATR[sf, x]
                    TPQ[t] = PDQ[sf, x]
                    TG[t] = gain[f, x]
                    TRN[t] = readnoise[f, x]
                    TKL[t] = KLO[sf, x]
                    TKH[t] = KHI[sf, x]
                _tail.fit_tail_row(GT, TSS, TSC, nt, TPQ, TG, TRN, nframes, tgroup, tframe, dcur,
                                   suppress1g, wtab, stab, TKL, TKH, FTS, FTE, FTQ, FTP, FTR)
                for t in range(nt):
                    x = TI[t]
                    XS[x] = FTS[t]
                    XE[x] = FTE[t]
                    XQ[x] = FTQ[t]
                    XP[x] = FTP[t]
                    XR[x] = FTR[t]
        lazy = pre and screen
        nfast = 0
        if lazy and not near:
            # the clean pixels that need nothing more (screened, no saturated tail, never
            # loaded, every input group DQ 0: ``clean`` below, from QA), their fit_clean_row
            # results written in a loop without branches (vectorises); the others below
            for x in range(nx):
                pq = PDQ[sf, x]
                c = (SOKR[sf, x] and gain[f, x] > 0 and not (pq & (_U_DNU | _U_SAT))
                     and TSR[sf, x] < 0 and not LD[sf, x] and QA[sf, x] == 0)
                FC[x] = c
                nfast += np.int64(c)
                # every pixel: the loop below rewrites all five outputs of the others
                rate[f, x] = FS[x]
                err[f, x] = FE[x]
                dq[f, x] = pq
                var_p[f, x] = FP[x]
                var_r[f, x] = FR[x]
        for x in range(nx if nfast < nx else 0):
            if nfast > 0 and FC[x]:
                continue
            q = Q[sf, x]
            if near:
                cand = ((up >= 0 and PANY[up, x]) or (dn >= 0 and PANY[dn, x])
                        or (x > 0 and PANY[sf, x - 1]) or (x < nx - 1 and PANY[sf, x + 1]))
                if cand:
                    if lazy:
                        _load_px(D, Q, LD, sf, x, g_in, q_in, f)
                    for g in range(1, ng):
                        if q[g] & _BAD:
                            continue
                        # NB of a pixel is valid only where PANY (jump_pixel_fast)
                        if ((up >= 0 and PANY[up, x] and NB[up, x, g])
                                or (dn >= 0 and PANY[dn, x] and NB[dn, x, g])
                                or (x > 0 and PANY[sf, x - 1] and NB[sf, x - 1, g])
                                or (x < nx - 1 and PANY[sf, x + 1] and NB[sf, x + 1, g])):
                            q[g] |= _JUMP
            pq = PDQ[sf, x]
            clean = screen and SOKR[sf, x] and gain[f, x] > 0 and not (pq & (_U_DNU | _U_SAT))
            ts = TSR[sf, x] if screen else -1
            if clean:
                if ts >= 0:  # a saturated tail: its groups before ts must still be 0
                    if not (lazy and not LD[sf, x]):  # (neighbour JUMP flags)
                        for g in range(ts):
                            if q[g] != 0:
                                clean = False
                                break
                elif lazy and not LD[sf, x]:  # q is the input row's: QA is its OR
                    clean = QA[sf, x] == 0
                else:
                    for g in range(ng):
                        if q[g] != 0:
                            clean = False
                            break
            if clean and ts >= 0:
                rate[f, x] = XS[x]  # fit_pixel's result for a clean tail (fit_tail_row)
                err[f, x] = XE[x]
                dq[f, x] = XQ[x]
                var_p[f, x] = XP[x]
                var_r[f, x] = XR[x]
                continue
            if clean:
                rate[f, x] = FS[x]  # fit_pixel's result for a clean pixel (fit_clean_row)
                err[f, x] = FE[x]
                dq[f, x] = pq
                var_p[f, x] = FP[x]
                var_r[f, x] = FR[x]
                continue
            if lazy:
                _load_px(D, Q, LD, sf, x, g_in, q_in, f)
            for g in range(ng):
                gl[g] = q[g]
            rr, ee, qq, vp, vr = _rf.fit_pixel(D[sf, x], gl, ng, PDQ[sf, x], gain[f, x],
                                               readnoise[f, x], nframes, tgroup, tframe, dcur,
                                               suppress1g, wtab, stab, keys, ss, se,
                                               KLO[sf, x], KHI[sf, x], do_jump)
            rate[f, x] = rr
            err[f, x] = ee
            dq[f, x] = qq
            var_p[f, x] = vp
            var_r[f, x] = vr
    return total


@njit(cache=True, parallel=True, error_model="numpy")
def _fused_parallel(ramp, nbands, pre, g_in, q_in, p_in,
                    do_dqinit, mask,
                    do_sat, satidx, psat, n_grow, thresh, sat_pdq, readpatt, mean0, last2,
                    nreads1, bias, sb_dq,
                    refmeans, parity0, do_refpix,
                    do_lin, coeffs, lin_dq,
                    do_dark, dark, dark_dq,
                    do_jump, readnoise, gain, nframes, single_pass, rej, thr2, thr3, do_nb,
                    nb_min, nb_max,
                    tgroup, tframe, suppress1g, wtab, stab,
                    rate, err, dq, var_p, var_r):
    ny = ramp.shape[1]
    total = 0
    for b in prange(nbands):
        r0 = (b * ny) // nbands
        r1 = ((b + 1) * ny) // nbands
        total += _fused_band(ramp, r0, r1, pre, g_in, q_in, p_in, do_dqinit, mask, do_sat, satidx, psat, n_grow, thresh,
                             sat_pdq, readpatt, mean0, last2, nreads1, bias, sb_dq, refmeans,
                             parity0, do_refpix, do_lin, coeffs, lin_dq, do_dark, dark, dark_dq,
                             do_jump, readnoise, gain, nframes, single_pass, rej, thr2, thr3,
                             do_nb, nb_min, nb_max, tgroup, tframe, suppress1g, wtab, stab,
                             rate, err, dq, var_p, var_r)
    return total


#: Reference-derived arrays of :func:`_calib_setup`, per ReferenceArrays (weakly held:
#: an entry goes with its references) and per (shape, geometry, step parameters). The
#: reference arrays are read, never written, by the pipeline: an array edited in place
#: after a call would not be seen here (make a new ReferenceArrays instead).
_REF_DERIVED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _ref_derived(refs: ReferenceArrays, shape, params: Detector1Params,
                 geometry: SubarrayGeometry | None):
    """(mask, bias_sat, thresholds (thresh, nosat, sat_pdq) or None, refmask, parity0,
    do_refpix, detrend, the reference pixels (ys, xs) row-major, the pixel DQ the
    reference-pixel means read (None without them)) for these references, computed once (:data:`_REF_DERIVED`)."""
    p = params
    key = (tuple(shape), geometry, p.saturation.enabled, p.refpix, p.dq_init.enabled,
           p.superbias.enabled)
    per_refs = _REF_DERIVED.get(refs)
    if per_refs is None:
        per_refs = {}
        _REF_DERIVED[refs] = per_refs
    hit = per_refs.get(key)
    if hit is not None:
        return hit
    ny, nx = shape
    mask = _u32(refs.mask)
    bias_sat = (np.zeros((ny, nx), np.float32) if refs.superbias is None
                else np.nan_to_num(_f32(refs.superbias), nan=0.0))
    sat = (_sat.effective_thresholds(_f32(refs.saturation), _u32(refs.saturation_dq))
           if p.saturation.enabled else None)
    refmask, parity0 = _refpix_setup(refs, geometry, (ny, nx), p)
    do_refpix = bool(refmask.any())
    detrend = do_refpix and _refpix.uses_pseudo_reference(geometry, (ny, nx), p.refpix,
                                                          refs.mask)
    refyx = np.nonzero(refmask)  # the reference pixels, row-major
    pdq_ref = None
    if do_refpix:  # dq_init | saturation | superbias pixel DQ (per references: cached)
        pdq_ref = mask.copy() if p.dq_init.enabled else np.zeros((ny, nx), np.uint32)
        if p.saturation.enabled:
            pdq_ref |= sat[2]
        if p.superbias.enabled and refs.superbias is not None:
            pdq_ref |= _u32(refs.superbias_dq)
    hit = (mask, bias_sat, sat, refmask, parity0, do_refpix, detrend, refyx, pdq_ref)
    if len(per_refs) >= 8:
        per_refs.clear()
    per_refs[key] = hit
    return hit


def _calib_setup(ramp, refs: ReferenceArrays, timing: RampTiming, params: Detector1Params,
                 geometry: SubarrayGeometry | None):
    """Prepasses of the fused kernel (first saturated group with growth, reference-pixel
    means) and the arguments of :func:`_calib_row`; also what the jump mode needs."""
    ng, ny, nx = ramp.shape
    p = params
    mask, bias_sat, sat, refmask, parity0, do_refpix, detrend, refyx, pdq_ref = _ref_derived(
        refs, (ny, nx), p, geometry)
    do_sat = p.saturation.enabled
    sb_on = p.superbias.enabled and refs.superbias is not None
    do_lin = p.linearity.enabled and refs.linearity is not None
    do_dark = p.dark.enabled and refs.dark is not None
    # the DQ of a step that is off (none in the default chain: nothing allocated)
    z32 = (None if p.dq_init.enabled and do_sat and sb_on and do_lin and do_dark
           else np.zeros((ny, nx), np.uint32))
    # saturation prepass
    mean0, last2, nreads1 = _sat.readpatt_constants(timing.nframes, timing.groupgap)
    if do_sat:
        thresh, nosat, sat_pdq = sat
        satidx = _sat.grow_min(_sat.first_saturated_group(ramp, thresh),
                               p.saturation.n_pix_grow_sat)
        psat, _ = _sat.saturation_aux(ramp, satidx, thresh, nosat, timing.nframes,
                                      timing.groupgap, p.saturation)
    else:
        thresh = np.zeros((ny, nx), np.float32)
        sat_pdq = z32
        satidx = np.full((ny, nx), ng, np.int16)
        psat = np.full((0, 0), -1, np.int16)
    # bias actually subtracted (superbias step)
    bias = bias_sat if sb_on else np.zeros((ny, nx), np.float32)
    sb_dq = _u32(refs.superbias_dq) if sb_on else z32
    # refpix prepass
    if do_refpix:
        refmeans = _refpix.refpix_means_at(ramp, bias, pdq_ref, refyx[0], refyx[1], parity0,
                                           p.refpix.odd_even_columns,
                                           float(p.refpix.sigma_clip), detrend)
    else:
        refmeans = np.zeros((ng, 2), np.float32)
    coeffs = _f32(refs.linearity) if do_lin else np.zeros((2, 1, 1), np.float32)
    lin_dq = _u32(refs.linearity_dq) if do_lin else z32
    dark = _f32(refs.dark) if do_dark else np.zeros((1, 1, 1), np.float32)
    dark_dq = _u32(refs.dark_dq) if do_dark else z32
    calib = (
        p.dq_init.enabled, mask,
        do_sat, satidx, psat, int(p.saturation.n_pix_grow_sat), thresh, sat_pdq,
        bool(p.saturation.use_readpatt), float(mean0), float(last2), np.float32(nreads1),
        bias, sb_dq,
        refmeans, int(parity0), do_refpix,
        do_lin, coeffs, lin_dq,
        do_dark, dark, dark_dq,
    )
    sat_state = (do_sat, satidx, psat, thresh, bias_sat, mean0, last2, nreads1)
    return calib, sat_state


def _fit_args(refs, timing, params, do_jump, single, out):
    p = params
    wtab, stab = _tables(timing.ngroups)
    return (
        do_jump, _f32(refs.readnoise), _f32(refs.gain), int(timing.nframes), single,
        float(p.jump.rejection_threshold), float(p.jump.three_group_rejection_threshold),
        float(p.jump.four_group_rejection_threshold), bool(p.jump.flag_4_neighbors),
        float(p.jump.min_jump_to_flag_neighbors), float(p.jump.max_jump_to_flag_neighbors),
        _time32(timing.tgroup), _time32(timing.tframe), bool(p.ramp_fit.suppress_one_group),
        wtab, stab,
        out.rate, out.err, out.dq, out.var_poisson, out.var_rnoise,
    )


def _run_bands(ramp, pre, g_in, q_in, p_in, calib, fit, parallel):
    ny = ramp.shape[1]
    if parallel:
        from numba import get_num_threads

        nbands = max(1, min(ny, 4 * get_num_threads()))
        return _fused_parallel(ramp, nbands, pre, g_in, q_in, p_in, *calib, *fit)
    return _fused_band(ramp, 0, ny, pre, g_in, q_in, p_in, *calib, *fit)


def _finish(out, refs, n, do_jump, skipped):
    if do_jump and skipped:
        out.dq[~(_f32(refs.gain) > 0)] |= _U_BADGAIN
    out.n_jumps = int(n)
    out.jump_skipped = bool(do_jump and skipped)
    return out


_NO_CUBE = (np.zeros((1, 1, 1), np.float32), np.zeros((1, 1, 1), np.uint8),
            np.zeros((1, 1), np.uint32))


def _fused(ramp, refs: ReferenceArrays, timing: RampTiming, params: Detector1Params,
           geometry: SubarrayGeometry | None, parallel: bool) -> RateResult:
    ng, ny, nx = ramp.shape
    if ramp.dtype != np.uint16:
        ramp = np.ascontiguousarray(ramp, np.float32)
    p = params
    calib, (do_sat, satidx, psat, thresh, bias_sat, mean0, last2, nreads1) = _calib_setup(
        ramp, refs, timing, p, geometry)
    # jump mode
    do_jump = p.jump.enabled
    skipped = False
    single = False
    if do_jump:
        n_all_dnu = 0
        if do_sat:
            n_all_dnu = int(_count_all_dnu_groups_fused(
                ramp, satidx, psat, p.saturation.n_pix_grow_sat, thresh, bias_sat, mean0, last2,
                np.float32(nreads1), p.saturation.use_readpatt))
        skipped, single = _jump.jump_mode(ng, n_all_dnu, p.jump)
    out = _empty_result(ny, nx)
    fit = _fit_args(refs, timing, p, do_jump and not skipped, single, out)
    n = _run_bands(ramp, False, *_NO_CUBE, calib, fit, parallel)
    return _finish(out, refs, n, do_jump, skipped)


def _fused_hooked(ramp, refs: ReferenceArrays, timing: RampTiming, params: Detector1Params,
                  geometry: SubarrayGeometry | None, group_hook: Callable,
                  parallel: bool) -> RateResult:
    """The fused kernel around a group hook that runs before jump: dq_init .. dark into
    a cube (:func:`_calibrate_cube`), the hook on it, then jump + ramp fit in one pass
    over the rows (:func:`_fused_band` with ``pre``); same results as the step path."""
    ng, ny, nx = ramp.shape
    if ramp.dtype != np.uint16:
        ramp = np.ascontiguousarray(ramp, np.float32)
    p = params
    calib, _ = _calib_setup(ramp, refs, timing, p, geometry)
    groups = np.empty((ng, ny, nx), np.float32)
    gdq = np.empty((ng, ny, nx), np.uint8)
    pdq = np.empty((ny, nx), np.uint32)
    _calibrate_cube(ramp, *calib, groups, gdq, pdq)
    groups, hook_var = _hook_output(group_hook(groups, gdq, pdq))
    if groups.shape != ramp.shape:
        raise ValueError(f"detector1: group_hook returned shape {groups.shape}, "
                         f"expected {ramp.shape}")
    do_jump = p.jump.enabled
    skipped = single = False
    if do_jump:
        skipped, single = _jump.jump_mode(ng, int(_jump.count_all_dnu_groups(gdq)), p.jump)
    out = _empty_result(ny, nx)
    fit = _fit_args(refs, timing, p, do_jump and not skipped, single, out)
    n = _run_bands(groups, True, groups, gdq, pdq, calib, fit, parallel)
    _finish(out, refs, n, do_jump, skipped)
    if hook_var is not None:
        add_model_variance(out, hook_var, timing.ngroups, timing.tgroup)
    return out


def run_detector1(ramp, refs: ReferenceArrays, timing: RampTiming,
                  params: Detector1Params = Detector1Params(),
                  geometry: SubarrayGeometry | None = None,
                  group_hook: Callable | None = None, *, fused: bool = True,
                  parallel: bool = False) -> RateResult:
    """Raw ramp of one integration -> rate images.

    Parameters
    ----------
    ramp : uint16, (ngroups, ny, nx), DN, raw
    refs : ReferenceArrays, cut to the subarray
    timing : RampTiming
    params : Detector1Params
    geometry : SubarrayGeometry or None (None: no reference-pixel correction)
    group_hook : callable ``(groups, groupdq, pixeldq) -> groups`` or None
        Group-level correction (1/f cleaning). Runs after dark_current and *before*
        jump detection, unless the hook has an attribute ``before_jump = False``
        (then between jump and ramp fit, the order before issue 13). A hook before
        jump runs inside the fused path (calibration into a cube, the hook, then jump
        and ramp fit fused); one after jump forces the step-by-step path.
    fused : bool
        Use the fused kernel (default); False runs the steps one by one (the reference
        the fused kernel is tested against: identical results).
    parallel : bool
        Fused kernel over row bands on the numba thread pool (the hook itself runs on
        the calling thread).

    Returns
    -------
    RateResult
    """
    _check_inputs(ramp, refs, timing)
    if not params.ramp_fit.enabled:
        raise ValueError("detector1: ramp_fit.enabled=False has no rate output; "
                         "use calibrate_groups() for the groups")
    if group_hook is None and fused:
        return _fused(ramp, refs, timing, params, geometry, parallel)
    before = group_hook is not None and bool(getattr(group_hook, "before_jump", True))
    if before and fused:
        return _fused_hooked(ramp, refs, timing, params, geometry, group_hook, parallel)
    groups, gdq, pdq, info = calibrate_groups(ramp, refs, timing, params, geometry,
                                              group_hook if before else None)
    hook_var = info["hook_var"]
    if group_hook is not None and not before:
        groups, hook_var = _hook_output(group_hook(groups, gdq, pdq))
        if groups.shape != ramp.shape:
            raise ValueError(f"detector1: group_hook returned shape {groups.shape}, "
                             f"expected {ramp.shape}")
    res = fit_ramps(groups, gdq, pdq, refs, timing, params)
    if hook_var is not None:
        add_model_variance(res, hook_var, timing.ngroups, timing.tgroup)
    res.n_jumps = info["n_jumps"]
    res.jump_skipped = info["jump_skipped"]
    return res


# ---------------------------------------------------------------------------------------
# Beam layer


#: Environment variable: "1" makes :func:`calibrate_record` run the fused kernel on the
#: numba thread pool (``NUMBA_NUM_THREADS`` threads) when its caller does not say.
PARALLEL_ENV = "NIRBEAM_DETECTOR1_PARALLEL"


def default_parallel() -> bool:
    """Whether :func:`calibrate_record` uses numba threads by default: only when
    ``NIRBEAM_DETECTOR1_PARALLEL=1`` (measured on the shared 2-core development machine,
    threads cost more CPU and wall time than they save; see docs/notes/issue-14.md), and
    there is more than one numba thread."""
    import os

    if os.environ.get(PARALLEL_ENV, "0").strip() != "1":
        return False
    from numba import get_num_threads

    return get_num_threads() > 1


def _calibrate_record(rec, refs, params, group_hook, parallel=None):
    if rec.stage != "ramp" or rec.ramp is None:
        raise ValueError(f"detector1: {rec.key} has stage {rec.stage!r} / no ramp; expected "
                         "stage 'ramp' with a uint16 (ngroups, ny, nx) ramp")
    if parallel is None:
        parallel = default_parallel()
    ramp, geometry = rec.ramp, SubarrayGeometry.from_meta(rec.meta)
    if _irs2.needs_correction(rec.meta, ramp):  # IRS2: its own reference step (issue 15)
        ramp = _irs2.correct_ramp(ramp, refs if params.refpix.enabled else None, rec.meta)
        geometry = None
    res = run_detector1(ramp, refs, RampTiming.from_meta(rec.meta), params, geometry,
                        group_hook, parallel=parallel)
    prov = f"{params.describe()}; jumps={res.n_jumps}"
    if res.jump_skipped:
        prov += "; jump skipped (fewer than minimum_groups usable groups)"
    out = rec.replace(stage="rateints", ramp=None, groupdq=None, pixeldq=None, rate=res.rate,
                      err=res.err, dq=res.dq, var_poisson=res.var_poisson,
                      var_rnoise=res.var_rnoise)
    return out.with_step("detector1", prov), res


def calibrate_record(rec, refs: ReferenceArrays, params: Detector1Params = Detector1Params(),
                     group_hook: Callable | None = None, *, parallel: bool | None = None):
    """An ``IntegrationRecord`` of stage ``ramp`` -> a record of stage ``rateints``.

    Timing and subarray geometry come from ``rec.meta``; rate, err, dq, var_poisson,
    var_rnoise are set, the ramp (and any group/pixel DQ) dropped, and
    ``("detector1", parameters; jumps=N)`` appended to the provenance. ``parallel``:
    the fused kernel over row bands on the numba threads (identical results); None
    follows :func:`default_parallel`.
    """
    return _calibrate_record(rec, refs, params, group_hook, parallel)[0]


@dataclass(frozen=True)
class _Detector1Fn:
    """Record function for :class:`~nirbeam.transforms.common.RecordStep` (picklable)."""

    refs_for: Callable
    params: Detector1Params
    hook_for: Callable | None = None

    def __call__(self, rec):
        from apache_beam.metrics import Metrics

        hook = self.hook_for(rec.meta) if self.hook_for is not None else None
        out, res = _calibrate_record(rec, self.refs_for(rec.meta), self.params, hook)
        Metrics.counter("nirbeam", "detector1.jumps").inc(res.n_jumps)
        if res.jump_skipped:
            Metrics.counter("nirbeam", "detector1.jump_skipped").inc()
        return out


def _beam_ptransform():
    import apache_beam as beam

    return beam.PTransform


@dataclass
class Detector1(_beam_ptransform()):
    """Beam PTransform: ``ramp`` records -> ``rateints`` records (+ ``deadletter`` tag).

    Parameters
    ----------
    refs_for : callable ``meta -> ReferenceArrays``
    params : Detector1Params
    hook_for : optional callable ``meta -> group_hook`` (e.g. 1/f cleaning)

    The output is :class:`~nirbeam.transforms.common.RecordStep`'s: ``.records`` and
    ``.deadletter``. Counters (namespace ``nirbeam``): ``detector1.records``,
    ``detector1.deadletters``, ``detector1.jumps``, ``detector1.jump_skipped``.
    """

    refs_for: Callable
    params: Detector1Params = field(default_factory=Detector1Params)
    hook_for: Callable | None = None

    def __post_init__(self):
        super().__init__(label="Detector1")

    def expand(self, pcoll):
        from nirbeam.transforms.common import RecordStep

        return pcoll | RecordStep(_Detector1Fn(self.refs_for, self.params, self.hook_for),
                                  "detector1")
