"""Time the simulator presets: seconds, MB/s written, ms per integration and detector.

Usage: .venv/bin/python bench/simulate_speed.py [--workdir DIR] [--out FILE]

The reference in the same run is the volume written (uncal bytes): MB/s is the figure to
compare between machines; the machine's load average is recorded beside it. Writes
``bench/results/simulate_speed.json`` with its provenance.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from _provenance import RESULTS, provenance, write_result

from nirbeam.sim.simulator import simulate


def run(outdir: Path, preset: str, nints: int, **kw) -> dict:
    t = time.perf_counter()
    res = simulate(outdir / f"{preset}-{nints}-{len(kw)}", preset, nints=nints, **kw)
    dt = time.perf_counter() - t
    nbytes = sum(p.stat().st_size for p in res.uncal)
    ndet = len(res.config.detectors)
    row = {"preset": preset, "nints": nints, "ngroups": res.config.ngroups,
           "detectors": list(res.config.detectors), "wall_s": round(dt, 2),
           "uncal_mb": round(nbytes / 1e6, 1), "mb_per_s": round(nbytes / 1e6 / dt, 1),
           "ms_per_int_per_det": round(dt / nints / ndet * 1e3, 1),
           "loadavg_1min_after": os.getloadavg()[0]}
    print(f"{preset:15s} nints={nints:4d} ngroups={row['ngroups']:3d} "
          f"dets={','.join(row['detectors'])}: {dt:6.1f} s, uncal {row['uncal_mb']:7.1f} MB, "
          f"{row['mb_per_s']:6.1f} MB/s, {row['ms_per_int_per_det']:7.1f} ms/int/det", flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=str(RESULTS / "simulate_speed.json"))
    args = ap.parse_args(argv)
    prov = provenance(argv)
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="simbench-"))
    try:
        rows = [run(base, "prism-sub512", 400), run(base, "g395h-sub2048", 20),
                run(base, "g395h-sub2048", 20, detectors=("NRS1", "NRS2"))]
    finally:
        if not args.workdir:
            shutil.rmtree(base, ignore_errors=True)
    write_result(args.out, {"benchmark": "simulate_speed", "runs": rows,
                            "machine": {"cpus": os.cpu_count(),
                                        "loadavg_at_end": list(os.getloadavg())}},
                 argv, start=prov)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
