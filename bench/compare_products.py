"""Are two nirbeam output folders' products identical? (bit for bit, then the largest
difference of each array that is not).

Compares, for every exposure/detector group in both stores: rateints (sci, err, dq,
var_poisson, var_rnoise, done), cleaned dq, spectra (every array), lightcurves, and the
white-light table (flux, flux_error, dq) and x1dints.fits tables. NaNs compare equal to NaNs.

    python bench/compare_products.py OUT_A OUT_B [--json FILE]

Exit code 0 when everything is identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np


def _cmp(a: np.ndarray, b: np.ndarray) -> dict:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return {"identical": False, "why": f"{a.shape} {a.dtype} vs {b.shape} {b.dtype}"}
    if a.dtype.kind == "f":
        same = np.array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}")) or \
            np.array_equal(a, b, equal_nan=True)
    else:
        same = np.array_equal(a, b)
    out = {"identical": bool(same), "n": int(a.size)}
    if not same:
        if a.dtype.kind == "f":
            d = np.abs(a.astype(np.float64) - b.astype(np.float64))
            d = d[np.isfinite(d)]
            out["max_abs_diff"] = float(d.max()) if d.size else None
            out["nan_mismatch"] = int((np.isnan(a) != np.isnan(b)).sum())
        out["n_different"] = int((a != b).sum() - (np.isnan(a) & np.isnan(b)).sum()
                                 if a.dtype.kind == "f" else (a != b).sum())
    return out


def compare(out_a: str, out_b: str) -> dict:
    """{name: comparison} of every product array both folders hold."""
    import zarr
    from astropy.io import fits
    from astropy.table import Table

    res = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ga = zarr.open_group(os.path.join(out_a, "cubes.zarr"), mode="r")
        gb = zarr.open_group(os.path.join(out_b, "cubes.zarr"), mode="r")
        for g in sorted(k for k, _ in ga.groups()):
            for stage in ("rateints", "cleaned", "spectra", "lightcurves"):
                if stage not in ga[g] or stage not in gb[g]:
                    continue
                for name, arr in sorted(ga[g][stage].arrays()):
                    if name in gb[g][stage]:
                        res[f"{g}/{stage}/{name}"] = _cmp(arr[...], gb[g][stage][name][...])
    ta = Table.read(os.path.join(out_a, "whitelight.ecsv"))
    tb = Table.read(os.path.join(out_b, "whitelight.ecsv"))
    for c in ("flux", "flux_error", "dq", "int_mid_BJD_TDB"):
        res[f"whitelight.ecsv/{c}"] = _cmp(np.asarray(ta[c]), np.asarray(tb[c]))
    xa, xb = os.path.join(out_a, "x1dints.fits"), os.path.join(out_b, "x1dints.fits")
    if os.path.isfile(xa) and os.path.isfile(xb):
        with fits.open(xa) as ha, fits.open(xb) as hb:
            for k, h in enumerate(ha):
                if isinstance(h, fits.BinTableHDU) and k < len(hb):
                    for c in h.columns.names:
                        res[f"x1dints.fits[{k}]/{c}"] = _cmp(np.asarray(h.data[c]),
                                                              np.asarray(hb[k].data[c]))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--json")
    args = ap.parse_args()
    res = compare(args.a, args.b)
    bad = {k: v for k, v in res.items() if not v["identical"]}
    print(f"{len(res)} arrays compared, {len(res) - len(bad)} identical")
    for k, v in bad.items():
        print(f"  DIFFERENT {k}: {v}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"a": args.a, "b": args.b, "arrays": res, "all_identical": not bad}, fh, indent=1)
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
