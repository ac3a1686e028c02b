"""Simulated NIRSpec fixed-slit (FS) nod sets: uncal exposures, references, truth.

What is simulated
-----------------
* The five fixed slits on NRS1 (S200A1, S200A2, S400A1, S1600A1, S200B1) in an ALLSLITS
  (2048 x 256 from row 897) or FULL exposure, or a cut-down window of columns.
* Geometry grounded in a real file: the CV3 ground trace of S200A1 with G140M
  (``Trace_SLIT_A_200_1_*.fits``, ``LAMBDA1`` per-pixel wavelength and ``SLITY1``
  along-slit position, CRPIX giving its detector place) is S200A1's footprint, per-pixel
  wavelengths and along-slit map. The other slits reuse that map shifted by whole rows
  (``SLIT_ROW_OFFSET``): S1600A1's row follows the SUB2048 window of BOTS (SUBSTRT2 963
  from ESA-JWST-SCI-NRS-TN-2018-002, as the g395h BOTS preset); the rows of S200A2,
  S400A1 and S200B1 and every slit's along-dispersion offset are **not** grounded (no
  public file here gives them): placeholders between and beside those two.
* A point source in the primary slit (``FXD_SLIT``, S1600A1 by default), an extended
  source (Gaussian along the slit) in S200A2, sky in every slit, nodded along the slit by
  the same sky offsets in every slit (the telescope moves): 2-, 3- or 5-point nods, one
  exposure per nod position, several integrations each.
* The point source's along-slit profile: a Gaussian core (sigma growing with wavelength)
  plus Moffat (beta = 1.5) wings holding ``psf_wing`` of the light, integrated over each
  pixel by sub-sampling (8 per row), cut by the slit's ends; the across-slit slit loss from
  the same profile over the slit width. The wings reach the other nod positions: the nod
  over-subtraction of jwst's background step happens here as on the sky.
* Detector and noise: the BOTS simulator's physics (:mod:`nirbeam.sim.physics`: bias,
  non-linearity, dark, hot pixels, Poisson and read noise, 1/f noise, cosmic rays) and
  its CRDS-format references; written through :mod:`nirbeam.sim.fits_writer` (the
  readout is one parameter, ``readout``: ``"auto"`` writes FULL frames in IRS2 (``NRSIRS2``,
  interleaved reference samples, with a matched REFPIX reference in ``refs/``) as real
  FULL-frame NIRSpec exposures are, and ALLSLITS or a cut-down window in traditional
  ``NRSRAPID`` as real ones are; ``"traditional"`` or ``"NRSIRS2"`` force one).

References written for the pipeline (``refs/``), not read from the truth: ``fsgeom``
(per slit: box on the detector, WAVELENGTH and ALONGSLIT maps, slit length and width),
``psf`` (tabulated cumulative along-slit profile on a wavelength grid), ``photom``
(DN/s per uJy per column over wavelength, and per slit the across-slit transmission of a
centred point source). ``truth.json``: ``sources: {<source_id>: {"wavelength_um": [...],
"flux_ujy": [...], ...}}`` (point source: its total flux; extended source: the flux
passing the slit, averaged over the nods).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time as _time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from nirbeam.sim import physics as phys
from nirbeam.sim.fits_writer import (
    UncalSegmentWriter,
    group_table_hdu,
    int_times_hdu,
    write_reference,
)
from nirbeam.sim.headers import reference_path, reference_primary
from nirbeam.sim.simulator import (
    DETECTORS,
    REALISTIC,
    SimConfig,
    exposure_times,
    primary_header,
    write_refs,
)

__all__ = ["FsConfig", "FsSimulation", "FS_PRESETS", "SLITS", "simulate_fs", "psf_cdf",
           "psf_pdf", "NOD_OFFSETS", "SOURCE_IDS", "CV3_TRACE"]

SLITS = ("S200A1", "S200A2", "S400A1", "S1600A1", "S200B1")
#: jwst numbers the fixed slits 1..5 in this order; used as their SOURCEID
SOURCE_IDS = {s: i + 1 for i, s in enumerate(SLITS)}
SLIT_LENGTH = {"S200A1": 3.3, "S200A2": 3.3, "S400A1": 3.8, "S1600A1": 1.6, "S200B1": 3.3}
SLIT_WIDTH = {"S200A1": 0.2, "S200A2": 0.2, "S400A1": 0.4, "S1600A1": 1.6, "S200B1": 0.2}
#: rows of each slit's centre relative to S200A1's (CV3). S1600A1: grounded (see notes);
#: the others: placeholders.
SLIT_ROW_OFFSET = {"S200A1": 0, "S200A2": -34, "S400A1": -70, "S1600A1": -100, "S200B1": 34}
#: commanded nod offsets along the slit (arcsec), the same for every slit
NOD_OFFSETS = {
    "2-POINT-NOD": (-0.25, 0.25),
    "3-POINT-NOD": (-0.3, 0.0, 0.3),
    "5-POINT-NOD": (-0.4, -0.2, 0.0, 0.2, 0.4),
}
NOD_TYPE_ENUM = ("NONE", "3-POINT-NOD", "2-SHUTTER-SLITLET", "3-SHUTTER-SLITLET",
                 "5-SHUTTER-SLITLET", "5-SHUTTER-SLITLET-WITH-GAP")
CV3_TRACE = "Trace_SLIT_A_200_1_V84600010001P0000000002101_39547_JLAB88.fits"
ALLSLITS = dict(subarray="ALLSLITS", substrt1=1, substrt2=897, subsize1=2048, subsize2=256)
FULLFRAME = dict(subarray="FULL", substrt1=1, substrt2=1, subsize1=2048, subsize2=2048)
#: ALLSLITS frame time: 256 rows x (2048/4 + 12) pixel clocks x 10 us
TFRAME_ALLSLITS = 256 * (512 + 12) * 10e-6
TFRAME_FULL = 10.73676
#: IRS2 full-frame frame time: TFRAME of the CEERS NRSIRS2 FULL files in
#: shared/data/modes/mos_ceers (jw01345062001_03101_0000*_nrs2_phot...fits)
TFRAME_IRS2_FULL = 14.58889
#: FsConfig.readout values: auto, or a nirbeam.sim.fits_writer readout
FS_READOUTS = ("auto", "traditional", "NRSIRS2")


def default_geometry_dir() -> Path:
    """``shared/data/modes/jwst_geometry`` next to the repository (``NIRBEAM_GEOMETRY``
    overrides)."""
    import os

    env = os.environ.get("NIRBEAM_GEOMETRY")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for p in here.parents:
        cand = p / "shared" / "data" / "modes" / "jwst_geometry"
        if cand.is_dir():
            return cand
        cand = p.parent / "shared" / "data" / "modes" / "jwst_geometry"
        if cand.is_dir():
            return cand
    return Path("/work/shared/data/modes/jwst_geometry")


@dataclass(frozen=True)
class FsConfig:
    """Knobs of a simulated FS nod set (see the module notes)."""

    preset: str = "fs-g140m"
    nod_type: str = "2-POINT-NOD"
    primary: str = "S1600A1"
    extended_slit: str = "S200A2"
    frame: str = "ALLSLITS"  # or "FULL"
    x_window: tuple[int, int] | None = None  # (first column 1-based, number): cut-down frame
    nints: int = 2
    ngroups: int = 6
    readout: str = "auto"  # FULL frame: NRSIRS2; ALLSLITS/window: traditional (see notes)
    grating: str = "G140M"
    filter: str = "F100LP"
    point_flux_ujy: float = 300.0
    extended_flux_ujy: float = 150.0
    extended_sigma_arcsec: float = 0.25
    extended_offset_arcsec: float = 0.1
    sky_ujy_arcsec2: float = 4.0
    psf_core_sigma: float = 0.06  # arcsec at 1 um, grows as lambda
    psf_wing: float = 0.10
    psf_wing_alpha: float = 0.25  # arcsec
    counts_per_ujy: float = 2.0  # DN/s per column per uJy at the response peak
    # where the source really is: the commanded nod offset (YOFFSET) plus an acquisition
    # error common to all nods and a pointing error per nod (arcsec, along the slit)
    acquisition_offset_arcsec: float = 0.02
    pointing_sigma_arcsec: float = 0.01
    seed_noise: bool = True
    program: str = "01309"
    observation: str = "022"
    expstart_mjd: float = 59800.3
    sim_overrides: tuple[tuple[str, object], ...] = ()

    def __post_init__(self):
        if self.nod_type not in NOD_OFFSETS:
            raise ValueError(f"FsConfig.nod_type {self.nod_type!r}: one of {sorted(NOD_OFFSETS)}")
        for s in (self.primary, self.extended_slit):
            if s not in SLITS:
                raise ValueError(f"FsConfig slit {s!r}: one of {SLITS}")
        if self.primary == self.extended_slit:
            raise ValueError("FsConfig: the extended source needs a slit other than the primary")
        if self.frame not in ("ALLSLITS", "FULL"):
            raise ValueError(f"FsConfig.frame {self.frame!r}: ALLSLITS or FULL")
        if self.readout not in FS_READOUTS:
            raise ValueError(f"FsConfig.readout {self.readout!r}: one of {FS_READOUTS}")
        if self.readout == "NRSIRS2" and (self.frame != "FULL" or self.x_window):
            raise ValueError(f"FsConfig.readout 'NRSIRS2' is full frame only; got frame "
                             f"{self.frame!r} x_window {self.x_window}")

    @property
    def irs2(self) -> bool:
        """True when the exposures are written in IRS2 (``readout`` resolved)."""
        if self.readout == "auto":
            return self.frame == "FULL" and not self.x_window
        return self.readout == "NRSIRS2"

    @property
    def offsets(self) -> tuple[float, ...]:
        return NOD_OFFSETS[self.nod_type]


FS_PRESETS: dict[str, FsConfig] = {
    "fs": FsConfig(preset="fs"),
    "fs-g140m": FsConfig(preset="fs-g140m"),
    "fs-g140m-3nod": FsConfig(preset="fs-g140m-3nod", nod_type="3-POINT-NOD"),
    "fs-g140m-5nod": FsConfig(preset="fs-g140m-5nod", nod_type="5-POINT-NOD"),
    # FULL frame: IRS2 (NRSIRS2) as real FULL-frame FS exposures; 4 groups of 14.6 s
    "fs-full": FsConfig(preset="fs-full", frame="FULL", ngroups=4),
}


# ---------------------------------------------------------------------------------------
# optics


def _moffat15_cdf(u, alpha):
    return 0.5 + 0.5 * u / np.sqrt(alpha * alpha + u * u)


def psf_cdf(u, lam, core_sigma=0.06, wing=0.10, alpha=0.25):
    """Cumulative along-slit (or across-slit) profile of a point source, arcsec."""
    from scipy.special import erf

    s = core_sigma * np.asarray(lam, float)
    u = np.asarray(u, float)
    return (1 - wing) * 0.5 * (1 + erf(u / (np.sqrt(2) * s))) + wing * _moffat15_cdf(u, alpha)


def psf_pdf(u, lam, core_sigma=0.06, wing=0.10, alpha=0.25):
    """Its density, 1/arcsec."""
    s = core_sigma * np.asarray(lam, float)
    u = np.asarray(u, float)
    g = np.exp(-0.5 * (u / s) ** 2) / (np.sqrt(2 * np.pi) * s)
    m = 0.5 * alpha * alpha / (alpha * alpha + u * u) ** 1.5
    return (1 - wing) * g + wing * m


def _response(lam):
    """Relative response (peak 1) of G140M/F100LP, smooth, zero outside 0.97-1.84 um."""
    lam = np.asarray(lam, float)
    x = (lam - 1.40) / 0.45
    r = np.clip(1 - x ** 4, 0, None) * (0.8 + 0.2 * lam / 1.84)
    return np.where((lam > 0.97) & (lam < 1.84), r, 0.0)


def point_spectrum(lam, f0):
    """Point source: a slope and two broad absorption features (uJy)."""
    lam = np.asarray(lam, float)
    return f0 * (lam / 1.4) ** -1.2 * (1 - 0.15 * np.exp(-0.5 * ((lam - 1.28) / 0.02) ** 2)
                                       - 0.1 * np.exp(-0.5 * ((lam - 1.62) / 0.03) ** 2))


def extended_spectrum(lam, f0):
    """Extended source: flat continuum plus an emission line (uJy through the slit)."""
    lam = np.asarray(lam, float)
    return f0 * (1 + 0.8 * np.exp(-0.5 * ((lam - 1.50) / 0.004) ** 2))


# ---------------------------------------------------------------------------------------
# geometry from the CV3 trace


@dataclass(frozen=True, eq=False)
class SlitGeometry:
    """One slit on the full frame (0-based): box, per-pixel maps over it."""

    name: str
    y0: int
    x0: int
    wavelength: np.ndarray  # (ny, nx) um, NaN outside
    along_slit: np.ndarray  # (ny, nx) arcsec, NaN where the map has none
    length: float
    width: float


def cv3_geometry(geometry_dir: Path | None = None) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(y0, x0, wavelength um, along-slit arcsec) of S200A1 from the CV3 trace (0-based
    full-frame origin of the cut-out; ``SLITY1`` -1 and ``LAMBDA1`` 0 are fill values)."""
    path = Path(geometry_dir or default_geometry_dir()) / CV3_TRACE
    with fits.open(path) as f:
        lam = f["LAMBDA1"].data.astype(np.float64) * 1e6
        sy = f["SLITY1"].data.astype(np.float64)
        h = f["LAMBDA1"].header
        x0 = int(round(h["CRVAL1"] + 1 - h["CRPIX1"])) - 1
        y0 = int(round(h["CRVAL2"] + 1 - h["CRPIX2"])) - 1
    bad = (sy <= -0.999) | (lam <= 0)
    lam[bad] = np.nan
    sy[bad] = np.nan
    # SLITY1 is in units of the slit length (+-0.5 at the ends); arcsec along the slit
    return y0, x0, lam, -sy * SLIT_LENGTH["S200A1"]


def slit_geometries(geometry_dir: Path | None = None) -> dict[str, SlitGeometry]:
    """The five slits' footprints on NRS1 (see the module notes for what is grounded)."""
    y0, x0, lam, s = cv3_geometry(geometry_dir)
    out = {}
    for name in SLITS:
        half = SLIT_LENGTH[name] / 2
        # rows of the cut-out that hold the slit (plus 2 rows of margin)
        inside = np.abs(s) <= half + 0.25
        rows = np.flatnonzero(inside.any(axis=1))
        r0, r1 = rows[0], rows[-1] + 1
        sl = np.where(np.abs(s[r0:r1]) <= half + 0.25, s[r0:r1], np.nan)
        out[name] = SlitGeometry(name, y0 + r0 + SLIT_ROW_OFFSET[name], x0,
                                 np.where(np.isfinite(sl), lam[r0:r1], np.nan), sl, SLIT_LENGTH[name],
                                 SLIT_WIDTH[name])
    return out


# ---------------------------------------------------------------------------------------
# scene


def _pixel_profile(cfg: FsConfig, s, lam, center, half, sub: int = 8):
    """Point-source light per pixel (fraction of the total), by sub-sampling each row."""
    ny = s.shape[0]
    ds = np.gradient(s, axis=0) if ny > 1 else np.zeros_like(s)
    acc = np.zeros_like(s)
    for j in range(sub):
        off = (j + 0.5) / sub - 0.5
        ss = s + off * ds
        ok = np.abs(ss) <= half
        acc += np.where(ok, psf_pdf(ss - center, lam, cfg.psf_core_sigma, cfg.psf_wing,
                                    cfg.psf_wing_alpha), 0.0)
    return np.nan_to_num(acc / sub * np.abs(ds))


def _extended_profile(cfg: FsConfig, s, center, half, sub: int = 8):
    ny = s.shape[0]
    ds = np.gradient(s, axis=0) if ny > 1 else np.zeros_like(s)
    sig = cfg.extended_sigma_arcsec
    acc = np.zeros_like(s)
    for j in range(sub):
        ss = s + ((j + 0.5) / sub - 0.5) * ds
        ok = np.abs(ss) <= half
        acc += np.where(ok, np.exp(-0.5 * ((ss - center) / sig) ** 2) / (np.sqrt(2 * np.pi) * sig), 0.0)
    return np.nan_to_num(acc / sub * np.abs(ds))


def _across_transmission(cfg: FsConfig, lam, width):
    return psf_cdf(width / 2, lam, cfg.psf_core_sigma, cfg.psf_wing, cfg.psf_wing_alpha) - psf_cdf(
        -width / 2, lam, cfg.psf_core_sigma, cfg.psf_wing, cfg.psf_wing_alpha)


def _counts(cfg: FsConfig, lam, dlam):
    """DN/s per column per uJy: response x (dlambda / lambda), photon counting."""
    return cfg.counts_per_ujy * _response(lam) * (np.abs(dlam) / 0.000637) * (1.4 / np.asarray(lam))


def scene_rates(cfg: FsConfig, geoms: dict[str, SlitGeometry], center: float):
    """Per-slit noiseless rates (DN/s) of one nod position, and per-slit source truth."""
    rates = {}
    for name, g in geoms.items():
        s, lam = g.along_slit, g.wavelength
        half = g.length / 2
        dlam = np.gradient(np.nan_to_num(lam, nan=np.nanmean(lam)), axis=1)
        cnt = np.nan_to_num(_counts(cfg, np.nan_to_num(lam, nan=1.0), dlam))
        cnt = np.where(np.isfinite(lam), cnt, 0.0)
        ds = np.abs(np.gradient(s, axis=0))
        illum = 1 + 0.03 * np.nan_to_num(s) / half
        sky = np.where(np.abs(np.nan_to_num(s, nan=99)) <= half,
                       cfg.sky_ujy_arcsec2 * g.width * np.nan_to_num(ds) * illum, 0.0)
        r = sky * cnt
        if name == cfg.primary:
            tx = _across_transmission(cfg, np.nan_to_num(lam, nan=1.0), g.width)
            prof = _pixel_profile(cfg, s, np.nan_to_num(lam, nan=1.0), center, half)
            r = r + point_spectrum(np.nan_to_num(lam, nan=1.0), cfg.point_flux_ujy) * tx * prof * cnt
        if name == cfg.extended_slit:
            prof = _extended_profile(cfg, s, center + cfg.extended_offset_arcsec, half)
            r = r + extended_spectrum(np.nan_to_num(lam, nan=1.0), cfg.extended_flux_ujy) * prof * cnt
        rates[name] = np.where(np.isfinite(lam), r, 0.0)
    return rates


# ---------------------------------------------------------------------------------------
# references the pipeline reads


def _write_fs_refs(cfg: FsConfig, scfg: SimConfig, geoms, refs_dir: Path, det: str) -> dict[str, Path]:
    common = {"INSTRUME": "NIRSPEC", "DETECTOR": det, "EXP_TYPE": "NRS_FIXEDSLIT",
              "FILTER": cfg.filter, "GRATING": cfg.grating, "USEAFTER": "2015-01-01T00:00:00",
              "PEDIGREE": "DUMMY", "AUTHOR": "nirbeam simulator", "TELESCOP": "JWST"}
    out = {}
    # FSGEOM: per slit, box + maps (full-frame 0-based origin)
    hdus = [reference_primary({"REFTYPE": "FSGEOM", **common})]
    ph = hdus[0].header
    ph["DESCRIP"] = "FS slit footprints: per-pixel wavelength (um) and along-slit (arcsec)"
    ph["COMMENT"] = ("S200A1 from the CV3 trace Trace_SLIT_A_200_1 (LAMBDA1, SLITY1); other "
                     "slits: the same maps shifted by whole rows (placeholders except S1600A1)")
    for i, (name, g) in enumerate(geoms.items(), start=1):
        for ext, arr, unit in (("WAVELENGTH", g.wavelength, "um"), ("ALONGSLIT", g.along_slit, "arcsec")):
            h = fits.ImageHDU(arr.astype(np.float32), name=ext, ver=i)
            h.header["SLTNAME"] = name
            h.header["XSTART"] = (g.x0, "0-based full-frame column of the first pixel")
            h.header["YSTART"] = (g.y0, "0-based full-frame row of the first pixel")
            h.header["SLITLEN"] = (g.length, "slit length, arcsec")
            h.header["SLITWID"] = (g.width, "slit width, arcsec")
            h.header["BUNIT"] = unit
            hdus.append(h)
    out["fsgeom"] = reference_path(refs_dir, "fsgeom", det)
    fits.HDUList(hdus).writeto(out["fsgeom"], overwrite=True)
    # PSF: tabulated cumulative along-slit profile (the optical model on a grid)
    lam_grid = np.round(np.arange(0.90, 1.951, 0.05), 3)
    u = np.round(np.arange(-4.0, 4.0001, 0.005), 4)
    cdf = np.stack([psf_cdf(u, lam, cfg.psf_core_sigma, cfg.psf_wing, cfg.psf_wing_alpha)
                    for lam in lam_grid]).astype(np.float64)
    out["psf"] = write_reference(
        reference_path(refs_dir, "psf", det), "PSF",
        {**common, "DESCRIP": "Cumulative along-slit profile of a point source, CDF(offset, lambda)"},
        {"CDF": cdf}, None)
    with fits.open(out["psf"], mode="update") as f:
        f.append(fits.BinTableHDU.from_columns([fits.Column("WAVELENGTH", "D", unit="um", array=lam_grid)],
                                               name="WAVELENGTH"))
        f.append(fits.BinTableHDU.from_columns([fits.Column("OFFSET", "D", unit="arcsec", array=u)],
                                               name="OFFSET"))
    # PHOTOM: DN/s per column per uJy (full transmission) and the point-source slit loss
    lam = np.round(np.arange(0.95, 1.86, 0.002), 4)
    disp = 0.000637  # um per column (the CV3 map's mean dispersion)
    resp = _counts(cfg, lam, np.full_like(lam, disp))
    cols = [fits.Column("WAVELENGTH", "D", unit="um", array=lam),
            fits.Column("RELRESP", "D", unit="DN/s/uJy", array=resp)]
    tabs = [fits.BinTableHDU.from_columns(cols, name="PHOTOM")]
    for i, (name, g) in enumerate(geoms.items(), start=1):
        t = fits.BinTableHDU.from_columns(
            [fits.Column("WAVELENGTH", "D", unit="um", array=lam),
             fits.Column("PS_TRANS", "D", array=_across_transmission(cfg, lam, g.width))],
            name="PATHLOSS", ver=i)
        t.header["SLTNAME"] = name
        tabs.append(t)
    out["photom"] = reference_path(refs_dir, "photom", det)
    ph = reference_primary({**common, "REFTYPE": "PHOTOM", "DISPERS": disp})
    ph.header["DESCRIP"] = ("RELRESP: DN/s in one column per uJy at full slit transmission "
                            "(per dispersion of DISPERS um/column); PATHLOSS: across-slit "
                            "transmission of a centred point source")
    fits.HDUList([ph, *tabs]).writeto(out["photom"], overwrite=True)
    return out


# ---------------------------------------------------------------------------------------
# driver


@dataclass(frozen=True)
class FsSimulation:
    """What :func:`simulate_fs` wrote."""

    outdir: Path
    uncal: tuple[Path, ...]
    refs_dir: Path
    refs: dict
    truth_json: Path
    config: FsConfig
    sim_config: SimConfig
    elapsed_s: float


def _sim_config(cfg: FsConfig) -> SimConfig:
    frame = dict(ALLSLITS if cfg.frame == "ALLSLITS" else FULLFRAME)
    tframe = TFRAME_ALLSLITS if cfg.frame == "ALLSLITS" else TFRAME_FULL
    readpatt = {}
    if cfg.irs2:
        tframe, readpatt = TFRAME_IRS2_FULL, {"readpatt": "NRSIRS2"}
    if cfg.x_window:
        frame["substrt1"], frame["subsize1"] = int(cfg.x_window[0]), int(cfg.x_window[1])
    over = dict(REALISTIC)
    over.update(dict(cfg.sim_overrides))
    return dataclasses.replace(
        SimConfig(), preset=cfg.preset, **frame, substrt2_nrs2=frame["substrt2"],
        tframe=tframe, **readpatt, ngroups=cfg.ngroups, nints=cfg.nints, ints_per_segment=cfg.nints,
        detectors=("NRS1",), filter=cfg.filter, grating=cfg.grating, program=cfg.program,
        observation=cfg.observation, targname="FS-SIM", transit=False,
        expstart_mjd=cfg.expstart_mjd, **{k: v for k, v in over.items()
                                           if k in {f.name for f in dataclasses.fields(SimConfig)}})


def _paste(frame: np.ndarray, scfg: SimConfig, g: SlitGeometry, r: np.ndarray):
    y0 = g.y0 - (scfg.substrt2 - 1)
    x0 = g.x0 - (scfg.substrt1 - 1)
    ny, nx = r.shape
    ys0, xs0 = max(0, y0), max(0, x0)
    ys1, xs1 = min(frame.shape[0], y0 + ny), min(frame.shape[1], x0 + nx)
    if ys1 > ys0 and xs1 > xs0:
        frame[ys0:ys1, xs0:xs1] += r[ys0 - y0: ys1 - y0, xs0 - x0: xs1 - x0]


def simulate_fs(outdir, preset: str = "fs", seed: int = 0, **overrides) -> FsSimulation:
    """Simulate one FS nod set (one uncal exposure per nod position) with references and
    ``truth.json``. ``overrides``: any :class:`FsConfig` field."""
    t0 = _time.perf_counter()
    if preset not in FS_PRESETS:
        raise ValueError(f"simulate_fs: unknown preset {preset!r}; known: {sorted(FS_PRESETS)}")
    cfg = dataclasses.replace(FS_PRESETS[preset], **overrides)
    scfg = _sim_config(cfg)
    outdir = Path(outdir)
    refs_dir = outdir / "refs"
    refs_dir.mkdir(parents=True, exist_ok=True)
    det = "NRS1"
    didx = DETECTORS.index(det)
    geoms = slit_geometries()
    props = phys.make_detector_props(np.random.default_rng([seed, didx, 1]), scfg)
    refs = dict(write_refs(scfg, det, props, refs_dir, seed, didx))
    refs.update(_write_fs_refs(cfg, scfg, geoms, refs_dir, det))
    if cfg.irs2:  # the REFPIX reference that fits the simulated IRS2 readout noise
        from nirbeam.sim.irs2 import write_matched_refpix

        refs["refpix"] = write_matched_refpix(refs_dir, det, scfg.readpatt)
    ny, nx = props.shape
    offsets = cfg.offsets
    rng_p = np.random.default_rng([seed, 7])
    actual = [float(c + cfg.acquisition_offset_arcsec + rng_p.normal(0.0, cfg.pointing_sigma_arcsec))
              if cfg.pointing_sigma_arcsec > 0 else float(c + cfg.acquisition_offset_arcsec)
              for c in offsets]
    paths = []
    for k, c in enumerate(offsets):
        ecfg = dataclasses.replace(scfg, exposure_number=f"{k + 1:05d}",
                                   expstart_mjd=cfg.expstart_mjd + k * (scfg.cadence_s * cfg.nints + 120) / 86400)
        times = exposure_times(ecfg)
        rate = np.zeros((ny, nx))
        for name, r in scene_rates(cfg, geoms, actual[k]).items():
            _paste(rate, ecfg, geoms[name], r)
        fname = f"{ecfg.exposure_id}_{det.lower()}_uncal.fits"
        hdr = primary_header(ecfg, det, 1, 1, cfg.nints, times, fname)
        fs_cards = {
            "EXP_TYPE": ("NRS_FIXEDSLIT", "Type of data in the exposure"),
            "TSOVISIT": (False, "Time Series Observation visit indicator"),
            "FXD_SLIT": (cfg.primary, "Name of fixed slit aperture used"),
            "APERNAME": (f"NRS_{cfg.primary}_SLIT", "PRD science aperture used"),
            "PATT_NUM": (k + 1, "Position number in primary pattern"),
            "NUMDTHPT": (len(offsets), "Total number of points in pattern"),
            "PATTTYPE": (cfg.nod_type, "Primary dither pattern type"),
            # stdatamodels' NOD_TYPE enum has 3-POINT-NOD (and MOS slitlet nods) but not
            # 2-/5-POINT-NOD, which are PATTTYPE values: NONE for those
            "NOD_TYPE": (cfg.nod_type if cfg.nod_type in NOD_TYPE_ENUM else "NONE",
                         "Nod pattern type"),
            "PATTSTRT": (1, "Starting point in pattern"),
            "SUBPXPAT": ("NONE", "Subpixel dither pattern type"),
            "XOFFSET": (0.0, "[arcsec] dither offset across the slit"),
            "YOFFSET": (float(c), "[arcsec] nod offset along the slit"),
            "SRCTYAPT": ("POINT", "Source type selected in APT"),
            "READPATT": (scfg.readpatt, "Readout pattern"),
            "TARGNAME": ("FS-SIM", "Standard astronomical catalog name for target"),
        }
        for key, (v, com) in fs_cards.items():
            hdr[key] = (v, com)
        w = UncalSegmentWriter(outdir / fname, hdr, (cfg.nints, scfg.ngroups, ny, nx),
                               "NRSIRS2" if cfg.irs2 else "TRADITIONAL", detector=det,
                               seed=[seed, didx, 3, k])
        t_collect = scfg.tgroup * scfg.ngroups
        for i in range(cfg.nints):
            rng = np.random.default_rng([seed, didx, 2, k, i])
            ramp, _hits = phys.simulate_integration(rng, ecfg, props, rate, t_collect)
            w.write(ramp)
        paths.append(w.close([group_table_hdu(ecfg, np.arange(1, cfg.nints + 1), times, scfg.tgroup, ny, nx),
                              int_times_hdu(times)]))
    truth = _truth(cfg, geoms, scfg, actual)
    truth["nod_offsets_commanded_arcsec"] = list(offsets)
    tpath = outdir / "truth.json"
    tpath.write_text(json.dumps(truth, indent=1))
    return FsSimulation(outdir, tuple(paths), refs_dir, {k: str(v) for k, v in refs.items()}, tpath,
                        cfg, scfg, _time.perf_counter() - t0)


def _truth(cfg: FsConfig, geoms, scfg: SimConfig, offsets) -> dict:
    lam = np.round(np.arange(0.95, 1.86, 0.0005), 5)
    pid, eid = SOURCE_IDS[cfg.primary], SOURCE_IDS[cfg.extended_slit]
    ge = geoms[cfg.extended_slit]
    half = ge.length / 2
    sig = cfg.extended_sigma_arcsec
    frac = np.mean([0.5 * (math.erf((half - (c + cfg.extended_offset_arcsec)) / (math.sqrt(2) * sig))
                           - math.erf((-half - (c + cfg.extended_offset_arcsec)) / (math.sqrt(2) * sig)))
                    for c in offsets])
    x_lo = scfg.substrt1 - 1
    x_hi = x_lo + scfg.subsize1
    # the wavelengths the frame covers (a cut-down frame holds part of the band)
    g = geoms[cfg.primary]
    cols = np.arange(g.wavelength.shape[1]) + g.x0
    on = (cols >= x_lo) & (cols < x_hi)
    wl_on = g.wavelength[:, on]
    band = [float(np.nanmin(wl_on)), float(np.nanmax(wl_on))] if on.any() else [None, None]
    return {
        "simulator": "nirbeam.sim.fs",
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()},
        "nod_offsets_arcsec": list(offsets),  # where the sources were (pointing errors included)
        "frame_wavelength_range_um": band,
        "sources": {
            str(pid): {"slit": cfg.primary, "source_type": "POINT", "kind": "total flux",
                       "wavelength_um": lam.tolist(),
                       "flux_ujy": point_spectrum(lam, cfg.point_flux_ujy).tolist()},
            str(eid): {"slit": cfg.extended_slit, "source_type": "EXTENDED",
                       "kind": "flux through the slit, mean over the nods",
                       "wavelength_um": lam.tolist(),
                       "flux_ujy": (extended_spectrum(lam, cfg.extended_flux_ujy) * frac).tolist()},
        },
    }


def main_fs(outdir, preset: str, nints: int | None, seed: int) -> int:
    """``nirbeam simulate --preset fs*``: write the nod set, print what was written."""
    if preset not in FS_PRESETS:
        raise ValueError(f"--preset {preset!r}: FS presets are {sorted(FS_PRESETS)}")
    over = {} if nints is None else {"nints": int(nints)}
    res = simulate_fs(outdir, preset, seed, **over)
    print(f"simulated {preset} ({res.config.nod_type}, {len(res.uncal)} exposures of "
          f"{res.config.nints} integrations, {res.elapsed_s:.1f} s) into {Path(outdir).resolve()}")
    print(f"  refs:  {res.refs_dir}")
    for p in res.uncal:
        print(f"  uncal: {p.name}")
    print(f"  truth: {res.truth_json.name}")
    return 0
