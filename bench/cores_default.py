"""The default worker choice (``--workers auto``) against ``--workers 1`` and 2 on one
simulated exposure: whole ``nirbeam run`` in fresh processes, alternated, each one's wall
and CPU seconds (children included: ``wait4``), run.json's ``cpu`` block (workers,
whole-machine and per-core throughput) and its products compared with the 1-worker run's
(``bench/compare_products.py``).

    python bench/cores_default.py --sim DIR [--repeat 1] [--variants auto,w1,w2] --out FILE
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _provenance import provenance, write_result  # noqa: E402
from compare_products import compare  # noqa: E402
from end_to_end import _sim_shape, machine_info, nirbeam_run, warm  # noqa: E402

VARIANTS = {"auto": [], "w1": ["--workers", "1"], "w2": ["--workers", "2"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim", required=True, help="a simulated exposure (nirbeam simulate)")
    ap.add_argument("--data", default="/tmp/nirbeam-cores")
    ap.add_argument("--variants", default="auto,w1,w2")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-warm", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "end_to_end_cores_s8.json"))
    args = ap.parse_args(argv)
    start = provenance(argv)
    variants = args.variants.split(",")
    if not args.no_warm:
        warm(args.sim, os.path.join(args.data, "warm"))
    runs: dict = {v: [] for v in variants}
    for i in range(args.repeat):
        for v in variants:
            out = os.path.join(args.data, f"out-{v}-{i}")
            r = nirbeam_run(args.sim, out, extra=VARIANTS[v])
            r["out"] = out
            runs[v].append(r)
            c = r.get("run_json_cpu") or {}
            print(f"{v}: {r['wall_s']} s wall, {r['cpu_s']} CPU-s, workers {c.get('workers')}, "
                  f"load {r['load_before']} -> {r['load_after']}", flush=True)
    ref = runs["w1"][0]["out"] if "w1" in runs else None
    summary = {}
    for v, rs in runs.items():
        best = min(rs, key=lambda r: r["wall_s"])
        c = best.get("run_json_cpu") or {}
        cmp = compare(ref, best["out"]) if ref and v != "w1" else None
        summary[v] = {
            "workers": c.get("workers"), "wall_s": best["wall_s"], "cpu_s": best["cpu_s"],
            "cores_busy": round(best["cpu_s"] / best["wall_s"], 3),
            "mpix_groups_per_s": c.get("mpix_groups_per_s"),
            "all_wall_s": [r["wall_s"] for r in rs], "all_cpu_s": [r["cpu_s"] for r in rs],
            "timings_s": best.get("run_json_timings_s"),
            "products_vs_w1": None if cmp is None else {
                "arrays": len(cmp), "identical": sum(bool(x["identical"]) for x in cmp.values()),
                "different": sorted(k for k, x in cmp.items() if not x["identical"])},
        }
    write_result(args.out, {"machine": machine_info(), "shape": _sim_shape(args.sim),
                            "runs": runs, "summary": summary}, start=start)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
