"""Throughput of ``nirbeam run`` against the number of workers, per runner.

Two inputs, both simulated by this script first (simulation is not timed):

- **one exposure**: a ``g395h-sub2048`` exposure of ``--nints`` integrations (70 groups of
  32 x 2048 pixels each): the parallelism is over one exposure's integrations;
- **many exposures**: ``--many E x N``, E exposures of N integrations each (same preset,
  distinct exposure numbers) in one run: the parallelism is over exposures as well.

For each runner (``direct``: the in-process reference; ``multiprocess``; ``dask`` on a
local dask.distributed cluster of N one-thread worker processes, started and warmed by
one untimed run before the clock starts, as a long-lived cluster would be; multiprocess
workers are started by each run, so their start-up is in its time) and each worker count, one ``run()`` into
a fresh OUTDIR is timed. Reported: wall time of ``run()``; the time of the Beam stage 1
(read + detector1 + write, from run.json); integrations/s and pixel-groups/s (NINTS x
NGROUPS x NY x NX per second) of stage 1 and end to end; speed-up T1/TN and scaling
efficiency T1/(N TN) against the same runner's 1-worker time; and a check that the
products are bit-identical to the direct runner's. The 1-minute load average before and
after each run is recorded: on a shared machine, read the figures with it.

Run standalone (it needs only nirbeam installed, with dask[distributed] for ``dask``)::

    python bench/scaling.py                                  # 1, 2 workers, 24 ints, 4x6
    python bench/scaling.py --workers 1,2,4,8,16 --nints 96 --many 16x6 --out res.json

Writes ``bench/results/scaling.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one core per worker: no hidden BLAS threads

import numpy as np  # noqa: E402
from _provenance import provenance, write_result  # noqa: E402  (bench/ is sys.path[0])

RESULTS = Path(__file__).resolve().parent / "results" / "scaling.json"


def _simulate(workdir: Path, preset: str, nints: int, many: tuple[int, int]) -> dict:
    from nirbeam.sim.simulator import simulate

    t0 = time.perf_counter()
    one = simulate(workdir / "one", preset=preset, nints=nints, seed=1)
    many_dirs = []
    for k in range(many[0]):
        r = simulate(workdir / f"many{k:02d}", preset=preset, nints=many[1], seed=100 + k,
                     exposure_number=f"{k + 1:05d}")
        many_dirs.append(str(r.outdir))
    return {
        "one": {"inputs": [str(one.outdir)], "refs": str(one.refs_dir), "exposures": 1,
                "nints": nints},
        "many": {"inputs": many_dirs, "refs": str(one.refs_dir), "exposures": many[0],
                 "nints": many[0] * many[1]},
        "simulate_s": time.perf_counter() - t0,
        "shape": _shape(one.uncal[0]),
    }


def _shape(path) -> tuple[int, int, int]:
    from astropy.io import fits

    h = fits.getheader(path)
    return int(h["NGROUPS"]), int(h["SUBSIZE2"]), int(h["SUBSIZE1"])


def _same_products(a: Path, b: Path) -> bool | list[str]:
    """True, or the list of products that differ from the direct runner's."""
    import zarr

    ga = zarr.open_group(str(a / "cubes.zarr"), mode="r")
    gb = zarr.open_group(str(b / "cubes.zarr"), mode="r")
    diff = []
    for g in ga.group_keys():
        for stage, name in (("rateints", "sci"), ("rateints", "err"), ("rateints", "dq"),
                            ("cleaned", "dq"), ("spectra", "flux"), ("spectra", "dq")):
            x, y = ga[g][stage][name][:], gb[g][stage][name][:]
            if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                bad = np.unique(np.argwhere(x != y)[:, 0] + 1).tolist()
                diff.append(f"{g}/{stage}/{name} (integrations {bad[:10]})")
    if (a / "whitelight.ecsv").read_bytes() != (b / "whitelight.ecsv").read_bytes():
        diff.append("whitelight.ecsv")
    return diff or True


def _one_run(case: dict, out: Path, spec, config) -> dict:
    from nirbeam.stream.pipeline import run

    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = run(case["inputs"], str(out), refs_dir=case["refs"], config=config, runner=spec,
              progress=False)
    wall = time.perf_counter() - t0
    s = res.summary
    done = sum(e["processed"] for e in s["exposures"])
    assert done == case["nints"], f"{spec.name}: {done} of {case['nints']} processed"
    return {"wall_s": wall, "stage1_s": s["timings_s"]["detector1"],
            "stage2_s": s["timings_s"]["spectra"], "products_s": s["timings_s"]["products"],
            "loadavg_1min_before": load0, "loadavg_1min_after": os.getloadavg()[0]}


def _dask_cluster(n: int):
    import logging

    from distributed import Client, LocalCluster

    c = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                     silence_logs=logging.ERROR)
    with Client(c) as client:  # import the package on every worker before the clock starts
        client.run(lambda: __import__("nirbeam.stream.pipeline"))
    return c


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="g395h-sub2048")
    ap.add_argument("--nints", type=int, default=24, help="integrations of the one exposure")
    ap.add_argument("--many", default="4x6", help="E x N: E exposures of N integrations")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--runners", default="multiprocess,dask",
                    help="comma-separated: multiprocess, dask (direct always runs)")
    ap.add_argument("--cases", default="one,many", help="one, many or both")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args(argv)
    prov = provenance(argv)

    from nirbeam.stream.runners import RunnerSpec

    workers = [int(w) for w in args.workers.split(",")]
    runners = [r for r in args.runners.split(",") if r]
    cases = [c for c in args.cases.split(",") if c]
    many = tuple(int(x) for x in args.many.lower().split("x"))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="nirbeam-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    config = {"products": {"plots": False, "fit": False}}

    digest0 = _source_digest()
    print(f"simulating into {work} ...", flush=True)
    sims = _simulate(work, args.preset, args.nints, many)
    ngroups, ny, nx = sims["shape"]
    print(f"  {sims['simulate_s']:.1f} s (not timed below)", flush=True)

    # warm-up: imports, numba cache loads, zarr; not recorded
    warm = {**sims["many"], "inputs": sims["many"]["inputs"][:1], "nints": many[1]}
    _one_run(warm, work / "warmup", RunnerSpec(), config)

    rows = []
    for case_name in cases:
        case = sims[case_name]
        ref = work / f"{case_name}-direct-1"
        plan = [("direct", 1)] + [(r, n) for r in runners for n in workers]
        for runner, n in plan:
            out = work / f"{case_name}-{runner}-{n}"
            cluster = None
            if runner == "dask":
                cluster = _dask_cluster(n)
                spec = RunnerSpec(name="dask", dask_address=cluster.scheduler_address)
                # a long-lived cluster: its workers have run nirbeam before (untimed)
                _one_run(warm, work / f"warmup-dask-{n}", spec, config)
            elif runner == "multiprocess":
                spec = RunnerSpec(name="multiprocess", workers=n)
            else:
                spec = RunnerSpec()
            try:
                r = _one_run(case, out, spec, config)
            finally:
                if cluster is not None:
                    cluster.close()
            pg = case["nints"] * ngroups * ny * nx
            r.update({
                "case": case_name, "runner": runner, "workers": n,
                "exposures": case["exposures"], "nints": case["nints"],
                "ints_per_s_stage1": case["nints"] / r["stage1_s"],
                "ints_per_s_wall": case["nints"] / r["wall_s"],
                "pixel_groups_per_s_stage1": pg / r["stage1_s"],
                "identical_to_direct": True if out == ref else _same_products(ref, out),
            })
            rows.append(r)
            print(f"{case_name:5s} {runner:12s} N={n:2d}  wall {r['wall_s']:7.1f} s  stage1 "
                  f"{r['stage1_s']:7.1f} s  {r['ints_per_s_stage1']:6.3f} int/s  "
                  f"{r['pixel_groups_per_s_stage1'] / 1e6:6.1f} Mpix-groups/s  "
                  f"load {r['loadavg_1min_before']:.1f}->{r['loadavg_1min_after']:.1f}  "
                  f"identical={r['identical_to_direct']}", flush=True)
            if out != ref and r["identical_to_direct"] is True:
                shutil.rmtree(out, ignore_errors=True)  # differing outputs are kept

    scaling = {}
    for r in rows:
        base = next((b for b in rows if b["case"] == r["case"] and b["runner"] == r["runner"]
                     and b["workers"] == min(workers)), None)
        direct = next(b for b in rows if b["case"] == r["case"] and b["runner"] == "direct")
        if base is None or r["runner"] == "direct":
            continue
        n0 = base["workers"]
        for key, t in (("stage1", "stage1_s"), ("wall", "wall_s")):
            d = scaling.setdefault(r["case"], {}).setdefault(r["runner"], {}).setdefault(
                str(r["workers"]), {})
            d[f"speedup_{key}"] = base[t] / r[t]
            d[f"efficiency_{key}"] = base[t] * n0 / (r["workers"] * r[t])  # T1/(N TN)
            d[f"vs_direct_{key}"] = direct[t] / r[t]

    import apache_beam
    import numba

    try:
        import dask
        dask_v = dask.__version__
    except ImportError:
        dask_v = None
    result = {
        "benchmark": "scaling",
        "what": "nirbeam run throughput vs workers; stage1 = Beam read+detector1+write; "
                "efficiency = T1/(N*TN) against the same runner's 1-worker time",
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "cpu_model": _cpu_model(),
                    "beam": apache_beam.__version__, "dask": dask_v,
                    "numba": numba.__version__, "numpy": np.__version__},
        "config": {"preset": args.preset, "shape_ngroups_ny_nx": [ngroups, ny, nx],
                   "one_exposure_nints": args.nints, "many": f"{many[0]}x{many[1]}",
                   "workers": workers, "runners": ["direct", *runners],
                   "simulate_s_not_timed": round(sims["simulate_s"], 1),
                   "command": " ".join([os.path.basename(sys.argv[0]), *(argv or sys.argv[1:])])},
        "source_sha256_16": {"start": digest0, "end": _source_digest()},
        "runs": rows,
        "scaling": scaling,
    }
    if digest0 != result["source_sha256_16"]["end"]:
        print("WARNING: nirbeam's sources changed during the benchmark: workers started "
              "later ran other code than the driver; rerun on a quiet tree", flush=True)
    write_result(args.out, result, argv, start=prov)
    print(json.dumps(scaling, indent=2))
    print(f"wrote {args.out}")
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _source_digest() -> str:
    """sha256 of nirbeam's sources: workers import them afresh, so they must not change
    while the benchmark runs (the driver would run other code than its workers)."""
    import hashlib

    import nirbeam

    h = hashlib.sha256()
    base = Path(nirbeam.__file__).parent
    for f in sorted(base.rglob("*.py")):
        h.update(str(f.relative_to(base)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
