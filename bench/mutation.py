"""Planted mutants in the science-critical kernels: does the test suite see them?

Each mutant is a small textual patch (one or a few lines, applied to every occurrence
listed) to a temporary copy of the package; the chosen tests run on that copy
(``PYTHONPATH`` puts it first, Hypothesis uses the derandomised ``ci`` profile) and the
mutant is *killed* when a test fails, *survived* when all pass. Before the mutants, the
union of the chosen tests runs once unpatched on the copy (it must pass: otherwise a
"kill" would mean nothing).

numba caches (``__pycache__/*.nbi|nbc``) are copied with their sources' timestamps, so only
the mutated module and the modules that import it recompile (numba does not track
callees in other files: their caches are removed too).

    python bench/mutation.py [--only ID,ID] [--list] [--timeout 600] [--out FILE]

Writes ``bench/results/mutation.json`` (score = killed / mutants, each mutant's status,
first failing test and time) with its provenance.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _provenance import REPO, RESULTS, provenance, write_result


@dataclass(frozen=True)
class Mutant:
    id: str
    what: str
    patches: tuple  # ((file under nirbeam/, old, new, expected occurrences), ...)
    tests: tuple  # pytest arguments (files, -k expressions)
    owner: str = ""  # who writes the test if it survives ("" = this suite)


T_EXTRACT = ("tests/test_extract.py", "tests/test_extraction_truth.py")
T_D1 = ("tests/test_detector1_sim.py", "tests/test_detector1_stcal.py",
        "tests/test_detector1_steps.py", "tests/test_detector1_fused.py")

MUTANTS = (
    Mutant("opt-poisson-var-x0.7",
           "optimal extraction: Poisson variance x0.7 in the kernel and its numpy reference",
           (("transforms/extract_optimal.py", "vrow[x] = np_maximum(vrr[x] + k * mod, 1e-30)",
             "vrow[x] = np_maximum(vrr[x] + 0.7 * k * mod, 1e-30)", 1),
            ("transforms/extract_optimal.py", "V = np.where(M, np.maximum(vr + k * mod, 1e-30), np.inf)",
             "V = np.where(M, np.maximum(vr + 0.7 * k * mod, 1e-30), np.inf)", 1)),
           T_EXTRACT),
    Mutant("opt-flux-x0.999",
           "optimal extraction: flux scaled by 0.999 in the kernel and its reference (a bias)",
           (("transforms/extract_optimal.py", "            f[x] = num[x] / den[x]\n",
             "            f[x] = 0.999 * num[x] / den[x]\n", 1),
            ("transforms/extract_optimal.py", "        return num / den, psum / den\n",
             "        return 0.999 * num / den, psum / den\n", 1),
            ("transforms/extract_optimal.py", "f = np.where(den > 0, num / den, 0.0)",
             "f = np.where(den > 0, 0.999 * num / den, 0.0)", 1)),
           (*T_EXTRACT, "tests/test_truth_pulls.py")),
    Mutant("opt-rnoise-var-x0.7",
           "optimal extraction: read-noise variance x0.7 in the kernel and its reference",
           (("transforms/extract_optimal.py", "Vr[i, x] = t if math.isfinite(t) else np.inf",
             "Vr[i, x] = 0.7 * t if math.isfinite(t) else np.inf", 1),
            ("transforms/extract_optimal.py", "vr = np.where(np.isfinite(vr), vr, np.inf)",
             "vr = np.where(np.isfinite(vr), 0.7 * vr, np.inf)", 1)),
           T_EXTRACT),
    Mutant("box-pixel-var-x0.7",
           "box extraction: pixel variance x0.7 in the kernel and its reference",
           (("transforms/extract_box.py", "var_good[x] += gw * gw * vz",
             "var_good[x] += 0.7 * gw * gw * vz", 1),
            ("transforms/extract_box.py", "var_good = np.sum(good_w**2 * np.where(bad, 0.0, v), axis=0)",
             "var_good = 0.7 * np.sum(good_w**2 * np.where(bad, 0.0, v), axis=0)", 1)),
           T_EXTRACT),
    Mutant("box-no-background-var",
           "box extraction: background-estimate variance left out (kernel and reference)",
           (("transforms/extract_box.py", "fe2 = fe2 + wsum[x] * wsum[x] * bvar[x]",
             "fe2 = fe2 + 0.0 * bvar[x]", 1),
            ("transforms/extract_box.py", "var_good) + wsum**2 * bvar", "var_good) + 0.0 * bvar", 1)),
           T_EXTRACT),
    Mutant("pipeline-var-rnoise-x0.5",
           "extract_integration: pixel variance var_poisson + 0.5 var_rnoise",
           (("transforms/spectra.py", "    var = vp + vr\n", "    var = vp + 0.5 * vr\n", 1),),
           T_EXTRACT),
    Mutant("rampfit-poisson-var-x0.7",
           "ramp fit: Poisson variance per segment x0.7",
           (("transforms/ramp_fit.py", "vp = ((mrate + dcur) if mrate > 0.0 else dcur) / pden",
             "vp = 0.7 * ((mrate + dcur) if mrate > 0.0 else dcur) / pden", 3),),
           ("tests/test_detector1_sim.py", "tests/test_detector1_stcal.py")),
    Mutant("rampfit-power-step",
           "ramp fit: optimal-weighting power step moved (S/N 20 -> 25)",
           (("transforms/ramp_fit.py", "    elif snr < 20.0:", "    elif snr < 25.0:", 1),),
           ("tests/test_detector1_sim.py", "tests/test_detector1_stcal.py")),
    Mutant("jump-threshold-4.25",
           "jump: default rejection threshold 4.0 -> 4.25",
           (("transforms/jump.py", "rejection_threshold: float = 4.0",
             "rejection_threshold: float = 4.25", 1),),
           T_D1),
    Mutant("dark-x0.9",
           "dark current: 0.9 x the reference subtracted (fused kernel)",
           (("transforms/detector1.py", "np.float32(D[s, x, g] - _dark.dark_value(dark[g, cr, x]))",
             "np.float32(D[s, x, g] - 0.9 * _dark.dark_value(dark[g, cr, x]))", 1),),
           T_D1),
    Mutant("linearity-no-constant",
           "linearity: constant term of the correction polynomial dropped",
           (("transforms/linearity.py", "    r = np.float32(r + coeffs[0, y, x])\n    return r",
             "    r = np.float32(r)\n    return r", 1),),
           T_D1),
    Mutant("refpix-off",
           "reference-pixel correction switched off inside detector1 (fused and unfused)",
           (("transforms/detector1.py", "    do_refpix = bool(refmask.any())\n",
             "    do_refpix = False\n", 1),
            ("transforms/detector1.py", "    if not params.refpix.enabled or geometry is None:\n",
             "    if True:\n", 1)),
           (*T_D1, "tests/test_pipeline.py", "tests/test_refpix_jwst.py",
            "tests/test_g395h_noise.py"), owner=("issue 13: no test here runs a preset with reference pixels through detector1 "
                  "(prism-sub512 has none); the issue-13 helper writes refpix tests on g395h-sub2048")),
    Mutant("rampfit-rnoise-var-x0.7",
           "ramp fit: read-noise variance of segments of >= 3 groups x0.7",
           (("transforms/ramp_fit.py", "vr = 12.0 * rnum * rnum / ((n * n * n - n) * g * g)",
             "vr = 0.7 * 12.0 * rnum * rnum / ((n * n * n - n) * g * g)", 1),),
           ("tests/test_detector1_sim.py", "tests/test_detector1_stcal.py")),
    Mutant("profile-negatives-kept",
           "optimal-extraction profile: negative wing values no longer clipped",
           (("transforms/extract_profile.py", "    return np.clip(prof, 0.0, None)\n", "    return prof\n", 1),),
           T_EXTRACT),
    Mutant("trace-centroid-offset",
           "trace: per-column centroids shifted by +0.3 px",
           (("transforms/trace.py", "    c = np.where(ok, c, np.nan)\n",
             "    c = np.where(ok, c + 0.3, np.nan)\n", 1),),
           ("tests/test_trace.py", *T_EXTRACT)),
    Mutant("binning-no-missing-scale",
           "light-curve binning: sums over bins with skipped columns not scaled up",
           (("transforms/lightcurve.py", "                    out_f[i, k] *= scale\n",
             "                    pass\n", 1),),
           ("tests/test_lightcurve.py",)),
    Mutant("outlier-window-shift",
           "outliers: rolling window shifted by one integration (batch and streaming)",
           (("transforms/outliers.py", "s = min(max(j - window // 2, 0), n - window)",
             "s = min(max(j - window // 2 + 1, 0), n - window)", 2),),
           ("tests/test_outliers.py", "tests/test_kernel_thresholds.py")),
    Mutant("outlier-threshold-x1.2",
           "outliers: threshold n_sigma x 1.2 (batch and streaming kernels)",
           (("transforms/outliers.py", "- med) > n_sigma * ev:", "- med) > 1.2 * n_sigma * ev:", 2),),
           ("tests/test_outliers.py", "tests/test_kernel_thresholds.py")),
    Mutant("flicker-default-median",
           "1/f cleaning: default statistic clipped mean -> median",
           (("transforms/flicker_params.py", '    statistic: str = "mean"\n', '    statistic: str = "median"\n', 1),),
           ("tests/test_flicker.py", "tests/test_truth_pulls.py", "tests/test_g395h_noise.py"),
           owner=("issue 13: the 1/f default is asserted by its effect (chi2, mean pull) in the "
                  "issue-13 helper's tests; here the default-cleaning mean pull is a strict xfail")),
    Mutant("binning-error-x0.7",
           "light-curve binning: variance sum x0.7",
           (("transforms/lightcurve.py", "out_e[i, k] += e[i, x] * e[i, x]",
             "out_e[i, k] += 0.7 * e[i, x] * e[i, x]", 1),),
           ("tests/test_lightcurve.py",)),
    Mutant("transit-no-error-rescale",
           "transit fit: errors never rescaled by sqrt(chi2/dof)",
           (("transforms/transit.py", "scale = max(1.0, math.sqrt(red)) if np.isfinite(red) else 1.0",
             "scale = 1.0", 1),),
           ("tests/test_transit.py",)),
)


def _copy_tree(dst: Path) -> None:
    shutil.copytree(REPO / "nirbeam", dst / "nirbeam", copy_function=shutil.copy2)
    shutil.copytree(REPO / "tests", dst / "tests", copy_function=shutil.copy2,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", dst / "pyproject.toml")


def _drop_numba_caches(pkg: Path, module_stem: str) -> None:
    """Remove numba caches of ``module_stem`` and of every module importing it."""
    pat = re.compile(rf"(import|from)\s[^\n]*\b{re.escape(module_stem)}\b")
    for src in pkg.rglob("*.py"):
        if src.stem == module_stem or pat.search(src.read_text()):
            cache = src.parent / "__pycache__"
            for f in cache.glob(f"{src.stem}.*.nb[ic]"):
                f.unlink()


def _apply(root: Path, m: Mutant) -> None:
    for rel, old, new, count in m.patches:
        p = root / "nirbeam" / rel
        s = p.read_text()
        n = s.count(old)
        if n != count:
            raise RuntimeError(f"mutant {m.id}: {rel}: expected {count} occurrence(s) of "
                               f"{old!r}, found {n} (the code changed: update the mutant)")
        p.write_text(s.replace(old, new))
        _drop_numba_caches(root / "nirbeam", Path(rel).stem)


def _pytest(root: Path, tests, timeout: float) -> tuple[str, str, float]:
    env = dict(os.environ, PYTHONPATH=str(root), HYPOTHESIS_PROFILE="ci",
               NIRBEAM_SHARED_DATA=os.environ.get(
                   "NIRBEAM_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    env.pop("CI", None)
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
           "--no-header", "-rfE", *tests]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", "", time.perf_counter() - t0
    dt = time.perf_counter() - t0
    out = r.stdout + r.stderr
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
    if not failed:
        failed = re.findall(r"^(tests/\S+::\S+) FAILED", out, re.M)
    if r.returncode == 0:
        return "passed", "", dt
    if r.returncode == 1:
        first = failed[0] if failed else next(
            (ln for ln in out.splitlines() if "failed" in ln), "?")
        return "failed", first, dt
    return "error", out[-2000:], dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="comma list of mutant ids")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "mutation.json"))
    args = ap.parse_args(argv)
    prov = provenance(argv)
    chosen = [m for m in MUTANTS if not args.only or m.id in args.only.split(",")]
    if args.list:
        for m in chosen:
            print(f"{m.id:28s} {m.what}  [{' '.join(m.tests)}]")
        return 0
    work = Path(tempfile.mkdtemp(prefix="nirbeam-mutation-"))
    rows = []
    try:
        base = work / "baseline"
        _copy_tree(base)
        union = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        baseline = None
        if not args.skip_baseline:
            status, first, dt = _pytest(base, union, args.timeout * 2)
            baseline = {"status": status, "seconds": round(dt, 1), "tests": list(union),
                        "detail": first}
            print(f"baseline (unpatched): {status} in {dt:.0f} s {first}", flush=True)
            if status != "passed":
                print("the unpatched tests do not pass: mutants would mean nothing",
                      file=sys.stderr)
                return 2
        for m in chosen:
            root = work / m.id
            _copy_tree(root)
            _apply(root, m)
            status, first, dt = _pytest(root, m.tests, args.timeout)
            verdict = {"failed": "killed", "passed": "survived"}.get(status, status)
            rows.append({"id": m.id, "what": m.what,
                         "patches": [{"file": f"nirbeam/{p[0]}", "old": p[1], "new": p[2]}
                                     for p in m.patches],
                         "tests": list(m.tests), "status": verdict,
                         "killed_by": first if verdict == "killed" else None,
                         "seconds": round(dt, 1), "owner_if_survived": m.owner or None})
            print(f"{m.id:28s} {verdict:9s} {dt:6.0f} s  {first if verdict == 'killed' else ''}",
                  flush=True)
            shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    killed = sum(r["status"] == "killed" for r in rows)
    result = {
        "benchmark": "mutation",
        "what": "planted mutants in science-critical kernels; killed = a chosen test fails",
        "hypothesis_profile": "ci (derandomised)",
        "baseline": baseline,
        "mutants": rows,
        "score": {"killed": killed, "total": len(rows),
                  "fraction": round(killed / len(rows), 3) if rows else None},
    }
    if args.only and Path(args.out).exists():
        print("(--only: not writing the results file)")
        return 0
    write_result(args.out, result, argv, start=prov)
    print(f"score {killed}/{len(rows)}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
