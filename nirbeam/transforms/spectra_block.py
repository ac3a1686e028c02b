"""Extraction of a block of integrations in one numba call (batch stage 2).

:func:`extract_block` gives, for each integration of a block, what
:func:`nirbeam.transforms.spectra.extract_integration` gives for it (bit for bit: the same
float64 expressions in the same order, tested), without the per-integration Python: the
float32 -> float64 conversions, the variance fallback to ``err**2``, the box and optimal
kernels and the Poisson / read-noise split of the variance run in one compiled loop over
the block. The per-exposure arrays (aperture weights, trace centre, profile) are prepared
once per block.

Rate-level 1/f cleaning (``flicker.level == "rate"``) is not in the kernel: with it,
:func:`extract_block` calls :func:`extract_integration` for each integration.

numpy + numba; no Beam.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from nirbeam.transforms.extract_box import box_kernel, box_outputs
from nirbeam.transforms.extract_common import aperture_weights_fast, trace_center
from nirbeam.transforms.extract_optimal import optimal_kernel
from nirbeam.transforms.outliers import in_parts

__all__ = ["extract_block", "block_kernel_applies"]

#: Optimal extraction's rejection passes (``optimal_extract``'s default ``max_iter``).
MAX_ITER = 20


@njit(cache=True, error_model="numpy", nogil=True)
def _extract_block_kernel(sci, err, dq, vp_in, vr_in, use, W, prof, center, has_bkg, inner,
                          outer, bad_bits, optimal, do_clip, thr, max_iter,
                          flux, ferr, fvp, fvr, fdq, npix, bkg_out, box_flux, box_ferr):  # pragma: no cover - compiled
    """Every integration ``i`` with ``use[i]``: ``extract_integration`` into row ``i`` of
    the outputs (rows of the others are left as they are)."""
    n, ny, nx = sci.shape
    r = np.empty((ny, nx))
    v = np.empty((ny, nx))
    vp = np.empty((ny, nx))
    vr = np.empty((ny, nx))
    bflux, bferr, bflag, bnpix, bkg, bvar = box_outputs(nx)
    oflux = np.empty(nx)
    oferr = np.empty(nx)
    oflag = np.empty(nx, np.uint32)
    onpix = np.empty(nx)
    sp = np.empty(nx)
    sr = np.empty(nx)
    for i in range(n):
        if not use[i]:
            continue
        d = dq[i]
        for y in range(ny):
            for x in range(nx):
                r[y, x] = np.float64(sci[i, y, x])
                a = np.float64(vp_in[i, y, x])
                b = np.float64(vr_in[i, y, x])
                vp[y, x] = a
                vr[y, x] = b
                t = a + b
                if (not math.isfinite(t)) or t <= 0:
                    e = np.float64(err[i, y, x])
                    t = e * e  # np.float64 ** 2 is a square
                v[y, x] = t
        box_kernel(r, v, d, W, prof, True, center, has_bkg, inner, outer, bad_bits, True,
                   bflux, bferr, bflag, bnpix, bkg, bvar, True)
        if optimal:
            optimal_kernel(r, v, d, prof, bkg, bvar, True, vr, vp, True, do_clip, thr,
                           max_iter, bad_bits, oflux, oferr, oflag, onpix)
        else:
            oflux[:] = bflux
            oferr[:] = bferr
            oflag[:] = bflag
            onpix[:] = bnpix
        # np.nansum(w * w * where(isfinite(v), v, 0), axis=0): rows in order
        sp[:] = 0.0
        sr[:] = 0.0
        for y in range(ny):
            for x in range(nx):
                p = prof[y, x]
                pp = p * p
                a = vp[y, x]
                b = vr[y, x]
                ta = pp * (a if math.isfinite(a) else 0.0)
                tb = pp * (b if math.isfinite(b) else 0.0)
                sp[x] += ta if ta == ta else 0.0  # nansum: a NaN term adds nothing
                sr[x] += tb if tb == tb else 0.0
        for x in range(nx):
            s = sp[x] + sr[x]
            frac = sp[x] / s if s > 0 else 0.5
            fe = oferr[x]
            fe2 = fe * fe
            flux[i, x] = oflux[x]
            ferr[i, x] = fe
            fvp[i, x] = fe2 * frac
            fvr[i, x] = fe2 * (1 - frac)
            fdq[i, x] = oflag[x]
            npix[i, x] = onpix[x]
            bkg_out[i, x] = bkg[x]
            box_flux[i, x] = bflux[x]
            box_ferr[i, x] = bferr[x]


def block_kernel_applies(model, flicker=None) -> bool:
    """Whether :func:`extract_block` runs the compiled loop (no rate-level cleaning)."""
    return not (flicker is not None and flicker.enabled and flicker.level == "rate")


def extract_block(sci, err, dq, var_poisson, var_rnoise, model, flicker, use, out, *,
                  pool=None, parts: int = 1) -> None:
    """``extract_integration`` of every integration ``i`` with ``use[i]``, into row ``i`` of
    ``out`` (a dict of (n, nx) arrays named as ``SPECTRUM_ARRAYS``; other rows untouched).

    Parameters
    ----------
    sci, err, var_poisson, var_rnoise : float, (n, ny, nx)
    dq : uint32, (n, ny, nx)
    model : ExtractionModel
    flicker : FlickerParams or None
    use : bool, (n,)
    out : dict of float64 / uint32 (n, nx) arrays, C-contiguous
    pool, parts : executor (``submit``) and int, optional
        Run the compiled loop on ``parts`` runs of consecutive integrations on ``pool``'s
        threads (it releases the GIL); each integration is extracted as serially, into
        its own rows: the same result bit for bit whatever ``parts``.
    """
    from nirbeam.transforms.spectra import BAD_BITS, extract_integration

    use = np.asarray(use, np.bool_)
    if not block_kernel_applies(model, flicker):
        for i in np.flatnonzero(use):
            row = extract_integration(sci[i], err[i], dq[i], var_poisson[i], var_rnoise[i],
                                      model, flicker)
            for k, v in row.items():
                out[k][i] = v
        return
    sci = np.ascontiguousarray(sci)
    n, ny, nx = sci.shape
    prof = np.ascontiguousarray(model.profile, np.float64)
    W = aperture_weights_fast(model.trace, (ny, nx), model.half_width)
    bg = model.background_region
    inner, outer = (float(bg[0]), float(bg[1])) if bg is not None else (0.0, 0.0)
    sig = model.sigma_clip
    err = np.ascontiguousarray(err)
    dq = np.ascontiguousarray(dq, np.uint32)
    vp, vr = np.ascontiguousarray(var_poisson), np.ascontiguousarray(var_rnoise)
    center = trace_center(model.trace, nx)
    outs = [out[k] for k in ("flux", "flux_error", "flux_var_poisson", "flux_var_rnoise",
                             "dq", "npixels", "background", "box_flux", "box_flux_error")]

    def run(a, b):  # integrations a..b-1: row slices (views) of every input and output
        _extract_block_kernel(
            sci[a:b], err[a:b], dq[a:b], vp[a:b], vr[a:b], use[a:b],
            W, prof, center, bg is not None, inner, outer,
            np.uint32(BAD_BITS), model.method == "optimal", sig is not None,
            0.0 if sig is None else float(sig) ** 2, MAX_ITER, *(o[a:b] for o in outs))

    in_parts(run, n, pool, max(1, int(parts)) if pool is not None else 1)
