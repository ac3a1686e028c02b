"""Benchmark: two patterns of the rateints reads of stage 2, in one process.

Stage 2 (``nirbeam.stream.spectra_stage.ProcessBlock``) reads, per step of a work item,
the outlier window of ``sci``, ``err``, ``dq`` (a :class:`WindowReader`, each chunk once)
and the step's variances. "old": the reader of the code (a fresh ``np.concatenate`` of
the kept integrations and the new chunks on every read); "new": the variant tried in
session 11 and not adopted (buffers allocated at most twice and reused, the kept
integrations moved to the front; copied here): it measured 0.99-1.08x, noise. (A second
variant, the variances read in the reader's call, measured 0.81x: not adopted either.) This script replays both read patterns (the same steps and windows as ``_step``, numba-free) on the rateints of a finished
run, interleaved ``--reps`` times, and reports CPU seconds (process time) and wall seconds
of each, best and median, and checks that both give the same arrays bit for bit.

    python bench/stage2_reads.py [--run /work/prism/base] [--reps 5]
        [--out bench/results/stage2_cost_s11.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)
from _provenance import provenance, write_result  # noqa: E402  (bench/ on sys.path)


def _steps(nints: int, step: int, window: int):
    for start in range(1, nints + 1, step):
        stop = min(nints, start + step - 1)
        yield start, stop, max(1, start - window), min(nints, stop + window)


def _reuse_reader():
    """The variant tried in session 11 (not adopted): buffers allocated at most twice and
    reused, the kept integrations moved to the front, instead of a fresh concatenation."""
    from nirbeam import dqflags
    from nirbeam.sinks import zarr_store
    from nirbeam.stream.spectra_stage import WindowReader

    class ReuseReader(WindowReader):
        def get(self, lo, hi):
            if self.buf is None or lo >= self.hi:
                self.lo = self.hi = lo
            if hi > self.hi:
                top = min(self.nints, -(-hi // self.chunk) * self.chunk)
                new = zarr_store.read_block(self.root, self.group, "rateints", self.NAMES,
                                            slice(self.hi, top))
                bad = ~self.done[self.hi:top]
                if bad.any():
                    new["dq"][bad] |= np.uint32(dqflags.DO_NOT_USE)
                k = lo - self.lo
                keep = self.hi - lo
                m = keep + top - self.hi
                fits = self.buf is not None and self.buf[self.NAMES[0]].shape[0] >= m
                if not keep and not fits:
                    self.buf = new
                elif not fits:
                    old = self.buf
                    self.buf = {n: np.empty((m, *v.shape[1:]), v.dtype) for n, v in new.items()}
                    for n in self.NAMES:
                        self.buf[n][:keep] = old[n][k: k + keep]
                elif keep and k:
                    for n in self.NAMES:
                        self.buf[n][:keep] = self.buf[n][k: k + keep]
                if self.buf is not new:
                    for n in self.NAMES:
                        self.buf[n][keep:m] = new[n]
                self.lo = lo
                self.hi = top
            k = lo - self.lo
            return {n: self.buf[n][k: k + hi - lo] for n in self.NAMES}

    return ReuseReader


def _pattern(reader, root, g, done, step, window, check=False):
    """The reads of ``ProcessBlock._step`` for a whole exposure: window, then variances;
    with ``check``, returns per step the SHA-1 of the window's and variances' bytes."""
    import hashlib

    from nirbeam.sinks import zarr_store

    r = reader(root, g, done)
    out = []
    for start, stop, lo, hi in _steps(done.size, step, window):
        read = r.get(lo - 1, hi)
        var = zarr_store.read_block(root, g, "rateints", ("var_poisson", "var_rnoise"),
                                    slice(start - 1, stop))
        if check:
            h = hashlib.sha1()
            for v in (*read.values(), *var.values()):
                h.update(np.ascontiguousarray(v).tobytes())
                h.update(repr((v.shape, v.dtype.str)).encode())
            out.append(h.hexdigest())
    return out


def old_pattern(root, g, done, step, window, check=False):
    from nirbeam.stream.spectra_stage import WindowReader

    return _pattern(WindowReader, root, g, done, step, window, check)


def new_pattern(root, g, done, step, window, check=False):
    return _pattern(_reuse_reader(), root, g, done, step, window, check)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="/work/prism/base")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "stage2_cost_s11.json"))
    args = ap.parse_args(argv)
    start_prov = provenance(argv)

    from nirbeam.sinks import zarr_store
    from nirbeam.stream.settings import Settings
    from nirbeam.stream.spectra_stage import STEP

    root = os.path.join(args.run, "cubes.zarr")
    g = next(d for d in sorted(os.listdir(root))
             if os.path.isdir(os.path.join(root, d, "rateints")))
    done = zarr_store.completed(root, g, "rateints")
    window = Settings.from_dict({}).outliers.window
    times = {"old": {"cpu_s": [], "wall_s": []}, "new": {"cpu_s": [], "wall_s": []}}
    for _ in range(args.reps):
        for name, fn in (("old", old_pattern), ("new", new_pattern)):
            zarr_store.forget_cache()
            c, w = time.process_time(), time.perf_counter()
            fn(root, g, done, STEP, window)
            times[name]["cpu_s"].append(time.process_time() - c)
            times[name]["wall_s"].append(time.perf_counter() - w)
    same = (old_pattern(root, g, done, STEP, window, True)
            == new_pattern(root, g, done, STEP, window, True))
    summary = {k: {"best_cpu_s": min(v["cpu_s"]), "median_cpu_s": statistics.median(v["cpu_s"]),
                   "best_wall_s": min(v["wall_s"]), **v} for k, v in times.items()}
    rec = {
        "what": ("stage-2 rateints reads: old = the code's WindowReader (concatenate per "
                 "read), new = a reused-buffer variant (not adopted)"),
        "run": args.run, "group": g, "nints": int(done.size), "step": STEP,
        "window": window, "reps": args.reps, "identical": bool(same), **summary,
        "cpu_ratio_old_over_new_best": summary["old"]["best_cpu_s"] / summary["new"]["best_cpu_s"],
        "cpu_ratio_old_over_new_median": (summary["old"]["median_cpu_s"]
                                          / summary["new"]["median_cpu_s"]),
    }
    write_result(args.out, rec, argv, start=start_prov)
    print({k: rec[k] for k in ("identical", "cpu_ratio_old_over_new_best",
                               "cpu_ratio_old_over_new_median")},
          {k: (summary[k]["best_cpu_s"], summary[k]["median_cpu_s"]) for k in summary})


if __name__ == "__main__":
    main()
