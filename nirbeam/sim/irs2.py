"""Simulated NIRSpec IRS2 full-frame readout: a traditional cube -> the stored IRS2 layout.

:func:`to_irs2` takes a full-frame ramp in the DMS frame, (ngroups, 2048, 2048) DN with
its bias, and returns what an uncal file with READPATT NRSIRS2 stores,
(ngroups, 3200, 2048): the normal samples where :func:`nirbeam.transforms.irs2.normal_mask`
puts them, the interleaved reference samples and the reference output holding the bias
level and read noise only. Noise is made in *time order* (each output's samples read in
its own direction, the jump gaps and the 8-sample row pause included, as jwst orders
them) and shared by every sample read at that time:

* ``one_over_f``: a 1/f noise per output (seen by its normal and reference samples) and a
  common one seen by all five outputs, reference output included;
* ``acn``: alternating column noise, an offset of opposite sign on even and odd time
  samples, drawn per output, row and group;
* ``white``: read noise per sample;
* ``picture_frame``: a time-varying offset ``amplitude[g] * template`` on the light-
  sensitive normal pixels (not on reference samples, which do not see it), with
  :func:`picture_frame_template` the edge-bright pattern (:mod:`nirbeam.transforms.picture_frame`).

:func:`cds_read_noise` is the CDS read noise this readout adds to a pixel after the
correction (for the READNOISE reference of an IRS2 simulation).
:func:`matched_reference` is the REFPIX reference this noise model calls for (``beta`` the
interpolating low-pass of the interleaved samples, ``alpha`` zero), so the correction can
be measured against the truth the simulator keeps.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from nirbeam.transforms.irs2 import (
    NALPHA,
    NROWS,
    IRS2Layout,
    IRS2Reference,
    layout_indices,
    normal_mask,
)

__all__ = ["IRS2Noise", "to_irs2", "matched_reference", "picture_frame_template",
           "time_slots", "comparison_case", "comparison_reference", "write_matched_refpix",
           "TFRAME_IRS2_FULL", "cds_read_noise", "CDS_VARIANCE_FACTORS"]


_LAYOUT = IRS2Layout()  # NRS_NORM 16, NRS_REF 4
#: IRS2 full-frame frame time (s): TFRAME of the CEERS NRSIRS2 FULL files in
#: shared/data/modes/mos_ceers (the FS, MOS and IFU simulators' IRS2 TFRAME)
TFRAME_IRS2_FULL = 14.58889


@dataclass(frozen=True)
class IRS2Noise:
    """Read-noise parts of the simulated IRS2 readout (DN, per sample).

    Attributes
    ----------
    white : float
        Uncorrelated read noise per sample.
    one_over_f : float
        RMS of the 1/f noise of each output (over one frame).
    common : float
        RMS of the 1/f noise common to all outputs (reference output included).
    acn : float
        RMS of the alternating column noise offsets (per output, row and group).
    ref_bias : float or None
        Bias level of the reference samples and reference output (None: the median of
        the first group's normal samples).
    picture_frame : tuple of float
        Amplitude (DN) of the picture-frame offset in each group (empty: none), times
        :func:`picture_frame_template`.
    """

    white: float = 6.0
    one_over_f: float = 4.0
    common: float = 3.0
    acn: float = 1.5
    ref_bias: float | None = None
    picture_frame: tuple[float, ...] = ()


#: CDS variance per unit variance of each noise part after the IRS2 correction with
#: :func:`matched_reference` (DN^2 per DN^2): white 2 x 1.219 (a difference of two reads,
#: plus the interleaved references' own white noise interpolated in), alternating column
#: noise 2 (not removed), 1/f (per output and common, of the same spectrum) 0.73 (the part
#: faster than the interleaved references resolve). Measured on darks (2 groups, full frame,
#: seed 1: CDS std 9.37 white only, 2.15 ACN only, 4.31 1/f only, 10.5 all of IRS2Noise()
#: against 10.51 from these factors); docs/notes/issue-15-sims.md.
CDS_VARIANCE_FACTORS = {"white": 2.438, "acn": 2.0, "one_over_f": 0.73}


def cds_read_noise(noise: IRS2Noise | None = None) -> float:
    """CDS read noise (DN) the simulated IRS2 readout adds to a pixel after the IRS2
    reference correction with :func:`matched_reference`: what a READNOISE reference of an
    IRS2 simulation adds (in quadrature) to the signal chain's own read noise."""
    n = noise or IRS2Noise()
    f = CDS_VARIANCE_FACTORS
    var = (f["white"] * n.white ** 2 + f["acn"] * n.acn ** 2
           + f["one_over_f"] * (n.one_over_f ** 2 + n.common ** 2))
    return float(np.sqrt(var))


def time_slots(layout: IRS2Layout = _LAYOUT) -> np.ndarray:
    """int, (5, 640): time slot (0..711 within a row) of each sample of each section, in
    detector order (outputs 0, 2, 4 are read right to left)."""
    ix = layout_indices(layout)
    sec = layout.section
    slot = np.empty(sec, np.int64)
    slot[ix.hnorm] = ix.hnorm1
    slot[ix.href] = ix.href1
    out = np.empty((5, sec), np.int64)
    for k in range(5):
        out[k] = slot[::-1] if k % 2 == 0 else slot
    return out


def _one_over_f(rng, n: int, rms: float) -> np.ndarray:
    """A 1/f noise series of length n and the given RMS (float64)."""
    if rms <= 0:
        return np.zeros(n)
    f = np.fft.rfftfreq(n)
    amp = np.zeros_like(f)
    amp[1:] = 1.0 / np.sqrt(f[1:])
    spec = amp * (rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size))
    x = np.fft.irfft(spec, n)
    return x * (rms / x.std())


def picture_frame_template(n: int = NROWS) -> np.ndarray:
    """float32, (n, n): the picture-frame pattern, 1 at the edges falling to ~0 in the
    centre (an offset that grows toward the detector frame, within ~100 px of it)."""
    d = np.minimum(np.arange(n), np.arange(n)[::-1]).astype(np.float64)
    e = np.exp(-d / 40.0)
    t = np.maximum(e[:, None], e[None, :])
    return t.astype(np.float32)


def to_irs2(cube: np.ndarray, detector: str, rng: np.random.Generator,
            noise: IRS2Noise | None = None, layout: IRS2Layout = _LAYOUT
            ) -> np.ndarray:
    """A traditional full-frame ramp -> the stored IRS2 ramp.

    Parameters
    ----------
    cube : (ngroups, 2048, 2048), DMS frame, DN (bias included, noise-free or with
        the signal's own noise)
    detector : ``"NRS1"`` or ``"NRS2"``
    rng : numpy Generator
    noise : IRS2Noise
    layout : IRS2Layout

    Returns
    -------
    ramp : uint16, (ngroups, 3200, 2048), DMS frame, DN
    """
    noise = noise or IRS2Noise()
    ng, ny, nx = cube.shape
    if (ny, nx) != (NROWS, NROWS):
        raise ValueError(f"to_irs2: IRS2 is full frame; got frames {ny}x{nx}")
    sec, row = layout.section, layout.row
    keep = normal_mask(layout)
    slots = time_slots(layout)  # (5, 640)
    tpos = (np.arange(NROWS)[:, None, None] * row + slots[None]).reshape(NROWS, -1)  # (2048, 3200)
    rb = noise.ref_bias
    if rb is None:
        rb = float(np.median(cube[0]))
    tmpl = picture_frame_template() if noise.picture_frame else None
    if tmpl is not None:
        tmpl = tmpl.copy()
        tmpl[:4] = tmpl[-4:] = 0.0
        tmpl[:, :4] = tmpl[:, -4:] = 0.0
    out = np.empty((ng, layout.width, nx), np.uint16)
    n = NROWS * row
    even = (slots % 2 == 0)
    for g in range(ng):
        sig = np.asarray(cube[g], np.float64)
        if tmpl is not None:
            sig = sig + noise.picture_frame[g] * tmpl
        det = np.full((NROWS, layout.width), rb, np.float64)  # detector frame
        dn = sig.T if detector != "NRS2" else sig.T[::-1, ::-1]
        det[:, keep] = dn
        common = _one_over_f(rng, n, noise.common)
        for k in range(5):
            cols = slice(k * sec, (k + 1) * sec)
            ts = common + _one_over_f(rng, n, noise.one_over_f)
            det[:, cols] += ts[tpos[:, cols]]
            a = rng.standard_normal((NROWS, 1)) * noise.acn
            det[:, cols] += np.where(even[k][None, :], a, -a)
        det += rng.standard_normal(det.shape) * noise.white
        dms = det.T if detector != "NRS2" else det[::-1, ::-1].T
        out[g] = np.clip(np.rint(dms), 0, 65535).astype(np.uint16)
    return out


def matched_reference(layout: IRS2Layout = _LAYOUT) -> IRS2Reference:
    """The REFPIX reference that fits :func:`to_irs2`'s noise model.

    ``beta``: the interleaved reference time series (8 of every n + r + 2 = 22 slots
    filled) interpolated by a low-pass that passes what that sampling resolves, scaled by
    22/8 so a slow signal comes back at its level; ``alpha`` = 0 (the reference output adds
    nothing the interleaved samples do not already see in this model).
    """
    n, r = layout.nrs_norm, layout.nrs_ref
    block = n + r + 2
    frac = 2 * r / block  # the reference time series holds 2r of every block slots
    f = np.abs(np.fft.fftfreq(NALPHA))  # cycles per slot
    fc = 0.5 / block
    w = np.clip((fc - f) / (0.2 * fc), 0.0, 1.0)  # flat to 0.8 fc, linear taper to fc
    b = (w / frac).astype(np.complex64)
    beta = np.tile(b, (4, 1))
    alpha = np.zeros((4, NALPHA), np.complex64)
    return IRS2Reference(alpha, beta, np.zeros(0, np.int16), np.zeros(0, np.int16),
                         np.zeros(0, np.uint32), "nirbeam.sim.irs2.matched_reference")


def comparison_case(seed: int = 15, ngroups: int = 3):
    """Arrays for checking the IRS2 kernel against jwst (the saved jwst results in
    ``tests/data/irs2_jwst.npz`` were made from exactly these: do not change them).

    Returns
    -------
    ramp : float32, (ngroups, 3200, 2048), DMS frame, DN
    reference : IRS2Reference with arbitrary smooth complex alpha/beta and a DQ table
    """
    rng = np.random.default_rng(seed)
    data = (rng.random((ngroups, 3200, 2048), dtype=np.float32) * 20).astype(np.float32)
    data += np.arange(ngroups, dtype=np.float32)[:, None, None] * 50
    data += (np.sin(np.arange(3200) / 37.0).astype(np.float32) * 5)[None, :, None]
    data[:, 648, :] += 300 * rng.random((ngroups, 2048), dtype=np.float32)  # a noisy ref
    return data, comparison_reference()


@functools.lru_cache(maxsize=1)
def comparison_reference() -> IRS2Reference:
    """The REFPIX reference of :func:`comparison_case` (arbitrary smooth complex alpha and
    beta, a DQ table marking reads in every output). Cached: do not modify its arrays."""
    f = np.linspace(0, 1, NALPHA)
    alpha = np.stack([(0.1 + 0.05 * k) * np.exp(-f * 40) * np.exp(1j * f * (3 + k))
                      for k in range(4)]).astype(np.complex64)
    beta = np.stack([(0.9 - 0.1 * k) * np.exp(-f * 20) * np.exp(-1j * f * (2 + k))
                     for k in range(4)]).astype(np.complex64)
    return IRS2Reference(alpha, beta, np.array([1, 2, 3, 4], np.int16),
                         np.array([1, 2, 1, 2], np.int16),
                         np.array([1 | 4, 2**31, 0, 8 | 2**20], np.uint32), "comparison_case")


def write_matched_refpix(folder, detector: str, readpatt: str = "NRSIRS2"):
    """Write :func:`matched_reference` as a CRDS-layout REFPIX file into ``folder`` (the
    simulator's refs folder), named ``jwst_nirspec_refpix_<det>_sim.fits``; returns it."""
    from pathlib import Path

    from nirbeam.sim.fits_writer import write_refpix_reference

    ref = matched_reference()
    path = Path(folder) / f"jwst_nirspec_refpix_{detector.lower()}_sim.fits"
    return write_refpix_reference(
        path, {"INSTRUME": "NIRSPEC", "DETECTOR": detector.upper(),
               "USEAFTER": "2022-01-01T00:00:00", "AUTHOR": "nirbeam simulator"},
        ref.alpha, ref.beta, None, readpatt=readpatt)
