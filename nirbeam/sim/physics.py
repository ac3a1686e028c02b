"""Physics kernels of the NIRSpec BOTS simulator (numpy, no I/O, no Beam).

Everything here is vectorised numpy driven by a seeded :class:`numpy.random.Generator`;
the per-integration ramp is assembled from its numpy draws by one numba pass
(nirbeam/sim/ramp_kernel.py), bit-identical to the numpy expressions it replaced.
Units: DN (data numbers), e- (electrons), s, um. Arrays are in the DMS science frame of
the subarray: ``(ny, nx)`` with x = dispersion (axis 1, SUBSIZE1) and y = cross-dispersion.
The fast read direction is y (FASTAXIS = 2), so 1/f noise shows as vertical stripes
(one offset per column per read).

Size note: over 600 lines on purpose: the simulator's detector and scene physics, one function per effect, each switchable.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from nirbeam import dqflags
from nirbeam.sim.ramp_kernel import assemble_ramp

__all__ = [
    "DetectorProps",
    "SpectralScene",
    "make_detector_props",
    "make_scene",
    "transit_relflux",
    "linearity_coeffs",
    "apply_linearity",
    "group_times",
    "simulate_integration",
    "one_over_f_columns",
    "one_over_f_pixels",
    "one_over_f_pixel_variance",
    "draw_cosmic_rays",
    "ramp_variance",
]

FULL = 2048


# ----------------------------------------------------------------------------------------
# Detector
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class DetectorProps:
    """Per-pixel detector truth for one detector, cut to the subarray.

    Attributes
    ----------
    bias : float32, (ny, nx), DN
        Superbias (reset level).
    gain : float32, (ny, nx), e-/DN
    rn_cds : float32, (ny, nx), DN
        Noise of a two-read (CDS) difference; a single read has rn_cds / sqrt(2).
    beta : float32, (ny, nx), 1/DN
        Classical non-linearity: measured = true * (1 - beta * true), bias-subtracted DN.
    sat_ref : float32, (ny, nx), DN (raw, bias included)
        Saturation threshold written to the SATURATION reference.
    sat_hard : float32, (ny, nx), DN (raw)
        Level at which the simulated pixel physically stops rising (>= sat_ref).
    dark_rate : float32, (ny, nx), DN/s
        Dark current, hot/warm pixels included.
    qe : float32, (ny, nx)
        1 for live pixels, 0 for dead and reference pixels.
    refpix : bool, (ny, nx)
        Full-frame reference pixels inside the subarray (no light, no dark).
    mask : uint32, (ny, nx)
        MASK reference DQ (standard JWST bits).
    hot_y, hot_x : int, (nhot,)
        0-based subarray coordinates of hot pixels; hot_rate their dark rate (DN/s);
        hot_flagged whether MASK flags them.
    """

    bias: np.ndarray
    gain: np.ndarray
    rn_cds: np.ndarray
    beta: np.ndarray
    sat_ref: np.ndarray
    sat_hard: np.ndarray
    dark_rate: np.ndarray
    qe: np.ndarray
    refpix: np.ndarray
    mask: np.ndarray
    hot_y: np.ndarray
    hot_x: np.ndarray
    hot_rate: np.ndarray
    hot_flagged: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.bias.shape


def refpix_mask(substrt1: int, substrt2: int, ny: int, nx: int) -> np.ndarray:
    """Boolean (ny, nx): True where the full-frame position is a 4-pixel border ref pixel."""
    xf = substrt1 + np.arange(nx)  # 1-based full-frame columns
    yf = substrt2 + np.arange(ny)
    colref = (xf <= 4) | (xf >= FULL - 3)
    rowref = (yf <= 4) | (yf >= FULL - 3)
    return colref[None, :] | rowref[:, None]


def _pixel_fields(rng: np.random.Generator, ny: int, nx: int, cfg) -> dict[str, np.ndarray]:
    """Draw the smooth-plus-random per-pixel fields (no hot/dead/refpix bookkeeping)."""
    f32 = np.float32
    xs = np.linspace(-1, 1, nx)[None, :]
    bias = (
        cfg.bias_mean
        + 600.0 * xs
        + 150.0 * ((np.arange(nx) % 2)[None, :] - 0.5)
        + rng.normal(0.0, cfg.bias_sigma, (ny, nx))
    )
    bias = np.clip(bias, 10000.0, 15000.0).astype(f32)
    gain = np.clip(cfg.gain_mean + 0.02 * xs + rng.normal(0, 0.015, (ny, nx)), 1.0, 1.1).astype(f32)
    rn = np.clip(rng.normal(cfg.readnoise_cds, 0.08 * cfg.readnoise_cds, (ny, nx)), 0.5 * cfg.readnoise_cds, 2 * cfg.readnoise_cds).astype(f32)
    beta = rng.uniform(cfg.nonlin_beta[0], cfg.nonlin_beta[1], (ny, nx)).astype(f32)
    sat_ref = rng.uniform(55000.0, 62000.0, (ny, nx)).astype(f32)
    sat_hard = np.minimum(sat_ref + rng.uniform(300.0, 1500.0, (ny, nx)), 65535.0).astype(f32)
    dark = np.abs(rng.normal(cfg.dark_rate_dn_s, 0.3 * cfg.dark_rate_dn_s, (ny, nx))).astype(f32)
    return dict(bias=bias, gain=gain, rn_cds=rn, beta=beta, sat_ref=sat_ref, sat_hard=sat_hard, dark_rate=dark)


def make_detector_props(rng: np.random.Generator, cfg) -> DetectorProps:
    """Draw the detector truth for one detector (subarray-sized).

    Parameters
    ----------
    rng : numpy.random.Generator
    cfg : SimConfig
    """
    ny, nx = cfg.subsize2, cfg.subsize1
    p = _pixel_fields(rng, ny, nx, cfg)
    refpix = refpix_mask(cfg.substrt1, cfg.substrt2, ny, nx)
    mask = np.zeros((ny, nx), np.uint32)
    qe = np.ones((ny, nx), np.float32)
    npix = ny * nx
    live = np.flatnonzero(~refpix.ravel())

    # hot and warm pixels
    nhot = rng.binomial(npix, cfg.hot_pixel_fraction)
    nwarm = rng.binomial(npix, 3 * cfg.hot_pixel_fraction)
    nhot = min(nhot, live.size)
    sel = rng.choice(live, size=min(nhot + nwarm + rng.binomial(npix, cfg.dead_pixel_fraction), live.size), replace=False)
    hot_idx, warm_idx, dead_idx = sel[:nhot], sel[nhot : nhot + nwarm], sel[nhot + nwarm :]
    hot_rate = np.exp(rng.uniform(np.log(2.0), np.log(300.0), hot_idx.size)).astype(np.float32)
    warm_rate = rng.uniform(0.2, 1.5, warm_idx.size).astype(np.float32)
    dark = p["dark_rate"].ravel()
    dark[hot_idx] = hot_rate
    dark[warm_idx] = warm_rate
    hot_flag = rng.random(hot_idx.size) < cfg.hot_flagged_fraction
    warm_flag = rng.random(warm_idx.size) < 0.5
    m = mask.ravel()
    m[hot_idx[hot_flag]] |= dqflags.HOT
    m[hot_idx[hot_flag & (hot_rate > 50)]] |= dqflags.DO_NOT_USE
    m[warm_idx[warm_flag]] |= dqflags.WARM
    m[dead_idx] |= dqflags.DEAD | dqflags.DO_NOT_USE
    qe.ravel()[dead_idx] = 0.0
    dark[dead_idx] = 0.0

    # reference pixels: no light, no dark, linear
    dark2 = dark.reshape(ny, nx)
    dark2[refpix] = 0.0
    qe[refpix] = 0.0
    mask[refpix] |= dqflags.REFERENCE_PIXEL
    p["beta"][refpix] = 0.0

    hy, hx = np.divmod(hot_idx, nx)
    return DetectorProps(
        bias=p["bias"], gain=p["gain"], rn_cds=p["rn_cds"], beta=p["beta"],
        sat_ref=p["sat_ref"], sat_hard=p["sat_hard"], dark_rate=dark2, qe=qe,
        refpix=refpix, mask=mask, hot_y=hy.astype(np.int32), hot_x=hx.astype(np.int32),
        hot_rate=hot_rate, hot_flagged=hot_flag,
    )


def full_frame_fields(rng: np.random.Generator, cfg, props: DetectorProps) -> dict[str, np.ndarray]:
    """Full-frame (2048, 2048) stand-ins with the subarray pasted in at SUBSTRT.

    Returns gain, rn_cds, beta, sat_ref, mask; outside the subarray the values are drawn
    from the same distributions (and the 4-pixel border is flagged REFERENCE_PIXEL).
    """
    p = _pixel_fields(rng, FULL, FULL, cfg)
    mask = np.zeros((FULL, FULL), np.uint32)
    border = refpix_mask(1, 1, FULL, FULL)
    mask[border] |= dqflags.REFERENCE_PIXEL
    p["beta"][border] = 0.0
    ys = slice(cfg.substrt2 - 1, cfg.substrt2 - 1 + cfg.subsize2)
    xs = slice(cfg.substrt1 - 1, cfg.substrt1 - 1 + cfg.subsize1)
    out = {"mask": mask}
    for k in ("gain", "rn_cds", "beta", "sat_ref"):
        out[k] = p[k]
        out[k][ys, xs] = getattr(props, k)
    mask[ys, xs] = props.mask
    return out


# ----------------------------------------------------------------------------------------
# Non-linearity
# ----------------------------------------------------------------------------------------
_U_RANGE = (-0.005, 0.085)  # beta * measured DN covered by the fit (beyond saturation)


def _h_coeffs(ncoeffs: int) -> np.ndarray:
    """Least-squares polynomial in u = beta*m of h(u) = t/m, t = (1 - sqrt(1-4u)) / (2u)."""
    u = np.linspace(*_U_RANGE, 4001)
    with np.errstate(invalid="ignore", divide="ignore"):
        h = np.where(np.abs(u) < 1e-12, 1.0, (1.0 - np.sqrt(1.0 - 4.0 * u)) / (2.0 * u))
    # relative-error weighting is implicit: h ~ 1 everywhere
    return np.polynomial.polynomial.polyfit(u, h, ncoeffs - 2)


def linearity_coeffs(beta: np.ndarray, ncoeffs: int = 6) -> np.ndarray:
    """COEFFS (ncoeffs, ny, nx) such that sum_k c_k m**k inverts m = t - beta t**2.

    The inverse is t = m * h(beta m) with one universal function h; h is fitted once by
    least squares as a polynomial in u = beta*m over the unsaturated range, so per pixel
    c_0 = 0 and c_{j+1} = h_j * beta**j.
    """
    h = _h_coeffs(ncoeffs)
    b = beta.astype(np.float64)
    c = np.zeros((ncoeffs,) + beta.shape, np.float32)
    for j, hj in enumerate(h):
        c[j + 1] = hj * b**j
    return c


def apply_linearity(m: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """sum_k coeffs[k] * m**k (Horner), float64. m broadcasts against coeffs[0]."""
    out = np.zeros(np.broadcast_shapes(m.shape, coeffs.shape[1:]), np.float64)
    for c in coeffs[::-1]:
        out = out * m + c
    return out


# ----------------------------------------------------------------------------------------
# Scene: spectrum, trace, PSF
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SpectralScene:
    """The star on one detector.

    Attributes
    ----------
    wavelength : float64, (nx,), um
    y_center : float64, (nx,), 0-based subarray row of the trace centre
    sigma : float64, (nx,), px, Gaussian PSF width
    column_flux : float64, (nx,), DN/s, true source rate summed over the subarray rows
        (out of transit)
    profile : float64, (ny, nx), pixel-integrated spatial profile (sum over y of
        column_flux * profile equals column_flux exactly: profile is renormalised)
    rp : float64, (nx,), Rp/R* per column
    scale : float
        Factor from the model photon spectrum to DN/s.
    """

    wavelength: np.ndarray
    y_center: np.ndarray
    sigma: np.ndarray
    column_flux: np.ndarray
    profile: np.ndarray
    rp: np.ndarray
    scale: float = 1.0

    @property
    def rate_oot(self) -> np.ndarray:
        """(ny, nx) out-of-transit source rate, DN/s."""
        return self.profile * self.column_flux[None, :]


def _throughput(lam: np.ndarray, lo: float, hi: float, grating: str) -> np.ndarray:
    edge = 0.03 if grating == "PRISM" else 0.015
    win = 0.5 * (1 + np.tanh((lam - lo) / edge)) * 0.5 * (1 + np.tanh((hi - lam) / edge))
    if grating == "PRISM":
        shape = (0.3 + np.exp(-0.5 * ((lam - 1.2) / 0.8) ** 2)) * lam**1.5
    else:
        shape = 0.6 + 0.4 * np.exp(-0.5 * ((lam - 0.5 * (lo + hi)) / (0.6 * (hi - lo))) ** 2)
    return win * shape


def _photon_spectrum(lam: np.ndarray, teff: float) -> np.ndarray:
    """Photon flux density of a blackbody, arbitrary units (lam in um)."""
    x = 14387.77 / (lam * teff)
    return lam**-4 / np.expm1(x)


def _raw_profile(cfg, yc: np.ndarray, sig: np.ndarray, refpix: np.ndarray) -> np.ndarray:
    """(ny, nx) pixel-integrated Gaussian core + faint wing, zero on reference pixels."""
    ny = refpix.shape[0]
    yy = np.arange(ny, dtype=np.float64)[:, None]
    r2 = np.sqrt(2.0) * sig[None, :]
    prof = 0.5 * (erf((yy + 0.5 - yc[None, :]) / r2) - erf((yy - 0.5 - yc[None, :]) / r2))
    # faint wings so that a narrow box loses a little light (Lorentzian-ish halo)
    if cfg.psf_wing > 0:
        wing = 1.0 / (1.0 + ((yy - yc[None, :]) / (3.0 * sig[None, :])) ** 2)
        wing /= wing.sum(axis=0, keepdims=True)
        prof = (1 - cfg.psf_wing) * prof + cfg.psf_wing * wing
    prof[refpix] = 0.0
    return prof


def shifted_profile(cfg, scene, refpix: np.ndarray, dy: float) -> np.ndarray:
    """The scene's normalised profile with the trace moved by ``dy`` px along y.

    Each column keeps its total (the profile sums to 1 where the scene's does), so a
    jitter moves light between rows without changing the column flux.
    """
    if dy == 0.0:
        return scene.profile
    prof = _raw_profile(cfg, scene.y_center + dy, scene.sigma, refpix)
    colsum = prof.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((colsum[None, :] > 0) & (scene.profile.sum(axis=0)[None, :] > 0),
                        prof / colsum[None, :], 0.0)


def make_scene(cfg, det_index: int, refpix: np.ndarray, tgroup: float, scale: float | None = None) -> SpectralScene:
    """Build the deterministic (noise-free) scene for detector ``det_index``.

    ``scale`` (model units -> DN/s) defaults to the value that makes this detector's
    brightest pixel accumulate ``cfg.peak_signal_dn`` by the last group.
    """
    nx = cfg.subsize1
    x = np.arange(nx, dtype=np.float64)
    s = x / (nx - 1)
    lam_lo, lam_hi = cfg.wave_range[det_index]
    # wavelength solution: monotonic quadratic in column
    c2 = cfg.wave_curvature
    lam = lam_lo + (lam_hi - lam_lo) * ((1 + c2) * s - c2 * s**2)
    dlam = np.abs(np.gradient(lam))
    band_lo, band_hi = cfg.band[det_index]
    spec = _photon_spectrum(lam, cfg.teff) * dlam * _throughput(lam, band_lo, band_hi, cfg.grating)
    colref = refpix.all(axis=0)
    spec[colref] = 0.0

    xp = (x - 0.5 * (nx - 1)) / (0.5 * (nx - 1))
    y0, a1, a2 = cfg.trace_poly
    yc = y0 + a1 * xp + a2 * xp**2
    smin, smax = cfg.psf_sigma
    sig = smin + (smax - smin) * (lam - lam.min()) / max(np.ptp(lam), 1e-9)

    prof = _raw_profile(cfg, yc, sig, refpix)
    colsum = prof.sum(axis=0)
    # brightest pixel accumulates peak_signal_dn by the last group
    if scale is None:
        peak_pix = (spec[None, :] * prof).max()
        t_last = tgroup * cfg.ngroups
        scale = cfg.peak_signal_dn / t_last / peak_pix if peak_pix > 0 else 0.0
    column_flux = spec * colsum * scale
    with np.errstate(invalid="ignore", divide="ignore"):
        profile = np.where(colsum[None, :] > 0, prof / colsum[None, :], 0.0)

    rp = cfg.rp * (
        1.0
        + cfg.rp_feature_amp
        * (np.exp(-0.5 * ((lam - 4.3) / 0.08) ** 2) + 0.5 * np.exp(-0.5 * ((lam - 2.8) / 0.25) ** 2))
    )
    return SpectralScene(lam, yc, sig, column_flux, profile, rp, float(scale))


def transit_relflux(cfg, t_bjd: np.ndarray, rp: np.ndarray, t0: float) -> np.ndarray:
    """(nints, nx) relative flux per column from batman (quadratic limb darkening).

    Columns sharing an Rp/R* share one light curve (batman is called once per distinct
    value, rounded to 1e-7).
    """
    nints, nx = t_bjd.size, rp.size
    if not cfg.transit:
        return np.ones((nints, nx))
    from nirbeam._extras import require

    batman = require("batman", purpose="the simulator's transit model")

    params = batman.TransitParams()
    params.t0 = t0
    params.per = cfg.per
    params.rp = cfg.rp
    params.a = cfg.a_rs
    params.inc = cfg.inc
    params.ecc = cfg.ecc
    params.w = cfg.w
    params.limb_dark = "quadratic"
    params.u = [cfg.u1, cfg.u2]
    model = batman.TransitModel(params, np.asarray(t_bjd, np.float64))
    rq = np.round(rp, 7)
    uniq, inv = np.unique(rq, return_inverse=True)
    curves = np.empty((uniq.size, nints))
    for i, r in enumerate(uniq):
        params.rp = float(r)
        curves[i] = model.light_curve(params)
    return curves[inv].T.copy()


# ----------------------------------------------------------------------------------------
# Noise components
# ----------------------------------------------------------------------------------------
def group_times(cfg) -> np.ndarray:
    """(ngroups,) time of each group read after the reset, s (NFRAMES=1)."""
    return cfg.tframe * (1 + np.arange(cfg.ngroups) * (cfg.nframes + cfg.groupgap))


def _one_over_f_series(rng: np.random.Generator, n: int, amp: float, alpha: float = 1.0) -> np.ndarray:
    """One real 1/f^alpha series of n samples, expected standard deviation ``amp``."""
    nf = n // 2 + 1
    k = np.arange(nf, dtype=np.float64)
    amp_k = np.zeros(nf)
    amp_k[1:] = k[1:] ** (-0.5 * alpha)
    spec = (rng.standard_normal(nf) + 1j * rng.standard_normal(nf)) * amp_k
    series = np.fft.irfft(spec, n)
    expected_var = (2.0 / n**2) * 2.0 * np.sum(amp_k[1:] ** 2)
    return series * (amp / np.sqrt(expected_var))


def one_over_f_columns(rng: np.random.Generator, ngroups: int, nx: int, amp: float, overhead: int = 8, alpha: float = 1.0) -> np.ndarray:
    """(ngroups, nx) per-column offsets (DN) from one continuous 1/f series per integration.

    The series is sampled once per column read; ``overhead`` idle column slots separate
    frames. Normalised to an expected standard deviation ``amp``.
    """
    ncol = nx + overhead
    series = _one_over_f_series(rng, ngroups * ncol, amp, alpha)
    return series.reshape(ngroups, ncol)[:, :nx]


def _harmonic(n: int, alpha: float = 1.0) -> float:
    """sum_{k=1}^{n} k^-alpha (power of a 1/f^alpha spectrum up to frequency index n)."""
    return float(np.sum(np.arange(1, max(n, 1) + 1, dtype=np.float64) ** -alpha))


@functools.lru_cache(maxsize=64)
def one_over_f_pixel_variance(ngroups: int, ny: int, nx: int, amp: float, line_overhead: int = 12, frame_overhead: int = 8, alpha: float = 1.0) -> float:
    """Per-read variance (DN^2) of the pixel-scale (above column frequency) 1/f part.

    This part is independent from group to group and cannot be removed by column
    destriping; the READNOISE reference includes it (see :func:`one_over_f_pixels`).
    """
    n_total = ngroups * (nx + frame_overhead) * (ny + line_overhead)
    n_low = ngroups * (nx + frame_overhead)
    f_low = _harmonic(n_low // 2, alpha) / _harmonic(n_total // 2, alpha)
    return float(amp**2 * max(1.0 - f_low, 0.0))


def one_over_f_pixels(
    rng: np.random.Generator,
    ngroups: int,
    ny: int,
    nx: int,
    amp: float,
    fast_reversed: bool = False,
    line_overhead: int = 12,
    frame_overhead: int = 8,
    alpha: float = 1.0,
) -> np.ndarray:
    """(ngroups, ny, nx) 1/f^alpha noise (DN) of the pixel clock over one integration.

    Readout: the fast direction is y (a column of ``ny`` pixels plus ``line_overhead``
    idle clocks), the slow one x; ``frame_overhead`` idle columns separate frames. NRS2
    reads both axes in reverse (``fast_reversed``).

    A pink (1/f) series sampled at the pixel clock over the whole ramp is split at the
    column-read frequency: the low part (most of the power) is one continuous series at
    the column cadence, i.e. an offset per column per group, correlated across groups
    (vertical stripes); the high part, drawn per group, varies pixel to pixel within a
    column. Each part carries its share of the variance of the full 1/f series
    (harmonic-sum ratio), so the total has expected standard deviation ``amp``.
    (:func:`one_over_f_parts` draws the two parts; the simulator adds them inside its
    ramp kernel without building this cube.)
    """
    hi, low = one_over_f_parts(rng, ngroups, ny, nx, amp, line_overhead, frame_overhead, alpha)
    nline = ny + line_overhead
    ncol = nx + frame_overhead
    n_g = ncol * nline
    cube = hi[:, :n_g].reshape(ngroups, ncol, nline)[:, :nx, :ny].transpose(0, 2, 1) + low[:, None, :]
    if fast_reversed:
        cube = cube[:, ::-1, ::-1]
    return cube


@functools.lru_cache(maxsize=32)
def _hi_spectrum(n_g: int, ncol: int, alpha: float) -> tuple[int, np.ndarray, float]:
    """FFT length, float32 amplitude (above the column-read frequency) and the expected
    variance of its inverse transform, for one group of ``n_g`` pixel clocks."""
    from scipy.fft import next_fast_len

    m = next_fast_len(n_g, real=True)
    nf = m // 2 + 1
    k = np.arange(nf, dtype=np.float64)
    kc = int(np.ceil(ncol * m / n_g / 2.0))
    a = np.zeros(nf, np.float32)
    a[kc:] = (k[kc:] ** (-0.5 * alpha)).astype(np.float32)
    a.setflags(write=False)
    expected_var = (4.0 / m**2) * float(np.sum(a.astype(np.float64) ** 2))
    return m, a, expected_var


def one_over_f_parts(
    rng: np.random.Generator,
    ngroups: int,
    ny: int,
    nx: int,
    amp: float,
    line_overhead: int = 12,
    frame_overhead: int = 8,
    alpha: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The two parts of :func:`one_over_f_pixels`, in readout order, before the cube.

    Returns
    -------
    hi : float32, (ngroups, m), DN
        Pixel-scale part of each group: sample ``x * (ny + line_overhead) + y`` is the
        read of pixel (y, x) (the first ``(nx + frame_overhead) * (ny + line_overhead)``
        samples are used).
    low : float64, (ngroups, nx), DN
        Column-scale part: one offset per column read per group.
    """
    nline = ny + line_overhead
    ncol = nx + frame_overhead
    var_hi = one_over_f_pixel_variance(ngroups, ny, nx, amp, line_overhead, frame_overhead, alpha)
    low = one_over_f_columns(rng, ngroups, nx, np.sqrt(max(amp**2 - var_hi, 0.0)), frame_overhead, alpha)
    # high part: per group, frequencies above the column-read frequency only
    n_g = ncol * nline
    m, a, expected_var = _hi_spectrum(n_g, ncol, float(alpha))
    nf = a.size
    # the numpy expression this replaces, with the same draws in the same order:
    # spec = (N_re + 1j * N_im) * a  (complex64; x * a - 0 == x * a exactly)
    spec = np.empty((ngroups, nf), np.complex64)
    buf = np.empty((ngroups, nf), np.float32)
    rng.standard_normal(dtype=np.float32, out=buf)
    np.multiply(buf, a, out=spec.real)
    rng.standard_normal(dtype=np.float32, out=buf)
    np.multiply(buf, a, out=spec.imag)
    hi = np.fft.irfft(spec, m, axis=-1)
    view = hi[:, :n_g]
    view *= np.sqrt(var_hi / expected_var)
    return hi, low


def _one_over_f_pixels_reference(
    rng: np.random.Generator,
    ngroups: int,
    ny: int,
    nx: int,
    amp: float,
    fast_reversed: bool = False,
    line_overhead: int = 12,
    frame_overhead: int = 8,
    alpha: float = 1.0,
) -> np.ndarray:
    """:func:`one_over_f_pixels` as it was written before :func:`one_over_f_parts`
    (the reference of tests/test_sim_ramp_kernel.py)."""
    from scipy.fft import next_fast_len

    nline = ny + line_overhead
    ncol = nx + frame_overhead
    var_hi = one_over_f_pixel_variance(ngroups, ny, nx, amp, line_overhead, frame_overhead, alpha)
    low = one_over_f_columns(rng, ngroups, nx, np.sqrt(max(amp**2 - var_hi, 0.0)), frame_overhead, alpha)
    n_g = ncol * nline
    m = next_fast_len(n_g, real=True)
    nf = m // 2 + 1
    k = np.arange(nf, dtype=np.float64)
    kc = int(np.ceil(ncol * m / n_g / 2.0))
    a = np.zeros(nf, np.float32)
    a[kc:] = (k[kc:] ** (-0.5 * alpha)).astype(np.float32)
    spec = rng.standard_normal((ngroups, nf), dtype=np.float32) + 1j * rng.standard_normal((ngroups, nf), dtype=np.float32)
    spec *= a
    hi = np.fft.irfft(spec, m, axis=-1)[:, :n_g]
    expected_var = (4.0 / m**2) * float(np.sum(a.astype(np.float64) ** 2))
    hi *= np.sqrt(var_hi / expected_var)
    cube = hi.reshape(ngroups, ncol, nline)[:, :nx, :ny].transpose(0, 2, 1) + low[:, None, :]
    if fast_reversed:
        cube = cube[:, ::-1, ::-1]
    return cube


@dataclass(frozen=True)
class CosmicRayHits:
    """Affected pixels of one integration (all arrays the same length)."""

    group: np.ndarray  # 0-based first group containing the charge
    y: np.ndarray
    x: np.ndarray
    amplitude_dn: np.ndarray  # linear DN deposited
    kind: np.ndarray  # 0 = cosmic ray, 1 = snowball


_EMPTY_HITS = CosmicRayHits(*(np.zeros(0, np.int32) for _ in range(3)), np.zeros(0, np.float32), np.zeros(0, np.int8))


def draw_cosmic_rays(rng: np.random.Generator, cfg, live: np.ndarray, t_int: float) -> CosmicRayHits:
    """Cosmic-ray events and snowballs for one integration.

    Events: Poisson(rate * npix * t_int) primary pixels, amplitude log-uniform in
    cfg.cr_amplitude_dn, with a 50% chance of spilling 2-15% into each 4-neighbour.
    Snowballs: round clusters of radius 2-4 px with a 20-60 kDN core.
    """
    if not cfg.cosmic_rays:
        return _EMPTY_HITS
    ny, nx = live.shape
    G = cfg.ngroups
    gs, ys, xs, amps, kinds = [], [], [], [], []
    nev = rng.poisson(cfg.cr_rate * ny * nx * t_int)
    if nev:
        y = rng.integers(0, ny, nev)
        x = rng.integers(0, nx, nev)
        g = rng.integers(0, G, nev)
        lo, hi = np.log(cfg.cr_amplitude_dn[0]), np.log(cfg.cr_amplitude_dn[1])
        a = np.exp(rng.uniform(lo, hi, nev))
        gs.append(g), ys.append(y), xs.append(x), amps.append(a), kinds.append(np.zeros(nev, np.int8))
        spill = rng.random(nev) < 0.5
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            frac = rng.uniform(0.02, 0.15, nev)
            yy, xx = y + dy, x + dx
            ok = spill & (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
            gs.append(g[ok]), ys.append(yy[ok]), xs.append(xx[ok]), amps.append(a[ok] * frac[ok])
            kinds.append(np.zeros(ok.sum(), np.int8))
    nsb = rng.poisson(cfg.snowball_rate * ny * nx * t_int)
    for _ in range(nsb):
        cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        r = rng.uniform(2.0, 4.0)
        core = rng.uniform(20000.0, 60000.0)
        g = rng.integers(0, G)
        y0, y1 = max(int(cy - r - 1), 0), min(int(cy + r + 2), ny)
        x0, x1 = max(int(cx - r - 1), 0), min(int(cx + r + 2), nx)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        d = np.hypot(yy + 0.5 - cy, xx + 0.5 - cx)
        a = np.where(d < 0.5 * r, core, core * np.exp(-3.0 * ((d - 0.5 * r) / (0.5 * r)) ** 2))
        ok = (d <= r) & (a > 50.0)
        if getattr(cfg, "snowball_halo", False):
            # faint diffuse halo out to 3 r (charge spread around the core), below the
            # per-pixel jump threshold at its outer edge
            rh = 3.0 * r
            y0, y1 = max(int(cy - rh - 1), 0), min(int(cy + rh + 2), ny)
            x0, x1 = max(int(cx - rh - 1), 0), min(int(cx + rh + 2), nx)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            d = np.hypot(yy + 0.5 - cy, xx + 0.5 - cx)
            halo = cfg.snowball_halo_frac * core * np.exp(-(d - r) / r)
            core_a = np.where(d < 0.5 * r, core, core * np.exp(-3.0 * ((d - 0.5 * r) / (0.5 * r)) ** 2))
            a = np.where(d <= r, core_a, 0.0) + np.where(d > r, halo, 0.0)
            ok = (d <= rh) & (a > 5.0)
        gs.append(np.full(ok.sum(), g)), ys.append(yy[ok]), xs.append(xx[ok]), amps.append(a[ok])
        kinds.append(np.ones(ok.sum(), np.int8))
    if not gs:
        return _EMPTY_HITS
    g, y, x, a, k = (np.concatenate(v) for v in (gs, ys, xs, amps, kinds))
    keep = live[y, x]
    return CosmicRayHits(
        g[keep].astype(np.int32), y[keep].astype(np.int32), x[keep].astype(np.int32),
        a[keep].astype(np.float32), k[keep].astype(np.int8),
    )


# ----------------------------------------------------------------------------------------
# One integration
# ----------------------------------------------------------------------------------------
def _electrons_and_hits(rng: np.random.Generator, cfg, props: DetectorProps,
                        rate_src: np.ndarray, t_int: float):
    """The first draws of one integration, shared by :func:`simulate_integration` and its
    numpy reference: ``(G, ny, nx, gain float64, electrons per group interval (int64
    Poisson draw, (G, ny, nx)), cosmic-ray hits)``. The Poisson draw is the stream's
    first (bench/science_regression.py's photon oracle re-draws it)."""
    G = cfg.ngroups
    ny, nx = props.shape
    tg = cfg.tframe * (cfg.nframes + cfg.groupgap)
    gain = props.gain.astype(np.float64)
    # electrons per group interval (source seen through QE, plus dark)
    lam_e = ((rate_src * props.qe + props.dark_rate) * gain) * tg
    inc = rng.poisson(np.broadcast_to(lam_e, (G, ny, nx)))
    hits = draw_cosmic_rays(rng, cfg, props.qe > 0, t_int)
    return G, ny, nx, gain, inc, hits


def simulate_integration(
    rng: np.random.Generator,
    cfg,
    props: DetectorProps,
    rate_src: np.ndarray,
    t_int: float,
    fast_reversed: bool = False,
) -> tuple[np.ndarray, CosmicRayHits]:
    """Raw ramp of one integration.

    Parameters
    ----------
    rng : numpy.random.Generator
        Stream dedicated to this (detector, integration).
    cfg : SimConfig
    props : DetectorProps
    rate_src : float64, (ny, nx), DN/s
        True source rate during this integration (TRUE_RATE).
    t_int : float, s
        Photon-collecting time (for cosmic-ray counts).
    fast_reversed : bool
        Readout runs towards decreasing x and y (NRS2: FASTAXIS=-2, SLOWAXIS=-1).

    Returns
    -------
    ramp : uint16, (ngroups, ny, nx), DN
    hits : CosmicRayHits
    """
    G, ny, nx, gain, inc, hits = _electrons_and_hits(rng, cfg, props, rate_src, t_int)
    if hits.y.size:  # the hit elements as numpy's add.at on the float64 draw sums them
        flat = (hits.group.astype(np.int64) * ny + hits.y) * nx + hits.x
        ovr_idx, inv = np.unique(flat, return_inverse=True)
        ovr_val = inc.reshape(-1)[ovr_idx].astype(np.float64)
        np.add.at(ovr_val, inv, hits.amplitude_dn * gain[hits.y, hits.x])
    else:
        ovr_idx, ovr_val = np.zeros(0, np.int64), np.zeros(0, np.float64)
    bias_i = props.bias + rng.normal(0.0, cfg.bias_int_sigma)  # float32, as before
    zeros = np.zeros((ny, nx))
    ktc = rng.normal(0.0, cfg.ktc_dn, (ny, nx)) if cfg.ktc_dn > 0 else zeros  # reset (kTC) noise
    drift = rng.normal(0.0, cfg.bias_drift_dn, G) if cfg.bias_drift_dn > 0 else np.zeros(G)
    if cfg.even_odd_dn > 0 or cfg.even_odd_drift_dn > 0:
        eo = even_odd_offsets(rng, cfg, G, ny)
    else:
        eo = np.zeros((G, ny))
    nrm = rng.standard_normal((G, ny, nx))
    rn_s = props.rn_cds / np.sqrt(2.0)  # float64
    hi = low = None
    line_overhead = 12
    if cfg.one_over_f and cfg.one_over_f_dn > 0:
        hi, low = one_over_f_parts(rng, G, ny, nx, cfg.one_over_f_dn, line_overhead=line_overhead,
                                   alpha=cfg.one_over_f_alpha)
    ramp = assemble_ramp(inc, ovr_idx, ovr_val, gain, props.beta, bias_i, ktc, drift, eo, nrm,
                         rn_s, hi, low, ny + line_overhead, fast_reversed, props.sat_hard)
    return ramp, hits


def _simulate_integration_reference(
    rng: np.random.Generator,
    cfg,
    props: DetectorProps,
    rate_src: np.ndarray,
    t_int: float,
    fast_reversed: bool = False,
) -> tuple[np.ndarray, CosmicRayHits]:
    """:func:`simulate_integration` in numpy, as it was before the ramp kernel
    (nirbeam/sim/ramp_kernel.py): the reference of tests/test_sim_ramp_kernel.py."""
    G, ny, nx, gain, inc, hits = _electrons_and_hits(rng, cfg, props, rate_src, t_int)
    inc = inc.astype(np.float64)
    if hits.y.size:
        np.add.at(inc, (hits.group, hits.y, hits.x), hits.amplitude_dn * gain[hits.y, hits.x])
    sig = np.cumsum(inc, axis=0) / gain  # linear DN
    sig -= props.beta * sig * sig  # classical non-linearity
    raw = sig
    raw += props.bias + rng.normal(0.0, cfg.bias_int_sigma)
    if cfg.ktc_dn > 0:  # reset (kTC) noise: one offset per pixel per integration
        raw += rng.normal(0.0, cfg.ktc_dn, (ny, nx))
    if cfg.bias_drift_dn > 0:  # common bias drift per group (seen by reference pixels too)
        drift = rng.normal(0.0, cfg.bias_drift_dn, G)
        raw += drift[:, None, None]
    if cfg.even_odd_dn > 0 or cfg.even_odd_drift_dn > 0:
        raw += even_odd_offsets(rng, cfg, G, ny)[:, :, None]
    raw += rng.standard_normal((G, ny, nx)) * (props.rn_cds / np.sqrt(2.0))
    if cfg.one_over_f and cfg.one_over_f_dn > 0:
        raw += _one_over_f_pixels_reference(rng, G, ny, nx, cfg.one_over_f_dn, fast_reversed=fast_reversed,
                                            alpha=cfg.one_over_f_alpha)
    np.minimum(raw, props.sat_hard, out=raw)
    np.rint(raw, out=raw)
    np.clip(raw, 0, 65535, out=raw)
    return raw.astype(np.uint16), hits


def even_odd_offsets(rng: np.random.Generator, cfg, ngroups: int, ny: int) -> np.ndarray:
    """(ngroups, ny) even/odd offsets (DN) alternating along the fast-read axis.

    NIRSpec reads along detector rows, i.e. along DMS y (the DMS frame is the transpose
    of the detector frame; jwst ``refpix`` NRS1/NRS2 ``dms_to_detector``), so the
    alternating even/odd detector-column offset alternates with the parity of the
    full-frame DMS row ``SUBSTRT2 - 1 + y``. Per integration the offset starts at
    N(0, even_odd_dn) and drifts from group to group as a random walk with steps
    N(0, even_odd_drift_dn). Returned as +off on even, -off on odd full-frame rows.
    """
    off = rng.normal(0.0, cfg.even_odd_dn) + np.cumsum(rng.normal(0.0, cfg.even_odd_drift_dn, ngroups))
    parity = ((cfg.substrt2 - 1 + np.arange(ny)) % 2) * -2.0 + 1.0  # +1 even, -1 odd
    return off[:, None] * parity[None, :]


def ramp_variance(rate_dn_s: np.ndarray, gain: np.ndarray, rn_cds: np.ndarray, ngroups: int, tgroup: float) -> np.ndarray:
    """Variance (DN/s)^2 of an unweighted least-squares slope of an ideal ramp.

    Poisson: 6 (N^2+1) / (5 N (N^2-1)) * rate / (gain * tgroup);
    read: 12 sigma_read^2 / (N (N^2-1) tgroup^2) with sigma_read = rn_cds / sqrt(2).
    """
    n = ngroups
    vp = 6.0 * (n * n + 1) / (5.0 * n * (n * n - 1)) * np.maximum(rate_dn_s, 0) / (gain * tgroup)
    vr = 12.0 * (rn_cds**2 / 2.0) / (n * (n * n - 1) * tgroup**2)
    return vp + vr
