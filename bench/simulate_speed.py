"""Time the simulator presets (prints seconds and MB/s written; no asserts).

Usage: .venv/bin/python bench/simulate_speed.py [OUTDIR]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from nirbeam.sim.simulator import simulate


def run(outdir: Path, preset: str, nints: int, **kw) -> None:
    t = time.perf_counter()
    res = simulate(outdir / preset, preset, nints=nints, **kw)
    dt = time.perf_counter() - t
    nbytes = sum(p.stat().st_size for p in res.uncal)
    print(f"{preset:15s} nints={nints:4d} ngroups={res.config.ngroups:3d} "
          f"dets={','.join(res.config.detectors)}: {dt:6.1f} s, uncal {nbytes / 1e6:7.1f} MB, "
          f"{nbytes / 1e6 / dt:6.1f} MB/s, {dt / nints / len(res.config.detectors) * 1e3:7.1f} ms/int/det")


def main() -> None:
    base = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="simbench-"))
    try:
        run(base, "prism-sub512", 400)
        run(base, "g395h-sub2048", 20)
        run(base, "g395h-sub2048", 20, detectors=("NRS1", "NRS2"))
    finally:
        if len(sys.argv) <= 1:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
