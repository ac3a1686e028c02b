"""jwst's own extraction of the three CEERS nods (run with .venv-jwst: jwst is bench-only).

jwst 3.0 ``extract_1d.extract.run_extract1d`` (box, no reference file needed) on each nod
after jwst's nod background (each nod minus the mean of the other two, as calwebb_spec2's
background step does with the nod members), with the aperture rows given per nod
(``--apertures`` "lo:hi,lo:hi,lo:hi", 0-based inclusive rows, e.g. from nirbeam's fitted
centres). Prints JSON: per nod WAVELENGTH, FLUX (Jy) and FLUX_ERROR.

    .venv-jwst/bin/python bench/mos_ceers_jwst_reference.py --apertures 11:16,16:21,6:11 > ref.json
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
    ap.add_argument("--apertures", required=True)
    a = ap.parse_args(argv)
    from jwst.extract_1d.extract import run_extract1d
    from stdatamodels.jwst import datamodels

    files = sorted(glob.glob(os.path.join(a.data, "*_nrs2_phot.*.fits")))
    models = [datamodels.open(f) for f in files]
    aps = [tuple(int(v) for v in s.split(":")) for s in a.apertures.split(",")]
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
        lo, hi = aps[k]
        ref = {"reftype": "EXTRACT1D", "instrument": "NIRSPEC", "telescope": "JWST",
               "apertures": [{"id": "ANY", "region_type": "target", "dispaxis": 1,
                              "xstart": 0, "xstop": int(m.data.shape[1] - 1),
                              "ystart": lo, "ystop": hi, "use_source_posn": False}]}
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
