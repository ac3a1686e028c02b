"""Stage 2's Beam graph on the direct runner: with and without the Reshuffle (issue 14).

``SpectraStage`` was ``Create | Reshuffle | ProcessBlock | WriteDeadLetter``; on the
direct runner (one in-process worker) the Reshuffle distributes nothing and costs a
group-by-key stage. Now the Reshuffle is only where there is more than one worker
(``graph._Distribute``). This bench runs ``products.run_spectra_stage`` on one finished
run's rateints store, in ONE process, alternating the graph with the Reshuffle forced
back in and the graph as it is now (the same data, model and code otherwise), ``--reps``
times each; the first pair is a warm-up (numba cache loads, first Beam pipeline) and is
left out of the min / median. Products: the spectra of the two variants' last runs are
compared array by array (they must be identical).

Run: ``PYTHONPATH=. python bench/stage2_graph_ab.py --sim SIMDIR --store RUN/cubes.zarr``
(e.g. the ``sim-prism-300`` / ``run-prism`` folders that ``bench/stage2_cost.py`` makes);
writes ``bench/results/stage2_graph_ab.json`` (keys ``<variant>.cpu_s_med``,
``saved_cpu_s_med``, ``saved_wall_s_med``; ``noop_graph.<variant>``: Beam's own cost, the
same graph built and run with a step that does nothing).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)
from stage2_cost import compare_stores  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "stage2_graph_ab.json"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim", required=True, help="simulation folder (nirbeam.toml, uncal files)")
    ap.add_argument("--store", required=True, help="a finished run's cubes.zarr (rateints)")
    ap.add_argument("--work", default="/tmp/nirbeam-stage2-graph-ab")
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    prov = provenance(argv)
    logging.disable(logging.WARNING)
    import apache_beam as beam

    from nirbeam.sinks import zarr_store
    from nirbeam.stream import graph, products, spectra_stage
    from nirbeam.stream.config import load_config_file
    from nirbeam.stream.runners import RunnerSpec
    from nirbeam.stream.settings import Settings
    from nirbeam.stream.uncal import find_uncal_files, plan_exposures, scan_segment

    cfg = os.path.join(args.sim, "nirbeam.toml")
    settings = Settings.from_dict(load_config_file(cfg) if os.path.isfile(cfg) else {})
    plans = plan_exposures([scan_segment(f) for f in find_uncal_files([args.sim])])
    nints = sum(int(p.meta.nints) for p in plans)
    now = graph._Distribute.expand

    def with_reshuffle(self, pcoll):
        return pcoll | "Reshuffle" >> beam.Reshuffle()

    load0 = os.getloadavg()
    # 1. Beam's own cost: the SpectraStage graph built and run with a step that does
    # nothing (3 items), with and without the Reshuffle
    real_step = graph.ProcessBlock
    graph.ProcessBlock = lambda root, settings: (lambda block: [])
    noop: dict[str, list] = {"reshuffle": [], "now": []}
    for _ in range(args.reps + 2):
        for name in noop:
            graph._Distribute.expand = with_reshuffle if name == "reshuffle" else now
            c0, w0 = time.process_time(), time.perf_counter()
            graph.run_bounded(lambda p: p | "SpectraStage" >> graph.SpectraStage(
                [1, 2, 3], args.work, settings, os.path.join(args.work, "dead")), RunnerSpec())
            noop[name].append({"cpu_s": round(time.process_time() - c0, 4),
                               "wall_s": round(time.perf_counter() - w0, 4)})
    graph.ProcessBlock = real_step
    # 2. the whole stage 2 on the store
    runs: dict[str, list] = {"reshuffle": [], "now": []}
    for _ in range(args.reps):
        for name in runs:
            graph._Distribute.expand = with_reshuffle if name == "reshuffle" else now
            root = os.path.join(args.work, name, "cubes.zarr")
            shutil.rmtree(root, ignore_errors=True)
            shutil.copytree(args.store, root)
            for p in plans:
                for st in ("spectra", "cleaned", "extraction"):
                    shutil.rmtree(os.path.join(root, p.meta.group_name, st), ignore_errors=True)
            zarr_store.forget_cache()
            spectra_stage._MODELS.clear()
            c0, w0 = time.process_time(), time.perf_counter()
            products.run_spectra_stage(root, plans, settings, RunnerSpec(),
                                       os.path.join(args.work, name, "dead"))
            runs[name].append({"cpu_s": round(time.process_time() - c0, 4),
                               "wall_s": round(time.perf_counter() - w0, 4)})
    graph._Distribute.expand = now
    res: dict = {"benchmark": "stage2_graph_ab", "nints": nints, "runner": "direct",
                 "reps": args.reps, "warmup_left_out": 1}
    for name, rows in runs.items():
        c = sorted(r["cpu_s"] for r in rows[1:])
        w = sorted(r["wall_s"] for r in rows[1:])
        res[name] = {"runs": rows, "cpu_s_min": c[0], "cpu_s_med": c[len(c) // 2],
                     "wall_s_min": w[0], "wall_s_med": w[len(w) // 2]}
    res["noop_graph"] = {}
    for name, rows in noop.items():
        c = sorted(r["cpu_s"] for r in rows[1:])
        w = sorted(r["wall_s"] for r in rows[1:])
        res["noop_graph"][name] = {"runs": rows, "cpu_s_min": c[0], "cpu_s_med": c[len(c) // 2],
                                   "wall_s_min": w[0], "wall_s_med": w[len(w) // 2]}
    res["saved_cpu_s_med"] = round(res["reshuffle"]["cpu_s_med"] - res["now"]["cpu_s_med"], 4)
    res["saved_wall_s_med"] = round(res["reshuffle"]["wall_s_med"] - res["now"]["wall_s_med"], 4)
    res["products"] = compare_stores(os.path.join(args.work, "reshuffle", "cubes.zarr"),
                                     os.path.join(args.work, "now", "cubes.zarr"))
    res["machine"] = {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in load0],
                      "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
    print({k: res[k] for k in ("saved_cpu_s_med", "saved_wall_s_med", "products")},
          {k: {x: v[x] for x in ("cpu_s_med", "wall_s_med")} for k, v in res["noop_graph"].items()})
    write_result(args.out, res, argv, start=prov)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
