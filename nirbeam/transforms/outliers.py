"""Per-integration outlier rejection along time (jwst ``outlier_detection`` TSO mode).

For every pixel, the median over a window of ``window`` integrations (default 25) is
the reference; an integration's pixel is flagged ``DO_NOT_USE | OUTLIER`` when
``|x - median| > n_sigma * err`` (default 5), as jwst's ``flag_crs``. Data are never
modified; only DQ gains bits, and only on flagged pixels.

Window and edges
----------------
Integrations are indexed ``j = 0..n-1`` in order. The window of ``j`` is
``[s, s + window)`` with ``s = clip(j - window // 2, 0, n - window)``: centred (for
odd ``window``) away from the ends and *shifted* (not truncated) at the ends, so every
integration is compared with a full window — the same edge behaviour as jwst's
``moving_median_over_zeroth_axis`` (edges take the value of the first/last full
window). With ``n <= window`` the window is all integrations (jwst: plain median).
The pixel itself is part of its window, as in jwst.

Differences from jwst
---------------------
* Pixels with DO_NOT_USE (``bad_bits``) or non-finite data are *ignored* in the
  median (NaN-median); jwst puts NaN there and ``np.median`` then returns NaN for the
  whole window, so nothing is flagged in that pixel for up to ``window`` integrations.
* Pixels already DO_NOT_USE, or with non-finite data or err, are not flagged again.

Two forms with identical results: :func:`flag_outliers` on an in-memory stack, and
:class:`RollingOutlierFlagger`, which holds only a bounded buffer of integrations
(optionally a band of rows) and releases each integration once its window has arrived.
Both keep every pixel's window sorted and slide it (remove the integration leaving,
insert the one entering: O(window) per pixel and integration, numba); the median of
the same set of values is the same float whichever way it is found, and the test-suite
checks flags against a plain ``np.nanmedian`` reference and batch against streaming.

numpy + numba; no Beam imports.

Size note: over 600 lines on purpose: the batch and streaming outlier flaggers and the motion reference they share (batch == streaming flags is a test),
the reference in numba passes and its numpy form beside it (numba == numpy flags is a test).
"""

from __future__ import annotations

import numba
import numpy as np

from nirbeam import dqflags
from nirbeam.transforms._select import select_kth

__all__ = [
    "OUTLIER_BITS",
    "REFERENCES",
    "motion_reference",
    "motion_reference_numpy",
    "RollingOutlierFlagger",
    "flag_outliers",
    "in_parts",
    "nanmedian_axis0",
    "window_bounds",
    "window_median",
]

#: Bits set on a flagged pixel (jwst: DO_NOT_USE | OUTLIER).
OUTLIER_BITS = dqflags.DO_NOT_USE | dqflags.OUTLIER


@numba.njit(cache=True)
def _window_median(stack, valid):  # pragma: no cover - compiled
    # serial on purpose: Beam runs one worker per core, and the omp pool spins badly
    # on a loaded 2-core machine (measured 2-3x slower than serial there)
    w, ny, nx = stack.shape
    out = np.empty((ny, nx), np.float64)
    buf = np.empty(w, np.float64)
    for y in range(ny):
        for x in range(nx):
            n = 0
            for k in range(w):
                if valid[k, y, x]:
                    buf[n] = np.float64(stack[k, y, x])
                    n += 1
            if n == 0:
                out[y, x] = np.nan
            else:
                h = n // 2
                upper = select_kth(buf, n, h)
                if n % 2 == 1:
                    out[y, x] = upper
                else:
                    lower = buf[0]
                    for i in range(1, h):
                        if buf[i] > lower:
                            lower = buf[i]
                    out[y, x] = 0.5 * (lower + upper)
    return out


@numba.njit(cache=True, inline="always", error_model="numpy")
def _slide_window(a, b, o, v, window):  # pragma: no cover - compiled
    """One pixel's slide, from its sorted window ``a`` into ``b`` (both (window + 2,),
    ``-inf`` first, ``+inf`` below the values): remove ``o`` (the first equal value; ``+inf``:
    nothing leaves) and insert ``v`` (after the equal values; ``+inf``: nothing enters).
    With ``a'`` the window without ``o``, ``a'[k] = a[k] if a[k] < o else a[k + 1]`` and
    ``b[k] = a'[k] if a'[k] <= v else (a'[k - 1] if a'[k - 1] > v else v)``: selects over
    ``k`` with no data-dependent branch, so the loop vectorises. The streaming flagger's
    slide (:func:`_slide_frame`); the batch flagger's :func:`_slide_rows` makes the same
    selects with its loops turned round (pixels inside)."""
    for k in range(1, window + 1):
        am = a[k - 1]
        ak = a[k]
        ap = a[k + 1]
        t0 = am if am < o else ak  # a'[k - 1]
        t1 = ak if ak < o else ap  # a'[k]
        b[k] = t1 if t1 <= v else (t0 if t0 > v else v)


@numba.njit(cache=True, error_model="numpy")
def _slide_rows(A, B, cnt, cube, valid, ps, pe, y, nx, o, v):  # pragma: no cover - compiled
    """The batch slide of row ``y``: every pixel's window, from ``A`` into ``B`` (both
    (window + 2, nx), the windows down the columns: ``-inf`` first, ascending, ``+inf``
    below the values), removes integration ``ps`` (``ps < 0``: none) and inserts ``pe``
    (``pe < 0``: none). The selects of :func:`_slide_window` (same operations on the same
    values, so the same windows element for element), with ``k`` outside and the row's
    pixels inside: the inner loop runs over ``nx`` contiguous values (``o``, ``v``: (nx,)
    scratch for what leaves and enters each pixel's window)."""
    for x in range(nx):
        ox = np.inf
        vx = np.inf
        if ps >= 0 and valid[ps, y, x]:
            ox = cube[ps, y, x]
            cnt[x] -= 1
        if pe >= 0 and valid[pe, y, x]:
            vx = cube[pe, y, x]
            cnt[x] += 1
        o[x] = ox
        v[x] = vx
    for k in range(1, A.shape[0] - 1):
        am = A[k - 1]
        ak = A[k]
        ap = A[k + 1]
        bk = B[k]
        for x in range(nx):
            ox = o[x]
            vx = v[x]
            t0 = am[x] if am[x] < ox else ak[x]  # a'[k - 1]
            t1 = ak[x] if ak[x] < ox else ap[x]  # a'[k]
            bk[x] = t1 if t1 <= vx else (t0 if t0 > vx else vx)


@numba.njit(cache=True, nogil=True)
def _flag_rolling(cube, err, valid, dq, window, n_sigma, bits, store, med_out, start, stop):  # pragma: no cover - compiled
    """Batch kernel: ``dq`` (as uint32) with the flags of :func:`_flag_rolling_rows` over
    every row."""
    out = dq.astype(np.uint32)
    _flag_rolling_rows(cube, err, valid, out, window, n_sigma, bits, store, med_out, start,
                       stop, 0, cube.shape[1])
    return out


@numba.njit(cache=True, nogil=True)
def _flag_rolling_rows(cube, err, valid, out, window, n_sigma, bits, store, med_out, start,
                       stop, y0, y1):  # pragma: no cover - compiled
    """Batch kernel: per row ``y0 <= y < y1``, keep every pixel's window sorted while
    sliding in time; flags are OR-ed into ``out`` (uint32, the cube's shape). Each row is
    independent of the others (its own windows, reset per row): rows may be split among
    threads with the same result.

    Only integrations ``start <= j < stop`` are flagged (``stop = -1``: to the end);
    their windows are those of the whole stack. With ``store``, the window median of
    every (integration, pixel) of the span goes to ``med_out`` ((stop - start, ny, nx),
    row ``j - start``; NaN where the window has no valid value) and nothing is flagged
    here. The windows of a row slide together (:func:`_slide_rows`: one integration
    leaves and one enters each step; the first window is filled by insertions alone).
    The windows hold the cube's own values in its dtype (float32 for float32 cubes: half
    the bytes, twice the values per vector; exact, and ordered as their float64 values);
    a median is formed in float64 from them, as from float64 windows.
    """
    n, ny, nx = cube.shape
    if stop < 0 or stop > n:
        stop = n
    start = max(start, 0)
    w = max(window, 1)
    A = np.empty((w + 2, nx), cube.dtype)
    B = np.empty((w + 2, nx), cube.dtype)
    o = np.empty(nx, cube.dtype)
    v = np.empty(nx, cube.dtype)
    cnt = np.zeros(nx, np.int64)
    s0 = 0 if n <= window else min(max(start - window // 2, 0), n - window)
    for y in range(max(y0, 0), min(y1, ny)):
        A[:] = np.inf
        A[0] = -np.inf
        B[:] = A
        cnt[:] = 0
        ps = s0
        pe = s0
        for j in range(start, stop):
            if n <= window:
                s = 0
                e = n
            else:
                s = min(max(j - window // 2, 0), n - window)
                e = s + window
            while ps < s or pe < e:  # one leaves and one enters (or one side only)
                _slide_rows(A, B, cnt, cube, valid, ps if ps < s else -1,
                            pe if pe < e else -1, y, nx, o, v)
                A, B = B, A
                if ps < s:
                    ps += 1
                if pe < e:
                    pe += 1
            for x in range(nx):
                c = cnt[x]
                if store and c == 0:
                    med_out[j - start, y, x] = np.nan
                if c == 0 or not (valid[j, y, x] or store):
                    continue
                h = c // 2 + 1  # A[0, x] is the -inf sentinel
                if c % 2 == 1:
                    med = np.float64(A[h, x])
                else:
                    med = 0.5 * (np.float64(A[h - 1, x]) + np.float64(A[h, x]))
                if store:
                    med_out[j - start, y, x] = med
                    continue
                ev = np.float64(err[j, y, x])
                if np.isfinite(ev) and abs(np.float64(cube[j, y, x]) - med) > n_sigma * ev:
                    out[j, y, x] |= bits


@numba.njit(cache=True, error_model="numpy")
def _slide_frame(A, B, cnt, fo, vo, fi, vi, has_out, has_in):  # pragma: no cover - compiled
    """The streaming form of :func:`_slide_rows`: every pixel of a frame, remove ``fo``
    (where ``has_out`` and ``vo``) from its sorted window ``A[y, x]`` and insert ``fi``
    (where ``has_in`` and ``vi``), into ``B`` (both (ny, nx, window + 2), ``-inf``, the
    window ascending, ``+inf`` below its values)."""
    ny, nx, w2 = A.shape
    window = w2 - 2
    for y in range(ny):
        for x in range(nx):
            o = np.inf
            v = np.inf
            if has_out and vo[y, x]:
                o = np.float64(fo[y, x])
                cnt[y, x] -= 1
            if has_in and vi[y, x]:
                v = np.float64(fi[y, x])
                cnt[y, x] += 1
            _slide_window(A[y, x], B[y, x], o, v, window)


@numba.njit(cache=True)
def _flag_frame(buf, cnt, data, err, valid, dq, n_sigma, bits):  # pragma: no cover - compiled
    """New DQ of one integration against the current sorted windows."""
    ny, nx = data.shape
    out = dq.astype(np.uint32)
    for y in range(ny):
        for x in range(nx):
            c = cnt[y, x]
            if c == 0 or not valid[y, x]:
                continue
            h = c // 2 + 1  # buf[y, x, 0] is the -inf sentinel
            if c % 2 == 1:
                med = buf[y, x, h]
            else:
                med = 0.5 * (buf[y, x, h - 1] + buf[y, x, h])
            ev = np.float64(err[y, x])
            if np.isfinite(ev) and abs(np.float64(data[y, x]) - med) > n_sigma * ev:
                out[y, x] |= bits
    return out


@numba.njit(cache=True)
def _frame_median(buf, cnt):  # pragma: no cover - compiled
    """Median image of the current sorted windows (NaN where a window is empty)."""
    ny, nx = cnt.shape
    out = np.empty((ny, nx), np.float64)
    for y in range(ny):
        for x in range(nx):
            c = cnt[y, x]
            if c == 0:
                out[y, x] = np.nan
                continue
            h = c // 2 + 1  # buf[y, x, 0] is the -inf sentinel
            if c % 2 == 1:
                out[y, x] = buf[y, x, h]
            else:
                out[y, x] = 0.5 * (buf[y, x, h - 1] + buf[y, x, h])
    return out


@numba.njit(cache=True, nogil=True)
def _motion_setup(M, data, err, valid):  # pragma: no cover - compiled
    """dM/dy as ``np.gradient(M, axis=0)`` (NaN for one row), the column tilt ``u``, the
    pixels a fit may use and their weights ``1 / err**2`` (0 elsewhere; data and errors
    are read as float64 where they are used, not copied)."""
    ny, nx = M.shape
    G = np.empty((ny, nx), np.float64)
    if ny < 2:
        G[:] = np.nan
    else:
        for x in range(nx):
            G[0, x] = (M[1, x] - M[0, x]) / 1.0
            G[ny - 1, x] = (M[ny - 1, x] - M[ny - 2, x]) / 1.0
        for y in range(1, ny - 1):
            for x in range(nx):
                G[y, x] = (M[y + 1, x] - M[y - 1, x]) / 2.0
    u = np.empty(nx, np.float64)
    den = np.float64(max(nx - 1, 1))
    for x in range(nx):
        u[x] = np.float64(x) / den - 0.5
    w = np.zeros((ny, nx), np.float64)
    use = np.empty((ny, nx), np.bool_)
    for y in range(ny):
        for x in range(nx):
            dv = np.float64(data[y, x])
            ev = np.float64(err[y, x])
            ok = (valid[y, x] and np.isfinite(M[y, x]) and np.isfinite(G[y, x])
                  and np.isfinite(ev) and ev > 0 and np.isfinite(dv))
            use[y, x] = ok
            if ok:
                w[y, x] = 1.0 / ev ** 2
    return G, u, w, use


@numba.njit(cache=True, nogil=True)
def _motion_normal(M, G, u, data, w, use):  # pragma: no cover - compiled
    """Weighted normal equations of ``d ~ a M + b G + c G u`` over ``use`` (weights
    ``w = 1 / e**2``): (A^T W A, A^T W d, count), each term formed as numpy's
    ``(A * w[:, None]).T @ A`` forms it; summed in pixel order."""
    ny, nx = M.shape
    # the 12 sums in scalars (registers), each term and the order of the additions as
    # before: ata[i, j] += (a[i] * w) * a[j], atd[i] += (a[i] * w) * d, pixel order
    s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = 0.0
    t0 = t1 = t2 = 0.0
    n = 0
    for y in range(ny):
        for x in range(nx):
            if not use[y, x]:
                continue
            n += 1
            wv = w[y, x]
            dv = np.float64(data[y, x])
            a0 = M[y, x]
            a1 = G[y, x]
            a2 = G[y, x] * u[x]
            aw = a0 * wv
            s00 += aw * a0
            s01 += aw * a1
            s02 += aw * a2
            t0 += aw * dv
            aw = a1 * wv
            s10 += aw * a0
            s11 += aw * a1
            s12 += aw * a2
            t1 += aw * dv
            aw = a2 * wv
            s20 += aw * a0
            s21 += aw * a1
            s22 += aw * a2
            t2 += aw * dv
    ata = np.empty((3, 3), np.float64)
    ata[0, 0], ata[0, 1], ata[0, 2] = s00, s01, s02
    ata[1, 0], ata[1, 1], ata[1, 2] = s10, s11, s12
    ata[2, 0], ata[2, 1], ata[2, 2] = s20, s21, s22
    atd = np.empty(3, np.float64)
    atd[0], atd[1], atd[2] = t0, t1, t2
    return ata, atd, n


@numba.njit(cache=True, nogil=True)
def _motion_apply(M, G, u, data, err, use, c0, c1, c2, n_sigma, update):  # pragma: no cover - compiled
    """``ref = c0 M + (c1 + c2 u) Gz`` (Gz: G, 0 where not finite); with ``update``, drop
    from ``use`` the pixels beyond ``n_sigma * e`` and say whether any was dropped."""
    ny, nx = M.shape
    ref = np.empty((ny, nx), np.float64)
    changed = False
    for y in range(ny):
        for x in range(nx):
            g = G[y, x]
            gz = g if np.isfinite(g) else 0.0
            r = c0 * M[y, x] + (c1 + c2 * u[x]) * gz
            ref[y, x] = r
            if update and use[y, x]:
                ev = np.float64(err[y, x])
                lim = n_sigma * (ev if ev > 0 else np.inf)
                if not (abs(np.float64(data[y, x]) - r) <= lim):
                    use[y, x] = False
                    changed = True
    return ref, changed


@numba.njit(cache=True, nogil=True)
def _motion_flag(M, G, u, data, err, valid, dq, c0, c1, c2, n_sigma, bits):  # pragma: no cover - compiled
    """``_flag_against(data, err, valid, dq, ref)`` with the reference of
    :func:`_motion_apply` formed pixel by pixel (the same expression), not stored."""
    ny, nx = M.shape
    out = np.empty((ny, nx), np.uint32)
    for y in range(ny):
        for x in range(nx):
            g = G[y, x]
            gz = g if np.isfinite(g) else 0.0
            r = c0 * M[y, x] + (c1 + c2 * u[x]) * gz
            q = np.uint32(dq[y, x])
            e = np.float64(err[y, x])
            if (valid[y, x] and np.isfinite(r) and np.isfinite(e)
                    and abs(np.float64(data[y, x]) - r) > n_sigma * e):
                q |= bits
            out[y, x] = q
    return out


def _motion_fit(data, err, valid, median, n_sigma: float, iterations: int = 3):
    """The fit of :func:`motion_reference`: ``(M, G, u, data, err, use, coef)``."""
    M = np.ascontiguousarray(median, dtype=np.float64)
    data = np.ascontiguousarray(data)
    err = np.ascontiguousarray(err)
    G, u, w, use = _motion_setup(M, data, err, np.ascontiguousarray(valid, dtype=np.bool_))
    coef = np.array([1.0, 0.0, 0.0])
    ns = float(n_sigma)
    for _ in range(max(int(iterations), 1)):
        ata, atd, n = _motion_normal(M, G, u, data, w, use)
        if n < 3:
            break
        if not np.all(np.isfinite(ata)) or np.linalg.cond(ata) > 1e12:
            coef = np.array([1.0, 0.0, 0.0])
            break
        coef = np.linalg.solve(ata, atd)
        _, changed = _motion_apply(M, G, u, data, err, use, coef[0], coef[1], coef[2], ns, True)
        if not changed:
            break
    return M, G, u, data, err, use, coef


def _motion_flags(data, err, valid, median, dq, n_sigma: float) -> np.ndarray:
    """``_flag_against(data, err, valid, dq, motion_reference(...)[0], n_sigma)`` in one
    pass after the fit (the reference is not stored)."""
    M, G, u, data, err, _, coef = _motion_fit(data, err, valid, median, n_sigma)
    return _motion_flag(M, G, u, data, err, np.ascontiguousarray(valid, dtype=np.bool_),
                        np.ascontiguousarray(dq), coef[0], coef[1], coef[2], float(n_sigma),
                        np.uint32(OUTLIER_BITS))


def motion_reference(data, err, valid, median, n_sigma: float, iterations: int = 3):
    """Window median moved and scaled to one integration: the outlier reference.

    A pixel's rolling median is the right reference only when nothing but noise changes
    between integrations. In a bright time series two things do: the flux (transit,
    systematics: a scale common to the frame) and the trace position (jitter and drift
    of a few milli-pixels; on the flanks of a PSF sampled at S/N ~ 170 per pixel,
    0.015 px moves a pixel by ~2-3 sigma). Against the plain median the flanks of a
    moved trace and the in-transit cores are then flagged, preferentially those whose
    noise pushes the same way, and the flux of the survivors is biased (measured on the
    G395H preset: up to 84 flagged aperture pixels in one integration and -560 ppm in
    its white light; see docs/notes/issue-13.md). This fits, per integration,

        data ~ a * M + (b + c * u) * dM/dy,   u = x / (nx - 1) - 1/2

    (a scale, a shift and a tilt of the trace, all small) by weighted least squares
    (weights 1 / err^2) over the valid pixels, rejecting pixels beyond ``n_sigma`` and
    refitting ``iterations`` times, and returns the fitted image.

    Parameters
    ----------
    data, err : float, (ny, nx), DN/s
    valid : bool, (ny, nx)
        Pixels that may enter the fit (good DQ, finite data).
    median : float64, (ny, nx)
        Window median (NaN where the window is empty).
    n_sigma : float
    iterations : int

    Returns
    -------
    reference : float64, (ny, nx)
        NaN where ``median`` is NaN; ``median`` itself if the fit is singular.
    coefficients : float64, (3,)
        (a, b, c); (1, 0, 0) if the fit is singular.

    Numba passes for the per-pixel work (set-up, the 3 x 3 sums, the reference and the
    rejection) and numpy's ``cond`` / ``solve`` on the 3 x 3 system, as
    :func:`motion_reference_numpy`; the sums run in pixel order where numpy's matrix
    product has its own, so the coefficients agree to rounding (~1e-15 relative) and the
    flags are the same (tested).
    """
    M, G, u, data, err, use, coef = _motion_fit(data, err, valid, median, n_sigma, iterations)
    ref, _ = _motion_apply(M, G, u, data, err, use, coef[0], coef[1], coef[2], float(n_sigma),
                           False)
    return ref, coef


def motion_reference_numpy(data, err, valid, median, n_sigma: float, iterations: int = 3):
    """The numpy implementation of :func:`motion_reference` (the reference the numba
    form is tested against: same fit, same flags; the 3 x 3 sums differ in the order
    of the additions only).

    Same parameters and returns.
    """
    M = np.asarray(median, np.float64)
    ny, nx = M.shape
    G = np.full_like(M, np.nan)
    if ny >= 2:
        G = np.gradient(M, axis=0)
    u = (np.arange(nx, dtype=np.float64) / max(nx - 1, 1) - 0.5)[None, :]
    d = np.asarray(data, np.float64)
    e = np.asarray(err, np.float64)
    Gz = np.where(np.isfinite(G), G, 0.0)
    use = valid & np.isfinite(M) & np.isfinite(G) & np.isfinite(e) & (e > 0) & np.isfinite(d)
    coef = np.array([1.0, 0.0, 0.0])
    for _ in range(max(int(iterations), 1)):
        if use.sum() < 3:
            break
        w = 1.0 / e[use] ** 2
        A = np.stack([M[use], G[use], (G * u)[use]], axis=1)
        ATA = (A * w[:, None]).T @ A
        if not np.all(np.isfinite(ATA)) or np.linalg.cond(ATA) > 1e12:
            coef = np.array([1.0, 0.0, 0.0])
            break
        coef = np.linalg.solve(ATA, (A * w[:, None]).T @ d[use])
        ref = coef[0] * M + (coef[1] + coef[2] * u) * Gz
        keep = use & (np.abs(d - ref) <= n_sigma * np.where(e > 0, e, np.inf))
        if np.array_equal(keep, use):
            break
        use = keep
    ref = coef[0] * M + (coef[1] + coef[2] * u) * Gz
    return ref, coef


@numba.njit(cache=True)
def _flag_against_kernel(data, err, valid, dq, reference, n_sigma, bits):  # pragma: no cover - compiled
    ny, nx = data.shape
    out = np.empty((ny, nx), np.uint32)
    for y in range(ny):
        for x in range(nx):
            q = np.uint32(dq[y, x])
            r = reference[y, x]
            e = np.float64(err[y, x])
            if (valid[y, x] and np.isfinite(r) and np.isfinite(e)
                    and abs(np.float64(data[y, x]) - r) > n_sigma * e):
                q |= bits
            out[y, x] = q
    return out


def _flag_against(data, err, valid, dq, reference, n_sigma: float) -> np.ndarray:
    """``dq | OUTLIER_BITS`` where ``|data - reference| > n_sigma * err`` (valid pixels,
    finite reference and err; the comparison in float64)."""
    return _flag_against_kernel(np.ascontiguousarray(data), np.ascontiguousarray(err),
                                np.ascontiguousarray(valid, dtype=np.bool_),
                                np.ascontiguousarray(dq), np.ascontiguousarray(reference,
                                                                               dtype=np.float64),
                                float(n_sigma), np.uint32(OUTLIER_BITS))


def _flag_against_numpy(data, err, valid, dq, reference, n_sigma: float) -> np.ndarray:
    """The numpy form of :func:`_flag_against` (the reference it is tested against)."""
    d = np.asarray(data, np.float64)
    e = np.asarray(err, np.float64)
    with np.errstate(invalid="ignore"):
        hit = valid & np.isfinite(reference) & np.isfinite(e) & (np.abs(d - reference) > n_sigma * e)
    out = np.asarray(dq, np.uint32).copy()
    out[hit] |= np.uint32(OUTLIER_BITS)
    return out


#: Outlier references: ``"median"`` (jwst tso: the window median as it is) and
#: ``"motion"`` (the window median scaled and moved to each integration, see
#: :func:`motion_reference`; the default).
REFERENCES = ("median", "motion")


def _check_reference(reference: str) -> None:
    if reference not in REFERENCES:
        raise ValueError(f"outlier reference: expected one of {REFERENCES}, got {reference!r}")


def window_median(stack: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Median along axis 0 over the valid entries (NaN where none).

    Parameters
    ----------
    stack : float32 or float64, (w, ny, nx)
    valid : bool, (w, ny, nx)

    Returns
    -------
    median : float64, (ny, nx)
    """
    stack = np.ascontiguousarray(stack)
    valid = np.ascontiguousarray(valid, dtype=np.bool_)
    if stack.ndim != 3 or valid.shape != stack.shape:
        raise ValueError(
            f"window_median: expected stack (w, ny, nx) and valid of the same shape, got {stack.shape} and {valid.shape}"
        )
    return _window_median(stack, valid)


def nanmedian_axis0(stack: np.ndarray) -> np.ndarray:
    """``np.nanmedian(stack, axis=0)`` of a float (n, ny, nx) stack, in one numba pass.

    The same values as numpy's (a median is an order statistic; for an even count the
    two middle values are averaged as ``(low + high) / 2``, exact in float64 and rounded
    once to float32 for a float32 stack, as numpy's float32 sum halved); NaN where a
    pixel has no non-NaN value (without numpy's warning). Other shapes and dtypes go to
    numpy itself.
    """
    a = np.asarray(stack)
    if a.ndim != 3 or a.dtype not in (np.float32, np.float64):
        return np.nanmedian(a, axis=0)
    a = np.ascontiguousarray(a)
    # the kernel reads each value as float64: a float64 copy gives the same medians and
    # one specialisation (float32 stacks compiled a second one)
    a64 = a if a.dtype == np.float64 else a.astype(np.float64)
    return _window_median(a64, ~np.isnan(a)).astype(a.dtype, copy=False)


def window_bounds(j: int, n: int, window: int) -> tuple[int, int]:
    """Window ``[start, stop)`` (0-based) of integration ``j`` among ``n`` (shifted edges)."""
    if n <= window:
        return 0, n
    s = min(max(j - window // 2, 0), n - window)
    return s, s + window


def _valid(data: np.ndarray, dq: np.ndarray, bad_bits: int) -> np.ndarray:
    return np.isfinite(data) & ((dq.astype(np.uint32) & np.uint32(bad_bits)) == 0)


def _check_params(window: int, n_sigma: float) -> None:
    if int(window) < 1:
        raise ValueError(f"outlier window: expected >= 1 integrations, got {window!r}")
    if not n_sigma > 0:
        raise ValueError(f"outlier n_sigma: expected > 0, got {n_sigma!r}")


def flag_outliers(
    cube: np.ndarray,
    err: np.ndarray,
    dq: np.ndarray,
    window: int = 25,
    n_sigma: float = 5.0,
    *,
    bad_bits: int = dqflags.DO_NOT_USE,
    reference: str = "motion",
    span: tuple[int, int] | None = None,
    pool=None,
    parts: int = 1,
) -> np.ndarray:
    """Flag outliers along time in a stack of integrations (batch form).

    Parameters
    ----------
    cube : float32, (nint, ny, nx), DN/s
        Rates per integration, in integration order.
    err : float32, (nint, ny, nx), DN/s
        1-sigma uncertainty of ``cube``.
    dq : uint32, (nint, ny, nx)
        Pixel DQ; pixels with ``bad_bits`` are ignored in the median and not flagged.
    window : int
        Integrations in the rolling window (jwst ``rolling_window_width``, 25).
    n_sigma : float
        Threshold in units of ``err`` (jwst ``snr``, 5).
    bad_bits : int
        DQ bits that exclude a pixel.
    reference : {"motion", "median"}
        What a pixel is compared with: the window median scaled and moved to the
        integration (:func:`motion_reference`, default) or the plain window median
        (jwst).
    span : (start, stop), optional
        Flag only integrations ``start <= j < stop`` of the stack (0-based), each with
        the window it has in the whole stack (the others are returned unflagged): a
        worker that read a margin of ``window`` integrations around its block flags the
        block alone, with the same result for it as the whole stack.
    pool, parts : executor (``submit``) and int, optional
        Run the rolling windows in ``parts`` bands of rows and the motion fits in
        ``parts`` runs of integrations on ``pool``'s threads (the kernels release the
        GIL). Every row's windows and every integration's fit are computed as serially:
        the result is the same bit for bit whatever ``parts``.

    Returns
    -------
    new_dq : uint32, (nint, ny, nx)
        ``dq`` with ``DO_NOT_USE | OUTLIER`` added on flagged pixels; unchanged
        elsewhere. Inputs are not modified.
    """
    _check_params(window, n_sigma)
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise ValueError(f"flag_outliers cube: expected (nint, ny, nx), got shape {cube.shape}")
    err = np.asarray(err)
    dq = np.asarray(dq)
    for name, arr in (("err", err), ("dq", dq)):
        if arr.shape != cube.shape:
            raise ValueError(f"flag_outliers {name}: expected shape {cube.shape}, got {arr.shape}")
    _check_reference(reference)
    valid = _valid(cube, dq, bad_bits)
    start, stop = (0, cube.shape[0]) if span is None else (int(span[0]), int(span[1]))
    if not 0 <= start <= stop <= cube.shape[0]:
        raise ValueError(f"flag_outliers span: expected 0 <= start <= stop <= "
                         f"{cube.shape[0]}, got {span}")
    store = reference == "motion"
    med = np.empty((stop - start, *cube.shape[1:]) if store else (1, 1, 1), np.float64)
    # the kernel's sorted windows are in the cube's dtype: float32 / float64 as given,
    # anything else as float64 (the values the kernel compared before, as np.float64)
    kdt = cube.dtype if cube.dtype in (np.float32, np.float64) else np.float64
    kcube, kerr = np.ascontiguousarray(cube, dtype=kdt), np.ascontiguousarray(err)
    out = np.array(dq, dtype=np.uint32, order="C")  # the kernel's ``dq.astype(np.uint32)``
    parts = max(1, int(parts)) if pool is not None else 1

    def rows(y0, y1):
        _flag_rolling_rows(kcube, kerr, valid, out, int(window), float(n_sigma),
                           np.uint32(OUTLIER_BITS), store, med, start, stop, y0, y1)

    in_parts(rows, cube.shape[1], pool, parts)
    if not store:
        return out

    def motion(j0, j1):
        for j in range(start + j0, start + j1):
            out[j] = _motion_flags(cube[j], err[j], valid[j], med[j - start], out[j], n_sigma)

    in_parts(motion, stop - start, pool, parts)
    return out


def in_parts(fn, n: int, pool, parts: int) -> None:
    """``fn(a, b)`` over ``parts`` consecutive runs ``a..b`` of ``0..n`` (sizes differing
    by at most one) on ``pool``'s threads, or ``fn(0, n)`` here for one part. Every part
    is waited for before the first failure (in part order) is raised."""
    parts = min(parts, n)
    if pool is None or parts <= 1:
        fn(0, n)
        return
    edges = [n * k // parts for k in range(parts + 1)]
    futs = [pool.submit(fn, a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    errors = [f.exception() for f in futs]  # waits for each
    for e in errors:
        if e is not None:
            raise e


class RollingOutlierFlagger:
    """Streaming outlier flagger holding a bounded buffer of integrations.

    Integrations are pushed with their number (consecutive from ``start``, e.g. the
    1-based INT_TIMES number), possibly out of order. Each integration is released,
    in number order, with its new DQ as soon as every integration of its window (see
    module notes) has arrived; the last ones are released by :meth:`finish` (or as
    soon as their window is complete when ``nints`` is given). Results are identical
    to :func:`flag_outliers` on the whole stack.

    Memory: the integrations of the current window plus those not yet releasable
    (bounded by how late integrations arrive), and the sorted windows,
    two ``ny_band * nx * (window + 2)`` float64 buffers (2 x 14 MB for 32 x 2048, window 25).

    Parameters
    ----------
    window : int
        Integrations in the rolling window.
    n_sigma : float
        Threshold in units of ``err``.
    rows : slice, optional
        If given, pushed arrays are full frames and only these rows are kept and
        flagged (so the state can be split by pixel band); released DQ arrays are the
        band. None keeps whatever is pushed.
    start : int
        Number of the first integration.
    nints : int, optional
        Total number of integrations, if known (releases the tail without ``finish``).
    bad_bits : int
        DQ bits that exclude a pixel.
    reference : {"motion", "median"}
        As :func:`flag_outliers`. With ``rows``, the motion fit sees only the band (equal
        to batch for full frames).
    """

    def __init__(
        self,
        window: int = 25,
        n_sigma: float = 5.0,
        *,
        rows: slice | None = None,
        start: int = 1,
        nints: int | None = None,
        bad_bits: int = dqflags.DO_NOT_USE,
        reference: str = "motion",
    ):
        _check_params(window, n_sigma)
        _check_reference(reference)
        self.reference = reference
        if nints is not None and int(nints) < 1:
            raise ValueError(f"RollingOutlierFlagger nints: expected >= 1, got {nints!r}")
        self.window = int(window)
        self.n_sigma = float(n_sigma)
        self.rows = rows
        self.start = int(start)
        self.nints = None if nints is None else int(nints)
        self.bad_bits = int(bad_bits)
        self._buf: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._next = 0  # next 0-based index to release
        self._max_seen = -1
        self._shape: tuple[int, ...] | None = None
        self._finished = False
        # sorted per-pixel windows of integrations [_ps, _pe), slid as releases advance
        self._sorted: np.ndarray | None = None
        self._spare: np.ndarray | None = None  # the slide's second buffer
        self._count: np.ndarray | None = None
        self._ps = 0
        self._pe = 0

    # -- state --------------------------------------------------------------
    @property
    def buffered(self) -> int:
        """Integrations held now."""
        return len(self._buf)

    @property
    def next_integration(self) -> int:
        """Number of the next integration to be released."""
        return self.start + self._next

    # -- api ----------------------------------------------------------------
    def push(
        self, integration_number: int, rate: np.ndarray, err: np.ndarray, dq: np.ndarray
    ) -> list[tuple[int, np.ndarray]]:
        """Add one integration; return every integration that can now be released.

        Parameters
        ----------
        integration_number : int
        rate, err : float32, (ny, nx) (or the band if ``rows`` is None), DN/s
        dq : uint32, same shape

        Returns
        -------
        list of (int, uint32 (ny_band, nx))
            ``(integration_number, new_dq)`` in increasing number.
        """
        if self._finished:
            raise RuntimeError("RollingOutlierFlagger.push: called after finish()")
        j = int(integration_number) - self.start
        if j < 0 or (self.nints is not None and j >= self.nints):
            raise ValueError(
                f"RollingOutlierFlagger.push: integration {integration_number} outside "
                f"[{self.start}, {self.start + (self.nints or 10**12) - 1}]"
            )
        if j < self._next or j in self._buf:
            raise ValueError(
                f"RollingOutlierFlagger.push: integration {integration_number} duplicated or "
                f"arrived after its slot was released (next is {self.next_integration})"
            )
        arrays = []
        for name, a in (("rate", rate), ("err", err), ("dq", dq)):
            a = np.asarray(a)
            if a.ndim != 2:
                raise ValueError(
                    f"RollingOutlierFlagger.push {name}: expected (ny, nx), got shape {a.shape}"
                )
            if self.rows is not None:
                a = a[self.rows]
            arrays.append(a)
        if self._shape is None:
            self._shape = arrays[0].shape
        for name, a in zip(("rate", "err", "dq"), arrays, strict=True):
            if a.shape != self._shape:
                raise ValueError(
                    f"RollingOutlierFlagger.push {name}: expected shape {self._shape}, got {a.shape}"
                )
        data = np.array(arrays[0], copy=True)
        e = np.array(arrays[1], copy=True)
        d = np.array(arrays[2], dtype=np.uint32, copy=True)
        self._buf[j] = (data, e, d, _valid(data, d, self.bad_bits))
        self._max_seen = max(self._max_seen, j)
        return self._release(self.nints)

    def finish(self) -> list[tuple[int, np.ndarray]]:
        """Release every remaining integration (end of stream).

        Raises
        ------
        ValueError
            If integrations between the last released and the highest received are
            missing (flags would differ from the batch form).
        """
        n = self.nints if self.nints is not None else self._max_seen + 1
        missing = [self.start + k for k in range(self._next, n) if k not in self._buf]
        if missing:
            raise ValueError(
                f"RollingOutlierFlagger.finish: integrations {missing[:10]} never arrived "
                f"(expected {self.start}..{self.start + n - 1})"
            )
        out = self._release(n)
        self._finished = True
        self._buf.clear()
        self._sorted = self._spare = self._count = None
        return out

    # -- internals ----------------------------------------------------------
    def _bounds(self, j: int, n: int | None) -> tuple[int, int]:
        if n is not None:
            return window_bounds(j, n, self.window)
        s = max(j - self.window // 2, 0)
        return s, s + self.window

    def _release(self, n: int | None) -> list[tuple[int, np.ndarray]]:
        out = []
        while n is None or self._next < n:
            j = self._next
            s, e = self._bounds(j, n)
            if any(k not in self._buf for k in range(s, e)):
                break
            if self._sorted is None:
                ny, nx = self._shape
                self._sorted = np.full((ny, nx, self.window + 2), np.inf)
                self._sorted[:, :, 0] = -np.inf
                self._spare = self._sorted.copy()
                self._count = np.zeros((ny, nx), np.int64)
            # slide the sorted windows from [ps, pe) to [s, e): both ends only advance,
            # one integration out and one in per slide (or one side only)
            while self._ps < s or self._pe < e:
                out_k, in_k = self._ps < s, self._pe < e
                fo, _, _, vo = self._buf[self._ps if out_k else self._pe]
                fi, _, _, vi = self._buf[self._pe if in_k else self._ps]
                _slide_frame(self._sorted, self._spare, self._count, fo, vo, fi, vi,
                             out_k, in_k)
                self._sorted, self._spare = self._spare, self._sorted
                self._ps += int(out_k)
                self._pe += int(in_k)
            data, err, dq, valid = self._buf[j]
            if self.reference == "motion":
                med = _frame_median(self._sorted, self._count)
                new_dq = _motion_flags(data, err, valid, med, dq, self.n_sigma)
            else:
                new_dq = _flag_frame(self._sorted, self._count, data, err, valid, dq,
                                     self.n_sigma, np.uint32(OUTLIER_BITS))
            out.append((self.start + j, new_dq))
            self._next += 1
            for k in [k for k in self._buf if k < self._ps]:  # never needed again
                del self._buf[k]
        return out
