"""The whole ``nirbeam run`` on the WASP-39b-size G395H exposure (or any simulation), with
the runner settings that use a machine's cores: wall, CPU, peak RSS of the whole process
tree and of each process (the driver and every worker), the products compared between the
settings.

Settings (``--variants``, comma-separated, run in that order, each in a fresh process):

- ``serial``: ``--runner direct`` (one process, numba threads off in detector1);
- ``auto``: the default (``--runner auto``: 2 workers on 2 cores for this size);
- ``workers2``: ``--runner multiprocess --workers 2`` with ``NUMBA_NUM_THREADS=1`` (Beam's
  FnApiRunner in multi-processing mode: two SDK worker processes, each one core);
- ``threads2``: the default runner with ``NIRBEAM_DETECTOR1_PARALLEL=1`` and
  ``NUMBA_NUM_THREADS=2`` (the detector1 kernel on two threads).

    python bench/wasp_workers.py --sim /work/wasp/sim --data /work/wasp/e2e7 \\
        --variants workers2 --compare-with /work/wasp/e2e/out-wasp \\
        --out bench/results/end_to_end_wasp_session7.json

``--compare-with DIR``: also compare each run's products with an earlier run's
(``bench/compare_products.py``). The load average before and after each run is recorded:
on a shared machine, read the figures with it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _provenance import provenance, write_result  # noqa: E402

VARIANTS = {
    "serial": (("--runner", "direct"), {}),
    # the runner sets NUMBA_NUM_THREADS=1 (and the BLAS ones) in its workers itself since
    # session 8; a source tree older than that needs it in the environment
    "workers2": (("--runner", "multiprocess", "--workers", "2"), {"NUMBA_NUM_THREADS": "1"}),
    "threads2": (("--runner", "direct"), {"NIRBEAM_DETECTOR1_PARALLEL": "1",
                                          "NUMBA_NUM_THREADS": "2"}),
    "auto": ((), {}),  # the default: --runner auto --workers auto
}


class ProcessPeaks:
    """Peak RSS of every descendant process of this one (psutil, every ``every_s``):
    ``pid -> (peak MiB, short command line)``."""

    def __init__(self, every_s: float = 1.0):
        self.every, self.peaks = every_s, {}
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self):
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            for q in me.children(recursive=True):
                try:
                    rss = q.memory_info().rss / 2**20
                    if q.pid not in self.peaks or self.peaks[q.pid][1].startswith("?"):
                        # (a child seen between fork and exec shows this script's command)
                        cmd = " ".join(q.cmdline())
                        kind = ("beam sdk worker" if "sdk_worker" in cmd
                                else "nirbeam run (driver)" if "nirbeam.stream.cli" in cmd
                                else "?" + cmd[:80])
                        self.peaks[q.pid] = [self.peaks.get(q.pid, [0.0])[0], kind]
                    self.peaks[q.pid][0] = max(self.peaks[q.pid][0], rss)
                except psutil.Error:
                    pass
            self._stop.wait(self.every)

    def stop(self) -> list[dict]:
        self._stop.set()
        self._th.join()
        return [{"pid": pid, "what": kind, "peak_rss_mib": round(peak, 1)}
                for pid, (peak, kind) in sorted(self.peaks.items()) if peak > 50]


def main() -> None:
    import end_to_end as E
    from compare_products import compare

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sim", default="/work/wasp/sim")
    ap.add_argument("--data", default="/work/wasp/e2e7")
    ap.add_argument("--variants", default="workers2")
    ap.add_argument("--compare-with", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the output folders")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "end_to_end_wasp_session7.json"))
    args = ap.parse_args()
    prov = provenance()
    shape = E._sim_shape(args.sim)
    os.makedirs(args.data, exist_ok=True)
    res = {"benchmark": "wasp_workers", "simulation_path": args.sim, "shape": shape,
           "runs": {}}
    rec = os.path.join(args.sim, ".simulate-record.json")
    if os.path.isfile(rec):
        import json

        with open(rec) as fh:
            res["simulation"] = json.load(fh)
    outs = {}
    try:
        for v in args.variants.split(","):
            cli, env = VARIANTS[v]
            out = outs[v] = os.path.join(args.data, f"out-{v}")
            up0 = open("/proc/loadavg").read().split()[:3]
            peaks = ProcessPeaks(1.0)
            r = E.nirbeam_run(args.sim, out, extra=cli, env_extra=env, sample_s=1.0)
            r["processes"] = peaks.stop()
            r["uptime_load_before"], r["uptime_load_after"] = up0, open("/proc/loadavg").read().split()[:3]
            r["how"] = {"cli": list(cli), "env": env}
            r["Mpix_groups_per_s_whole_machine"] = E._rate(shape, len(shape["detectors"]), r["wall_s"])
            r["Mpix_groups_per_s_per_cpu_s"] = E._rate(shape, len(shape["detectors"]), r["cpu_s"])
            if args.compare_with:
                c = compare(args.compare_with, out)
                r["products_vs_compare_with"] = {
                    "dir": args.compare_with, "identical": all(x["identical"] for x in c.values()),
                    "compared": len(c), "different": {k: x for k, x in c.items() if not x["identical"]}}
            for u, o in outs.items():
                if u != v and os.path.isdir(o):
                    c = compare(o, out)
                    r[f"products_vs_{u}"] = {"identical": all(x["identical"] for x in c.values()),
                                            "compared": len(c),
                                            "different": sorted(k for k, x in c.items()
                                                                if not x["identical"])}
            res["runs"][v] = r
            print(f"{v}: wall {r['wall_s']} s, cpu {r['cpu_s']} s, peak {r['peak_rss_mib']} MiB, "
                  f"tree {r['rss_tree'].get('peak_tree_mib')} MiB, processes {r['processes']}, "
                  f"timings {r['run_json_timings_s']}, load {up0} -> {r['uptime_load_after']}",
                  flush=True)
            write_result(args.out, res, start=prov)
    finally:
        if not args.keep:
            for o in outs.values():
                shutil.rmtree(o, ignore_errors=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
