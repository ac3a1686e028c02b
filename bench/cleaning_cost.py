"""Cost of 1/f cleaning and time-domain outlier flagging, per integration.

Ratios are against a plain numpy per-column-median destriping baseline measured in the
same run on the same arrays (``np.nanmedian`` of the masked pixels of each group
difference, subtracted, ramp rebuilt with ``cumsum``).

Run: ``.venv/bin/python bench/cleaning_cost.py [--quick]``; writes
``bench/results/cleaning_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np

from nirbeam.transforms.flicker import clean_groups, clean_rate, scene_mask
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
    fn()  # warm-up (numba compile / caches)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    repeat = 3 if args.quick else 7
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
            t = timeit(
                lambda g=groups, q=gdq, p=pdq, m=mask: clean_groups(
                    g, q, p, m, "median", statistic="mean"
                ),
                repeat,
            )
            entry["group_clipped_mean_ms"] = 1e3 * t  # FlickerParams() default
            entry["group_clipped_mean_vs_baseline"] = t / t_base
            for method in ("median", "fft", "nsclean"):
                rate = groups[-1] - groups[0]
                tr = timeit(lambda r=rate, m=mask, k=method: clean_rate(r, m, k), repeat)
                entry[f"rate_{method}_ms"] = 1e3 * tr
                if method == "nsclean" and ngroups > 5:
                    # ~0.1-0.4 s per difference: not timed at 70 groups (see rate_nsclean_ms)
                    entry["group_nsclean_ms"] = None
                    entry["group_nsclean_vs_baseline"] = None
                    continue
                t = timeit(
                    lambda g=groups, q=gdq, p=pdq, m=mask, k=method: clean_groups(g, q, p, m, k),
                    repeat,
                )
                entry[f"group_{method}_ms"] = 1e3 * t
                entry[f"group_{method}_vs_baseline"] = t / t_base
            rows.append(entry)
            print(
                f"{ny}x{nx} ng={ngroups:2d}: baseline {entry['baseline_numpy_median_ms']:8.2f} ms | "
                f"median {entry['group_median_ms']:8.2f} ms ({entry['group_median_vs_baseline']:.2f}x) | "
                f"clipped mean {entry['group_clipped_mean_ms']:8.2f} ms | "
                f"fft {entry['group_fft_ms']:8.2f} ms ({entry['group_fft_vs_baseline']:.2f}x) | "
                f"rate median {entry['rate_median_ms']:.3f} ms, fft {entry['rate_fft_ms']:.3f} ms, "
                f"nsclean {entry['rate_nsclean_ms']:.1f} ms | "
                f"mask {entry['scene_mask_ms']:.2f} ms"
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
        "flicker": rows,
        "outliers": out_rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
