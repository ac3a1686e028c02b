"""One full-frame IRS2 integration: nirbeam's detector1 (IRS2 reference step + detector1)
against jwst's IRS2 refpix step on the same file, time and peak memory.

Simulates one NRSIRS2 uncal file (1 integration, ``--ngroups`` groups, 20 by default:
262 MB of uint16), then in fresh processes (peak RSS = the child's ru_maxrss):

* nirbeam: ``scan_segment`` + ``read_ramp`` + ``calibrate_record`` (IRS2 reference
  correction with :func:`nirbeam.sim.irs2.matched_reference`, then the fused detector1
  with flat full-frame references) -> rate images;
* jwst (``--jwst-python``, a venv with jwst 3.0; skipped without): the refpix step's IRS2
  path on the same integration as a RampModel (float32, as jwst holds it):
  ``flag_bad_refpix`` x2 + ``correct_model`` with the same coefficients. jwst's whole
  Detector1 is not run: it needs CRDS references for every step in IRS2 layouts, which
  this offline machine does not have; the refpix step is the IRS2-specific part.

    python bench/irs2_detector1.py [--ngroups 20] [--jwst-python .venv-jwst/bin/python]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _provenance import provenance, write_result  # bench/ is sys.path[0]

HERE = Path(__file__).resolve().parent


def _child(kind: str, path: str) -> dict:
    import resource

    import numpy as np

    t0 = time.perf_counter()
    if kind == "nirbeam":
        from nirbeam.core.records import IntegrationKey, IntegrationRecord, IntTimes
        from nirbeam.sim.irs2 import matched_reference
        from nirbeam.stream.uncal import read_ramp, scan_segment
        from nirbeam.transforms import irs2
        from nirbeam.transforms.detector1 import calibrate_record
        from nirbeam.transforms.reference import ReferenceArrays

        info = scan_segment(path, require_tso=False)
        ramp = read_ramp(info, 1)
        ref = matched_reference()
        refs = ReferenceArrays.flat(2048, 2048, info.meta.ngroups, readnoise=8.0)
        refs = dataclasses.replace(refs, irs2=ref)
        t1 = time.perf_counter()
        irs2.correct_ramp(ramp, refs, info.meta)  # the IRS2 step alone, for the split
        t2 = time.perf_counter()
        rec = IntegrationRecord(IntegrationKey("e", info.meta.detector, 1), info.meta,
                                IntTimes(*(60000.0,) * 6), ramp=ramp)
        out = calibrate_record(rec, refs)
        t3 = time.perf_counter()
        res = {"read_s": t1 - t0, "irs2_step_s": t2 - t1, "detector1_total_s": t3 - t2,
               "rate_median": float(np.median(out.rate))}
    else:
        from astropy.io import fits
        from jwst.refpix import irs2_subtract_reference as j
        from stdatamodels.jwst import datamodels

        from nirbeam.sim.irs2 import matched_reference

        with fits.open(path) as h:
            data = np.asarray(h["SCI"].data, np.float32)
            det = h[0].header["DETECTOR"]
        ref = matched_reference()
        cols = {}
        for name, a in (("alpha", ref.alpha), ("beta", ref.beta)):
            for k in range(4):
                v = np.empty(2 * a.shape[1], np.float32)
                v[0::2], v[1::2] = a[k].real, a[k].imag
                cols[f"{name}_{k}"] = v

        class _Ref:
            irs2_table = np.rec.fromarrays(list(cols.values()), names=list(cols))
            dq_table = np.rec.fromarrays([np.zeros(0, np.int16)] * 2 + [np.zeros(0, np.uint32)],
                                         names=["output", "odd_even", "mask"])

        m = datamodels.RampModel(data=data, pixeldq=np.zeros(data.shape[2:], np.uint32),
                                 groupdq=np.zeros(data.shape, np.uint8),
                                 err=np.zeros(data.shape, np.float32))
        m.meta.exposure.nrs_normal, m.meta.exposure.nrs_reference = 16, 4
        m.meta.instrument.name, m.meta.instrument.detector = "NIRSPEC", det
        t1 = time.perf_counter()
        j.flag_bad_refpix(m, n_sigma=3.0, flag_only=True)
        j.flag_bad_refpix(m, replace_only=True)
        j.correct_model(m, _Ref())
        t2 = time.perf_counter()
        res = {"read_s": t1 - t0, "irs2_step_s": t2 - t1}
    res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def write_irs2_uncal(path, ng: int, slope) -> float:
    """Write a one-integration NRSIRS2 full-frame NRS1 uncal of ``ng`` groups whose
    ramp is ``10000 + group * slope`` DN (``slope``: a number or a (2048, 2048) array)
    through the simulator's IRS2 writer (``seed=1``); returns the seconds it took. Shared
    with bench/irs2_memory.py."""
    import numpy as np
    from astropy.io import fits

    from nirbeam.sim.fits_writer import UncalSegmentWriter

    h = fits.Header()
    for k, v in dict(TELESCOP="JWST", INSTRUME="NIRSPEC", DETECTOR="NRS1",
                     EXP_TYPE="NRS_MSASPEC", NINTS=1, NGROUPS=ng, NFRAMES=5, GROUPGAP=0,
                     TFRAME=14.58889, TGROUP=72.94445, EFFINTTM=72.94445 * (ng - 1),
                     EXPSTART=60000.0).items():
        h[k] = v
    t = time.perf_counter()
    w = UncalSegmentWriter(Path(path), h, (1, ng, 2048, 2048), readout="NRSIRS2", seed=1)
    cube = 10000 + np.arange(ng)[:, None, None] * np.broadcast_to(slope, (2048, 2048))[None]
    w.write(cube.astype(np.uint16))
    w.close()
    return time.perf_counter() - t


def run_child(python: str, kind: str, path: str) -> dict:
    out = subprocess.run([python, str(Path(__file__)), "--child", kind, path],
                         capture_output=True, text=True, check=True,
                         cwd=str(HERE.parent))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ngroups", type=int, default=20)
    ap.add_argument("--jwst-python", default=None)
    ap.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(HERE / "results" / "irs2_detector1.json"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(*args.child)))
        return
    prov = provenance()
    ng = args.ngroups
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "jw99999001001_01101_00001_nrs1_uncal.fits")
        sim_s = write_irs2_uncal(path, ng, 20.0)
        raw_mib = os.path.getsize(path) / 2**20
        rows = {"nirbeam": run_child(sys.executable, "nirbeam", path)}
        if args.jwst_python:
            rows["jwst_refpix"] = run_child(args.jwst_python, "jwst", path)
    result = {"ngroups": ng, "file_mib": round(raw_mib, 1), "simulate_s": round(sim_s, 1),
              "cpus": os.cpu_count(), **rows}
    if "jwst_refpix" in rows:
        n, j = rows["nirbeam"], rows["jwst_refpix"]
        result["irs2_step_time_ratio_jwst_over_nirbeam"] = round(j["irs2_step_s"] / n["irs2_step_s"], 2)
        result["peak_rss_ratio_jwst_over_nirbeam"] = round(j["peak_rss_mib"] / n["peak_rss_mib"], 2)
    print(json.dumps(result, indent=2))
    write_result(args.out, result, start=prov)


if __name__ == "__main__":
    main()
