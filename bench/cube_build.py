"""IFU cube building: time per weighting, single-spaxel ripple against the simulator's
truth, centroid wander before/after the correction.

    .venv/bin/python bench/cube_build.py [--preset ifu-small|ifu] [--seed 1] [--out DIR]
        [--readout auto|TRADITIONAL|NRSIRS2] [--ngroups N]

1. Simulates a 4-dither IFU set (``nirbeam.sim.ifu``) and runs the IFU pipeline once
   (``nirbeam.pipelines.ifu.run_ifu``, Beam direct runner): stage 1, the point cloud, the
   draft cube, the wander model and the corrected cube.
2. Builds the corrected cube again in-process with each weighting (drizzle, EMSM,
   nearest neighbour) and times it (the reference in the same run: nearest neighbour, the
   cheapest resampling); the Beam build of the pipeline is reported against the
   in-process drizzle build of the same cloud.
3. Ripple: for the spaxels the point source dominates (its own truth, mean over
   wavelength, >= 20% of its brightest spaxel), the ratio of the cube to the truth (the
   scene integrated over each spaxel, ``scene_cube``) along wavelength, a quintic in
   wavelength removed (the smooth widening of the PSF by the footprints); the ripple
   amplitude is the RMS of what is left (median and maximum over those spaxels). Lower is
   better; nearest neighbour is the reference. Noise is included (the simulator's).
4. Wander: the smooth (cubic) centroid track's peak-to-peak before and after the
   correction, in spaxels, and the corrected centroids' offset from the true position.

Writes ``bench/results/cube_build_<preset>.json`` (with provenance); with ``--readout``
or ``--ngroups`` the name gets ``_<readout>`` / ``_g<N>`` (the preset's default readout:
``ifu`` full frame IRS2, ``ifu-small`` traditional).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import provenance, write_result  # noqa: E402

from nirbeam.pipelines.ifu import (  # noqa: E402
    beam_cube,
    build_block,
    create_cube_store,
    load_cloud,
    open_cube_arrays,
    read_cube,
    run_ifu,
)
from nirbeam.sim.ifu import scene_cube, simulate_ifu  # noqa: E402
from nirbeam.transforms import cube as ck  # noqa: E402


def ripple(cube, truth, grid, degree=5, level=0.2):
    """Single-spaxel ripple near the point source: for every spaxel whose truth (mean over
    wavelength) is at least ``level`` x the brightest, the RMS of cube/truth along
    wavelength after removing a polynomial of ``degree`` in wavelength (the smooth part:
    the PSF's widening by the pixel and spaxel footprints). Returns {(j, i): rms}."""
    mean = np.nanmean(truth, axis=0)
    t = (grid.wave - grid.wave.mean()) / np.ptp(grid.wave)
    out = {}
    for j, i in zip(*np.nonzero(mean >= level * np.nanmax(mean)), strict=True):
        r = cube[:, j, i] / truth[:, j, i]
        ok = np.isfinite(r)
        p = np.polyfit(t[ok], r[ok], degree)
        out[(int(j), int(i))] = float(np.std(r[ok] - np.polyval(p, t[ok])))
    return out


def ripple_near(cube, truth, truth_point, grid):
    """:func:`ripple` on the spaxels the point source dominates (selected on its own
    truth), measured against the whole scene's truth."""
    sel = ripple(truth_point, truth_point, grid)  # selection only
    t = (grid.wave - grid.wave.mean()) / np.ptp(grid.wave)
    out = {}
    for (j, i) in sel:
        r = cube[:, j, i] / truth[:, j, i]
        ok = np.isfinite(r)
        p = np.polyfit(t[ok], r[ok], 5)
        out[(j, i)] = float(np.std(r[ok] - np.polyval(p, t[ok])))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="ifu-small")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--readout", default=None, choices=("auto", "TRADITIONAL", "NRSIRS2"),
                    help="IFUSimConfig.readout (default: the preset's)")
    ap.add_argument("--ngroups", type=int, default=None, help="IFUSimConfig.ngroups")
    args = ap.parse_args(argv)
    start = provenance(sys.argv if argv is None else argv)
    work = Path(args.out or tempfile.mkdtemp(prefix="nirbeam-cube-bench-"))
    t = time.perf_counter()
    over = {k: v for k, v in (("readout", args.readout), ("ngroups", args.ngroups)) if v}
    sim = simulate_ifu(work / "sim", args.preset, seed=args.seed, **over)
    t_sim = time.perf_counter() - t
    res = run_ifu([str(work / "sim")], str(work / "out"), overwrite=True)
    s = res.summary
    cloud = load_cloud(str(work / "out" / "work" / "cloud"))
    g = ck.CubeGrid(**s["grid"])
    cfg = sim.config
    truth = scene_cube(cfg, g.wave, g.xc, g.yc, g.cdelt, corrected=True)
    # only the point source: the ripple is measured where it dominates
    truth_pt = scene_cube(dataclasses.replace(cfg, ext_cont_ujy=0.0, line_flux_ujy_um=0.0),
                          g.wave, g.xc, g.yc, g.cdelt, corrected=True)
    # in-process build per weighting (one warm-up plane first: numba compilation)
    results = {}
    cubes = {}
    variants = {w: (w, {}) for w in ck.WEIGHTINGS}
    # EMSM with a wider kernel (scale radius one spaxel, region of interest two)
    variants["emsm_wide"] = ("emsm", {"scalerad": g.cdelt, "roi_spatial": 2 * g.cdelt})
    for name, (w, kw) in variants.items():
        ck.build_plane(cloud.take(ck.plane_members(cloud, g, 0, 1, w)), g, 0, w, **kw)  # compile
        t = time.perf_counter()
        f, v, _ = ck.build_cube(cloud, g, w, **kw)
        dt = time.perf_counter() - t
        cubes[name] = f
        rp = ripple_near(f, truth, truth_pt, g)
        tot = np.nansum(f, axis=(1, 2)) * g.cdelt**2
        tt = np.nansum(truth, axis=(1, 2)) * g.cdelt**2
        results[name] = {
            "weighting": w, "parameters": kw, "build_s": dt, "planes": g.nwave, "points": cloud.size,
            "ms_per_plane": 1e3 * dt / g.nwave,
            "ripple_rms_median": float(np.median(list(rp.values()))),
            "ripple_rms_max": float(np.max(list(rp.values()))),
            "ripple_rms_spaxels": {f"{a},{b}": x for (a, b), x in rp.items()},
            # the noise floor of the same ratio: the cube's own error over the truth
            "noise_rms_median": float(np.median([np.nanmedian(np.sqrt(v[:, j, i]) / truth[:, j, i])
                                                 for (j, i) in rp])),
            "cube_over_truth_total_median": float(np.median(tot / tt)),
            # resolution: the point source's brightest spaxel over its 5x5 sum (truth: the
            # same on the scene integrated over spaxels)
            "peak_fraction_median": _peak_fraction(f, g, cfg.point_xy),
            "peak_fraction_truth_median": _peak_fraction(truth_pt, g, cfg.point_xy),
        }
    # the Beam transform against the same blocks built and written in one process
    cloud_dir = str(work / "out" / "work" / "cloud")
    store = str(work / "bench_cube.zarr")
    ppc = s["settings"]["planes_per_chunk"]
    nblocks = -(-g.nwave // ppc)
    create_cube_store(store, "inproc", g, ppc, {})
    arrays = open_cube_arrays(store, "inproc", ppc)
    t = time.perf_counter()
    for b in range(nblocks):
        build_block(cloud_dir, g, b, ppc, "drizzle", arrays=arrays)
    t_blocks = time.perf_counter() - t
    t = time.perf_counter()
    beam_cube(cloud_dir, g, "drizzle", store, "beam", ppc, {})
    t_beam = time.perf_counter() - t
    beam_record = {"blocks": nblocks, "inprocess_blocks_with_zarr_s": t_blocks,
                   "beam_direct_runner_s": t_beam, "beam_vs_inprocess": t_beam / t_blocks}
    near = results["nearest"]
    for w in variants:
        results[w]["time_vs_nearest"] = results[w]["build_s"] / near["build_s"]
        results[w]["ripple_vs_nearest"] = (results[w]["ripple_rms_median"]
                                           / near["ripple_rms_median"])
    # centroids of the pipeline's corrected cube against the true position
    sci, _, _, g2 = read_cube(str(work / "out" / "cube.zarr"),
                              f"{Path(s['products']['s3d']).name.replace('_s3d.fits', '')}/s3d")
    cents = ck.plane_centroids(sci, g2, cfg.point_xy)
    off = cents - np.asarray(cfg.point_xy)
    sm, _ = ck.smooth_wander(g2.wave, cents, 3)
    injected = json.loads(sim.truth.read_text())["outliers"]
    flags = np.load(work / "out" / "work" / "outlier_flags.npy")
    record = {
        "preset": args.preset, "seed": args.seed, "simulate_s": t_sim,
        "readout": sim.config.readout, "readpatt": sim.config.readpatt,
        "ngroups": sim.config.ngroups, "tframe_s": sim.config.tframe,
        "grid": s["grid"], "points": cloud.size, "dithers": len(s["exposures"]),
        "pipeline_timings_s": s["timings_s"],
        "beam_cube_s_vs_inprocess_drizzle": s["timings_s"]["cube_s"] / results["drizzle"]["build_s"],
        "beam_vs_same_blocks_in_process": beam_record,
        "weightings": results,
        "chosen_weighting": s["settings"]["weighting"],
        "wander_spaxels": {
            "before_smooth_ptp": [s["wander"]["before"]["smooth_ptp_x"] / g.cdelt,
                                  s["wander"]["before"]["smooth_ptp_y"] / g.cdelt],
            "after_smooth_ptp": [s["wander"]["after"]["smooth_ptp_x"] / g.cdelt,
                                 s["wander"]["after"]["smooth_ptp_y"] / g.cdelt],
            "after_rms_per_plane": [s["wander"]["after"]["rms_x"] / g.cdelt,
                                    s["wander"]["after"]["rms_y"] / g.cdelt],
            "after_median_offset_from_truth": [float(np.nanmedian(off[:, 0])) / g.cdelt,
                                               float(np.nanmedian(off[:, 1])) / g.cdelt],
            "after_smooth_ptp_recomputed": [float(np.ptp(sm[:, 0])) / g.cdelt,
                                            float(np.ptp(sm[:, 1])) / g.cdelt],
        },
        "flux_conservation": s["flux_conservation"],
        "sources_flux_integral_vs_truth": _flux_vs_truth(work),
        "outliers_flagged": s["outliers_flagged"],
        "outliers_injected": len(injected),
        "outliers_injected_found": int(sum(bool(flags[o["exposure"], o["y"], o["x"]]) for o in injected)),
        "workdir": str(work),
    }
    tag = (f"_{args.readout}" if args.readout else "") + (f"_g{args.ngroups}" if args.ngroups else "")
    out = write_result(Path(__file__).resolve().parent / "results" / f"cube_build_{args.preset}{tag}.json",
                       record, start=start)
    print(json.dumps({k: record[k] for k in ("weightings", "wander_spaxels", "flux_conservation",
                                             "sources_flux_integral_vs_truth")}, indent=1))
    print(f"wrote {out}")


def _peak_fraction(cube, g, xy):
    i = int(round((xy[0] - g.x0) / g.cdelt))
    j = int(round((xy[1] - g.y0) / g.cdelt))
    box = cube[:, j - 2:j + 3, i - 2:i + 3]
    return float(np.nanmedian(np.nanmax(box, axis=(1, 2)) / np.nansum(box, axis=(1, 2))))


def _flux_vs_truth(work: Path) -> dict:
    from astropy.table import Table

    truth = json.loads((work / "sim" / "truth.json").read_text())["sources"]
    out = {}
    for sid, t in truth.items():
        tab = Table.read(work / "out" / f"spec1d_{sid}.ecsv")
        w, f = np.asarray(tab["wavelength"]), np.asarray(tab["flux"])
        ok = np.isfinite(f)
        tr = np.interp(w[ok], t["wavelength_um"], t["flux_ujy"])
        out[sid] = {"kind": t["kind"], "integral_ratio": float(np.sum(f[ok]) / np.sum(tr)),
                    "per_plane_ratio_median": float(np.median(f[ok] / tr)),
                    "per_plane_ratio_rms": float(np.std(f[ok] / tr)),
                    "planes_measured": int(ok.sum()), "planes": int(ok.size)}
    return out


if __name__ == "__main__":
    main()
