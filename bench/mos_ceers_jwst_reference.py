"""jwst's own extraction of the three CEERS nods (run with .venv-jwst: jwst is bench-only).

jwst 3.0 ``extract_1d.extract.run_extract1d`` (box, no reference file needed) on each nod
after jwst's nod background (each nod minus the mean of the other two, as calwebb_spec2's
background step does with the nod members), with a box aperture per nod given as a
trace ``y(x) = center_k + slope * (x - x_ref)`` (0-based pixel centres) +/- ``half`` rows
(jwst ``src_coeff`` limits, partial pixels), e.g. from nirbeam's fitted profile. Prints
JSON: per nod WAVELENGTH, FLUX (Jy), FLUX_ERROR.

    .venv-jwst/bin/python bench/mos_ceers_jwst_reference.py --centers 13.97,18.96,8.94 \
        --slope 0.011 --x-ref 170 --half 2.5 > ref.json
"""

import argparse
import glob
import json
import os
import sys
import tempfile

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/shared/data/modes/mos_ceers")
    ap.add_argument("--centers", required=True)
    ap.add_argument("--slope", type=float, default=0.0)
    ap.add_argument("--x-ref", type=float, default=0.0)
    ap.add_argument("--half", type=float, default=2.5)
    a = ap.parse_args(argv)
    from jwst.extract_1d.extract import run_extract1d
    from stdatamodels.jwst import datamodels

    files = sorted(glob.glob(os.path.join(a.data, "*_nrs2_phot.*.fits")))
    models = [datamodels.open(f) for f in files]
    centers = [float(v) for v in a.centers.split(",")]
    out = {"jwst": __import__("jwst").__version__, "nods": []}
    for k, m in enumerate(models):
        others = [models[j] for j in range(len(models)) if j != k]
        d = m.copy()
        d.data = m.data - np.mean([o.data for o in others], axis=0)
        d.var_poisson = m.var_poisson + np.mean([o.var_poisson for o in others], axis=0) / len(others)
        d.var_rnoise = m.var_rnoise + np.mean([o.var_rnoise for o in others], axis=0) / len(others)
        d.var_flat = m.var_flat + np.mean([o.var_flat for o in others], axis=0) / len(others)
        d.err = np.sqrt(d.var_poisson + d.var_rnoise + d.var_flat)
        d.meta.cal_step.photom = "COMPLETE"
        d.meta.cal_step.back_sub = "COMPLETE"
        c0 = centers[k] - a.slope * a.x_ref
        lo, hi = [c0 - a.half, a.slope], [c0 + a.half, a.slope]
        ref = {"reftype": "EXTRACT1D", "instrument": "NIRSPEC", "telescope": "JWST",
               "apertures": [{"id": "ANY", "region_type": "target", "dispaxis": 1,
                              "xstart": 0, "xstop": int(m.data.shape[1] - 1),
                              "src_coeff": [lo, hi], "independent_var": "pixel",
                              "use_source_posn": False}]}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump(ref, fh)
        res = run_extract1d(d, extract_ref_name=fh.name, apcorr_ref_name=None, psf_ref_name="N/A",
                            extraction_type="box", subtract_background=False, use_source_posn=False)
        r = res[0] if isinstance(res, tuple) else res
        t = r.spec[0].spec_table
        out["nods"].append({"file": os.path.basename(files[k]), "rows": [lo, hi],
                            "wavelength": np.asarray(t["WAVELENGTH"]).tolist(),
                            "flux_jy": np.asarray(t["FLUX"]).tolist(),
                            "flux_error_jy": np.asarray(t["FLUX_ERROR"]).tolist(),
                            "surf_bright": np.asarray(t["SURF_BRIGHT"]).tolist(),
                            "npixels": np.asarray(t["NPIXELS"]).tolist(),
                            "flux_unit": str(t.columns["FLUX"].unit if hasattr(t, "columns") else "")})
    json.dump(out, sys.stdout, default=float)


if __name__ == "__main__":
    main()
