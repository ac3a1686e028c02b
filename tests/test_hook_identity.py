"""The fused default 1/f hook (``_FusedMedianHook`` / ``hook_median_kernel``) == its
session-7 version bit for bit: the old kernels are copied here verbatim (renamed
``old_*``) as the oracle, and both run on seeded inputs (3/5/20/70 groups, SUB512 and
2048 columns, NRS1 and NRS2, masks with few pixels per column, NaN, inf, outliers,
integer ties, flagged groups and pixels); the cleaned groups, the model variance and
the Wiener-filtered path compare as uint32 / uint64 views. ``bench/cleaning_cost.py
--hook-shapes`` times the same oracle against the hook in one process."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from numba import njit

from nirbeam import dqflags
from nirbeam.transforms.flicker import FlickerParams, make_group_hook
from nirbeam.transforms.flicker_kernels import model_mad
from nirbeam.transforms.flicker_params import (
    GROUP_BAD_BITS,
    MAD_TO_SIGMA,
    RESID_B,
    RESID_C,
    variance_factors,
)
from nirbeam.transforms.flicker_readout import noise_level, readout_wiener
from nirbeam.transforms.flicker_sort import (
    BG_MEDIAN,
    BG_NONE,
    BLOCK,
    fill_columns_inplace,
    order_pair,
    order_pair_abs,
    sort_columns,
    sorted_median,
    sorting_network,
)

MAD_STORE_MAX = 1 << 23

# --------------------------------------------------------------------------- the oracle
# verbatim from nirbeam/transforms/flicker_hook.py and flicker_kernels.py at 849d0cb
# (names prefixed old_)


@dataclass(frozen=True, eq=False)
class OldMaskLayout:
    """A scene mask's pixels per block of columns (derived once per exposure).

    Attributes
    ----------
    shape : (ny, nx)
    blocks : int64 (nblocks, 4)
        First column, width (<= BLOCK), slots (the most mask pixels of its columns) and
        the block's first row in ``slot_row``.
    slot_row : int64 (nslots, BLOCK)
        Row of the j-th mask pixel (ascending) of each column of a block; -1 where the
        column has fewer.
    comps : int64 (ncomp, 2), comp_off : int64 (ny + 2,)
        Sorting networks of 0..ny values, the network of ``h`` values being
        ``comps[comp_off[h]:comp_off[h + 1]]``.
    pixels : int64 (nmask,)
        Flat (row-major) indices of the mask pixels.
    """

    shape: tuple
    blocks: np.ndarray
    slot_row: np.ndarray
    comps: np.ndarray
    comp_off: np.ndarray
    pixels: np.ndarray

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> OldMaskLayout:
        m = np.asarray(mask, bool)
        ny, nx = m.shape
        rows = [np.flatnonzero(m[:, c]) for c in range(nx)]
        blocks, slots = [], []
        s0 = 0
        for c0 in range(0, nx, BLOCK):
            w = min(BLOCK, nx - c0)
            h = max((rows[c].size for c in range(c0, c0 + w)), default=0)
            sl = np.full((h, BLOCK), -1, np.int64)
            for cc in range(w):
                r = rows[c0 + cc]
                sl[: r.size, cc] = r
            blocks.append((c0, w, h, s0))
            slots.append(sl)
            s0 += h
        nets = [sorting_network(h) if h > 0 else np.zeros((0, 2), np.int64)
                for h in range(ny + 1)]
        off = np.zeros(ny + 2, np.int64)
        off[1:] = np.cumsum([len(c) for c in nets])
        return cls(
            (ny, nx),
            np.array(blocks, np.int64).reshape(-1, 4),
            np.ascontiguousarray(np.concatenate(slots) if slots else np.zeros((0, BLOCK),
                                                                               np.int64)),
            np.ascontiguousarray(np.concatenate(nets).astype(np.int64).reshape(-1, 2)),
            off,
            np.flatnonzero(m.ravel()).astype(np.int64),
        )


@njit(cache=True, error_model="numpy")
def old_group_values(out, k, ka, upix, vals, work, buf, per_group):
    """The background values of group ``k`` that :func:`model_mad` takes the medians of,
    into ``vals[:nmu]`` (``nmu = upix.size``): ``out[k] - out[ka]`` at the pixels
    ``upix``, less the group's NaN-ignoring median when ``per_group`` (right after the
    group was written: its values are in cache). Returns (finite values before the
    median is taken off, the median: 0.0 without ``per_group``, NaN when the group
    has no value; its values then count for nothing)."""
    ng, ny, nx = out.shape
    of = out.reshape((ng, ny * nx))
    nmu = upix.shape[0]
    nfin = 0
    nnan = 0
    for i in range(nmu):
        px = upix[i]
        v = np.float64(of[k, px]) - np.float64(of[ka, px])
        vals[i] = v
        nfin += np.isfinite(v)
        nnan += np.isnan(v)
    if not per_group:
        return nfin, 0.0
    nn = nmu - nnan
    if nn == 0:
        return nfin, np.nan
    src = vals
    if nnan > 0:  # np.nanmedian: the values less the NaN
        m = 0
        for i in range(nmu):
            v = vals[i]
            work[m] = v
            m += not np.isnan(v)
        src = work
    med = sorted_median(src, nn, buf)
    for i in range(nmu):
        vals[i] = vals[i] - med
    return nfin, med


@njit(cache=True, error_model="numpy")
def old_pooled_mad(vals, n, buf, work):
    """MAD of the finite values of ``vals[:n]`` (already less their group's median):
    ``median(|r - median(r)|)``, NaN when none is finite (:func:`model_mad`'s two
    streamed medians)."""
    nf = 0
    for i in range(n):  # a counting pass (vectorises)
        nf += np.isfinite(vals[i])
    src = vals
    if nf < n:
        m = 0
        for i in range(n):
            v = vals[i]
            work[m] = v
            m += np.isfinite(v)
        src = work
    if nf == 0:
        return np.nan
    med = order_pair(src, nf, (nf - 1) // 2, nf // 2, buf)
    return order_pair_abs(src, nf, med, (nf - 1) // 2, nf // 2, buf)


@njit(cache=True, error_model="numpy")
def old_hook_median_kernel(g, gdq, pdq, bad_pixel, other, jump, bg_mode, bg_value, use_mean,
                       clip_sigma, min_pixels, from_first, blocks, slot_row, comps, comp_off,
                       pixels, want_var, k_var, a_var, resid, two, light, out, var,
                       offs, mode):
    """1/f cleaning of one integration (``method='median'``), as
    :func:`~nirbeam.transforms.flicker_kernels.groups_median_kernel` on the mask of
    ``pixels`` less the pixels with a ``bad_pixel`` bit in ``pdq``; the cleaned ramp into
    ``out``. With ``want_var``: the model's variance as
    :func:`~nirbeam.transforms.flicker_groups.correction_variance` gives it (``k_var``,
    ``a_var``, ``resid``: :func:`~nirbeam.transforms.flicker_groups.variance_factors`,
    ``two`` = 2.0) into ``var`` (float64 (ny, nx), zeros on entry: left
    so when there is no model variance); returns :func:`model_mad` of ``out`` (``-1.0``:
    no variance; ``-2.0`` without ``want_var``).

    ``light`` (nx,) float64, DN per group, or (0,): the mean static light of each
    column's mask pixels; ``light * (kb - ka)`` is taken off each column offset of the
    difference ``ka -> kb`` (after the filling of columns without enough pixels), so the
    offsets do not remove that light from the column. The column statistics themselves
    are those without it: it changes each column's model by the same amount in every
    integration, and nothing else.
    ``offs`` float64 (ng - 1, nx), ``mode``: 0 fits the column offsets, 1 also stores
    them (after the light) into ``offs``, 2 fits nothing and subtracts the given ``offs``
    (a filtered model, :mod:`~nirbeam.transforms.flicker_readout`; ``light`` is then not
    used: it is in ``offs``). With ``mode`` 0 ``offs`` may be (0, 0).
    ``bg_mode`` 0: no background, 1: the scalar ``bg_value``, 2: the median of each
    difference's usable mask pixels. ``blocks``, ``slot_row``, ``comps``, ``comp_off``,
    ``pixels``: a :class:`OldMaskLayout`.
    """
    ng, ny, nx = g.shape
    bw = slot_row.shape[1]
    hmax = 0
    for b in range(blocks.shape[0]):
        hmax = max(hmax, blocks[b, 2])
    nm = pixels.shape[0]
    off = np.empty((nx, 1))
    good = np.empty(nx, np.bool_)
    use = np.empty((max(hmax, 1), bw), np.bool_)
    keep = np.empty((max(hmax, 1), bw), np.bool_)
    d = np.empty((max(hmax, 1), bw))
    s = np.empty((max(hmax, 1), bw))
    n = np.zeros(bw, np.int64)
    m = np.empty(bw, np.int64)
    om = np.empty(bw)
    oz = np.empty(bw)
    scale = np.empty(bw)
    lim = np.empty(bw)
    tot = np.empty(bw)
    allv = np.empty(max(nm, 1) if bg_mode == 2 else 1)
    buf = np.empty(max(nm, 1) if bg_mode == 2 else 1)
    acc = np.zeros((ny, nx)) if not from_first else np.zeros((1, 1))
    gf = g.reshape((ng, ny * nx))
    qf = gdq.reshape((ng, ny * nx))
    pf = pdq.reshape(ny * nx)
    # the model's MAD (correction_variance): the mask pixels without a bad_pixel bit
    upix = np.empty(nm, np.int64)
    nmu = 0
    for i in range(nm):
        px = pixels[i]
        upix[nmu] = px
        nmu += (np.int64(pf[px]) & bad_pixel) == 0
    upix = upix[:nmu]
    ncol = np.zeros(nx, np.int64)
    use_light = light.shape[0] == nx
    if want_var:
        for b in range(blocks.shape[0]):  # per-column counts from the layout
            c0 = blocks[b, 0]
            for j in range(blocks[b, 3], blocks[b, 3] + blocks[b, 2]):
                rr = slot_row[j]
                for cc in range(blocks[b, 1]):
                    y = rr[cc]
                    if y >= 0:
                        ncol[c0 + cc] += (np.int64(pdq[y, c0 + cc]) & bad_pixel) == 0
    # values stored for the MAD's medians unless there are too many (then streamed)
    store = want_var and ng >= 2 and 0 < (ng - 1) * nmu <= MAD_STORE_MAX
    nv = (ng - 1) * nmu if store else 1
    vals = np.empty(nv)
    work = np.empty(nv if store else 1)
    mbuf = np.empty(nv if store else 1)
    nfin = 0
    for y in range(ny):
        for c in range(nx):
            out[0, y, c] = g[0, y, c]
    # with from_first (jump = 0): the first group's value and whether its pixel is usable
    # (in the mask, no bad_pixel bit, no ``other`` bit in the first group)
    nsl = slot_row.shape[0] if from_first else 0
    base = np.zeros((nsl, bw))
    ok0 = np.zeros((nsl, bw), np.bool_)
    for b in range(blocks.shape[0] if from_first else 0):
        c0 = blocks[b, 0]
        for j in range(blocks[b, 3], blocks[b, 3] + blocks[b, 2]):
            for cc in range(blocks[b, 1]):
                y = slot_row[j, cc]
                if y >= 0:
                    c = c0 + cc
                    base[j, cc] = np.float64(g[0, y, c])
                    ok0[j, cc] = ((np.int64(pdq[y, c]) & bad_pixel) == 0) & (
                        (np.int64(gdq[0, y, c]) & other) == 0)
    for k in range(ng - 1):
        ka = 0 if from_first else k
        kb = k + 1
        if mode == 2:  # the model is given
            for c in range(nx):
                off[c, 0] = offs[k, c]
        bg = bg_value
        if bg_mode == 2 and mode != 2:  # diff_median_background over the mask pixels
            nall = 0
            for i in range(nm):
                px = pixels[i]
                v = np.float64(gf[kb, px]) - np.float64(gf[ka, px])
                q0 = np.int64(qf[ka, px])
                q1 = np.int64(qf[kb, px])
                u = ((np.int64(pf[px]) & bad_pixel) == 0) & (
                    (((q0 | q1) & other) | (q1 & jump)) == 0) & np.isfinite(v)
                allv[nall] = v
                nall += u
            bg = sorted_median(allv, nall, buf) if nall > 0 else 0.0
        for b in range(blocks.shape[0] if mode != 2 else 0):
            c0 = blocks[b, 0]
            w = blocks[b, 1]
            h = blocks[b, 2]
            s0 = blocks[b, 3]
            for cc in range(w):
                n[cc] = 0
            for j in range(h):
                rr = slot_row[s0 + j]
                b0r = base[s0 + j]
                ok0r = ok0[s0 + j]
                for cc in range(w):
                    y = rr[cc]
                    u = False
                    dv = 0.0
                    if from_first:  # the first group's part is the same in every difference
                        if ok0r[cc]:
                            v = np.float64(g[kb, y, c0 + cc]) - b0r[cc]
                            u = ((np.int64(gdq[kb, y, c0 + cc]) & other) == 0) & np.isfinite(v)
                            dv = v - bg
                    elif y >= 0:
                        c = c0 + cc
                        v = np.float64(g[kb, y, c]) - np.float64(g[ka, y, c])
                        q0 = np.int64(gdq[ka, y, c])
                        q1 = np.int64(gdq[kb, y, c])
                        u = ((np.int64(pdq[y, c]) & bad_pixel) == 0) & (
                            (((q0 | q1) & other) | (q1 & jump)) == 0) & np.isfinite(v)
                        dv = v - bg
                    use[j, cc] = u
                    d[j, cc] = dv if u else 0.0
                    s[j, cc] = dv if u else np.inf
                    n[cc] += u
            net = comps[comp_off[h]:comp_off[h + 1]]
            old_block_column_offsets(s, d, use, keep, n, m, om, oz, scale, lim, tot, h, w, net,
                                 use_mean, clip_sigma, min_pixels, c0, good, off)
        if mode != 2:
            fill_columns_inplace(off, good)
            if use_light:  # the mask pixels' static light is no column offset
                for c in range(nx):
                    off[c, 0] = off[c, 0] - light[c] * np.float64(kb - ka)
            if mode == 1:
                for c in range(nx):
                    offs[k, c] = off[c, 0]
        if from_first:
            for y in range(ny):
                for c in range(nx):
                    out[kb, y, c] = np.float32(np.float64(g[kb, y, c]) - off[c, 0])
        else:
            for y in range(ny):
                for c in range(nx):
                    a = acc[y, c] + off[c, 0]
                    acc[y, c] = a
                    out[kb, y, c] = np.float32(np.float64(g[kb, y, c]) - a)
        if store:
            f, mk = old_group_values(out, kb, 0 if from_first else k, upix,
                                  vals[k * nmu:(k + 1) * nmu], work, mbuf, from_first)
            nfin += f
            if np.isnan(mk):  # a group without values: left out of the MAD
                for i in range(k * nmu, (k + 1) * nmu):
                    vals[i] = np.nan
    if not want_var:
        return -2.0
    mad = -1.0
    if ng >= 2 and nmu > 0:
        if store:
            if nfin >= 2:
                mad = old_pooled_mad(vals, (ng - 1) * nmu, mbuf, work)
        else:
            msk = np.zeros(ny * nx, np.bool_)
            for i in range(nmu):
                msk[upix[i]] = True
            mad = model_mad(out, msk.reshape((ny, nx)), from_first)
    if mad != -1.0:  # else no model variance (var stays as given: zeros)
        # ``two`` is 2.0 given at run time: libm's pow, as numpy's scalar power in
        # correction_variance (x * x differs from it in the last bit now and then)
        s2 = (MAD_TO_SIGMA * mad) ** two
        old_column_variance_kernel(ncol, s2, k_var, a_var, resid, min_pixels, var)
    return mad


@njit(cache=True, error_model="numpy")
def old_column_variance_kernel(ncol, s2, k, a, resid, min_pixels, var):
    """``var`` (ny, nx): :func:`~nirbeam.transforms.flicker_groups._column_variance`
    (``column_factor(n) s2`` per column with ``n = ncol >= min_pixels``, i.e.
    ``e s2 / (n - RESID_B - RESID_C / n)`` with ``e = k (1 + a / n)`` (``e s2 / n`` without ``resid``),
    else twice the NaN-median of those, ``k s2`` when no column has enough pixels)."""
    ny, nx = var.shape
    col = np.empty(nx)
    vals = np.empty(nx)
    nv = 0
    anyg = False
    for c in range(nx):
        if ncol[c] >= min_pixels:
            anyg = True
            nc = max(np.float64(ncol[c]), 1.0)
            e = k * (1.0 + a / nc)
            v = (e / (max(nc - RESID_B - RESID_C / nc, 1.0) if resid else nc)) * s2
            col[c] = v
            vals[nv] = v
            nv += not np.isnan(v)
        else:
            col[c] = np.nan
    fill = k * s2
    if anyg:
        fill = 2.0 * (sorted_median(vals, nv, np.empty(max(nv, 1))) if nv > 0 else np.nan)
    for c in range(nx):
        if ncol[c] < min_pixels:
            col[c] = fill
    for y in range(ny):
        for c in range(nx):
            var[y, c] = col[c]


@njit(cache=True, error_model="numpy")
def old_block_column_offsets(s, d, use, keep, n, m, om, oz, scale, lim, tot, h, w, net, use_mean,
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
    work arrays."""
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
        for _ in range(3):
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


class OldFusedMedianHook:
    """``_FusedMedianHook`` at 849d0cb (``__init__`` and the fast path of ``__call__``)."""

    def __init__(self, params, mask, light=None):
        self.light = np.zeros(0) if light is None else np.ascontiguousarray(light, np.float64)
        self.shape = mask.shape
        self.layout = OldMaskLayout.from_mask(mask)
        self.from_first = params.group_reference == "first"
        self.use_mean = params.statistic == "mean"
        self.bg_mode = BG_MEDIAN if params.background == "median" else BG_NONE
        self.min_pixels = int(params.min_pixels)
        self.error_term = bool(params.error_term)
        self.wiener = params.readout_filter == "wiener"
        self.kind = "group" if self.from_first else "difference"
        self.k, self.a, self.resid = variance_factors(params)
        bits = np.uint32(GROUP_BAD_BITS)
        if self.from_first:
            self.jump, self.other = 0, int(bits)
        else:
            self.jump = int(bits & np.uint32(dqflags.JUMP_DET))
            self.other = int(bits & ~np.uint32(dqflags.JUMP_DET))

    def __call__(self, groups, groupdq, pixeldq):
        g, q, p = groups, groupdq, pixeldq
        lay = self.layout
        out = np.empty(g.shape, np.float32)
        want_var = self.error_term or self.wiener
        var = np.zeros(self.shape) if want_var else np.zeros((1, 1))
        offs = np.empty((g.shape[0] - 1, self.shape[1])) if self.wiener else np.empty((0, 0))
        args = (int(dqflags.DO_NOT_USE), self.other, self.jump, self.bg_mode, 0.0,
                self.use_mean, 3.0, self.min_pixels, self.from_first, lay.blocks,
                lay.slot_row, lay.comps, lay.comp_off, lay.pixels)
        old_hook_median_kernel(g, q, p, *args, want_var, self.k, self.a, self.resid, 2.0,
                               self.light, out, var, offs,
                               1 if self.wiener else 0)
        if self.wiener:
            filt, gain, _ = readout_wiener(offs, noise_level(var[0]))
            var = np.zeros(self.shape) if self.error_term else np.zeros((1, 1))
            old_hook_median_kernel(g, q, p, *args, self.error_term, self.k, self.a,
                                   self.resid, 2.0, self.light, out,
                                   var, np.ascontiguousarray(filt), 2)
            if self.error_term:
                var *= gain
        if not self.error_term:
            return out
        return out, (var, self.kind)


def old_column_light(mask, light):
    """make_group_hook's per-column light (its mean over each column's mask pixels)."""
    fixed = np.asarray(mask, bool)
    lit = np.ascontiguousarray(light, np.float64)
    n = fixed.sum(axis=0)
    return np.where(n > 0, np.where(fixed, lit, 0.0).sum(axis=0) / np.maximum(n, 1), 0.0)


# --------------------------------------------------------------------------- inputs
def make_case(seed, ng, ny, nx, detector="NRS1", *, integer=False, dtype=np.float32):
    """A ramp with a curved trace, 1/f column offsets per read, flagged groups and pixels,
    NaN / inf / outliers, and a scene mask with few pixels in some columns (NRS2: the
    trace elsewhere and bent the other way along x)."""
    rng = np.random.default_rng(seed)
    x = np.arange(nx)
    y = np.arange(ny)[:, None]
    if detector == "NRS1":
        yc = 0.45 * ny + 0.15 * ny * (x / nx) ** 2
    else:
        yc = 0.6 * ny - 0.2 * ny * (x / nx)
    flux = 800.0 * np.exp(-0.5 * ((y - yc[None, :]) / 1.6) ** 2)
    ramp = np.cumsum(rng.normal(40.0, 8.0, (ng, ny, nx)) + flux[None], axis=0)
    ramp += rng.normal(0.0, 15.0, (ng, 1, nx))
    if integer:
        ramp = np.round(ramp + 1000.0)  # ties in the column statistics
    ramp = ramp.astype(dtype)
    gdq = np.zeros(ramp.shape, np.uint8)
    gdq[rng.random(ramp.shape) < 0.01] |= dqflags.JUMP_DET
    gdq[rng.random(ramp.shape) < 0.005] |= dqflags.SATURATED
    gdq[min(2, ng - 1)][rng.random((ny, nx)) < 0.05] |= dqflags.DROPOUT
    pdq = np.zeros((ny, nx), np.uint32)
    pdq[rng.random((ny, nx)) < 0.03] = dqflags.DO_NOT_USE
    pdq[rng.random((ny, nx)) < 0.03] |= dqflags.HOT
    ramp[rng.random(ramp.shape) < 0.003] = np.nan
    ramp[rng.random(ramp.shape) < 0.003] += 5e3  # outliers: the clipping drops them
    ramp[rng.random(ramp.shape) < 0.0005] = np.inf
    if integer:
        ramp[rng.random(ramp.shape) < 0.01] = -0.0  # signed zeros among the ties
    mask = (np.abs(y - yc[None, :]) > 6.0) & (rng.random((ny, nx)) > 0.1)
    sparse = rng.random(nx) < 0.08  # columns with 0..4 mask pixels
    for c in np.flatnonzero(sparse):
        keep = rng.choice(ny, rng.integers(0, 5), replace=False)
        mask[:, c] = False
        mask[keep, c] = True
    mask[:, 0] = False
    mask[:, min(5, nx - 1)] = True  # a column of all rows
    return ramp, gdq, pdq, mask


def _views(res, error_term):
    if not error_term:
        return np.ascontiguousarray(res).view(np.uint32), None, None
    out, (var, kind) = res
    return (np.ascontiguousarray(out).view(np.uint32), np.ascontiguousarray(var).view(
        np.uint64), kind)


def assert_same(new, old, error_term=True):
    a, b = _views(new, error_term), _views(old, error_term)
    np.testing.assert_array_equal(a[0], b[0])
    if error_term:
        np.testing.assert_array_equal(a[1], b[1])
        assert a[2] == b[2]


def _hooks(params, mask, light=None):
    new = make_group_hook(params, mask, light)
    assert type(new).__name__ == "_FusedMedianHook"
    old = OldFusedMedianHook(params, mask, None if light is None else
                             old_column_light(mask, light))
    return new, old


SHAPES = [(3, 32, 512), (5, 32, 512), (20, 32, 2048), (70, 32, 2048)]


@pytest.mark.parametrize("detector", ["NRS1", "NRS2"])
@pytest.mark.parametrize(("ng", "ny", "nx"), SHAPES)
def test_default_hook_equals_old(ng, ny, nx, detector):
    """The pipeline's default (FlickerParams(): clipped mean against the first group, the
    model variance), with and without a light model: == the old kernels."""
    groups, gdq, pdq, mask = make_case(ng * 7 + nx + (detector == "NRS2"), ng, ny, nx,
                                       detector)
    params = FlickerParams(detector=detector)
    new, old = _hooks(params, mask)
    res = new(groups, gdq, pdq)
    assert_same(res, old(groups, gdq, pdq))
    assert np.isnan(res[0]).any() and res[1][0].max() > 0
    light = np.abs(np.random.default_rng(ng).normal(0.5, 0.3, (ny, nx)))
    new, old = _hooks(params, mask, light)
    assert_same(new(groups, gdq, pdq), old(groups, gdq, pdq))


@pytest.mark.parametrize(("ng", "ny", "nx"), [(5, 32, 512), (20, 32, 2048)])
def test_default_hook_ties_and_signed_zeros(ng, ny, nx):
    groups, gdq, pdq, mask = make_case(90 + ng, ng, ny, nx, integer=True)
    new, old = _hooks(FlickerParams(), mask)
    assert_same(new(groups, gdq, pdq), old(groups, gdq, pdq))
    g64 = groups.astype(np.float64)
    assert_same(new(g64, gdq, pdq), old(g64, gdq, pdq))


OTHER_PARAMS = [
    FlickerParams(group_reference="previous"),
    FlickerParams(statistic="median"),
    FlickerParams(background="median", min_pixels=6),
    FlickerParams(readout_filter="wiener"),
    FlickerParams(error_term=False),
    FlickerParams(readout_filter="wiener", error_term=False),
    FlickerParams(group_reference="previous", statistic="median", min_pixels=2),
]


@pytest.mark.parametrize("params", OTHER_PARAMS)
@pytest.mark.parametrize(("ng", "ny", "nx"), [(6, 13, 67), (5, 32, 512), (20, 32, 2048)])
def test_other_settings_equal_old(params, ng, ny, nx):
    groups, gdq, pdq, mask = make_case(300 + ng + nx, ng, ny, nx, "NRS2")
    new, old = _hooks(params, mask)
    assert_same(new(groups, gdq, pdq), old(groups, gdq, pdq), params.error_term)
    other = make_case(400 + ng + nx, ng, ny, nx, "NRS2")[:3]  # the work arrays reused
    assert_same(new(*other), old(*other), params.error_term)
    if params.background is None:
        light = np.abs(np.random.default_rng(3).normal(0.5, 0.3, (ny, nx)))
        new, old = _hooks(params, mask, light)
        assert_same(new(groups, gdq, pdq), old(groups, gdq, pdq), params.error_term)


def test_reused_work_arrays_and_streamed_mad(monkeypatch):
    """One hook over integrations of different content and group counts (its work
    arrays are reused), a group without mask values, few finite values, no usable mask
    pixel; and the streamed MAD (beyond MAD_STORE_MAX) == the old stored one."""
    from nirbeam.transforms import flicker_hook

    ny, nx = 32, 512
    cases = [make_case(s, ng, ny, nx) for s, ng in [(1, 5), (2, 5), (3, 8), (4, 5)]]
    mask = cases[0][3]
    new, old = _hooks(FlickerParams(), mask)
    for groups, gdq, pdq, _ in cases + cases[:1]:
        assert_same(new(groups, gdq, pdq), old(groups, gdq, pdq))
    groups, gdq, pdq, _ = cases[1]
    g = groups.copy()
    g[2][mask] = np.nan  # no value of group 2 in the mask: left out of the MAD
    assert_same(new(g, gdq, pdq), old(g, gdq, pdq))
    g[1:][:, mask] = np.nan
    g[3][np.argwhere(mask)[0][0], np.argwhere(mask)[0][1]] = 5.0  # one finite value
    res = new(g, gdq, pdq)
    assert_same(res, old(g, gdq, pdq))
    assert not res[1][0].any()
    dead = pdq | np.uint32(dqflags.DO_NOT_USE)
    assert_same(new(groups, gdq, dead), old(groups, gdq, dead))
    monkeypatch.setattr(flicker_hook, "MAD_STORE_MAX", 100)  # streamed in the new hook
    for groups, gdq, pdq, _ in cases[:2]:
        assert_same(new(groups, gdq, pdq), old(groups, gdq, pdq))


def test_layout_unchanged():
    """The mask layout keeps the old arrays, plus the flat index of each slot's pixel."""
    from nirbeam.transforms.flicker_hook import MaskLayout

    for nx in (512, 2048, 67):
        mask = make_case(7, 3, 32, nx)[3]
        new, old = MaskLayout.from_mask(mask), OldMaskLayout.from_mask(mask)
        for name in ("blocks", "slot_row", "comps", "comp_off", "pixels"):
            np.testing.assert_array_equal(getattr(new, name), getattr(old, name))
        ny = mask.shape[0]
        valid = new.slot_row >= 0
        assert np.all(new.slot_flat[~valid] == ny * nx)  # the NaN past the plane
        rows, cols = np.divmod(new.slot_flat[valid], nx)
        np.testing.assert_array_equal(rows, new.slot_row[valid])
        assert mask[rows, cols].all() and valid.sum() == mask.sum()
        for c0, w, h, first in new.blocks:  # each slot's column is its block's column
            sl = new.slot_flat[first:first + h, :w]
            ok = new.slot_row[first:first + h, :w] >= 0
            assert np.all((sl % nx == c0 + np.arange(w))[ok])


# --------------------------------------------------------------------------- session 9
# The model variance's medians by counting (flicker_hook._group_middle,
# _median_in_bracket, _pooled_mad with a bracket; non-finite values stored as +inf):
# exact order statistics for any pivots / brackets, == numpy and == the old kernels.
def _order_stats(v):
    """(s[lo], s[hi]) of the sorted non-NaN values, numpy."""
    s = np.sort(v[~np.isnan(v)])
    n = s.size
    return s[(n - 1) // 2], s[n // 2]


def _value_sets():
    """Seeded value sets: normal, integer ties, two values, one value, +-inf and NaN
    entries, signed zeros, even and odd counts, sizes around the block lengths."""
    rng = np.random.default_rng(9)
    sets = []
    for n in (1, 2, 3, 15, 16, 17, 63, 64, 65, 1000, 1023, 4096, 4097, 20193, 20194):
        sets.append(rng.normal(40.0, 12.0, n))
        sets.append(np.round(rng.normal(0.0, 3.0, n)))  # ties
        sets.append(rng.choice([-1.0, 2.0], n))  # two values
        v = rng.normal(0.0, 5.0, n)
        v[rng.random(n) < 0.05] = np.nan
        v[rng.random(n) < 0.02] = np.inf
        v[rng.random(n) < 0.01] = -np.inf
        if np.isnan(v).all():
            v[0] = 1.5
        sets.append(v)
        z = np.where(rng.random(n) < 0.5, -0.0, 0.0)  # signed zeros only
        sets.append(z)
    sets.append(np.full(5000, 7.0))  # all equal
    s = rng.normal(0.0, 1.0, 5000)
    s[:2500] = np.nan  # half NaN
    sets.append(s)
    sets.append(np.sort(rng.normal(0.0, 1.0, 5000)))  # sorted / reversed: the sample's
    sets.append(np.sort(rng.normal(0.0, 1.0, 5000))[::-1].copy())  # ranks off
    return sets


@pytest.mark.parametrize("absdev", [False, True])
def test_pair_counted_is_exact(absdev):
    """_pair_counted (sampled bracket, counts, interpolated narrowing, blocks of 16) ==
    numpy's order statistics of the non-NaN values (``|v - c|`` with absdev; +inf
    entries as stored), whatever the sample: 1..8192 sampled values, sorted and
    reversed inputs, ties, NaN."""
    from nirbeam.transforms.flicker_hook import _pair_counted

    for v in _value_sets():
        src = np.where(np.isinf(v), np.inf, v) if absdev else v
        c = 0.75 if absdev else 0.0
        w = np.abs(src - c) if absdev else src
        nn = int((~np.isnan(w)).sum())
        if nn == 0:
            continue
        lo, hi = (nn - 1) // 2, nn // 2
        want = _order_stats(w)
        for ns in (1, 2, 7, 256, 1024, 8192):
            got = _pair_counted(src.copy(), src.size, lo, hi, c, absdev, ns,
                                np.empty(src.size + 1))
            assert np.array_equal(np.array(got), np.array(want)), (src.size, ns, got, want)
        if nn > 2:  # other ranks than the middle ones
            for r in (0, 1, nn - 2):
                s_ = np.sort(w[~np.isnan(w)])
                got = _pair_counted(src.copy(), src.size, r, r + 1, c, absdev, 64,
                                    np.empty(src.size + 1))
                assert np.array_equal(np.array(got), np.array((s_[r], s_[r + 1])))


def test_median_in_bracket_is_exact():
    """_median_in_bracket == numpy's order statistics for brackets that hold the ranks,
    miss them below or above, are empty or a single value; NaN and +inf entries."""
    from nirbeam.transforms.flicker_hook import _median_in_bracket

    for v in _value_sets():
        vals = np.where(np.isnan(v) | np.isfinite(v), v, np.inf)  # as stored: +inf
        nf = int(np.isfinite(vals).sum())
        if nf == 0:
            continue
        fin = np.sort(vals[np.isfinite(vals)])
        lo, hi = (nf - 1) // 2, nf // 2
        want = (fin[lo], fin[hi])
        m = 0.5 * (fin[lo] + fin[hi])
        for p1, p2 in [(fin[lo], fin[hi]), (m, m), (0.0, 0.0), (fin[0], fin[-1]),
                       (m + 1.0, m + 2.0), (m - 2.0, m - 1.0), (-np.inf, np.inf),
                       (fin[hi], fin[hi]), (fin[lo], fin[lo])]:
            got = _median_in_bracket(vals.copy(), vals.size, lo, hi, p1, p2,
                                     np.empty(vals.size + 1))
            assert np.array_equal(np.array(got), np.array(want)), (vals.size, p1, p2)


@pytest.mark.parametrize("bracket", [False, True])
def test_pooled_mad_counted_equals_old(bracket):
    """_pooled_mad on +inf-marked values (counted from count_min = 1, with and without
    the groups' bracket, or a wrong one) == the old compacting one on the same values,
    and == numpy."""
    from nirbeam.transforms.flicker_hook import _pooled_mad

    for v in _value_sets():
        vals = np.where(np.isfinite(v), v, np.inf)
        nf = int(np.isfinite(vals).sum())
        old_in = np.where(np.isfinite(v), v, np.nan)
        want = old_pooled_mad(old_in.copy(), old_in.size, np.empty(v.size + 1),
                              np.empty(v.size + 1))
        if nf:
            fin = vals[np.isfinite(vals)]
            assert want == np.median(np.abs(fin - np.median(fin)))
        for count_min, p1, p2 in [(1, 0.0, 0.0), (1, -0.5, 0.25), (1, 3.0, 4.0),
                                  (1 << 30, 0.0, 0.0)]:
            got = _pooled_mad(vals.copy(), vals.size, nf, np.empty(v.size + 1), count_min,
                              bracket, p1, p2)
            assert (np.isnan(got) and np.isnan(want)) or got == want, (v.size, got, want)
            assert np.signbit(got) == np.signbit(want)


def test_counted_path_in_the_hook(monkeypatch):
    """The hook with every MAD counted (COUNT_MIN = 1: PRISM-size cases too), integer
    ties, a group with no mask value, few finite values == the old kernels."""
    from nirbeam.transforms import flicker_hook

    monkeypatch.setattr(flicker_hook, "COUNT_MIN", 1)
    for seed, (ng, ny, nx), integer in [(11, (5, 32, 512), False), (12, (5, 32, 512), True),
                                        (13, (6, 13, 67), True), (14, (3, 32, 512), False),
                                        (15, (70, 32, 2048), True)]:
        groups, gdq, pdq, mask = make_case(seed, ng, ny, nx, integer=integer)
        new, old = _hooks(FlickerParams(), mask)
        assert_same(new(groups, gdq, pdq), old(groups, gdq, pdq))
        g = groups.copy()
        g[min(2, ng - 1)][mask] = np.nan  # a group without values
        assert_same(new(g, gdq, pdq), old(g, gdq, pdq))
        g[1:][:, mask] = np.inf  # no finite value left
        g[1][np.argwhere(mask)[0][0], np.argwhere(mask)[0][1]] = 5.0
        g[1][np.argwhere(mask)[1][0], np.argwhere(mask)[1][1]] = -3.0
        assert_same(new(g, gdq, pdq), old(g, gdq, pdq))
    params = FlickerParams(group_reference="previous")
    groups, gdq, pdq, mask = make_case(16, 20, 32, 2048)
    new, old = _hooks(params, mask)
    assert_same(new(groups, gdq, pdq), old(groups, gdq, pdq))


def test_many_nonfinite_values_direct_path():
    """Many infinite mask values (stored as +inf for the MAD) with the MAD below
    COUNT_MIN (a sampled bracket, then counting; order_pair before session 12) and above
    it == the old kernels."""
    from nirbeam.transforms import flicker_hook

    for ng, ny, nx in [(4, 32, 512), (6, 13, 67), (20, 32, 2048)]:
        groups, gdq, pdq, mask = make_case(70 + ng, ng, ny, nx)
        rng = np.random.default_rng(ng)
        g = groups.copy()
        g[rng.random(g.shape) < 0.2] = np.inf
        g[rng.random(g.shape) < 0.05] = -np.inf
        g[rng.random(g.shape) < 0.05] = np.nan
        new, old = _hooks(FlickerParams(), mask)
        assert flicker_hook.HookWork(new.layout, ng, True, True, False).store
        assert_same(new(g, gdq, pdq), old(g, gdq, pdq))
