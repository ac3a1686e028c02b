"""``nirbeam stream`` latency on Beam: segments dropped into a watched folder at 1x real time.

A simulated prism-sub512 exposure (``--nints``, ``--ints-per-segment`` integrations per
segment file) is replayed into a folder by a thread: each segment file appears (copied
under a temporary name, then renamed) when its last integration would have ended at
``--speed`` times real time (INT_TIMES). ``nirbeam stream --until-complete`` --
:func:`nirbeam.stream.streaming.run_stream`, a Beam streaming pipeline on the in-process
FnApiRunner -- watches the folder (``--poll`` s).

Latency of an integration = the time its live white-light row was first on disk (the live
table rewritten atomically; status ``provisional`` -- rateints DQ -- and ``flagged`` --
with the time-domain outlier flags, which need the integration's whole outlier window,
~window/2 later integrations) minus the time **its segment file appeared in the folder**
(so the wait for the next poll, the two-poll completeness rule, the Beam scheduling and
every step are inside it). Reported for all integrations and for those after the first
segment (the first one also pays the one-time work: references, the 1/f scene mask, numba
loading, the live extraction model).

Run: ``.venv/bin/python bench/streaming_latency.py [--nints 160] [--ints-per-segment 8]
[--speed 1] [--poll 0.2]``; writes ``bench/results/streaming_latency.json`` with the git
commit, the machine's load and the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)

RESULTS = Path(__file__).resolve().parent / "results" / "streaming_latency.json"
CONFIG = {"products": {"fit": False, "plots": False, "x1dints_fits": False}}


def _stats(v) -> dict:
    if len(v) == 0:
        return {"n": 0}
    a = np.asarray(v, float)
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 3),
            "p95": round(float(np.percentile(a, 95)), 3), "max": round(float(a.max()), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nints", type=int, default=160)
    ap.add_argument("--ints-per-segment", type=int, default=8)
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--poll", type=float, default=0.2)
    ap.add_argument("--workdir", default="/tmp/nirbeam-bench-streaming")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    prov = provenance()

    from nirbeam.sim.simulator import simulate
    from nirbeam.stream.streaming import STREAM_DIR, load_live_state, run_stream
    from nirbeam.stream.uncal import scan_segment
    from nirbeam.stream.watch import ReplayDropper

    work = Path(args.workdir)
    sim_dir = work / f"sim{args.nints}_{args.ints_per_segment}"
    stamp = sim_dir / ".complete"
    if not stamp.exists():
        t0 = time.time()
        res = simulate(sim_dir, preset="prism-sub512", nints=args.nints, seed=1,
                       ints_per_segment=args.ints_per_segment)
        from nirbeam.stream.cli import write_sim_config

        write_sim_config(res)  # as `nirbeam simulate` does: orbit and wavelength map
        stamp.write_text("ok")
        print(f"simulated {args.nints} integrations in {time.time() - t0:.0f} s", flush=True)
    segs = sorted(sim_dir.glob("*_uncal.fits"))
    watch, out = work / "watch", work / "out"
    for d in (watch, out):
        shutil.rmtree(d, ignore_errors=True)
    watch.mkdir(parents=True)
    # the config the simulator writes (wavelength map, orbit), as a user's would be
    import tomllib

    config = tomllib.loads((sim_dir / "nirbeam.toml").read_text())
    config["products"] = {**config.get("products", {}), **CONFIG["products"]}
    dropper = ReplayDropper([str(s) for s in segs], watch, args.speed)
    load0 = os.getloadavg()
    t0 = time.time()
    import threading

    def start_dropping():  # once the pipeline is up (its start-up is not a segment's latency)
        while not (out / STREAM_DIR).exists():
            time.sleep(0.05)
        dropper.start()

    threading.Thread(target=start_dropping, daemon=True).start()
    res = run_stream(str(watch), str(out), refs_dir=str(sim_dir / "refs"), config=config,
                     until_complete=True, poll=args.poll, handle_sigint=False, plot_every=30.0)
    wall = time.time() - t0
    st = load_live_state(str(out / STREAM_DIR))
    dropped = {os.path.basename(p): t for t, p in dropper.dropped}
    seg_of = {}
    for s in segs:
        info = scan_segment(str(s))
        for i in range(info.intstart, info.intend + 1):
            seg_of[i] = (s.name, info.intstart == 1)
    lat = {"provisional": [], "flagged": []}
    lat_after_first = {"provisional": [], "flagged": []}
    for (_, i, status), t_written in st.written.items():
        name, first = seg_of[i]
        d = t_written - dropped[name]
        lat[status].append(d)
        if not first:
            lat_after_first[status].append(d)
    s = res.summary
    e = s["exposures"][0]
    cadence = float(np.median(np.diff([t for t, _ in dropper.schedule]))) / args.ints_per_segment * args.speed
    result = {
        "benchmark": "streaming_latency",
        "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "preset": "prism-sub512",
        "nints": args.nints,
        "ints_per_segment": args.ints_per_segment,
        "replay_speed": args.speed,
        "poll_s": args.poll,
        "cadence_s": round(cadence, 3),
        "execution": s["beam"]["runner"],
        "beam_streaming": s["beam"]["streaming"],
        "latency_definition": "first write of the integration's live white-light row (status) "
                              "minus the time its segment file appeared in the watched folder",
        "latency_s": {k: _stats(v) for k, v in lat.items()},
        "latency_s_after_first_segment": {k: _stats(v) for k, v in lat_after_first.items()},
        "processed": e["processed"], "complete": e["complete"],
        "live_table_writes": s["streaming"]["live_table_writes"],
        "counters": s["beam"]["counters"],
        "wall_s": round(wall, 1), "finalize_s": s["streaming"]["finalize_s"],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_average_at_start": [round(x, 2) for x in load0],
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
    }
    print(json.dumps({k: result[k] for k in ("latency_s", "latency_s_after_first_segment",
                                               "wall_s", "processed", "complete")}, indent=1))
    if not args.no_save:
        write_result(RESULTS, result, start=prov)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
