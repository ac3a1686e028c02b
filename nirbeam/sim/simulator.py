"""Simulator of NIRSpec BOTS exposures in the JWST level-1b (uncal) format, with truth.

:func:`simulate` writes, for each detector,

* uncal segments ``OUTDIR/<exposure>-segNNN_<det>_uncal.fits`` (SCI uint16
  (nints_seg, ngroups, ny, nx) stored BITPIX=16/BZERO=32768, GROUP, INT_TIMES),
* CRDS-format references ``OUTDIR/refs/jwst_nirspec_<reftype>_nirbeamsim_<det>.fits``
  (superbias, dark, linearity, saturation, readnoise, gain, mask),
* a truth file ``OUTDIR/<exposure>_<det>_truth.fits``:

  ``TRUE_RATE`` float32 (nints, ny, nx), DN/s
      Source (star) rate per pixel per integration, linear, dark excluded: what the
      pipeline should recover after superbias, linearity, dark and ramp fitting.
      Dead pixels keep the sky rate (their data are zero; MASK flags them).
  ``REL_FLUX`` float64 (nints, nx)
      Transit depth factor per column per integration (batman).
  ``NONLIN_BETA`` float32 (ny, nx), 1/DN; ``DARK_RATE`` float32 (ny, nx), DN/s;
  ``SAT_HARD`` float32 (ny, nx), raw DN where the pixel stops rising.
  ``TRACE`` table: x, y_center, sigma_psf, wavelength_um, stellar_flux_dn_s, rp_rs.
  ``LIGHTCURVE`` table: integration_number, int_mid_BJD_TDB, relative_flux,
      white_flux_dn_s, aperture_flux_dn_s, theoretical_sigma_white.
  ``COSMIC_RAYS`` table: integration (1-based), group (0-based first group holding the
      charge), y, x (0-based subarray), amplitude_dn (linear DN deposited), kind
      (``CR`` or ``SNOWBALL``).
  ``HOT_PIXELS`` table: y, x, rate (DN/s), flagged (bool, in MASK).

  The PRIMARY header carries the seed, every SimConfig value (``HIERARCH SIM <NAME>``),
  the transit parameters (T0, PER, RP, A_RS, INC, ECC, W, U1, U2, LDLAW), mean gain,
  read noise and the 1/f amplitude.

Randomness: one :class:`numpy.random.Generator` per (seed, detector, purpose,
integration), so the data do not depend on segmenting or batching.

Size note: over 650 lines on purpose: the BOTS simulator's scene, ramps, references, truth and
file layout, one driver of one exposure; its physics is already in physics.py, the header
and reference layout shared with the FS, MOS and IFU simulators in headers.py.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from nirbeam import dqflags
from nirbeam.sim import physics as phys
from nirbeam.sim.fits_writer import (
    StreamingImageWriter,
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
    write_detector_refs,
)

__all__ = ["SimConfig", "SimulationResult", "PRESETS", "simulate", "main_args", "exposure_times"]

DETECTORS = ("NRS1", "NRS2")
# SCA_ID, FASTSLOW (per detector): nirbeam.sim.headers


@dataclass(frozen=True)
class SimConfig:
    """Every knob of a simulated exposure. Override any field through :func:`simulate`."""

    preset: str = "custom"
    # detector / readout
    subarray: str = "SUB512"
    substrt1: int = 1025
    substrt2: int = 957  # NRS1
    substrt2_nrs2: int = 1059
    subsize1: int = 512
    subsize2: int = 32
    readpatt: str = "NRSRAPID"
    nframes: int = 1
    groupgap: int = 0
    nresets: int = 1
    tframe: float = 0.22616
    ngroups: int = 5
    nints: int = 400
    ints_per_segment: int = 150
    detectors: tuple[str, ...] = ("NRS1",)
    filter: str = "CLEAR"
    grating: str = "PRISM"
    # identity
    program: str = "01366"
    observation: str = "004"
    visit: str = "001"
    visit_group: str = "04"
    seq_id: str = "1"
    act_id: str = "01"
    exposure_number: str = "00001"
    targname: str = "WASP-39"
    ra: float = 217.326714
    dec: float = -3.444497
    expstart_mjd: float = 59771.5
    # scene
    teff: float = 5400.0
    peak_signal_dn: float = 47000.0
    # per detector (NRS1, NRS2); PRISM light does not reach NRS2 (band (0, 0): dark only)
    wave_range: tuple[tuple[float, float], ...] = ((0.55, 5.35), (5.4, 5.6))
    band: tuple[tuple[float, float], ...] = ((0.6, 5.3), (0.0, 0.0))
    wave_curvature: float = 0.4
    trace_poly: tuple[float, float, float] = (14.6, 0.8, 2.0)
    psf_sigma: tuple[float, float] = (0.7, 1.5)
    psf_wing: float = 0.02
    aperture_halfwidth: int = 4
    # transit (batman, quadratic limb darkening); per=None: chosen so that the
    # transit (T14) spans transit_fraction of the exposure, centred at t0
    transit: bool = True
    t0_offset_s: float = 0.0
    per: float | None = None
    transit_fraction: float = 0.45
    rp: float = 0.1457
    a_rs: float = 11.55
    inc: float = 87.75
    ecc: float = 0.0
    w: float = 90.0
    u1: float = 0.12
    u2: float = 0.25
    rp_feature_amp: float = 0.02
    # detector
    bias_mean: float = 12500.0
    bias_sigma: float = 400.0
    bias_int_sigma: float = 8.0
    bias_drift_dn: float = 3.0
    # even/odd offset alternating along the fast-read axis (DMS rows), per integration
    # N(0, even_odd_dn), drifting per group as a random walk of step even_odd_drift_dn
    even_odd_dn: float = 0.0
    even_odd_drift_dn: float = 0.0
    ktc_dn: float = 0.0  # reset (kTC) noise per pixel per integration, DN
    # references that differ from the truth: superbias + N(0, superbias_noise_dn);
    # linearity from beta * (1 + N(0, linearity_error))
    superbias_noise_dn: float = 0.0
    linearity_error: float = 0.0
    # trace motion along y: jitter N(0, trace_jitter_px) per integration plus a linear
    # drift of trace_drift_px over the exposure (centred)
    trace_jitter_px: float = 0.0
    trace_drift_px: float = 0.0
    snowball_halo: bool = False
    snowball_halo_frac: float = 0.01
    gain_mean: float = 1.05
    readnoise_cds: float = 14.0
    nonlin_beta: tuple[float, float] = (1.0e-6, 1.5e-6)
    linearity_ncoeffs: int = 6
    dark_rate_dn_s: float = 0.006
    dark_ngroups: int | None = None
    hot_pixel_fraction: float = 5e-4
    hot_flagged_fraction: float = 0.7
    dead_pixel_fraction: float = 1e-4
    one_over_f: bool = True
    one_over_f_dn: float = 4.0
    one_over_f_alpha: float = 1.0  # power spectrum ~ f^-alpha over the whole ramp
    cosmic_rays: bool = True
    cr_rate: float = 2e-5  # primary events per pixel per second
    cr_amplitude_dn: tuple[float, float] = (100.0, 5000.0)
    snowball_rate: float = 2e-7  # per pixel per second
    # output
    full_frame_refs: bool = False
    write_int_times: bool = True
    write_group_table: bool = True

    def __post_init__(self):
        if self.nframes != 1:
            raise ValueError(f"SimConfig.nframes: only NFRAMES=1 is simulated, got {self.nframes}")
        if self.ngroups < 2 or self.nints < 1 or self.ints_per_segment < 1:
            raise ValueError(f"SimConfig: need ngroups>=2, nints>=1, ints_per_segment>=1; got {self.ngroups}, {self.nints}, {self.ints_per_segment}")
        for d in self.detectors:
            if d not in DETECTORS:
                raise ValueError(f"SimConfig.detectors: {d!r} is not one of {DETECTORS}")
        object.__setattr__(self, "detectors", tuple(self.detectors))

    @property
    def tgroup(self) -> float:
        return self.tframe * (self.nframes + self.groupgap)

    @property
    def cadence_s(self) -> float:
        """Start-to-start time of integrations (resets + groups), s."""
        return self.tframe * self.nresets + self.tgroup * self.ngroups

    @property
    def exposure_id(self) -> str:
        return (
            f"jw{self.program}{self.observation}{self.visit}_{self.visit_group}{self.seq_id}"
            f"{self.act_id}_{self.exposure_number}"
        )

    @property
    def nsegments(self) -> int:
        return -(-self.nints // self.ints_per_segment)

    def substrt2_for(self, det: str) -> int:
        return self.substrt2 if det == "NRS1" else self.substrt2_nrs2


#: 1/f rms per read (DN) of the G395H preset; see docs/notes/issue-13.md for the choice
G395H_ONE_OVER_F_DN = 12.0

#: Effects real data have that the pipeline must survive, on by default in the presets
#: (issue 13). Amplitudes: even/odd and drifts of a few DN as jwst's refpix docs say
#: ("of the order of a few counts"); kTC ~30 DN; superbias noise of a reference made
#: from ~100 darks (14 DN CDS / sqrt(100) ~ 1.5 DN); 2% per-pixel error on the
#: non-linearity; trace jitter 0.005 px rms and drift 0.02 px (JWST pointing holds ~1 mas,
#: 0.01 NIRSpec pixel); snowballs with a 1% halo. (With 0.02 px jitter and 0.05 px drift the
#: time-domain outlier flags and the fixed extraction profile fail: docs/notes/issue-13.md.)
REALISTIC = dict(
    even_odd_dn=3.0, even_odd_drift_dn=0.5, ktc_dn=30.0, superbias_noise_dn=1.5,
    linearity_error=0.02, trace_jitter_px=0.005, trace_drift_px=0.02, snowball_halo=True,
)

PRESETS: dict[str, SimConfig] = {
    "prism-sub512": SimConfig(preset="prism-sub512", **REALISTIC),
    # SUBSTRT2 for G395H from ESA-JWST-SCI-NRS-TN-2018-002 (NRS1 963, NRS2 1055)
    "g395h-sub2048": SimConfig(
        preset="g395h-sub2048",
        subarray="SUB2048",
        substrt1=1,
        substrt2=963,
        substrt2_nrs2=1055,
        subsize1=2048,
        subsize2=32,
        tframe=0.90156,
        ngroups=70,
        nints=20,
        ints_per_segment=8,
        filter="F290LP",
        grating="G395H",
        observation="003",
        expstart_mjd=59791.5,
        teff=5400.0,
        peak_signal_dn=30000.0,
        wave_range=((2.70, 3.73), (3.80, 5.20)),
        band=((2.87, 3.72), (3.82, 5.18)),
        wave_curvature=0.05,
        trace_poly=(15.5, -1.2, 1.0),
        psf_sigma=(0.8, 1.1),
        rp_feature_amp=0.03,
        one_over_f_dn=G395H_ONE_OVER_F_DN,
        **REALISTIC,
    ),
}


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`simulate` wrote.

    Attributes
    ----------
    outdir : Path
    exposure : str
        Exposure id, e.g. ``jw01366004001_04101_00001``.
    uncal : tuple of Path
        All uncal segments, detector by detector, in segment order.
    uncal_by_detector : dict
        ``"NRS1" -> (seg001, seg002, ...)``.
    refs_dir : Path
    refs : dict
        ``"NRS1" -> {"superbias": Path, "dark": ..., ...}``.
    truth : dict
        ``"NRS1" -> Path`` of the truth file.
    truth_file : Path
        Truth file of the first detector.
    config : SimConfig
    seed : int
    elapsed_s : float
    wavelength_maps : dict
        ``"NRS1" -> Path`` of ``<exposure>_<det>_wavelength.fits``: the simulated
        wavelengths as a user's wavelength map (WAVELENGTH image, µm), which the
        ``nirbeam.toml`` written by ``nirbeam simulate`` references.
    """

    outdir: Path
    exposure: str
    uncal: tuple[Path, ...]
    uncal_by_detector: dict[str, tuple[Path, ...]]
    refs_dir: Path
    refs: dict[str, dict[str, Path]]
    truth: dict[str, Path]
    truth_file: Path
    config: SimConfig
    seed: int
    elapsed_s: float = field(default=0.0, compare=False)
    wavelength_maps: dict[str, Path] = field(default_factory=dict, compare=False)


# ----------------------------------------------------------------------------------------
# Times
# ----------------------------------------------------------------------------------------
def exposure_times(cfg: SimConfig) -> dict[str, np.ndarray]:
    """INT_TIMES columns for all integrations (MJD UTC and BJD_TDB - 2400000.5, days).

    Integration i starts at EXPSTART + i * cadence and ends one cadence later (reset frame
    included). BJD_TDB: geocentric observer (JWST taken at Earth's centre), barycentric
    light-travel time to the target from astropy (vectorised).
    """
    import astropy.units as u
    from astropy.coordinates import EarthLocation, SkyCoord
    from astropy.time import Time

    n = cfg.nints
    day = 86400.0
    start = cfg.expstart_mjd + np.arange(n) * cfg.cadence_s / day
    end = start + cfg.cadence_s / day
    mid = 0.5 * (start + end)
    allt = np.concatenate([start, mid, end])
    t = Time(allt, format="mjd", scale="utc")
    coord = SkyCoord(cfg.ra * u.deg, cfg.dec * u.deg, frame="icrs")
    loc = EarthLocation.from_geocentric(0.0, 0.0, 0.0, unit=u.m)
    ltt = t.light_travel_time(coord, kind="barycentric", location=loc)
    bjd = (t.tdb + ltt).mjd
    return {
        "int_start_MJD_UTC": start,
        "int_mid_MJD_UTC": mid,
        "int_end_MJD_UTC": end,
        "int_start_BJD_TDB": bjd[:n],
        "int_mid_BJD_TDB": bjd[n : 2 * n],
        "int_end_BJD_TDB": bjd[2 * n :],
    }


def _transit_period(cfg: SimConfig, duration_days: float) -> float:
    """Period giving T14 = transit_fraction * duration for the configured geometry."""
    if cfg.per is not None:
        return float(cfg.per)
    inc = np.radians(cfg.inc)
    b = cfg.a_rs * np.cos(inc)
    arg = np.sqrt(max((1 + cfg.rp) ** 2 - b**2, 1e-6)) / (cfg.a_rs * np.sin(inc))
    frac = np.arcsin(min(arg, 1.0)) / np.pi  # T14 / P
    return cfg.transit_fraction * duration_days / frac


# ----------------------------------------------------------------------------------------
# Headers
# ----------------------------------------------------------------------------------------
def _iso(mjd: float) -> tuple[str, str]:
    from astropy.time import Time

    s = Time(mjd, format="mjd", scale="utc").isot
    d, t = s.split("T")
    return d, t


def _isot(mjd: float) -> str:
    from astropy.time import Time

    return Time(mjd, format="mjd", scale="utc").isot


def primary_header(cfg: SimConfig, det: str, seg: int, int_lo: int, int_hi: int, times, fname: str) -> fits.Header:
    date_obs, time_obs = _iso(times["int_start_MJD_UTC"][0])
    cards = file_cards(fname, "nirbeam.sim.simulator") + [
        ("TARGNAME", cfg.targname, "Standard astronomical catalog name for target"),
        ("TARGPROP", cfg.targname, "Proposer's name for the target"),
        ("TARG_RA", cfg.ra, "Target RA at mid time of exposure"),
        ("TARG_DEC", cfg.dec, "Target Dec at mid time of exposure"),
        ("PROGRAM", cfg.program, "JWST program number"),
        ("OBSERVTN", cfg.observation, "Observation number"),
        ("VISIT", cfg.visit, "Visit number"),
        ("VISITGRP", cfg.visit_group, "Visit group identifier"),
        ("SEQ_ID", cfg.seq_id, "Parallel sequence identifier"),
        ("ACT_ID", cfg.act_id, "Activity identifier"),
        ("EXPOSURE", cfg.exposure_number, "Exposure request number"),
        ("TSOVISIT", True, "Time Series Observation visit indicator"),
        ("INSTRUME", "NIRSPEC", "Instrument used to acquire the data"),
        ("DETECTOR", det, "Name of detector used to acquire the data"),
        ("FILTER", cfg.filter, "Name of the filter element used"),
        ("GRATING", cfg.grating, "Name of the grating element used"),
        ("FXD_SLIT", "S1600A1", "Name of fixed slit aperture used"),
        ("LAMP", "NONE", "Internal lamp state"),
        ("PATT_NUM", 1, "Position number in primary pattern"),
        ("PATTTYPE", "NONE", "Primary dither pattern type"),
        ("NUMDTHPT", 1, "Total number of points in pattern"),
        ("PATTSTRT", 1, "Starting point in pattern"),
        ("NOD_TYPE", "NONE", "Nod pattern type"),
        ("PATTSIZE", "NONE", "Primary dither pattern size"),
        ("EXP_TYPE", "NRS_BRIGHTOBJ", "Type of data in the exposure"),
        ("EXPSTART", float(times["int_start_MJD_UTC"][0]), "UTC exposure start time (MJD)"),
        ("EXPMID", float(0.5 * (times["int_start_MJD_UTC"][0] + times["int_end_MJD_UTC"][-1])), "UTC exposure mid time (MJD)"),
        ("EXPEND", float(times["int_end_MJD_UTC"][-1]), "UTC exposure end time (MJD)"),
        ("DATE-BEG", _isot(times["int_start_MJD_UTC"][0]), "Date-time start of exposure"),
        ("DATE-END", _isot(times["int_end_MJD_UTC"][-1]), "Date-time end of exposure"),
        ("DATE-OBS", date_obs, "UTC date at start of exposure"),
        ("TIME-OBS", time_obs, "UTC time at start of exposure"),
    ] + readout_cards(
        readpatt=cfg.readpatt, nints=cfg.nints, int_lo=int_lo, int_hi=int_hi, ngroups=cfg.ngroups,
        nframes=cfg.nframes, groupgap=cfg.groupgap, nresets=cfg.nresets, tframe=cfg.tframe,
        tgroup=cfg.tgroup, duration=cfg.cadence_s * cfg.nints, segment=seg,
        nsegments=cfg.nsegments, subarray=cfg.subarray, substrt1=cfg.substrt1,
        substrt2=cfg.substrt2_for(det), subsize1=cfg.subsize1, subsize2=cfg.subsize2,
        fastslow=FASTSLOW[det], dropped_frames=True)
    return header_from_cards(cards)


def _ref_common(cfg: SimConfig, det: str, full: bool) -> dict:
    if full:
        return reference_common(det, "NRS_BRIGHTOBJ", "FULL", 1, 1, 2048, 2048)
    return reference_common(det, "NRS_BRIGHTOBJ", cfg.subarray, cfg.substrt1, cfg.substrt2_for(det),
                            cfg.subsize1, cfg.subsize2)


# ----------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------
def _rn_extra_var(cfg: SimConfig) -> float:
    """CDS variance (DN^2) added to the white read noise by the pixel-scale 1/f part."""
    if not (cfg.one_over_f and cfg.one_over_f_dn > 0):
        return 0.0
    return 2.0 * phys.one_over_f_pixel_variance(cfg.ngroups, cfg.subsize2, cfg.subsize1, cfg.one_over_f_dn,
                                                alpha=cfg.one_over_f_alpha)


def _irs2_var(cfg: SimConfig) -> float:
    """CDS variance (DN^2) the IRS2 readout adds (READPATT NRSIRS2*: the FS simulator's
    full frames; :func:`nirbeam.sim.irs2.cds_read_noise`), 0 for traditional readouts."""
    if not str(cfg.readpatt).upper().startswith("NRSIRS2"):
        return 0.0
    from nirbeam.sim.irs2 import cds_read_noise

    return cds_read_noise() ** 2


def write_refs(cfg: SimConfig, det: str, props: phys.DetectorProps, refs_dir: Path, seed: int, det_idx: int) -> dict[str, Path]:
    f32 = np.float32
    ny, nx = props.shape

    def p(reftype):
        return reference_path(refs_dir, reftype, det)

    sub = _ref_common(cfg, det, False)
    zero_dq = np.zeros((ny, nx), np.uint32)
    dead = (props.mask & dqflags.DEAD) != 0

    # references that are not the truth (seeded apart from the data)
    rng_ref = np.random.default_rng([seed, det_idx, 5])
    sb = props.bias.astype(np.float64)
    if cfg.superbias_noise_dn > 0:
        sb = sb + rng_ref.normal(0.0, cfg.superbias_noise_dn, sb.shape)
    ngd = max(cfg.dark_ngroups or 0, cfg.ngroups)
    tg = phys.group_times(dataclasses.replace(cfg, ngroups=ngd))
    dark = (props.dark_rate[None, :, :] * tg[:, None, None]).astype(f32)
    # the dark's DQ flags the same hot/warm pixels as MASK (not all of them)
    dark_dq = (props.mask & np.uint32(dqflags.HOT | dqflags.WARM)).astype(np.uint32)
    out = write_detector_refs(p, sub, {
        "superbias": ({"DESCRIP": "Simulated superbias"},
                      {"SCI": sb.astype(f32), "ERR": np.full((ny, nx), 1.0, f32), "DQ": zero_dq}),
        "dark": ({"READPATT": cfg.readpatt, "DESCRIP": "Simulated dark (DN per group, NFRAMES=1)",
                  "NFRAMES": 1, "GROUPGAP": 0, "NGROUPS": ngd, "NINTS": 1},
                 {"SCI": dark, "ERR": np.full_like(dark, 0.05), "DQ": dark_dq}),
    })
    full = cfg.full_frame_refs
    if full:
        ff = phys.full_frame_fields(np.random.default_rng([seed, det_idx, 3]), cfg, props)
        com = _ref_common(cfg, det, True)
        beta, sat, rn, gain, mask = ff["beta"], ff["sat_ref"], ff["rn_cds"], ff["gain"], ff["mask"]
        dead_f = (mask & dqflags.DEAD) != 0
        refp = (mask & dqflags.REFERENCE_PIXEL) != 0
    else:
        com = sub
        beta, sat, rn, gain, mask = props.beta, props.sat_ref, props.rn_cds, props.gain, props.mask
        dead_f = dead
        refp = props.refpix
    if cfg.linearity_error > 0:
        # one full-frame error field, cut like the references: the same pixel gets the
        # same error in a subarray and a full-frame LINEARITY file
        err = rng_ref.standard_normal((phys.FULL, phys.FULL))
        if not full:
            err = err[cfg.substrt2_for(det) - 1: cfg.substrt2_for(det) - 1 + ny,
                      cfg.substrt1 - 1: cfg.substrt1 - 1 + nx]
        beta = (beta * (1.0 + cfg.linearity_error * err)).astype(f32)
    coeffs = phys.linearity_coeffs(beta, cfg.linearity_ncoeffs)
    lin_dq = np.zeros(beta.shape, np.uint32)
    lin_dq[dead_f] |= dqflags.NO_LIN_CORR
    sat_dq = np.zeros(beta.shape, np.uint32)
    sat_dq[dead_f | refp] |= dqflags.NO_SAT_CHECK
    # READNOISE: CDS noise of a pixel after column destriping = white read noise plus the
    # pixel-scale part of the 1/f noise (which no column correction removes)
    rn_ref = np.sqrt(rn.astype(np.float64) ** 2 + _rn_extra_var(cfg) + _irs2_var(cfg))
    out.update(write_detector_refs(p, com, {
        "linearity": ({"DESCRIP": "Simulated linearity: corrected = sum_k c_k raw**k (bias-subtracted DN)",
                       "NCOEFFS": cfg.linearity_ncoeffs}, {"COEFFS": coeffs, "DQ": lin_dq}),
        "saturation": ({"DESCRIP": "Simulated saturation (raw DN, bias included)"},
                       {"SCI": sat.astype(f32), "DQ": sat_dq}),
        "readnoise": ({"DESCRIP": "Simulated read noise of a CDS difference (DN)"},
                      {"SCI": rn_ref.astype(f32)}),
        "gain": ({"DESCRIP": "Simulated gain"}, {"SCI": gain.astype(f32)}),
        "mask": ({"DESCRIP": "Simulated bad-pixel mask"}, {"DQ": mask.astype(np.uint32)}),
    }))
    return out


# ----------------------------------------------------------------------------------------
# Truth
# ----------------------------------------------------------------------------------------
def _truth_header(cfg: SimConfig, det: str, seed: int, exposure: str, t0: float, per: float, props) -> fits.Header:
    h = fits.Header()
    h["ORIGIN"] = "NIRBEAM"
    h["FILETYPE"] = ("truth", "nirbeam simulator truth")
    h["EXPOSURE"] = exposure
    h["DETECTOR"] = det
    h["SEED"] = (seed, "numpy SeedSequence root")
    h["T0"] = (t0, "mid-transit, BJD_TDB - 2400000.5")
    h["PER"] = (per, "orbital period, d")
    h["RP"] = (cfg.rp, "Rp/R* (white)")
    h["A_RS"] = (cfg.a_rs, "a/R*")
    h["INC"] = (cfg.inc, "inclination, deg")
    h["ECC"] = cfg.ecc
    h["W"] = (cfg.w, "argument of periastron, deg")
    h["U1"] = cfg.u1
    h["U2"] = cfg.u2
    h["LDLAW"] = "quadratic"
    h["TRANSIT"] = cfg.transit
    h["GAIN"] = (float(np.mean(props.gain)), "mean gain, e-/DN")
    rn_eff = np.sqrt(props.rn_cds.astype(np.float64) ** 2 + _rn_extra_var(cfg))
    h["RNOISE"] = (float(np.mean(rn_eff)), "mean CDS noise as in READNOISE ref, DN")
    h["RNWHITE"] = (float(np.mean(props.rn_cds)), "mean white CDS read noise, DN")
    h["RNREAD"] = (float(np.mean(props.rn_cds)) / np.sqrt(2), "mean white single-read noise, DN")
    h["OOFPIXV"] = (_rn_extra_var(cfg) / 2, "pixel-scale 1/f variance per read, DN^2")
    h["OOF_AMP"] = (cfg.one_over_f_dn if cfg.one_over_f else 0.0, "1/f rms per read (pixel clock), DN")
    h["APHALFW"] = (cfg.aperture_halfwidth, "white-light aperture half-width, px")
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, tuple):
            v = repr(v)
        elif v is None:
            v = "None"
        h[f"HIERARCH SIM {f.name.upper()}"] = v
    return h


def _table(name: str, cols: dict[str, np.ndarray]) -> fits.BinTableHDU:
    return fits.BinTableHDU(fits.FITS_rec.from_columns(fits.ColDefs([
        fits.Column(k, _fmt(v), array=v) for k, v in cols.items()
    ])), name=name)


def _fmt(v: np.ndarray) -> str:
    v = np.asarray(v)
    if v.dtype.kind in "US":
        return f"{max(1, int(max((len(s) for s in v), default=1)))}A"
    return {
        np.dtype(np.int8): "I", np.dtype(np.int16): "I", np.dtype(np.int32): "J",
        np.dtype(np.int64): "K", np.dtype(np.float32): "E", np.dtype(np.float64): "D",
        np.dtype(bool): "L",
    }[v.dtype]


# ----------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------
def _workers(workers: int | None) -> int:
    """Threads that draw integrations: ``workers``, else $NIRBEAM_SIM_WORKERS, else 1."""
    if workers is None:
        env = os.environ.get("NIRBEAM_SIM_WORKERS", "").strip()
        workers = int(env) if env else 1
    if int(workers) < 1:
        raise ValueError(f"simulate: workers must be >= 1, got {workers}")
    return int(workers)


def _in_order(fn, items, workers: int):
    """``fn(item)`` for each item, yielded in order; with ``workers`` > 1 they run on that
    many threads, at most ``workers + 1`` ahead of the consumer (memory stays bounded by a
    few integrations). Each integration has its own random stream, so the results do not
    depend on ``workers``."""
    if workers <= 1:
        for it in items:
            yield fn(it)
        return
    from concurrent.futures import ThreadPoolExecutor

    items = iter(items)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nirbeam-sim") as ex:
        pending = collections.deque(ex.submit(fn, it) for it in itertools.islice(items, workers + 1))
        while pending:
            res = pending.popleft().result()
            for it in itertools.islice(items, 1):
                pending.append(ex.submit(fn, it))
            yield res


def simulate(outdir, preset: str = "prism-sub512", nints: int | None = None, seed: int = 0,
             workers: int | None = None, **overrides) -> SimulationResult:
    """Simulate one NIRSpec BOTS exposure: uncal segments, CRDS-format references, truth.

    Parameters
    ----------
    outdir : str or Path
        Created if missing; files are overwritten.
    preset : str
        Key of :data:`PRESETS` (``prism-sub512``, ``g395h-sub2048``).
    nints : int, optional
        Number of integrations (default: the preset's).
    seed : int
        Root of all randomness; the same seed and config give identical data.
    workers : int, optional
        Threads drawing integrations (default ``$NIRBEAM_SIM_WORKERS`` or 1); the files
        are identical for any value (one random stream per detector and integration).
    **overrides
        Any :class:`SimConfig` field, e.g. ``one_over_f=False, detectors=("NRS1", "NRS2")``.

    Returns
    -------
    SimulationResult
    """
    t_start = _time.perf_counter()
    if preset not in PRESETS:
        raise ValueError(f"simulate: unknown preset {preset!r}; known: {sorted(PRESETS)}")
    names = {f.name for f in dataclasses.fields(SimConfig)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise TypeError(f"simulate: unknown SimConfig field(s) {bad}")
    if nints is not None:
        overrides["nints"] = int(nints)
    cfg = dataclasses.replace(PRESETS[preset], **overrides)
    seed = int(seed)
    nworkers = _workers(workers)
    outdir = Path(outdir)
    refs_dir = outdir / "refs"
    refs_dir.mkdir(parents=True, exist_ok=True)

    times = exposure_times(cfg)
    exposure = cfg.exposure_id
    t_mid = times["int_mid_BJD_TDB"]
    duration = times["int_end_BJD_TDB"][-1] - times["int_start_BJD_TDB"][0]
    t0 = 0.5 * (times["int_start_BJD_TDB"][0] + times["int_end_BJD_TDB"][-1]) + cfg.t0_offset_s / 86400.0
    per = _transit_period(cfg, duration)
    tcfg = dataclasses.replace(cfg, per=per)
    it_hdu = int_times_hdu(times)

    # one flux scale for all detectors: the brightest NRS1 pixel reaches peak_signal_dn
    ref_cfg = dataclasses.replace(cfg, substrt2=cfg.substrt2_for("NRS1"))
    ref_pix = phys.refpix_mask(ref_cfg.substrt1, ref_cfg.substrt2, cfg.subsize2, cfg.subsize1)
    flux_scale = phys.make_scene(ref_cfg, 0, ref_pix, cfg.tgroup).scale

    uncal_by_det: dict[str, tuple[Path, ...]] = {}
    refs: dict[str, dict[str, Path]] = {}
    truth: dict[str, Path] = {}
    wl_maps: dict[str, Path] = {}
    for det in cfg.detectors:
        didx = DETECTORS.index(det)
        dcfg = dataclasses.replace(cfg, substrt2=cfg.substrt2_for(det))
        props = phys.make_detector_props(np.random.default_rng([seed, didx, 1]), dcfg)
        refs[det] = write_refs(dcfg, det, props, refs_dir, seed, didx)
        scene = phys.make_scene(dcfg, didx, props.refpix, cfg.tgroup, scale=flux_scale)
        rel = phys.transit_relflux(tcfg, t_mid, scene.rp, t0)  # (nints, nx)
        rate_oot = scene.rate_oot
        ny, nx = rate_oot.shape
        t_collect = cfg.tgroup * cfg.ngroups
        trace_dy = np.zeros(cfg.nints)
        if cfg.trace_drift_px and cfg.nints > 1:
            trace_dy += cfg.trace_drift_px * (np.arange(cfg.nints) / (cfg.nints - 1) - 0.5)
        if cfg.trace_jitter_px > 0:
            trace_dy += np.random.default_rng([seed, didx, 4]).normal(0.0, cfg.trace_jitter_px, cfg.nints)

        # truth: TRUE_RATE is streamed like the uncal data (never the whole exposure)
        truth_path = outdir / f"{exposure}_{det.lower()}_truth.fits"
        tw = StreamingImageWriter(
            truth_path, _truth_header(tcfg, det, seed, exposure, t0, per, props),
            "TRUE_RATE", (cfg.nints, ny, nx), np.float32, bunit="DN/s",
        )
        yy = np.arange(ny)[:, None]
        ap = (np.abs(yy - scene.y_center[None, :]) <= cfg.aperture_halfwidth) & (props.qe > 0)
        rn_eff = np.sqrt(props.rn_cds.astype(np.float64) ** 2 + _rn_extra_var(dcfg))
        ap_flux = np.empty(cfg.nints)
        sig_white = np.empty(cfg.nints)
        cr_rows: list[tuple] = []
        paths = []
        def one_integration(i: int, dcfg=dcfg, scene=scene, props=props, rel=rel, didx=didx,
                            det=det, trace_dy=trace_dy, t_collect=t_collect):
            prof_i = phys.shifted_profile(dcfg, scene, props.refpix, float(trace_dy[i]))
            rate = prof_i * scene.column_flux[None, :] * rel[i][None, :]
            rng = np.random.default_rng([seed, didx, 2, i])
            ramp, hits = phys.simulate_integration(rng, dcfg, props, rate, t_collect, fast_reversed=det == "NRS2")
            return rate, ramp, hits

        results = _in_order(one_integration, range(cfg.nints), nworkers)
        for s in range(cfg.nsegments):
            lo = s * cfg.ints_per_segment
            hi = min(cfg.nints, lo + cfg.ints_per_segment)
            fname = f"{exposure}-seg{s + 1:03d}_{det.lower()}_uncal.fits"
            path = outdir / fname
            hdr = primary_header(dcfg, det, s + 1, lo + 1, hi, times, fname)
            w = UncalSegmentWriter(path, hdr, (hi - lo, cfg.ngroups, ny, nx))
            for i in range(lo, hi):
                rate, ramp, hits = next(results)
                w.write(ramp)
                del ramp
                rate32 = rate.astype(np.float32)
                tw.write(rate32)
                ap_flux[i] = rate32[ap].sum(dtype=np.float64)
                var = phys.ramp_variance(rate + props.dark_rate, props.gain, rn_eff, cfg.ngroups, cfg.tgroup)
                sig_white[i] = np.sqrt(var[ap].sum()) / ap_flux[i] if ap_flux[i] > 0 else np.nan
                if hits.y.size:
                    cr_rows.append((np.full(hits.y.size, i + 1, np.int32), hits))
            tables = []
            if cfg.write_group_table:
                tables.append(group_table_hdu(cfg, np.arange(lo + 1, hi + 1), times, cfg.tgroup, ny, nx))
            if cfg.write_int_times:
                tables.append(it_hdu.copy())
            paths.append(w.close(tables))
        uncal_by_det[det] = tuple(paths)
        truth[det] = tw.close(_truth_tables(props, scene, rel, ap_flux, sig_white, cr_rows, t_mid, trace_dy))
        wl_maps[det] = _write_wavelength_map(outdir / f"{exposure}_{det.lower()}_wavelength.fits",
                                             det, scene.wavelength, ny)

    uncal = tuple(p for det in cfg.detectors for p in uncal_by_det[det])
    return SimulationResult(
        outdir=outdir, exposure=exposure, uncal=uncal, uncal_by_detector=uncal_by_det,
        refs_dir=refs_dir, refs=refs, truth=truth, truth_file=truth[cfg.detectors[0]],
        config=tcfg, seed=seed, elapsed_s=_time.perf_counter() - t_start,
        wavelength_maps=wl_maps,
    )


def _write_wavelength_map(path: Path, det: str, wavelength_um: np.ndarray, ny: int) -> Path:
    """The simulated wavelengths as a user would give them: a WAVELENGTH map (µm).

    Same layout as the WAVELENGTH extension of a jwst calints product over the subarray
    (each column's wavelength on every row); ``nirbeam run`` reads it through
    ``[extract] wavelength_map``, never through the truth file.
    """
    ph = fits.Header()
    ph["TELESCOP"] = "JWST"
    ph["INSTRUME"] = "NIRSPEC"
    ph["DETECTOR"] = det
    ph["FILETYPE"] = ("wavelength map", "simulated wavelengths per pixel")
    ph["ORIGIN"] = "nirbeam simulator"
    img = np.broadcast_to(np.asarray(wavelength_um, np.float32)[None, :],
                          (ny, np.size(wavelength_um)))
    h = fits.ImageHDU(np.ascontiguousarray(img), name="WAVELENGTH")
    h.header["BUNIT"] = "um"
    fits.HDUList([fits.PrimaryHDU(header=ph), h]).writeto(path, overwrite=True)
    return path


def _truth_tables(props, scene, rel, ap_flux, sig_white, cr_rows, t_mid, trace_dy) -> list:
    """Truth extensions after TRUE_RATE (images then tables)."""
    nx = props.shape[1]
    nints = rel.shape[0]
    white = (rel * scene.column_flux[None, :]).sum(axis=1)  # float64 sum of TRUE_RATE
    white_oot = scene.column_flux.sum()
    rel_white = white / white_oot if white_oot > 0 else np.ones(nints)
    if cr_rows:
        hits = [r[1] for r in cr_rows]
        cr = {
            "integration": np.concatenate([r[0] for r in cr_rows]),
            "group": np.concatenate([h.group for h in hits]).astype(np.int32),
            "y": np.concatenate([h.y for h in hits]).astype(np.int32),
            "x": np.concatenate([h.x for h in hits]).astype(np.int32),
            "amplitude_dn": np.concatenate([h.amplitude_dn for h in hits]).astype(np.float32),
            "kind": np.where(np.concatenate([h.kind for h in hits]) == 1, "SNOWBALL", "CR"),
        }
    else:
        cr = {
            "integration": np.zeros(0, np.int32), "group": np.zeros(0, np.int32),
            "y": np.zeros(0, np.int32), "x": np.zeros(0, np.int32),
            "amplitude_dn": np.zeros(0, np.float32), "kind": np.array([], dtype="U8"),
        }
    if cr["kind"].size == 0:
        cr["kind"] = np.array([], dtype="U8")
    return [
        fits.ImageHDU(rel, name="REL_FLUX"),
        fits.ImageHDU(props.beta.astype(np.float32), name="NONLIN_BETA"),
        fits.ImageHDU(props.dark_rate.astype(np.float32), name="DARK_RATE"),
        fits.ImageHDU(props.sat_hard.astype(np.float32), name="SAT_HARD"),
        _table("TRACE", {
            "x": np.arange(nx, dtype=np.int32),
            "y_center": scene.y_center.astype(np.float64),
            "sigma_psf": scene.sigma.astype(np.float64),
            "wavelength_um": scene.wavelength.astype(np.float64),
            "stellar_flux_dn_s": scene.column_flux.astype(np.float64),
            "rp_rs": scene.rp.astype(np.float64),
        }),
        _table("LIGHTCURVE", {
            "integration_number": np.arange(1, nints + 1, dtype=np.int32),
            "int_mid_BJD_TDB": np.asarray(t_mid, np.float64),
            "relative_flux": rel_white.astype(np.float64),
            "white_flux_dn_s": white,
            "aperture_flux_dn_s": ap_flux,
            "theoretical_sigma_white": sig_white,
            "trace_dy": np.asarray(trace_dy, np.float64),
        }),
        _table("COSMIC_RAYS", cr),
        _table("HOT_PIXELS", {
            "y": props.hot_y.astype(np.int32), "x": props.hot_x.astype(np.int32),
            "rate": props.hot_rate.astype(np.float32), "flagged": props.hot_flagged.astype(bool),
        }),
    ]


def _parse_value(field_type, text: str):
    """Parse ``text`` for a SimConfig field (bool/int/float/str/tuple)."""
    import ast

    t = str(field_type)
    if t.startswith("bool"):
        return text.lower() in ("1", "true", "t", "yes", "y")
    if t.startswith("tuple"):
        if "str" in t:
            return tuple(s.strip() for s in text.split(","))
        v = ast.literal_eval(text)
        return tuple(v) if isinstance(v, list | tuple) else (v,)
    if text == "None":
        return None
    if t.startswith("int"):
        return int(text)
    if t.startswith("float"):
        return float(text)
    return text


def main_args(outdir, preset: str = "prism-sub512", nints: int | None = None, seed: int = 0, set: Sequence[str] = ()) -> SimulationResult:  # noqa: A002
    """CLI-friendly entry: ``set`` holds ``FIELD=VALUE`` strings for SimConfig overrides.

    Example: ``main_args("out", "g395h-sub2048", nints=20, set=["detectors=NRS1,NRS2"])``.
    """
    types = {f.name: f.type for f in dataclasses.fields(SimConfig)}
    overrides = {}
    for item in set:
        if "=" not in item:
            raise ValueError(f"simulate --set: expected FIELD=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip()
        if k not in types:
            raise ValueError(f"simulate --set: unknown SimConfig field {k!r}")
        overrides[k] = _parse_value(types[k], v.strip())
    return simulate(outdir, preset=preset, nints=nints, seed=seed, **overrides)
