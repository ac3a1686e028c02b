"""Peak memory of one worker calibrating one full-frame IRS2 integration with references
sized like real CRDS ones (issue 15: "a full-frame integration stays under 2 GB per worker").

The parent simulates one NRSIRS2 uncal file (1 integration, ``--ngroups`` groups, 20 by
default: 262 MB of uint16) and writes, as the batch driver does
(:func:`nirbeam.stream.rate_steps.save_refs_to_store`), full-frame references into a zarr
store: MASK, SATURATION (+DQ), SUPERBIAS (+DQ), LINEARITY with 5 coefficient planes, DARK
with ``ngroups`` planes, READNOISE, GAIN (all float32/uint32 2048 x 2048, seeded noise so
they do not compress away), a REFPIX reference of the real size (complex alpha and beta,
4 x 712 x 2048 x 2, 93 MB as the file's float32 columns, and a DQ table) and a scene mask.
Then a fresh worker process does what a Beam worker does for one integration:
``read_record`` + ``Calibrate(root, Settings())`` (references from the store, the IRS2
step, detector1 with the default group-level 1/f cleaning). Its peak RSS is the child's
``ru_maxrss``; a sampler thread (10 ms) records the peak of each phase (read, references,
IRS2 step, detector1).

    python bench/irs2_memory.py [--ngroups 20] [--workdir /tmp/irs2/mem]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from _provenance import provenance, write_result  # bench/ is sys.path[0]

HERE = Path(__file__).resolve().parent
GROUP = "jw99999001001_01101_00001_nrs1"


def _rss_mib(key: str = "VmRSS") -> float:
    """VmRSS (or VmHWM, the peak) of this process, MiB. VmHWM, not ``ru_maxrss``: Linux
    keeps ``ru_maxrss`` across exec, so a child would report its (large) parent's."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class _Sampler(threading.Thread):
    """Peak RSS per phase (the phase is a label the main thread sets), sampled every 10 ms
    (a lower bound: numpy holds the GIL in long operations), and the process's peak
    (VmHWM) when each phase ends (exact, cumulative)."""

    def __init__(self):
        super().__init__(daemon=True)
        self._phase, self.peaks, self.stop, self.maxrss_at_end = "start", {}, False, {}

    @property
    def phase(self):
        return self._phase

    @phase.setter
    def phase(self, value):
        self.maxrss_at_end[self._phase] = round(_rss_mib("VmHWM"), 1)
        self._phase = value

    def run(self):
        while not self.stop:
            r = _rss_mib()
            self.peaks[self._phase] = max(self.peaks.get(self._phase, 0.0), r)
            time.sleep(0.01)


def worker(path: str, root: str, error_term: str = "1") -> dict:
    """One worker: read the integration, calibrate it from the store's references."""
    import dataclasses

    import numpy as np

    s = _Sampler()
    s.start()
    from nirbeam.stream import rate_steps
    from nirbeam.stream.plan import ReadItem
    from nirbeam.stream.records import IntegrationKey, IntTimes
    from nirbeam.stream.settings import Settings
    from nirbeam.stream.uncal import scan_segment
    from nirbeam.transforms import detector1, irs2

    t = {}
    orig_irs2, orig_run = irs2.subtract_reference_irs2, detector1.run_detector1

    def timed_irs2(*a, **k):
        s.phase = "irs2_step"
        t0 = time.perf_counter()
        out = orig_irs2(*a, **k)
        t["irs2_step_s"] = time.perf_counter() - t0
        s.phase = "after_irs2"
        return out

    def timed_run(*a, **k):
        s.phase = "detector1"
        t0 = time.perf_counter()
        out = orig_run(*a, **k)
        t["detector1_s"] = t.get("detector1_s", 0.0) + time.perf_counter() - t0
        s.phase = "after_detector1"
        return out

    irs2.subtract_reference_irs2 = timed_irs2
    detector1.run_detector1 = timed_run
    rate_steps_run = getattr(rate_steps, "run_detector1", None)
    if rate_steps_run is not None:
        rate_steps.run_detector1 = timed_run
    s.phase = "imports"
    time.sleep(0.05)
    baseline = _rss_mib()
    info = scan_segment(path, require_tso=False)
    s.phase = "read"
    t0 = time.perf_counter()
    rec = rate_steps.read_record(ReadItem(IntegrationKey(GROUP[:-5], info.meta.detector, 1), info,
                                          IntTimes(*(60000.0,) * 6)))
    t["read_s"] = time.perf_counter() - t0
    s.phase = "references"
    t0 = time.perf_counter()
    rate_steps.refs_from_store(root, GROUP, "bench")
    rate_steps.scene_mask_from_store(root, GROUP, "bench")
    t["references_s"] = time.perf_counter() - t0
    s.phase = "calibrate"
    t0 = time.perf_counter()
    st = Settings()
    st = dataclasses.replace(st, flicker=dataclasses.replace(st.flicker,
                                                             error_term=error_term == "1"))
    holder = [rec]
    del rec  # handed over, as CalibrateBlock does: the raw ramp is freed after the IRS2 step
    out = rate_steps.Calibrate(root, st, "bench").owned(holder)
    t["calibrate_s"] = time.perf_counter() - t0
    s.phase = "end"
    time.sleep(0.05)
    s.stop = True
    s.join()
    return {
        "peak_rss_mib": round(_rss_mib("VmHWM"), 1),
        "rss_after_imports_mib": round(baseline, 1),
        "phase_peak_rss_mib": {k: round(v, 1) for k, v in s.peaks.items()},
        "maxrss_at_phase_end_mib": s.maxrss_at_end,
        **{k: round(v, 2) for k, v in t.items()},
        "rate_median": float(np.nanmedian(out.rate)),
        "rate_sha256_16": __import__("hashlib").sha256(
            np.ascontiguousarray(out.rate).tobytes()).hexdigest()[:16],
        "steps": [s for s, _ in out.provenance],
    }


def realistic_refs(ng: int, seed: int = 7):
    """Full-frame references with real CRDS sizes and dtypes (seeded noise)."""
    import numpy as np

    from nirbeam.transforms.irs2 import NALPHA, IRS2Reference
    from nirbeam.transforms.reference import ReferenceArrays

    rng = np.random.default_rng(seed)
    shp = (2048, 2048)

    def f32(loc, scale, shape=shp):
        return (loc + scale * rng.standard_normal(shape, np.float32)).astype(np.float32)

    def dq(p=0.002):
        return np.where(rng.random(shp) < p, np.uint32(1 << 0 | 1 << 10), np.uint32(0)).astype(
            np.uint32)

    mask = dq()
    mask[:4], mask[-4:], mask[:, :4], mask[:, -4:] = (np.uint32(1 << 31),) * 4  # REFERENCE_PIXEL
    lin = np.zeros((5, *shp), np.float32)
    lin[1] = 1.0
    lin[2] = f32(1e-6, 1e-7)
    lin[3] = f32(1e-11, 1e-12)
    lin[4] = f32(1e-16, 1e-17)
    dark = np.cumsum(f32(0.5, 0.2, (ng, *shp)), axis=0, dtype=np.float32)
    cplx = lambda s: (s * (rng.standard_normal((4, NALPHA), np.float32)  # noqa: E731
                           + 1j * rng.standard_normal((4, NALPHA), np.float32))).astype(
        np.complex64)
    beta = (1.0 + cplx(0.01)).astype(np.complex64)
    ref = IRS2Reference(cplx(0.01), beta, np.array([1, 3], np.int16),
                        np.array([1, 2], np.int16), np.array([1 << 5, 1 << 17], np.uint32),
                        "bench REFPIX (random, real size)", "")
    return ReferenceArrays(
        mask=mask, saturation=f32(60000.0, 500.0), saturation_dq=dq(), superbias=f32(10000.0, 50),
        superbias_dq=dq(), linearity=lin, linearity_dq=dq(), dark=dark, dark_dq=dq(),
        readnoise=f32(14.0, 1.0), gain=f32(1.0, 0.02),
        sources={k: "bench (random, real size)" for k in
                 ("MASK", "SATURATION", "SUPERBIAS", "LINEARITY", "DARK", "READNOISE", "GAIN",
                  "REFPIX")},
        irs2=ref)


def prepare(workdir: Path, ng: int) -> tuple[str, str, dict]:
    import numpy as np
    from irs2_detector1 import write_irs2_uncal  # bench/ is sys.path[0]

    from nirbeam.stream.rate_steps import save_refs_to_store

    workdir = workdir / f"ng{ng}"
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{GROUP}_uncal.fits"
    root = str(workdir / "store.zarr")
    info = {}
    if not path.exists():
        slope = 20.0 + 5.0 * np.random.default_rng(3).random((2048, 2048))
        info["simulate_s"] = round(write_irs2_uncal(path, ng, slope), 1)
    if not Path(root).exists():
        refs = realistic_refs(ng)
        scene = np.zeros((2048, 2048), bool)
        scene[:, 4:-4] = True
        scene[900:1100] = False  # a "slit" band of scene
        save_refs_to_store(root, GROUP, refs, {"bench": "irs2_memory"}, scene_mask=scene)
    return str(path), root, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ngroups", type=int, default=20)
    ap.add_argument("--workdir", default="/tmp/irs2/mem")
    ap.add_argument("--child", nargs=3, metavar=("PATH", "ROOT", "ERR"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(HERE / "results" / "irs2_memory.json"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(worker(*args.child)))
        return
    prov = provenance()
    path, root, info = prepare(Path(args.workdir), args.ngroups)
    rows = {}
    for label, err in (("default", "1"), ("flicker_error_term_off", "0")):
        r = subprocess.run([sys.executable, str(Path(__file__)), "--child", path, root, err],
                           capture_output=True, text=True, cwd=str(HERE.parent))
        if r.returncode:
            sys.stderr.write(r.stderr)
            raise SystemExit(r.returncode)
        w = json.loads(r.stdout.strip().splitlines()[-1])
        w["under_2gb"] = w["peak_rss_mib"] * 2**20 < 2e9
        rows[label] = w
    du = subprocess.run(["du", "-sm", root], capture_output=True, text=True).stdout.split()[0]
    result = {"ngroups": args.ngroups, "file_mib": round(os.path.getsize(path) / 2**20, 1),
              "store_mib": int(du), "cpus": os.cpu_count(), **info, "worker": rows}
    print(json.dumps(result, indent=2))
    write_result(args.out, result, start=prov)


if __name__ == "__main__":
    main()
