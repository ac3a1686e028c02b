"""Light-curve tables as the input of ``nirbeam fit``: nirbeam's ``whitelight``/``speclc``
tables (ECSV, CSV, Parquet), jwst's ``*_whtlt.ecsv`` and Eureka's ``LCData.h5``/Stage 5
tables, read into plain arrays; :func:`fit_table` reads one and fits it.

Moved from :mod:`nirbeam.transforms.transit` (kernels do no I/O).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nirbeam.transforms.transit import FitConfig, FitResult, fit_transit

__all__ = ["TIME_COLUMNS", "FLUX_COLUMNS", "ERROR_COLUMNS", "DQ_COLUMNS",
           "read_lightcurve_table", "read_lightcurve_tables", "fit_table"]

#: Column names recognised by :func:`read_lightcurve_table` (first match wins).
TIME_COLUMNS = ("int_mid_BJD_TDB", "time", "BJD_TDB", "bjd_tdb", "BJD_TDB_NRS1", "MJD_UTC", "mjd")
FLUX_COLUMNS = ("flux", "lcdata", "whitelight_flux", "whitelight_flux_NRS1", "flux_white")
ERROR_COLUMNS = ("flux_error", "lcerr", "error", "err", "flux_err", "err_white")
DQ_COLUMNS = ("dq", "DQ")


def read_lightcurve_table(
    path: str | Path,
    columns: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read time, flux, error (and a use-mask from ``dq``) from ECSV, CSV or Parquet.

    Parameters
    ----------
    path : str or Path
        ``.ecsv`` (astropy), ``.csv``, ``.parquet`` / ``.pq``.
    columns : dict, optional
        ``{"time": name, "flux": name, "error": name, "dq": name}``; missing keys are
        found among nirbeam's (``int_mid_BJD_TDB``, ``flux``, ``flux_error``, ``dq``) and
        Eureka's (``time``, ``lcdata``, ``lcerr``) names.

    Returns
    -------
    time, flux, error : float64, (n,)
    use : bool, (n,)
        False for rows with nonzero ``dq`` (all True if no dq column).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ecsv":
        from astropy.table import Table

        tab = Table.read(path, format="ascii.ecsv")
        names = list(tab.colnames)

        def col(n):
            return np.asarray(tab[n], dtype=np.float64)
    elif suffix in (".csv", ".parquet", ".pq"):
        import pandas as pd

        df = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        names = list(df.columns)

        def col(n):
            return df[n].to_numpy(dtype=np.float64)
    else:
        raise ValueError(
            f"{path}: unsupported light-curve table type {suffix!r} "
            "(expected .ecsv, .csv or .parquet)"
        )
    columns = dict(columns or {})

    def pick(key, candidates, required=True):
        if key in columns and columns[key] is not None:
            if columns[key] not in names:
                raise KeyError(
                    f"{path}: column {columns[key]!r} (for {key}) not found; columns are {names}"
                )
            return columns[key]
        for c in candidates:
            if c in names:
                return c
        if required:
            raise KeyError(
                f"{path}: no {key} column; expected one of {list(candidates)} "
                f"(or pass columns={{'{key}': name}}); columns are {names}"
            )
        return None

    tname = pick("time", TIME_COLUMNS)
    fname = pick("flux", FLUX_COLUMNS)
    ename = pick("error", ERROR_COLUMNS)
    dname = pick("dq", DQ_COLUMNS, required=False)
    time, flux, err = col(tname), col(fname), col(ename)
    use = np.ones(time.size, bool)
    if dname is not None:
        dq = col(dname)
        use = np.isfinite(dq) & (dq == 0)
    return time, flux, err, use


def _robust_point_scatter(flux: np.ndarray) -> float:
    """White-noise sigma per point from first differences: 1.4826 MAD(diff) / sqrt(2)."""
    d = np.diff(flux[np.isfinite(flux)])
    if d.size < 3:
        return float("nan")
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2))


def read_lightcurve_tables(
    path: str | Path, columns: dict | None = None
) -> dict[str, dict]:
    """Every light curve in a table, one per detector, never mixed.

    Reads

    - nirbeam's ``whitelight.ecsv``/``.parquet`` (a ``detector`` column, and ``exposure``):
      one curve per exposure and detector;
    - jwst calwebb_tso3's ``*_whtlt.ecsv`` (``BJD_TDB_<det>`` or ``MJD_UTC_<det>``,
      ``whitelight_flux_<det>``; older files ``MJD``/``BJD_TDB`` + ``whitelight_flux``):
      one curve per detector; jwst writes no error column, so the error is the robust
      point-to-point scatter (said in the curve's ``notes``) unless nirbeam's
      ``whitelight_flux_error_<det>`` is there;
    - Eureka's Stage 4 ``*_LCData.h5`` (``time``, ``flux_white``, ``err_white``,
      ``mask_white``) and Stage 5 tables (``time``, ``lcdata``, ``lcerr``);
    - any ECSV/CSV/Parquet with the columns of :func:`read_lightcurve_table`.

    Returns
    -------
    dict
        ``label -> {"time", "flux", "error", "use", "notes"}`` (label: ``<exposure>_<det>``,
        ``<det>`` or ``""`` for a single unlabelled curve).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5", ".nc"):
        return _read_eureka_lcdata(path)
    if suffix == ".ecsv":
        from astropy.table import Table

        tab = Table.read(path, format="ascii.ecsv")
        names = list(tab.colnames)

        def col(n):
            return np.asarray(tab[n], dtype=np.float64)

        def scol(n):
            return np.asarray(tab[n]).astype(str)
    elif suffix in (".csv", ".parquet", ".pq"):
        import pandas as pd

        df = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        names = list(df.columns)

        def col(n):
            return df[n].to_numpy(dtype=np.float64)

        def scol(n):
            return df[n].astype(str).to_numpy()
    else:
        raise ValueError(
            f"{path}: unsupported light-curve table type {suffix!r} "
            "(expected .ecsv, .csv, .parquet or Eureka's .h5)"
        )
    dets = [n[len("whitelight_flux_"):] for n in names
            if n.startswith("whitelight_flux_") and not n.startswith("whitelight_flux_error_")]
    if dets and not columns:
        out = {}
        for d in dets:
            tname = next((c for c in (f"BJD_TDB_{d}", f"MJD_UTC_{d}") if c in names), None)
            if tname is None:
                raise KeyError(f"{path}: whitelight_flux_{d} but no BJD_TDB_{d} or MJD_UTC_{d} "
                               f"column; columns are {names}")
            t, f = col(tname), col(f"whitelight_flux_{d}")
            notes = [f"time from {tname}"]
            if f"whitelight_flux_error_{d}" in names:
                e = col(f"whitelight_flux_error_{d}")
            else:
                sig = _robust_point_scatter(f / np.nanmedian(f)) * np.nanmedian(f)
                e = np.full(f.size, sig)
                notes.append("no error column (jwst whtlt): error per point = robust "
                             f"point-to-point scatter {sig:.4g}")
            use = np.isfinite(t) & np.isfinite(f)
            if f"dq_{d}" in names:
                use &= col(f"dq_{d}") == 0
            out[d] = {"time": t, "flux": f, "error": e, "use": use, "notes": notes}
        return out
    if "whitelight_flux" in names and not columns and not any(
            c in names for c in ERROR_COLUMNS):
        tname = next((c for c in ("BJD_TDB", "int_mid_BJD_TDB", "MJD_UTC", "MJD") if c in names),
                     None)
        if tname is None:
            raise KeyError(f"{path}: whitelight_flux but no time column; columns are {names}")
        t, f = col(tname), col("whitelight_flux")
        sig = _robust_point_scatter(f / np.nanmedian(f)) * np.nanmedian(f)
        det = ""
        return {det: {"time": t, "flux": f, "error": np.full(f.size, sig),
                      "use": np.isfinite(t) & np.isfinite(f),
                      "notes": [f"time from {tname}", "no error column (jwst whtlt): error per "
                                f"point = robust point-to-point scatter {sig:.4g}"]}}
    t, f, e, use = read_lightcurve_table(path, columns)
    if "detector" in names:
        det = scol("detector")
        exp = scol("exposure") if "exposure" in names else np.full(det.size, "")
        out = {}
        for key in sorted(set(zip(exp, det, strict=True))):
            sel = (exp == key[0]) & (det == key[1])
            label = f"{key[0]}_{key[1].lower()}" if key[0] else key[1]
            out[label] = {"time": t[sel], "flux": f[sel], "error": e[sel], "use": use[sel],
                          "notes": [f"rows with detector {key[1]}"
                                    + (f" and exposure {key[0]}" if key[0] else "")]}
        return out
    return {"": {"time": t, "flux": f, "error": e, "use": use, "notes": []}}


def _read_eureka_lcdata(path: Path) -> dict[str, dict]:
    """Eureka Stage 4 ``LCData.h5``: the white light (mask True = bad, as Eureka)."""
    try:
        import h5py
    except ImportError:
        raise ValueError(f"{path}: reading Eureka's LCData.h5 needs h5py "
                         "(pip install h5py)") from None
    with h5py.File(path, "r") as h:
        missing = [k for k in ("time", "flux_white", "err_white") if k not in h]
        if missing:
            raise KeyError(f"{path}: not an Eureka LCData file: no {missing}; has {list(h)}")
        t = np.asarray(h["time"][...], np.float64)
        f = np.asarray(h["flux_white"][...], np.float64)
        e = np.asarray(h["err_white"][...], np.float64)
        bad = np.asarray(h["mask_white"][...], bool) if "mask_white" in h else np.zeros(t.size, bool)
    return {"": {"time": t, "flux": f, "error": e, "use": ~bad & np.isfinite(f),
                 "notes": ["Eureka LCData: flux_white, err_white, mask_white (True = bad)"]}}


def fit_table(
    path: str | Path,
    config: FitConfig = FitConfig(),  # noqa: B008 - frozen
    columns: dict | None = None,
) -> FitResult:
    """Read a light-curve table (see :func:`read_lightcurve_table`) and fit it."""
    t, f, e, use = read_lightcurve_table(path, columns)
    return fit_transit(t, f, e, config, mask=use)
