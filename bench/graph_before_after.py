"""Issue 12's first "done when": BOTS products before and after the graph redesign.

Simulates the demo exposure (``./run demo``: PRISM SUB512, 400 integrations, seed 1) and a
G395H SUB2048 NRS1 + NRS2 exposure (``--g395h-nints``, 70 groups, seed 1), runs ``nirbeam run`` on each with the code of git
revision ``--baseline`` (extracted with ``git archive``, run from that tree) and with the
current tree, each in a fresh process, and compares the two output folders bit for bit
(``bench/compare_products.py``: every zarr array of every stage, white light, whtlt,
speclc and x1dints tables).

    python bench/graph_before_after.py [--baseline e47fe90] [--g395h-nints 20]
        [--data DIR] [--reuse] [--out bench/results/graph_before_after.json]

``--reuse``: keep simulated inputs and baseline outputs already in ``--data`` (the
baseline does not change; the current run is always redone).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _provenance import provenance, write_result  # noqa: E402
from compare_products import compare  # noqa: E402

CASES = {  # preset, integrations (None: --g395h-nints), detectors
    "demo": ("prism-sub512", 400, ("NRS1",)),
    "g395h": ("g395h-sub2048", None, ("NRS1", "NRS2")),
}


def _run(cmd, src=None) -> float:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        env["NUMBA_CACHE_DIR"] = os.path.join(src, ".numba-cache")
    t0 = time.time()
    r = subprocess.run(cmd, env=env, cwd=src or REPO, capture_output=True, text=True)
    if r.returncode not in (0, 3):
        raise RuntimeError(f"{' '.join(cmd)} -> {r.returncode}\n{r.stderr[-3000:]}")
    return round(time.time() - t0, 1)


def _nirbeam(*args):
    return [sys.executable, "-m", "nirbeam.stream.cli", *args]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--baseline", default="e47fe90")
    ap.add_argument("--g395h-nints", type=int, default=20)
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "nirbeam-graph-ba"))
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--sections", default="demo,g395h")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "graph_before_after.json"))
    args = ap.parse_args()
    start = provenance()
    os.makedirs(args.data, exist_ok=True)
    base = os.path.join(args.data, "baseline-src")
    if not (args.reuse and os.path.isdir(base)):
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        tar = subprocess.run(["git", "archive", args.baseline], cwd=REPO, capture_output=True,
                             check=True).stdout
        subprocess.run(["tar", "-x", "-C", base], input=tar, check=True)
    commit = subprocess.run(["git", "rev-parse", args.baseline], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.strip()
    result = {"baseline": {"rev": args.baseline, "commit": commit}, "cases": {}}
    ok = True
    for name in args.sections.split(","):
        preset, nints, dets = CASES[name]
        nints = nints or args.g395h_nints
        sim = os.path.join(args.data, f"sim-{name}")
        if not (args.reuse and os.path.isfile(os.path.join(sim, "nirbeam.toml"))):
            shutil.rmtree(sim, ignore_errors=True)
            from nirbeam.sim.simulator import simulate
            from nirbeam.stream.cli import write_sim_config

            # as `nirbeam simulate` does (it has no --detectors), then its nirbeam.toml
            write_sim_config(simulate(sim, preset=preset, nints=nints, seed=1, detectors=dets))
        runs = {}
        for label, src in (("baseline", base), ("current", None)):
            out = os.path.join(args.data, f"out-{name}-{label}")
            if label == "baseline" and args.reuse and os.path.isfile(os.path.join(out, "run.json")):
                runs[label] = {"wall_s": None, "reused": True}
                continue
            shutil.rmtree(out, ignore_errors=True)
            w = _run(_nirbeam("run", sim, "--refs", os.path.join(sim, "refs"), "--config",
                              os.path.join(sim, "nirbeam.toml"), "--out", out, "--no-progress"),
                     src)
            runs[label] = {"wall_s": w}
        res = compare(os.path.join(args.data, f"out-{name}-baseline"),
                      os.path.join(args.data, f"out-{name}-current"))
        bad = {k: v for k, v in res.items() if not v["identical"]}
        ok &= not bad
        result["cases"][name] = {
            "preset": preset, "nints": nints, "seed": 1, "detectors": list(dets), "runs": runs,
            "arrays_compared": len(res), "identical": len(res) - len(bad),
            "all_identical": not bad, "different": bad,
            "compared": sorted(res),
        }
        print(f"{name}: {len(res)} arrays/columns compared, {len(res) - len(bad)} identical",
              flush=True)
        for k, v in bad.items():
            print(f"  DIFFERENT {k}: {v}")
    result["all_identical"] = ok
    write_result(args.out, result, start=start)
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
