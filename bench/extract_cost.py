"""Cost of per-integration extraction: numba kernels vs the previous numpy implementation.

Scenes are the simulator's presets run through the pipeline (``prism-sub512``, 8
integrations; ``g395h-sub2048``, 4): the bench reads each ``rateints`` cube and the stored
extraction model, then times, per integration,

* ``box``: :func:`~nirbeam.transforms.extract.box_extract` (background included),
* ``optimal``: :func:`~nirbeam.transforms.extract.optimal_extract` (variance model,
  5-sigma rejection, as :func:`~nirbeam.transforms.spectra.extract_integration` calls it),
* ``full``: :func:`~nirbeam.transforms.spectra.extract_integration` (box + optimal + the
  variance split in spectra.py),

each against the numpy reference (``_box_extract_reference``, ``_optimal_extract_reference``;
for ``full`` the same function with those two patched in) measured in the same run on the
same arrays. A timing is one sweep over all integrations (different data each call, so the
branch predictor cannot learn one image), best of ``--repeat`` sweeps, divided by the
number of integrations; old and new sweeps alternate. CPU time (``time.process_time``) is
the headline (the machine is shared), wall time is recorded too. The outputs of old and
new are compared array by array (max relative difference, and whether bit-identical).

Run: ``.venv/bin/python bench/extract_cost.py [--quick] [--workdir DIR]``; writes
``bench/results/extract_cost.json``. Scenes are simulated into ``--workdir`` (default a
folder in the system temp dir) on the first run and reused afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
from _provenance import provenance, write_result  # noqa: E402  (bench/ is sys.path[0])

RESULTS = Path(__file__).resolve().parent / "results" / "extract_cost.json"
CASES = (("prism-sub512", 8), ("g395h-sub2048", 4))


def make_scene(workdir: Path, preset: str, nints: int) -> Path:
    """Simulate ``preset`` and run the pipeline once; return the products folder."""
    from nirbeam.sim.simulator import simulate
    from nirbeam.stream.cli import main as cli_main

    sim = workdir / f"{preset}-n{nints}"
    out = workdir / f"{preset}-n{nints}-out"
    if not (out / "cubes.zarr").exists():
        simulate(str(sim), preset=preset, nints=nints)
        rc = cli_main(["run", str(sim), "--refs", str(sim / "refs"), "--out", str(out)])
        if rc not in (0, None):
            raise RuntimeError(f"extract_cost: nirbeam run {sim} failed with status {rc}")
    return out


def load_scene(out: Path):
    """(rateints arrays, ExtractionModel) from a products folder."""
    import zarr

    from nirbeam.sinks.zarr_store import load_arrays
    from nirbeam.transforms.spectra import ExtractionModel

    root = str(out / "cubes.zarr")
    groups = list(zarr.open_group(root, mode="r").group_keys())
    if len(groups) != 1:
        raise RuntimeError(f"extract_cost: expected one exposure group in {root}, got {groups}")
    g = groups[0]
    arrays = {
        k: zarr.open_array(root, path=f"{g}/rateints/{k}", mode="r")[...]
        for k in ("sci", "err", "dq", "var_poisson", "var_rnoise")
    }
    model = ExtractionModel.from_arrays(*load_arrays(root, f"{g}/extraction"))
    return arrays, model


@contextlib.contextmanager
def reference_spectra():
    """extract_integration with the numpy reference kernels patched in."""
    from nirbeam.transforms import extract as ex
    from nirbeam.transforms import spectra

    with (
        mock.patch.object(spectra, "box_extract", ex._box_extract_reference),
        mock.patch.object(spectra, "optimal_extract", ex._optimal_extract_reference),
    ):
        yield


def time_sweeps(fns: dict, inputs: list, repeat: int) -> dict:
    """Best-of-``repeat`` ms per call of each fn over all inputs; fns alternate."""
    for fn in fns.values():  # warm-up (numba cache load, first-touch)
        for x in inputs:
            fn(x)
    best = {k: [np.inf, np.inf] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            c0, w0 = time.process_time(), time.perf_counter()
            for x in inputs:
                fn(x)
            c1, w1 = time.process_time(), time.perf_counter()
            best[k][0] = min(best[k][0], c1 - c0)
            best[k][1] = min(best[k][1], w1 - w0)
    n = len(inputs)
    return {k: {"cpu_ms": 1e3 * c / n, "wall_ms": 1e3 * w / n} for k, (c, w) in best.items()}


def max_rel_diff(new: np.ndarray, old: np.ndarray) -> float:
    """max |new - old| / max |old| over finite entries (0 when identical)."""
    new, old = np.asarray(new, np.float64), np.asarray(old, np.float64)
    if np.array_equal(new, old, equal_nan=True):
        return 0.0
    fin = np.isfinite(old)
    scale = float(np.max(np.abs(old[fin]))) if fin.any() else 1.0
    return float(np.nanmax(np.abs(new - old)) / (scale or 1.0))


def bench_case(preset: str, nints: int, workdir: Path, repeat: int) -> dict:
    from nirbeam.transforms import extract as ex
    from nirbeam.transforms import spectra

    arrays, model = load_scene(make_scene(workdir, preset, nints))
    bits = spectra.BAD_BITS
    inputs = []
    for i in range(arrays["sci"].shape[0]):
        rate = np.asarray(arrays["sci"][i], np.float64)
        vp = np.asarray(arrays["var_poisson"][i], np.float64)
        vr = np.asarray(arrays["var_rnoise"][i], np.float64)
        var = vp + vr  # as extract_integration builds it
        var = np.where(
            ~np.isfinite(var) | (var <= 0), np.asarray(arrays["err"][i], np.float64) ** 2, var
        )
        raw = tuple(arrays[k][i] for k in ("sci", "err", "dq", "var_poisson", "var_rnoise"))
        bkg = ex._box_extract_reference(
            rate,
            var,
            arrays["dq"][i],
            model.trace,
            model.half_width,
            model.background_region,
            profile=model.profile,
            bad_bits=bits,
        ).background
        inputs.append(dict(rate=rate, var=var, vp=vp, vr=vr, dq=arrays["dq"][i], bkg=bkg, raw=raw))

    def box(fn):
        return lambda x: fn(
            x["rate"],
            x["var"],
            x["dq"],
            model.trace,
            model.half_width,
            model.background_region,
            profile=model.profile,
            bad_bits=bits,
        )

    def opt(fn):
        return lambda x: fn(
            x["rate"],
            x["var"],
            x["dq"],
            model.profile,
            background=x["bkg"],
            var_rnoise=x["vr"],
            var_poisson=x["vp"],
            sigma_clip=model.sigma_clip,
            bad_bits=bits,
        )

    def full_new(x):
        return spectra.extract_integration(*x["raw"], model)

    def full_old(x):
        with reference_spectra():
            return spectra.extract_integration(*x["raw"], model)

    pairs = {
        "box": (box(ex._box_extract_reference), box(ex.box_extract)),
        "optimal": (opt(ex._optimal_extract_reference), opt(ex.optimal_extract)),
        "full": (full_old, full_new),
    }
    res: dict = {
        "preset": preset,
        "shape": list(arrays["sci"].shape[1:]),
        "nints": int(arrays["sci"].shape[0]),
        "stages": {},
    }
    for name, (old, new) in pairs.items():
        t = time_sweeps({"old": old, "new": new}, inputs, repeat)
        diffs: dict[str, float] = {}
        for x in inputs:
            a, b = new(x), old(x)
            items = (
                a.items()
                if isinstance(a, dict)
                else (
                    (k, getattr(a, k))
                    for k in ("flux", "flux_error", "dq", "npixels", "background")
                )
            )
            for k, v in items:
                ref = b[k] if isinstance(b, dict) else getattr(b, k)
                diffs[k] = max(diffs.get(k, 0.0), max_rel_diff(v, ref))
        res["stages"][name] = {
            "old": t["old"],
            "new": t["new"],
            "speedup_cpu": t["old"]["cpu_ms"] / t["new"]["cpu_ms"],
            "speedup_wall": t["old"]["wall_ms"] / t["new"]["wall_ms"],
            "max_rel_diff": diffs,
            "bit_identical": all(v == 0.0 for v in diffs.values()),
        }
        s = res["stages"][name]
        print(
            f"{preset} {tuple(res['shape'])} {name:8s} old {t['old']['cpu_ms']:8.3f} ms  "
            f"new {t['new']['cpu_ms']:7.3f} ms (cpu)  x{s['speedup_cpu']:5.1f} cpu  "
            f"x{s['speedup_wall']:5.1f} wall  max rel diff {max(diffs.values()):.1e}"
        )
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 repeats instead of 15")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument(
        "--workdir", default=os.path.join(tempfile.gettempdir(), "nirbeam-bench-extract")
    )
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    prov = provenance(argv)
    repeat = args.repeat or (3 if args.quick else 15)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    import numba

    cases = [bench_case(p, n, workdir, repeat) for p, n in CASES]
    out = {
        "benchmark": "extract_cost",
        "description": (
            "ms per integration, best of `repeat` sweeps over all integrations of a simulated "
            "exposure; old = numpy reference (_box_extract_reference, "
            "_optimal_extract_reference), new = numba kernels; full = extract_integration"
        ),
        "repeat": repeat,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "loadavg": list(os.getloadavg()),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "numba": numba.__version__,
        },
        "cases": cases,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_result(args.out, out, argv, start=prov)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
