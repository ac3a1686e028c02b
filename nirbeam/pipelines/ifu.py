"""IFU batch pipeline on Beam: dithered ``NRS_IFU`` uncal exposures -> ``s3d`` cube,
``x1d.fits``, ``spec1d_<id>.ecsv`` and plots.

Steps
-----
1. **Stage 1**: the shared ensemble stage 1 (:func:`nirbeam.pipelines.common.run_stage1`:
   detector1 on Beam into ``OUTDIR/cubes.zarr``, the slices as the 1/f scene mask), then
   one rate per exposure (:func:`~nirbeam.pipelines.common.exposure_rate`).
2. **Calibration**: rate / flux calibration (``ifu_refs/photom.fits``) -> surface
   brightness (MJy/sr) per pixel; the pixel maps come from ``ifu_refs/geometry_<det>.fits``
   (what jwst's ``assign_wcs`` gives); the 30 slice regions from the mode plan
   (:mod:`nirbeam.modes.ifu`).
3. **Outliers across dithers** (:func:`nirbeam.transforms.cube.flag_dither_outliers`).
4. **Point cloud** per exposure (wavelength, along-slice, across-slice -> sky x, y; flux,
   variance), concatenated and written once (one ``.npy`` per field) for the workers to
   memory-map.
5. **Cube building** (Beam, :class:`BuildCubePlanes`): wavelength planes grouped in blocks
   of ``planes_per_chunk`` (one zarr chunk each) are the keys; a worker builds its block
   from the points that reach it (found by bisection in the wavelength-sorted cloud) and
   writes the block into the zarr cube created before from a template (chunk-aligned
   writers only: zarr loses data when two writers share a chunk).
6. **Centroid and wander**: the point source's centroid per plane on the draft cube; a
   smooth polynomial of its wander; the cloud shifted by it and the cube rebuilt (step 5
   again) -- the products are the corrected cube.
7. **Extraction**: circular apertures that grow with wavelength (point source: the
   aperture-correction reference's radius, its correction applied; extended source: the
   catalogue's radius scaled with wavelength), µJy.

Products (``OUTDIR``): ``cube.zarr`` (group ``<exposure>/s3d``: ``sci``, ``err``, ``wmap``,
dims wavelength, y, x), ``<exposure>_s3d.fits`` (IFUCubeModel layout), ``x1d.fits``,
``spec1d_<id>.ecsv``, ``plots/``, ``run.json``.

Size note: over 600 lines on purpose: the IFU batch pipeline from rates to cube products; the kernels are in transforms/cube.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nirbeam import __version__ as nirbeam_version
from nirbeam.modes.ifu import IFU
from nirbeam.sources.ifu_refs import read_apcorr, read_geometry, read_photom
from nirbeam.transforms import cube as ck

__all__ = ["IFUSettings", "run_ifu", "BuildCubePlanes", "build_block", "create_cube_store",
           "save_cloud", "load_cloud", "IFURunResult", "open_cube_arrays", "read_cube"]

log = logging.getLogger("nirbeam.ifu")


@dataclass(frozen=True)
class IFUSettings:
    """Settings of the IFU pipeline.

    weighting : ``drizzle`` (default), ``emsm`` or ``nearest``.
    cdelt : spaxel size, arcsec. dwave : plane width, µm (None: the median pixel width).
    planes_per_chunk : planes per zarr chunk and per Beam element.
    outlier_nsigma, outlier_percent : :func:`~nirbeam.transforms.cube.flag_dither_outliers`.
    wander_degree : polynomial degree of the wander model (0: no correction).
    ext_radius_growth : whether the extended-source aperture grows with wavelength too
        (default: fixed at the catalogue radius; the point-source aperture always grows).
    """

    weighting: str = "drizzle"
    cdelt: float = 0.1
    dwave: float | None = None
    planes_per_chunk: int = 16
    outlier_nsigma: float = 5.0
    outlier_percent: float | None = None
    outlier_direction: str = "spectral"
    wander_degree: int = 3
    ext_radius_growth: bool = False
    plots: bool = True


@dataclass
class IFURunResult:
    """What :func:`run_ifu` made (paths and the numbers in ``run.json``)."""

    outdir: Path
    summary: dict = field(default_factory=dict)
    exit_code: int = 0


# ---------------------------------------------------------------- the cloud on disk


def save_cloud(cloud: ck.PointCloud, folder: str) -> str:
    """One ``.npy`` per field in ``folder`` (workers memory-map them)."""
    os.makedirs(folder, exist_ok=True)
    for f in ck.CLOUD_FIELDS:
        np.save(os.path.join(folder, f + ".npy"), np.ascontiguousarray(getattr(cloud, f)))
    return folder


def load_cloud(folder: str, lo: int | None = None, hi: int | None = None) -> ck.PointCloud:
    """The cloud in ``folder``, points ``lo:hi`` (memory-mapped, then copied)."""
    arrs = []
    for f in ck.CLOUD_FIELDS:
        a = np.load(os.path.join(folder, f + ".npy"), mmap_mode="r")
        arrs.append(np.array(a[lo:hi]))
    return ck.PointCloud(*arrs)


# ---------------------------------------------------------------- zarr cube


def create_cube_store(store: str, group: str, grid: ck.CubeGrid, planes_per_chunk: int,
                      attrs: dict) -> None:
    """Create ``group`` with ``sci``, ``err``, ``wmap`` (float32, (nwave, ny, nx), chunks
    of ``planes_per_chunk`` planes; dims wavelength, y, x) and ``wavelength``/``x``/``y``
    coordinates, overwriting an earlier one."""
    import zarr

    root = zarr.open_group(store, mode="a")
    if group in root:
        del root[group]
    g = root.create_group(group)
    chunks = (planes_per_chunk, grid.ny, grid.nx)
    units = {"sci": "MJy/sr", "err": "MJy/sr", "wmap": ""}
    for name in ("sci", "err", "wmap"):
        a = g.create_array(name, shape=grid.shape, chunks=chunks, dtype="float32",
                           fill_value=np.nan, dimension_names=("wavelength", "y", "x"))
        a.attrs["units"] = units[name]
    for name, vals, unit in (("wavelength", grid.wave, "um"), ("x", grid.xc, "arcsec"),
                             ("y", grid.yc, "arcsec")):
        a = g.create_array(name, shape=vals.shape, dtype="float64", dimension_names=(name,))
        a[:] = vals
        a.attrs["units"] = unit
    g.attrs.update({**attrs, "grid": dataclasses.asdict(grid)})


def open_cube_arrays(store: str, group: str, planes_per_chunk: int) -> dict:
    """The ``sci``/``err``/``wmap`` arrays of a cube group, checked to hold
    ``planes_per_chunk`` planes per chunk (a worker opens them once)."""
    import zarr

    g = zarr.open_group(store, mode="r+")[group]
    arrays = {name: g[name] for name in ("sci", "err", "wmap")}
    for name, a in arrays.items():
        if a.chunks[0] != planes_per_chunk:
            raise ValueError(f"{store}/{group}/{name}: chunks {a.chunks}, expected "
                             f"{planes_per_chunk} planes per chunk")
    return arrays


def build_block(cloud_dir: str, grid: ck.CubeGrid, block: int, planes_per_chunk: int,
                weighting: str, store: str | None = None, group: str | None = None,
                arrays: dict | None = None) -> dict:
    """Build planes ``block*planes_per_chunk ...`` from the cloud on disk and write them
    into ``store``/``group`` (one chunk; ``arrays``: those of :func:`open_cube_arrays`,
    opened here when not given). Returns counts for the run record."""
    k0 = block * planes_per_chunk
    k1 = min(k0 + planes_per_chunk, grid.nwave)
    wave = np.load(os.path.join(cloud_dir, "wave.npy"), mmap_mode="r")
    dwave = np.load(os.path.join(cloud_dir, "dwave.npy"), mmap_mode="r")
    reach = ck.spectral_reach(grid, weighting, grid.dwave, float(np.max(dwave)) if dwave.size else 0.0)
    lo = int(np.searchsorted(wave, grid.wave[k0] - reach, side="left"))
    hi = int(np.searchsorted(wave, grid.wave[k1 - 1] + reach, side="right"))
    sub = load_cloud(cloud_dir, lo, hi)
    t0 = time.perf_counter()
    n = k1 - k0
    sci = np.empty((n, grid.ny, grid.nx), np.float32)
    err = np.empty_like(sci)
    wmap = np.empty_like(sci)
    mdw = float(np.max(sub.dwave)) if sub.size else 0.0
    for k in range(k0, k1):
        m = ck.plane_members(sub, grid, k, k + 1, weighting, max_dwave=mdw)
        f, v, w = ck.build_plane(sub.take(m), grid, k, weighting)
        sci[k - k0], err[k - k0], wmap[k - k0] = f, np.sqrt(v), w
    dt = time.perf_counter() - t0
    if store is not None or arrays is not None:
        arrays = arrays or open_cube_arrays(store, group, planes_per_chunk)
        for name, arr in (("sci", sci), ("err", err), ("wmap", wmap)):
            arrays[name][k0:k1] = arr
    return {"block": block, "planes": n, "points": hi - lo, "seconds": dt,
            "flux_sum": float(np.nansum(sci.astype(np.float64)))}


class _BuildBlockFn:
    """DoFn body: build and write one block of planes (counts planes and points)."""

    def __init__(self, cloud_dir, grid, ppc, weighting, store, group):
        self.args = (cloud_dir, grid, ppc, weighting, store, group)
        self._arrays = None

    def __getstate__(self):
        return {"args": self.args}

    def __setstate__(self, state):
        self.args = state["args"]
        self._arrays = None

    def __call__(self, block):
        from apache_beam.metrics import Metrics

        cloud_dir, grid, ppc, weighting, store, group = self.args
        if self._arrays is None:  # once per worker
            self._arrays = open_cube_arrays(store, group, ppc)
        out = build_block(cloud_dir, grid, block, ppc, weighting, store, group, self._arrays)
        Path(cloud_dir, f"block_{group.replace('/', '_')}_{block:05d}.json").write_text(json.dumps(out))
        Metrics.counter("ifu_cube", "planes").inc(out["planes"])
        Metrics.counter("ifu_cube", "points").inc(out["points"])
        yield out


def _ptransform_base():
    import apache_beam as beam

    return beam.PTransform


@dataclass
class BuildCubePlanes(_ptransform_base()):
    """Blocks of wavelength planes (keys: block numbers) -> built and written into the
    zarr cube; emits one count record per block (see :func:`build_block`)."""

    cloud_dir: str
    grid: ck.CubeGrid
    planes_per_chunk: int
    weighting: str
    store: str
    group: str

    def __post_init__(self):
        super().__init__()

    def expand(self, blocks):
        import apache_beam as beam

        return (blocks | "Spread" >> beam.Reshuffle()
                | "BuildPlanes" >> beam.FlatMap(_BuildBlockFn(
                    self.cloud_dir, self.grid, self.planes_per_chunk, self.weighting,
                    self.store, self.group)))


def _runner(spec):
    from nirbeam.stream.runners import RunnerSpec, make_runner

    return make_runner(spec or RunnerSpec())


def beam_cube(cloud_dir: str, grid: ck.CubeGrid, weighting: str, store: str, group: str,
              planes_per_chunk: int, attrs: dict, runner_spec=None) -> list[dict]:
    """Create the cube's zarr group and build it on Beam, block by block."""
    import apache_beam as beam

    create_cube_store(store, group, grid, planes_per_chunk, attrs)
    nblocks = -(-grid.nwave // planes_per_chunk)
    runner, options, cleanup = _runner(runner_spec)
    for old in Path(cloud_dir).glob(f"block_{group.replace('/', '_')}_*.json"):
        old.unlink()
    with beam.Pipeline(runner=runner, options=options) as p:
        _ = (p | "Blocks" >> beam.Create(list(range(nblocks)))
             | "Cube" >> BuildCubePlanes(cloud_dir, grid, planes_per_chunk, weighting, store, group))
    if cleanup:
        cleanup()
    results = []
    for b in range(nblocks):
        rec = Path(cloud_dir, f"block_{group.replace('/', '_')}_{b:05d}.json")
        if not rec.is_file():
            raise RuntimeError(f"{store}/{group}: block {b} (planes {b * planes_per_chunk}..) "
                               "was not written")
        results.append(json.loads(rec.read_text()))
    return results


def read_cube(store: str, group: str):
    """(sci, err, wmap, grid) of a cube group."""
    import zarr

    g = zarr.open_group(store, mode="r")[group]
    grid = ck.CubeGrid(**g.attrs["grid"])
    return (np.asarray(g["sci"][:], np.float64), np.asarray(g["err"][:], np.float64),
            np.asarray(g["wmap"][:], np.float64), grid)


#: Stage-1 settings of the IFU. The mode mask already holds every slice, so the draft
#: detection of the 1/f scene mask clips symmetrically (+-3 sigma: with the default +2/-3
#: the noise pixels left for the fit have a negative mean, -0.05 sigma, and the cleaned
#: data gain +0.017 DN/s per pixel on the simulator: +2.8% on the extended source's
#: aperture); no BOTS trace aperture (``mask_aperture``): the IFU has 30 traces.
STAGE1_CONFIG = {"flicker": {"n_sigma": 3.0, "mask_aperture": 0.0}}

_HEADER_KEYS = ("EXP_TYPE", "DETECTOR", "FILTER", "GRATING", "INSTRUME", "TELESCOP", "PATT_NUM",
                "NUMDTHPT", "XOFFSET", "YOFFSET", "TARGNAME", "TARG_RA", "TARG_DEC", "PROGRAM",
                "EXPSTART", "EFFEXPTM", "PATTTYPE")


def _dither_header(path: str) -> dict:
    from astropy.io import fits

    ph = fits.getheader(path, 0)
    for k in ("XOFFSET", "YOFFSET"):
        if k not in ph:
            raise ValueError(f"{path}: PRIMARY has no {k} (the dither's offset, arcsec): "
                             "needed to place the exposure in the cube")
    return {k: ph[k] for k in _HEADER_KEYS if k in ph}


# ---------------------------------------------------------------- orchestration


@dataclass(frozen=True)
class _PlanSettings:
    slice_map: np.ndarray
    geometry_source: str


def _wave_range(geo, dwave_map):
    lo, hi = [], []
    for s in np.unique(geo.slice[geo.slice >= 0]):
        w = geo.wave[geo.slice == s]
        lo.append(np.nanmin(w))
        hi.append(np.nanmax(w))
    return float(max(lo)), float(min(hi))


def _catalogue(path):
    if path is None or not os.path.isfile(path):
        return []
    return json.loads(Path(path).read_text())["sources"]


def extract_sources(sci, err, grid, catalogue, apc, wander_cents, settings: IFUSettings):
    """Aperture spectra of the catalogue's sources on a (corrected) cube.

    Returns list of dict(id, kind, wavelength, flux, flux_error, dq, center, radius)."""
    out = []
    wave = grid.wave
    var = err**2
    white = np.nanmean(sci, axis=0)
    for src in catalogue:
        sid = int(src["id"])
        x, y = float(src["x_arcsec"]), float(src["y_arcsec"])
        if src.get("kind") == "point":
            c = wander_cents
            if c is not None and np.isfinite(c).any():
                x, y = float(np.nanmedian(c[:, 0])), float(np.nanmedian(c[:, 1]))
            radii = np.interp(wave, apc.wave, apc.radius)
            corr = np.interp(wave, apc.wave, apc.apcorr)
        else:
            r0 = float(src.get("radius_arcsec", 1.0))
            # the white-light centroid inside the catalogue radius
            fr = ck.circle_fraction(grid, x, y, r0)
            w = np.nan_to_num(white) * fr
            w = np.where(w > 0, w, 0)
            if w.sum() > 0:
                X, Y = np.meshgrid(grid.xc, grid.yc)
                x, y = float((w * X).sum() / w.sum()), float((w * Y).sum() / w.sum())
            wref = float(np.median(wave))
            radii = ck.aperture_radius(wave, r0, wref) if settings.ext_radius_growth else np.full(wave.size, r0)
            corr = np.ones(wave.size)
        centers = np.tile([x, y], (wave.size, 1))
        f, e, _n = ck.aperture_spectrum(sci, var, grid, centers, radii)
        dq = np.where(np.isfinite(f), 0, 1).astype(np.uint32)
        out.append({"id": sid, "kind": src.get("kind", "point"), "wavelength": wave,
                    "flux": f * corr, "flux_error": e * corr, "dq": dq, "center": (x, y),
                    "radius": radii})
    return out


def run_ifu(inputs, outdir, refs_dir: str | None = None, ifu_refs: str | None = None,
            catalogue: str | None = None, settings: IFUSettings = IFUSettings(),
            runner=None, allow_standins: bool = False, overwrite: bool = False) -> IFURunResult:
    """The IFU batch pipeline (see the module notes).

    Parameters
    ----------
    inputs : list of str
        ``NRS_IFU`` uncal files (or folders of them): one dither pattern of one detector.
    outdir : str
    refs_dir : str
        CRDS-format detector references (default: ``<input folder>/refs``).
    ifu_refs : str
        Folder with ``geometry_<det>.fits``, ``photom.fits``, ``apcorr.fits`` (default:
        ``<input folder>/ifu_refs``).
    catalogue : str
        ``sources.json`` (default: ``<input folder>/sources.json``).
    runner : nirbeam.stream.runners.RunnerSpec or None
    """
    from nirbeam.modes import mode_for
    from nirbeam.pipelines.common import exposure_rate, run_stage1, scan_inputs
    from nirbeam.stream.settings import Settings
    from nirbeam.stream.uncal import find_uncal_files

    t_all = time.perf_counter()
    paths = find_uncal_files(list(inputs))
    base = os.path.dirname(os.path.abspath(paths[0]))
    refs_dir = refs_dir or os.path.join(base, "refs")
    ifu_refs = ifu_refs or os.path.join(base, "ifu_refs")
    catalogue = catalogue or os.path.join(base, "sources.json")
    out = Path(outdir)
    work = out / "work"
    timings = {}
    plans = scan_inputs(paths)
    for p in plans:
        if mode_for(p.meta) is not IFU:
            raise ValueError(f"{p.segments[0].path}: EXP_TYPE={p.meta.exp_type!r}, expected "
                             "'NRS_IFU': run IFU exposures on their own")
    dets = {p.meta.detector for p in plans}
    if len(dets) != 1:
        raise ValueError(f"{inputs}: detectors {sorted(dets)}: give one detector's dithers")
    det = dets.pop()
    shape = tuple(plans[0].meta.image_shape)
    geo = read_geometry(os.path.join(ifu_refs, f"geometry_{det.lower()}.fits"), shape)
    phot = read_photom(os.path.join(ifu_refs, "photom.fits"))
    apc = read_apcorr(os.path.join(ifu_refs, "apcorr.fits"))

    # stage 1: the shared ensemble stage 1 (detector1 on Beam; the slices are the scene
    # the 1/f fit leaves out), then one rate per exposure
    t = time.perf_counter()
    st1 = run_stage1(plans, str(out), Settings.from_dict(STAGE1_CONFIG), refs_dir=refs_dir, runner=runner,
                     trace_mask_for=lambda plan: geo.slice >= 0, allow_standins=allow_standins,
                     overwrite=overwrite)
    work.mkdir(parents=True, exist_ok=True)
    exps = []
    for p in plans:
        rate, var, dq = exposure_rate(st1.root, p.meta.group_name)
        exps.append({"path": p.segments[0].path, "header": _dither_header(p.segments[0].path),
                     "exposure": p.meta.exposure, "rate": rate, "var": var, "dq": dq})
    exps.sort(key=lambda e: int(e["header"].get("PATT_NUM", 0)))
    timings["stage1_s"] = time.perf_counter() - t

    class _Meta:
        exposure = exps[0]["exposure"]
        detector = det
        image_shape = shape
        exp_type = "NRS_IFU"

    regions = IFU.regions(_Meta, _PlanSettings(geo.slice, geo.path))
    on = np.zeros(geo.slice.shape, bool)
    for r in regions:
        box = geo.slice[r.bbox.slices()] == r.slice_index
        on[r.bbox.slices()] |= box

    # calibration, outliers across dithers
    t = time.perf_counter()
    fl, vr, dqs = [], [], []
    for e in exps:
        f, v = ck.surface_brightness(e["rate"], np.sqrt(e["var"]), geo.wave, phot.at)
        f[~on] = np.nan
        fl.append(f)
        vr.append(v)
        dqs.append(e["dq"])
    fl = np.stack(fl)
    vr = np.stack(vr)
    flags = ck.flag_dither_outliers(fl, np.sqrt(vr), np.where(on, geo.slice, -1),
                                    settings.outlier_nsigma, settings.outlier_percent,
                                    settings.outlier_direction)
    np.save(work / "outlier_flags.npy", flags)
    dwave = ck.pixel_dwave(geo.wave, np.where(on, geo.slice, -1))
    dalpha = np.full(geo.wave.shape, geo.pixel_scale)
    dbeta = np.full(geo.wave.shape, geo.slice_width)
    clouds = []
    for i, e in enumerate(exps):
        dq = dqs[i] | np.where(flags[i], np.uint32(1 | 16), np.uint32(0))
        clouds.append(ck.point_cloud(fl[i], vr[i], dq, geo.wave, dwave, geo.alpha, dalpha,
                                     geo.beta, dbeta, float(e["header"].get("XOFFSET", 0.0)),
                                     float(e["header"].get("YOFFSET", 0.0)), i))
    cloud = ck.concat_clouds(clouds)
    timings["calibrate_cloud_s"] = time.perf_counter() - t
    dw = settings.dwave or float(np.nanmedian(dwave[on]))
    grid = ck.CubeGrid.covering(cloud, settings.cdelt, dw, _wave_range(geo, dwave))
    cloud_dir = save_cloud(cloud, str(work / "cloud_draft"))
    store = str(out / "cube.zarr")
    expo = exps[0]["exposure"].rsplit("_", 1)[0]
    attrs = {"exp_type": "NRS_IFU", "detector": det, "weighting": settings.weighting,
             "unit": "MJy/sr", "coord_system": "ifualign", "exposures": [e["path"] for e in exps]}

    # draft cube, wander, corrected cube
    cat = _catalogue(catalogue)
    point = next((s for s in cat if s.get("kind") == "point"), None)
    t = time.perf_counter()
    model = None
    cents = None
    wander_before = wander_after = None
    if point is not None and settings.wander_degree > 0:
        beam_cube(cloud_dir, grid, settings.weighting, store, f"{expo}/draft", settings.planes_per_chunk,
                  {**attrs, "stage": "draft (no wander correction)"}, runner)
        sci0, _, _, _ = read_cube(store, f"{expo}/draft")
        cents0 = ck.plane_centroids(sci0, grid, (point["x_arcsec"], point["y_arcsec"]))
        wmod, model = ck.smooth_wander(grid.wave, cents0, settings.wander_degree)
        wander_before = _wander_stats(grid.wave, cents0, settings.wander_degree)
        cloud = ck.shift_cloud(cloud, model)
        cloud_dir = save_cloud(cloud, str(work / "cloud"))
    timings["draft_cube_s"] = time.perf_counter() - t
    t = time.perf_counter()
    blocks = beam_cube(cloud_dir, grid, settings.weighting, store, f"{expo}/s3d", settings.planes_per_chunk,
                       {**attrs, "stage": "s3d", "wander_model": _model_json(model)}, runner)
    timings["cube_s"] = time.perf_counter() - t
    sci, err, wmap, grid = read_cube(store, f"{expo}/s3d")
    if point is not None:
        cents = ck.plane_centroids(sci, grid, (point["x_arcsec"], point["y_arcsec"]))
        wander_after = _wander_stats(grid.wave, cents, settings.wander_degree)

    # extraction and products
    spectra = extract_sources(sci, err, grid, cat, apc, cents, settings)
    hdr = dict(exps[0]["header"])
    from nirbeam.sinks.cube_fits import write_s3d

    s3d = write_s3d(str(out / f"{expo}_s3d.fits"), sci, err, wmap, grid, hdr,
                    {"weighting": settings.weighting})
    written = _write_spectra(out, spectra, hdr, geo.path)
    plots = []
    if settings.plots:
        from nirbeam.sinks.plots_ifu import plot_spectra, plot_white_light

        (out / "plots").mkdir(exist_ok=True)
        plots.append(plot_white_light(str(out / "plots" / "white_light.png"), sci, grid, spectra))
        plots.append(plot_spectra(str(out / "plots" / "spectra.png"), spectra))
    # flux conservation: the cube's sum per plane against the cloud's, over exposures
    cons = _conservation(cloud, grid, sci, len(exps))
    summary = {
        "nirbeam_version": nirbeam_version, "mode": "ifu",
        "exposures": [e["path"] for e in exps], "detector": det,
        "regions": len(regions), "grid": dataclasses.asdict(grid),
        "settings": dataclasses.asdict(settings),
        "outliers_flagged": int(flags.sum()),
        "points": int(cloud.size), "blocks": len(blocks),
        "wander": {"before": wander_before, "after": wander_after, "model": _model_json(model)},
        "flux_conservation": cons,
        "sources": {str(s["id"]): {"kind": s["kind"], "center_arcsec": list(s["center"]),
                                   "flux_integral_ujy_um": float(np.nansum(s["flux"]) * grid.dwave)}
                    for s in spectra},
        "products": {"cube_zarr": store, "s3d": s3d, **written, "plots": plots},
        "timings_s": {**timings, "total_s": time.perf_counter() - t_all},
    }
    # every mode's run summary has this name
    (out / "run.json").write_text(json.dumps(summary, indent=1, default=float))
    return IFURunResult(out, summary, 0)


def _model_json(model):
    if model is None:
        return None
    wmid, coeffs = model
    return {"wave_ref_um": wmid, "coeffs_x": list(map(float, coeffs[0])),
            "coeffs_y": list(map(float, coeffs[1]))}


def _wander_stats(wave, cents, degree):
    """Wander of a centroid track: the smooth model's peak-to-peak and the per-plane RMS
    about the median, arcsec."""
    ok = np.isfinite(cents).all(axis=1)
    if ok.sum() <= degree + 1:
        return None
    sm, _ = ck.smooth_wander(wave[ok], cents[ok], degree)
    return {"smooth_ptp_x": float(np.ptp(sm[:, 0])), "smooth_ptp_y": float(np.ptp(sm[:, 1])),
            "rms_x": float(np.std(cents[ok, 0] - np.median(cents[ok, 0]))),
            "rms_y": float(np.std(cents[ok, 1] - np.median(cents[ok, 1])))}


def _conservation(cloud, grid, sci, nexp):
    """Per plane: sum(cube x spaxel area) / (sum(points x footprint x spectral overlap) /
    number of exposures), over the planes; the median and spread of the ratio."""
    ratios = []
    mdw = float(np.max(cloud.dwave))
    for k in range(grid.nwave):
        m = ck.plane_members(cloud, grid, k, k + 1, "drizzle", max_dwave=mdw)
        c = cloud.take(m)
        w0, w1 = grid.wave[k] - grid.dwave / 2, grid.wave[k] + grid.dwave / 2
        fw = np.clip(np.minimum(c.wave + c.dwave / 2, w1) - np.maximum(c.wave - c.dwave / 2, w0), 0, None) / grid.dwave
        pts = float(np.sum(c.flux * c.dx * c.dy * fw)) / nexp
        cub = float(np.nansum(sci[k])) * grid.cdelt**2
        if pts > 0:
            ratios.append(cub / pts)
    r = np.asarray(ratios)
    return {"median_ratio": float(np.median(r)), "p05": float(np.percentile(r, 5)),
            "p95": float(np.percentile(r, 95)), "total_ratio": float(np.mean(r))}


def _write_spectra(out: Path, spectra, hdr, wavelength_source: str = "") -> dict:
    """x1d.fits and spec1d_<id>.ecsv through the shared writers (nirbeam.sinks.spec1d)."""
    from nirbeam.core.spectra import Spectrum1D
    from nirbeam.sinks.spec1d import spec1d_name, write_spec1d_ecsv, write_x1d

    sps = []
    for s in spectra:
        r = np.asarray(s["radius"], np.float64)
        sps.append(Spectrum1D(
            source_id=s["id"], source_name=f"source_{s['id']}", region=f"aperture_{s['id']}",
            wavelength=s["wavelength"], flux=s["flux"], flux_error=s["flux_error"], dq=s["dq"],
            flux_unit="uJy", source_type="POINT" if s["kind"] == "point" else "EXTENDED",
            detector=str(hdr.get("DETECTOR", "")),
            wavelength_source=wavelength_source,
            extraction={"method": "circular aperture on the s3d cube",
                        "center_arcsec": [float(v) for v in s["center"]],
                        "radius_arcsec_min": float(np.nanmin(r)),
                        "radius_arcsec_max": float(np.nanmax(r)),
                        "aperture_correction": s["kind"] == "point"}))
    written = {"x1d": write_x1d(str(out / "x1d.fits"), sps, {**hdr, "EXP_TYPE": "NRS_IFU"})}
    for sp in sps:
        written[f"spec1d_{sp.source_id}"] = write_spec1d_ecsv(str(out / spec1d_name(sp.source_id)), sp)
    return written


def settings_from_overrides(overrides) -> IFUSettings:
    """:class:`IFUSettings` from ``--set ifu.KEY=VALUE`` items (TOML values); other
    sections are not the IFU pipeline's and are refused, naming the key."""
    import tomllib

    names = {f.name for f in dataclasses.fields(IFUSettings)}
    kw = {}
    for item in overrides or []:
        key, sep, val = str(item).partition("=")
        sec, _, name = key.strip().partition(".")
        if not sep or sec != "ifu" or name not in names:
            raise ValueError(f"--set {item!r}: an IFU run takes ifu.KEY=VALUE with KEY one of "
                             f"{sorted(names)}")
        kw[name] = tomllib.loads(f"v = {val.strip()}")["v"]
    st = IFUSettings(**kw)
    if st.weighting not in ck.WEIGHTINGS:
        raise ValueError(f"--set ifu.weighting={st.weighting!r}: expected one of {ck.WEIGHTINGS}")
    return st


def run_command(args, runner_spec) -> int:
    """``nirbeam run`` for IFU inputs: run, print the products, return the exit code."""
    from nirbeam.sources.ifu_refs import IFURefError
    from nirbeam.stream.config import ConfigError
    from nirbeam.stream.uncal import BadInputError

    try:
        st = settings_from_overrides(getattr(args, "overrides", []))
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None
    try:
        res = run_ifu(args.inputs, args.out, refs_dir=args.refs, runner=runner_spec,
                      allow_standins=args.allow_standins, settings=st, overwrite=args.overwrite)
    except IFURefError as exc:  # a missing or malformed IFU reference: bad input, exit 2
        raise BadInputError(str(args.inputs[0]), f"NRS_IFU input, IFU reference: {exc}") from None
    s = res.summary
    print(f"nirbeam run (IFU): {len(s['exposures'])} dithers, {s['regions']} slices, cube "
          f"{tuple(s['grid'][k] for k in ('nwave', 'ny', 'nx'))} ({s['settings']['weighting']}) "
          f"-> {os.path.abspath(args.out)}")
    for k, v in s["products"].items():
        print(f"  {k}: {v}")
    return res.exit_code
