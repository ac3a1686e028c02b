"""1/f cleaning, numba kernels over a whole ramp: ``clean_median`` and ``clean_fft``
on every group difference (group_reference='previous') re-integrated, exactly the
numpy reference's arithmetic."""

from __future__ import annotations

import numpy as np
from numba import njit

from nirbeam.transforms.flicker_params import (
    MAD_TO_SIGMA,
)
from nirbeam.transforms.flicker_sort import (
    BLOCK,
    diff_block,
    diff_median_background,
    fill_columns_inplace,
    order_pair,
    sort_columns,
    sorted_median,
)


@njit(cache=True, nogil=True, error_model="numpy")
def groups_median_kernel(
    g,
    gdq,
    msk,
    other,
    jump,
    bg_mode,
    bg_value,
    use_mean,
    clip_sigma,
    min_pixels,
    comps,
    out,
    models,
    from_first=False,
):
    """clean_median on every difference of the ramp ``g`` and re-integration into
    ``out`` (float32, shape of ``g``); models into ``models`` if it has ng - 1 planes.

    ``from_first``: on every group minus the first instead (``out[k] = g[k] - model_k``,
    no re-integration: :func:`~nirbeam.transforms.flicker.clean_groups_from_first`)."""
    ng, ny, nx = g.shape
    want = models.shape[0] > 0
    bw = BLOCK
    acc = np.zeros((ny, nx))
    off = np.empty((nx, 1))
    good = np.empty(nx, np.bool_)
    use = np.empty((ny, bw), np.bool_)
    keep = np.empty((ny, bw), np.bool_)
    d = np.empty((ny, bw))
    s = np.empty((ny, bw))
    n = np.empty(bw, np.int64)
    m = np.empty(bw, np.int64)
    om = np.empty(bw)
    oz = np.empty(bw)
    scale = np.empty(bw)
    lim = np.empty(bw)
    tot = np.empty(bw)
    allv = np.empty(ny * nx if bg_mode == 2 else 1)
    buf = np.empty(ny * nx if bg_mode == 2 else 1)
    for y in range(ny):
        for c in range(nx):
            out[0, y, c] = g[0, y, c]
    for k in range(ng - 1):
        ka = 0 if from_first else k
        bg = bg_value
        if bg_mode == 2:
            bg = diff_median_background(g, gdq, msk, other, jump, ka, k + 1, allv, buf)
        for c0 in range(0, nx, bw):
            w = min(bw, nx - c0)
            diff_block(g, gdq, msk, other, jump, ka, k + 1, bg, c0, w, use, d, s, n)
            block_column_offsets(s, d, use, keep, n, m, om, oz, scale, lim, tot, ny, w,
                                 comps, use_mean, clip_sigma, min_pixels, c0, good,
                                 off)
        fill_columns_inplace(off, good)
        for y in range(ny):
            for c in range(nx):
                a = off[c, 0] if from_first else acc[y, c] + off[c, 0]
                acc[y, c] = a
                out[k + 1, y, c] = np.float32(np.float64(g[k + 1, y, c]) - a)
        if want:
            for y in range(ny):
                for c in range(nx):
                    models[k, y, c] = off[c, 0]


@njit(cache=True, nogil=True, error_model="numpy")
def block_column_offsets(s, d, use, keep, n, m, om, oz, scale, lim, tot, h, w, net, use_mean,
                         clip_sigma, min_pixels, c0, good, off):
    """The column offsets of one block of ``w`` columns from its gathered values (the
    column statistic of :func:`groups_median_kernel` and of the fused hook,
    :func:`~nirbeam.transforms.flicker_hook.hook_median_kernel`).

    ``d``, ``s`` (>= h, BLOCK) float64: the values of the first ``h`` rows (0.0 / +inf where
    ``use`` is False), ``n`` (BLOCK,) the usable count per column; ``net`` the sorting
    network of ``h`` values. The median of each column, with ``use_mean`` then its
    3-sigma-clipped mean (robust start: median and MAD, 3 rounds of mean/std clipping at
    ``clip_sigma``); ``good[c0 + cc]`` is whether the column has ``min_pixels`` and a
    finite statistic, ``off[c0 + cc, 0]`` the statistic (0.0 if not good). ``s`` is
    sorted in place; ``keep``, ``m``, ``om``, ``oz``, ``scale``, ``lim``, ``tot`` are
    work arrays (``scale`` is left at the std of the second round: the third round's
    std would not be used)."""
    sort_columns(s, net, w)
    for cc in range(w):
        nn = n[cc]
        om[cc] = 0.5 * (s[(nn - 1) // 2, cc] + s[nn // 2, cc]) if nn > 0 else np.nan
    if use_mean:
        # robust start (median, MAD), then 3 rounds of mean/std clipping
        for y in range(h):
            for cc in range(w):
                s[y, cc] = np.abs(d[y, cc] - om[cc]) if use[y, cc] else np.inf
        sort_columns(s, net, w)
        for cc in range(w):
            nn = n[cc]
            mad = 0.5 * (s[(nn - 1) // 2, cc] + s[nn // 2, cc]) if nn > 0 else np.nan
            scale[cc] = MAD_TO_SIGMA * mad
        for rnd in range(3):
            for cc in range(w):
                lim[cc] = clip_sigma * (scale[cc] if np.isfinite(scale[cc]) else 0.0)
                tot[cc] = 0.0
                m[cc] = 0
            for y in range(h):
                for cc in range(w):
                    dv = d[y, cc]
                    kp = use[y, cc] & (np.abs(dv - om[cc]) <= lim[cc])
                    keep[y, cc] = kp
                    tot[cc] += dv if kp else 0.0
                    m[cc] += kp
            for cc in range(w):
                om[cc] = tot[cc] / max(m[cc], 1) if m[cc] > 0 else np.nan
                oz[cc] = om[cc] if m[cc] > 0 else 0.0
                tot[cc] = 0.0
            if rnd == 2:  # the last round's std is not used
                break
            for y in range(h):
                for cc in range(w):
                    r = d[y, cc] - oz[cc]
                    tot[cc] += r * r if keep[y, cc] else 0.0
            for cc in range(w):
                scale[cc] = np.sqrt(tot[cc] / max(m[cc], 1))
    for cc in range(w):
        ok = (n[cc] >= min_pixels) & np.isfinite(om[cc])
        good[c0 + cc] = ok
        off[c0 + cc, 0] = om[cc] if ok else 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def groups_fft_normal_kernel(
    g,
    gdq,
    msk,
    other,
    jump,
    bg_mode,
    bg_value,
    basis,
    ridge,
    min_pixels,
    exclude,
    outlier_sigma,
    comps,
    normal,
    rhs,
    good,
    from_first=False,
):
    """Normal equations of clean_fft for every difference of ``g`` (every group minus
    the first if ``from_first``): ``normal`` (ndiff, nx, p, p), ``rhs`` (ndiff, nx, p, 1),
    ``good`` (ndiff, nx), penalties included."""
    ng, ny, nx = g.shape
    p = basis.shape[1]
    bw = BLOCK
    d = np.empty((ny, nx))
    use = np.empty((ny, nx), np.bool_)
    outl = np.empty((ny, nx), np.bool_)
    resid = np.empty((ny, nx))
    ub = np.empty((ny, bw), np.bool_)
    db = np.empty((ny, bw))
    s = np.empty((ny, bw))
    nb = np.empty(bw, np.int64)
    nuse = np.empty(nx, np.int64)
    colmed = np.empty(nx)
    allv = np.empty(ny * nx)
    buf = np.empty(ny * nx)
    nrm = np.empty((p, p, nx))
    rh = np.empty((p, nx))
    min_pix = max(min_pixels, 1)
    for k in range(ng - 1):
        ka = 0 if from_first else k
        bg = bg_value
        if bg_mode == 2:
            bg = diff_median_background(g, gdq, msk, other, jump, ka, k + 1, allv, buf)
        for c0 in range(0, nx, bw):
            w = min(bw, nx - c0)
            diff_block(g, gdq, msk, other, jump, ka, k + 1, bg, c0, w, ub, db, s, nb)
            for y in range(ny):
                for cc in range(w):
                    use[y, c0 + cc] = ub[y, cc]
                    d[y, c0 + cc] = db[y, cc]
            if exclude:
                sort_columns(s, comps, w)
                for cc in range(w):
                    nn = nb[cc]
                    colmed[c0 + cc] = (
                        0.5 * (s[(nn - 1) // 2, cc] + s[nn // 2, cc]) if nn > 0 else 0.0
                    )
        if exclude:
            # _exclude_outliers: MAD about the column median (global sigma), grown by 1
            # residuals of the usable pixels; the others -inf (ranks shifted by their
            # number) so that no compaction is needed
            nall = 0
            for y in range(ny):
                ur = use[y]
                dr = d[y]
                rr = resid[y]
                for c in range(nx):
                    u = ur[c]
                    rr[c] = dr[c] - colmed[c] if u else -np.inf
                    nall += u
            npad = ny * nx - nall
            flat = resid.ravel()
            sig = 0.0
            if nall > 0:
                lo = (nall - 1) // 2
                hi = nall // 2
                med = order_pair(flat, ny * nx, npad + lo, npad + hi, buf)
                for i in range(ny * nx):
                    allv[i] = np.abs(flat[i] - med)  # the -inf become +inf: same ranks
                sig = MAD_TO_SIGMA * order_pair(allv, ny * nx, lo, hi, buf)
            thr = outlier_sigma * sig
            n_out = 0
            for y in range(ny):
                ur = use[y]
                rr = resid[y]
                orow = outl[y]
                for c in range(nx):
                    o = ur[c] & (np.abs(rr[c]) > thr)
                    orow[c] = o
                    n_out += o
            if n_out > 0:
                for y in range(ny):
                    ur = use[y]
                    orow = outl[y]
                    for c in range(nx):
                        ur[c] = ur[c] & ~orow[c]
                    if y > 0:
                        oup = outl[y - 1]
                        for c in range(nx):
                            ur[c] = ur[c] & ~oup[c]
                    if y < ny - 1:
                        odn = outl[y + 1]
                        for c in range(nx):
                            ur[c] = ur[c] & ~odn[c]
                    for c in range(1, nx):
                        ur[c] = ur[c] & ~orow[c - 1]
                    for c in range(nx - 1):
                        ur[c] = ur[c] & ~orow[c + 1]
        # weights: 1 on usable pixels (normalised by their mean, 1), 0 elsewhere;
        # column sums along y from 0.0 as numpy's
        for c in range(nx):
            nuse[c] = 0
        for a in range(p):
            for c in range(nx):
                rh[a, c] = 0.0
            for b in range(p):
                for c in range(nx):
                    nrm[a, b, c] = 0.0
        for y in range(ny):
            for c in range(nx):
                nuse[c] += use[y, c]
            for a in range(p):
                ba = basis[y, a]
                for b in range(a, p):
                    bb = basis[y, b]
                    for c in range(nx):
                        wt = 1.0 if use[y, c] else 0.0
                        nrm[a, b, c] += (wt * ba) * bb
                for c in range(nx):
                    wt = 1.0 if use[y, c] else 0.0
                    dv = d[y, c] if use[y, c] else 0.0
                    rh[a, c] += (wt * dv) * ba
        for c in range(nx):
            n_terms = min(max(nuse[c] // 3, 1), p)
            ok = nuse[c] >= min_pix
            good[k, c] = ok
            for a in range(p):
                for b in range(p):
                    if ok:
                        normal[k, c, a, b] = nrm[min(a, b), max(a, b), c]
                    else:
                        normal[k, c, a, b] = 1.0 if a == b else 0.0
                if ok:
                    pen = ridge if a > 0 else 0.0
                    if a >= n_terms:
                        pen = 1e12
                    normal[k, c, a, a] = normal[k, c, a, a] + pen
                    rhs[k, c, a, 0] = rh[a, c]
                else:
                    rhs[k, c, a, 0] = 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def groups_fft_model_kernel(g, coef, good, basis, out, models, from_first=False):
    """Models ``basis @ coef`` (bad columns filled from their neighbours) of every
    difference, re-integrated into ``out`` (subtracted from each group if
    ``from_first``)."""
    ng, ny, nx = g.shape
    p = basis.shape[1]
    want = models.shape[0] > 0
    acc = np.zeros((ny, nx))
    model = np.empty(nx)
    for y in range(ny):
        for c in range(nx):
            out[0, y, c] = g[0, y, c]
    for k in range(ng - 1):
        ck = coef[k]
        for c in range(nx):
            if not good[k, c]:
                for a in range(p):
                    ck[c, a] = 0.0
        fill_columns_inplace(ck, good[k])
        for y in range(ny):
            for c in range(nx):
                model[c] = 0.0
            for a in range(p):
                ba = basis[y, a]
                for c in range(nx):
                    model[c] += ba * ck[c, a]
            for c in range(nx):
                s = model[c] if from_first else acc[y, c] + model[c]
                acc[y, c] = s
                out[k + 1, y, c] = np.float32(np.float64(g[k + 1, y, c]) - s)
                if want:
                    models[k, y, c] = model[c]


@njit(cache=True, nogil=True, error_model="numpy")
def _mad_value(g, msk, per_group, meds, center, k, y, x):
    """The background value of pixel (y, x) in group ``k`` that :func:`model_mad` takes the
    median of: ``(g[k] - g[ka]) - meds[k]`` (``ka`` the first group when ``per_group``,
    else the previous one), or ``|that - center|`` when ``center`` is finite; NaN where
    it is not used (outside the mask, a group without a median, a non-finite value)."""
    if not msk[y, x] or np.isnan(meds[k]):
        return np.nan
    ka = 0 if per_group else k - 1
    r = (np.float64(g[k, y, x]) - np.float64(g[ka, y, x])) - meds[k]
    if not np.isfinite(r):
        return np.nan
    return np.abs(r - center) if np.isfinite(center) else r


@njit(cache=True, nogil=True, error_model="numpy")
def _streamed_median(g, msk, per_group, meds, center):
    """Median (numpy's) of the finite :func:`_mad_value` values, NaN if there are none,
    without storing them: a histogram over their range finds the bins of the two middle
    ranks, and only the values in those bins are kept and selected (exact; memory is the
    bins' content). Three passes recompute the values."""
    ng, ny, nx = g.shape
    n = 0
    vmin = np.inf
    vmax = -np.inf
    for k in range(1, ng):
        for y in range(ny):
            for x in range(nx):
                r = _mad_value(g, msk, per_group, meds, center, k, y, x)
                if not np.isnan(r):
                    n += 1
                    vmin = min(vmin, r)
                    vmax = max(vmax, r)
    if n == 0:
        return np.nan
    lo = (n - 1) // 2
    hi = n // 2
    nbins = 1 << 16
    span = vmax - vmin
    scale = (nbins / span) if span > 0 and np.isfinite(span) else 0.0
    counts = np.zeros(nbins, np.int64)
    for k in range(1, ng):
        for y in range(ny):
            for x in range(nx):
                r = _mad_value(g, msk, per_group, meds, center, k, y, x)
                if not np.isnan(r):
                    counts[min(int((r - vmin) * scale), nbins - 1)] += 1
    # bins holding ranks lo and hi
    c = 0
    blo = -1
    bhi = -1
    below = 0
    for b in range(nbins):
        if blo < 0 and c + counts[b] > lo:
            blo = b
            below = c
        if c + counts[b] > hi:
            bhi = b
            break
        c += counts[b]
    keep = np.empty(max(counts[blo:bhi + 1].sum(), 1))
    m = 0
    for k in range(1, ng):
        for y in range(ny):
            for x in range(nx):
                r = _mad_value(g, msk, per_group, meds, center, k, y, x)
                if not np.isnan(r):
                    b = min(int((r - vmin) * scale), nbins - 1)
                    if blo <= b <= bhi:
                        keep[m] = r
                        m += 1
    return order_pair(keep, m, lo - below, hi - below, np.empty(max(m, 1)))


@njit(cache=True, nogil=True, error_model="numpy")
def model_mad(g, msk, per_group):
    """MAD of the cleaned background values a group-level 1/f model was fitted to, as
    :func:`~nirbeam.transforms.flicker_groups.correction_variance_reference` computes it
    (same values, numpy's medians, bit for bit).

    ``g`` (ng, ny, nx) float32/float64 cleaned groups, ``msk`` (ny, nx) background pixels.
    ``per_group``: the values are group minus first group, each group less its own
    (NaN-ignoring) median; else group differences. Returns -1.0 when there are fewer
    than two finite values (no model variance), NaN when none is left after the
    per-group medians.

    The (ng - 1) x mask values are never stored (a full frame of 20 groups would need
    ~0.5 GB per copy): the two medians are selected by :func:`_streamed_median`, which
    recomputes the values in three passes; only one group's values are held at a time
    (for its own median).
    """
    ng, ny, nx = g.shape
    nm = 0
    for y in range(ny):
        for x in range(nx):
            nm += msk[y, x]
    n = 0
    for k in range(1, ng):
        ka = 0 if per_group else k - 1
        for y in range(ny):
            for x in range(nx):
                if msk[y, x]:
                    v = np.float64(g[k, y, x]) - np.float64(g[ka, y, x])
                    if np.isfinite(v):
                        n += 1
    if n < 2:
        return -1.0
    meds = np.zeros(ng)
    meds[0] = np.nan
    if per_group:
        row = np.empty(max(nm, 1))
        buf = np.empty(max(nm, 1))
        for k in range(1, ng):
            nn = 0
            for y in range(ny):
                for x in range(nx):
                    if msk[y, x]:
                        v = np.float64(g[k, y, x]) - np.float64(g[0, y, x])
                        if not np.isnan(v):
                            row[nn] = v
                            nn += 1
            # np.nanmedian of the group's values; a group with none is left out
            meds[k] = sorted_median(row, nn, buf) if nn > 0 else np.nan
    med = _streamed_median(g, msk, per_group, meds, np.inf)
    if np.isnan(med):
        return np.nan
    return _streamed_median(g, msk, per_group, meds, med)
