"""Peak memory and throughput of a whole `nirbeam run` versus NINTS.

Memory must stay bounded by a few integrations, whatever NINTS is: this runs the same
preset at several NINTS in fresh processes and reports each run's peak RSS (ru_maxrss of
the child), CPU seconds (user + system) and integrations per second. The reference in the
same run is the size of one exposure in memory (what a whole-exposure pipeline would hold
for the ramps alone). The machine may be shared: each row carries the load average.

    python bench/pipeline_memory.py [--preset prism-sub512] [--nints 100,400,1600]
        [--ngroups N] [--detectors NRS1,NRS2] [--data DIR] [--out FILE]

e.g. the WASP-39b G395H layout at a few NINTS:
``--preset g395h-sub2048 --ngroups 70 --detectors NRS1,NRS2 --nints 24,96``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from _provenance import provenance, write_result  # bench/ is sys.path[0]


def child_run(cmd: list[str]) -> dict:
    """Run a command in a fresh process: wall s, CPU s and peak RSS MiB of that child."""
    t0 = time.perf_counter()
    load0 = [round(x, 2) for x in os.getloadavg()]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read().decode(errors="replace")
    _, status, ru = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return {"wall_s": round(time.perf_counter() - t0, 2),
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
            "peak_rss_mib": round(ru.ru_maxrss / 1024, 1), "load_before": load0,
            "load_after": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="prism-sub512")
    ap.add_argument("--nints", default="100,400,1600")
    ap.add_argument("--ngroups", type=int, default=None)
    ap.add_argument("--detectors", default=None, help="e.g. NRS1,NRS2")
    ap.add_argument("--data", default=None, help="keep the simulations here (reused)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "pipeline_memory.json"))
    args = ap.parse_args()
    prov = provenance()
    from nirbeam.sim.simulator import PRESETS, SimConfig
    from nirbeam.sim.simulator import simulate as sim

    overrides = {}
    if args.ngroups:
        overrides["ngroups"] = args.ngroups
    if args.detectors:
        overrides["detectors"] = tuple(args.detectors.split(","))
    rows = []
    nirbeam = [sys.executable, "-m", "nirbeam.stream.cli"]
    d = args.data or tempfile.mkdtemp(prefix="nirbeam-mem-")
    try:
        for n in [int(x) for x in args.nints.split(",")]:
            cfg = SimConfig(**{**PRESETS[args.preset].__dict__, "nints": n, **overrides})
            tag = f"{args.preset}-{n}x{cfg.ngroups}-{'+'.join(cfg.detectors)}"
            simdir = os.path.join(d, tag)
            if not os.path.isfile(os.path.join(simdir, ".complete")):
                shutil.rmtree(simdir, ignore_errors=True)
                sim(simdir, args.preset, nints=n, seed=1, **overrides)
                open(os.path.join(simdir, ".complete"), "w").close()
            out = os.path.join(d, f"out-{tag}")
            shutil.rmtree(out, ignore_errors=True)
            cfgfile = os.path.join(simdir, "nirbeam.toml")
            r = child_run([*nirbeam, "run", simdir, "--refs", os.path.join(simdir, "refs"),
                           "--out", out, "--no-progress",
                           *(["--config", cfgfile] if os.path.isfile(cfgfile) else [])])
            ndet = len(cfg.detectors)
            exposure_mib = n * cfg.ngroups * cfg.subsize1 * cfg.subsize2 * 2 * ndet / 2**20
            rows.append({"nints": n, "ngroups": cfg.ngroups, "detectors": list(cfg.detectors),
                         **r, "ints_per_s": round(n / r["wall_s"], 2),
                         "exposure_ramps_mib": round(exposure_mib, 1)})
            print(f"NINTS={n:6d} x {cfg.ngroups} groups x {ndet} det: {r['wall_s']:7.1f} s wall, "
                  f"{r['cpu_s']:7.1f} s cpu, peak RSS {r['peak_rss_mib']:7.1f} MiB (the ramps "
                  f"alone: {exposure_mib:7.1f} MiB), load {r['load_before']}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.data:
            shutil.rmtree(d, ignore_errors=True)
    res = {"benchmark": "pipeline_memory", "preset": args.preset, "overrides":
           {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
           "runs": rows, "machine": {"cpus": os.cpu_count()}, "date": time.strftime("%Y-%m-%d")}
    write_result(args.out, res, start=prov)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
