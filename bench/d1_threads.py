"""detector1's read + calibrate of a run's integrations in this process, on 1 thread and on
:func:`~nirbeam.stream.rate_steps.detector1_pool`'s threads, alternated: wall and process
CPU seconds of each pass (no writes: ``CalibrateBlock._results`` only), the load average
around it, and a bit-for-bit check of the five arrays between the passes.

    python bench/d1_threads.py RUN_FOLDER UNCAL_DIR [--nints 256] [--block 32]
        [--threads 1,2,p] [--repeat 5] [--idle 0.8 --wait 1500]

``--idle C``: each round starts only once C cores were idle over one second (/proc/stat;
a shared machine: rounds at idle moments only, each row says how idle), giving up after
``--wait`` seconds in all.

RUN_FOLDER: a finished ``nirbeam run`` on UNCAL_DIR (its store holds the references and
the scene mask detector1 needs).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this tree's nirbeam
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)


def idle_cores() -> float:
    """Cores idle (idle + iowait) over one second, from /proc/stat."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)

    i0, t0 = snap()
    time.sleep(1.0)
    i1, t1 = snap()
    return (os.cpu_count() or 1) * (i1 - i0) / max(1, t1 - t0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("uncal")
    ap.add_argument("--nints", type=int, default=256)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--threads", default="1,2", help="thread counts; p: numba-parallel")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=None, help="write the rows and the summary here (JSON, with provenance)")
    ap.add_argument("--idle", type=float, default=0.0)
    ap.add_argument("--wait", type=float, default=1500.0)
    a = ap.parse_args(argv)
    prov = provenance(argv)

    from nirbeam.core.records import IntegrationKey
    from nirbeam.stream import rate_steps
    from nirbeam.stream.plan import ReadItem
    from nirbeam.stream.settings import Settings
    from nirbeam.stream.uncal import plan_exposures, scan_segment

    (plan,) = plan_exposures([scan_segment(p) for p in sorted(glob.glob(f"{a.uncal}/*_uncal.fits"))])
    root = os.path.join(a.run, "cubes.zarr")
    m = plan.meta
    items = [ReadItem(IntegrationKey(m.exposure, m.detector, i), plan.segment_of(i), None)
             for i in range(1, min(a.nints, m.nints) + 1)]
    cb = rate_steps.CalibrateBlock.__new__(rate_steps.CalibrateBlock)
    cb.calibrate = rate_steps.Calibrate(root, Settings(), "bench")
    blocks = [items[k:k + a.block] for k in range(0, len(items), a.block)]
    cb._read_calibrate(items[0])  # caches and kernels loaded before any timing

    def one_pass(threads):
        # "p": one thread, detector1's numba-parallel kernel (NIRBEAM_DETECTOR1_PARALLEL=1)
        os.environ["NIRBEAM_DETECTOR1_PARALLEL"] = "1" if threads == "p" else "0"
        os.environ[rate_steps.D1_THREADS_ENV] = "1" if threads == "p" else threads
        cb._warm = False
        out = {}
        la0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        for blk in blocks:
            for item, (failed, rec, _, _) in cb._results(blk):
                assert failed is None, rec
                out[item.key.integration] = rec
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return out, {"threads": threads, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                     "load1": [round(la0, 2), round(os.getloadavg()[0], 2)]}

    ref = None
    rows = []
    give_up = time.time() + a.wait
    for _ in range(a.repeat):
        idle = idle_cores()
        while idle < a.idle and time.time() < give_up:
            idle = idle_cores()
        if idle < a.idle:
            break
        for t in a.threads.split(","):
            out, row = one_pass(t)
            row["idle_cores_before"] = round(idle, 2)
            if ref is None:
                ref = out
            same = all(getattr(out[i], k).tobytes() == getattr(ref[i], k).tobytes()
                       for i in ref for k in ("rate", "err", "dq", "var_poisson", "var_rnoise"))
            row["identical"] = same
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for t in a.threads.split(","):
        w = sorted(r["wall_s"] for r in rows if r["threads"] == t)
        c = sorted(r["cpu_s"] for r in rows if r["threads"] == t)
        if not w:
            continue
        summary[t] = {"wall_min_s": w[0], "wall_median_s": w[len(w) // 2],
                      "cpu_min_s": c[0], "cpu_median_s": c[len(c) // 2]}
        print(f"threads={t}: wall min {w[0]:.3f} median {w[len(w) // 2]:.3f}; "
              f"cpu min {c[0]:.3f} median {c[len(c) // 2]:.3f} ({len(items)} integrations)")
    if a.out:
        write_result(a.out, {"benchmark": "d1_threads", "integrations": len(items),
                             "rows": rows, "summary": summary}, start=prov)


if __name__ == "__main__":
    main()
