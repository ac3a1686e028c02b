"""detector1 on a full frame in column bands (DMS x), for a worker's memory (issue 15).

A 20-group full frame is 335 MB per float32 cube; :func:`nirbeam.transforms.detector1.
run_detector1` holds the input, a calibrated cube, the group DQ and (with 1/f cleaning)
the hook's output cube at once, besides full-frame references. Here every step that is
local in DMS x runs on one band of columns at a time (a copy of the band, its references
cut to it):

* dq_init .. dark_current (:func:`~nirbeam.transforms.detector1.calibrate_groups` with
  jump off), jump (:func:`~nirbeam.transforms.jump.detect_jumps`) and ramp fitting
  (:func:`~nirbeam.transforms.detector1.fit_ramps`) per band, with ``halo`` extra columns
  on each side (saturation growth reaches ``n_pix_grow_sat`` pixels, jump neighbour flags
  one more; the halo's results are dropped);
* a group hook (1/f cleaning) is not local in x: its column models use the whole DMS
  column (all y), sparse columns take their neighbours' models and its error term uses
  frame-wide statistics. It runs on the whole calibrated cube, written in place into the
  input (``overwrite_input``), with the whole group DQ.

Which axis is independent: NIRSpec reads the detector's rows along DMS y, so 1/f noise
is constant along a DMS column; banding in DMS y would cut the columns the cleaning fits,
banding in x keeps them whole.

The results equal the step-by-step path (``run_detector1(..., fused=False)``, itself
equal to the fused kernel) exactly: tested in ``tests/test_irs2_bands.py``. One case is
not local: jump's mode (skip, single pass) counts the groups that are DO_NOT_USE in every
pixel of the frame; a band with such a group would count it where the frame does not, so
then the whole frame runs unbanded (:func:`run_detector1`; with a hook, whose input is
already overwritten, jump runs on the whole frame instead), as it does for frames not
wider than one band.

Used for IRS2 full frames after the IRS2 reference step (no traditional reference-pixel
correction: ``geometry`` is None), from :class:`nirbeam.stream.rate_steps.Calibrate`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from nirbeam import dqflags
from nirbeam.transforms import jump as _jump
from nirbeam.transforms.detector1 import (
    Detector1Params,
    RampTiming,
    RateResult,
    add_model_variance,
    calibrate_groups,
    fit_ramps,
    run_detector1,
)
from nirbeam.transforms.reference import ReferenceArrays

__all__ = ["run_detector1_bands", "cut_columns", "BAND"]

BAND = 256
"""Default band width (columns): 20 groups x 2048 rows x 256 columns float32 is 42 MB."""


def cut_columns(refs: ReferenceArrays, a: int, b: int) -> ReferenceArrays:
    """The references of columns ``a:b`` (numpy arrays: views; cubes cut along their last
    axis). A cube may be an array-like that reads on indexing (a zarr array the worker
    left in the store): then only the band's columns are read."""
    def cut(v):
        return np.asarray(v[..., a:b])

    return dataclasses.replace(
        refs, **{f.name: cut(getattr(refs, f.name)) for f in dataclasses.fields(refs)
                 if getattr(getattr(refs, f.name), "ndim", 0) >= 2})


class _NotLocal(Exception):
    """A column has a group that is DO_NOT_USE in every pixel (jump mode is frame-wide)."""


def _is_local(q) -> bool:
    """False when some column of the band has a group DO_NOT_USE in all its pixels: then
    a band (or a halo column counted alone) could see a jump mode the frame does not."""
    return not ((q & np.uint8(dqflags.DO_NOT_USE)) != 0).all(axis=1).any()


def _jumps(g, q, p, rb, timing, params, lo: int, hi: int) -> int:
    """Jump detection on a band (in place); returns the primary jumps of columns
    ``lo:hi`` (the band without its halo: the halo columns' own primaries, counted by
    running them alone, are taken off)."""
    jp = params.jump
    halo_n = 0
    for c0, c1 in ((0, lo), (hi, g.shape[2])):
        if c1 > c0:
            qh = np.ascontiguousarray(q[:, :, c0:c1])
            ph = np.ascontiguousarray(p[:, c0:c1])
            n, _ = _jump.detect_jumps(np.ascontiguousarray(g[:, :, c0:c1]), qh, ph,
                                      rb.readnoise[:, c0:c1], rb.gain[:, c0:c1],
                                      timing.nframes, dataclasses.replace(
                                          jp, flag_4_neighbors=False))
            halo_n += n
    n, _ = _jump.detect_jumps(g, q, p, rb.readnoise, rb.gain, timing.nframes, jp)
    return n - halo_n


def run_detector1_bands(ramp: np.ndarray, refs: ReferenceArrays, timing: RampTiming,
                        params: Detector1Params | None = None,
                        group_hook: Callable | None = None, *, band: int = BAND,
                        halo: int | None = None, overwrite_input: bool = False,
                        parallel: bool = False) -> RateResult:
    """detector1 (no reference-pixel step) on one integration, in column bands.

    Parameters
    ----------
    ramp : float32 or uint16, (ngroups, ny, nx), DN, or a one-element list holding it
        E.g. the output of :func:`nirbeam.transforms.irs2.subtract_reference_irs2`. A list
        is emptied: with ``overwrite_input`` the cube is then freed as soon as the group
        hook has returned its own (the caller's list no longer holds it).
    refs, timing, params, group_hook
        As :func:`~nirbeam.transforms.detector1.run_detector1` (``geometry`` None;
        ``params`` None: the defaults).
    band : int
        Columns per band.
    halo : int or None
        Extra columns each side (None: ``n_pix_grow_sat + 1``: a halo column's saturation
        needs the growth from ``n_pix_grow_sat`` columns further out, and its jumps flag
        their neighbours one column in).
    overwrite_input : bool
        With a group hook: write the calibrated groups into ``ramp`` (float32) instead of
        a new cube (the caller does not need the input afterwards).
    parallel : bool
        For the unbanded fallback only.

    Returns
    -------
    RateResult (``n_jumps``: primary jumps of the frame, as unbanded)
    """
    params = Detector1Params() if params is None else params
    holder = ramp if isinstance(ramp, list) else [ramp]
    ng, ny, nx = holder[0].shape
    if not params.ramp_fit.enabled:
        raise ValueError("detector1: ramp_fit.enabled=False has no rate output")
    if refs.shape != (ny, nx):
        raise ValueError(f"detector1: references are {refs.shape}, ramp is {(ny, nx)}")
    if halo is None:  # growth reaches n_pix_grow_sat columns, a halo column's jumps one more
        halo = int(params.saturation.n_pix_grow_sat) + 1
    if nx > band:
        try:
            return _banded(holder, refs, timing, params, group_hook, band, halo,
                           overwrite_input)
        except _NotLocal:
            pass
    return run_detector1(holder.pop(), refs, timing, params, None, group_hook,
                         parallel=parallel)


def _banded(holder, refs, timing, params, hook, band, halo, overwrite):
    ramp = holder[0]
    ng, ny, nx = ramp.shape
    p = params
    do_jump = p.jump.enabled
    before = hook is not None and bool(getattr(hook, "before_jump", True))
    no_jump = dataclasses.replace(p, jump=dataclasses.replace(p.jump, enabled=False))
    out = RateResult(*(np.zeros((ny, nx), t) for t in
                       (np.float32, np.float32, np.uint32, np.float32, np.float32)))
    bands = [(x0, min(nx, x0 + band)) for x0 in range(0, nx, band)]

    def window(x0, x1):
        a, b = max(0, x0 - halo), min(nx, x1 + halo)
        return a, b, x0 - a, x1 - a

    def place(res, x0, x1, i0, i1):
        for name in ("rate", "err", "dq", "var_poisson", "var_rnoise"):
            getattr(out, name)[:, x0:x1] = getattr(res, name)[:, i0:i1]

    n_jumps = 0
    if hook is None:
        for x0, x1 in bands:
            a, b, i0, i1 = window(x0, x1)
            rb = cut_columns(refs, a, b)
            g, q, pq, _ = calibrate_groups(np.ascontiguousarray(ramp[:, :, a:b]), rb, timing,
                                           no_jump)
            if not _is_local(q):
                raise _NotLocal  # nothing written yet into the input: run unbanded
            if do_jump:
                n_jumps += _jumps(g, q, pq, rb, timing, p, i0, i1)
            place(fit_ramps(g, q, pq, rb, timing, p), x0, x1, i0, i1)
            del g, q, pq
        holder.clear()
        out.n_jumps = n_jumps
        out.jump_skipped = do_jump and _jump.jump_mode(ng, 0, p.jump)[0]
        return out
    # with a hook: calibrate band by band into one cube, the hook on the frame, jump
    # (banded, or on the frame when the jump mode is not local), ramp fit banded
    if overwrite and ramp.dtype == np.float32 and ramp.flags.writeable:
        cube = ramp  # the next band's left halo is kept raw in ``tail`` before it is written
    else:
        cube = np.empty((ng, ny, nx), np.float32)
    gdq = np.empty((ng, ny, nx), np.uint8)
    pdq = np.empty((ny, nx), np.uint32)
    local = True
    tail = None
    for x0, x1 in bands:
        a, b, i0, i1 = window(x0, x1)
        rb = cut_columns(refs, a, b)
        sub = np.empty((ng, ny, b - a), ramp.dtype)
        if tail is not None:
            sub[:, :, :x0 - a] = tail
            sub[:, :, x0 - a:] = ramp[:, :, x0:b]
        else:
            sub[:] = ramp[:, :, a:b]
        tail = ramp[:, :, max(x0, x1 - halo):x1].copy() if cube is ramp else None
        g, q, pq, _ = calibrate_groups(sub, rb, timing, no_jump)
        del sub
        local = local and _is_local(q)
        cube[:, :, x0:x1] = g[:, :, i0:i1]
        gdq[:, :, x0:x1] = q[:, :, i0:i1]
        pdq[:, x0:x1] = pq[:, i0:i1]
        del g, q, pq
    del tail, ramp
    holder.clear()  # the caller's list no longer holds the input

    skipped = do_jump and _jump.jump_mode(ng, 0, p.jump)[0]

    def jump_pass(groups) -> int:
        nonlocal skipped
        if not do_jump:
            return 0
        if not local:  # the frame's jump mode: jump on the whole frame, in place
            n, skipped = _jump.detect_jumps(groups, gdq, pdq, refs.readnoise, refs.gain,
                                            timing.nframes, p.jump)
            return n
        n = 0
        tq = tp = None
        for x0, x1 in bands:
            a, b, i0, i1 = window(x0, x1)
            rb = cut_columns(refs, a, b)
            q = np.ascontiguousarray(gdq[:, :, a:b])
            pq = np.ascontiguousarray(pdq[:, a:b])
            if tq is not None:  # the left halo as it was before the previous band's jumps
                q[:, :, :x0 - a], pq[:, :x0 - a] = tq, tp
            tq = gdq[:, :, max(x0, x1 - halo):x1].copy()
            tp = pdq[:, max(x0, x1 - halo):x1].copy()
            n += _jumps(np.ascontiguousarray(groups[:, :, a:b]), q, pq, rb, timing, p, i0, i1)
            gdq[:, :, x0:x1] = q[:, :, i0:i1]
            pdq[:, x0:x1] = pq[:, i0:i1]
        return n

    if not before:
        n_jumps += jump_pass(cube)
    res = hook(cube, gdq, pdq)
    groups, hook_var = res if isinstance(res, tuple) else (res, None)
    del res, cube  # freed here unless the hook returned it
    groups = np.ascontiguousarray(groups, np.float32)
    if groups.shape != (ng, ny, nx):
        raise ValueError(f"detector1: group_hook returned shape {groups.shape}, "
                         f"expected {(ng, ny, nx)}")
    if before:
        n_jumps += jump_pass(groups)
    for x0, x1 in bands:
        place(fit_ramps(groups[:, :, x0:x1], gdq[:, :, x0:x1], pdq[:, x0:x1],
                        cut_columns(refs, x0, x1), timing, p), x0, x1, 0, x1 - x0)
    if hook_var is not None:
        add_model_variance(out, hook_var, timing.ngroups, timing.tgroup)
    out.n_jumps = n_jumps
    out.jump_skipped = bool(skipped)
    return out
