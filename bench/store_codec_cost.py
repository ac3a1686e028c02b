"""The cube store's codec: whole-run CPU and store size, A/B in one script.

Runs the same ``nirbeam run`` in fresh child processes, interleaved, once per codec and
repeat, with ``nirbeam.sinks.zarr_store.CUBE_CODEC`` set to each variant before the run
(nothing else differs), and records per variant: process CPU (user + sys of the child,
``resource.getrusage(RUSAGE_CHILDREN)``), wall, the size of ``cubes.zarr`` and whether
every array equals the first variant's (``bench/compare_products.py``; the codecs are
lossless, so they must). The numba cache is warmed by one untimed run first.

    python bench/store_codec_cost.py /work/prism/sim --work /tmp/codec --repeat 3 \
        --out bench/results/store_codec_cost_s12.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import provenance, write_result  # noqa: E402

VARIANTS = {
    # name: BloscCodec keyword arguments (typesize is the array's itemsize)
    "blosc-zstd-1-shuffle": {"cname": "zstd", "clevel": 1, "shuffle": "shuffle"},
    "blosc-lz4-5-shuffle": {"cname": "lz4", "clevel": 5, "shuffle": "shuffle"},
}

CHILD = """
import sys, numpy as np
from zarr.codecs import BloscCodec
import nirbeam.sinks.zarr_store as zs
kw = {kw!r}
zs.CUBE_CODEC = lambda dtype: BloscCodec(typesize=np.dtype(dtype).itemsize, **kw)
from nirbeam.stream.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _identical(text: str) -> bool:
    """``N arrays compared, M identical`` with M == N."""
    words = text.strip().splitlines()[-1].split() if text.strip() else []
    return len(words) >= 4 and words[1] == "arrays" and words[0] == words[-2]


def _run(kw: dict, sim: Path, refs: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD.format(kw=kw), "run", str(sim), "--refs",
                    str(refs), "--out", str(out)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    timings = json.loads((out / "run.json").read_text()).get("timings_s", {})
    return {"cpu_s": round(user + sys_, 3), "user_s": round(user, 3), "sys_s": round(sys_, 3),
            "wall_s": round(wall, 3), "store_bytes": _du(out / "cubes.zarr"),
            "timings_s": timings, "load": list(os.getloadavg())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sim", type=Path)
    ap.add_argument("--refs", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=Path("/tmp/store_codec"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    start = provenance(argv)
    refs = args.refs or args.sim / "refs"
    names = list(VARIANTS)
    _run(VARIANTS[names[0]], args.sim, refs, args.work / "warmup")
    runs: dict[str, list] = {n: [] for n in names}
    for i in range(args.repeat):
        for n in (names if i % 2 == 0 else names[::-1]):
            runs[n].append(_run(VARIANTS[n], args.sim, refs, args.work / n))
            print(n, runs[n][-1]["cpu_s"], runs[n][-1]["store_bytes"], flush=True)
    cmp = subprocess.run([sys.executable, str(Path(__file__).with_name("compare_products.py")),
                          str(args.work / names[0]), str(args.work / names[1])],
                         capture_output=True, text=True)
    best = {n: min(r["cpu_s"] for r in runs[n]) for n in names}
    size = {n: runs[n][-1]["store_bytes"] for n in names}
    result = {
        "benchmark": "store_codec_cost",
        "what": "whole nirbeam run CPU-s (child user+sys) and cubes.zarr bytes per cube codec",
        "input": str(args.sim),
        "variants": {n: {"codec": VARIANTS[n], "runs": runs[n], "best_cpu_s": best[n],
                         "store_bytes": size[n]} for n in names},
        "cpu_ratio": round(best[names[0]] / best[names[1]], 3),
        "store_size_ratio": round(size[names[1]] / size[names[0]], 4),
        "products_compare": cmp.stdout.strip().splitlines()[-1] if cmp.stdout else cmp.stderr,
        "products_identical": _identical(cmp.stdout),
    }
    print(json.dumps({k: result[k] for k in ("cpu_ratio", "store_size_ratio",
                                             "products_compare")}))
    if args.out:
        write_result(args.out, result, start=start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
