"""Cost of 1/f cleaning and time-domain outlier flagging, per integration.

Group-level cleaning (``clean_groups``, numba fast path) is timed against its numpy
reference ``_clean_groups_reference`` (one cleaner call per difference, the previous
implementation) in the same run on the same arrays, and checked to give identical
ramps: ``group_<stat>_ms`` / ``group_<stat>_ref_ms`` (wall) and ``..._cpu_ms``
(``time.process_time``), best of the repeats, ``..._speedup_cpu`` / ``_speedup_wall``
= reference / fast. The machine is shared; CPU time is the steadier number.
``*_vs_baseline`` ratios are against a plain numpy per-column-median destriping
(``np.nanmedian`` of the masked pixels of each group difference, subtracted, ramp
rebuilt with ``cumsum``).

Run: ``.venv/bin/python bench/cleaning_cost.py [--quick]``; writes
``bench/results/cleaning_cost.json``.

The pipeline's hook on realistic records (issue 14): ``--capture SIMDIR NPZ`` runs
``nirbeam run`` on a ``nirbeam simulate`` folder and stores the default hook's inputs
(calibrated groups, group DQ, pixel DQ of each integration, the exposure's scene mask);
``--hook-records NAME=NPZ,... [--before-path DIR] --out FILE`` then times
``make_group_hook(FlickerParams(), mask)`` per integration (each integration's best of
the repeats, averaged over the integrations: wall, perf_counter) in worker processes,
this tree's code and, with ``--before-path``, another checkout's (e.g. a ``git worktree``
of the commit before), alternated A B A B so that both see the same machine load, and
compares the SHA-256 of every integration's output and variance between the two
(``identical``).

The hook against its session-7 kernels in one process (issue 14 session 8):
``--hook-shapes [--rounds R --repeat N] --out FILE`` times ``make_group_hook(FlickerParams(),
mask)`` and the old kernels kept verbatim as the oracle of ``tests/test_hook_identity.py``
(``OldFusedMedianHook``) on the same seeded integrations (``make_case``: the default hook's
shapes 5 x 32 x 512, 20 x 32 x 2048, 70 x 32 x 2048, NRS1 and NRS2, with and without a
light model), old and new interleaved call by call (CPU ms, ``time.process_time``, best
of ``repeat`` per round, the median over ``rounds``), and checks that every output and
variance is the same bits (``identical``).
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
from _provenance import provenance, write_result  # noqa: E402  (bench/ is sys.path[0])

from nirbeam.transforms.flicker import (
    FlickerParams,
    _clean_groups_from_first_reference,
    _clean_groups_reference,
    _correction_variance_reference,
    clean_groups,
    clean_groups_from_first,
    clean_rate,
    correction_variance,
    scene_mask,
)
from nirbeam.transforms.outliers import RollingOutlierFlagger, flag_outliers

RESULTS = Path(__file__).resolve().parent / "results" / "cleaning_cost.json"
NINT, WINDOW = 100, 25  # outlier benchmark: integrations in the stack, rolling window


def simulate_groups(rng, ngroups, ny, nx):
    y = np.arange(ny)[:, None]
    x = np.arange(nx)[None, :]
    yc = ny / 2 + 3 * np.sin(2 * np.pi * 0.7 * x / nx)
    flux = 500.0 * np.exp(-0.5 * ((y - yc) / 1.5) ** 2)
    ramp = np.cumsum(rng.poisson(np.broadcast_to(flux, (ngroups, ny, nx))), axis=0).astype(
        np.float32
    )
    ramp += rng.normal(0, 7, ramp.shape).astype(np.float32)
    ramp += rng.normal(0, 15, (ngroups, 1, nx)).astype(np.float32)  # column offsets per read
    return ramp, flux


def baseline_median(groups, mask):
    diffs = np.diff(groups.astype(np.float64), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        off = np.nanmedian(np.where(mask[None], diffs, np.nan), axis=1)  # (ndiff, nx)
    out = groups.astype(np.float64)
    out[1:] -= np.cumsum(off, axis=0)[:, None, :]
    return out.astype(np.float32)


def timeit(fn, repeat):
    """Median wall time, s."""
    fn()  # warm-up (numba compile / caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def best_times(fn, repeat):
    """(best wall, best CPU) time, s, over ``repeat`` runs after a warm-up."""
    fn()
    wall, cpu = np.inf, np.inf
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu


GROUP_CASES = {  # name -> (method, kwargs)
    "clipped_mean": ("median", {"statistic": "mean"}),  # FlickerParams() default
    "median": ("median", {}),
    "fft": ("fft", {}),
}


def capture(simdir: str, npz: str, nints: int) -> None:
    """Run the pipeline on ``simdir`` and store the default hook's inputs (first
    ``nints`` integrations) and scene mask in ``npz``."""
    import tempfile

    import nirbeam.transforms.flicker as fl
    from nirbeam.stream import cli

    orig = fl.make_group_hook
    caps = {"groups": [], "gdq": [], "pdq": [], "mask": None}

    def make(params, mask=None, light=None):
        inner = orig(params, mask, light)
        caps["mask"] = mask
        caps["light"] = light

        def hook(g, q, p):
            if len(caps["groups"]) < nints:
                for k, v in zip(("groups", "gdq", "pdq"), (g, q, p), strict=True):
                    caps[k].append(np.array(v))
            return inner(g, q, p)

        hook.before_jump = inner.before_jump
        return hook

    fl.make_group_hook = make
    try:
        with tempfile.TemporaryDirectory() as out:
            rc = cli.main(["run", simdir, "--out", out, "--refs", f"{simdir}/refs", "--config",
                           f"{simdir}/nirbeam.toml", "-q", "--overwrite"])
    finally:
        fl.make_group_hook = orig
    if rc != 0 or caps["mask"] is None:
        raise SystemExit(f"capture: nirbeam run gave {rc} (mask captured: "
                         f"{caps['mask'] is not None})")
    extra = {} if caps.get("light") is None else {"light": caps["light"]}
    np.savez(npz, **{k: np.stack(caps[k]) for k in ("groups", "gdq", "pdq")}, mask=caps["mask"],
             **extra)
    print(f"captured {len(caps['groups'])} integrations into {npz}")


def hook_worker(npz: str, repeat: int) -> dict:
    """Per-integration cost of the default hook on a captured record (this process's
    nirbeam), and a digest of its outputs."""
    import hashlib

    from nirbeam.transforms.flicker import make_group_hook

    d = np.load(npz)
    groups, gdq, pdq, mask = d["groups"], d["gdq"], d["pdq"], d["mask"]
    n = groups.shape[0]
    t0 = time.perf_counter()
    light = d["light"] if "light" in d.files else None  # the pipeline's light model
    hook = make_group_hook(FlickerParams(), mask, light)
    t_make = time.perf_counter() - t0
    digest = hashlib.sha256()
    for i in range(n):  # also the warm-up (numba compile / cache load)
        out, (var, kind) = hook(groups[i], gdq[i], pdq[i])
        digest.update(np.ascontiguousarray(out).tobytes())
        digest.update(np.ascontiguousarray(var).tobytes())
        digest.update(kind.encode())
    best = np.full(n, np.inf)
    cpu = np.full(n, np.inf)
    for _ in range(repeat):
        for i in range(n):
            w0, c0 = time.perf_counter(), time.process_time()
            hook(groups[i], gdq[i], pdq[i])
            best[i] = min(best[i], time.perf_counter() - w0)
            cpu[i] = min(cpu[i], time.process_time() - c0)
    return {"nints": n, "shape": list(groups.shape[1:]), "mask_pixels": int(mask.sum()),
            "hook_ms_per_int": 1e3 * float(best.mean()),
            "hook_cpu_ms_per_int": 1e3 * float(cpu.mean()),
            "make_hook_ms": 1e3 * t_make, "light_model": light is not None, "hook_type": type(hook).__name__,
            "sha256": digest.hexdigest()}


def hook_records(records: dict, before: str | None, repeat: int, rounds: int) -> dict:
    """Time the hook on each record in worker processes: this tree ('after') and
    ``before`` alternated ``rounds`` times; best round per side."""
    import json
    import subprocess
    import sys

    here = str(Path(__file__).resolve().parents[1])
    sides = {"after": here, **({"before": before} if before else {})}
    res = {}
    for name, npz in records.items():
        runs = {side: [] for side in sides}
        for _ in range(rounds):
            for side, path in sides.items():
                env = dict(os.environ, PYTHONPATH=path)
                cmd = [sys.executable, str(Path(__file__).resolve()), "--hook-worker", npz,
                       "--repeat", str(repeat)]
                r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True,
                                   cwd=path)
                runs[side].append(json.loads(r.stdout.strip().splitlines()[-1]))
        entry = {side: min(v, key=lambda e: e["hook_ms_per_int"]) for side, v in runs.items()}
        entry["rounds"] = {side: [e["hook_ms_per_int"] for e in v] for side, v in runs.items()}
        if before:
            entry["identical"] = entry["before"]["sha256"] == entry["after"]["sha256"]
            entry["speedup_wall"] = (entry["before"]["hook_ms_per_int"]
                                     / entry["after"]["hook_ms_per_int"])
            entry["speedup_cpu"] = (entry["before"]["hook_cpu_ms_per_int"]
                                    / entry["after"]["hook_cpu_ms_per_int"])
        res[name] = entry
        print(name, {k: (v["hook_ms_per_int"] if isinstance(v, dict) and "hook_ms_per_int" in v
                         else v) for k, v in entry.items() if k != "rounds"}, flush=True)
    return res


def hook_shapes(rounds: int, repeat: int) -> dict:
    """The default hook (this tree) against the session-7 kernels (the oracle copy in
    tests/test_hook_identity.py) in this process, interleaved: CPU ms per integration."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_hook_identity import OldFusedMedianHook, make_case, old_column_light

    from nirbeam.transforms.flicker import make_group_hook

    res = {}
    for ng, ny, nx, name in [(5, 32, 512, "prism_5x32x512"), (20, 32, 2048, "g395h_20x32x2048"),
                             (70, 32, 2048, "g395h_70x32x2048")]:
        for det in ("NRS1", "NRS2"):
            for lit in (False, True):
                groups, gdq, pdq, mask = make_case(ng * 7 + nx + (det == "NRS2"), ng, ny, nx,
                                                   det)
                params = FlickerParams(detector=det)
                light = (np.abs(np.random.default_rng(ng).normal(0.5, 0.3, (ny, nx)))
                         if lit else None)
                new = make_group_hook(params, mask, light)
                old = OldFusedMedianHook(params, mask, None if light is None
                                         else old_column_light(mask, light))
                a, b = new(groups, gdq, pdq), old(groups, gdq, pdq)  # warm-up, compile
                same = (np.array_equal(a[0].view(np.uint32), b[0].view(np.uint32))
                        and np.array_equal(a[1][0].view(np.uint64), b[1][0].view(np.uint64))
                        and a[1][1] == b[1][1])
                t = {"old": [], "new": []}
                for _ in range(rounds):
                    best = {"old": np.inf, "new": np.inf}
                    for _ in range(repeat):
                        for side, fn in (("old", old), ("new", new)):
                            c0 = time.process_time()
                            fn(groups, gdq, pdq)
                            best[side] = min(best[side], time.process_time() - c0)
                    for side in t:
                        t[side].append(1e3 * best[side])
                o, n = float(np.median(t["old"])), float(np.median(t["new"]))
                key = f"{name}_{det}" + ("_light" if lit else "")
                res[key] = {"shape": [ng, ny, nx], "detector": det, "light_model": lit,
                            "mask_pixels": int(mask.sum()),
                            "old_cpu_ms": o, "new_cpu_ms": n, "speedup_cpu": o / n,
                            "new_ns_per_pixel_group": 1e6 * n / (ng * ny * nx),
                            "rounds_cpu_ms": t, "identical": bool(same)}
                print(key, f"old {o:.3f} new {n:.3f} ms  x{o / n:.2f}  identical {same}",
                      flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--capture", nargs=2, metavar=("SIMDIR", "NPZ"))
    ap.add_argument("--capture-nints", type=int, default=30)
    ap.add_argument("--hook-records", help="NAME=NPZ,...: time the default hook on them")
    ap.add_argument("--before-path", help="checkout whose nirbeam is the 'before'")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--hook-worker", help=argparse.SUPPRESS)
    ap.add_argument("--hook-shapes", action="store_true",
                    help="the default hook vs its session-7 kernels, in one process")
    args = ap.parse_args(argv)
    if args.capture:
        capture(*args.capture, args.capture_nints)
        return
    if args.hook_worker:
        import json

        print(json.dumps(hook_worker(args.hook_worker, args.repeat)))
        return
    prov = provenance(argv)
    if args.hook_shapes:
        load = os.getloadavg()
        res = hook_shapes(args.rounds, args.repeat)
        result = {"benchmark": "cleaning_cost --hook-shapes (default group hook vs the "
                               "session-7 kernels, interleaved in one process)",
                  "units": "CPU milliseconds per integration (time.process_time), best of "
                           "the repeats per round, median over the rounds",
                  "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                              "loadavg_start": load, "loadavg_end": os.getloadavg()},
                  "rounds": args.rounds, "repeat": args.repeat, "hook": res}
        write_result(Path(args.out), result, argv, start=prov)
        print(f"wrote {args.out}")
        return
    if args.hook_records:
        records = dict(kv.split("=", 1) for kv in args.hook_records.split(","))
        load = os.getloadavg()
        res = hook_records(records, args.before_path, args.repeat, args.rounds)
        result = {"benchmark": "cleaning_cost (default group hook on captured records)",
                  "units": "milliseconds per integration (all groups of one integration)",
                  "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                              "loadavg_start": load, "loadavg_end": os.getloadavg()},
                  "before_path": args.before_path, "records": records, "hook": res}
        write_result(Path(args.out), result, argv, start=prov)
        print(f"wrote {args.out}")
        return
    repeat = 3 if args.quick else 5
    rng = np.random.default_rng(0)
    rows = []
    for nx in (512, 2048):
        ny = 32
        for ngroups in (5, 70):
            groups, flux = simulate_groups(rng, ngroups, ny, nx)
            gdq = np.zeros(groups.shape, np.uint8)
            pdq = np.zeros((ny, nx), np.uint32)
            t_mask = timeit(lambda f=flux: scene_mask(f + rng.normal(0, 1, f.shape)), repeat)
            mask = scene_mask(flux + rng.normal(0, 1, flux.shape))
            t_base = timeit(lambda g=groups, m=mask: baseline_median(g, m), repeat)
            entry = {
                "ny": ny,
                "nx": nx,
                "ngroups": ngroups,
                "baseline_numpy_median_ms": 1e3 * t_base,
                "scene_mask_ms": 1e3 * t_mask,
            }
            for name, (method, kw) in GROUP_CASES.items():
                fast = functools.partial(clean_groups, groups, gdq, pdq, mask, method, **kw)
                ref = functools.partial(
                    _clean_groups_reference, groups, gdq, pdq, mask, method, **kw
                )
                np.testing.assert_array_equal(fast(), ref())  # identical results
                w_new, c_new = best_times(fast, repeat)
                w_ref, c_ref = best_times(ref, repeat)
                entry[f"group_{name}_ms"] = 1e3 * w_new
                entry[f"group_{name}_cpu_ms"] = 1e3 * c_new
                entry[f"group_{name}_ref_ms"] = 1e3 * w_ref
                entry[f"group_{name}_ref_cpu_ms"] = 1e3 * c_ref
                entry[f"group_{name}_speedup_cpu"] = c_ref / c_new
                entry[f"group_{name}_speedup_wall"] = w_ref / w_new
                entry[f"group_{name}_vs_baseline"] = w_new / t_base
            # the default (group_reference='first', issue 14): numba vs numpy reference,
            # and the model variance the default hook adds
            for name, (method, kw) in GROUP_CASES.items():
                fast = functools.partial(clean_groups_from_first, groups, gdq, pdq, mask, method,
                                         **kw)
                ref = functools.partial(_clean_groups_from_first_reference, groups, gdq, pdq,
                                        mask, method, **kw)
                np.testing.assert_array_equal(fast(), ref())
                w_new, c_new = best_times(fast, repeat)
                w_ref, c_ref = best_times(ref, repeat)
                entry[f"first_{name}_cpu_ms"] = 1e3 * c_new
                entry[f"first_{name}_ref_cpu_ms"] = 1e3 * c_ref
                entry[f"first_{name}_speedup_cpu"] = c_ref / c_new
                entry[f"first_{name}_speedup_wall"] = w_ref / w_new
            cleaned = clean_groups_from_first(groups, gdq, pdq, mask, "median", statistic="mean")
            fp = FlickerParams()
            fast = functools.partial(correction_variance, cleaned, pdq, mask, fp)
            ref = functools.partial(_correction_variance_reference, cleaned, pdq, mask, fp)
            np.testing.assert_array_equal(fast()[0], ref()[0])
            w_new, c_new = best_times(fast, repeat)
            w_ref, c_ref = best_times(ref, repeat)
            entry["variance_cpu_ms"] = 1e3 * c_new
            entry["variance_ref_cpu_ms"] = 1e3 * c_ref
            entry["variance_speedup_cpu"] = c_ref / c_new
            print(f"{ny}x{nx} ng={ngroups:2d} default (from first): " + " | ".join(
                f"{name} {entry[f'first_{name}_cpu_ms']:.2f} ms cpu (ref "
                f"{entry[f'first_{name}_ref_cpu_ms']:.2f}, x{entry[f'first_{name}_speedup_cpu']:.1f})"
                for name in GROUP_CASES) + f" | variance {c_new * 1e3:.2f} ms (ref "
                f"{c_ref * 1e3:.2f}, x{c_ref / c_new:.1f})", flush=True)
            for method in ("median", "fft", "nsclean"):
                rate = groups[-1] - groups[0]
                tr = timeit(lambda r=rate, m=mask, k=method: clean_rate(r, m, k), repeat)
                entry[f"rate_{method}_ms"] = 1e3 * tr
            if ngroups > 5:
                # ~0.1-0.4 s per difference: not timed at 70 groups (see rate_nsclean_ms)
                entry["group_nsclean_ms"] = None
                entry["group_nsclean_vs_baseline"] = None
            else:
                ns = functools.partial(clean_groups, groups, gdq, pdq, mask, "nsclean")
                t = timeit(ns, repeat)
                entry["group_nsclean_ms"] = 1e3 * t
                entry["group_nsclean_vs_baseline"] = t / t_base
            rows.append(entry)
            print(
                f"{ny}x{nx} ng={ngroups:2d}: "
                + " | ".join(
                    f"{name} {entry[f'group_{name}_cpu_ms']:.2f} ms cpu "
                    f"(ref {entry[f'group_{name}_ref_cpu_ms']:.2f}, "
                    f"x{entry[f'group_{name}_speedup_cpu']:.1f}; wall "
                    f"{entry[f'group_{name}_ms']:.2f} / {entry[f'group_{name}_ref_ms']:.2f})"
                    for name in GROUP_CASES
                )
                + f" | baseline {entry['baseline_numpy_median_ms']:.2f} ms"
                f" | rate median {entry['rate_median_ms']:.3f} ms, fft {entry['rate_fft_ms']:.3f}"
                f" ms, nsclean {entry['rate_nsclean_ms']:.1f} ms | mask {entry['scene_mask_ms']:.2f}"
                " ms"
            )

    # outlier flagging, per integration
    out_rows = []
    for nx in (512, 2048):
        ny, nint, window = 32, NINT, WINDOW
        cube = rng.normal(1000, 10, (nint, ny, nx)).astype(np.float32)
        err = np.full(cube.shape, 10, np.float32)
        dq = np.zeros(cube.shape, np.uint32)
        t_batch = timeit(lambda c=cube, e=err, d=dq: flag_outliers(c, e, d, WINDOW), repeat) / nint

        def stream(c=cube, e=err, d=dq):
            fl = RollingOutlierFlagger(WINDOW)
            for j in range(NINT):
                fl.push(j + 1, c[j], e[j], d[j])
            fl.finish()

        t_stream = timeit(stream, max(1, repeat // 2)) / nint

        def numpy_ref(c=cube):
            # plain numpy rolling median (np.median over the window), same windows
            for j in range(NINT):
                s = min(max(j - WINDOW // 2, 0), NINT - WINDOW)
                np.median(c[s : s + WINDOW], axis=0)

        t_np = timeit(numpy_ref, max(1, repeat // 2)) / nint
        e = {
            "ny": ny,
            "nx": nx,
            "nint": nint,
            "window": window,
            "batch_ms_per_int": 1e3 * t_batch,
            "stream_ms_per_int": 1e3 * t_stream,
            "numpy_median_ms_per_int": 1e3 * t_np,
            "batch_vs_numpy": t_batch / t_np,
            "stream_vs_numpy": t_stream / t_np,
        }
        out_rows.append(e)
        print(
            f"outliers {ny}x{nx} w={window}: batch {e['batch_ms_per_int']:.3f} ms/int, "
            f"stream {e['stream_ms_per_int']:.3f} ms/int, numpy np.median {e['numpy_median_ms_per_int']:.3f} ms/int"
        )

    result = {
        "benchmark": "cleaning_cost",
        "units": "milliseconds per integration (group-level: all groups of one integration)",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "numpy": np.__version__,
        },
        "timing": "group_*: best of the repeats (wall: perf_counter, cpu: process_time); "
        "other entries: median wall time of the repeats",
        "flicker": rows,
        "outliers": out_rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_result(out, result, argv, start=prov)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
