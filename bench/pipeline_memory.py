"""Peak memory and throughput of a whole `nirbeam run` versus NINTS.

Memory must stay bounded by a few integrations, whatever NINTS is: this runs the same
preset at several NINTS in fresh processes and reports each run's peak RSS (ru_maxrss of
the child) and integrations per second. The reference in the same run is the size of one
exposure in memory (what a whole-exposure pipeline would hold for the ramps alone).

    python bench/pipeline_memory.py [--preset prism-sub512] [--nints 100,400,1600]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from _provenance import provenance, write_result  # bench/ is sys.path[0]


def child_peak(cmd: list[str]) -> tuple[float, float]:
    """Run a command in a fresh process; return (wall s, peak RSS MiB of that child)."""
    code = (
        "import resource, subprocess, sys, time;"
        "t=time.time(); r=subprocess.run(sys.argv[1:]); w=time.time()-t;"
        "m=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
        "print(f'{w} {m}'); sys.exit(r.returncode)"
    )
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True)
    wall, kib = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(kib) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="prism-sub512")
    ap.add_argument("--nints", default="100,400,1600")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "pipeline_memory.json"))
    args = ap.parse_args()
    prov = provenance()
    from nirbeam.sim.simulator import PRESETS

    rows = []
    nirbeam = [sys.executable, "-m", "nirbeam.stream.cli"]
    with tempfile.TemporaryDirectory() as d:
        for n in [int(x) for x in args.nints.split(",")]:
            sim = os.path.join(d, f"sim{n}")
            subprocess.run([*nirbeam, "simulate", sim, "--preset", args.preset, "--nints", str(n)],
                           check=True, capture_output=True)
            out = os.path.join(d, f"out{n}")
            wall, peak = child_peak([*nirbeam, "run", sim, "--refs", os.path.join(sim, "refs"),
                                     "--out", out, "--no-progress"])
            cfg = PRESETS[args.preset]
            exposure_mib = n * cfg.ngroups * cfg.subsize1 * cfg.subsize2 * 2 / 2**20
            rows.append({"nints": n, "wall_s": round(wall, 2), "ints_per_s": round(n / wall, 2),
                         "peak_rss_mib": round(peak, 1),
                         "exposure_ramps_mib": round(exposure_mib, 1)})
            print(f"NINTS={n:6d}: {wall:7.1f} s, {n / wall:6.1f} int/s, peak RSS {peak:7.1f} MiB "
                  f"(the ramps alone: {exposure_mib:7.1f} MiB)", flush=True)
    res = {"benchmark": "pipeline_memory", "preset": args.preset, "runs": rows,
           "machine": {"cpus": os.cpu_count()}, "date": time.strftime("%Y-%m-%d")}
    write_result(args.out, res, start=prov)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
