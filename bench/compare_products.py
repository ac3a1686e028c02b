"""Are two nirbeam output folders' products identical? (bit for bit, then the largest
difference of each array that is not).

Compares, for every exposure/detector group in both stores, every array of every stage
(rateints, cleaned, spectra, lightcurves, extraction, trace, references...); every column
and the metadata (apart from write times and version strings) of ``whitelight.ecsv``, each
``<exposure>_whtlt.ecsv`` and ``speclc_<group>.ecsv``; every column of every
``*_x1dints.fits`` table. NaNs compare equal to NaNs.

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


_VOLATILE_META = ("written", "date", "nirbeam_version", "origin")


def _cmp_meta(a, b) -> dict:
    """Table metadata equal, apart from times of writing and version strings."""
    ka = {k: str(v) for k, v in dict(a).items() if k not in _VOLATILE_META}
    kb = {k: str(v) for k, v in dict(b).items() if k not in _VOLATILE_META}
    diff = sorted(k for k in set(ka) | set(kb) if ka.get(k) != kb.get(k))
    out = {"identical": not diff, "n": len(ka)}
    if diff:
        out["keys_different"] = diff
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
            if g not in gb:
                res[f"{g}"] = {"identical": False, "why": "group missing in b"}
                continue
            # every stage of the group (rateints, cleaned, spectra, lightcurves, extraction,
            # trace, references...), every array both hold
            for stage in sorted(k for k, _ in ga[g].groups()):
                if stage not in gb[g]:
                    res[f"{g}/{stage}"] = {"identical": False, "why": "stage missing in b"}
                    continue
                for name, arr in sorted(ga[g][stage].arrays()):
                    if name in gb[g][stage]:
                        res[f"{g}/{stage}/{name}"] = _cmp(arr[...], gb[g][stage][name][...])
                    else:
                        res[f"{g}/{stage}/{name}"] = {"identical": False, "why": "missing in b"}
    ta = Table.read(os.path.join(out_a, "whitelight.ecsv"))
    tb = Table.read(os.path.join(out_b, "whitelight.ecsv"))
    for c in ta.colnames:
        res[f"whitelight.ecsv/{c}"] = _cmp(np.asarray(ta[c]), np.asarray(tb[c]))
    res["whitelight.ecsv/meta"] = _cmp_meta(ta.meta, tb.meta)
    # calwebb_tso3-style white light and the spectroscopic light curves (wide ECSV)
    names = sorted(n for n in os.listdir(out_a)
                   if n.endswith("_whtlt.ecsv") or (n.startswith("speclc_") and n.endswith(".ecsv")))
    for n in names:
        pb = os.path.join(out_b, n)
        if not os.path.isfile(pb):
            res[n] = {"identical": False, "why": "missing in b"}
            continue
        a, b = Table.read(os.path.join(out_a, n)), Table.read(pb)
        for c in a.colnames:
            res[f"{n}/{c}"] = (_cmp(np.asarray(a[c]), np.asarray(b[c])) if c in b.colnames
                               else {"identical": False, "why": "column missing in b"})
        res[f"{n}/meta"] = _cmp_meta(a.meta, b.meta)
    for n in sorted(n for n in os.listdir(out_a) if n.endswith("x1dints.fits")):
        xa, xb = os.path.join(out_a, n), os.path.join(out_b, n)
        if not os.path.isfile(xb):
            res[n] = {"identical": False, "why": "missing in b"}
            continue
        with fits.open(xa) as ha, fits.open(xb) as hb:
            for k, h in enumerate(ha):
                if isinstance(h, fits.BinTableHDU) and k < len(hb):
                    for c in h.columns.names:
                        res[f"{n}[{k}]/{c}"] = _cmp(np.asarray(h.data[c]),
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
