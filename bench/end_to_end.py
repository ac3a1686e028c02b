"""Benchmark: the whole ``nirbeam run`` (uncal -> every product) against its references.

In one run of this script, on the same machine and the same files or shapes:

- ``prism``: a PRISM SUB512 exposure (default 1200 x 8 x 32 x 512) from ``nirbeam
  simulate``: the whole ``nirbeam run`` (a fresh process; wall time, CPU time, peak RSS,
  run.json stage timings) against stcal 1.20 ``jump`` + ``ramp_fit`` alone (OLS_C, one
  core, a fresh process) on arrays of the same shape;
- ``g395h``: a G395H SUB2048 NRS1 + NRS2 exposure (default 120 x 20 x 32 x 2048): the
  whole ``nirbeam run`` against jwst's ``Detector1Pipeline`` alone (uncal -> rateints, each
  segment file, one process) when ``--jwst-python`` names a Python with jwst installed
  (``--setup-jwst`` makes one in ``.venv-jwst/`` from ``bench/requirements-jwst.txt``);
- ``wasp``: a WASP-39b-size G395H exposure (465 x 70 x 32 x 2048, both detectors), or the
  first ``--wasp-nints`` integrations of it: time and peak RSS uncal -> white light. A
  fraction is marked as such; its time is extrapolated linearly in NINTS (the run is a
  stream of integrations; the one-off work, references and products, is counted as
  per-integration, so the extrapolation is an upper bound) and labelled "extrapolated";
- ``write``: the rateints write path alone, in this process, on the real rates of the
  ``prism`` run: one write per integration into chunks of one integration (the old path)
  against one write per block of ``RATE_BLOCK`` integrations into block chunks (the new);
- ``--baseline REV``: the same whole runs with the code of git revision REV (extracted to
  a temporary folder), interleaved with the current code's, and a bit-for-bit comparison
  of the two runs' products (``bench/compare_products.py``).

The machine may be shared: every figure comes with the load average before and after, and
the ratios are of runs in the same invocation. ``per core`` figures are pixel-groups per
CPU-second of the process (user + system), ``whole machine`` per wall-second.

    python bench/end_to_end.py [--sections prism,g395h,wasp,write] [--baseline REV]
        [--jwst-python PATH | --setup-jwst] [--nints 1200] [--g395h-nints 120]
        [--wasp-nints 465 | --wasp-sim DIR] [--wasp-compare-nints 48] [--data DIR]
        [--out bench/results/end_to_end.json]

e.g. on the shared WASP-size simulation: ``--sections wasp --wasp-sim /work/wasp/sim
--data /work/wasp/e2e --out bench/results/end_to_end_wasp.json`` (the ``wasp`` runs sample
the RSS of the whole process tree, and first run ``--wasp-compare-nints`` integrations of
the same layout, so that memory can be compared across NINTS).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (2 decimals)."""
    return [round(x, 2) for x in os.getloadavg()]


_load = load_average


def _git(*args, cwd=REPO) -> str:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def machine_info() -> dict:
    """CPU, cores, memory, versions, git hash and load (a shared machine says so here)."""
    import numba
    import numpy as np

    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            mem = fh.readline().split(":")[1].strip()
    except OSError:
        pass
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu, "cpus": os.cpu_count(), "cpus_affinity": len(os.sched_getaffinity(0)),
        "memory": mem, "python": sys.version.split()[0], "numpy": np.__version__,
        "numba": numba.__version__, "numba_default_threads": numba.config.NUMBA_NUM_THREADS,
        "git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(_git("status", "--porcelain")),
        "load_average_start": _load(),
    }


def child(cmd: list[str], env: dict | None = None, cwd: str | None = None,
          sample_s: float = 0.0) -> dict:
    """Run a command in a fresh process: wall s, CPU s (user + sys) and peak RSS of it.
    ``sample_s`` > 0: also poll the RSS of the whole process tree that often
    (:func:`_sample_rss`)."""
    t0 = time.perf_counter()
    load0 = _load()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sampler = _RssSampler(p.pid, sample_s) if sample_s > 0 else None
    out = p.stdout.read().decode(errors="replace")
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{out[-4000:]}")
    r = {"wall_s": round(wall, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
         "peak_rss_mib": round(ru.ru_maxrss / 1024, 1), "load_before": load0,
         "load_after": _load(), "stdout_tail": out[-600:]}
    if sampler is not None:
        r["rss_tree"] = sampler.stop()
    return r


class _RssSampler:
    """Polls, every ``every_s``, the RSS of a process and all its descendants (psutil):
    the peak of their sum (the whole tree), the peak of the largest single process (a
    worker), and a time series of the tree's sum (at most ~600 points kept)."""

    def __init__(self, pid: int, every_s: float):
        import threading

        self.pid, self.every = pid, every_s
        self.t, self.tree, self.worker = [], [], 0.0
        self.nproc = 1
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._th = threading.Thread(target=self._run, daemon=True)
        self._th.start()

    def _run(self):
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                rss = []
                for q in procs:
                    try:
                        rss.append(q.memory_info().rss / 2**20)
                    except psutil.Error:
                        pass
            except psutil.Error:
                break
            if sum(rss) > 0:  # (an exiting process reads 0)
                self.t.append(round(time.perf_counter() - self._t0, 2))
                self.tree.append(round(sum(rss), 1))
                self.worker = max(self.worker, max(rss))
                self.nproc = max(self.nproc, len(rss))
            self._stop.wait(self.every)

    def stop(self) -> dict:
        self._stop.set()
        self._th.join()
        if not self.tree:
            return {}
        step = max(1, len(self.tree) // 600)
        end = self.t[-1] or 1.0

        def at(frac):  # the tree's RSS when that fraction of the run's time had passed
            k = min(range(len(self.t)), key=lambda j: abs(self.t[j] - frac * end))
            return self.tree[k]

        return {"every_s": self.every, "samples": len(self.tree), "max_processes": self.nproc,
                "peak_tree_mib": max(self.tree), "peak_single_process_mib": round(self.worker, 1),
                "tree_mib_at_time_fraction": {f: at(f) for f in (0.1, 0.25, 0.5, 0.75, 1.0)},
                "series": {"t_s": self.t[::step], "tree_mib": self.tree[::step]}}


def simulate(path: str, preset: str, nints: int, **overrides) -> dict:
    """Simulate once (kept in --data between invocations); return its shape."""
    from nirbeam.sim.simulator import PRESETS, SimConfig
    from nirbeam.sim.simulator import simulate as sim

    stamp = os.path.join(path, ".bench-complete")
    cfg = SimConfig(**{**PRESETS[preset].__dict__, "nints": nints, **overrides})
    if not os.path.isfile(stamp):
        shutil.rmtree(path, ignore_errors=True)
        t0 = time.perf_counter()
        sim(path, preset, nints=nints, seed=1, **overrides)
        print(f"  simulated {preset} {nints} ints in {time.perf_counter() - t0:.0f} s", flush=True)
        with open(stamp, "w") as fh:
            fh.write("ok")
    return {"nints": nints, "ngroups": cfg.ngroups, "ny": cfg.subsize2, "nx": cfg.subsize1,
            "detectors": list(cfg.detectors)}


def _sim_shape(sim: str) -> dict:
    """Shape of an existing simulation from its uncal headers (NINTS, NGROUPS, SUBSIZE*)."""
    import glob

    from astropy.io import fits

    files = sorted(glob.glob(os.path.join(sim, "*_uncal.fits")))
    if not files:
        raise SystemExit(f"--wasp-sim {sim}: no *_uncal.fits there")
    h = fits.getheader(files[0])
    dets = sorted({fits.getheader(f)["DETECTOR"] for f in files if "seg001" in f})
    return {"nints": h["NINTS"], "ngroups": h["NGROUPS"], "ny": h["SUBSIZE2"], "nx": h["SUBSIZE1"],
            "detectors": dets}


def src_env(src: str | None, extra: dict | None = None) -> dict:
    """The environment of a fresh process running the source tree ``src`` (None: the
    installed one): ``src`` first on PYTHONPATH, numba's cache inside it."""
    env = {**os.environ, **(extra or {})}
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        env["NUMBA_CACHE_DIR"] = os.path.join(src, ".numba-cache")
    return env


def nirbeam_run(sim: str, out: str, src: str | None = None, extra=(), env_extra=None,
                sample_s: float = 0.0) -> dict:
    """The whole ``nirbeam run`` in a fresh process (``src``: a source tree to run instead;
    ``extra``: more CLI arguments; ``env_extra``: more environment variables)."""
    shutil.rmtree(out, ignore_errors=True)
    env = src_env(src, env_extra)
    cfg = os.path.join(sim, "nirbeam.toml")
    cmd = [sys.executable, "-m", "nirbeam.stream.cli", "run", sim, "--refs", os.path.join(sim, "refs"),
           "--out", out, "--no-progress", *(["--config", cfg] if os.path.isfile(cfg) else []), *extra]
    r = child(cmd, env=env, cwd=src or REPO, sample_s=sample_s)
    with open(os.path.join(out, "run.json")) as fh:
        rj = json.load(fh)
    r["run_json_timings_s"] = rj.get("timings_s")
    r["run_json_wall_s"] = rj.get("wall_s")
    r["run_json_cpu"] = rj.get("cpu")  # workers, CPU of every process, whole machine / per core
    r["metrics_ms"] = {k: v for k, v in rj.get("metrics", {}).items() if k.endswith("ms")}
    r["processed"] = sum(e["processed"] for e in rj["exposures"])
    r.pop("stdout_tail", None)
    return r


def warm(sim: str, out: str, src: str | None = None) -> None:
    """One small run first, so numba's caches are compiled before anything is timed, and
    the tree's modules byte-compiled as a pip install does (``./run``'s set-up does it
    too): else, under PYTHONDONTWRITEBYTECODE=1, every run compiles them (~0.25 s)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(src or REPO, "nirbeam")],
                   check=False, capture_output=True)
    nirbeam_run(sim, out, src)
    shutil.rmtree(out, ignore_errors=True)


def stcal_child(nints: int, ngroups: int, ny: int, nx: int) -> dict:
    """stcal jump + ramp_fit alone on synthetic calibrated groups of this shape (fresh
    process, one core: NUMBA/OMP threads 1, stcal max_cores 'none')."""
    code = f"""
import os, json, time, resource, sys
sys.path.insert(0, {HERE!r})
import detector1_vs_stcal as B
import numpy as np
from nirbeam.transforms.detector1 import Detector1Params, RampTiming, calibrate_groups
from nirbeam.transforms.refpix import SubarrayGeometry
nints, ngroups, ny, nx = {nints}, {ngroups}, {ny}, {nx}
ramps, refs = B.make_data(nints, ngroups, ny, nx)
timing = RampTiming(ngroups, 1, 0, B.TGROUP, B.TGROUP)
geom = SubarrayGeometry(1, nx, 1, ny)
p = Detector1Params(jump=type(Detector1Params().jump)(enabled=False))
g4 = np.empty(ramps.shape, np.float32); q4 = np.empty(ramps.shape, np.uint8)
for i in range(nints):
    g, q, pdq, _ = calibrate_groups(ramps[i], refs, timing, p, geom)
    g4[i] = g; q4[i] = q
del ramps
import logging; logging.getLogger("stcal").setLevel(logging.WARNING)
t0, c0 = time.perf_counter(), time.process_time()
B.run_stcal(g4, q4, pdq, refs, timing)
print(json.dumps({{"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    load0 = _load()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"stcal child failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r = {k: round(v, 2) for k, v in r.items()}
    import stcal  # noqa: F401 - version only

    r.update({"stcal": __import__("stcal").__version__, "load_before": load0, "load_after": _load(),
              "jump_mode": ("sigma-clip across integrations" if nints >= 100
                            else "two-point difference per integration"),
              "shape": [nints, ngroups, ny, nx],
              "note": "jump (detect_jumps_data) + ramp_fit (ramp_fit_data, OLS_C, optimal) "
                      "on already calibrated float32 groups; timed part only"})
    return r


JWST_CHILD = r"""
import glob, json, os, sys, time, resource, logging
from jwst.pipeline import Detector1Pipeline
from stpipe import crds_client
# offline: every reference is an override (the simulator's CRDS-format files), so CRDS is
# asked only which context was used, for a header keyword; answer that without a server
crds_client.get_context_used = lambda observatory: "none (offline, every reference overridden)"
sim, out, refs = sys.argv[1], sys.argv[2], sys.argv[3]
def ref(kind, det):
    hits = sorted(glob.glob(os.path.join(refs, f"*{det.lower()}*{kind}*.fits"))) or \
        sorted(glob.glob(os.path.join(refs, f"*{kind}*{det.lower()}*.fits")))
    return hits[0] if hits else None
os.makedirs(out, exist_ok=True)
logging.disable(logging.INFO)
# nirbeam's simulator writes the FITS layout without the ASDF extension jwst reads its
# metadata from: open each file once through stdatamodels (schema from the FITS keywords)
# and save it, which adds the extension (untimed)
from stdatamodels.jwst import datamodels as dm
conv = os.path.join(out, "uncal")
os.makedirs(conv, exist_ok=True)
files = []
for f in sorted(glob.glob(os.path.join(sim, "*_uncal.fits"))):
    with dm.Level1bModel(f) as m:
        files.append(os.path.join(conv, os.path.basename(f)))
        m.save(files[-1])
t0, c0 = time.perf_counter(), time.process_time()
for f in files:
    det = "nrs2" if "_nrs2_" in f else "nrs1"
    steps = {
        "dq_init": {"override_mask": ref("mask", det)},
        "saturation": {"override_saturation": ref("saturation", det),
                       "override_superbias": ref("superbias", det)},
        "superbias": {"override_superbias": ref("superbias", det)},
        "refpix": {"override_refpix": "N/A", "override_sirskernel": "N/A"},
        "linearity": {"override_linearity": ref("linearity", det)},
        "dark_current": {"override_dark": ref("dark", det)},
        "jump": {"override_gain": ref("gain", det), "override_readnoise": ref("readnoise", det),
                 "maximum_cores": "none"},
        "ramp_fit": {"override_gain": ref("gain", det), "override_readnoise": ref("readnoise", det),
                     "maximum_cores": "none"},
        "gain_scale": {"override_gain": ref("gain", det)},
        "persistence": {"skip": True}, "ipc": {"skip": True}, "charge_migration": {"skip": True},
        "picture_frame": {"skip": True}, "clean_flicker_noise": {"skip": True},
        # MIRI-only steps (they do nothing for NIRSpec, but would ask CRDS for references)
        "rscd": {"skip": True}, "reset": {"skip": True}, "lastframe": {"skip": True},
        "firstframe": {"skip": True}, "emicorr": {"skip": True},
    }
    # .run, not .call: .call fetches the step parameters (pars-*) from CRDS first
    pipe = Detector1Pipeline(steps=steps, save_results=True, output_dir=out)
    pipe.run(f)
print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                  "files": len(files),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def jwst_detector1(python: str, sim: str, out: str) -> dict:
    """jwst Detector1Pipeline on every uncal file of ``sim`` (fresh process, one core)."""
    shutil.rmtree(out, ignore_errors=True)
    crds = tempfile.mkdtemp(prefix="crds-")
    env = {**os.environ, "CRDS_PATH": crds, "CRDS_SERVER_URL": "https://jwst-crds.invalid",
           "STPIPE_DISABLE_CRDS_STEPPARS": "1", "CRDS_MODE": "local",
           "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    load0 = _load()
    p = subprocess.run([python, "-c", JWST_CHILD, sim, out, os.path.join(sim, "refs")], env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout)[-2500:], "load_before": load0}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    ver = subprocess.run([python, "-c", "import jwst; print(jwst.__version__)"],
                         capture_output=True, text=True).stdout.strip()
    return {**{k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()},
            "jwst": ver, "load_before": load0, "load_after": _load()}


def rate_writes(src: dict, repeat: int = 3, best_by: str = "wall_s",
                labels=("per_integration", "block")) -> dict:
    """The rateints writes alone, in this process, on the arrays ``src`` (``RATE_ARRAYS``
    name -> (n, ny, nx)): ``per_integration``, one ``write_integration`` per integration
    into chunks of one integration (the streaming ``WriteRateints`` path), and ``block``,
    one ``write_block`` per block of ``RATE_BLOCK`` integrations into block-aligned chunks
    (the batch path). Each read back and checked equal; the best of ``repeat`` by
    ``best_by`` (``wall_s`` or ``cpu_s``; CPU is ``process_time``: zarr compresses and
    writes on its own threads too). Used by ``bench/fixed_costs.py`` as well."""
    import numpy as np

    from nirbeam.sinks import zarr_store as zs
    from nirbeam.stream.pipeline import RATE_ARRAYS, RATE_BLOCK

    n = src["sci"].shape[0]
    frame = src["sci"].shape[1:]
    res = {"integrations": n, "frame": list(frame), "block": RATE_BLOCK}
    with tempfile.TemporaryDirectory() as d:
        for label in labels:
            chunk = 1 if label == "per_integration" else RATE_BLOCK
            best = None
            for rep in range(repeat):
                root = os.path.join(d, f"{label}{rep}.zarr")
                zs.prepare_stage(root, "g", "rateints", n, frame, RATE_ARRAYS, time_chunk=chunk)
                t0, c0 = time.perf_counter(), time.process_time()
                if chunk == 1:
                    for i in range(n):
                        zs.write_integration(root, "g", "rateints", i + 1, {k: v[i] for k, v in src.items()})
                else:
                    for s in range(0, n, chunk):
                        zs.write_block(root, "g", "rateints", s + 1,
                                       {k: v[s:s + chunk] for k, v in src.items()},
                                       np.ones(min(chunk, n - s), bool))
                w, c = time.perf_counter() - t0, time.process_time() - c0
                back = zs.read_block(root, "g", "rateints", RATE_ARRAYS, slice(0, n))
                assert all(np.array_equal(back[k], src[k], equal_nan=True) for k in src)
                files = sum(len(fs) for _, _, fs in os.walk(root))
                zs.forget_cache()
                r = {"wall_s": round(w, 4), "cpu_s": round(c, 4), "files": files,
                     "ms_per_integration": round(1e3 * w / n, 3),
                     "wall_ms_per_integration": round(1e3 * w / n, 3),
                     "cpu_ms_per_integration": round(1e3 * c / n, 3)}
                if best is None or r[best_by] < best[best_by]:
                    best = r
            res[label] = best
    return res


def rates_of(store: str, n: int | None = None) -> dict:
    """The rateints arrays (``RATE_ARRAYS``) of the first group of a run's ``cubes.zarr``
    (the first ``n`` integrations)."""
    import numpy as np
    import zarr

    from nirbeam.stream.pipeline import RATE_ARRAYS

    g0 = zarr.open_group(store, mode="r")
    grp = sorted(k for k, _ in g0.groups())[0]
    return {k: np.asarray(g0[grp]["rateints"][k][:n]) for k in RATE_ARRAYS}


def write_path(out_dir: str, n: int = 256) -> dict:
    """Old vs new rateints writes on the rates of a finished run (same process, same data)."""
    res = rate_writes(rates_of(os.path.join(out_dir, "cubes.zarr"), n))
    res["ratio_wall_old_over_new"] = round(res["per_integration"]["wall_s"] / res["block"]["wall_s"], 2)
    res["load_after"] = _load()
    return res


def extract_rev(rev: str) -> str:
    """The tree of ``rev`` in a folder named by its commit, kept between invocations
    (with its numba cache: a second invocation does not compile the baseline again)."""
    commit = _git("rev-parse", rev) or rev
    d = os.path.join(tempfile.gettempdir(), f"nirbeam-src-{commit[:12]}")
    stamp = os.path.join(d, ".bench-extracted")
    if os.path.isfile(stamp):
        return d
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    tar = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", d], input=tar, check=True)
    with open(stamp, "w") as fh:
        fh.write(commit)
    return d


_extract_rev = extract_rev  # (the name bench/stage2_cost.py imports)


def _rate(shape: dict, ndet: int, seconds: float) -> float:
    return round(shape["nints"] * shape["ngroups"] * shape["ny"] * shape["nx"] * ndet / seconds / 1e6, 2)


def bench_exposure(name, sim, shape, data, base_src, args, results) -> dict:
    ndet = len(shape["detectors"])
    sec = {"shape": shape, "pixel_groups": shape["nints"] * shape["ngroups"] * shape["ny"] * shape["nx"] * ndet}
    runs = {}
    order = (["baseline", "current"] if base_src else ["current"]) * args.repeat
    for label in order:
        out = os.path.join(data, f"out-{name}-{label}")
        r = nirbeam_run(sim, out, base_src if label == "baseline" else None)
        print(f"  {name} {label:8s}: wall {r['wall_s']:7.1f} s, cpu {r['cpu_s']:7.1f} s, "
              f"peak {r['peak_rss_mib']:7.0f} MiB, load {r['load_before']} -> {r['load_after']}, "
              f"stages {r['run_json_timings_s']}", flush=True)
        runs.setdefault(label, []).append(r)
    for label, rs in runs.items():
        best = min(rs, key=lambda r: r["wall_s"])
        sec[f"nirbeam_{label}"] = {**best, "all_wall_s": [r["wall_s"] for r in rs],
                                   "all_cpu_s": [r["cpu_s"] for r in rs],
                                   "Mpix_groups_per_s_whole_machine": _rate(shape, ndet, best["wall_s"]),
                                   "Mpix_groups_per_s_per_core": _rate(shape, ndet, min(r["cpu_s"] for r in rs))}
    ncpu = os.cpu_count() or 1
    variants = {  # the cores of one machine: numba threads in one worker, or one worker per core
        "threads": ((), {"NIRBEAM_DETECTOR1_PARALLEL": "1", "NUMBA_NUM_THREADS": str(ncpu)}),
        "workers": (("--runner", "multiprocess", "--workers", str(ncpu)),
                    {"NUMBA_NUM_THREADS": "1"}),
    }
    for v in [v for v in getattr(args, "variants", "").split(",") if v]:
        cli, env = variants[v]
        # numba compiles the threaded kernel on first use: warm it (and the workers) first
        nirbeam_run(os.path.join(data, "prism-24"), os.path.join(data, "warm"), extra=cli,
                    env_extra=env)
        shutil.rmtree(os.path.join(data, "warm"), ignore_errors=True)
        out = os.path.join(data, f"out-{name}-{v}")
        r = nirbeam_run(sim, out, extra=cli, env_extra=env)
        from compare_products import compare

        cmp = compare(os.path.join(data, f"out-{name}-current"), out)
        r["products_identical_to_current"] = all(c["identical"] for c in cmp.values())
        r["how"] = {"cli": list(cli), "env": env}
        c = sec["nirbeam_current"]
        r["vs_current"] = {"wall": round(c["wall_s"] / r["wall_s"], 2),
                           "cpu": round(min(c["all_cpu_s"]) / r["cpu_s"], 2)}
        print(f"  {name} {v:8s}: wall {r['wall_s']:7.1f} s, cpu {r['cpu_s']:7.1f} s, "
              f"peak {r['peak_rss_mib']:7.0f} MiB, load {r['load_before']} -> {r['load_after']}, "
              f"identical {r['products_identical_to_current']}, vs current {r['vs_current']}",
              flush=True)
        sec[f"nirbeam_{v}"] = r
    if base_src:
        sys.path.insert(0, HERE)
        from compare_products import compare

        cmp = compare(os.path.join(data, f"out-{name}-baseline"), os.path.join(data, f"out-{name}-current"))
        bad = {k: v for k, v in cmp.items() if not v["identical"]}
        sec["products_vs_baseline"] = {"arrays_compared": len(cmp), "all_identical": not bad,
                                       "different": bad}
        b, c = sec["nirbeam_baseline"], sec["nirbeam_current"]
        sec["speedup_vs_baseline"] = {"wall": round(b["wall_s"] / c["wall_s"], 2),
                                      "cpu": round(min(b["all_cpu_s"]) / min(c["all_cpu_s"]), 2)}
        print(f"  {name}: current vs baseline wall x{sec['speedup_vs_baseline']['wall']}, "
              f"cpu x{sec['speedup_vs_baseline']['cpu']}; products identical: {not bad}", flush=True)
    return sec


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default="prism,write,g395h,wasp")
    ap.add_argument("--baseline", default=None, help="git revision to compare against (e.g. main)")
    ap.add_argument("--nints", type=int, default=1200, help="PRISM SUB512 NINTS")
    ap.add_argument("--prism-ngroups", type=int, default=8,
                    help="PRISM SUB512 NGROUPS (issue 14's shape is 1200 x 8 x 32 x 512; "
                         "records before session 9 used the preset's 5)")
    ap.add_argument("--g395h-nints", type=int, default=120)
    ap.add_argument("--g395h-ngroups", type=int, default=20)
    ap.add_argument("--wasp-nints", type=int, default=465, help="integrations of the 465 run")
    ap.add_argument("--wasp-sim", default=None,
                    help="an existing WASP-size simulation to run on (e.g. /work/wasp/sim), "
                         "instead of simulating --wasp-nints into --data")
    ap.add_argument("--wasp-compare-nints", type=int, default=48,
                    help="also simulate and run this many integrations of the same layout "
                         "first (memory vs NINTS); 0: skip")
    ap.add_argument("--repeat", type=int, default=1, help="whole runs per code version")
    ap.add_argument("--no-stcal", action="store_true")
    ap.add_argument("--variants", default="",
                    help="also run the current code with the machine's cores: 'threads' (numba "
                         "threads in the detector1 kernel), 'workers' (multiprocess runner, one "
                         "worker per core); comma-separated")
    ap.add_argument("--jwst-python", default=None, help="a Python with jwst installed")
    ap.add_argument("--setup-jwst", action="store_true",
                    help="create .venv-jwst from bench/requirements-jwst.txt and use it")
    ap.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "nirbeam-e2e"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "end_to_end.json"))
    ap.add_argument("--update", action="store_true",
                    help="replace only the sections run now in an existing --out file")
    args = ap.parse_args(argv)
    prov = provenance(argv)
    sections = args.sections.split(",")
    os.makedirs(args.data, exist_ok=True)
    stamp = {"command": " ".join([os.path.basename(sys.argv[0]), *(argv or sys.argv[1:])]),
             "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "machine": machine_info()}
    results = {"benchmark": "end_to_end", **stamp, "sections": {}}
    if args.update and os.path.isfile(args.out):  # keep the other sections' figures
        with open(args.out) as fh:
            old = json.load(fh)
        results["sections"] = old.get("sections", {})
    if args.setup_jwst:
        venv = os.path.join(REPO, ".venv-jwst")
        if not os.path.isfile(os.path.join(venv, "bin", "python")):
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        t0 = time.perf_counter()
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "-r",
                        os.path.join(HERE, "requirements-jwst.txt")], check=True)
        results["jwst_setup_s"] = round(time.perf_counter() - t0, 1)
        args.jwst_python = os.path.join(venv, "bin", "python")
    base_src = None
    if args.baseline:
        base_src = extract_rev(args.baseline)
        results["baseline"] = {"rev": args.baseline, "commit": _git("rev-parse", args.baseline)}

    def save():
        results["machine"]["load_average_end"] = _load()
        for sec in results["sections"].values():  # each section says when and how it ran
            sec.setdefault("run", {**stamp, "load_average_end": _load()})
        write_result(args.out, {k: v for k, v in results.items() if k != "provenance"},
                     start=prov)

    try:
        # numba's caches compiled for both code versions before anything is timed
        small = os.path.join(args.data, "prism-24")
        simulate(small, "prism-sub512", 24)
        warm(small, os.path.join(args.data, "warm"))
        if base_src:
            warm(small, os.path.join(args.data, "warm"), base_src)
        if "prism" in sections or "write" in sections:
            print("== prism", flush=True)
            sim = os.path.join(args.data, f"prism-{args.nints}x{args.prism_ngroups}")
            shape = simulate(sim, "prism-sub512", args.nints, ngroups=args.prism_ngroups)
        if "prism" in sections:
            sec = bench_exposure("prism", sim, shape, args.data, base_src, args, results)
            if not args.no_stcal:
                st = stcal_child(shape["nints"], shape["ngroups"], shape["ny"], shape["nx"])
                sec["stcal_jump_ramp_fit"] = st
                c = sec["nirbeam_current"]
                sec["ratio_stcal_over_nirbeam"] = {
                    "wall": round(st["wall_s"] / c["wall_s"], 2),
                    "whole_machine": round(st["cpu_s"] / c["wall_s"], 2),
                    "cpu_per_core": round(st["cpu_s"] / min(c["all_cpu_s"]), 2)}
                print(f"  stcal jump+ramp_fit alone: wall {st['wall_s']} s, cpu {st['cpu_s']} s; "
                      f"whole nirbeam run is x{sec['ratio_stcal_over_nirbeam']['wall']} (wall), "
                      f"x{sec['ratio_stcal_over_nirbeam']['cpu_per_core']} (cpu) of it", flush=True)
            results["sections"]["prism"] = sec
            save()
        if "write" in sections:
            print("== write path", flush=True)
            out = os.path.join(args.data, "out-prism-current")
            if not os.path.isdir(out):
                nirbeam_run(sim, out)
            results["sections"]["write"] = w = write_path(out)
            print(f"  per integration {w['per_integration']} vs block {w['block']}: "
                  f"x{w['ratio_wall_old_over_new']}", flush=True)
            save()
        if "g395h" in sections:
            print("== g395h", flush=True)
            sim = os.path.join(args.data, f"g395h-{args.g395h_nints}x{args.g395h_ngroups}")
            shape = simulate(sim, "g395h-sub2048", args.g395h_nints, ngroups=args.g395h_ngroups,
                             detectors=("NRS1", "NRS2"))
            sec = bench_exposure("g395h", sim, shape, args.data, base_src, args, results)
            if args.jwst_python:
                j = jwst_detector1(args.jwst_python, sim, os.path.join(args.data, "out-g395h-jwst"))
                sec["jwst_detector1"] = j
                if "error" not in j:
                    c = sec["nirbeam_current"]
                    sec["ratio_jwst_over_nirbeam"] = {
                        "wall": round(j["wall_s"] / c["wall_s"], 2),
                        "whole_machine": round(j["cpu_s"] / c["wall_s"], 2),
                        "cpu_per_core": round(j["cpu_s"] / min(c["all_cpu_s"]), 2)}
                    print(f"  jwst Detector1 alone: wall {j['wall_s']} s; nirbeam whole run "
                          f"x{sec['ratio_jwst_over_nirbeam']['wall']}", flush=True)
                else:
                    print(f"  jwst failed: {j['error'][-400:]}", flush=True)
            else:
                sec["jwst_detector1"] = {"skipped": "no --jwst-python / --setup-jwst"}
            results["sections"]["g395h"] = sec
            save()
        if "wasp" in sections:
            print("== wasp", flush=True)
            sec = {}
            if args.wasp_compare_nints:  # the same layout at a small NINTS: memory vs NINTS
                m = args.wasp_compare_nints
                small = os.path.join(args.data, f"wasp-{m}")
                shape_m = simulate(small, "g395h-sub2048", m, ngroups=70, detectors=("NRS1", "NRS2"))
                r = nirbeam_run(small, os.path.join(args.data, f"out-wasp-{m}"), sample_s=0.5)
                sec["nirbeam_compare_nints"] = {**r, "shape": shape_m}
                print(f"  wasp {m} ints: wall {r['wall_s']} s, cpu {r['cpu_s']} s, peak {r['peak_rss_mib']} MiB, "
                      f"tree peak {r['rss_tree'].get('peak_tree_mib')} MiB", flush=True)
                shutil.rmtree(os.path.join(args.data, f"out-wasp-{m}"), ignore_errors=True)
            if args.wasp_sim:  # an existing simulation (e.g. /work/wasp/sim), not simulated again
                sim = args.wasp_sim
                shape = _sim_shape(sim)
                if os.path.isfile(os.path.join(sim, ".simulate-record.json")):
                    with open(os.path.join(sim, ".simulate-record.json")) as fh:
                        sec["simulation"] = json.load(fh)
            else:
                sim = os.path.join(args.data, f"wasp-{args.wasp_nints}")
                shape = simulate(sim, "g395h-sub2048", args.wasp_nints, ngroups=70,
                                 detectors=("NRS1", "NRS2"))
            n = shape["nints"]
            r = nirbeam_run(sim, os.path.join(args.data, "out-wasp"), sample_s=1.0)
            sec.update({"shape": shape, "simulation_path": sim, "fraction_of_465": round(n / 465, 3),
                        "nirbeam_current": r,
                        "Mpix_groups_per_s_whole_machine": _rate(shape, 2, r["wall_s"]),
                        "Mpix_groups_per_s_per_core": _rate(shape, 2, r["cpu_s"])})
            if "nirbeam_compare_nints" in sec:
                c = sec["nirbeam_compare_nints"]
                sec["memory_vs_nints"] = {
                    "nints": [c["shape"]["nints"], n],
                    "peak_rss_mib": [c["peak_rss_mib"], r["peak_rss_mib"]],
                    "peak_tree_mib": [c["rss_tree"].get("peak_tree_mib"), r["rss_tree"].get("peak_tree_mib")],
                    "ratio_peak": round(r["peak_rss_mib"] / c["peak_rss_mib"], 3),
                    "nints_ratio": round(n / c["shape"]["nints"], 2)}
            if n != 465:
                sec["extrapolated_to_465_wall_s"] = round(r["wall_s"] * 465 / n, 1)
                sec["extrapolation"] = ("EXTRAPOLATED, not measured: wall time x 465 / NINTS "
                                        "(linear in NINTS; the one-off work is counted as per "
                                        "integration, so an upper bound). Peak RSS is the "
                                        "fraction's own; pipeline_memory.json shows how it grows "
                                        "with NINTS.")
            print(f"  wasp {n} ints: wall {r['wall_s']} s, cpu {r['cpu_s']} s, peak {r['peak_rss_mib']} MiB, "
                  f"tree {r['rss_tree'].get('peak_tree_mib')} MiB, over time "
                  f"{r['rss_tree'].get('tree_mib_at_time_fraction')}", flush=True)
            results["sections"]["wasp"] = sec
            save()
    finally:
        save()
        if base_src:
            shutil.rmtree(base_src, ignore_errors=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
