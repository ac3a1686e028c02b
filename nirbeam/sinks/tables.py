"""Light-curve tables: ECSV (astropy) and Parquet (pandas), written atomically.

A reader never sees a half-written file: each table goes to a temporary name in the same
folder and is renamed over the old one (on an object store: uploaded in one put; see
:mod:`nirbeam.sinks.fs`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from nirbeam.sinks.fs import atomic_path  # local path or fsspec URL

if TYPE_CHECKING:
    from astropy.table import Table

__all__ = ["write_table", "astropy_table", "write_json", "atomic_path"]


def _clean_meta(meta: Mapping[str, Any]) -> dict:
    out = {}
    for k, v in meta.items():
        if isinstance(v, np.generic):
            v = v.item()
        elif isinstance(v, np.ndarray):
            v = v.tolist()
        out[k] = v
    return out


def astropy_table(columns: Mapping[str, np.ndarray], meta: Mapping[str, Any],
                  units: Mapping[str, str] | None = None,
                  descriptions: Mapping[str, str] | None = None) -> Table:
    """The astropy Table :func:`write_table` writes (columns, cleaned meta, units, descriptions)."""
    # imported here: write_json and atomic_path users (the plot process's fit JSON, the
    # x1dints writer) do not pay astropy.table's import (~0.3 CPU-s)
    from astropy.table import Table

    t = Table({k: np.asarray(v) for k, v in columns.items()}, meta=_clean_meta(meta))
    for k, u in (units or {}).items():
        if k in t.colnames and u:
            t[k].unit = u
    for k, d in (descriptions or {}).items():
        if k in t.colnames:
            t[k].description = d
    return t


def write_table(
    path_stem: str,
    columns: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
    units: Mapping[str, str] | None = None,
    descriptions: Mapping[str, str] | None = None,
    parquet: bool = True,
    ecsv: bool = True,
) -> list[str]:
    """Write ``path_stem.ecsv`` (and/or ``.parquet``) from equal-length columns.

    Columns may be 2-D (a vector per row) for ECSV; Parquet takes 1-D columns.

    Returns
    -------
    list of str
        Paths written.
    """
    t = astropy_table(columns, meta, units, descriptions)
    written = []
    if ecsv:
        with atomic_path(path_stem + ".ecsv") as tmp:
            t.write(tmp, format="ascii.ecsv", overwrite=True)
        written.append(path_stem + ".ecsv")
    if parquet:
        from nirbeam._extras import require

        require("pyarrow")
        df = t.to_pandas()
        df.attrs = {"meta": json.loads(json.dumps(_clean_meta(meta), default=str))}
        with atomic_path(path_stem + ".parquet") as tmp:
            df.to_parquet(tmp, index=False)
        written.append(path_stem + ".parquet")
    return written


def write_json(path: str, obj) -> str:
    """Write JSON atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, default=str)
    return path
