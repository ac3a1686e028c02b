"""``nirbeam export eureka OUTDIR``: a finished run's products in other tools' formats.

Reads the store of a run (``OUTDIR/cubes.zarr``) and writes, per exposure and detector,
``<group>_SpecData.h5`` and ``<group>_LCData.h5`` in Eureka's Stage 3/4 layout
(:mod:`nirbeam.sinks.eureka`) into ``DEST`` (default ``OUTDIR/eureka``).
"""

from __future__ import annotations

import json
import os

import numpy as np

from nirbeam import dqflags
from nirbeam.sinks import fs, zarr_store
from nirbeam.stream.wavelengths import is_pixel_axis

__all__ = ["export_eureka", "export_command"]


def _group_source(root: str, g: str) -> str:
    try:
        _, attrs = zarr_store.load_arrays(root, f"{g}/extraction")
        return attrs.get("wavelength_source", "")
    except Exception:  # noqa: BLE001
        return ""


def export_eureka(outdir: str, dest: str | None = None) -> list[str]:
    """Write Eureka ``SpecData.h5``/``LCData.h5`` for every group of a finished run.

    Raises
    ------
    BadInputError
        Not a run folder, or a group without a wavelength solution (Eureka bins in
        microns): the message says which and how to give wavelengths.
    """
    from nirbeam.sinks.eureka import lc_dataset, mean_bins, spec_dataset, write_eureka
    from nirbeam.stream.uncal import BadInputError

    root = fs.join(outdir, "cubes.zarr")
    rj = fs.join(outdir, "run.json")
    if not fs.isfile(rj) or not fs.isdir(root):
        raise BadInputError(outdir, "not a finished nirbeam output folder (no run.json or "
                                    "cubes.zarr)")
    summary = json.loads(fs.read_text(rj))
    dest = dest or fs.join(outdir, "eureka")
    fs.makedirs(dest)
    groups = sorted(name for name, _ in zarr_store.open_root(root).groups())
    written = []
    for g in groups:
        stages = zarr_store.open_root(root)[g]
        if "spectra" not in stages:
            continue
        source = _group_source(root, g)
        if is_pixel_axis(source):
            raise BadInputError(
                outdir, f"group {g} has no wavelength solution ({source}); Eureka bins in "
                        "microns: rerun with [extract] wavelength_map or "
                        "wavelength_coefficients", "cubes.zarr")
        done = zarr_store.completed(root, g, "spectra")
        read = {n: zarr_store.read_stack(root, g, "spectra", n)
                for n in ("flux", "flux_error", "dq", "box_flux", "box_flux_error",
                          "background", "wavelength", "int_mid_BJD_TDB")}
        keep = np.flatnonzero(done)
        t = read["int_mid_BJD_TDB"][keep]
        flux = read["flux"][keep]
        err = read["flux_error"][keep]
        bad = ((read["dq"][keep] & dqflags.DO_NOT_USE) != 0) | ~np.isfinite(flux) | ~np.isfinite(err)
        wl = read["wavelength"]
        arrays, attrs = zarr_store.load_arrays(root, f"{g}/extraction")
        try:
            tr, _ = zarr_store.load_arrays(root, f"{g}/trace")
            cy, cs = tr["centroid_y"][keep], tr["width"][keep]
        except Exception:  # noqa: BLE001 - older run: no diagnostics
            cy = cs = np.full(keep.size, np.nan)
        hdr = dict(stages.attrs.get("exposure", {}) or {})
        meta_attrs = {
            "inst": "nirspec", "photometry": False, "suffix": "nirbeam",
            "inst_detector": str(hdr.get("DETECTOR", g.rsplit("_", 1)[-1])).lower(),
            "inst_filter": str(hdr.get("FILTER", "")).lower(),
            "inst_grating": str(hdr.get("GRATING", "")).lower(),
            "n_int": int(keep.size), "time_axis": "y", "spec_hw": float(attrs.get("half_width", 0)),
            "bg_hw": float((attrs.get("background_region") or [0])[0]),
            "wavelength_source": source, "flux_units": "DN/s",
            "nirbeam_version": summary.get("nirbeam_version", summary.get("version", "")),
            "stage": 3,
        }
        spec = spec_dataset(
            time=t, wavelength=wl, optspec=np.where(bad, np.nan, flux),
            opterr=np.where(bad, np.nan, err), optmask=bad,
            stdspec=read["box_flux"][keep], stdvar=read["box_flux_error"][keep] ** 2,
            skylev=read["background"][keep], centroid_y=cy, centroid_sy=cs,
            medflux=arrays["median_image"], attrs=meta_attrs,
        )
        p = write_eureka(spec, os.path.join(dest, f"{g}_SpecData.h5"))
        written.append(p)
        lcs, _ = zarr_store.load_arrays(root, f"{g}/lightcurves")
        edges = np.asarray(lcs["bin_edges"], float)
        data, lerr, lmask = mean_bins(flux, err, bad, wl, edges)
        sky, _, _ = mean_bins(read["background"][keep], np.ones_like(flux), bad, wl, edges)
        finite = wl[np.isfinite(wl)]
        white_edges = np.array([finite.min(), np.nextafter(finite.max(), np.inf)])
        wf, we, wm = mean_bins(flux, err, bad, wl, white_edges)
        ws, _, _ = mean_bins(read["background"][keep], np.ones_like(flux), bad, wl, white_edges)
        lc = lc_dataset(
            time=t, edges=edges, data=data, err=lerr, mask=lmask, skylev=sky,
            white=wf[0], white_err=we[0], white_mask=wm[0], white_skylev=ws[0],
            white_wavelength=0.5 * (white_edges[0] + white_edges[1]),
            centroid_y=cy, centroid_sy=cs, attrs={"wavelength_source": source},
        )
        written.append(write_eureka(lc, os.path.join(dest, f"{g}_LCData.h5")))
    if not written:
        raise BadInputError(outdir, "no spectra in the store: nothing to export", "cubes.zarr")
    return written


def export_command(fmt: str, outdir: str, dest: str | None) -> int:
    """CLI entry: ``nirbeam export eureka OUTDIR [--to DEST]``."""
    from nirbeam.stream.config import ConfigError

    if fmt != "eureka":
        raise ConfigError(f"nirbeam export: unknown format {fmt!r}; known: eureka")
    for p in export_eureka(outdir, dest):
        print(f"wrote {p}")
    return 0
