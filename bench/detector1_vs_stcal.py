"""Benchmark: nirbeam's full detector1 chain vs stcal's jump + ramp_fit (OLS_C), one core.

Both run in this process on the same simulated arrays, single-threaded (numba threads = 1,
stcal ``max_cores='none'``). nirbeam runs every step (dq_init, saturation, superbias,
refpix, linearity, dark, jump, ramp_fit) from the uint16 ramp per integration; stcal runs
only jump (``detect_jumps_data``) and ramp fitting (``ramp_fit_data``, OLS_C) on the
already calibrated float32 groups of the whole exposure, as jwst calls them.

nirbeam runs in three configurations, interleaved with stcal in the same process:
``no_hook`` (the fused kernel alone), ``default_1f`` (the pipeline's default: group-level 1/f
cleaning before jump, ``FlickerParams()``, with a scene mask from the first integration's
rate, fused since issue 14) and ``default_1f_unfused`` (the same, step by step: the path
the default took before issue 14); each is timed twice (before and after stcal) and the
faster run is kept. Optionally (``--threads N``) the fused default also on N numba threads.

Reported: pixel-groups per second (nints*ngroups*ny*nx / process CPU time; wall time is
printed too: CPU time is used because the development machine is shared) for each, their ratio,
peak resident memory above the pre-run level (VmHWM reset through /proc/self/clear_refs,
so it includes numba's allocations), and agreement of the outputs. Written to
``bench/results/detector1_vs_stcal.json``.

The default path is also split per integration (CPU ms: setup, calibrate_cube, hook,
jump_fit, model_variance, python_around; ``per_integration_cpu_ms``) and its figure given
per core (``Mpix_groups_per_cpu_s_per_core``, and without the hook's own time).

Usage: ``python bench/detector1_vs_stcal.py [--nints-large N] [--nints-small N]
[--before-json RECORD]`` (``RECORD``: this script's output at an earlier commit, run with
the same options: its default_1f figures are embedded and compared, ``before_after``).
Note: with >= 100 integrations stcal's jump step switches to sigma clipping across
integrations (jwst default ``only_use_ints``); nirbeam always works per integration.
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", str(os.cpu_count() or 1))  # pool; 1 used
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from _provenance import provenance, write_result  # noqa: E402  (bench/ is sys.path[0])

from nirbeam import dqflags  # noqa: E402
from nirbeam.transforms.detector1 import (  # noqa: E402
    Detector1Params,
    RampTiming,
    calibrate_groups,
    run_detector1,
)
from nirbeam.transforms.reference import ReferenceArrays  # noqa: E402
from nirbeam.transforms.refpix import SubarrayGeometry  # noqa: E402

DQFLAGS = dict(dqflags.FLAGS)
TGROUP = 0.90156


def _rss_kb(field="VmRSS"):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def make_data(nints, ngroups, ny, nx, seed=0, cr_rate=0.002, saturation=60000.0):
    """uint16 ramps (nints, ngroups, ny, nx): bias + Poisson + read noise + cosmic rays."""
    rng = np.random.default_rng(seed)
    gain, rn = 1.0, 14.0
    bias = (12000 + rng.normal(0, 200, (ny, nx))).astype(np.float32)
    rate = rng.gamma(1.2, 30.0, (ny, nx)).astype(np.float32)  # DN/s, spread of S/N
    rate[ny // 2 - 3: ny // 2 + 3] += 2000.0  # a bright trace
    ramps = np.empty((nints, ngroups, ny, nx), np.uint16)
    for i in range(nints):
        acc = np.cumsum(rng.poisson(rate * gain * TGROUP, (ngroups, ny, nx)), axis=0,
                        dtype=np.float32)
        acc += bias
        acc += rng.normal(0, rn / np.sqrt(2), (ngroups, ny, nx)).astype(np.float32)
        ncr = rng.poisson(cr_rate * ny * nx * ngroups / 10)
        ys, xs, gs = (rng.integers(0, ny, ncr), rng.integers(0, nx, ncr),
                      rng.integers(1, ngroups, ncr))
        for y, x, g in zip(ys, xs, gs, strict=True):
            acc[g:, y, x] += rng.uniform(100, 5000)
        ramps[i] = np.clip(acc, 0, 65535)
    coeffs = np.zeros((5, ny, nx), np.float32)
    coeffs[1] = 1.0
    coeffs[2] = 1.5e-6
    coeffs[3] = 2e-12
    z = np.zeros((ny, nx), np.uint32)
    refs = ReferenceArrays(
        mask=z.copy(), saturation=np.full((ny, nx), saturation, np.float32), saturation_dq=z.copy(),
        superbias=bias, superbias_dq=z.copy(), linearity=coeffs, linearity_dq=z.copy(),
        dark=(np.arange(ngroups, dtype=np.float32)[:, None, None] * 0.01
              + np.zeros((ngroups, ny, nx), np.float32)),
        dark_dq=z.copy(), readnoise=np.full((ny, nx), rn, np.float32),
        gain=np.full((ny, nx), gain, np.float32), sources={"bench": "synthetic"},
    )
    return ramps, refs


def run_nirbeam(ramps, refs, timing, geom, params, hook=None, fused=True, parallel=False):
    out = []
    for i in range(ramps.shape[0]):
        out.append(run_detector1(ramps[i], refs, timing, params, geom, hook, fused=fused,
                                 parallel=parallel))
    return out


def split_default_1f(ramps, refs, timing, geom, params, hook, reps=2):
    """Per-integration CPU ms of the default (hooked, fused) path, by part: the fused
    setup (prepasses and reference-derived arrays), the calibrated cube, the 1/f hook
    (a black box here), jump + ramp fit, the hook's model variance, and the Python
    around them (the rest of ``run_detector1``). Timers wrap the module functions
    (``process_time`` per call: a few microseconds of their own); best of ``reps``."""
    from nirbeam.transforms import detector1 as d1

    parts = {"setup": "_calib_setup", "calibrate_cube": "_calibrate_cube",
             "jump_fit": "_run_bands", "model_variance": "add_model_variance"}
    def wrap(acc, name, fn):
        def w(*a, **kw):
            t = time.process_time()
            r = fn(*a, **kw)
            acc[name] += time.process_time() - t
            return r
        return w

    best = None
    for _ in range(reps):
        acc = dict.fromkeys([*parts, "hook"], 0.0)
        hk = wrap(acc, "hook", hook)
        hk.before_jump = bool(getattr(hook, "before_jump", True))
        saved = {n: getattr(d1, n) for n in parts.values()}
        try:
            for k, n in parts.items():
                setattr(d1, n, wrap(acc, k, saved[n]))
            t0 = time.process_time()
            for i in range(ramps.shape[0]):
                run_detector1(ramps[i], refs, timing, params, geom, hk)
            total = time.process_time() - t0
        finally:
            for n, f in saved.items():
                setattr(d1, n, f)
        ms = {k: v / ramps.shape[0] * 1e3 for k, v in acc.items()}
        ms["python_around"] = total / ramps.shape[0] * 1e3 - sum(ms.values())
        ms["total"] = total / ramps.shape[0] * 1e3
        if best is None or ms["total"] < best["total"]:
            best = ms
    return {k: round(v, 4) for k, v in best.items()}


def _timed(fn):
    t0, w0 = time.process_time(), time.perf_counter()
    res = fn()
    return res, time.process_time() - t0, time.perf_counter() - w0


def run_stcal(groups4, gdq4, pdq, refs, timing):
    from stcal.jump.jump import detect_jumps_data
    from stcal.jump.jump_class import JumpData
    from stcal.ramp_fitting.ramp_fit import ramp_fit_data
    from stcal.ramp_fitting.ramp_fit_class import RampData

    jd = JumpData(gain2d=refs.gain.copy(), rnoise2d=refs.readnoise.copy(), dqflags=DQFLAGS)
    jd.init_arrays_from_arrays(groups4, gdq4, pdq)
    jd.nframes = timing.nframes
    jd.dt_group = np.ones(1)
    jd.n_reads_groupdiff = np.ones(1) * 2 * timing.nframes
    jd.max_cores = "none"
    gdq, pdq, _, _ = detect_jumps_data(jd)
    rd = RampData()
    rd.set_arrays(groups4, gdq, pdq, np.zeros(pdq.shape, np.float32))
    rd.set_meta(name="NIRSPEC", frame_time=timing.tframe, group_time=timing.tgroup,
                groupgap=timing.groupgap, nframes=timing.nframes, drop_frames1=None)
    rd.set_dqflags(DQFLAGS)
    rd.start_row = 0
    rd.num_rows = groups4.shape[2]
    rd.algorithm = "OLS_C"
    rd.suppress_one_group_ramps = True
    _, integ, _ = ramp_fit_data(rd, False, refs.readnoise.copy(), refs.gain.copy(), "OLS_C",
                                "optimal", "none")
    return integ


def bench_shape(nints, ngroups, ny, nx, substrt1, threads=1, saturation=60000.0):
    label = f"{nints}x{ngroups}x{ny}x{nx}"
    print(f"\n== shape {label} (nints x ngroups x ny x nx) ==", flush=True)
    t0 = time.perf_counter()
    ramps, refs = make_data(nints, ngroups, ny, nx, saturation=saturation)
    timing = RampTiming(ngroups, 1, 0, TGROUP, TGROUP)
    geom = SubarrayGeometry(substrt1, nx, 1, ny)
    params = Detector1Params()
    print(f"data made in {time.perf_counter() - t0:.1f} s", flush=True)
    npg = nints * ngroups * ny * nx
    # warm-up (compile / load numba caches) on one integration
    run_detector1(ramps[0], refs, timing, params, geom)

    # calibrated groups for stcal (untimed): nirbeam's calibrate_groups without jump
    no_jump = Detector1Params(jump=type(params.jump)(enabled=False))
    groups4 = np.empty(ramps.shape, np.float32)
    gdq4 = np.empty(ramps.shape, np.uint8)
    pdq = None
    for i in range(nints):
        g, q, p, _ = calibrate_groups(ramps[i], refs, timing, no_jump, geom)
        groups4[i] = g
        gdq4[i] = q
        pdq = p

    from nirbeam.transforms.flicker import FlickerParams, make_group_hook, scene_mask

    first = run_detector1(ramps[0], refs, timing, params, geom)
    fp = FlickerParams()
    hook = make_group_hook(fp, scene_mask(first.rate, dq=first.dq, **fp.mask_kwargs()))
    configs = {"no_hook": {}, "default_1f": {"hook": hook},
               "default_1f_unfused": {"hook": hook, "fused": False}}
    if threads > 1:
        configs[f"default_1f_threads{threads}"] = {"hook": hook, "parallel": True}
    for kw in configs.values():  # warm-up (compile / load numba caches)
        run_nirbeam(ramps[:1], refs, timing, geom, params, **kw)
    cpu = {k: [] for k in configs}
    wall = {k: [] for k in configs}
    outs = {}

    def nirbeam_round():
        for k, kw in configs.items():
            if kw.get("parallel"):
                numba.set_num_threads(threads)
            res, c, w = _timed(lambda kw=kw: run_nirbeam(ramps, refs, timing, geom, params, **kw))
            numba.set_num_threads(1)
            cpu[k].append(c)
            wall[k].append(w)
            outs[k] = res
            print(f"nirbeam {k:24s}: cpu {c:8.2f} s (wall {w:8.2f} s)  "
                  f"{npg / c / 1e6:8.2f} Mpix-groups/s", flush=True)

    base = _rss_kb()
    _reset_peak()
    nirbeam_round()
    nb_peak = (_rss_kb("VmHWM") - base) / 1024.0
    res = outs["no_hook"]

    logging.getLogger("stcal").setLevel(logging.WARNING)
    g_in, q_in, p_in = groups4.copy(), gdq4.copy(), pdq.copy()
    base = _rss_kb()
    _reset_peak()
    integ, t_st, st_wall = _timed(lambda: run_stcal(g_in, q_in, p_in, refs, timing))
    st_peak = (_rss_kb("VmHWM") - base) / 1024.0
    print(f"stcal jump+ramp_fit: cpu {t_st:8.2f} s (wall {st_wall:8.2f} s)  "
          f"{npg / t_st / 1e6:8.2f} Mpix-groups/s  peak +{st_peak:.0f} MiB", flush=True)
    nirbeam_round()  # second round after stcal (the machine is shared: keep the faster)
    for k in configs:
        same = all(np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True)
                   for a, b in zip(outs[k], outs["default_1f" if k != "no_hook" else k],
                                   strict=True)
                   for f in ("rate", "err", "dq", "var_poisson", "var_rnoise"))
        if k != "no_hook" and not same:
            raise SystemExit(f"{k} differs from default_1f: the paths must be identical")
    t_nb, best_wall = min(cpu["no_hook"]), min(wall["no_hook"])
    ratio = t_st / t_nb
    per_config = {k: {"cpu_s": min(cpu[k]), "wall_s": min(wall[k]), "all_cpu_s": cpu[k],
                      "all_wall_s": wall[k], "pixel_groups_per_cpu_s": npg / min(cpu[k]),
                      "ratio_stcal_cpu_over_this": t_st / min(cpu[k])} for k in configs}
    if "default_1f_unfused" in per_config:
        per_config["default_1f"]["speedup_cpu_vs_unfused"] = (
            min(cpu["default_1f_unfused"]) / min(cpu["default_1f"]))
    for k, v in per_config.items():
        print(f"  {k:24s} {v['pixel_groups_per_cpu_s'] / 1e6:7.2f} M/s per core, "
              f"stcal/this = {v['ratio_stcal_cpu_over_this']:.2f}x", flush=True)

    split = split_default_1f(ramps, refs, timing, geom, params, hook)
    npg_int = ngroups * ny * nx
    per_config["default_1f"]["per_integration_cpu_ms"] = split
    per_config["default_1f"]["Mpix_groups_per_cpu_s_per_core"] = (
        npg / min(cpu["default_1f"]) / 1e6)
    per_config["default_1f"]["Mpix_groups_per_cpu_s_per_core_without_hook_time"] = (
        npg_int / max(split["total"] - split["hook"], 1e-9) / 1e3)
    print("  default_1f per integration (CPU ms): "
          + ", ".join(f"{k} {v:.3f}" for k, v in split.items()), flush=True)

    rate = np.stack([r.rate for r in res])
    dq = np.stack([r.dq for r in res])
    both = np.isfinite(rate) & np.isfinite(integ["slope"]) & (dq == integ["dq"])
    rel = np.abs(rate[both] - integ["slope"][both]) / np.maximum(np.abs(integ["slope"][both]),
                                                                  1e-3)
    agree = {
        "dq_equal_fraction": float(np.mean(dq == integ["dq"])),
        "jump_flag_agreement": float(np.mean((dq & 4) == (integ["dq"] & 4))),
        "rate_rel_diff_median": float(np.median(rel)),
        "rate_rel_diff_p99": float(np.percentile(rel, 99)),
        "rate_rel_diff_max": float(rel.max()),
    }
    print("agreement (no_hook vs stcal):", json.dumps(agree), flush=True)
    return {
        "shape": {"nints": nints, "ngroups": ngroups, "ny": ny, "nx": nx},
        "pixel_groups": npg,
        "nirbeam_cpu_s": t_nb, "stcal_cpu_s": t_st,
        "nirbeam_wall_s": best_wall, "stcal_wall_s": st_wall,
        "nirbeam_pixel_groups_per_s": npg / t_nb,
        "stcal_pixel_groups_per_s": npg / t_st,
        "ratio_nirbeam_over_stcal": ratio,
        "nirbeam_peak_rss_mib": nb_peak, "stcal_peak_rss_mib": st_peak,
        "nirbeam_configs": per_config,
        "default_1f_paths_identical": True,  # checked above (SystemExit otherwise)
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "stcal_jump_mode": ("sigma-clip across integrations" if nints >= 100
                            else "two-point difference per integration"),
        "agreement": agree,
    }


def _default_1f_figures(shape_rec):
    c = shape_rec["nirbeam_configs"]["default_1f"]
    return {
        "Mpix_groups_per_cpu_s_per_core": c["Mpix_groups_per_cpu_s_per_core"],
        "Mpix_groups_per_cpu_s_per_core_without_hook_time":
            c.get("Mpix_groups_per_cpu_s_per_core_without_hook_time"),
        "jump_fit_cpu_ms_per_integration": c["per_integration_cpu_ms"]["jump_fit"],
        "total_cpu_ms_per_integration": c["per_integration_cpu_ms"]["total"],
        "no_hook_Mpix_groups_per_cpu_s":
            shape_rec["nirbeam_configs"]["no_hook"]["pixel_groups_per_cpu_s"] / 1e6,
        "load_average_end": shape_rec.get("load_average_end"),
    }


def before_after(path, results):
    """``before`` (the earlier record's default_1f figures, load and provenance) and
    ``before_after`` (per shape: before / after figures and their ratios)."""
    with open(path) as fh:
        old = json.load(fh)
    key = lambda r: tuple(r["shape"][k] for k in ("nints", "ngroups", "ny", "nx"))  # noqa: E731
    olds = {key(r): r for r in old["shapes"]}
    out = {"before": {"file": os.path.basename(path), "provenance": old.get("provenance"),
                      "load_average_start": old["machine"].get("load_average_start")},
           "before_after": []}
    for r in results["shapes"]:
        o = olds.get(key(r))
        if o is None:
            continue
        fb, fa = _default_1f_figures(o), _default_1f_figures(r)
        out["before_after"].append({
            "shape": r["shape"], "before": fb, "after": fa,
            "speedup_Mpix_per_core": fa["Mpix_groups_per_cpu_s_per_core"]
            / fb["Mpix_groups_per_cpu_s_per_core"],
            "speedup_jump_fit": fb["jump_fit_cpu_ms_per_integration"]
            / fa["jump_fit_cpu_ms_per_integration"],
            "speedup_no_hook": fa["no_hook_Mpix_groups_per_cpu_s"]
            / fb["no_hook_Mpix_groups_per_cpu_s"],
        })
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nints-small", type=int, default=20, help="nints of the 20x20x32x2048 shape")
    ap.add_argument("--nints-large", type=int, default=465,
                    help="nints of the 465x70x32xNX shape (reduce if stcal is too slow)")
    ap.add_argument("--nx-large", type=int, default=512,
                    help="nx of the 70-group shape (2048: G395H SUB2048-like)")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--nints-prism", type=int, default=1200,
                    help="nints of the PRISM 1200x5x32x512 shape (0 skips it)")
    ap.add_argument("--skip-small", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="also time the default path on this many numba threads")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "detector1_vs_stcal.json"))
    ap.add_argument("--saturation", type=float, default=60000.0,
                    help="saturation threshold, raw DN (60000: the trace saturates from "
                         "~group 25; 40000: from ~group 15)")
    ap.add_argument("--before-json", default=None,
                    help="a record of this script from an earlier commit (same options): "
                         "its default_1f figures are embedded as 'before' and compared "
                         "shape by shape in 'before_after'")
    args = ap.parse_args(argv)
    prov = provenance(argv)
    numba.set_num_threads(1)
    results = {
        "machine": {"cpu": platform.processor() or platform.machine(), "python": sys.version,
                    "numba": numba.__version__, "numpy": np.__version__,
                    "numba_threads": numba.get_num_threads()},
        "shapes": [],
    }
    import stcal

    results["machine"]["stcal"] = stcal.__version__
    results["machine"]["load_average_start"] = [round(x, 2) for x in os.getloadavg()]
    results["machine"]["cpu_count"] = os.cpu_count()
    results["saturation_dn"] = args.saturation
    if not args.skip_small:
        results["shapes"].append(bench_shape(args.nints_small, 20, 32, 2048, substrt1=1,
                                             threads=args.threads, saturation=args.saturation))
    if args.nints_prism:
        results["shapes"].append(bench_shape(args.nints_prism, 5, 32, 512, substrt1=1025,
                                             threads=args.threads, saturation=args.saturation))
    if not args.skip_large:
        r = bench_shape(args.nints_large, 70, 32, args.nx_large,
                        substrt1=1 if args.nx_large == 2048 else 1025, threads=args.threads, saturation=args.saturation)
        r["nints_reduced_from"] = 465 if args.nints_large != 465 else None
        results["shapes"].append(r)
    if args.before_json:
        results.update(before_after(args.before_json, results))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    write_result(args.out, results, argv, start=prov)
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
