"""The default group-level 1/f hook in one numba pass per integration.

:func:`~nirbeam.transforms.flicker_groups.make_group_hook` with a fixed scene mask and
``method='median'`` (the default: per-column 3-sigma-clipped mean against the first group)
calls :func:`hook_median_kernel` once per integration: the usable mask pixels of every
group, the per-column statistics, the subtraction, the model's MAD and the per-column
variance.

What is fixed per exposure is derived once (:class:`MaskLayout`, from the scene mask):
the mask rows of every column, packed per block of :data:`BLOCK` columns into as many
"slots" as the block's fullest column has mask pixels, the sorting network of each slot
count, and the mask pixels' flat indices. The column statistics then sort ~16 slots
instead of all ``ny`` rows (non-mask rows are +inf to a sort, and add 0.0 to a sum along
y: skipping them changes no bit, because such a sum is never -0.0), so the results are
those of :func:`~nirbeam.transforms.flicker_kernels.groups_median_kernel` and
:func:`~nirbeam.transforms.flicker_kernels.model_mad` bit for bit (tests/
test_flicker_fast.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from nirbeam.transforms.flicker_kernels import block_column_offsets, model_mad
from nirbeam.transforms.flicker_params import MAD_TO_SIGMA, RESID_B, RESID_C
from nirbeam.transforms.flicker_sort import (
    BLOCK,
    count_in,
    fill_columns_inplace,
    order_pair,
    pair_inplace,
    sample_pivots,
    sorted_median,
    sorting_network,
    value_at,
)

MAD_STORE_MAX = 1 << 23
"""Up to this many (groups x mask pixels) values the model's MAD selects from a stored
copy (two work arrays of 64 MB); beyond it (full frames) :func:`model_mad` streams them."""


class HookWork:
    """The work arrays of :func:`hook_median_kernel` for one layout, number of groups and
    settings, allocated once (numpy) and reused by every integration of that shape.

    ``store``: whether the MAD's values are stored (``MAD_STORE_MAX`` as it is when the
    work arrays are made)."""

    def __init__(self, layout: MaskLayout, ngroups: int, want_var: bool, from_first: bool,
                 bg_median: bool):
        ny, nx = layout.shape
        nm = layout.pixels.shape[0]
        nv = (ngroups - 1) * nm
        self.key = (ngroups, want_var, from_first, bg_median, MAD_STORE_MAX, COUNT_MIN)
        self.count_min = COUNT_MIN
        self.store = bool(want_var and ngroups >= 2 and 0 < nv <= MAD_STORE_MAX)
        big = nv if self.store else 1
        self.arrays = (
            np.empty(big), np.empty(big),  # vals, mbuf
            np.empty(max(nm, 1)), np.empty(max(nm, 1), np.int64),  # work, upix
            np.zeros(ny * nx), np.zeros(ny * nx + 1),  # base, dd
            np.zeros((1, 1) if from_first else (ny, nx)),  # acc
            np.empty(max(nm, 1) if bg_median else 1),  # allv
            np.empty(max(nm, 1) if bg_median else 1),  # buf
        )


@dataclass(frozen=True, eq=False)
class MaskLayout:
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
    slot_flat : int64 (nslots, BLOCK)
        The flat index ``row * nx + column`` of those pixels in a group plane; ``ny * nx``
        (one past the plane: the kernel keeps a NaN there) where ``slot_row`` is -1.
    comps : int64 (ncomp, 2), comp_off : int64 (ny + 2,)
        Sorting networks of 0..ny values, the network of ``h`` values being
        ``comps[comp_off[h]:comp_off[h + 1]]``.
    pixels : int64 (nmask,)
        Flat (row-major) indices of the mask pixels.
    """

    shape: tuple
    blocks: np.ndarray
    slot_row: np.ndarray
    slot_flat: np.ndarray
    comps: np.ndarray
    comp_off: np.ndarray
    pixels: np.ndarray

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> MaskLayout:
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
        blk = np.array(blocks, np.int64).reshape(-1, 4)
        slot_row = np.ascontiguousarray(np.concatenate(slots) if slots else
                                        np.zeros((0, BLOCK), np.int64))
        slot_col = np.zeros(slot_row.shape, np.int64)
        for c0, _, h, first in blk:
            slot_col[first:first + h] = c0 + np.arange(BLOCK)
        slot_flat = np.where(slot_row >= 0, slot_row * nx + slot_col, ny * nx)
        return cls(
            (ny, nx),
            blk,
            slot_row,
            np.ascontiguousarray(slot_flat, np.int64),
            np.ascontiguousarray(np.concatenate(nets).astype(np.int64).reshape(-1, 2)),
            off,
            np.flatnonzero(m.ravel()).astype(np.int64),
        )


class HookWorkPool:
    """:class:`HookWork` sets of one layout not in use: :meth:`take` one (made when none
    fits), :meth:`give` it back after the call. ``list.pop`` and ``append`` are atomic,
    so calls from several threads each get their own set."""

    def __init__(self, layout: MaskLayout):
        self.layout = layout
        self.free = []

    def take(self, ngroups: int, want_var: bool, from_first: bool, bg_median: bool):
        key = (ngroups, want_var, from_first, bg_median, MAD_STORE_MAX, COUNT_MIN)
        while self.free:
            try:
                w = self.free.pop()
            except IndexError:
                break
            if w.key == key:
                return w
        return HookWork(self.layout, ngroups, want_var, from_first, bg_median)

    def give(self, work: HookWork):
        self.free.append(work)


@njit(cache=True, nogil=True, error_model="numpy")
def _group_values(out, k, ref, upix, vals, work, buf, per_group, mid):
    """The background values of group ``k`` that :func:`model_mad` takes the medians of,
    into ``vals[:nmu]`` (``nmu = upix.size``): ``out[k] - out[ka]`` at the pixels
    ``upix`` (``ref``: ``out[ka]`` there as float64, gathered by the caller, once per
    integration for the first group), less the group's NaN-ignoring median when
    ``per_group`` (right after the group was written: its values are in cache); a value that is not finite is stored as
    +inf (:func:`_pooled_mad`: the ranks of the finite values stay as they are).
    Returns (finite values before the median is taken off, the median: 0.0 without
    ``per_group``, NaN when the group has no value; its values then count for nothing,
    finite values stored: 0 then).

    With ``per_group``, ``mid`` gets the largest negative and the smallest positive
    stored value (0.0 where there is none, and both 0.0 for an odd count of non-NaN
    values: the middle value less the median): no value below the first has a rank
    above the group's lower middle rank, and the values up to the second include its
    upper middle rank, so the pooled median of all groups lies between the least
    ``mid[0]`` and the largest ``mid[1]`` (:func:`_pooled_mad`'s bracket; it is checked
    by counting there, so a group with infinities, whose finite ranks shift, costs
    time, never exactness)."""
    ng, ny, nx = out.shape
    of = out.reshape((ng, ny * nx))
    nmu = upix.shape[0]
    nfin = 0
    nnan = 0
    for i in range(nmu):
        px = upix[i]
        v = np.float64(of[k, px]) - ref[i]
        vals[i] = v
        nfin += np.isfinite(v)
        nnan += np.isnan(v)
    if not per_group:
        if nfin < nmu:
            for i in range(nmu):
                v = vals[i]
                vals[i] = v if np.isfinite(v) else np.inf
        return nfin, 0.0, nfin
    nn = nmu - nnan
    if nn == 0:
        return nfin, np.nan, 0
    if nmu >= GROUP_COUNT_MIN:  # np.nanmedian: ranks among the non-NaN values
        a, b = _pair_counted(vals, nmu, (nn - 1) // 2, nn // 2, 0.0, False, GROUP_SAMPLE,
                             buf)
        med = 0.5 * (a + b)
    else:
        src = vals
        if nnan > 0:  # np.nanmedian: the values less the NaN
            m = 0
            for i in range(nmu):
                v = vals[i]
                work[m] = v
                m += not np.isnan(v)
            src = work
        med = sorted_median(src, nn, buf)
    nkeep = 0
    for i in range(nmu):
        r = vals[i] - med
        f = np.isfinite(r)
        vals[i] = r if f else np.inf
        nkeep += f
    mid[0] = 0.0  # odd count: the middle value less the median is 0.0
    mid[1] = 0.0
    if nn % 2 == 0:
        # the largest negative and the smallest positive value, as integer minima of
        # the bit patterns (a float max / min reduction does not vectorise): below 0
        # and above -0.0's pattern the least pattern is the largest value; above 0
        # (below +inf) the least is the smallest
        bits = vals[:nmu].view(np.int64)
        none = np.int64(0x7FFFFFFFFFFFFFFF)
        nzero = np.int64(-0x7FFFFFFFFFFFFFFF - 1)
        pinf = np.int64(0x7FF0000000000000)
        mneg = none
        mpos = none
        for i in range(nmu):
            q = bits[i]
            mneg = min(mneg, q if (q > nzero) & (q < 0) else none)
            mpos = min(mpos, q if (q > 0) & (q < pinf) else none)
        mi = mid.view(np.int64)
        if mneg != none:
            mi[0] = mneg
        if mpos != none:
            mi[1] = mpos
    return nfin, med, nkeep


GROUP_COUNT_MIN = 4096
"""From this many values on, a group's median is selected by counting
(:func:`_pair_counted`); below, by :func:`sorted_median`."""
COUNT_MIN = 1 << 16
"""From this many stored values on, :func:`_pooled_mad` brackets the second median
(the MAD) from :data:`MAD_SAMPLE` values; below, from :data:`MAD_SAMPLE_SMALL`."""


@njit(cache=True, nogil=True, error_model="numpy")
def _select_in(src, n, lo, hi, p1, p2, nb, center, absdev, buf):
    """``(s[lo], s[hi])`` of the sorted non-NaN values of ``src[:n]`` (``|src - center|``
    when ``absdev``) given that ``nb`` of them are below ``p1`` and ranks ``lo..hi`` are
    in ``[p1, p2]``: the values in ``[p1, p2]`` copied into ``buf`` (a block of 16
    only when a branch-free count finds one in it) and selected there."""
    m = 0
    nblk = n // 16
    for b in range(nblk + 1):
        i0 = b * 16
        w = 16 if b < nblk else n - i0
        h = 0
        for i in range(w):  # a fixed-length count: vectorises
            v = value_at(src, i0 + i, center, absdev)
            h += (v >= p1) & (v <= p2)
        if h > 0:
            for i in range(w):
                v = value_at(src, i0 + i, center, absdev)
                buf[m] = v
                m += (v >= p1) & (v <= p2)
    return pair_inplace(buf, m, lo - nb, hi - nb)


@njit(cache=True, nogil=True, error_model="numpy")
def _median_in_bracket(src, n, lo, hi, p1, p2, buf):
    """``(s[lo], s[hi])`` of ``s``, the sorted non-NaN values of ``src[:n]`` (their
    ranks; NaN entries are left out), exact for any ``p1 <= p2``, which only decide
    the cost: :func:`~nirbeam.transforms.flicker_sort.count_in`; if ``[p1, p2]`` holds ranks ``lo..hi``, its values are
    selected (:func:`_select_in`), else all values."""
    nb, ni = count_in(src, n, p1, p2, 0.0, False)
    if not (nb <= lo and nb + ni > hi):  # the bracket misses: all values
        nb = 0
        p1 = -np.inf
        p2 = np.inf
    return _select_in(src, n, lo, hi, p1, p2, nb, 0.0, False, buf)


MAD_SAMPLE = 8192
"""Values sampled for the pooled MAD's first bracket (:func:`_pair_counted`) ..."""
MAD_SAMPLE_SMALL = 512
"""... and below :data:`COUNT_MIN` values (PRISM's 7 x 7247: 0.063 ms per integration,
0.072 with 1024, 0.094 with 2048, 0.17 with 8192; ``order_pair_abs`` 0.10)."""
GROUP_SAMPLE = 96
"""Values sampled for a group median's first bracket (:func:`_pair_counted`): its wide
bracket is narrowed by counting anyway (PRISM's 7 groups x 7247 values: 0.089 ms per
integration with 64 or 96, 0.15 with 256, 0.16 with 512, 0.18 with 32; 256 before
session 12)."""
COUNT_ROUNDS = 3
"""At most this many narrowing rounds in :func:`_pair_counted`, ..."""
COUNT_SELECT = 256
"""... while the bracket holds more than this many values."""


@njit(cache=True, nogil=True, error_model="numpy")
def _pair_counted(src, n, lo, hi, center, absdev, ns, buf):
    """``(s[lo], s[hi])`` of ``s``, the sorted non-NaN values of ``src[:n]``
    (``|src - center|`` when ``absdev``; their ranks), exact whatever the sample: a
    bracket of the ranks from ``ns`` evenly spaced values (as :func:`order_pair`'s
    first round; NaN read as +inf), checked by counting (:func:`~nirbeam.transforms.flicker_sort.count_in`; a miss:
    every value), then narrowed by linear interpolation of the rank inside it (+-6 %
    of its width, kept only if a count confirms it; :data:`COUNT_ROUNDS`,
    :data:`COUNT_SELECT`), and its values selected (:func:`_select_in`)."""
    ns = min(ns, n)
    for i in range(ns):
        v = value_at(src, (i * n) // ns, center, absdev)
        buf[i] = np.inf if np.isnan(v) else v
    q1, q2 = sample_pivots(buf, ns, n, lo)
    nb, ni = count_in(src, n, q1, q2, center, absdev)
    if not (nb <= lo and nb + ni > hi):  # the sample misled: every value
        return _select_in(src, n, lo, hi, -np.inf, np.inf, np.int64(0), center, absdev, buf)
    for _ in range(COUNT_ROUNDS):
        if ni <= COUNT_SELECT or not np.isfinite(q2 - q1):
            break
        t = (lo - nb + 0.5) / ni
        u1 = max(q1 + (t - 0.06) * (q2 - q1), q1)
        u2 = min(q1 + (t + 0.06) * (q2 - q1), q2)
        if not u1 <= u2:
            break
        nb2, ni2 = count_in(src, n, u1, u2, center, absdev)
        if not (nb2 <= lo and nb2 + ni2 > hi):
            break
        q1, q2, nb, ni = u1, u2, nb2, ni2
    return _select_in(src, n, lo, hi, q1, q2, nb, center, absdev, buf)


@njit(cache=True, nogil=True, error_model="numpy")
def _pooled_mad(vals, n, nf, buf, count_min, bracket, p1, p2):
    """MAD of the ``nf`` finite values of ``vals[:n]`` (already less their group's
    median; the others +inf; ``nf`` counted as they were stored):
    ``median(|r - median(r)|)``, NaN when none is finite (:func:`model_mad`'s two
    streamed medians), the same value bit for bit (the sign of a zero first median
    aside: the absolute value removes it).

    The values that are not finite are stored as +inf: above every finite value (also
    as ``|r - center|``), they leave the ranks ``lo``, ``hi`` of the finite values
    as they are, so nothing is compacted. With a ``bracket`` ``p1 <= p2`` (the groups'
    middle values, :func:`_group_values`), the first median is selected by counting
    (:func:`_median_in_bracket`: on 40 real PRISM integrations of 7 x 7247 values ~3x
    cheaper than :func:`order_pair`, so at every count); else by :func:`order_pair`.
    The second by counting (:func:`_pair_counted`), its first bracket from
    :data:`MAD_SAMPLE` values from ``count_min`` values on, below from
    :data:`MAD_SAMPLE_SMALL` (there ~1.6x cheaper than
    :func:`~nirbeam.transforms.flicker_sort.order_pair_abs`, used before session 12)."""
    if nf == 0:
        return np.nan
    lo = (nf - 1) // 2
    hi = nf // 2
    if bracket and p1 <= p2:
        va, vb = _median_in_bracket(vals, n, lo, hi, p1, p2, buf)
        med = 0.5 * (va + vb)
    else:
        med = np.nan
    if np.isnan(med):
        med = order_pair(vals, n, lo, hi, buf)
    ns = MAD_SAMPLE if n >= count_min else MAD_SAMPLE_SMALL
    a, b = _pair_counted(vals, n, lo, hi, med, True, ns, buf)
    return 0.5 * (a + b)


@njit(cache=True, nogil=True, error_model="numpy")
def hook_median_kernel(g, gdq, pdq, bad_pixel, other, jump, bg_mode, bg_value, use_mean,
                       clip_sigma, min_pixels, from_first, blocks, slot_row, slot_flat, comps,
                       comp_off, pixels, want_var, k_var, a_var, resid, two, light, out, var,
                       offs, mode, store, count_min, vals, mbuf, work, upix, base, dd, acc,
                       allv, buf):
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
    difference's usable mask pixels. ``blocks``, ``slot_row``, ``slot_flat``, ``comps``,
    ``comp_off``, ``pixels``: a :class:`MaskLayout`.

    Work arrays (:class:`HookWork`, allocated by the caller once and reused: large
    allocations inside a kernel cost page faults on every call): ``store`` whether the
    MAD's values are stored (``vals``, ``mbuf`` >= (ng - 1) x mask pixels; else
    streamed; ``count_min``: :func:`_pooled_mad`), ``work``, ``upix`` (>= mask pixels), ``base`` (ny * nx), ``dd``
    (ny * nx + 1), ``acc`` (ny, nx) for group differences, ``allv``, ``buf`` (>= mask pixels) for
    ``bg_mode`` 2.
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
    gf = g.reshape((ng, ny * nx))
    qf = gdq.reshape((ng, ny * nx))
    pf = pdq.reshape(ny * nx)
    if not from_first:
        for y in range(ny):
            for c in range(nx):
                acc[y, c] = 0.0
    # the model's MAD (correction_variance): the mask pixels without a bad_pixel bit
    nmu = np.int64(0)
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
    store = store and want_var and ng >= 2 and nmu > 0
    ref = np.empty(nmu if store else 0)  # out[ka] at upix as float64 (_group_values)
    nfin = 0
    nkept = np.int64(0)  # finite values stored for the MAD
    mid = np.zeros(2)
    p1 = np.inf  # the pooled median's bracket (_group_values)
    p2 = -np.inf
    for y in range(ny):
        for c in range(nx):
            out[0, y, c] = g[0, y, c]
    # Each difference is computed over the whole plane first, in memory order (a loop
    # that vectorises): ``dd`` holds the value less the background where the pixel is
    # usable, NaN where not (a usable value is finite); the blocks then gather their
    # slots from it (``slot_flat``; slots without a pixel read the NaN at ``dd[ny * nx]``).
    # ``base``: NaN where the pixel is not usable (a bad_pixel bit; with from_first
    # (jump = 0) an ``other`` bit in the first group), else the first group as float64
    # (from_first) or 0.0.
    npx = ny * nx
    dd[npx] = np.nan
    for i in range(npx):
        ok = ((np.int64(pf[i]) & bad_pixel) == 0) & (
            (not from_first) | ((np.int64(qf[0, i]) & other) == 0))
        base[i] = (np.float64(gf[0, i]) if from_first else 0.0) if ok else np.nan
    for k in range(ng - 1):
        ka = 0 if from_first else k
        kb = k + 1
        gk = gf[kb]
        qk = qf[kb]
        gka = gf[ka]
        qka = qf[ka]
        if mode == 2:  # the model is given
            for c in range(nx):
                off[c, 0] = offs[k, c]
        bg = bg_value
        if bg_mode == 2 and mode != 2:  # diff_median_background over the mask pixels
            nall = np.int64(0)
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
        if mode != 2:
            if from_first:  # the first group's part is the same in every difference
                for i in range(npx):
                    v = np.float64(gk[i]) - base[i]  # NaN where not usable in group 0
                    u = ((np.int64(qk[i]) & other) == 0) & np.isfinite(v)
                    dd[i] = (v - bg) if u else np.nan
            else:
                for i in range(npx):
                    v = np.float64(gk[i]) - np.float64(gka[i])
                    q0 = np.int64(qka[i])
                    q1 = np.int64(qk[i])
                    u = (((((q0 | q1) & other) | (q1 & jump)) == 0) & np.isfinite(v)
                         & np.isfinite(base[i]))
                    dd[i] = (v - bg) if u else np.nan
        for b in range(blocks.shape[0] if mode != 2 else 0):
            c0 = blocks[b, 0]
            w = blocks[b, 1]
            h = blocks[b, 2]
            s0 = blocks[b, 3]
            for j in range(h):  # the gather alone first, then a pass that vectorises
                fr = slot_flat[s0 + j]
                sr = s[j]
                for cc in range(bw):
                    sr[cc] = dd[fr[cc]]
            for cc in range(bw):
                n[cc] = 0
            for j in range(h):
                ur = use[j]
                dr = d[j]
                sr = s[j]
                for cc in range(bw):
                    dv = sr[cc]
                    u = not np.isnan(dv)
                    ur[cc] = u
                    dr[cc] = dv if u else 0.0
                    sr[cc] = dv if u else np.inf
                    n[cc] += u
            net = comps[comp_off[h]:comp_off[h + 1]]
            block_column_offsets(s, d, use, keep, n, m, om, oz, scale, lim, tot, h, w, net,
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
            if k == 0 or not from_first:  # out[0] is g[0]: gathered once
                oa = out[ka].reshape(ny * nx)
                for i in range(nmu):
                    ref[i] = np.float64(oa[upix[i]])
            f, mk, nk = _group_values(out, kb, ref, upix,
                                      vals[k * nmu:(k + 1) * nmu], work, mbuf, from_first,
                                      mid)
            nfin += f
            nkept += nk
            if np.isnan(mk):  # a group without values: left out of the MAD
                for i in range(k * nmu, (k + 1) * nmu):
                    vals[i] = np.inf
            elif from_first:
                p1 = min(p1, mid[0])
                p2 = max(p2, mid[1])
    if not want_var:
        return -2.0
    mad = -1.0
    if ng >= 2 and nmu > 0:
        if store:
            if nfin >= 2:
                mad = _pooled_mad(vals, (ng - 1) * nmu, nkept, mbuf, count_min, from_first,
                                  p1, p2)
        else:
            msk = np.zeros(ny * nx, np.bool_)
            for i in range(nmu):
                msk[upix[i]] = True
            mad = model_mad(out, msk.reshape((ny, nx)), from_first)
    if mad != -1.0:  # else no model variance (var stays as given: zeros)
        # ``two`` is 2.0 given at run time: libm's pow, as numpy's scalar power in
        # correction_variance (x * x differs from it in the last bit now and then)
        s2 = (MAD_TO_SIGMA * mad) ** two
        column_variance_kernel(ncol, s2, k_var, a_var, resid, min_pixels, var)
    return mad


@njit(cache=True, nogil=True, error_model="numpy")
def column_variance_kernel(ncol, s2, k, a, resid, min_pixels, var):
    """``var`` (ny, nx): :func:`~nirbeam.transforms.flicker_groups._column_variance`
    (``column_factor(n) s2`` per column with ``n = ncol >= min_pixels``, i.e.
    ``e s2 / (n - RESID_B - RESID_C / n)`` with ``e = k (1 + a / n)`` (``e s2 / n`` without ``resid``),
    else twice the NaN-median of those, ``k s2`` when no column has enough pixels)."""
    ny, nx = var.shape
    col = np.empty(nx)
    vals = np.empty(nx)
    nv = np.int64(0)
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
