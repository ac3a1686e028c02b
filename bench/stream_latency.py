"""``nirbeam stream`` per-integration latency, measured from outside (issue 14 target:
streaming p95 latency < 2 s at 1x real time).

A simulated PRISM SUB512 exposure (``--nints``, ``--ints-per-segment`` integrations per
file; 1 by default: every integration is its own file, so each has its own arrival) is fed
into the watched folder of :func:`nirbeam.stream.streaming.run_stream` (the ``nirbeam
stream`` driver: a Beam streaming pipeline on the in-process FnApiRunner) by a thread:
each file is copied under a hidden name and renamed into place (the moment it is "closed")
when its last integration ends at ``--speed`` times real time (INT_TIMES).

A second thread watches the live product ``OUTDIR/live/whitelight.ecsv`` (rewritten
atomically by the live sink) every ``--observe`` s and records when each integration's row
first appears on disk, with status ``provisional`` (rateints DQ) and ``flagged`` (with
the time-domain outlier flags, which wait for the integration's outlier window).

latency(integration) = first seen on disk - its file renamed into the watched folder

so the poll wait, the watcher's two-poll completeness rule, Beam's scheduling, every step
and the table write are inside it. Reported: all integrations, and the steady state
(integrations after the first ``--live-model-nints``, which wait for the live extraction
model by design). The live state's own record of its first write of each row
(``LiveState.written``) is reported next to it as a cross-check (observer minus writer =
observation delay). The machine's load average and CPU count go into the record: on a
shared machine the figure is pessimistic.

Run: ``PYTHONPATH=. .venv/bin/python bench/stream_latency.py [--nints 120]
[--ints-per-segment 1] [--speed 1] [--poll 0.2]``; writes
``bench/results/stream_latency.json`` (key ``latency_s.steady.provisional.p95``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)

RESULTS = Path(__file__).resolve().parent / "results" / "stream_latency.json"
PRODUCTS = {"fit": False, "plots": False, "x1dints_fits": False}
TARGET_P95_S = 2.0


def stats(v) -> dict:
    """n, p50, p95, max (s) of a list of latencies."""
    if len(v) == 0:
        return {"n": 0}
    a = np.asarray(v, float)
    return {"n": int(a.size), "p50": round(float(np.percentile(a, 50)), 3),
            "p95": round(float(np.percentile(a, 95)), 3), "max": round(float(a.max()), 3)}


def read_live_rows(path: str) -> list[tuple[int, str]]:
    """(integration, status) of each row of a live ``whitelight.ecsv`` (plain text parse:
    the observer must not load the machine more than the stream it measures)."""
    with open(path) as fh:
        lines = [ln for ln in fh if ln.strip() and not ln.startswith("#")]
    if not lines:
        return []
    cols = lines[0].split()
    ii, si = cols.index("integration_number"), cols.index("status")
    out = []
    for ln in lines[1:]:
        f = ln.split()
        out.append((int(f[ii]), f[si].strip('"')))
    return out


class LiveObserver:
    """A thread recording when each (integration, status) first appears in a live table."""

    def __init__(self, path: Path, every: float):
        self.path, self.every = str(path), float(every)
        self.seen: dict[tuple[int, str], float] = {}
        self.reads = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name="live-observer")

    def start(self):
        self._t.start()
        return self

    def _run(self):
        last = None
        while not self.stop.is_set():
            try:
                m = os.stat(self.path).st_mtime_ns
            except OSError:
                m = None
            if m is not None and m != last:
                now = time.time()
                try:
                    rows = read_live_rows(self.path)
                except (OSError, ValueError, IndexError) as exc:
                    rows = None  # replaced while read: read it again next time
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                if rows is not None:
                    last = m
                    self.reads += 1
                    for i, status in rows:
                        self.seen.setdefault((i, status), now)
                        if status == "flagged":  # a flagged row was provisional before
                            self.seen.setdefault((i, "provisional"), now)
            self.stop.wait(self.every)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nints", type=int, default=120)
    ap.add_argument("--ints-per-segment", type=int, default=1)
    ap.add_argument("--speed", type=float, default=1.0, help="x real time (1: the target)")
    ap.add_argument("--poll", type=float, default=0.2, help="stream's folder poll (s)")
    ap.add_argument("--observe", type=float, default=0.05, help="observer's poll of the live table (s)")
    ap.add_argument("--live-model-nints", type=int, default=8)
    ap.add_argument("--workdir", default="/tmp/modes/stream_latency")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    prov = provenance()

    from nirbeam.sim.simulator import simulate
    from nirbeam.stream.cli import write_sim_config
    from nirbeam.stream.streaming import STREAM_DIR, load_live_state, run_stream
    from nirbeam.stream.uncal import scan_segment
    from nirbeam.stream.watch import ReplayDropper

    work = Path(args.workdir)
    sim_dir = work / f"sim{args.nints}_{args.ints_per_segment}"
    if not (sim_dir / ".complete").exists():
        t0 = time.time()
        res = simulate(sim_dir, preset="prism-sub512", nints=args.nints, seed=1,
                       ints_per_segment=args.ints_per_segment)
        write_sim_config(res)  # as `nirbeam simulate` does: orbit and wavelength map
        (sim_dir / ".complete").write_text("ok")
        print(f"simulated {args.nints} integrations in {time.time() - t0:.0f} s", flush=True)
    segs = sorted(sim_dir.glob("*_uncal.fits"))
    watch, out = work / "watch", work / "out"
    for d in (watch, out):
        shutil.rmtree(d, ignore_errors=True)
    watch.mkdir(parents=True)
    import tomllib

    config = tomllib.loads((sim_dir / "nirbeam.toml").read_text())
    config["products"] = {**config.get("products", {}), **PRODUCTS}
    seg_of = {}
    for s in segs:
        info = scan_segment(str(s))
        for i in range(info.intstart, info.intend + 1):
            seg_of[i] = s.name
    dropper = ReplayDropper([str(s) for s in segs], watch, args.speed)
    observer = LiveObserver(out / "live" / "whitelight.ecsv", args.observe)
    load0 = os.getloadavg()

    def start_feeding():  # once the pipeline is up: its start-up is not an integration's latency
        while not (out / STREAM_DIR).exists():
            time.sleep(0.05)
        observer.start()
        dropper.start()

    threading.Thread(target=start_feeding, daemon=True).start()
    t0 = time.time()
    res = run_stream(str(watch), str(out), refs_dir=str(sim_dir / "refs"), config=config,
                     until_complete=True, poll=args.poll, handle_sigint=False, plot_every=30.0,
                     live_model_nints=args.live_model_nints)
    wall = time.time() - t0
    time.sleep(3 * args.observe)
    observer.stop.set()
    load1 = os.getloadavg()
    dropped = {os.path.basename(p): t for t, p in dropper.dropped}
    st = load_live_state(str(out / STREAM_DIR))
    lat, steady, writer, obs_delay = ({"provisional": [], "flagged": []} for _ in range(4))
    missing = []
    for i in range(1, args.nints + 1):
        for status in ("provisional", "flagged"):
            t = observer.seen.get((i, status))
            if t is None:
                missing.append((i, status))
                continue
            d = t - dropped[seg_of[i]]
            lat[status].append(d)
            if i > args.live_model_nints:
                steady[status].append(d)
            tw = next((v for (g, k, s), v in st.written.items() if k == i and s == status), None)
            if tw is not None:
                writer[status].append(tw - dropped[seg_of[i]])
                obs_delay[status].append(t - tw)
    e = res.summary["exposures"][0]
    cadence = float(np.median(np.diff([t for t, _ in dropper.schedule]))) / args.ints_per_segment
    p95 = stats(steady["provisional"]).get("p95")
    result = {
        "benchmark": "stream_latency",
        "preset": "prism-sub512",
        "nints": args.nints,
        "ints_per_segment": args.ints_per_segment,
        "replay_speed": args.speed,
        "cadence_s_at_speed": round(cadence, 3),
        "poll_s": args.poll,
        "observer_poll_s": args.observe,
        "live_model_nints": args.live_model_nints,
        "execution": res.summary["beam"]["runner"],
        "latency_definition": "first appearance of the integration's row (status) in "
                              "OUTDIR/live/whitelight.ecsv, seen by an observer thread, minus "
                              "the time its file was renamed into the watched folder",
        "latency_s": {"all": {k: stats(v) for k, v in lat.items()},
                      "steady": {k: stats(v) for k, v in steady.items()}},
        "latency_s_writer_record": {k: stats(v) for k, v in writer.items()},
        "observation_delay_s": {k: stats(v) for k, v in obs_delay.items()},
        "target": {"p95_s": TARGET_P95_S, "key": "latency_s.steady.provisional.p95",
                   "met": bool(p95 is not None and p95 < TARGET_P95_S)},
        "missing_rows": missing[:20], "n_missing": len(missing),
        "processed": e["processed"], "complete": e["complete"],
        "live_table_writes": res.summary["streaming"]["live_table_writes"],
        "counters": res.summary["beam"]["counters"],
        "wall_s": round(wall, 1), "finalize_s": res.summary["streaming"]["finalize_s"],
        "observer_reads": observer.reads,
        "observer_read_errors": observer.errors[:5], "n_observer_read_errors": len(observer.errors),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_average_at_start": [round(x, 2) for x in load0],
                    "load_average_at_end": [round(x, 2) for x in load1],
                    "note": "load average over the cpus: > 1 means the stream shared its "
                            "cores with other work, so the figures are pessimistic"},
    }
    print(json.dumps({k: result[k] for k in ("latency_s", "latency_s_writer_record", "target",
                                               "wall_s", "processed", "complete", "machine")},
                     indent=1))
    if not args.no_save:
        write_result(Path(args.out), result, start=prov)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
