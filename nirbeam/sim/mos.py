"""Simulated NIRSpec MOS exposures: an MSA configuration in the real metadata layout,
3-shutter slitlets with galaxies and sky, bar shadows, a failed-open and a stuck-closed
shutter, three 3-shutter nods as level-1b uncal files (``nirbeam simulate --preset mos``).

What is written (``outdir``):

* ``jw09999001001_01_msa.fits`` -- the MSA metadata (SHUTTER_IMAGE, SHUTTER_INFO with one
  row per open shutter and dither point, SOURCE_INFO), as the archive's;
* ``jw09999001001_03101_0000{1,2,3}_nrs1_uncal.fits`` -- one exposure per nod (PATT_NUM 1-3,
  NOD_TYPE 3-SHUTTER-SLITLET, EXP_TYPE NRS_MSASPEC, MSAMETFL/MSAMETID), SCI uint16 ramps,
  GROUP and INT_TIMES, through :mod:`nirbeam.sim.fits_writer`; the readout is one
  parameter, ``readout``: ``"auto"`` (default) writes the full frame in IRS2 (READPATT
  ``NRSIRS2``, TFRAME 14.58889 s, interleaved reference samples, reference output, 1/f,
  alternating column noise: :mod:`nirbeam.sim.irs2`) as real MOS exposures are, and a
  cut-down frame (the test presets) in traditional ``NRSRAPID``, which real full-frame MOS
  data never use: those presets are a test convenience; ``"traditional"`` or ``"NRSIRS2"``
  force one (IRS2 is full frame only);
* ``refs/`` -- CRDS-format detector references (superbias, dark, linearity, saturation,
  read noise, gain, mask), the flux calibration (PHOTOM table: DN/s per µJy against
  wavelength), the bar-shadow reference (the a-priori profile, deliberately not the true
  one: the reference over- and under-corrects at the shutter edges), the MSA geometry
  (``msa_geometry.json``: where shutters land on the detector, the wavelength solution)
  and, for IRS2, the REFPIX reference that fits the simulated IRS2 readout noise
  (:func:`nirbeam.sim.irs2.write_matched_refpix`);
* ``truth.json`` -- per source ``{"wavelength_um": [...], "flux_ujy": [...]}`` plus the
  bar-shadow profile used, the failed-open and stuck-closed shutters. The pipeline never
  reads it.

The scene: every slitlet is three shutters (columns ``c, c+1, c+2`` of one shutter row),
shutter pitch ``pitch`` detector rows, bars between shutters casting a shadow ``T(y)``
(1 at shutter centres). Nod 1 has the source in the middle shutter, nod 2 in the first
(``x11``), nod 3 in the third (``11x``). Sources are continuum (a power law) plus
emission lines, Gaussian along the slit (point: sigma 1 px; extended: 2.4 px). Light
through the slitlet is ``(sky + source) * T``; beyond the open shutters nothing passes,
except through the failed-open shutter (sky only, one shutter in a gap between slitlets),
and nothing passes the stuck-closed shutter (a planned-open shutter of a sky slitlet).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from nirbeam import dqflags
from nirbeam.sim.fits_writer import (
    UncalSegmentWriter,
    group_table_hdu,
    int_times_hdu,
)
from nirbeam.sim.headers import (
    reference_common,
    reference_path,
    reference_primary,
    write_detector_refs,
)

__all__ = ["MOSSimConfig", "MOS_PRESETS", "simulate_mos", "simulate_mos_cli", "MOSSimResult",
           "bar_shadow_profile", "response_curve"]

PROGRAM = "09999"
MSA_NAME = f"jw{PROGRAM}001001_01_msa.fits"
#: MOSSimConfig.readout values: auto (full frame: IRS2; cut-down: traditional) or forced
MOS_READOUTS = ("auto", "traditional", "NRSIRS2")
#: traditional full-frame (NRSRAPID) frame time, the config's default
TFRAME_TRADITIONAL_FULL = 10.737


@dataclass(frozen=True)
class MOSSimConfig:
    """Parameters of a simulated MOS visit (three nods)."""

    readout: str = "auto"                 # full frame: NRSIRS2; cut-down: traditional (see notes)
    ny: int = 2048
    nx: int = 2048
    substrt1: int = 1
    substrt2: int = 1
    subarray: str = "FULL"
    n_slitlets: int = 36                  # a few dozen 3-shutter slitlets ...
    n_sky: int = 8                        # ... of which this many sky-only
    pitch: int = 6                        # detector rows per shutter along the slit
    open_rows: float = 4.6                # open part of a shutter (rows); the rest is bar
    nx_spec: int = 430                    # spectrum length (columns)
    dx: int = 6                           # column shift per shutter row
    lam0: float = 0.6                     # µm at the spectrum's first column
    lam1: float = 5.3                     # µm at its last
    ngroups: int = 7
    tframe: float = TFRAME_TRADITIONAL_FULL  # IRS2: TFRAME_IRS2_FULL (see resolved_readout)
    readpatt: str = "NRSRAPID"               # IRS2: NRSIRS2 (see resolved_readout)
    gain: float = 1.0                     # e-/DN
    read_noise_cds: float = 9.0           # DN
    bias: float = 12000.0
    sky_dn_s: float = 0.6                 # sky per pixel at 1 µm (DN/s); rises as lam**0.5
    response: float = 6.0                 # DN/s per µJy (whole column) at 2.5 µm
    bar_depth: float = 0.55               # truth: shadow depth at a bar
    bar_width: float = 0.75               # truth: Gaussian sigma of the shadow (rows)
    ref_bar_depth: float = 0.42           # the reference profile's (wrong) depth ...
    ref_bar_width: float = 1.05           # ... and width
    seed: int = 0
    detector: str = "NRS1"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.readout not in MOS_READOUTS:
            raise ValueError(f"MOSSimConfig.readout {self.readout!r}: one of {MOS_READOUTS}")
        if self.readout == "NRSIRS2" and not self.full_frame:
            raise ValueError(f"MOSSimConfig.readout 'NRSIRS2' is full frame only; got "
                             f"{self.ny}x{self.nx} ({self.subarray})")

    @property
    def tgroup(self) -> float:
        return self.tframe

    @property
    def full_frame(self) -> bool:
        return (self.ny, self.nx, self.substrt1, self.substrt2) == (2048, 2048, 1, 1)

    @property
    def irs2(self) -> bool:
        """True when the exposures are written in IRS2 (``readout`` resolved)."""
        if self.readout == "auto":
            return self.full_frame
        return self.readout == "NRSIRS2"


def resolved_readout(cfg: MOSSimConfig) -> MOSSimConfig:
    """``cfg`` with ``readout`` resolved to ``"NRSIRS2"`` or ``"traditional"``; for IRS2
    READPATT NRSIRS2 and the IRS2 full-frame TFRAME (unless set to other values than the
    traditional defaults)."""
    from dataclasses import replace

    if not cfg.irs2:
        return replace(cfg, readout="traditional")
    from nirbeam.sim.irs2 import TFRAME_IRS2_FULL

    return replace(cfg, readout="NRSIRS2",
                   readpatt="NRSIRS2" if cfg.readpatt == "NRSRAPID" else cfg.readpatt,
                   tframe=TFRAME_IRS2_FULL if cfg.tframe == TFRAME_TRADITIONAL_FULL else cfg.tframe)


MOS_PRESETS = {
    # the full frame: IRS2 (NRSIRS2) as real MOS exposures
    "mos": MOSSimConfig(),
    # cut-down frames are traditional readout (IRS2 is full frame only; real MOS data are
    # full frame IRS2): a test convenience, not a real layout
    # a cut-down frame for tests: 12 slitlets (4 sky) on 300 x 180 pixels
    "mos-small": MOSSimConfig(ny=300, nx=180, substrt1=5, substrt2=5,
                              subarray="SUBMOS", n_slitlets=12, n_sky=4, nx_spec=150, dx=3,
                              ngroups=7, sky_dn_s=0.6, response=6.0),
    # smaller still, for the end-to-end test: 6 slitlets (3 sky) on 160 x 120 pixels
    "mos-test": MOSSimConfig(ny=160, nx=120, substrt1=5, substrt2=5,
                             subarray="SUBMOS", n_slitlets=6, n_sky=3, nx_spec=100, dx=3,
                             ngroups=7, sky_dn_s=1.0, response=6.0),
}


@dataclass(frozen=True)
class MOSSimResult:
    outdir: Path
    uncal: tuple[Path, ...]
    msa: Path
    refs_dir: Path
    truth_file: Path
    config: MOSSimConfig


def _ncdf(z):
    return 0.5 * (1.0 + np.vectorize(math.erf)(np.asarray(z, float) / math.sqrt(2.0)))


def bar_shadow_profile(n_rows: int, margin: int, pitch: int, open_rows: float, depth: float,
                       width: float, n_shutters: int = 3, closed=()) -> np.ndarray:
    """Transmission of a slitlet's rows (float64, (n_rows,)): ``n_shutters`` shutters of
    ``pitch`` rows starting ``margin`` rows into the box; each open shutter passes its
    central ``open_rows`` (pixel-integrated edges), the bars between two open shutters
    cast a Gaussian shadow of ``depth`` and sigma ``width`` rows; shutters in ``closed``
    (0-based) pass nothing."""
    y = np.arange(n_rows, dtype=float)
    t = np.zeros(n_rows)
    for s in range(n_shutters):
        if s in closed:
            continue
        c = margin + pitch * s + (pitch - 1) / 2.0   # shutter centre (row)
        lo, hi = c - open_rows / 2, c + open_rows / 2
        t += np.clip(np.minimum(y + 0.5, hi) - np.maximum(y - 0.5, lo), 0, 1)
    for s in range(n_shutters - 1):
        if s in closed or s + 1 in closed:
            continue
        yb = margin + pitch * (s + 1) - 0.5           # bar between shutters s and s+1
        # the gap between the open parts is filled (the bar is thinner than the gap seen
        # at the detector) and then shadowed
        gap = np.clip(np.minimum(y + 0.5, yb + (pitch - open_rows) / 2)
                      - np.maximum(y - 0.5, yb - (pitch - open_rows) / 2), 0, 1)
        t += gap
        t *= 1.0 - depth * np.exp(-0.5 * ((y - yb) / width) ** 2)
    return np.clip(t, 0.0, 1.0)


def _layout(cfg: MOSSimConfig, rng):
    """Slitlets (shutter columns, row, kind), the failed-open and stuck-closed shutters."""
    margin = 1
    # three shutters + one closed shutter between slitlets: 4 pitches per slitlet
    n_fit = (cfg.ny - 2 * 4 - 2 * margin - 3 * cfg.pitch) // (4 * cfg.pitch) + 1
    if n_fit < cfg.n_slitlets:
        raise ValueError(f"{cfg.ny} rows hold {n_fit} slitlets, asked for {cfg.n_slitlets}")
    y0 = 4 + margin + (cfg.pitch - 1) / 2.0  # row of shutter column 1's centre
    slits = []
    kinds = ["sky"] * cfg.n_sky + ["point", "extended"] * cfg.n_slitlets
    order = rng.permutation(cfg.n_slitlets)
    max_rows = max(1, (cfg.nx - 8 - cfg.nx_spec) // max(cfg.dx, 1))
    for i in range(cfg.n_slitlets):
        col = 1 + 4 * i  # a closed shutter between slitlets
        kind = kinds[order[i]] if order[i] < cfg.n_sky else ("point" if order[i] % 2 else "extended")
        row = 1 + int(rng.integers(0, max_rows))
        slits.append({"slitlet_id": i + 1, "columns": [col, col + 1, col + 2], "row": row,
                      "quadrant": 1, "kind": kind})
    sky_ids = [s["slitlet_id"] for s in slits if s["kind"] == "sky"]
    # a failed-open shutter: in the gap after a science slitlet (column c+3)
    sci = [s for s in slits if s["kind"] != "sky"]
    fo_slit = sci[len(sci) // 2]
    failed_open = {"quadrant": 1, "row": fo_slit["row"], "column": fo_slit["columns"][-1] + 1}
    # a stuck-closed shutter: the last shutter of one sky slitlet
    stuck_slit = next(s for s in slits if s["slitlet_id"] == sky_ids[-1])
    stuck = {"quadrant": 1, "row": stuck_slit["row"], "column": stuck_slit["columns"][-1],
             "slitlet_id": stuck_slit["slitlet_id"]}
    return slits, failed_open, stuck, y0, margin


def _wave(cfg):
    k = (cfg.lam1 - cfg.lam0) / (cfg.nx_spec - 1)
    return (cfg.lam0, k)


def response_curve(lam, cfg: MOSSimConfig):
    """DN/s per µJy (whole column) at ``lam`` µm: a smooth throughput."""
    lam = np.asarray(lam, float)
    return cfg.response * np.exp(-0.5 * ((lam - 2.5) / 1.6) ** 2) + 0.15 * cfg.response


def _source_spectrum(rng, kind, lam_fine):
    a = float(rng.uniform(2.0, 6.0))             # µJy at 2 µm
    beta = float(rng.uniform(-1.2, 0.8))
    f = a * (lam_fine / 2.0) ** beta
    lines = []
    for _ in range(int(rng.integers(1, 4))):
        lc = float(rng.uniform(1.0, 5.0))
        amp = float(rng.uniform(0.5, 2.0)) * a
        sig = float(rng.uniform(0.02, 0.04))
        f = f + amp * np.exp(-0.5 * ((lam_fine - lc) / sig) ** 2)
        lines.append({"center_um": lc, "peak_ujy": amp, "sigma_um": sig})
    return f, {"continuum_ujy_at_2um": a, "beta": beta, "lines": lines,
               "sigma_px": 1.0 if kind == "point" else 2.4}


def simulate_mos(outdir, preset: str = "mos", seed: int | None = None, **over) -> MOSSimResult:
    """Write a simulated MOS visit (see the module notes) into ``outdir``."""
    from dataclasses import replace

    cfg = MOS_PRESETS[preset]
    if seed is not None:
        over["seed"] = seed
    cfg = resolved_readout(replace(cfg, **over) if over else cfg)
    out = Path(outdir)
    refs = out / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([cfg.seed, 17])
    slits, failed_open, stuck, y0, margin = _layout(cfg, rng)
    ny, nx, P = cfg.ny, cfg.nx, cfg.pitch
    wave = _wave(cfg)
    geom = {"detector": cfg.detector, "y0": y0, "pitch": float(P), "x0": 4, "dx": cfg.dx,
            "nx_spec": cfg.nx_spec, "wave": list(wave), "open_rows": cfg.open_rows,
            "source": "msa_geometry.json (nirbeam simulator)"}
    (refs / "msa_geometry.json").write_text(json.dumps(geom, indent=1))
    # --- the scene: per-column wavelengths, sky, sources ------------------------------
    lam_col = wave[0] + wave[1] * np.arange(cfg.nx_spec)
    edges = np.concatenate([[lam_col[0] - wave[1] / 2], lam_col + wave[1] / 2])
    sub = 16
    lam_fine = np.linspace(edges[0], edges[-1], cfg.nx_spec * sub + 1)
    lam_mid = 0.5 * (lam_fine[1:] + lam_fine[:-1])
    resp = response_curve(lam_col, cfg)
    sky_col = cfg.sky_dn_s * np.sqrt(lam_col)               # DN/s per pixel
    n_box = 3 * P + 2 * margin
    t_true = bar_shadow_profile(n_box, margin, P, cfg.open_rows, cfg.bar_depth, cfg.bar_width)
    t_ref = bar_shadow_profile(n_box, margin, P, cfg.open_rows, cfg.ref_bar_depth, cfg.ref_bar_width)
    rate = np.zeros((3, ny, nx))
    truth_sources = {}
    sources_table = []
    yrows = np.arange(n_box, dtype=float)
    for s in slits:
        ybox0 = int(np.floor(y0 + P * (s["columns"][0] - 1) - (P - 1) / 2.0 + 0.5)) - margin
        xs = 4 + cfg.dx * (s["row"] - 1)
        closed = (2,) if s["slitlet_id"] == stuck["slitlet_id"] else ()
        t = t_true if not closed else bar_shadow_profile(n_box, margin, P, cfg.open_rows,
                                                         cfg.bar_depth, cfg.bar_width, closed=closed)
        img = t[:, None] * sky_col[None, :]
        s["box"] = [ybox0, ybox0 + n_box, xs, xs + cfg.nx_spec]
        if s["kind"] == "sky":
            for k in range(3):
                rate[k, ybox0:ybox0 + n_box, xs:xs + cfg.nx_spec] += img
            continue
        sid = 1000 + s["slitlet_id"]
        f_fine, par = _source_spectrum(rng, s["kind"], lam_mid)
        f_col = f_fine.reshape(cfg.nx_spec, sub).mean(axis=1)  # bin average (µJy)
        ypos = float(rng.uniform(-0.15, 0.15))                  # in the shutter (pitch units)
        s.update(source_id=sid, ypos=ypos)
        sig = par["sigma_px"]
        for k, sh in enumerate((1, 0, 2)):                      # nod: shutter of the source
            yc = margin + P * sh + (P - 1) / 2.0 + ypos * P
            prof = _ncdf((yrows + 0.5 - yc) / sig) - _ncdf((yrows - 0.5 - yc) / sig)
            src = prof[:, None] * (f_col * resp)[None, :]
            rate[k, ybox0:ybox0 + n_box, xs:xs + cfg.nx_spec] += img + t[:, None] * src
        truth_sources[str(sid)] = {"wavelength_um": lam_mid.tolist(), "flux_ujy": f_fine.tolist(),
                                   "slitlet_id": s["slitlet_id"], "kind": s["kind"], **par,
                                   "source_in_shutter_y": ypos}
        sources_table.append((sid, f"{PROGRAM}_{sid}", float(rng.uniform(0.1, 0.9))))
    # failed-open shutter: sky through one unplanned shutter
    yfo = y0 + P * (failed_open["column"] - 1)
    xfo = 4 + cfg.dx * (failed_open["row"] - 1)
    ysh = np.arange(ny, dtype=float)
    tfo = np.clip(np.minimum(ysh + 0.5, yfo + cfg.open_rows / 2) - np.maximum(ysh - 0.5, yfo - cfg.open_rows / 2), 0, 1)
    rows_fo = np.flatnonzero(tfo > 0)
    for k in range(3):
        rate[k][np.ix_(rows_fo, np.arange(xfo, xfo + cfg.nx_spec))] += tfo[rows_fo, None] * sky_col[None, :]
    failed_open["detector_rows"] = [int(rows_fo[0]), int(rows_fo[-1]) + 1]
    # --- files --------------------------------------------------------------------------
    msa = out / MSA_NAME
    _write_msa(msa, slits, sources_table)
    ref_paths = _write_refs(cfg, refs, t_ref, n_box, margin, lam_col, resp)
    if cfg.irs2:  # the REFPIX reference that fits the simulated IRS2 readout noise
        from nirbeam.sim.irs2 import write_matched_refpix

        ref_paths["refpix"] = write_matched_refpix(refs, cfg.detector, cfg.readpatt)
    uncal = []
    for k in range(3):
        uncal.append(_write_uncal(cfg, out, k + 1, rate[k], np.random.default_rng([cfg.seed, 99, k])))
    truth = {"sources": truth_sources, "bar_shadow": {"rows": n_box, "margin": margin,
                                                      "truth": t_true.tolist(), "reference": t_ref.tolist()},
             "failed_open": failed_open, "stuck_closed": stuck,
             "slitlets": [{k: v for k, v in s.items()} for s in slits],
             "config": {k: v for k, v in asdict(cfg).items() if k != "extra"},
             "note": "truth of the simulation; the pipeline never reads this file"}
    truth_file = out / "truth.json"
    truth_file.write_text(json.dumps(truth))
    return MOSSimResult(out, tuple(uncal), msa, refs, truth_file, cfg) if ref_paths else None


def simulate_mos_cli(args) -> int:
    """``nirbeam simulate OUTDIR --preset mos`` (or another MOS preset)."""
    from nirbeam.stream.config import ConfigError

    if args.preset not in MOS_PRESETS:
        raise ConfigError(f"--preset {args.preset!r}: expected one of {sorted(MOS_PRESETS)} for MOS")
    res = simulate_mos(args.outdir, preset=args.preset, seed=args.seed)
    print(f"simulated {args.preset} ({res.config.n_slitlets} slitlets, 3 nods, "
          f"{res.config.ny}x{res.config.nx} {res.config.readout}) into {res.outdir}")
    print(f"  msa:    {res.msa.name}")
    for p in res.uncal:
        print(f"  uncal:  {p.name}")
    print(f"  refs:   {res.refs_dir}")
    print(f"  truth:  {res.truth_file.name}")
    print(f"run: nirbeam run {res.outdir} --refs {res.refs_dir} --out OUT")
    return 0


def _write_msa(path: Path, slits, sources) -> Path:
    rows = []
    for s in slits:
        for dith, src_sh in ((1, 1), (2, 0), (3, 2)):
            for j, col in enumerate(s["columns"]):
                is_src = s["kind"] != "sky" and j == src_sh
                rows.append((s["slitlet_id"], 1, s["quadrant"], s["row"], col,
                             s.get("source_id", 0) if s["kind"] != "sky" else 0,
                             "N" if is_src else "Y", "OPEN",
                             0.5 if is_src else np.nan, 0.5 + s.get("ypos", 0.0) if is_src else np.nan,
                             dith, "Y" if is_src else "N"))
    a = list(zip(*rows, strict=True))
    cols = [fits.Column("slitlet_id", "I", array=np.array(a[0], np.int16)),
            fits.Column("msa_metadata_id", "I", array=np.array(a[1], np.int16)),
            fits.Column("shutter_quadrant", "I", array=np.array(a[2], np.int16)),
            fits.Column("shutter_row", "I", array=np.array(a[3], np.int16)),
            fits.Column("shutter_column", "I", array=np.array(a[4], np.int16)),
            fits.Column("source_id", "J", array=np.array(a[5], np.int32)),
            fits.Column("background", "1A", array=np.array(a[6])),
            fits.Column("shutter_state", "6A", array=np.array(a[7])),
            fits.Column("estimated_source_in_shutter_x", "E", array=np.array(a[8], np.float32)),
            fits.Column("estimated_source_in_shutter_y", "E", array=np.array(a[9], np.float32)),
            fits.Column("dither_point_index", "I", array=np.array(a[10], np.int16)),
            fits.Column("primary_source", "1A", array=np.array(a[11]))]
    img = np.zeros((730, 342))
    for s in slits:
        for col in s["columns"]:
            img[col - 1, s["row"] - 1] = 1
    ph = fits.Header()
    for k, v in (("ORIGIN", "NIRBEAM"), ("TELESCOP", "JWST"), ("INSTRUME", "NIRSPEC"),
                 ("FILENAME", path.name), ("PROGRAM", PROGRAM), ("VISIT", "001"), ("OBSERVTN", "001"),
                 ("MSACFG10", 1)):
        ph[k] = v
    src = list(zip(*sources, strict=True)) if sources else [[], [], []]
    scol = [fits.Column("program", "J", array=np.full(len(sources), int(PROGRAM), np.int32)),
            fits.Column("source_id", "J", array=np.array(src[0], np.int32)),
            fits.Column("source_name", "20A", array=np.array(src[1])),
            fits.Column("alias", "31A", array=np.array([str(v) for v in src[0]])),
            fits.Column("catalog_id", "20A", array=np.array(["SIM"] * len(sources))),
            fits.Column("ra", "E", array=np.zeros(len(sources), np.float32)),
            fits.Column("dec", "E", array=np.zeros(len(sources), np.float32)),
            fits.Column("preimage_id", "30A", array=np.array(["None"] * len(sources))),
            fits.Column("stellarity", "D", array=np.array(src[2], float))]
    fits.HDUList([fits.PrimaryHDU(header=ph), fits.ImageHDU(img, name="SHUTTER_IMAGE"),
                  fits.BinTableHDU.from_columns(cols, name="SHUTTER_INFO"),
                  fits.BinTableHDU.from_columns(scol, name="SOURCE_INFO")]).writeto(path, overwrite=True)
    return path


def _ref_common(cfg):
    return reference_common(cfg.detector, "NRS_MSASPEC", cfg.subarray, cfg.substrt1, cfg.substrt2,
                            cfg.nx, cfg.ny, detector_keys=False)


def _read_noise_ref(cfg) -> float:
    """CDS read noise of the READNOISE reference (DN): the signal chain's, with the IRS2
    readout's added in quadrature for IRS2 (:func:`nirbeam.sim.irs2.cds_read_noise`)."""
    if not cfg.irs2:
        return cfg.read_noise_cds
    from nirbeam.sim.irs2 import cds_read_noise

    return float(np.hypot(cfg.read_noise_cds, cds_read_noise()))


def _write_refs(cfg, refs: Path, t_ref, n_box, margin, lam_col, resp) -> dict:
    f32 = np.float32
    ny, nx = cfg.ny, cfg.nx
    com = _ref_common(cfg)
    z = np.zeros((ny, nx), np.uint32)
    mask = z.copy()
    if cfg.subarray == "FULL":
        mask[:4, :] = mask[-4:, :] = mask[:, :4] = mask[:, -4:] = dqflags.REFERENCE_PIXEL

    def p(t):
        return reference_path(refs, t, cfg.detector, "mos")

    coeffs = np.zeros((2, ny, nx), f32)
    coeffs[1] = 1.0
    out = write_detector_refs(p, com, {
        "superbias": ({"DESCRIP": "Simulated superbias"},
                      {"SCI": np.full((ny, nx), cfg.bias, f32), "ERR": np.ones((ny, nx), f32), "DQ": z}),
        "dark": ({"READPATT": cfg.readpatt, "NFRAMES": 1, "GROUPGAP": 0, "NGROUPS": cfg.ngroups,
                  "NINTS": 1, "DESCRIP": "Simulated dark (none)"},
                 {"SCI": np.zeros((cfg.ngroups, ny, nx), f32),
                  "ERR": np.zeros((cfg.ngroups, ny, nx), f32), "DQ": z}),
        "linearity": ({"NCOEFFS": 2, "DESCRIP": "Simulated linearity (linear)"},
                      {"COEFFS": coeffs, "DQ": z}),
        "saturation": ({"DESCRIP": "Simulated saturation"},
                       {"SCI": np.full((ny, nx), 60000.0, f32), "DQ": z}),
        "readnoise": ({"DESCRIP": "Simulated CDS read noise"},
                      {"SCI": np.full((ny, nx), _read_noise_ref(cfg), f32)}),
        "gain": ({"DESCRIP": "Simulated gain"}, {"SCI": np.full((ny, nx), cfg.gain, f32)}),
        "mask": ({"DESCRIP": "Simulated mask"}, {"DQ": mask}),
    })
    # flux calibration: DN/s (a column's sum) per µJy, against wavelength
    ph = reference_primary({**com, "REFTYPE": "PHOTOM", "DESCRIP": "Simulated MOS response (DN/s per uJy)"})
    tab = fits.BinTableHDU.from_columns([fits.Column("WAVELENGTH", "D", unit="um", array=lam_col),
                                         fits.Column("RELRESP", "D", unit="DN/s/uJy", array=resp)],
                                        name="PHOTOM")
    out["photom"] = p("photom")
    fits.HDUList([ph, tab]).writeto(out["photom"], overwrite=True)
    ph = reference_primary({**com, "REFTYPE": "BARSHADOW", "DESCRIP": "Simulated 1x3 bar-shadow reference",
                            "MARGIN": margin, "PITCH": cfg.pitch})
    out["barshadow"] = p("barshadow")
    fits.HDUList([ph, fits.ImageHDU(np.asarray(t_ref, f32)[:, None], name="DATA1X3")]
                 ).writeto(out["barshadow"], overwrite=True)
    return out


def _write_uncal(cfg, out: Path, nod: int, rate, rng) -> Path:
    ny, nx, G = cfg.ny, cfg.nx, cfg.ngroups
    name = f"jw{PROGRAM}001001_03101_{nod:05d}_{cfg.detector.lower()}_uncal.fits"
    t0 = 60000.0 + 0.02 * (nod - 1)
    dur = G * cfg.tgroup + cfg.tframe
    times = {"int_start_MJD_UTC": np.array([t0]), "int_mid_MJD_UTC": np.array([t0 + dur / 2 / 86400]),
             "int_end_MJD_UTC": np.array([t0 + dur / 86400])}
    for a, b in (("start", "start"), ("mid", "mid"), ("end", "end")):
        times[f"int_{a}_BJD_TDB"] = times[f"int_{b}_MJD_UTC"] + 0.0008
    h = fits.Header()
    cards = {
        "DATE": "2026-01-01T00:00:00", "ORIGIN": "NIRBEAM", "FILENAME": name, "FILETYPE": "uncalibrated",
        "DATAMODL": "Level1bModel", "TELESCOP": "JWST", "SIMULATD": True, "INSTRUME": "NIRSPEC",
        "DETECTOR": cfg.detector, "FILTER": "CLEAR", "GRATING": "PRISM", "EXP_TYPE": "NRS_MSASPEC",
        "TSOVISIT": False, "PROGRAM": PROGRAM, "OBSERVTN": "001", "VISIT": "001", "EXPOSURE": str(nod),
        "MSAMETFL": MSA_NAME, "MSAMETID": 1, "PATT_NUM": nod, "NUMDTHPT": 3, "PATTTYPE": "NONE",
        "NOD_TYPE": "3-SHUTTER-SLITLET", "PATTSTRT": 1, "EXPSTART": t0, "EXPEND": t0 + dur / 86400,
        "READPATT": cfg.readpatt, "NINTS": 1, "INTSTART": 1, "INTEND": 1, "NGROUPS": G, "NFRAMES": 1,
        "GROUPGAP": 0, "NRESETS": 1, "TFRAME": cfg.tframe, "TGROUP": cfg.tgroup,
        "EFFINTTM": cfg.tgroup * (G - 1), "EFFEXPTM": cfg.tgroup * (G - 1), "EXSEGNUM": 1, "EXSEGTOT": 1,
        "SUBARRAY": cfg.subarray, "SUBSTRT1": cfg.substrt1, "SUBSTRT2": cfg.substrt2,
        "SUBSIZE1": nx, "SUBSIZE2": ny, "FASTAXIS": 2, "SLOWAXIS": 1
    }
    for k, v in cards.items():
        h[k] = v
    w = UncalSegmentWriter(out / name, h, (1, G, ny, nx), "NRSIRS2" if cfg.irs2 else "TRADITIONAL",
                           detector=cfg.detector, seed=[cfg.seed, 98, nod])
    # cumulative Poisson electrons per group, read noise per read (CDS noise / sqrt 2)
    e_rate = np.clip(rate, 0, None) * cfg.gain * cfg.tgroup
    acc = np.zeros((ny, nx))
    rn = cfg.read_noise_cds / math.sqrt(2.0)
    ramp = np.empty((G, ny, nx), np.uint16)
    for g in range(G):
        acc += rng.poisson(e_rate)
        ramp[g] = np.clip(np.round(cfg.bias + acc / cfg.gain + rng.normal(0.0, rn, (ny, nx))), 0, 65535)
    w.write(ramp)
    w.close([group_table_hdu(_Cfg(G, 1, cfg.tframe), np.array([1]), times, cfg.tgroup, ny, nx), int_times_hdu(times)])
    return out / name


@dataclass(frozen=True)
class _Cfg:
    ngroups: int
    nresets: int = 1
    tframe: float = 10.737
