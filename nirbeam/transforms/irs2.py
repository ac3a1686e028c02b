"""IRS2 ("improved reference sampling and subtraction") full-frame readout of NIRSpec.

Layout (jwst 3.0 ``refpix/irs2_subtract_reference.py``, ``saturation/x_irs2.py``): in the
detector frame every one of the 2048 rows is read as 3200 samples in five sections of 640,
one per output: the reference output first, then the four science outputs. In each
science section ``NRS_REF`` (4) reference samples are read after every ``NRS_NORM`` (16)
normal ones, starting ``NRS_NORM // 2`` samples in, so a section holds 512 normal and 128
reference samples. The DMS frame of the uncal file is the transpose (NRS1), or the
transpose rotated by 180 degrees (NRS2): the SCI cube is ``(nints, ngroups, 3200, 2048)``
with the 3200 samples along DMS y (the detector's fast axis).

The reference correction (jwst ``refpix`` for IRS2) works on one integration:

1. *bad reference samples* (``flag_bad_refpix``): pairs of interleaved reference samples
   whose mean |difference|, mean or standard deviation over the integration lies more
   than ``n_sigma`` (3) above the sigma-clipped mean of their output are flagged and
   replaced from the nearest good pair of the same parity (``replace_refpix``);
2. the REFPIX reference's DQ table marks more bad pairs (``clobber_ref``), replaced alike;
3. the ramp mean of every sample is taken off; the samples of each output are put in time
   order (with the jump gaps and the 8-sample new-row pause), a straight line in time fit
   to the edge rows is removed, the gaps of the reference output are filled (cosine
   interpolation, then a Fourier low-pass iterated 3 times); then for each science output
   ``k`` the correction ``ifft(beta_k * fft(interleaved refs) + alpha_k * fft(refout))``
   is subtracted from its normal samples; the reference samples and the reference output
   are dropped (2048 x 2048) and the ramp mean added back.

Every step except the statistics of step 1 and the ramp mean of step 3 is per group,
so :func:`subtract_reference_irs2` streams the groups: memory is the input ramp, the
2048 x 2048 float32 output and a few frames, never a copy of the whole ramp in the
time-ordered layout (jwst holds five).

Differences from jwst: none in the arithmetic (checked against jwst's functions on
identical arrays, ``tests/test_irs2.py``); nirbeam calls it per integration, so the bad
reference-sample statistics of step 1 are per integration, while jwst takes the union of
the flags of all integrations of the exposure.

Size note: over 600 lines on purpose: jwst's IRS2 reference correction as one unit (layout, bad-reference flags, Fourier correction, trimming), checked against jwst as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numba import njit

__all__ = [
    "IRS2Layout",
    "IRS2Reference",
    "is_irs2",
    "layout_for",
    "normal_mask",
    "to_normal",
    "bad_reference_rows",
    "subtract_reference_irs2",
    "needs_correction",
    "correct_ramp",
]

NROWS = 2048           # detector rows (DMS x)
PAD = 8                # new-row overhead, samples (jwst ``pad``)
NALPHA = 712 * 2048    # length of the time series of one output (and of alpha/beta)


@dataclass(frozen=True)
class IRS2Layout:
    """Where the samples of an IRS2 frame are.

    Attributes
    ----------
    nrs_norm, nrs_ref : int
        NRS_NORM (normal samples between reference reads) and NRS_REF (reference samples
        per read), 16 and 4 for NRSIRS2 and NRSIRS2RAPID.
    """

    nrs_norm: int = 16
    nrs_ref: int = 4

    def __post_init__(self):
        n, r = self.nrs_norm, self.nrs_ref
        if n <= 0 or r <= 0 or n % 2 or r % 2 or 512 % n:
            raise ValueError(f"IRS2: NRS_NORM={n}, NRS_REF={r}: expected even values with "
                             "NRS_NORM dividing 512 (16 and 4 on the sky)")

    @property
    def section(self) -> int:
        """Samples per output section (640)."""
        return 512 + 512 // self.nrs_norm * self.nrs_ref

    @property
    def width(self) -> int:
        """Samples per detector row, reference output included (3200)."""
        return 5 * self.section

    @property
    def row(self) -> int:
        """Time-ordered samples per row and output, gaps and pause included (712)."""
        return (self.nrs_norm + self.nrs_ref + 2) * 512 // self.nrs_norm + PAD


def is_irs2(meta) -> bool:
    """True for an exposure read in IRS2 (READPATT NRSIRS2 or NRSIRS2RAPID)."""
    return str(getattr(meta, "readpatt", "")).strip().upper().startswith("NRSIRS2")


def layout_for(meta) -> IRS2Layout:
    """The layout of an exposure from NRS_NORM / NRS_REF (16 / 4 when absent or 0)."""
    n = int(getattr(meta, "nrs_norm", 0) or 16)
    r = int(getattr(meta, "nrs_ref", 0) or 4)
    return IRS2Layout(n, r)


def normal_mask(layout: IRS2Layout = IRS2Layout()) -> np.ndarray:
    """bool, (3200,): True at the normal samples of a row, in detector order.

    The reference output (the first section) and the interleaved reference samples are
    False. Where the interleaved positions depend on the read direction (not for 16/4)
    outputs 2 and 4 are mirrored.
    """
    n, r, sec = layout.nrs_norm, layout.nrs_ref, layout.section
    p = np.arange(sec)
    one = ~((p >= n // 2) & ((p - n // 2) % (n + r) < r))
    tail = sec - (n // 2 + r)
    same = tail - tail // (n + r) * (n + r) == n // 2
    out = np.zeros(layout.width, bool)
    for k in range(1, 5):
        out[k * sec:(k + 1) * sec] = one if (same or k % 2 == 1) else one[::-1]
    return out


def _det(frame, detector: str):
    """DMS (3200, 2048) -> detector (2048, 3200) view."""
    if detector == "NRS2":
        return frame.T[::-1, ::-1]
    return frame.T


def _dms(frame, detector: str):
    """Detector (..., a, b) -> DMS (..., b, a) view (inverse of :func:`_det`)."""
    if detector == "NRS2":
        return np.swapaxes(frame[..., ::-1, ::-1], -1, -2)
    return np.swapaxes(frame, -1, -2)


def to_normal(arr: np.ndarray, detector: str, layout: IRS2Layout = IRS2Layout()) -> np.ndarray:
    """Keep the normal samples of an IRS2 array in the DMS frame (``(..., 3200, 2048)`` ->
    ``(..., 2048, 2048)``): e.g. a raw ramp or an IRS2-layout reference."""
    m = normal_mask(layout)
    if detector == "NRS2":
        m = m[::-1]
    if arr.shape[-2] != m.size:
        raise ValueError(f"IRS2: expected {m.size} samples along DMS y, got shape {arr.shape}")
    return arr[..., m, :]


# ---------------------------------------------------------------------------------------
# the REFPIX reference


@dataclass(frozen=True, eq=False)
class IRS2Reference:
    """The REFPIX reference of IRS2 exposures, as the kernel sees it.

    Attributes
    ----------
    alpha, beta : complex64, (4, 712 * 2048)
        Per science output: ``beta`` multiplies the Fourier transform of the interleaved
        reference samples, ``alpha`` that of the reference output (jwst's convention; the
        file's columns ALPHA_k / BETA_k hold real and imaginary parts alternately).
    dq_output, dq_odd_even : int16, (nrows,)
        The DQ table: output (1-4) and which pair (1 or 2) of a reference read is bad.
    dq_mask : uint32, (nrows,)
        Bit k set: the k-th reference read (0-31, in detector order) is bad.
    source : str
        Where it came from (file and checksum), for provenance.
    path : str
        The file it was read from ("" when made in memory).
    """

    alpha: np.ndarray
    beta: np.ndarray
    dq_output: np.ndarray
    dq_odd_even: np.ndarray
    dq_mask: np.ndarray
    source: str = ""
    path: str = ""

    def __post_init__(self):
        for name in ("alpha", "beta"):
            a = getattr(self, name)
            if a.shape != (4, NALPHA):
                raise ValueError(f"IRS2 reference: {name} has shape {a.shape}, expected "
                                 f"(4, {NALPHA}) (2 x 712 x 2048 table rows per output)")

    @cached_property
    def half_spectra(self) -> tuple[np.ndarray, np.ndarray]:
        """(alpha_h, beta_h), complex64 (4, 712 * 1024 + 1): the Hermitian parts
        ``(c[k] + conj(c[-k])) / 2`` of the coefficients for ``k = 0 .. N/2``.

        The correction keeps only the real part of ``ifft(beta fft(r) + alpha fft(q))``
        of real series ``r``, ``q``; that real part is ``irfft(beta_h rfft(r) + alpha_h
        rfft(q))`` (the anti-Hermitian part of the coefficients gives the imaginary part
        only), so half-length transforms of real data do the same work. Computed once per
        reference object (cached)."""
        n = NALPHA
        idx = (-np.arange(n // 2 + 1)) % n

        def herm(c):
            return (0.5 * (c[:, :n // 2 + 1] + np.conj(c[:, idx]))).astype(np.complex64)

        return herm(self.alpha), herm(self.beta)

    @classmethod
    def from_columns(cls, columns: dict, dq=None, source: str = "",
                     path: str = "") -> IRS2Reference:
        """From the IRS2 table's columns (``alpha_0``..``beta_3``, float, alternating real
        and imaginary parts) and the DQ table's (``output``, ``odd_even``, ``mask``)."""
        def cplx(v):
            v = np.asarray(v)
            return (v[0::2] + 1j * v[1::2]).astype(np.complex64)

        alpha = np.stack([cplx(columns[f"alpha_{k}"]) for k in range(4)])
        beta = np.stack([cplx(columns[f"beta_{k}"]) for k in range(4)])
        if dq is None:
            dq = {"output": [], "odd_even": [], "mask": []}
        return cls(alpha, beta, np.asarray(dq["output"], np.int16),
                   np.asarray(dq["odd_even"], np.int16), np.asarray(dq["mask"], np.uint32),
                   source, path)


# ---------------------------------------------------------------------------------------
# step 1: bad interleaved reference samples (statistics over the integration)


@njit(cache=True, error_model="numpy")
def _pair_sums(frame, rows, acc):
    """Accumulate, for each reference pair starting at DMS row ``rows[i]``: sum |r1 - r0|,
    sum and sum of squares of both rows (float64), over one group ``frame`` (3200, 2048)."""
    nx = frame.shape[1]
    for i in range(rows.size):
        r = rows[i]
        sd = 0.0
        s = 0.0
        ss = 0.0
        for x in range(nx):
            a = np.float64(frame[r, x])
            b = np.float64(frame[r + 1, x])
            sd += abs(np.float32(b - a))
            s += a + b
            ss += a * a + b * b
        acc[i, 0] += sd
        acc[i, 1] += s
        acc[i, 2] += ss


def _pair_starts(layout: IRS2Layout) -> tuple[np.ndarray, np.ndarray]:
    """DMS rows starting a reference pair in each of the 5 sections (jwst walks the
    sections in DMS order for both detectors), and the section of each."""
    n, r, sec = layout.nrs_norm, layout.nrs_ref, layout.section
    starts, block = [], []
    for k in range(5):
        for s0 in range(n // 2, sec, n + r):
            for ri in range(0, r, 2):
                starts.append(k * sec + s0 + ri)
                block.append(k)
    return np.asarray(starts, np.int64), np.asarray(block, np.int64)


def bad_reference_rows(ramp: np.ndarray, layout: IRS2Layout = IRS2Layout(),
                       n_sigma: float = 3.0, already_bad: np.ndarray | None = None
                       ) -> np.ndarray:
    """Flag intermittently bad interleaved reference samples of one integration.

    jwst ``flag_bad_refpix(flag_only=True)``: for each pair of reference samples (two DMS
    rows) the mean |difference|, the mean and the standard deviation over every group and
    column; a pair more than ``n_sigma`` standard deviations above the sigma-clipped mean
    of its section in any of the three is bad (both samples).

    Parameters
    ----------
    ramp : (ngroups, 3200, 2048), DMS frame, DN (raw or bias-subtracted)
    layout : IRS2Layout
    n_sigma : float
        jwst ``ovr_corr_mitigation_ftr`` (3).
    already_bad : bool, (3200,) or None
        Samples flagged before (BAD_REF_PIXEL); left out of the statistics.

    Returns
    -------
    bad : bool, (3200,), DMS y
    """
    from astropy.stats import sigma_clipped_stats

    ng, h, nx = ramp.shape
    starts, block = _pair_starts(layout)
    acc = np.zeros((starts.size, 3), np.float64)
    for g in range(ng):
        _pair_sums(np.ascontiguousarray(ramp[g], np.float32), starts, acc)
    n1 = float(ng * nx)
    diff = acc[:, 0] / n1
    mean = acc[:, 1] / (2 * n1)
    std = np.sqrt(np.maximum(acc[:, 2] / (2 * n1) - mean * mean, 0.0))
    bad = np.zeros(h, bool) if already_bad is None else np.asarray(already_bad, bool).copy()
    init = bad.copy()
    for k in range(5):
        sel = np.flatnonzero((block == k) & ~(init[starts] | init[starts + 1]))
        if sel.size == 0:
            continue
        hit = np.zeros(sel.size, bool)
        for v in (diff[sel], mean[sel], std[sel]):
            m, _, s = sigma_clipped_stats(v, sigma=n_sigma)
            hit |= (v - m) > n_sigma * s
        bad[starts[sel[hit]]] = True
        bad[starts[sel[hit]] + 1] = True
    return bad


def _replacement_plan(bad: np.ndarray, is_ref: np.ndarray, lo: int, hi: int, period: int,
                      order) -> list:
    """(target, sources) for each bad sample in ``order``: sources averaged; () -> 0.

    jwst ``replace_refpix``: the mean of the same-parity samples one reference period
    below and above when both are good, else the one that is, else a good neighbouring
    reference sample two away (below first), else 0 (filled by the interpolation)."""
    plan = []
    for b in order:
        nb = None
        if b - 2 >= lo and is_ref[b - 2] and not bad[b - 2]:
            nb = b - 2
        elif b + 2 < hi and is_ref[b + 2] and not bad[b + 2]:
            nb = b + 2
        v1 = b - period if (b - period >= lo and not bad[b - period]) else None
        v2 = b + period if (b + period < hi and not bad[b + period]) else None
        if v1 is not None and v2 is not None:
            src = (v1, v2)
        elif v1 is not None:
            src = (v1,)
        elif v2 is not None:
            src = (v2,)
        elif nb is not None:
            src = (nb,)
        else:
            src = ()
        plan.append((int(b), tuple(int(s) for s in src)))
    return plan


def _apply_plan(rows2d, plan):
    """Replace samples along the first axis of ``rows2d`` (samples, other) in place."""
    for b, src in plan:
        if len(src) == 2:
            rows2d[b] = np.mean([rows2d[src[0]], rows2d[src[1]]], axis=0)
        elif len(src) == 1:
            rows2d[b] = rows2d[src[0]]
        else:
            rows2d[b] = 0.0


def _dms_plan(bad_dms: np.ndarray, layout: IRS2Layout):
    """Replacement of the flagged samples, in DMS order, every section (jwst
    ``flag_bad_refpix(replace_only=True)``)."""
    sec = layout.section
    starts, _ = _pair_starts(layout)
    is_ref = np.zeros(layout.width, bool)
    is_ref[starts] = True
    is_ref[starts + 1] = True
    plan = []
    for k in range(5):
        lo, hi = k * sec, (k + 1) * sec
        idx = lo + np.flatnonzero(bad_dms[lo:hi])
        plan += _replacement_plan(bad_dms, is_ref, lo, hi, layout.nrs_norm + layout.nrs_ref,
                                  idx)
    return plan


def _dq_plan(ref: IRS2Reference | None, flags_det: np.ndarray, layout: IRS2Layout):
    """Replacement of the pairs the REFPIX DQ table marks (jwst ``clobber_ref``), in
    detector order; ``flags_det`` (bool, (3200,)) is updated."""
    plan = []
    if ref is None or ref.dq_output.size == 0:
        return plan
    n, r, sec = layout.nrs_norm, layout.nrs_ref, layout.section
    is_ref = ~normal_mask(layout)
    is_ref[:sec] = is_ref[2 * sec:3 * sec]
    for out, oe, mask in zip(ref.dq_output, ref.dq_odd_even, ref.dq_mask, strict=True):
        out, oe, mask = int(out), int(oe), int(mask)
        off = out * sec
        oer = 3 - oe if out % 2 == 0 else oe
        new = []
        for k in range(32):
            if not (mask >> k) & 1:
                continue
            p = off + n // 2 + k * (n + r) + 2 * (oer - 1)
            for b in (p, p + 1):
                if not flags_det[b]:
                    new.append(b)
                    flags_det[b] = True
        for b in new:
            plan += _replacement_plan(flags_det, is_ref, off, off + sec, n + r, [b])
    return plan


# ---------------------------------------------------------------------------------------
# step 3: the Fourier-space correction


@dataclass(frozen=True)
class _Index:
    hnorm: np.ndarray   # normal samples in a 640 section
    href: np.ndarray    # reference samples in a section
    hnorm1: np.ndarray  # their places in the 712-sample time series
    href1: np.ndarray
    ht: np.ndarray      # places of the reference time series (refs, gaps, edge normals)
    hs: np.ndarray      # the section sample each of them takes


def layout_indices(layout: IRS2Layout) -> _Index:
    n, r = layout.nrs_norm, layout.nrs_ref
    i_n = np.arange(512)
    i_r = np.arange(512 // n * r)
    hnorm = i_n + r * ((i_n + n // 2) // n)
    href = i_r + n * (i_r // r) + n // 2
    hnorm1 = i_n + (r + 2) * ((i_n + n // 2) // n)
    href1 = i_r + (n + 2) * (i_r // r) + n // 2 + 1
    n0, n1 = 512 // n, n + r + 2
    # per jump block of n1 time slots: the last normal sample before the jump, the gap,
    # the r references, the gap, the first normal after; r/2-sample pairs duplicated
    # over the gaps (jwst's IDL-derived ordering)
    keep = np.arange((n - r) // 2 + 1, n // 2 + 1 + 3 * r // 2)
    ht = (np.arange(n0)[:, None] * n1 + keep[None, :]).ravel()
    pair = np.arange(r).reshape(2, r // 2).T
    src = np.concatenate((pair, pair), axis=1).ravel() + n // 2 + 1
    cols = np.arange(n1)
    cols[n // 2 + 1 - r // 2:n // 2 + 1 + r // 2 + r] = src
    hs = (np.arange(n0)[:, None] * n1 + cols[None, keep]).ravel()
    if r % 4 == 2:
        hs = hs.reshape(-1, 2)[:, ::-1].ravel()
    return _Index(hnorm, href, hnorm1, href1, ht, hs)


def _lowpass(ny: int, layout: IRS2Layout) -> np.ndarray:
    """The Fourier filter that fills the reference output's gaps (float64, ny * 712)."""
    n, r, row = layout.nrs_norm, layout.nrs_ref, layout.row
    elen = 110000 // (n + r + 2)
    blen = (512 + 512 // n * (r + 2) + PAD) // (n + r + 2) * ny // 2 - elen // 2
    c = (np.cos(np.arange(elen, dtype=np.float64) * np.pi / float(elen)) + 1.0) / 2.0
    half = np.concatenate((np.ones(blen), c, np.zeros(row * ny // 2 - 2 * blen - 2 * elen),
                           c[::-1], np.ones(blen)))
    return np.concatenate((half, np.roll(half, -1)[::-1]))


def _ols(x, y):
    """Least-squares line (intercept, slope) in the data's precision (float32)."""
    if x.size < 1:
        return 0.0, 0.0
    n = float(x.size)
    mx, my = x.mean(), y.mean()
    slope = ((x * y).sum() - n * mx * my) / ((x ** 2).sum() - n * mx ** 2)
    return my - slope * mx, slope


def _sine_fill(ts0: np.ndarray) -> None:
    """Fill the zeros of the reference output's time series (ny, row) by a sine-weighted
    running mean (31 samples, wrapping), in place."""
    from scipy.ndimage import convolve1d

    w = np.sin(np.arange(1, 32, dtype=np.float32) / 32.0 * np.pi)
    dat = ts0.reshape(-1)
    mask = (dat != 0.0).astype(np.float32)
    num = convolve1d(dat, w, mode="wrap")
    den = convolve1d(mask, w, mode="wrap")
    zero = den == 0.0
    fill = np.where(zero, 0.0, num) / np.where(zero, 1.0, den)
    ts0 += (fill * (1.0 - mask)).reshape(ts0.shape)


@njit(cache=True)
def _time_order(det, sec, hnorm, hnorm1, href, href1, ts):
    """Scatter one detector-frame group (ny, 5 * sec) into the time series ``ts``
    (5, ny, row) (zeros elsewhere): outputs 0, 2, 4 are read right to left."""
    ny = det.shape[0]
    for k in range(5):
        off = k * sec
        rev = k % 2 == 0
        for y in range(ny):
            for i in range(hnorm.size):
                j = hnorm[i]
                ts[k, y, hnorm1[i]] = det[y, off + (sec - 1 - j if rev else j)]
            for i in range(href.size):
                j = href[i]
                ts[k, y, href1[i]] = det[y, off + (sec - 1 - j if rev else j)]


@njit(cache=True)
def _reference_series(ts, ht, hs, r0):
    """``r0[k, :, ht] = ts[k + 1, :, hs]`` for the four science outputs."""
    for k in range(4):
        for y in range(ts.shape[1]):
            for i in range(ht.size):
                r0[k, y, ht[i]] = ts[k + 1, y, hs[i]]


@njit(cache=True)
def _science_out(ts, corr, hnorm1, out):
    """Corrected normal samples in detector order: ``ts[k] - corr[k - 1]`` at the normal
    time slots, outputs 2 and 4 reversed back."""
    nn = hnorm1.size
    for k in range(1, 5):
        off = (k - 1) * nn
        rev = k % 2 == 0
        for y in range(ts.shape[1]):
            for i in range(nn):
                t = hnorm1[i]
                v = ts[k, y, t] - corr[k - 1, y, t]
                out[y, off + (nn - 1 - i if rev else i)] = v


class _Corrector:
    """Per-group Fourier correction of one integration (shared index tables).

    Transforms are scipy.fft's real-input ones (pocketfft, as numpy's) in single
    precision: every series is real and only the real part of the inverse is kept, so
    ``rfft``/``irfft`` with the Hermitian parts of the filters
    (:attr:`IRS2Reference.half_spectra`; the low-pass is symmetric) give jwst's complex
    transforms' result with half the work. The four outputs go in one batch over
    ``workers`` threads. Equal to jwst's numpy complex FFTs to float32 rounding.
    """

    def __init__(self, ref: IRS2Reference, layout: IRS2Layout, ny: int, workers: int = 1):
        self.ref, self.layout, self.ny, self.workers = ref, layout, ny, max(1, int(workers))
        self.ix = layout_indices(layout)
        self.n = ny * layout.row
        self.aah = _lowpass(ny, layout)[:self.n // 2 + 1]  # symmetric: aa[k] == aa[N-k]
        self.alpha_h, self.beta_h = ref.half_spectra
        self.t = np.arange(ny * layout.row, dtype=np.float32).reshape(ny, layout.row)
        self.t -= self.t.mean(dtype=np.float64)
        self.edge = np.array([0, 1, 2, 3, ny - 4, ny - 3, ny - 2, ny - 1], np.intp)
        m = np.zeros((ny, layout.row), bool)
        m[:, self.ix.hnorm1] = True
        self.keep0 = m.ravel()

    def group(self, det: np.ndarray) -> np.ndarray:
        """One group, detector frame (ny, 3200) float32 minus the ramp mean -> the
        corrected normal samples (ny, 2048) float32 (ramp mean not yet added back)."""
        from scipy import fft as sfft

        lay, ix, ny, w, n = self.layout, self.ix, self.ny, self.workers, self.n
        sec, row = lay.section, lay.row
        ts = np.zeros((5, ny, row), np.float32)
        _time_order(det, sec, ix.hnorm, ix.hnorm1, ix.href, ix.href1, ts)
        # a straight line in time through the edge (reference) rows, per output
        tt = self.t[self.edge]
        line = np.empty((ny, row), np.float32)
        for i in range(5):
            e = ts[i, self.edge]
            ok = e != 0.0
            a, b = _ols(tt[ok], e[ok])
            np.multiply(self.t, np.float32(b), out=line)
            line += np.float32(a)
            np.subtract(ts[i], line, out=ts[i], where=ts[i] != 0.0)
        del line
        # reference output: fill gaps and reference-sample places, then Fourier low-pass
        _sine_fill(ts[0])
        p = ts[0].reshape(-1)
        keep = p[self.keep0]
        for _ in range(3):
            pp = sfft.rfft(p, workers=w)
            pp *= self.aah
            p[:] = sfft.irfft(pp, n, workers=w)
            del pp
            p[self.keep0] = keep
        fref = sfft.rfft(p, workers=w)
        r0 = np.zeros((4, ny, row), np.float32)
        _reference_series(ts, ix.ht, ix.hs, r0)
        f = sfft.rfft(r0.reshape(4, -1), axis=-1, workers=w)
        del r0
        f *= self.beta_h
        for k in range(4):
            f[k] += self.alpha_h[k] * fref
        del fref
        corr = sfft.irfft(f, n, axis=-1, workers=w).reshape(4, ny, row)
        del f
        out = np.empty((ny, 4 * 512), np.float32)
        _science_out(ts, corr, ix.hnorm1, out)
        return out


def subtract_reference_irs2(ramp: np.ndarray, ref: IRS2Reference, detector: str,
                            layout: IRS2Layout = IRS2Layout(), *, flag_bad: bool = True,
                            n_sigma: float = 3.0, bad_samples: np.ndarray | None = None,
                            out: np.ndarray | None = None, workers: int | None = None
                            ) -> np.ndarray:
    """IRS2 reference correction of one integration (jwst ``refpix`` for IRS2).

    Parameters
    ----------
    ramp : uint16 or float32, (ngroups, 3200, 2048), DMS frame, DN
        The integration as read (or after superbias subtraction in the IRS2 layout,
        as jwst runs it); not modified.
    ref : IRS2Reference
    detector : ``"NRS1"`` or ``"NRS2"``
    layout : IRS2Layout
    flag_bad : bool
        Flag intermittently bad reference samples first (jwst does, n_sigma 3).
    n_sigma : float
    bad_samples : bool, (3200,), DMS y, or None
        Reference samples known bad beforehand (BAD_REF_PIXEL).
    out : float32, (ngroups, 2048, 2048) or None
        Where to write the result.
    workers : int or None
        Threads of the Fourier transforms (None: numba's thread count, as detector1).

    Returns
    -------
    corrected : float32, (ngroups, 2048, 2048), DMS frame, DN
        Normal samples only (the 4-pixel reference border included), with the
        reference-output and interleaved-reference correction subtracted.
    """
    if detector not in ("NRS1", "NRS2"):
        raise ValueError(f"IRS2: DETECTOR={detector!r}; expected NRS1 or NRS2")
    ng, h, nx = ramp.shape
    if h != layout.width or nx != NROWS:
        raise ValueError(f"IRS2: ramp frames are {h} x {nx} (DMS y x x); expected "
                         f"{layout.width} x {NROWS} for NRS_NORM={layout.nrs_norm}, "
                         f"NRS_REF={layout.nrs_ref}")
    bad = np.zeros(h, bool) if bad_samples is None else np.asarray(bad_samples, bool)
    if flag_bad:
        bad = bad_reference_rows(ramp, layout, n_sigma, bad)
    plan_dms = _dms_plan(bad, layout)
    flags_det = bad[::-1].copy() if detector == "NRS2" else bad.copy()
    plan_det = _dq_plan(ref, flags_det, layout)

    def frame(g):  # one group, bad references replaced, detector frame, contiguous
        f = np.array(ramp[g], dtype=np.float32)
        _apply_plan(f, plan_dms)
        d = np.ascontiguousarray(_det(f, detector))
        del f
        if plan_det:
            _apply_plan(d.T, plan_det)
        return d

    mean = np.zeros((NROWS, layout.width), np.float64)
    for g in range(ng):
        mean += frame(g)
    mean /= float(ng)
    keep = normal_mask(layout)
    mean_n = mean[:, keep]
    if out is None:
        out = np.empty((ng, NROWS, NROWS), np.float32)
    if workers is None:
        from numba import get_num_threads

        workers = get_num_threads()
    cor = _Corrector(ref, layout, NROWS, workers)
    d = np.empty((NROWS, layout.width), np.float32)
    for g in range(ng):
        fr = frame(g)
        for r0 in range(0, NROWS, 256):  # float64 difference, float32 result, in bands
            d[r0:r0 + 256] = fr[r0:r0 + 256] - mean[r0:r0 + 256]
        del fr
        res = cor.group(d)
        res += mean_n
        out[g] = _dms(res, detector)
    return out


def needs_correction(meta, ramp) -> bool:
    """True for a ramp of an IRS2 exposure still in its stored layout (3200 samples)."""
    return is_irs2(meta) and ramp.shape[-2] == layout_for(meta).width


def correct_ramp(ramp: np.ndarray, refs, meta) -> np.ndarray:
    """The detector1 hook: an IRS2 ramp as stored -> (ngroups, 2048, 2048).

    With ``refs.irs2`` (an :class:`IRS2Reference`) the reference correction of
    :func:`subtract_reference_irs2` (float32); without (the REFPIX stand-in) the normal
    samples only, uncorrected (uint16).
    """
    lay = layout_for(meta)
    ref = getattr(refs, "irs2", None)
    if ref is None:
        named = str((getattr(refs, "sources", None) or {}).get("REFPIX", ""))
        if named and not named.startswith("none"):
            raise ValueError(
                f"IRS2: the references name REFPIX {named!r} but its coefficients are not "
                "in the ReferenceArrays given to detector1 (lost on the way to the worker?): "
                "refusing to drop the reference samples uncorrected")
        return np.ascontiguousarray(to_normal(ramp, meta.detector, lay))
    return subtract_reference_irs2(ramp, ref, meta.detector, lay)
