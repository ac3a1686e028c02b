"""The fixed-slit (FS) batch pipeline on Beam: uncal nod sets -> x1d.fits, spec1d ECSVs,
per-slit cut-outs (zarr) and plots.

1. Stage 1 (:mod:`nirbeam.pipelines.common`): detector1 of every integration on Beam,
   1/f cleaning with every slit masked, one rate per exposure (= nod position).
2. Per slit (one Beam element per nod set and slit, :func:`process_slit`): cut-outs of
   the nods' rates with their wavelength and along-slit maps, then
   * the primary slit's point source (FXD_SLIT): the nod centres refined by a profile
     fit (the PSF reference's profile, :func:`~nirbeam.transforms.slit2d.fit_nod_centers`),
     the background common to all nods and the source fitted jointly in every nod
     (:func:`~nirbeam.transforms.slit2d.joint_nod_fit`: no over-subtraction), optimal
     extraction of each nod on that background, nods combined by inverse variance. Side by
     side, for comparison: jwst's nod-difference background with box extraction
     (aperture-corrected with the same profile) -- the method that over-subtracts;
   * secondary slits (extended sources): the source found in the nod differences, masked
     in every nod, the background fitted on the rest
     (:func:`~nirbeam.transforms.slit2d.masked_background`), box extraction over the
     whole slit.
   Flux calibration from the PHOTOM reference (DN/s per uJy per column, the column's own
   dispersion, and the point-source across-slit transmission): uJy.
3. Products: ``x1d.fits`` (one EXTRACT1D per source), ``spec1d_<source_id>.ecsv``,
   ``cubes.zarr/<first exposure>_<det>/<slit>/cutouts``, ``plots/fs_<slit>.png``,
   ``fs.json`` (every method's spectrum, fitted nod centres, detections).

Size note: over 600 lines on purpose: the FS batch pipeline from rates to products; the kernels are in transforms/slit2d.py.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field

import apache_beam as beam
import numpy as np
from astropy.io import fits

from nirbeam import __version__, dqflags
from nirbeam.core.spectra import Spectrum1D
from nirbeam.modes import mode_for
from nirbeam.modes.fs import FS, FS_SLITS, primary_slit, source_id_of
from nirbeam.pipelines.common import exposure_rate, load_exposure_rate, run_stage1, scan_inputs
from nirbeam.sinks import fs, zarr_store
from nirbeam.sinks.spec1d import spec1d_name, write_spec1d_ecsv, write_x1d
from nirbeam.sources.fs_refs import (
    FsReferenceError,
    find_fs_references,
    read_fsgeom,
    read_photom,
    read_psf,
)
from nirbeam.stream.runners import RunnerSpec, make_runner
from nirbeam.transforms import slit2d

__all__ = ["FsOptions", "SlitJob", "process_slit", "run_fs", "FsRunResult", "scene_mask_of"]

log = logging.getLogger("nirbeam")

CUTOUTS = "cutouts"
"""Store stage of a slit's cut-outs: ``<first exposure>_<det>/<slit>/cutouts`` (rate, var,
dq per nod; wavelength and along-slit maps; the backgrounds and the joint model)."""


@dataclass(frozen=True)
class FsOptions:
    """FS settings (``[fs]`` in the run config).

    background : ``"joint"`` (default: source and common background fitted in all nods)
        or ``"nod"`` (jwst's nod difference) for the point source's product spectrum;
        both are always measured and reported in ``fs.json``.
    box_half_width_px : half-width of the box about the trace for the nod-difference box;
        None: 3 px, or half the closest nods' separation when that is smaller (a box that
        reaches another nod's core subtracts it whole).
    fit_centers : refine the header nod offsets (YOFFSET) by a profile fit.
    center_search_arcsec : half-range of that search.
    mask_min_arcsec : smallest half-width of an extended source's mask.
    detect_sigma : an extended source is extracted when its nod-difference peak is this
        many sigma above the noise.
    mask_widths : an extended source's mask half-width in units of its RMS width.
    background_order : polynomial order along the slit of the masked background's fill.
    min_response : columns whose PHOTOM response is below this fraction of its peak (the
        band's edges) are flagged DO_NOT_USE.
    """

    background: str = "joint"
    box_half_width_px: float | None = None
    fit_centers: bool = True
    center_search_arcsec: float = 0.05
    mask_min_arcsec: float = 0.5
    detect_sigma: float = 8.0
    mask_widths: float = 4.5
    min_response: float = 0.1
    background_order: int = 0
    plots: bool = True

    def __post_init__(self):
        if self.background not in ("joint", "nod"):
            raise ValueError(f"[fs] background = {self.background!r}: 'joint' or 'nod'")

    @classmethod
    def from_dict(cls, d: dict | None) -> FsOptions:
        d = dict(d or {})
        names = set(cls.__dataclass_fields__)
        bad = sorted(set(d) - names)
        if bad:
            raise ValueError(f"[fs]: unknown key(s) {bad}; known: {sorted(names)}")
        return cls(**d)


@dataclass(frozen=True)
class _GeomSettings:
    geometry: object


@dataclass(frozen=True, eq=False)
class SlitJob:
    """One slit of one nod set: where its rates are, its maps, nod centres, references."""

    root: str
    nodset: str
    slit: str
    groups: tuple[str, ...]
    box: tuple[int, int, int, int]  # y0, y1, x0, x1 in the science array
    wavelength: np.ndarray
    along_slit: np.ndarray
    length: float
    width: float
    centers: tuple[float, ...]
    primary: bool
    refs: dict
    options: FsOptions
    detector: str
    exposure: str
    store_group: str = ""  # <first exposure>_<det>/<slit> (ModePlan.store_group)


def scene_mask_of(geometry, meta, margin_arcsec: float = 0.3, dilate: int = 2) -> np.ndarray:
    """bool (ny, nx): every slit's footprint (slit length + margin, grown by ``dilate``
    rows) on the exposure's science array: the pixels 1/f cleaning must not use."""
    ny, nx = meta.image_shape
    m = np.zeros((ny, nx), bool)
    for sm in geometry.slits.values():
        w = sm.window(meta.substrt1, meta.substrt2, nx, ny)
        if w is None:
            continue
        (y0, y1, x0, x1), _, s = w
        inside = np.abs(np.nan_to_num(s, nan=1e9)) <= sm.length / 2 + margin_arcsec
        m[y0:y1, x0:x1] |= inside
    if dilate:
        g = m.copy()
        for d in range(1, dilate + 1):
            g[d:] |= m[:-d]
            g[:-d] |= m[d:]
        m = g
    return m


def _trace_wavelength(lam, s, center):
    """Wavelength per column at along-slit position ``center`` (linear between rows)."""
    ny, nx = lam.shape
    out = np.full(nx, np.nan)
    for x in range(nx):
        ok = np.isfinite(s[:, x]) & np.isfinite(lam[:, x])
        if ok.sum() < 2:
            continue
        o = np.argsort(s[ok, x])
        sv, lv = s[ok, x][o], lam[ok, x][o]
        if sv[0] <= center <= sv[-1]:
            out[x] = np.interp(center, sv, lv)
    return out


def _calibrate(job: SlitJob, flux, var, dq, wl, point: bool, photom):
    """DN/s per column -> uJy with the PHOTOM reference."""
    dl = np.gradient(np.where(np.isfinite(wl), wl, np.nan))
    resp = photom.response(wl, dl)
    if point:
        resp = resp * photom.point_transmission(job.slit, wl)
    # columns where the response is below min_response of its peak (the band's edges)
    # are not measured: the flux there is noise divided by almost nothing
    peak = np.nanmax(photom.relresp) * (np.nanmedian(np.abs(dl)) / photom.dispersion)
    ok = np.isfinite(resp) & (resp > job.options.min_response * peak)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(ok, flux / resp, np.nan)
        e = np.where(ok, np.sqrt(var) / resp, np.nan)
    q = np.where(ok & np.isfinite(f), dq, dq | dqflags.DO_NOT_USE).astype(np.uint32)
    return f, e, q


def _cut(job: SlitJob):
    y0, y1, x0, x1 = job.box
    cut = [[a[y0:y1, x0:x1] for a in load_exposure_rate(job.root, g, parts=True)]
           for g in job.groups]
    R, V, Q, VR, VP = (np.stack([c[i] for c in cut]) for i in range(5))
    lo, hi = slit2d.pixel_edges(job.along_slit)  # a pixel is outside when all of it is
    half = job.length / 2
    with np.errstate(invalid="ignore"):
        outside = ~np.isfinite(job.along_slit) | ~(np.minimum(lo, hi) < half) | ~(
            np.maximum(lo, hi) > -half)
    Q = Q | np.where(outside, dqflags.DO_NOT_USE | dqflags.NON_SCIENCE, 0).astype(np.uint32)[None]
    return R, V, Q, VR, VP


def process_slit(job: SlitJob) -> dict:
    """Extract one slit of one nod set (see the module notes); write its cut-outs into the
    store; return its spectra (as plain dicts) and measurements."""
    from nirbeam.sources.fs_refs import FsPhotom, PsfProfile  # noqa: F401 - types only

    psf, photom = job.refs["psf"], job.refs["photom"]
    R, V, Q, VR, VP = _cut(job)
    s, lam = job.along_slit, job.wavelength
    half = job.length / 2
    sin = np.where(np.abs(np.nan_to_num(s, nan=1e9)) <= half + 0.5, s, np.nan)
    centers = np.asarray(job.centers, float)
    out: dict = {"slit": job.slit, "nodset": job.nodset, "centers_header": list(job.centers),
                 "primary": job.primary, "spectra": {}, "integrated": {}}
    arrays = {"rate": R.astype(np.float32), "var": V.astype(np.float32), "dq": Q,
              "wavelength": lam.astype(np.float32), "along_slit": s.astype(np.float32)}
    nod_b, nod_bv = slit2d.nod_difference_background(R, V, Q)
    arrays["background_nod"] = nod_b.astype(np.float32)
    if job.primary:
        def prof(c):
            return slit2d.profiles_from_cdf(psf.cdf, sin, lam, c, (-half, half))

        if job.options.fit_centers and len(centers) > 1:
            centers = slit2d.fit_nod_centers(R, V, Q, prof, centers,
                                             search=job.options.center_search_arcsec, steps=11)
        P = prof(centers)
        k_p = slit2d.poisson_factor(R, VP)
        fit = slit2d.joint_nod_fit(R, V, Q, P, var_rnoise=VR, poisson_k=k_p)
        wl = _trace_wavelength(lam, s, float(np.mean(centers)))
        zero = np.zeros_like(fit.background)
        opt = slit2d.optimal_extract_nods(R, V, Q | np.where(np.isfinite(fit.background), 0, 1).astype(np.uint32)[None],
                                          np.nan_to_num(fit.background), zero, P,
                                          var_rnoise=VR, var_poisson=VP)
        jf, jv, jq = slit2d.combine_nods(opt.flux, opt.flux_var, opt.dq)
        hw = job.options.box_half_width_px
        if hw is None:
            rows_per_arcsec = 1.0 / np.nanmedian(np.abs(np.gradient(s, axis=0)))
            sep = np.min(np.diff(np.sort(centers))) * rows_per_arcsec if len(centers) > 1 else 6.0
            hw = float(min(3.0, max(1.0, 0.5 * sep)))
        out["box_half_width_px"] = hw
        box = slit2d.box_extract_nods(R, V, Q, nod_b, nod_bv, sin, centers, hw, profiles=P)
        nf, nv, nq = slit2d.combine_nods(box.flux, box.flux_var, box.dq)
        arrays["background_joint"] = fit.background.astype(np.float32)
        arrays["model_joint"] = fit.model(P).astype(np.float32)
        methods = {"joint": (jf, jv, jq, "joint nod fit (common background + source in all "
                                         "nods), optimal extraction per nod"),
                   "joint_amplitude": (fit.flux, fit.flux_var, fit.dq, "joint nod fit amplitude"),
                   "nod": (nf, nv, nq, "jwst nod difference, box extraction "
                                       f"+-{hw:.2f} px, aperture-corrected")}
        main = job.options.background
        stype = "POINT"
        out["centers_fitted"] = centers.tolist()
    else:
        found = _find_extended(R, V, Q, sin, centers, job.options)
        out["detection"] = found
        wl = _trace_wavelength(lam, s, float(np.mean(centers)) + (found.get("offset") or 0.0))
        methods = {}
        if found["detected"]:
            b, bv, filled, found = _extended_background(R, V, Q, sin, centers, found, job.options,
                                                        half)
            out["detection"] = found
            arrays["background_masked"] = b.astype(np.float32)
            f, fv, fq = _slit_sum(R - b[None], V + np.nan_to_num(bv)[None], Q, sin, half)
            cf, cv, cq = slit2d.combine_nods(f, fv, fq)
            # the nod difference, summed over the slit as well, for comparison
            f2, fv2, fq2 = _slit_sum(R - nod_b, V + np.nan_to_num(nod_bv), Q, sin, half)
            n2, nv2, nq2 = slit2d.combine_nods(f2, fv2, fq2)
            methods = {"masked": (cf, cv, cq, "background fitted with the source masked in "
                                              "every nod, box over the slit"),
                       "nod": (n2, nv2, nq2, "jwst nod difference, box over the slit")}
        main = "masked"
        stype = "EXTENDED"
    for name, (f, v, q, how) in methods.items():
        uf, ue, uq = _calibrate(job, f, v, q, wl, stype == "POINT", photom)
        out["spectra"][name] = {"wavelength": wl.tolist(), "flux": uf.tolist(),
                                "flux_error": ue.tolist(), "dq": uq.astype(int).tolist(),
                                "how": how, "source_type": stype}
    out["main"] = main if main in methods else None
    out["store_group"] = f"{job.store_group}/{CUTOUTS}"
    zarr_store.save_arrays(job.root, out["store_group"],
                           arrays, attrs={"slit": job.slit, "exposures": list(job.groups),
                                          "centers_arcsec": centers.tolist(),
                                          "box": [int(v) for v in job.box],
                                          "primary": job.primary,
                                          "source_type": stype},
                           dims={k: (("nod", "y", "x") if arrays[k].ndim == 3 else ("y", "x"))
                                 for k in arrays})
    return out


def _slit_sum(D, V, Q, s, half):
    """Sum over the slit's rows per nod and column (extended source), bad pixels skipped
    and counted in DQ."""
    inside = _in_slit_fraction(s, half) > 0
    ok = slit2d.good_pixels(D, V, Q) & inside[None]
    f = np.where(ok, D, 0.0).sum(axis=1)
    v = np.where(ok, V, 0.0).sum(axis=1)
    n_in = inside.sum(axis=0)[None]
    n_ok = ok.sum(axis=1)
    q = np.where(n_ok == n_in, 0, dqflags.DO_NOT_USE).astype(np.uint32)
    q = np.where(n_in > 0, q, dqflags.DO_NOT_USE).astype(np.uint32)
    return f, v, q


def _aligned_width(R, b, Q, V, s, centers, offset):
    """RMS width (arcsec) of the background-subtracted source, all nods aligned on it."""
    grid = np.arange(-2.0, 2.0001, 0.05)
    prof = np.zeros(grid.size)
    for k in range(R.shape[0]):
        ok = slit2d.good_pixels(R[k], V[k], Q[k]) & np.isfinite(b)
        d = np.where(ok, R[k] - b, np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            row = np.nanmedian(d, axis=1)
            u = np.nanmedian(s - centers[k] - offset, axis=1)
        g = np.isfinite(row) & np.isfinite(u)
        if g.sum() >= 3:
            o = np.argsort(u[g])
            prof += np.interp(grid, u[g][o], row[g][o], left=0, right=0)
    w = np.clip(prof, 0, None) * (np.abs(grid) <= 1.5)
    if w.sum() <= 0:
        return None
    c = np.sum(w * grid) / w.sum()
    return float(np.sqrt(np.sum(w * (grid - c) ** 2) / w.sum()))


def _in_slit_fraction(s, half):
    """Fraction (ny, nx) of each pixel's along-slit extent inside the slit (0 outside)."""
    lo, hi = slit2d.pixel_edges(s)
    a, b = np.minimum(lo, hi), np.maximum(lo, hi)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = (np.clip(b, -half, half) - np.clip(a, -half, half)) / (b - a)
    return np.where(np.isfinite(f), f, 0.0)


def _extended_background(R, V, Q, s, centers, found, opt: FsOptions, slit_half: float,
                         iterations: int = 3):
    """Masked background of an extended source, the mask grown to ``mask_widths`` times the source's
    width measured on the background-subtracted, aligned nods (a nod difference shrinks
    the apparent width), until it no longer grows."""
    half = max(opt.mask_min_arcsec, 3.0 * found["width_arcsec"])
    found = dict(found)
    frac = _in_slit_fraction(s, slit_half)
    partial = (frac < 0.999)[None]  # pixels the slit's ends cut: not sky samples
    for _ in range(iterations):
        m = slit2d.source_masks(s, centers + found["offset"], half) | partial
        b, bv, filled = slit2d.masked_background(R, V, Q, m, s, order=opt.background_order)
        b, bv = b * frac, bv * frac ** 2  # the sky a cut pixel sees
        w = _aligned_width(R, b, Q, V, s, centers, found["offset"])
        if w is None:
            break
        new = max(opt.mask_min_arcsec, opt.mask_widths * w)
        found["width_arcsec_aligned"] = w
        if new <= half * 1.05:
            break
        half = new
    found["mask_half_width"] = float(half)
    found["filled_fraction"] = float(filled.sum() / max(1, np.isfinite(s).sum()))
    return b, bv, filled, found


def _find_extended(R, V, Q, s, centers, opt: FsOptions) -> dict:
    """Find a secondary slit's source in the nod differences: the collapsed positive
    profile against the along-slit offset from each nod's centre."""
    n = R.shape[0]
    if n < 2:
        return {"detected": False, "reason": "one nod: nothing to difference"}
    b, bv = slit2d.nod_difference_background(R, V, Q)
    ok = slit2d.good_pixels(R, V, Q) & np.isfinite(b)
    grid = np.arange(-2.0, 2.0001, 0.05)
    prof = np.zeros(grid.size)
    pvar = np.zeros(grid.size)
    for k in range(n):
        d = np.where(ok[k], R[k] - b[k], np.nan)
        u = s - centers[k]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            colsum = np.nanmedian(d, axis=1)  # per row, median over columns (robust)
            urow = np.nanmedian(u, axis=1)
            vrow = np.nanmedian(V[k] + bv[k], axis=1)
        good = np.isfinite(colsum) & np.isfinite(urow)
        if good.sum() < 3:
            continue
        o = np.argsort(urow[good])
        prof += np.interp(grid, urow[good][o], colsum[good][o], left=0, right=0)
        pvar += np.interp(grid, urow[good][o], vrow[good][o] / max(1, R.shape[2]), left=0, right=0)
    sig = np.sqrt(np.maximum(pvar, 1e-30))
    snr = prof / sig
    i = int(np.argmax(snr))
    if not np.isfinite(snr[i]) or snr[i] < opt.detect_sigma:
        return {"detected": False, "peak_snr": float(snr[i]) if np.isfinite(snr[i]) else None}
    pos = np.clip(prof, 0, None)
    sel = np.abs(grid - grid[i]) <= 1.0
    w = pos * sel
    c = float(np.sum(w * grid) / np.sum(w))
    width = float(np.sqrt(np.sum(w * (grid - c) ** 2) / np.sum(w)))
    return {"detected": True, "offset": c, "width_arcsec": width, "peak_snr": float(snr[i]),
            "mask_half_width": float(max(opt.mask_min_arcsec, 3.0 * width))}


# ---------------------------------------------------------------------------------------
# driver


@dataclass(frozen=True)
class FsRunResult:
    outdir: str
    summary: dict
    exit_code: int = 0
    products: dict = field(default_factory=dict)


def _header(path: str) -> dict:
    with fits.open(path) as f:
        return {k: v for k, v in f[0].header.items() if k and isinstance(v, (str, int, float, bool))}


def _nodsets(plans) -> dict[str, list]:
    """Exposures grouped into nod sets: same program/observation/visit/detector/primary
    slit, ordered by PATT_NUM."""
    sets: dict[tuple, list] = {}
    for p in plans:
        h = _header(p.segments[0].path)
        key = (h.get("PROGRAM"), h.get("OBSERVTN"), h.get("VISIT"), p.meta.detector,
               h.get("FXD_SLIT"), h.get("PATTTYPE"))
        sets.setdefault(key, []).append((int(h.get("PATT_NUM", 1)), p, h))
    out = {}
    for _key, items in sets.items():
        items.sort(key=lambda t: t[0])
        first = items[0][1].meta
        out[f"{first.exposure}_{first.detector.lower()}_nodset"] = items
    return out


def run_fs(inputs, outdir: str, *, refs_dir: str | None = None, config: dict | None = None,
           runner: RunnerSpec | None = None, allow_standins: bool = False,
           overwrite: bool = False, progress: bool = False) -> FsRunResult:
    """Run the FS batch pipeline (see the module notes) over uncal files/folders."""
    from nirbeam.stream.settings import Settings

    t0 = time.time()
    config = dict(config or {})
    options = FsOptions.from_dict(config.pop("fs", None))
    settings = Settings.from_dict(config)
    runner = runner or RunnerSpec()
    plans = scan_inputs(inputs)
    for p in plans:
        m = mode_for(p.meta)
        if m is not FS:
            raise ValueError(f"{p.segments[0].path}: EXP_TYPE={p.meta.exp_type!r} is mode "
                             f"{m.name}, not FS: run FS exposures on their own")
    if not refs_dir:
        raise FsReferenceError("--refs: the FS pipeline needs a reference folder with FSGEOM, "
                               "PSF and PHOTOM references (and the detector1 references)")
    dets = sorted({p.meta.detector for p in plans})
    refs = {}
    for d in dets:
        paths = find_fs_references(refs_dir, d)
        refs[d] = {"geometry": read_fsgeom(paths["FSGEOM"]), "psf": read_psf(paths["PSF"]),
                   "photom": read_photom(paths["PHOTOM"]), "paths": paths}

    def mask_for(plan):
        return scene_mask_of(refs[plan.meta.detector]["geometry"], plan.meta)

    st1 = run_stage1(plans, outdir, settings, refs_dir=refs_dir, runner=runner,
                     trace_mask_for=mask_for, allow_standins=allow_standins,
                     overwrite=overwrite, progress=progress)
    root = st1.root
    for p in plans:
        exposure_rate(root, p.meta.group_name)
    t1 = time.time()
    jobs = []
    sets = _nodsets(plans)
    for name, items in sets.items():
        meta = items[0][1].meta
        r = refs[meta.detector]
        prim = primary_slit(meta)
        regions = FS.regions(meta, _GeomSettings(r["geometry"]))
        for reg in regions:
            sm = r["geometry"].slits[reg.name]
            (y0, y1, x0, x1), lam, s = sm.window(meta.substrt1, meta.substrt2, meta.subsize1,
                                                 meta.subsize2)
            jobs.append(SlitJob(root, name, reg.name, tuple(p.meta.group_name for _, p, _ in items),
                                (y0, y1, x0, x1), lam, s, sm.length, sm.width,
                                tuple(float(h.get("YOFFSET", 0.0)) for _, _, h in items),
                                reg.name == prim, {"psf": r["psf"], "photom": r["photom"]},
                                options, meta.detector, meta.exposure,
                                FS.store_group(meta, reg)))
    results = _run_slits(jobs, runner)
    t2 = time.time()
    products = _write_products(outdir, results, sets, options)
    summary = {
        "nirbeam_version": __version__, "command": "run", "mode": "fs",
        "outdir": fs.abspath(outdir), "inputs": [s.path for p in plans for s in p.segments],
        "refs_dir": refs_dir, "fs_references": {d: v["paths"] for d, v in refs.items()},
        "options": options.__dict__, "stage1": st1.per_group, "metrics": st1.metrics,
        "nodsets": {k: [p.meta.group_name for _, p, _ in v] for k, v in sets.items()},
        "slits": {f"{r['nodset']}/{r['slit']}": r for r in results},
        "products": products,
        "timings_s": {**st1.timings_s, "slits": round(t2 - t1, 3), "wall": round(time.time() - t0, 3)},
    }
    fs.write_text(fs.join(outdir, "fs.json"), json.dumps(summary, indent=1, default=str))
    fs.write_text(fs.join(outdir, "run.json"), json.dumps(summary, indent=1, default=str))
    dead = sum(v["present"] - v["completed"] for v in st1.per_group.values())
    return FsRunResult(outdir, summary, 3 if dead else 0, products)


class _ProcessSlit(beam.DoFn):
    def __init__(self):
        from apache_beam.metrics import Metrics

        self.n = Metrics.counter("nirbeam", "fs_slits.records")

    def process(self, job):
        self.n.inc()
        yield process_slit(job)


def _run_slits(jobs, runner: RunnerSpec) -> list[dict]:
    """One Beam element per slit; results come back through a temporary JSON per slit in
    the store folder (small: spectra and numbers)."""
    import os
    import tempfile

    if not jobs:
        return []
    beam_runner, options, cleanup = make_runner(runner)
    tmp = tempfile.mkdtemp(prefix="nirbeam_fs_")
    try:
        p = beam.Pipeline(runner=beam_runner, options=options)
        _ = (p | "SlitJobs" >> beam.Create(jobs, reshuffle=False)
             | "Distribute" >> beam.Reshuffle()
             | "ExtractSlit" >> beam.ParDo(_ProcessSlit())
             | "Keep" >> beam.Map(_dump, tmp))
        p.run().wait_until_finish()
        out = []
        for name in sorted(os.listdir(tmp)):
            with open(os.path.join(tmp, name)) as fh:
                out.append(json.load(fh))
        order = {(j.nodset, j.slit): i for i, j in enumerate(jobs)}
        out.sort(key=lambda r: order[(r["nodset"], r["slit"])])
        return out
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if cleanup:
            cleanup()


def _dump(res: dict, folder: str) -> None:
    import os

    with open(os.path.join(folder, f"{res['nodset']}__{res['slit']}.json"), "w") as fh:
        json.dump(res, fh, default=_jsonable)


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _spectrum(res: dict, method: str, detector: str, exposure: str) -> Spectrum1D:
    sp = res["spectra"][method]
    arr = {k: np.asarray(sp[k], float) for k in ("wavelength", "flux", "flux_error")}
    ok = np.isfinite(arr["wavelength"])
    return Spectrum1D(
        source_id_of(res["slit"]), f"{res['slit']} source", res["slit"], arr["wavelength"][ok],
        arr["flux"][ok], arr["flux_error"][ok], np.asarray(sp["dq"], np.uint32)[ok],
        flux_unit="uJy", source_type=sp["source_type"], detector=detector, exposure=exposure,
        extraction={"method": method, "how": sp["how"], "background": method,
                    "nodset": res["nodset"], "centers_arcsec": res.get("centers_fitted",
                                                                       res["centers_header"]),
                    "source_ypos": float(np.mean(res.get("centers_fitted", res["centers_header"])))},
        wavelength_source="FSGEOM reference (per-pixel map at the trace)")


def _write_products(outdir: str, results, sets, options: FsOptions) -> dict:
    spectra = []
    written = {"spec1d": []}
    header = {}
    for res in results:
        items = sets[res["nodset"]]
        meta = items[0][1].meta
        header = header or items[0][2]
        if res["main"] is None:
            continue
        sp = _spectrum(res, res["main"], meta.detector, res["nodset"])
        spectra.append(sp)
        p = fs.join(outdir, spec1d_name(sp.source_id))
        write_spec1d_ecsv(p, sp)
        written["spec1d"].append(p)
    if spectra:
        written["x1d"] = write_x1d(fs.join(outdir, "x1d.fits"), spectra, header)
    if options.plots and results:
        from nirbeam.sinks.plots_slit import plot_slit

        root = fs.join(outdir, "cubes.zarr")
        written["plots"] = []
        for res in results:
            arrays, attrs = zarr_store.load_arrays(root, res["store_group"])
            written["plots"].append(plot_slit(fs.join(outdir, "plots", f"fs_{res['slit']}.png"),
                                              res["slit"], arrays, res["spectra"], res["main"]))
    return written


#: Slits in the order the products list them (for readers of fs.json)
SLIT_ORDER = FS_SLITS


def main_fs(args, config: dict, spec: RunnerSpec) -> int:
    """``nirbeam run`` on FS inputs: run, print what was made, return the exit code."""
    res = run_fs(args.inputs, args.out, refs_dir=args.refs, config=config, runner=spec,
                 allow_standins=args.allow_standins, overwrite=args.overwrite,
                 progress=not (getattr(args, "no_progress", False) or getattr(args, "quiet", False)))
    for key, r in res.summary["slits"].items():
        if r.get("main"):
            sp = r["spectra"][r["main"]]
            print(f"{key}: {sp['source_type'].lower()} source, {r['main']} background")
        else:
            print(f"{key}: no source extracted ({r.get('detection', {})})")
    for k in ("x1d", "spec1d", "plots"):
        if k in res.products:
            print(f"  {k}: {res.products[k]}")
    return res.exit_code
