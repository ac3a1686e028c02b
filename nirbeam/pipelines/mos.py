"""MOS batch pipeline: the nods of each slitlet -> one 1-D spectrum per source.

Inputs are jwst level-2 slit files (SlitModel/MultiSlitModel after photom, read by
:mod:`nirbeam.sources.level2`), one per nod; the slits of all files are grouped by
(detector, slitlet name) and each group -- a slitlet's nods, the ``nod`` ensemble of the
MOS plan (:mod:`nirbeam.modes.mos`) -- goes through the same kernels:

1. the nods stacked on the slitlet's pixels (SCI MJy/sr, variance VAR_POISSON + VAR_RNOISE
   + VAR_FLAT, DQ);
2. a spatial profile fitted to the data (:func:`nirbeam.transforms.mos_extract.fit_profile`:
   Gaussian, nod centres and width from the joint nod fit; the trace's slope from the
   fit in column chunks);
3. background and outliers across nods: the joint nod fit
   (:func:`nirbeam.transforms.slit2d.joint_nod_fit`: a background common to every nod,
   free per pixel, never subtracting source light; residuals beyond 5 sigma in any nod
   rejected), next to jwst's nod difference (:func:`~nirbeam.transforms.slit2d.nod_difference_background`)
   for comparison;
4. optimal extraction of each nod with the fitted profile on ``nod - background``
   (:func:`~nirbeam.transforms.slit2d.optimal_extract_nods`), and a box extraction on the
   nod differences for comparison;
5. nod combination by inverse variance (:func:`~nirbeam.transforms.slit2d.combine_nods`);
6. flux: the column sum of surface brightness times ``PIXAR_SR`` (sr per pixel) is MJy,
   times 1e12 µJy.

Products (:func:`write_products`): ``x1d.fits`` (MultiSpec, one EXTRACT1D per source),
``spec1d_<source_id>.ecsv``, ``cutouts.zarr`` (per slitlet: the nods' SCI, VAR, DQ,
WAVELENGTH, the fitted background and model), ``plots/``, ``run.json``.

The graph is a Beam batch pipeline (Create -> read -> key by slitlet -> GroupByKey ->
extract -> collect -> write); :func:`extract_slitlet` is the pure function it maps.

From uncal nods (:func:`run_uncal`): the ensemble modes' stage 1
(:func:`nirbeam.pipelines.common.run_stage1`: detector1 on Beam, 1/f cleaning with every
planned slitlet masked, outliers over integrations, the exposure rate), then
:func:`stage2_exposures`: slitlets from the MSA metadata, light where no shutter was
planned open, shutters that stayed shut, the bar-shadow profile measured from the sky
slitlets and divided out, and every source slitlet through the same
:func:`extract_ensemble`, calibrated with the PHOTOM reference (DN/s per µJy).

Size note: the module holds both entry points (level-2 files and uncal nods) with the one
set of per-slitlet kernels they share (:func:`extract_ensemble`, the level-2 variance
model, the ``[mos]`` options); splitting the uncal driver out would separate it from the
options and helpers it is the main user of, for ~90 lines over the limit.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from nirbeam import dqflags
from nirbeam.core.spectra import Spectrum1D
from nirbeam.sources.level2 import Level2Slit, read_level2
from nirbeam.transforms import mos_extract as mx
from nirbeam.transforms import slit2d

__all__ = ["SlitletResult", "extract_slitlet", "extract_ensemble", "group_nods", "run_level2", "write_products",
           "level2_inputs", "run_cli", "run_uncal", "stage2_exposures", "mos_options", "MOS_DEFAULTS",
           "extract_modelled", "poisson_factor_map"]

log = logging.getLogger("nirbeam.mos")
OUTLIER = np.uint32(dqflags.OUTLIER | dqflags.DO_NOT_USE)


@dataclass(frozen=True, eq=False)
class SlitletResult:
    """One slitlet's outcome: the combined spectrum, the cut-outs and the figures."""

    spectrum: Spectrum1D
    cutouts: dict
    summary: dict
    per_nod_flux_ujy: np.ndarray
    per_nod_var_ujy: np.ndarray
    nod_difference_ujy: np.ndarray = field(default_factory=lambda: np.zeros(0))


def level2_inputs(inputs) -> list[str]:
    """FITS files among ``inputs`` (files or folders), sorted."""
    out = []
    for p in inputs:
        p = str(p)
        if os.path.isdir(p):
            out += [os.path.join(p, f) for f in sorted(os.listdir(p)) if f.lower().endswith(".fits")]
        else:
            out.append(p)
    return sorted(out)


def group_nods(slits) -> dict[tuple[str, str], list[Level2Slit]]:
    """Slits keyed by (detector, slitlet name), each list sorted by PATT_NUM."""
    g: dict[tuple[str, str], list[Level2Slit]] = {}
    for s in slits:
        g.setdefault((s.detector, s.name), []).append(s)
    return {k: sorted(v, key=lambda s: (s.patt_num or 0, s.path)) for k, v in sorted(g.items())}


def _check_nods(nods: list[Level2Slit]):
    s0 = nods[0]
    where = f"slitlet {s0.name} ({s0.detector})"
    if len(nods) < 2:
        raise ValueError(f"{where}: one nod only ({s0.path}); nod subtraction needs >= 2")
    for s in nods[1:]:
        if s.shape != s0.shape or (s.xstart, s.ystart) != (s0.xstart, s0.ystart):
            raise ValueError(f"{where}: {os.path.basename(s.path)} cut-out {s.shape} at "
                             f"({s.xstart},{s.ystart}) differs from {os.path.basename(s0.path)} "
                             f"{s0.shape} at ({s0.xstart},{s0.ystart}); nods must share pixels")
        if s.bunit != s0.bunit:
            raise ValueError(f"{where}: BUNIT {s.bunit!r} in {s.path} vs {s0.bunit!r}")
    pats = [s.patt_num for s in nods]
    if len(set(pats)) != len(pats):
        raise ValueError(f"{where}: PATT_NUM repeats across the nods {pats}")


def extract_slitlet(nods: list[Level2Slit], *, n_sigma: float = 5.0, variance: str = "model",
                    nod_offsets: bool = False) -> SlitletResult:
    """The pure function of one slitlet's level-2 nods (see the module notes).

    ``variance``: ``"model"`` (default; :func:`extract_modelled`: weights from a variance
    model built from VAR_RNOISE, VAR_POISSON / SCI and the first pass's model) or
    ``"files"`` (the files' VAR_* as they are: data-dependent weights)."""
    _check_nods(nods)
    s0 = nods[0]
    if s0.bunit != "MJy/sr":
        raise ValueError(f"slitlet {s0.name}: SCI in {s0.bunit!r}; the MOS extraction expects "
                         "MJy/sr (a level-2 file after photom)")
    pix = s0.pixar_sr
    if pix is None:
        raise ValueError(f"{s0.path}[SCI,{s0.extver}] PIXAR_SR: missing; the pixel solid angle "
                         "is needed to turn MJy/sr into a flux density")
    R = np.stack([s.sci for s in nods]).astype(np.float64)
    V = np.stack([s.variance for s in nods])
    Q = np.stack([s.dq for s in nods]).astype(np.uint32)
    wls = np.stack([s.wavelength for s in nods]).astype(np.float64)
    wl = np.where(np.isfinite(wls).all(axis=0), wls.mean(axis=0), np.nan)
    info = {"slitlet": s0.name, "detector": s0.detector, "source_id": s0.source_id,
            "source_name": s0.source_name, "nods": [os.path.basename(s.path) for s in nods],
            "patt_num": [s.patt_num for s in nods], "shutter_state": [s.shutter_state for s in nods]}
    conv = {"sci_unit": s0.bunit, "pixar_sr": pix, "factor_ujy_per_mjy_sr_pixel": pix * mx.MJY_TO_UJY,
            "formula": "flux_uJy = sum_y(SB MJy/sr) * PIXAR_SR * 1e12"}
    sp_kw = {"source_type": "EXTENDED" if str(s0.keywords.get("SRCTYPE", "")).upper() == "EXTENDED"
             else "POINT", "exposure": "+".join(s.exposure for s in nods),
             "source_ypos": s0.srcypos, "source_xpos": s0.srcxpos,
             "wavelength_source": f"{os.path.basename(s0.path)}[WAVELENGTH]"}
    def to_ujy(x, lam):
        return mx.surface_brightness_to_ujy(x, pix)

    if variance == "files":
        return extract_ensemble(R, V, Q, wl, info, to_ujy, conv, sp_kw, n_sigma=n_sigma,
                                nod_offsets=nod_offsets)
    if variance != "model":
        raise ValueError(f"variance={variance!r}: expected 'model' or 'files'")
    parts = [[getattr(s, a) for s in nods] for a in ("var_rnoise", "var_poisson", "var_flat")]
    if any(p is None for p in parts[0] + parts[1]):
        raise ValueError(f"slitlet {s0.name}: VAR_RNOISE/VAR_POISSON missing in a nod; "
                         "variance='model' needs them (variance='files' uses ERR or their sum)")
    VR, VP = (np.stack(p).astype(np.float64) for p in parts[:2])
    VF = np.stack([np.zeros(R.shape[1:]) if p is None else p for p in parts[2]]).astype(np.float64)
    return extract_modelled(R, V, VR, VP, VF, Q, wl, info, to_ujy, conv, sp_kw, n_sigma=n_sigma,
                            nod_offsets=nod_offsets)


def poisson_factor_map(sci, var_poisson, dq=None, half_window: int = 5) -> np.ndarray:
    """Per-pixel ``c`` with ``VAR_POISSON ~ c x SCI`` in a level-2 file (flat, path loss,
    bar shadow and photom scale each pixel differently, so no single factor exists): the
    ratio of sums over the nods and ``±half_window`` columns of the same row, where SCI > 0
    (the sums average out the pixels' own noise, which a pixel's own ratio would carry into
    its weight); rows with no such pixel get the median factor. (ny, nx) float64."""
    R = np.asarray(sci, np.float64)
    VP = np.asarray(var_poisson, np.float64)
    ok = np.isfinite(R) & np.isfinite(VP) & (R > 0) & (VP >= 0)
    if dq is not None:
        ok &= (np.asarray(dq, np.uint32) & np.uint32(dqflags.DO_NOT_USE)) == 0
    num = np.where(ok, VP, 0.0).sum(axis=0)
    den = np.where(ok, R, 0.0).sum(axis=0)
    k = np.ones(2 * half_window + 1)
    cn = np.apply_along_axis(lambda a: np.convolve(a, k, mode="same"), 1, num)
    cd = np.apply_along_axis(lambda a: np.convolve(a, k, mode="same"), 1, den)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(cd > 0, cn / cd, np.nan)
    med = float(np.nanmedian(c)) if np.isfinite(c).any() else 0.0
    return np.where(np.isfinite(c), c, med)


def extract_modelled(R, V, VR, VP, VF, Q, wl, info, to_ujy, conversion, sp_kw, *, n_sigma: float = 5.0,
                     background=None, nod_offsets: bool = False) -> SlitletResult:
    """:func:`extract_ensemble` with weights from a variance model, not from each pixel's
    own noise: a first pass with the given variances ``V`` gives the model ``b + F P_k``;
    the second weights by ``VR + c x max(model, 0) + VF`` with ``c``
    (:func:`poisson_factor_map`) from the nods' VAR_POISSON / SCI.

    Why: jwst's VAR_POISSON is computed from each pixel's own measured slope, so a pixel
    that fluctuates low gets a higher weight. At S/N ~2 per element that bias is not
    small: on synthetic nods like CEERS 933 (``bench/mos_faint_synth.py``) the optimal
    flux with the files' variances came out 1.05 x the truth, with the model 1.00."""
    first = extract_ensemble(R, V, Q, wl, info, to_ujy, conversion, sp_kw, n_sigma=n_sigma,
                             background=background, nod_offsets=nod_offsets)
    c = poisson_factor_map(R, VP, Q)
    model = np.asarray(first.cutouts["model"], np.float64)
    Vm = np.asarray(VR, np.float64) + c[None] * np.maximum(np.nan_to_num(model), 0.0) + np.nan_to_num(VF)
    Vm = np.where(np.isfinite(V) & np.isfinite(model), Vm, np.nan)
    res = extract_ensemble(R, Vm, Q, wl, info, to_ujy, conversion, sp_kw, n_sigma=n_sigma,
                           background=background, nod_offsets=nod_offsets)
    res.summary["variance"] = ("model: VAR_RNOISE + c x max(model, 0) + VAR_FLAT, c = sum VAR_POISSON / "
                               "sum SCI over the nods and 11 columns (poisson_factor_map)")
    return res


def extract_ensemble(R, V, Q, wl, info: dict, to_ujy, conversion: dict, sp_kw: dict, *,
                     n_sigma: float = 5.0, var_parts=None, background=None,
                     nod_offsets: bool = False) -> SlitletResult:
    """The MOS kernels on one slitlet's nods, whatever made the cut-outs (level-2 files or
    nirbeam's own stage 1).

    Parameters
    ----------
    R, V, Q : (N, ny, nx)
        The nods' cut-outs (any linear unit), variances, DQ.
    wl : (ny, nx), µm
    info : dict
        slitlet, detector, source_id, source_name (and anything for run.json).
    to_ujy : callable ``(column_flux, wavelength_um) -> µJy``
        The flux calibration of a column sum (linear in the flux).
    conversion : dict
        How ``to_ujy`` converts, for run.json.
    sp_kw : dict
        source_type, exposure, source_ypos/xpos, wavelength_source for the Spectrum1D.
    var_parts : (var_rnoise, var_poisson), each (N, ny, nx), optional
        With them the joint fit and the optimal extraction weight by a variance model
        (read noise + Poisson factor x model), not by each pixel's own noise, which
        biases fluxes low by ~1/(S/N)^2 (fs API v2).
    background : (bkg, bkg_var), each (ny, nx) or (N, ny, nx), optional
        A background known in advance (the master background from the sky slitlets,
        :func:`nirbeam.transforms.mos_extract.master_background`), subtracted from every
        nod before the optimal extraction instead of the joint nod fit's per-pixel common
        background (the joint fit still gives the profile and the outliers across nods).
    nod_offsets : bool
        Subtract per-nod additive background offsets measured on the pixels the source
        reaches in no nod (:func:`nirbeam.transforms.mos_extract.nod_offsets`), after the
        profile fit, before the joint fit and the extraction.
    """
    good = slit2d.good_pixels(R, V, Q)
    # profile fitted to the data: centres and width, then the trace slope, then again
    along0 = mx.rows_coordinate(wl)
    c0 = mx.initial_centers(R, V, good, along0, info.get("expected_centers"))
    g0 = mx.fit_profile(R, V, Q, along0, wl, c0)
    slope, x_ref, _ = mx.fit_trace_slope(R, V, Q, wl, g0)
    along = mx.tilted_coordinate(wl, slope, x_ref)
    prof = mx.fit_profile(R, V, Q, along, wl, np.asarray(g0.centers), search=1.0,
                          sigmas=np.geomspace(0.6, 6.0, 16), slopes=(-0.2, 0.0, 0.2, 0.4), refine=True)
    lims = mx.slit_limits(along)
    P = prof.profiles(along, wl, lims)
    offsets = None
    if nod_offsets:
        offsets = mx.nod_offsets(R, Q, along, prof)
        R = R - offsets[:, None, :]
    # background common to every nod + outliers across nods (joint fit)
    vr = vp = None
    k_p = None
    if var_parts is not None:
        vr, vp = (np.asarray(a, np.float64) for a in var_parts)
        k_p = slit2d.poisson_factor(R, vp)
    fit = slit2d.joint_nod_fit(R, V, Q, P, sigma_clip=n_sigma, var_rnoise=vr, poisson_k=k_p)
    Qo = Q | np.where(fit.rejected, OUTLIER, 0).astype(np.uint32)
    ok = slit2d.good_pixels(R, V, Qo)
    with np.errstate(divide="ignore", invalid="ignore"):
        bvar = np.where(ok.any(axis=0), 1.0 / np.where(ok, 1.0 / np.where(ok, V, 1.0), 0.0).sum(axis=0), np.nan)
    if background is not None:
        bkg_used, bvar = (np.asarray(a, np.float64) for a in background)
        bkg_kind = "master background (sky slitlets)"
    else:
        bkg_used, bkg_kind = fit.background, "joint nod fit (common to all nods)"
    opt = slit2d.optimal_extract_nods(R, V, Qo, bkg_used, bvar, P, sigma_clip=n_sigma,
                                      var_rnoise=vr, var_poisson=vp)
    # a nod whose column holds < 10 % of the profile (off the slit's usable rows) measures
    # nothing there: its flux is the kernel's flux divided by that tiny sum
    thin = P.sum(axis=1) < 0.1
    opt = slit2d.NodSpectra(np.where(thin, np.nan, opt.flux), np.where(thin, np.nan, opt.flux_var),
                            np.where(thin, opt.dq | np.uint32(dqflags.DO_NOT_USE), opt.dq).astype(np.uint32),
                            opt.npixels, opt.method)
    f_sb, v_sb, dq = slit2d.combine_nods(opt.flux, opt.flux_var, opt.dq)
    # jwst's way, for comparison: each nod minus the mean of the others, box about the trace
    nbkg, nbvar = slit2d.nod_difference_background(R, V, Qo)
    half = 2.5  # rows either side of the trace (jwst-like box; apcorr: divided by P inside)
    box = slit2d.box_extract_nods(R, V, Qo, nbkg, nbvar, along, np.asarray(prof.centers), half, profiles=P)
    fb, vb, _ = slit2d.combine_nods(box.flux, box.flux_var, box.dq)
    box_raw = slit2d.box_extract_nods(R, V, Qo, nbkg, nbvar, along, np.asarray(prof.centers), half)
    fbr, _, _ = slit2d.combine_nods(box_raw.flux, box_raw.flux_var, box_raw.dq)
    # wavelength of each column: the profile-weighted mean of the map
    Pw = np.where(np.isfinite(wl)[None], P, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        lam = (Pw * np.nan_to_num(wl)[None]).sum(axis=(0, 1)) / Pw.sum(axis=(0, 1))
    flux, ferr = to_ujy(f_sb, lam), np.abs(to_ujy(np.sqrt(v_sb), lam))
    dq = np.where(np.isfinite(lam) & np.isfinite(flux), dq, dq | np.uint32(dqflags.DO_NOT_USE)).astype(np.uint32)
    bad = (dq & np.uint32(dqflags.DO_NOT_USE)) != 0
    flux = np.where(bad, np.nan, flux)
    ferr = np.where(bad, np.nan, ferr)
    okb = ~bad & np.isfinite(flux) & np.isfinite(ferr) & (ferr > 0)
    snr = mx.snr_per_bin(lam, flux, ferr ** 2, np.arange(0.6, 5.61, 0.25))
    fbu = to_ujy(fb, lam)
    fbru = to_ujy(fbr, lam)
    both = okb & np.isfinite(fbu)
    summary = dict(info) | {
        "profile": prof.as_dict() | {"trace_slope_rows_per_col": round(slope, 5),
                                      "x_ref": x_ref, "slit_limits_px": list(lims)},
        "flux_conversion": conversion,
        "background": bkg_kind,
        "nod_offsets_median": None if offsets is None else [float(np.median(o)) for o in offsets],
        "outliers_rejected": int(fit.rejected.sum()),
        "outliers_per_nod": [int(v) for v in fit.rejected.sum(axis=(1, 2))],
        "good_elements": int(okb.sum()),
        "snr": snr,
        "median_flux_ujy": float(np.nanmedian(flux[okb])) if okb.any() else float("nan"),
        "comparison": {
            "nod_difference_box_half_rows": half,
            "nod_difference_box_apcorr_over_optimal_sum": float(fbu[both].sum() / flux[both].sum())
            if both.any() else None,
            "nod_difference_box_raw_over_optimal_sum": float(fbru[both].sum() / flux[both].sum())
            if both.any() else None,
            "nod_difference_box_snr_median": float(np.nanmedian(fb[both] / np.sqrt(vb[both])))
            if both.any() else None,
        },
        "joint_fit_chi2_per_dof": float(np.nansum(fit.chi2) / max(int(np.nansum(np.maximum(fit.dof, 0))), 1)),
    }
    summary.pop("expected_centers", None)
    sid = info.get("source_id")
    sp = Spectrum1D(
        source_id=int(sid if sid is not None else 0),
        source_name=str(info.get("source_name") or info["slitlet"]), region=str(info["slitlet"]),
        wavelength=lam, flux=flux, flux_error=ferr, dq=dq, flux_unit="uJy",
        npixels=opt.npixels.sum(axis=0), source_type=sp_kw.get("source_type", "POINT"),
        detector=str(info.get("detector", "")), exposure=sp_kw.get("exposure", ""),
        extraction={"method": "optimal", "profile": "gaussian fitted to the nods",
                    "background": bkg_kind, "nods": int(R.shape[0]),
                    "source_ypos": float(sp_kw.get("source_ypos") or 0.0),
                    "source_xpos": float(sp_kw.get("source_xpos") or 0.0),
                    "flux_conversion": conversion.get("formula", "")},
        wavelength_source=sp_kw.get("wavelength_source", ""),
    )
    cut = {"sci": R.astype(np.float32), "var": V.astype(np.float32), "dq": Qo,
           "wavelength": wl.astype(np.float32), "background": fit.background.astype(np.float32),
           "model": fit.model(P).astype(np.float32), "profile": P.astype(np.float32)}
    nod_bad = (opt.dq & np.uint32(dqflags.DO_NOT_USE)) != 0
    return SlitletResult(sp, cut, summary, np.where(nod_bad, np.nan, to_ujy(opt.flux, lam[None])),
                         np.where(nod_bad, np.nan, to_ujy(np.sqrt(opt.flux_var), lam[None])) ** 2,
                         np.where(np.isfinite(fb), fbu, np.nan))


def run_level2(inputs, outdir: str, *, runner: str = "direct", variance: str = "model") -> dict:
    """Run the MOS pipeline over level-2 slit files (files or folders) into ``outdir``
    (``variance``: see :func:`extract_slitlet`).

    Returns the run summary (also written to ``outdir/run.json``).
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    paths = level2_inputs(inputs)
    if not paths:
        raise ValueError(f"no level-2 FITS files in {list(inputs)}")
    os.makedirs(outdir, exist_ok=True)
    t0 = time.time()
    opts = PipelineOptions(flags=[], runner="FnApiRunner" if runner == "direct" else runner)
    with beam.Pipeline(options=opts) as p:
        _ = (p
             | "Files" >> beam.Create(paths)
             | "ReadLevel2" >> beam.FlatMap(read_level2)
             | "KeyBySlitlet" >> beam.Map(lambda s: ((s.detector, s.name), s))
             | "Nods" >> beam.GroupByKey()
             | "Extract" >> beam.MapTuple(lambda k, nods: extract_slitlet(group_nods(nods)[k], variance=variance))
             | "Collect" >> beam.combiners.ToList()
             | "Write" >> beam.Map(write_products, outdir, paths, t0))
    with open(os.path.join(outdir, "run.json")) as fh:
        return json.load(fh)


def run_cli(args) -> int:
    """``nirbeam run`` on level-2 MOS inputs: run, print where the products are, exit 0."""
    from nirbeam.modes.mos import is_mos_level2

    if is_mos_level2(args.inputs):
        summ = run_level2(args.inputs, args.out)
    else:
        if not args.refs:
            from nirbeam.stream.config import ConfigError

            raise ConfigError("MOS uncal inputs need --refs (detector references, PHOTOM, "
                              "BARSHADOW and msa_geometry.json)")
        from nirbeam.stream import cli_support
        from nirbeam.stream.config import load_config_file
        from nirbeam.stream.runners import RunnerSpec

        config = cli_support.effective_config(args, load_config_file(args.config))
        spec = RunnerSpec(name=args.runner, workers=args.workers, dask_address=args.dask_address,
                          dask_scheduler_file=args.dask_scheduler_file, job_endpoint=args.job_endpoint)
        summ = run_uncal(args.inputs, args.out, args.refs, config=config, runner=spec,
                         allow_standins=args.allow_standins, overwrite=args.overwrite)
        for u in summ.get("unplanned_light", []):
            print(f"unplanned light (failed-open shutter?) on rows {u['rows'][0]}-{u['rows'][1] - 1}, "
                  f"shutter column ~{u['shutter_column_estimate']}: flagged in run.json")
        for st in summ.get("stuck_closed_shutters", []):
            print(f"slitlet {st['slitlet']}: shutter column {st['shutter_column']} passed no light "
                  "(stuck closed): flagged")
    for sl in summ["slitlets"]:
        print(f"slitlet {sl['slitlet']} ({sl['detector']}) source {sl['source_id']}: "
              f"{len(sl['nods'])} nods, median S/N per element "
              f"{sl['snr']['median_snr_per_element']:.2f}, {sl['outliers_rejected']} outlier pixels")
    print(f"products in {summ['outdir']} ({summ['wall_s']} s)")
    return 0


def write_products(results: list[SlitletResult], outdir: str, inputs=(), t0: float | None = None,
                   extra: dict | None = None, max_plots: int | None = None) -> dict:
    """x1d.fits, spec1d_<id>.ecsv, cutouts.zarr, plots/ and run.json for the slitlets."""
    from nirbeam.sinks import mos_products
    from nirbeam.sinks.spec1d import spec1d_name, write_spec1d_ecsv, write_x1d

    results = sorted(results, key=lambda r: (r.spectrum.detector, r.spectrum.region))
    os.makedirs(outdir, exist_ok=True)
    spectra = [r.spectrum for r in results]
    header = {"INSTRUME": "NIRSPEC", "EXP_TYPE": "NRS_MSASPEC", "TELESCOP": "JWST",
              "DETECTOR": spectra[0].detector if spectra else ""}
    files = {"x1d": write_x1d(os.path.join(outdir, "x1d.fits"), spectra, header)}
    for sp in spectra:
        files[spec1d_name(sp.source_id)] = write_spec1d_ecsv(os.path.join(outdir, spec1d_name(sp.source_id)), sp)
    files["cutouts"] = mos_products.write_cutouts(os.path.join(outdir, "cutouts.zarr"),
                                                  {f"{r.spectrum.detector}_{r.spectrum.region}": r.cutouts
                                                   for r in results})
    plots = []
    for r in results[:max_plots]:
        plots += mos_products.plot_slitlet(os.path.join(outdir, "plots"), r.spectrum, r.cutouts,
                                           r.per_nod_flux_ujy, r.nod_difference_ujy)
    summary = {"mode": "mos", "inputs": [os.path.basename(p) for p in inputs],
               "slitlets": [r.summary for r in results], "products": files,
               "plots": [os.path.relpath(p, outdir) for p in plots],
               "wall_s": round(time.time() - t0, 2) if t0 else None, "outdir": outdir}
    summary.update(extra or {})
    with open(os.path.join(outdir, "run.json"), "w") as fh:
        json.dump(summary, fh, indent=1, default=_json)
    return summary


def _json(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ---------------------------------------------------------------------------------------
# from uncal: nirbeam's own stage 1, slitlets from the MSA metadata


def _photom(refs_dir: str):
    from astropy.io import fits

    for f in sorted(os.listdir(refs_dir)):
        if f.endswith(".fits") and fits.getheader(os.path.join(refs_dir, f)).get("REFTYPE") == "PHOTOM":
            t = fits.getdata(os.path.join(refs_dir, f), "PHOTOM")
            return f, np.asarray(t["WAVELENGTH"], float), np.asarray(t["RELRESP"], float)
    raise ValueError(f"{refs_dir}: no PHOTOM reference (REFTYPE=PHOTOM, table PHOTOM with "
                     "WAVELENGTH um and RELRESP DN/s per uJy): the flux calibration")


def _barshadow_ref(refs_dir: str):
    from astropy.io import fits

    for f in sorted(os.listdir(refs_dir)):
        if f.endswith(".fits") and fits.getheader(os.path.join(refs_dir, f)).get("REFTYPE") == "BARSHADOW":
            return f, np.asarray(fits.getdata(os.path.join(refs_dir, f), "DATA1X3"), float)[:, 0]
    raise ValueError(f"{refs_dir}: no BARSHADOW reference (REFTYPE=BARSHADOW, DATA1X3)")


def mos_options(config: dict | None) -> dict:
    """The ``[mos]`` section of a config (checked): ``background`` = ``"master"`` (the
    default: a 1-D sky spectrum from the sky-only slitlets, per wavelength, subtracted
    from every nod of every source slitlet, after the measured bar shadow is divided out;
    the joint nod fit's background where the MSA configuration has no usable sky
    slitlet) or ``"nod"`` (the joint nod fit's per-pixel background common to all nods).
    On the simulator's full frame (``bench/mos_sim.py --compare``) the master background
    gave the smaller flux scatter for 27 of 28 sources at the same flux scale;
    ``pedestal`` = true (default): the level of the unlit detector rows (no slitlet
    planned there, :func:`nirbeam.transforms.msa_light.dark_pedestal`) is subtracted from
    each nod before the bar shadow is measured."""
    from nirbeam.stream.config import ConfigError

    out = dict(MOS_DEFAULTS)
    for k, v in dict(config or {}).items():
        if k not in MOS_DEFAULTS:
            raise ConfigError(f"mos.{k}: unknown key; expected one of {sorted(MOS_DEFAULTS)}")
        if k == "background" and v not in ("nod", "master"):
            raise ConfigError(f"mos.background = {v!r}: expected 'nod' or 'master'")
        if k == "pedestal" and not isinstance(v, bool):
            raise ConfigError(f"mos.pedestal = {v!r}: expected true or false")
        out[k] = v
    return out


MOS_DEFAULTS = {"background": "master", "pedestal": True}


def _slit_wavelength(reg, shape, tmeas):
    t = np.arange(reg.bbox.x1 - reg.bbox.x0, dtype=float)
    lam = np.polynomial.polynomial.polyval(t, reg.wavelength.coefficients)
    wl = np.broadcast_to(lam[None, :], shape).copy()
    wl[~(tmeas >= 0.2)] = np.nan
    return wl


def stage2_exposures(exposures: list[dict], refs_dir: str, outdir: str, t0: float | None = None,
                     msa_dir: str | None = None, max_plots: int | None = None,
                     options: dict | None = None) -> dict:
    """The nods of one MOS visit (their stage-1 rates) -> products (see the module notes).

    Slitlets from the MSA metadata (:func:`nirbeam.modes.mos.mos_regions`), light where no
    shutter was planned open (:func:`nirbeam.transforms.msa_light.unplanned_light`),
    shutters that stayed shut, the bar-shadow profile measured from the sky slitlets
    (:func:`nirbeam.transforms.barshadow.measure_bar_shadow`) and applied, then every
    source slitlet through :func:`extract_ensemble` with the PHOTOM response.
    ``options``: :func:`mos_options` (the background: nod fit or master background).
    """
    from dataclasses import replace

    from nirbeam.modes.mos import MOS, read_geometry
    from nirbeam.sources.msa import read_msa
    from nirbeam.transforms import barshadow as bs
    from nirbeam.transforms import msa_light

    exposures = sorted(exposures, key=lambda e: int(e["keys"]["PATT_NUM"]))
    e0 = exposures[0]
    msa_dir = msa_dir or os.path.dirname(e0["path"])
    geom_path = os.path.join(refs_dir, "msa_geometry.json")
    geom = read_geometry(geom_path)
    R = np.stack([e["rate"] for e in exposures])
    V = np.stack([e["var"] for e in exposures])
    Q = np.stack([e["dq"] for e in exposures])
    have_parts = all("var_rnoise" in e and "var_poisson" in e for e in exposures)
    VRN = np.stack([e["var_rnoise"] for e in exposures]) if have_parts else None
    VPO = np.stack([e["var_poisson"] for e in exposures]) if have_parts else None
    ny, nx = R.shape[1:]
    regions, slitlets = [], []
    for e in exposures:
        k = e["keys"]
        extra = tuple(e["meta"].extra) + (("MSAMETFL", k["MSAMETFL"]), ("MSAMETID", k["MSAMETID"]),
                                          ("PATT_NUM", k["PATT_NUM"]), ("MSA_GEOMETRY", geom_path),
                                          ("MSA_DIR", msa_dir))
        regions.append({r.name: r for r in MOS.regions(replace(e["meta"], extra=extra), None)})
        slitlets.append({s.name: s for s in read_msa(os.path.join(msa_dir, k["MSAMETFL"]),
                                                     int(k["MSAMETID"]), int(k["PATT_NUM"]))})
    names = sorted(regions[0], key=lambda n: int(n) if n.isdigit() else n)
    for reg in regions[1:]:
        if sorted(reg) != sorted(regions[0]):
            raise ValueError("the nods open different slitlets: " f"{sorted(regions[0])} vs {sorted(reg)}")
    boxes = [(r.bbox.y0, r.bbox.y1, r.bbox.x0, r.bbox.x1) for r in regions[0].values()]
    planned_rows = msa_light.planned_mask((ny, nx), boxes).any(axis=1)
    planned_rows[:4] = planned_rows[-4:] = True  # reference rows of a full frame / frame edges
    x_lo = min(b[2] for b in boxes)
    x_hi = max(b[3] for b in boxes)
    unplanned = msa_light.unplanned_light(R, Q, planned_rows, columns=slice(x_lo, x_hi))
    for u in unplanned:
        u["shutter_column_estimate"] = round(geom.column_of_row(0.5 * (u["rows"][0] + u["rows"][1] - 1)), 2)
        u["flagged"] = True
        Q[:, u["rows"][0]:u["rows"][1], :] |= np.uint32(dqflags.OTHER_BAD_PIXEL)
    # the level of the unlit detector (an additive offset of the rates), per nod
    opts = mos_options(options)
    dark_rows = ~planned_rows
    for u in unplanned:
        dark_rows[max(u["rows"][0] - 2, 0):u["rows"][1] + 2] = False
    dark_rows &= ~np.convolve(~dark_rows, np.ones(3), mode="same").astype(bool)  # a row off any slitlet
    pedestal = []
    for k in range(R.shape[0]):
        lev, err, npx = msa_light.dark_pedestal(R[k], Q[k], dark_rows, columns=slice(x_lo, x_hi))
        pedestal.append({"level_dn_s": lev, "error_dn_s": err, "pixels": npx,
                         "subtracted": bool(opts["pedestal"] and npx > 0)})
        if opts["pedestal"] and npx > 0:
            R[k] = R[k] - lev
    # the slitlets' cut-outs; shutters that stayed shut
    bs_name, t_ref = _barshadow_ref(refs_dir)
    margin = 1
    P = geom.pitch
    shutter_rows = [(int(round(margin + P * s + (P - 1) / 2 - geom.open_rows / 2 + 0.5)),
                     int(round(margin + P * s + (P - 1) / 2 + geom.open_rows / 2 - 0.5)) + 1) for s in range(3)]
    cuts, stuck = {}, []
    for n in names:
        b = regions[0][n].bbox
        c = (R[:, b.y0:b.y1, b.x0:b.x1], V[:, b.y0:b.y1, b.x0:b.x1], Q[:, b.y0:b.y1, b.x0:b.x1].copy())
        if c[0].shape[1] == t_ref.size:
            for s in msa_light.closed_shutters(c[0], c[2], shutter_rows):
                a, z = shutter_rows[s]
                c[2][:, max(a - 1, 0):z + 1] |= np.uint32(dqflags.DO_NOT_USE)
                col = sorted(slitlets[0][n].columns)[s]
                stuck.append({"slitlet": n, "shutter_index": s, "shutter_column": int(col),
                              "shutter_row": int(slitlets[0][n].xcen), "flagged": True})
        cuts[n] = c
    # a sky slitlet with a shutter that stayed shut has another profile (no bar between a
    # closed and an open shutter): it is left out of the measurement
    stuck_names = {st["slitlet"] for st in stuck}
    sky = [n for n in names if slitlets[0][n].background and cuts[n][0].shape[1] == t_ref.size
           and n not in stuck_names]
    prof = bs.measure_bar_shadow([cuts[n][0] for n in sky], [cuts[n][1] for n in sky],
                                 [cuts[n][2] for n in sky], t_ref)
    tmeas = np.where(np.isfinite(prof.transmission), prof.transmission, 0.0)
    wname, wlam, wresp = _photom(refs_dir)

    def to_ujy(x, lam):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(x, float) / np.interp(lam, wlam, wresp, left=np.nan, right=np.nan)

    master = None
    bkg_method = opts["background"]
    if bkg_method == "master" and not sky:
        log.warning("mos.background = 'master': no usable sky-only slitlet in %s; the joint nod "
                    "fit's background is used", exposures[0]["keys"]["MSAMETFL"])
        bkg_method = "nod (no usable sky slitlet for the master background)"
    if bkg_method == "master":
        sk = [bs.apply_bar_shadow(*cuts[n], tmeas) for n in sky]
        master = mx.master_background([a[0] for a in sk], [a[1] for a in sk], [a[2] for a in sk],
                                      [_slit_wavelength(regions[0][n], cuts[n][0].shape[1:], tmeas) for n in sky],
                                      weights_rows=tmeas)
    results = []
    for n in names:
        s0 = slitlets[0][n]
        if s0.background:
            continue
        r, v, q = cuts[n]
        if r.shape[1] != tmeas.size:
            raise ValueError(f"slitlet {n}: {r.shape[1]} rows, the bar-shadow profile {tmeas.size}")
        r, v, q = bs.apply_bar_shadow(r, v, q, tmeas)
        parts = None
        if VRN is not None:
            b = regions[0][n].bbox
            parts = tuple(bs.apply_bar_shadow(a[:, b.y0:b.y1, b.x0:b.x1], a[:, b.y0:b.y1, b.x0:b.x1],
                                              q, tmeas)[1] for a in (VRN, VPO))
        reg = regions[0][n]
        wl = _slit_wavelength(reg, r.shape[1:], tmeas)
        bkg = None
        if master is not None:
            mb, mv = master.at(wl)
            bkg = (np.where(np.isfinite(wl), mb, np.nan), np.where(np.isfinite(wl), mv, np.nan))
        exp_c = [margin + P * sh + (P - 1) / 2 for sh in (1, 0, 2)]
        order = [int(e["keys"]["PATT_NUM"]) for e in exposures]
        info = {"slitlet": n, "detector": reg.detector, "source_id": s0.source_id,
                "source_name": s0.source_name, "nods": [os.path.basename(e["path"]) for e in exposures],
                "patt_num": order, "shutter_state": [slitlets[k][n].shutter_state for k in range(len(exposures))],
                "box": [reg.bbox.y0, reg.bbox.y1, reg.bbox.x0, reg.bbox.x1],
                "expected_centers": np.array([exp_c[(p - 1) % 3] for p in order])}
        conv = {"reference": wname, "formula": "flux_uJy = column sum (DN/s) / RELRESP(lambda) (DN/s per uJy)",
                "bar_shadow": "divided by the profile measured from the sky slitlets"}
        sp_kw = {"source_type": "POINT", "exposure": "+".join(e["meta"].exposure for e in exposures),
                 "source_ypos": s0.source_ypos, "source_xpos": s0.source_xpos,
                 "wavelength_source": f"MSA geometry {os.path.basename(geom_path)}"}
        results.append(extract_ensemble(r, v, q, wl, info, to_ujy, conv, sp_kw, var_parts=parts,
                                        background=bkg))
    rows_in = tmeas > 0.2
    mos_run = {
        "bar_shadow": {"reference": bs_name, "measured": prof.transmission.tolist(),
                       "measured_error": prof.error.tolist(), "reference_profile": t_ref.tolist(),
                       "sky_slitlets": sky, "n_samples": prof.n_samples.tolist(),
                       "rms_measured_minus_reference": bs.profile_rms(prof.transmission, t_ref, rows_in)},
        "pedestal": pedestal,
        "background": {"method": bkg_method, "asked": opts["background"],
                       "master_sky_slitlets": sky if master is not None else None},
        "unplanned_light": unplanned,
        "stuck_closed_shutters": stuck,
        "nods": [{"exposure": os.path.basename(e["path"]), "patt_num": int(e["keys"]["PATT_NUM"]),
                  "references": e["refs"]} for e in exposures],
    }
    return write_products(results, outdir, [e["path"] for e in exposures], t0, extra=mos_run,
                          max_plots=max_plots)


def run_uncal(inputs, outdir: str, refs_dir: str, *, config: dict | None = None, runner=None,
              max_plots: int | None = None, allow_standins: bool = False,
              overwrite: bool = False) -> dict:
    """Run the MOS pipeline over uncal nods (files or folders) into ``outdir``.

    Stage 1 is the ensemble modes' shared one (:func:`nirbeam.pipelines.common.run_stage1`:
    detector1 on Beam, 1/f cleaning with a scene mask that covers every planned slitlet,
    rateints in ``OUTDIR/cubes.zarr``; :func:`~nirbeam.pipelines.common.exposure_rate`:
    outliers over integrations, the exposure's rate); stage 2 is :func:`stage2_exposures`.
    """
    from dataclasses import replace

    from astropy.io import fits

    from nirbeam.modes.mos import MOS, read_geometry
    from nirbeam.pipelines.common import exposure_rate, load_exposure_rate, run_stage1, scan_inputs
    from nirbeam.stream.settings import Settings
    from nirbeam.stream.uncal import BadInputError
    from nirbeam.transforms.msa_light import planned_mask

    t0 = time.time()
    plans = scan_inputs([str(p) for p in inputs])
    if not plans:
        raise ValueError(f"no uncal files in {list(inputs)}")
    geom_path = os.path.join(refs_dir, "msa_geometry.json")
    read_geometry(geom_path)
    keys = {}
    for plan in plans:
        path = plan.segments[0].path
        ph = fits.getheader(path)
        k = {}
        for kw in ("MSAMETFL", "MSAMETID", "PATT_NUM", "NOD_TYPE"):
            if kw not in ph:
                raise BadInputError(path, f"missing {kw}: a MOS exposure names its MSA metadata "
                                    "(MSAMETFL, MSAMETID) and nod position (PATT_NUM)", "PRIMARY", kw)
            k[kw] = ph[kw]
        keys[plan.meta.group_name] = (path, k)

    def mask_for(plan):
        path, k = keys[plan.meta.group_name]
        extra = tuple(plan.meta.extra) + (("MSAMETFL", k["MSAMETFL"]), ("MSAMETID", k["MSAMETID"]),
                                          ("PATT_NUM", k["PATT_NUM"]), ("MSA_GEOMETRY", geom_path),
                                          ("MSA_DIR", os.path.dirname(path)))
        regs = MOS.regions(replace(plan.meta, extra=extra), None)
        return planned_mask(plan.meta.image_shape, [(r.bbox.y0, r.bbox.y1, r.bbox.x0, r.bbox.x1) for r in regs])

    config = dict(config or {})
    opts = mos_options(config.pop("mos", None))
    settings = Settings.from_dict(config)
    st1 = run_stage1(plans, outdir, settings, refs_dir=refs_dir, runner=runner, trace_mask_for=mask_for,
                     allow_standins=allow_standins, overwrite=overwrite)
    exposures = []
    for plan in plans:
        g = plan.meta.group_name
        exposure_rate(st1.root, g)
        rate, var, dq, var_rnoise, var_poisson = load_exposure_rate(st1.root, g, parts=True)
        path, k = keys[g]
        exposures.append({"path": os.path.abspath(path), "meta": plan.meta, "keys": k, "rate": rate,
                          "var": var, "dq": dq, "var_rnoise": var_rnoise, "var_poisson": var_poisson, "refs": st1.per_group.get(g, {}).get("references", {})})
    summary = stage2_exposures(exposures, refs_dir, outdir, t0, max_plots=max_plots, options=opts)
    summary["stage1"] = {"timings_s": getattr(st1, "timings_s", None),
                         "groups": {g: {k: v for k, v in d.items() if k != "references"}
                                    for g, d in st1.per_group.items()},
                         "scene_mask": "every planned slitlet (MOS plan) OR the draft detection"}
    with open(os.path.join(outdir, "run.json"), "w") as fh:
        json.dump(summary, fh, indent=1, default=_json)
    return summary
