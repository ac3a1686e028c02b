"""Simulator of NIRSpec IFU dithered exposures (EXP_TYPE ``NRS_IFU``) in the level-1b
layout, with truth.

Geometry (grounded in the CV3 trace of IFU slice 0, G140M/F100LP, NRS1, in
``shared/data/modes/jwst_geometry/Trace_IFU_Slice_00_*.fits``): from its per-pixel
LAMBDA1 and SLITY1 maps :func:`cv3_slice_model` measures, per detector column, the row
where the slice's centre (SLITY1 = 0) falls (the trace's curvature: ~13 rows over the
1464 columns), the wavelength there (0.963-1.897 µm), the wavelength's change along the
slice (the spectral tilt) and the rows per unit of SLITY1 (~30: 0.1" per row for a 3"
slice). Thirty slices with that shape are stacked ``slice_pitch`` rows apart; slice ``s``
samples the across-slice coordinate ``beta = (s - 14.5) * 0.1"`` and each row of it the
along-slice coordinate ``alpha`` (0.1" per row). A frame smaller than the full 2048 x 2048
(``ncols``, ``trace_ncols``) resamples the same wavelength range on fewer columns.

Scene: a point source (Gaussian PSF whose width grows with wavelength) and an extended
source (a Gaussian disc with a continuum and an emission line), seen through 4 dither
positions (offsets ``dithers``, arcsec, in the slicer frame: ``alpha = x + XOFFSET``).
The instrument moves the point source along and across the slice with wavelength
(``wander_*``: the spatial distortion the pipeline's geometry reference does not hold),
which the pipeline's centroid correction must remove. Each pixel's signal is the exact
integral of the scene over its footprint (error functions), times the flux calibration.

Files written into ``OUTDIR``:

* ``jw<prog>..._<nn>101_00001_nrs1_uncal.fits``, one per dither: SCI uint16 (nints,
  ngroups, ny, nx), GROUP, INT_TIMES, IFU keywords (EXP_TYPE NRS_IFU, PATT_NUM, NUMDTHPT,
  XOFFSET/YOFFSET...), via :mod:`nirbeam.sim.fits_writer`; ``readout`` selects the
  layout: ``"auto"`` (default) writes the full frame in IRS2 (READPATT ``NRSIRS2``, TFRAME
  14.58889 s, interleaved reference samples, reference output, 1/f, alternating column
  noise: :mod:`nirbeam.sim.irs2`) as real IFU exposures are, and a cut-down frame
  (``ifu-small``) in traditional ``NRSRAPID`` (IRS2 is full frame only: a test
  convenience, not a real layout); ``"TRADITIONAL"`` or ``"NRSIRS2"`` force one;
* ``refs/``: CRDS-format detector references (superbias, dark, linearity, saturation,
  readnoise, gain, mask) and, for IRS2, the REFPIX reference that fits the simulated
  IRS2 readout noise (:func:`nirbeam.sim.irs2.write_matched_refpix`);
* ``ifu_refs/geometry_nrs1.fits``: the per-pixel maps the pipeline uses (as jwst's
  ``assign_wcs`` gives them): WAVELENGTH (µm), ALPHA, BETA (arcsec), SLICE (int16, -1
  off the slices), with SLICEWID/PIXSCALE keywords; ``ifu_refs/photom.fits`` (a table
  WAVELENGTH, CONVERSION in DN/s per MJy/sr); ``ifu_refs/apcorr.fits`` (WAVELENGTH,
  RADIUS arcsec, APCORR: the point-source aperture and its correction, from the PSF
  model -- the instrument's, not the scene's);
* ``sources.json``: the observer's catalogue (approximate positions, kinds);
* ``truth.json``: the scene (positions, PSF width, wander), per-source spectra
  ``sources: {id: {wavelength_um, flux_ujy}}``, the injected outliers.

Size note: over 600 lines on purpose: the IFU simulator's geometry, scene and files for one dither set.
"""

from __future__ import annotations

import dataclasses
import json
import time as _time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy.special import erf

from nirbeam.sim.fits_writer import (
    UncalSegmentWriter,
    group_table_hdu,
    int_times_hdu,
)
from nirbeam.sim.headers import (
    FASTSLOW,
    file_cards,
    header_from_cards,
    readout_cards,
    reference_common,
    reference_path,
    reference_primary,
    write_detector_refs,
)

__all__ = ["IFUSimConfig", "IFU_PRESETS", "simulate_ifu", "cv3_slice_model", "IFUSimResult",
           "CV3_TRACE", "scene_cube", "psf_sigma"]

GEOMETRY_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "modes" / "jwst_geometry"
CV3_TRACE = "Trace_IFU_Slice_00_SMOS-MOD-G1M-17-5344175105_30192_JLAB88.fits"
MJYSR_ARCSEC2_TO_UJY = 1e12 * (np.pi / (180.0 * 3600.0)) ** 2
NSLICES = 30
#: IFUSimConfig.readout values: auto (full frame: IRS2; cut-down: traditional) or forced
IFU_READOUTS = ("auto", "TRADITIONAL", "NRSIRS2")
#: traditional full-frame (NRSRAPID) frame time, the config's default
TFRAME_TRADITIONAL_FULL = 10.737


def _geometry_file(name: str) -> Path:
    import os

    for base in (os.environ.get("NIRBEAM_GEOMETRY_DIR"), "/work/shared/data/modes/jwst_geometry",
                 str(GEOMETRY_DIR)):
        if base and (Path(base) / name).is_file():
            return Path(base) / name
    raise FileNotFoundError(f"{name}: the CV3 IFU trace is needed (set NIRBEAM_GEOMETRY_DIR "
                            "to the folder holding shared/data/modes/jwst_geometry)")


@dataclass(frozen=True)
class IFUSimConfig:
    """Every knob of a simulated IFU dither set (override through :func:`simulate_ifu`)."""

    preset: str = "ifu"
    nrows: int = 2048
    ncols: int = 2048
    trace_x0: int = 124            # first frame column of the slices (CV3 cut-out: 124)
    trace_ncols: int = 1464        # frame columns the CV3 wavelength range is laid on
    slice_pitch: int = 64          # rows between slice centres
    slice_rows: int = 30           # rows of a slice (3" at 0.1"/row)
    first_slice_row: int = 40      # centre row of slice 0 at the trace's middle column
    slice_width: float = 0.1       # arcsec across a slice
    pixel_scale: float = 0.1       # arcsec along a slice per row
    refpix: bool = True            # 4 reference rows/columns at the frame edges
    ngroups: int = 5
    nints: int = 1
    tframe: float = TFRAME_TRADITIONAL_FULL  # full-frame NRSRAPID; IRS2: resolved_readout
    readpatt: str = "NRSRAPID"     # IRS2: NRSIRS2 (resolved_readout)
    readout: str = "auto"          # full frame: NRSIRS2; cut-down: TRADITIONAL (module notes)
    bias_dn: float = 12000.0
    read_noise_dn: float = 6.0     # per read
    gain: float = 1.0
    # scene
    point_xy: tuple[float, float] = (-0.55, 0.45)
    point_flux_ujy: float = 800.0
    point_slope: float = -0.6      # F_nu ~ (lambda / 1.4 um)^slope
    ext_xy: tuple[float, float] = (0.6, -0.55)
    ext_sigma: float = 0.2         # arcsec
    ext_cont_ujy: float = 300.0
    line_um: float = 1.45
    line_sigma_um: float = 0.004
    line_flux_ujy_um: float = 20.0  # line integral, uJy x um
    psf_sigma0: float = 0.045      # arcsec at psf_wave0
    psf_wave0: float = 1.4
    wander_x: tuple[float, float] = (0.03, 0.02)   # arcsec: linear, quadratic in t=(l-1.43)/0.47
    wander_y: tuple[float, float] = (-0.015, 0.01)
    dithers: tuple[tuple[float, float], ...] = ((0.0, 0.0), (0.05, 0.05), (0.025, -0.025),
                                                (-0.025, 0.075))
    conversion0: float = 0.12      # DN/s per MJy/sr at 1.4 um
    n_cosmic: int = 40             # jumps per exposure
    n_hot_once: int = 25           # pixels bright in one exposure only (missed by jump)
    apcorr_k: float = 4.0          # aperture radius in sigmas of the cube's PSF
    cube_cdelt: float = 0.1        # spaxel the aperture correction is made for
    exposure_prefix: str = "jw01234001001_03101"
    seed: int = 0

    @property
    def tgroup(self) -> float:
        """Seconds between groups (NFRAMES=1, GROUPGAP=0)."""
        return self.tframe

    @property
    def subarray(self) -> str:
        """SUBARRAY keyword: FULL for the full frame, else the simulator's cut-down frame."""
        return "FULL" if (self.nrows, self.ncols) == (2048, 2048) else "SUBIFU"

    @property
    def irs2(self) -> bool:
        """True when the exposures are written in IRS2 (``readout`` resolved)."""
        ro = self.readout if self.readout == "auto" else self.readout.upper()
        if ro == "auto":
            return self.subarray == "FULL"
        return ro == "NRSIRS2"


def resolved_readout(cfg: IFUSimConfig) -> IFUSimConfig:
    """``cfg`` with ``readout`` resolved to ``"NRSIRS2"`` or ``"TRADITIONAL"`` (checked:
    IRS2 is full frame only); for IRS2 READPATT NRSIRS2 and the IRS2 full-frame TFRAME
    (unless set to other values than the traditional defaults)."""
    ro = cfg.readout if cfg.readout == "auto" else cfg.readout.upper()
    if ro not in IFU_READOUTS:
        raise ValueError(f"IFUSimConfig.readout {cfg.readout!r}: one of {IFU_READOUTS}")
    if ro == "NRSIRS2" and cfg.subarray != "FULL":
        raise ValueError(f"IFUSimConfig.readout 'NRSIRS2' is full frame only; got "
                         f"{cfg.nrows}x{cfg.ncols}")
    if not cfg.irs2:
        return dataclasses.replace(cfg, readout="TRADITIONAL")
    from nirbeam.sim.irs2 import TFRAME_IRS2_FULL

    return dataclasses.replace(
        cfg, readout="NRSIRS2", readpatt="NRSIRS2" if cfg.readpatt == "NRSRAPID" else cfg.readpatt,
        tframe=TFRAME_IRS2_FULL if cfg.tframe == TFRAME_TRADITIONAL_FULL else cfg.tframe)


IFU_PRESETS = {
    # the full frame, G140M/F100LP wavelengths on NRS1 as in the CV3 trace; IRS2 (NRSIRS2)
    # as real IFU exposures
    "ifu": IFUSimConfig(),
    # a cut-down frame for tests and quick looks: 30 slices, 128 wavelength columns;
    # traditional readout (IRS2 is full frame only; a test convenience)
    "ifu-small": IFUSimConfig(preset="ifu-small", nrows=1040, ncols=136, trace_x0=4,
                              trace_ncols=128, slice_pitch=33, first_slice_row=28, ngroups=4,
                              tframe=10.737, line_sigma_um=0.012, line_flux_ujy_um=40.0,
                              n_cosmic=8, n_hot_once=6),
}


@dataclass(frozen=True)
class SliceModel:
    """Shape of a slice measured on the CV3 trace, as functions of the CV3 cut-out
    column ``c`` (0..1463): polynomials (numpy.polyfit order, in c/1000)."""

    yc: tuple[float, ...]        # row of SLITY1 = 0 (cut-out rows)
    wave: tuple[float, ...]      # µm at SLITY1 = 0
    tilt: tuple[float, ...]      # µm per row along the slice
    rows_per_unit: float         # rows per unit of SLITY1
    ncols: int


def cv3_slice_model(path: Path | None = None) -> SliceModel:
    """Measure the slice shape on the CV3 IFU trace (LAMBDA1 m, SLITY1 per pixel)."""
    path = Path(path) if path else _geometry_file(CV3_TRACE)
    with fits.open(path) as f:
        lam = np.asarray(f["LAMBDA1"].data, np.float64) * 1e6
        sy = np.asarray(f["SLITY1"].data, np.float64)
    ny, nx = lam.shape
    rows = np.arange(ny, dtype=np.float64)
    cs, ycs, ws, ts, rpu = [], [], [], [], []
    for c in range(0, nx, 8):
        ok = (lam[:, c] > 0) & np.isfinite(sy[:, c]) & (np.abs(sy[:, c]) < 0.6)
        if ok.sum() < 10:
            continue
        a, b = np.polyfit(rows[ok], sy[ok, c], 1)            # slity = a*row + b
        la, lb = np.polyfit(rows[ok], lam[ok, c], 1)          # lambda = la*row + lb
        y0 = -b / a
        cs.append(c)
        ycs.append(y0)
        ws.append(la * y0 + lb)
        ts.append(la)
        rpu.append(1.0 / a)
    t = np.asarray(cs) / 1000.0
    return SliceModel(tuple(np.polyfit(t, ycs, 3)), tuple(np.polyfit(t, ws, 3)),
                      tuple(np.polyfit(t, ts, 1)), float(np.median(rpu)), nx)


def psf_sigma(cfg: IFUSimConfig, wave_um) -> np.ndarray:
    """PSF sigma (arcsec) at ``wave_um``: a core proportional to wavelength."""
    return cfg.psf_sigma0 * np.asarray(wave_um, np.float64) / cfg.psf_wave0


def _wander(cfg: IFUSimConfig, wave_um):
    t = (np.asarray(wave_um, np.float64) - 1.43) / 0.47
    return (cfg.wander_x[0] * t + cfg.wander_x[1] * t * t,
            cfg.wander_y[0] * t + cfg.wander_y[1] * t * t)


def point_spectrum(cfg: IFUSimConfig, wave_um) -> np.ndarray:
    """Point source F_nu, µJy."""
    return cfg.point_flux_ujy * (np.asarray(wave_um, np.float64) / 1.4) ** cfg.point_slope


def extended_spectrum(cfg: IFUSimConfig, wave_um) -> np.ndarray:
    """Extended source total F_nu, µJy: continuum plus a Gaussian emission line."""
    w = np.asarray(wave_um, np.float64)
    line = cfg.line_flux_ujy_um / (np.sqrt(2 * np.pi) * cfg.line_sigma_um) * np.exp(
        -0.5 * ((w - cfg.line_um) / cfg.line_sigma_um) ** 2)
    return cfg.ext_cont_ujy + line


def conversion(cfg: IFUSimConfig, wave_um) -> np.ndarray:
    """Flux calibration, DN/s per MJy/sr: a smooth throughput curve."""
    w = np.asarray(wave_um, np.float64)
    return cfg.conversion0 * (1.0 - 0.8 * (w - 1.4) ** 2)


def cube_psf_sigma(cfg: IFUSimConfig, wave_um) -> np.ndarray:
    """Gaussian-equivalent sigma (arcsec) of the point source in a cube: the PSF widened
    by the pixel (slice) footprint and the spaxel (box variances d^2/12)."""
    s = psf_sigma(cfg, wave_um)
    return np.sqrt(s**2 + (cfg.pixel_scale**2 + cfg.cube_cdelt**2) / 12.0)


def encircled_energy(cfg: IFUSimConfig, wave_um, radius) -> np.ndarray:
    """Fraction of a point source inside ``radius`` (arcsec) in a cube: the Gaussian PSF
    convolved with the pixel box and the spaxel box (each axis), integrated numerically."""
    out = []
    for w, r in zip(np.atleast_1d(wave_um), np.atleast_1d(radius), strict=True):
        s = float(psf_sigma(cfg, w))
        h = 0.002
        x = np.arange(-r - 0.3, r + 0.3 + h, h)
        prof = np.exp(-0.5 * (x / s) ** 2)
        for d in (cfg.pixel_scale, cfg.cube_cdelt):
            k = np.ones(max(int(round(d / h)), 1))
            prof = np.convolve(prof, k, mode="same")
        prof /= prof.sum()
        inside = (x[:, None] ** 2 + x[None, :] ** 2) <= r * r
        out.append(float((prof[:, None] * prof[None, :])[inside].sum()))
    return np.asarray(out)


def _phi(z):
    return 0.5 * (1.0 + erf(z / np.sqrt(2.0)))


def _box_fraction(a0, a1, b0, b1, xa, xb, sigma):
    """Fraction of a circular Gaussian (centre xa, xb; sigma) inside [a0,a1] x [b0,b1]."""
    return (_phi((a1 - xa) / sigma) - _phi((a0 - xa) / sigma)) * (
        _phi((b1 - xb) / sigma) - _phi((b0 - xb) / sigma))


@dataclass(frozen=True)
class Geometry:
    """Per-pixel maps of the simulated frame (float64 (ny, nx); NaN / -1 off-slice)."""

    wave: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    slice: np.ndarray


def frame_geometry(cfg: IFUSimConfig, model: SliceModel | None = None) -> Geometry:
    """The frame's wavelength, along-slice, across-slice and slice maps."""
    model = model or cv3_slice_model()
    ny, nx = cfg.nrows, cfg.ncols
    wave = np.full((ny, nx), np.nan)
    alpha = np.full((ny, nx), np.nan)
    beta = np.full((ny, nx), np.nan)
    sl = np.full((ny, nx), -1, np.int16)
    cols = np.arange(cfg.trace_x0, cfg.trace_x0 + cfg.trace_ncols)
    c_cv3 = (cols - cfg.trace_x0 + 0.5) * (model.ncols / cfg.trace_ncols) - 0.5
    t = c_cv3 / 1000.0
    yc = np.polyval(model.yc, t)
    yc = yc - np.polyval(model.yc, (model.ncols / 2) / 1000.0)
    wc = np.polyval(model.wave, t)
    tilt = np.polyval(model.tilt, t)
    # rows per unit SLITY1 measured ~29.8: 0.1" per row for the 3" slice; the sign is the
    # slice's orientation on the detector
    sign = float(np.sign(model.rows_per_unit))
    rows = np.arange(ny, dtype=np.float64)[:, None]
    edge = 4 if cfg.refpix else 0
    for s in range(NSLICES):
        yc_s = cfg.first_slice_row + s * cfg.slice_pitch + yc[None, :]
        half = cfg.slice_rows / 2
        if yc_s.min() - half < edge - 0.5 or yc_s.max() + half > ny - edge - 0.5:
            raise ValueError(f"slice {s} (rows {yc_s.min() - half:.0f}..{yc_s.max() + half:.0f}) "
                             f"leaves the {ny}-row frame: change slice_pitch/first_slice_row")
        u = (rows - yc_s) * sign                     # rows from the slice centre
        on = np.abs(u) < cfg.slice_rows / 2
        sub = np.zeros((ny, nx), bool)
        sub[:, cols] = on
        wave[sub] = (wc[None, :] + tilt[None, :] * (rows - yc_s))[on]
        alpha[sub] = (u * cfg.pixel_scale)[on]
        beta[sub] = (s - (NSLICES - 1) / 2) * cfg.slice_width
        sl[sub] = s
    return Geometry(wave, alpha, beta, sl)


def _pixel_rates(cfg: IFUSimConfig, geo: Geometry, dither: tuple[float, float]) -> np.ndarray:
    """Noise-free rate (DN/s) of every pixel for one dither position."""
    on = geo.slice >= 0
    w = geo.wave[on]
    a = geo.alpha[on]
    b = geo.beta[on]
    ha = cfg.pixel_scale / 2
    hb = cfg.slice_width / 2
    area = cfg.pixel_scale * cfg.slice_width
    sig = psf_sigma(cfg, w)
    wx, wy = _wander(cfg, w)
    # slicer frame: alpha = x + xoffset (pipeline: x = alpha - xoffset)
    fp = _box_fraction(a - ha, a + ha, b - hb, b + hb, cfg.point_xy[0] + dither[0] + wx,
                       cfg.point_xy[1] + dither[1] + wy, sig)
    se = np.sqrt(sig**2 + cfg.ext_sigma**2)
    fe = _box_fraction(a - ha, a + ha, b - hb, b + hb, cfg.ext_xy[0] + dither[0],
                       cfg.ext_xy[1] + dither[1], se)
    ujy = fp * point_spectrum(cfg, w) + fe * extended_spectrum(cfg, w)
    sb = ujy / (area * MJYSR_ARCSEC2_TO_UJY)           # MJy/sr
    rate = np.zeros(geo.slice.shape)
    rate[on] = sb * conversion(cfg, w)
    return rate


def scene_cube(cfg: IFUSimConfig, wave_um, xc, yc, cdelt: float, corrected: bool = True):
    """The true scene's mean surface brightness (MJy/sr) over each spaxel of a grid
    (centres ``xc``, ``yc`` arcsec, size ``cdelt``) at ``wave_um``, with the point source
    at its true sky position (``corrected``) or where the distortion moves it.

    Returns float64 (nwave, ny, nx).
    """
    w = np.asarray(wave_um, np.float64)[:, None, None]
    X = np.asarray(xc)[None, None, :]
    Y = np.asarray(yc)[None, :, None]
    h = cdelt / 2
    sig = psf_sigma(cfg, w)
    px, py = cfg.point_xy
    if not corrected:
        wx, wy = _wander(cfg, w)
        px, py = px + wx, py + wy
    fp = _box_fraction(X - h, X + h, Y - h, Y + h, px, py, sig)
    se = np.sqrt(sig**2 + cfg.ext_sigma**2)
    fe = _box_fraction(X - h, X + h, Y - h, Y + h, cfg.ext_xy[0], cfg.ext_xy[1], se)
    ujy = fp * point_spectrum(cfg, w) + fe * extended_spectrum(cfg, w)
    return ujy / (cdelt * cdelt * MJYSR_ARCSEC2_TO_UJY)


@dataclass
class IFUSimResult:
    """What :func:`simulate_ifu` wrote."""

    config: IFUSimConfig
    outdir: Path
    uncal: list[Path]
    refs_dir: Path
    ifu_refs: dict[str, Path]
    truth: Path
    catalogue: Path
    elapsed_s: float


def _primary(cfg: IFUSimConfig, k: int, fname: str, t0_mjd: float) -> fits.Header:
    dur = cfg.tgroup * cfg.ngroups * cfg.nints
    cards = file_cards(fname, "nirbeam.sim.ifu") + [
        ("TARGNAME", "SIM-IFU", "Standard astronomical catalog name for target"),
        ("TARG_RA", 80.0, "Target RA at mid time of exposure"),
        ("TARG_DEC", -69.5, "Target Dec at mid time of exposure"),
        ("PROGRAM", cfg.exposure_prefix[2:7], "JWST program number"),
        ("OBSERVTN", cfg.exposure_prefix[7:10], "Observation number"),
        ("VISIT", cfg.exposure_prefix[10:13], "Visit number"),
        ("EXPOSURE", k + 1, "Exposure request number"),
        ("TSOVISIT", False, "Time Series Observation visit indicator"),
        ("INSTRUME", "NIRSPEC", "Instrument used to acquire the data"),
        ("DETECTOR", "NRS1", "Name of detector used to acquire the data"),
        ("FILTER", "F100LP", "Name of the filter element used"),
        ("GRATING", "G140M", "Name of the grating element used"),
        ("FXD_SLIT", "NONE", "Name of fixed slit aperture used"),
        ("MSAMETFL", "N/A", "MSA metadata file name"),
        ("LAMP", "NONE", "Internal lamp state"),
        ("EXP_TYPE", "NRS_IFU", "Type of data in the exposure"),
        ("PATTTYPE", "4-POINT-NOD", "Primary dither pattern type"),
        ("PATT_NUM", k + 1, "Position number in primary pattern"),
        ("NUMDTHPT", len(cfg.dithers), "Total number of points in pattern"),
        ("PATTSTRT", 1, "Starting point in pattern"),
        ("NOD_TYPE", "NONE", "Nod pattern type"),
        ("PATTSIZE", "SMALL", "Primary dither pattern size"),
        ("XOFFSET", float(cfg.dithers[k][0]), "[arcsec] x offset from pattern start"),
        ("YOFFSET", float(cfg.dithers[k][1]), "[arcsec] y offset from pattern start"),
        ("EXPSTART", t0_mjd, "UTC exposure start time (MJD)"),
        ("EXPMID", t0_mjd + dur / 2 / 86400, "UTC exposure mid time (MJD)"),
        ("EXPEND", t0_mjd + dur / 86400, "UTC exposure end time (MJD)"),
    ] + readout_cards(
        readpatt=cfg.readpatt, nints=cfg.nints, int_lo=1, int_hi=cfg.nints, ngroups=cfg.ngroups,
        nframes=1, groupgap=0, nresets=1, tframe=cfg.tframe, tgroup=cfg.tgroup, duration=dur,
        segment=1, nsegments=1, subarray=cfg.subarray, substrt1=1, substrt2=1,
        subsize1=cfg.ncols, subsize2=cfg.nrows, fastslow=FASTSLOW["NRS1"]) + [
        ("READOUT", cfg.readout, "nirbeam sim readout layout"),
    ]
    return header_from_cards(cards)


def _read_noise_ref(cfg: IFUSimConfig) -> float:
    """CDS read noise of the READNOISE reference (DN): the signal chain's (sqrt 2 x per
    read), with the IRS2 readout's added in quadrature for IRS2
    (:func:`nirbeam.sim.irs2.cds_read_noise`)."""
    rn = cfg.read_noise_dn * np.sqrt(2.0)
    if not cfg.irs2:
        return rn
    from nirbeam.sim.irs2 import cds_read_noise

    return float(np.hypot(rn, cds_read_noise()))


def _write_detector_refs(cfg: IFUSimConfig, refs: Path) -> None:
    f32 = np.float32
    ny, nx = cfg.nrows, cfg.ncols
    # TELESCOP: write_reference puts it first; the common keywords leave it there
    com = reference_common("NRS1", "NRS_IFU", cfg.subarray, 1, 1, nx, ny, telescop=False)
    zdq = np.zeros((ny, nx), np.uint32)

    def p(t):
        return reference_path(refs, t, "NRS1", "ifu")

    coeffs = np.zeros((3, ny, nx), f32)
    coeffs[1] = 1.0
    mask = np.zeros((ny, nx), np.uint32)
    if cfg.refpix:
        from nirbeam import dqflags

        e = 4
        for sl in ((slice(0, e), slice(None)), (slice(ny - e, ny), slice(None)),
                   (slice(None), slice(0, e)), (slice(None), slice(nx - e, nx))):
            mask[sl] = dqflags.REFERENCE_PIXEL | dqflags.DO_NOT_USE
    write_detector_refs(p, com, {
        "superbias": ({"DESCRIP": "Simulated superbias"},
                      {"SCI": np.full((ny, nx), cfg.bias_dn, f32), "ERR": np.ones((ny, nx), f32),
                       "DQ": zdq}),
        "dark": ({"READPATT": cfg.readpatt, "DESCRIP": "Simulated dark (zero)",
                  "NFRAMES": 1, "GROUPGAP": 0, "NGROUPS": cfg.ngroups, "NINTS": 1},
                 {"SCI": np.zeros((cfg.ngroups, ny, nx), f32),
                  "ERR": np.zeros((cfg.ngroups, ny, nx), f32), "DQ": zdq}),
        "linearity": ({"DESCRIP": "Simulated linearity (identity)", "NCOEFFS": 3},
                      {"COEFFS": coeffs, "DQ": zdq}),
        "saturation": ({"DESCRIP": "Simulated saturation"},
                       {"SCI": np.full((ny, nx), 60000.0, f32), "DQ": zdq}),
        "readnoise": ({"DESCRIP": "Read noise of a CDS difference"},
                      {"SCI": np.full((ny, nx), _read_noise_ref(cfg), f32)}),
        "gain": ({"DESCRIP": "Simulated gain"}, {"SCI": np.full((ny, nx), cfg.gain, f32)}),
        "mask": ({"DESCRIP": "Simulated bad-pixel mask"}, {"DQ": mask}),
    })


def _write_ifu_refs(cfg: IFUSimConfig, geo: Geometry, d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    p0 = reference_primary({"TELESCOP": "JWST", "INSTRUME": "NIRSPEC", "DETECTOR": "NRS1",
                            "EXP_TYPE": "NRS_IFU", "FILTER": "F100LP", "GRATING": "G140M",
                            "REFTYPE": "IFUGEOMETRY", "AUTHOR": "nirbeam simulator",
                            "SLICEWID": cfg.slice_width, "PIXSCALE": cfg.pixel_scale,
                            "NSLICES": NSLICES})
    p0.header["COMMENT"] = "per-pixel maps as assign_wcs gives them; the distortion that moves a " \
                           "point source with wavelength is not in them"
    hdus = [p0]
    for name, arr, unit in (("WAVELENGTH", geo.wave.astype(np.float32), "um"),
                            ("ALPHA", geo.alpha.astype(np.float32), "arcsec"),
                            ("BETA", geo.beta.astype(np.float32), "arcsec"),
                            ("SLICE", geo.slice.astype(np.int16), "")):
        h = fits.ImageHDU(arr, name=name)
        if unit:
            h.header["BUNIT"] = unit
        hdus.append(h)
    out["geometry"] = d / "geometry_nrs1.fits"
    fits.HDUList(hdus).writeto(out["geometry"], overwrite=True)
    wl = np.linspace(np.nanmin(geo.wave) - 0.01, np.nanmax(geo.wave) + 0.01, 400)
    rad = cfg.apcorr_k * cube_psf_sigma(cfg, wl)
    for name, cols, reftype in (
        ("photom", [fits.Column("WAVELENGTH", "D", unit="um", array=wl),
                    fits.Column("CONVERSION", "D", unit="DN/s/(MJy/sr)", array=conversion(cfg, wl))],
         "IFUPHOTOM"),
        ("apcorr", [fits.Column("WAVELENGTH", "D", unit="um", array=wl),
                    fits.Column("RADIUS", "D", unit="arcsec", array=rad),
                    fits.Column("APCORR", "D", array=1.0 / encircled_energy(cfg, wl, rad))],
         "APCORR")):
        p0 = reference_primary({"TELESCOP": "JWST", "INSTRUME": "NIRSPEC", "DETECTOR": "NRS1",
                                "EXP_TYPE": "NRS_IFU", "REFTYPE": reftype,
                                "AUTHOR": "nirbeam simulator"})
        out[name] = d / f"{name}.fits"
        fits.HDUList([p0, fits.BinTableHDU.from_columns(cols, name=name.upper())]).writeto(
            out[name], overwrite=True)
    return out


def _times(t0: float, cfg: IFUSimConfig) -> dict[str, np.ndarray]:
    dt = cfg.tgroup * cfg.ngroups / 86400
    start = t0 + dt * np.arange(cfg.nints)
    tt = {"int_start_MJD_UTC": start, "int_mid_MJD_UTC": start + dt / 2, "int_end_MJD_UTC": start + dt}
    for k in ("start", "mid", "end"):
        tt[f"int_{k}_BJD_TDB"] = tt[f"int_{k}_MJD_UTC"] + 0.0008
    return tt


def simulate_ifu(outdir, preset: str = "ifu", seed: int | None = None, **overrides) -> IFUSimResult:
    """Write a simulated IFU dither set (see the module notes) into ``outdir``."""
    t_start = _time.perf_counter()
    if preset not in IFU_PRESETS:
        raise ValueError(f"IFU preset {preset!r}: expected one of {sorted(IFU_PRESETS)}")
    cfg = dataclasses.replace(IFU_PRESETS[preset], **overrides)
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=int(seed))
    cfg = resolved_readout(cfg)
    out = Path(outdir)
    refs = out / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    model = cv3_slice_model()
    geo = frame_geometry(cfg, model)
    _write_detector_refs(cfg, refs)
    if cfg.irs2:  # the REFPIX reference that fits the simulated IRS2 readout noise
        from nirbeam.sim.irs2 import write_matched_refpix

        write_matched_refpix(refs, "NRS1", cfg.readpatt)
    ifu_refs = _write_ifu_refs(cfg, geo, out / "ifu_refs")
    ny, nx = cfg.nrows, cfg.ncols
    G = cfg.ngroups
    uncal: list[Path] = []
    outliers = []
    on_idx = np.flatnonzero(geo.slice.ravel() >= 0)
    t0 = 60500.0
    for k, dither in enumerate(cfg.dithers):
        rng = np.random.default_rng([cfg.seed, k])
        rate = _pixel_rates(cfg, geo, dither)
        hot = rng.choice(on_idx, cfg.n_hot_once, replace=False)
        hot_rate = rng.uniform(20.0, 60.0, cfg.n_hot_once)
        rate_e = rate.copy().ravel()
        rate_e[hot] += hot_rate
        rate_e = rate_e.reshape(ny, nx)
        for p, r in zip(hot, hot_rate, strict=True):
            outliers.append({"exposure": k, "y": int(p // nx), "x": int(p % nx),
                             "kind": "hot_once", "rate_dn_s": float(r)})
        fname = f"{cfg.exposure_prefix}_{k + 1:05d}_nrs1_uncal.fits"
        t0k = t0 + k * (cfg.tgroup * G * cfg.nints + 300) / 86400
        tt = _times(t0k, cfg)
        w = UncalSegmentWriter(out / fname, _primary(cfg, k, fname, t0k), (cfg.nints, G, ny, nx),
                               cfg.readout, detector="NRS1", seed=[cfg.seed, k, 3])
        for _i in range(cfg.nints):
            e_rate = np.maximum(rate_e, 0) * cfg.gain
            # Poisson electrons per group interval, accumulated
            steps = rng.poisson(e_rate[None] * cfg.tgroup, size=(G, ny, nx)).astype(np.float64)
            acc = np.cumsum(steps, axis=0) / cfg.gain
            nc = cfg.n_cosmic
            cy = rng.integers(0, ny, nc)
            cx = rng.integers(0, nx, nc)
            cg = rng.integers(1, G, nc)
            ca = rng.uniform(300.0, 3000.0, nc)
            for y, x, g, a in zip(cy, cx, cg, ca, strict=True):
                acc[g:, y, x] += a
            ramp = cfg.bias_dn + acc + rng.normal(0.0, cfg.read_noise_dn, (G, ny, nx))
            w.write(np.clip(np.rint(ramp), 0, 65535).astype(np.uint16))
        w.close([group_table_hdu(_GroupCfg(G, 1, cfg.tframe), np.arange(1, cfg.nints + 1), tt,
                                 cfg.tgroup, ny, nx), int_times_hdu(tt)])
        uncal.append(out / fname)
    # truth and catalogue
    cols = np.flatnonzero((geo.slice >= 0).any(axis=0))
    wl = np.array([np.median(geo.wave[geo.slice[:, c] >= 0, c]) for c in cols])
    truth = {
        "simulator": "nirbeam.sim.ifu", "preset": cfg.preset, "seed": cfg.seed,
        "config": {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in dataclasses.asdict(cfg).items()},
        "frame": {"coord_system": "ifualign: x = alpha - XOFFSET, y = beta - YOFFSET (arcsec)",
                  "slice_width_arcsec": cfg.slice_width, "pixel_scale_arcsec": cfg.pixel_scale},
        "sources": {
            "1": {"kind": "point", "x_arcsec": cfg.point_xy[0], "y_arcsec": cfg.point_xy[1],
                  "wavelength_um": wl.tolist(), "flux_ujy": point_spectrum(cfg, wl).tolist(),
                  "psf_sigma_arcsec": psf_sigma(cfg, wl).tolist()},
            "2": {"kind": "extended", "x_arcsec": cfg.ext_xy[0], "y_arcsec": cfg.ext_xy[1],
                  "sigma_arcsec": cfg.ext_sigma, "line_um": cfg.line_um,
                  "line_flux_ujy_um": cfg.line_flux_ujy_um,
                  "wavelength_um": wl.tolist(), "flux_ujy": extended_spectrum(cfg, wl).tolist()},
        },
        "wander": {"x_arcsec": list(_wander(cfg, wl)[0]), "y_arcsec": list(_wander(cfg, wl)[1]),
                   "note": "the point source's offset from its sky position, added by the "
                           "instrument; absent from the geometry reference"},
        "cube": {"unit": "MJy/sr", "model": "nirbeam.sim.ifu.scene_cube(config, wave, x, y, cdelt)"},
        "outliers": outliers,
    }
    tpath = out / "truth.json"
    tpath.write_text(json.dumps(truth, indent=1, default=float))
    cat = {"sources": [
        {"id": 1, "kind": "point", "x_arcsec": round(cfg.point_xy[0] + 0.03, 2),
         "y_arcsec": round(cfg.point_xy[1] - 0.02, 2)},
        {"id": 2, "kind": "extended", "x_arcsec": round(cfg.ext_xy[0] - 0.02, 2),
         "y_arcsec": round(cfg.ext_xy[1] + 0.03, 2), "radius_arcsec": 4 * cfg.ext_sigma}]}
    cpath = out / "sources.json"
    cpath.write_text(json.dumps(cat, indent=1))
    return IFUSimResult(cfg, out, uncal, refs, ifu_refs, tpath, cpath,
                        _time.perf_counter() - t_start)


@dataclass(frozen=True)
class _GroupCfg:
    ngroups: int
    nresets: int
    tframe: float
