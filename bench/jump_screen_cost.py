"""Cost of jump.screen_row / jump._median_positions_row: sorting network vs rank counts.

Old = the verbatim rank-count functions (tests/test_jump_screen_identity.py's oracle, as
of 849d0cb); new = nirbeam.transforms.jump. One row of ``--nx`` pixels per call
(realistic ramps: Poisson + read noise, 1 % cosmic rays), old and new interleaved in one
process, CPU time (time.process_time) per call, median of ``--repeat`` rounds; every call
checked bit for bit. Also the scalar walk the fused detector1 kernel runs when the screen
is off (jump.jump_pixel per pixel, its own median_positions), per row, for the crossover
of detector1's ``_SCREEN_MAX_DIFFS``.

    python bench/jump_screen_cost.py --out bench/results/jump_screen_cost_s8.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from numba import njit

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)
from test_jump_screen_identity import (  # noqa: E402  (the oracle)
    old_median_positions_row,
    old_screen_row,
)

from nirbeam.transforms import jump as _jump  # noqa: E402


def _ramps(ng, nx, seed):
    rng = np.random.default_rng(seed)
    rate = 10.0 ** rng.uniform(-1, 3, nx)
    G = (np.cumsum(rng.poisson(np.repeat(rate[None, :], ng, 0)), axis=0)
         + rng.normal(0, 10, (ng, nx)) + rng.normal(1e4, 300, (1, nx)))
    for x in rng.choice(nx, nx // 100, replace=False):
        G[rng.integers(1, ng):, x] += rng.uniform(100, 3000)
    G = np.ascontiguousarray(np.round(G).astype(np.float32))  # integer DN: tied keys
    Q = np.zeros((ng, nx), np.uint8)
    gain = np.full(nx, 1.4, np.float32)
    rn = np.full(nx, 12.0, np.float32)
    return G, Q, gain, rn


@njit(cache=True)
def _scalar_walk(G, Q, gain, rn, single):
    """jump.jump_pixel_fast for each pixel of the row (the fused walk without the screen)."""
    ng, nx = G.shape
    d = np.empty(ng, np.float32)
    q = np.empty(ng, np.uint8)
    fd = np.empty(ng + 1, np.float64)
    wk = np.empty(ng + 1, np.float64)
    nb = np.zeros(ng + 1, np.uint8)
    keys = np.empty(ng + 1, np.float32)
    kpos = np.empty(ng + 1, np.int64)
    s = 0
    for x in range(nx):
        for g in range(ng):
            d[g] = G[g, x]
            q[g] = Q[g, x]
        n, anynb, klo, khi = _jump.jump_pixel(d, q, ng, gain[x], rn[x], 1, single, 4.0, 6.0,
                                              5.0, True, 10.0, 1000.0, fd, wk, nb, keys, kpos)
        s += klo + khi + n
    return s


def _bufs(ng, nx):
    nd = ng - 1
    return (np.empty((nd, nx), np.float64), np.empty((nd, nx), np.float32),
            np.empty((nd, nx), np.int32), np.empty((5, nx), np.float64),
            np.empty((3, nx), np.int32), np.zeros(nx, np.bool_), np.empty(nx, np.int64),
            np.empty(nx, np.int64))


def _cpu(fn, n):
    t = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t) / n * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nx", type=int, default=2048)
    ap.add_argument("--ngroups", default="5,8,12,16,19,20,21,22,24,26,32,48,70")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    start = provenance(argv)
    load0 = os.getloadavg()[0]
    cases = {}
    for ng in [int(v) for v in a.ngroups.split(",")]:
        nd = ng - 1
        G, Q, gain, rn = _ramps(ng, a.nx, ng)
        for single in ([False, True] if nd >= 4 else [True]):
            bo, bn = _bufs(ng, a.nx), _bufs(ng, a.nx)

            def s_old(bo=bo, G=G, Q=Q, gain=gain, rn=rn, single=single):
                old_screen_row(G, Q, gain, rn, 1, 4.0, *bo, single)

            def s_new(bn=bn, G=G, Q=Q, gain=gain, rn=rn, single=single):
                _jump.screen_row(G, Q, gain, rn, 1, 4.0, *bn, single)

            K = np.ascontiguousarray((G[1:] - G[:-1]).astype(np.float32))
            R = np.empty((nd, a.nx), np.int32)
            lo0, hi0, lo1, hi1 = (np.empty(a.nx, np.int64) for _ in range(4))

            def m_old(K=K, R=R, nd=nd, lo0=lo0, hi0=hi0):
                old_median_positions_row(K, R, nd, lo0, hi0)

            def m_new(K=K, R=R, nd=nd, lo1=lo1, hi1=hi1):
                _jump._median_positions_row(K, R, nd, lo1, hi1)

            def walk(G=G, Q=Q, gain=gain, rn=rn, single=single):
                _scalar_walk(G, Q, gain, rn, single)

            fns = {"screen_old": s_old, "screen_new": s_new, "median_old": m_old,
                   "median_new": m_new, "scalar_walk": walk}
            for f in fns.values():
                f()
            for i in (5, 6, 7):
                assert np.array_equal(bo[i].view(np.uint8), bn[i].view(np.uint8)), (ng, i)
            assert np.array_equal(lo0, lo1) and np.array_equal(hi0, hi1)
            n = max(1, int(200 / ng))
            t = {k: [] for k in fns}
            for _ in range(a.repeat):
                for k, f in fns.items():
                    t[k].append(_cpu(f, n))
            med = {k + "_ms": float(np.median(v)) for k, v in t.items()}
            key = f"ng{ng}_{'single' if single else 'iterative'}"
            cases[key] = {"ngroups": ng, "nx": a.nx, "single": single, **med,
                          "screen_speedup": med["screen_old_ms"] / med["screen_new_ms"],
                          "median_speedup": med["median_old_ms"] / med["median_new_ms"],
                          "screen_new_vs_scalar_walk": med["scalar_walk_ms"] / med["screen_new_ms"],
                          "ok_fraction": float(bn[5].mean())}
            c = cases[key]
            print(f"{key:18s} screen {c['screen_old_ms']:.3f} -> {c['screen_new_ms']:.3f} ms "
                  f"(x{c['screen_speedup']:.2f})  median {c['median_old_ms']:.3f} -> "
                  f"{c['median_new_ms']:.3f} (x{c['median_speedup']:.2f})  scalar walk "
                  f"{c['scalar_walk_ms']:.3f}  ok {c['ok_fraction']:.3f}", flush=True)
    result = {"what": "ms CPU per row call, median of repeats, old vs new interleaved",
              "load_avg_start_end": [load0, os.getloadavg()[0]],
              "net_min_median": _jump._NET_MIN_MEDIAN, "net_min_ranks": _jump._NET_MIN_RANKS,
              "net_block": _jump._NET_BLOCK, "cases": cases}
    if a.out:
        write_result(a.out, result, argv, start=start)


if __name__ == "__main__":
    main()
