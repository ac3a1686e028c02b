"""Per-update cost of ``nirbeam stream``'s live sink vs the number of integrations
(issue 14 follow-up: the live speclc rewrite grew with the table).

One update = what the live sink does once per bundle in a 1-file-per-integration stream:
a new ``provisional`` point (the newest integration) and a ``flagged`` one (the
integration whose outlier window just closed, ``--window // 2`` back) are added to a
:class:`~nirbeam.stream.live.LiveState` already holding ``n`` integrations, then
``LiveWriter.flush`` (white-light ECSV + Parquet, speclc wide ECSV + long Parquet; no plot,
no fit) and the sink's state snapshot (``save_live_state``) run. The state is synthetic
but shaped as the PRISM SUB512 stream's (512 columns 0.6-5.3 µm, batch's default bin
rule: R = 50, ~110 bins).

``before``: the LiveWriter of ``--before`` (a git commit; its ``nirbeam/stream/live.py``
loaded from git into this process, everything else from the working tree), ``after``:
the working tree's. Both run in this one process on the same states, one update of each
(implementation, size) in turn, so their ratios are reliable on a loaded machine; the load
average goes into the record. The two writers' files are compared at the end (tables read
back with astropy and pandas: equal).

Run: ``PYTHONPATH=. .venv/bin/python bench/live_update_cost.py [--sizes 50 465]
[--updates 30] [--before 4154a05]``; writes ``bench/results/live_update_cost.json``
(keys ``per_update_ms.<impl>.<n>.median``, ``growth_465_over_50.<impl>``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import REPO, provenance, write_result  # noqa: E402  (bench/ on sys.path)

RESULTS = Path(__file__).resolve().parent / "results" / "live_update_cost.json"
EXP, DET = "jw01366004001_04101_00001", "NRS1"


def load_before(commit: str):
    """``nirbeam/stream/live.py`` as committed in ``commit``, as a module."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:nirbeam/stream/live.py"],
                         capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "live_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("live_before", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["live_before"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def group_info(settings):
    from nirbeam.stream.product_tables import lightcurve_edges
    from nirbeam.stream.records import ExposureMeta

    meta = ExposureMeta(EXP, DET, "NIRSPEC", "NRS_BRIGHTOBJ", "NRSRAPID", "SUB512", 1, 1, 512,
                        32, 465, 5, 1, 0, 0.226, 0.226, 1.357, "CLEAR", "PRISM", 1, True, "WASP-39")
    wl = np.linspace(0.6, 5.3, 512)
    edges = np.asarray(lightcurve_edges(settings.lightcurve, wl, "wavelength_map"), float)
    return {"meta": meta, "edges": edges, "wl": wl, "wl_source": "wavelength_map"}


def point(mod, i, status, rng, nbin):
    p = mod.LivePoint(EXP, DET, i, 60000.0 + i * 1.357 / 86400, 59999.999 + i * 1.357 / 86400,
                      float(1e5 + rng.normal()), float(rng.uniform(5, 6)),
                      0, status)
    bf = rng.normal(1e3, 1.0, nbin)
    bf[rng.random(nbin) < 0.01] = np.nan
    be = rng.uniform(1, 2, nbin)
    bdq = np.where(np.isfinite(bf), 0, 1).astype(np.uint32)
    return p, (bf, be, bdq)


def state_at(mod, n, info, window, seed):
    """A LiveState with ``n`` integrations written (the last ``window // 2`` provisional)."""
    rng = np.random.default_rng(seed)
    st = mod.LiveState()
    st.groups[f"{EXP}_{DET.lower()}"] = info
    nb = info["edges"].size - 1
    for i in range(1, n + 1):
        st.add(*point(mod, i, "provisional" if i > n - window // 2 else "flagged", rng, nb))
    return st, rng


def updates(mod, stage, outdir, settings, n, info, window, seed):
    """A generator: each ``next()`` runs one update and yields its wall times (ms) of
    ``(flush, snapshot, state codec)``; the first write of the ``n`` rows comes before."""
    from apache_beam.coders import PickleCoder

    from nirbeam.stream.stream_steps import save_live_state

    coder = PickleCoder()
    st, rng = state_at(mod, n, info, window, seed)
    w = mod.LiveWriter(str(outdir), settings, plot_every=0.0)
    os.makedirs(stage, exist_ok=True)
    w.flush(st)  # the first write of the n rows (not an update)
    nb = info["edges"].size - 1
    i = n
    while True:
        i += 1
        st.add(*point(mod, i, "provisional", rng, nb))
        j = i - window // 2
        if j >= 1:
            st.add(*point(mod, j, "flagged", rng, nb))
        t0 = time.perf_counter()
        w.flush(st)
        t1 = time.perf_counter()
        save_live_state(str(stage), st)
        t2 = time.perf_counter()
        st = coder.decode(coder.encode(st))  # the sink's Beam state: written, read back
        t3 = time.perf_counter()
        yield (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3


def summary(v):
    a = np.asarray(v)
    return {"n": int(a.size), "mean": round(float(a.mean()), 2),
            "median": round(float(np.median(a)), 2), "p95": round(float(np.percentile(a, 95)), 2),
            "max": round(float(a.max()), 2)}


def same_products(a: Path, b: Path) -> dict:
    """The two writers' live tables read back (astropy, pandas): equal?"""
    import pandas as pd
    from astropy.table import Table

    out = {}
    for name in sorted(os.listdir(a)):
        fa, fb = a / name, b / name
        if name.endswith(".ecsv"):
            ta, tb = Table.read(fa), Table.read(fb)
            ok = ta.colnames == tb.colnames and len(ta) == len(tb) and all(
                np.array_equal(np.asarray(ta[c]), np.asarray(tb[c]), equal_nan=ta[c].dtype.kind == "f")
                for c in ta.colnames)
            ma = {k: v for k, v in ta.meta.items() if k != "written"}
            mb = {k: v for k, v in tb.meta.items() if k != "written"}
            out[name] = bool(ok and ma == mb)
        elif name.endswith(".parquet"):
            da, db = pd.read_parquet(fa), pd.read_parquet(fb)
            out[name] = bool(da.equals(db))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 465])
    ap.add_argument("--updates", type=int, default=30)
    ap.add_argument("--window", type=int, default=25, help="[outliers] window")
    ap.add_argument("--before", default="4154a05")
    ap.add_argument("--only-before", action="store_true")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    start = provenance(argv)
    load0 = os.getloadavg()

    from nirbeam.stream import live as after
    from nirbeam.stream.settings import Settings

    before = load_before(args.before)
    impls = {"before": before} if args.only_before else {"before": before, "after": after}
    settings = Settings.from_dict({})
    info = group_info(settings)
    res = {impl: {} for impl in impls}
    snap = {impl: {} for impl in impls}
    codec = {impl: {} for impl in impls}
    equal = {}
    tmp = Path(tempfile.mkdtemp(prefix="live_update_cost_"))
    # every (implementation, size) advances one update in turn: the machine's load
    # changes affect all of them alike
    gens = {(impl, n): updates(mod, tmp / impl / str(n) / "_stream", tmp / impl / str(n),
                               settings, n, info, args.window, seed=n)
            for n in args.sizes for impl, mod in impls.items()}
    times = {k: [] for k in gens}
    for _ in range(args.updates):
        for k, g in gens.items():
            times[k].append(next(g))
    for (impl, n), v in times.items():
        ms, sn, cd = zip(*v, strict=True)
        res[impl][str(n)] = summary(ms)
        snap[impl][str(n)] = summary(sn)
        codec[impl][str(n)] = summary(cd)
        print(f"{impl:6s} n={n:4d}: flush {res[impl][str(n)]}  snapshot {snap[impl][str(n)]}"
              f"  state codec {codec[impl][str(n)]}", flush=True)
    if len(impls) == 2:
        for n in args.sizes:
            equal[str(n)] = same_products(tmp / "before" / str(n) / "live",
                                          tmp / "after" / str(n) / "live")
            print(n, "same tables:", equal[str(n)], flush=True)
    lo, hi = str(min(args.sizes)), str(max(args.sizes))
    result = {
        "what": "live sink per update (one provisional + one flagged point, then "
                "LiveWriter.flush without plot/fit), ms; snapshot = save_live_state; "
                "state codec = PickleCoder encode + decode of the LiveState (Beam state); "
                "the four (implementation, size) runs advance one update each in turn",
        "bins": int(info["edges"].size - 1), "window": args.window, "updates": args.updates,
        "per_update_ms": res, "snapshot_ms": snap, "state_codec_ms": codec,
        "growth_465_over_50" if (lo, hi) == ("50", "465") else f"growth_{hi}_over_{lo}": {
            impl: round(res[impl][hi]["median"] / res[impl][lo]["median"], 2) for impl in impls},
        "speedup_at": {n: round(res["before"][n]["median"] / res["after"][n]["median"], 1)
                       for n in res.get("after", {})},
        "same_tables": equal,
        "machine": {"cpus": os.cpu_count(), "load_start": [round(x, 2) for x in load0],
                    "load_end": [round(x, 2) for x in os.getloadavg()]},
    }
    print(write_result(args.out, result, start=start))


if __name__ == "__main__":
    main()
