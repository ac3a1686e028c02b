"""Reading a run's products: ``nirbeam.open_products(OUTDIR)``.

Gives the zarr cubes as lazy (dask-backed) labelled :class:`xarray.Dataset` objects, the
light-curve tables as :class:`pandas.DataFrame` or :class:`astropy.table.Table`, and
``run.json`` as a dict. Nothing is read before it is asked for; opening a cube reads its
group's consolidated metadata once (or walks the store while a run is still writing).

Example
-------
>>> p = nirbeam.open_products("demo-out/products")          # doctest: +SKIP
>>> p.groups                                                 # doctest: +SKIP
['jw01366004001_04101_00001_nrs1']
>>> rate = p.cube("rateints")            # (integration, y, x), lazily   # doctest: +SKIP
>>> lc = p.lightcurves()                 # (integration, wavelength)      # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import os
import warnings
from functools import cached_property
from typing import Any

from nirbeam.sinks import fs

__all__ = ["Products", "open_products"]

STAGES = ("rateints", "cleaned", "spectra", "lightcurves", "references", "extraction")


class Products:
    """A finished (or running) nirbeam output folder.

    Parameters
    ----------
    outdir : str or os.PathLike
        The ``--out`` folder of ``nirbeam run``: a path or an fsspec URL (``s3://...``).
    """

    def __init__(self, outdir: str | os.PathLike):
        self.outdir = fs.normalize(outdir)
        self.store = fs.join(self.outdir, "cubes.zarr")
        if not fs.isdir(self.outdir):
            raise FileNotFoundError(f"{self.outdir}: no such nirbeam output folder")

    def __repr__(self) -> str:
        return f"Products({self.outdir!r}, groups={self.groups})"

    # --- run.json --------------------------------------------------------------------
    @cached_property
    def run(self) -> dict[str, Any]:
        """``run.json`` as a dict (empty when the run has not finished)."""
        p = fs.join(self.outdir, "run.json")
        if not fs.isfile(p):
            return {}
        return json.loads(fs.read_text(p))

    # --- zarr cubes ------------------------------------------------------------------
    def _root(self):
        import zarr

        if not fs.isdir(self.store):
            raise FileNotFoundError(f"{self.store}: no cube store in {self.outdir}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return zarr.open_group(self.store, mode="r", zarr_format=3)

    @property
    def consolidated(self) -> bool:
        """True when the store carries (valid) consolidated metadata: a finished run."""
        return self._root().metadata.consolidated_metadata is not None

    @property
    def groups(self) -> list[str]:
        """Exposure/detector groups (``<exposure>_<detector>``), sorted."""
        return sorted(name for name, _ in self._root().groups())

    def stages(self, group: str | None = None) -> list[str]:
        """Stages present in a group (``rateints``, ``spectra``, ``lightcurves``...)."""
        g = self._root()[self._group(group)]
        return sorted(name for name, _ in g.groups())

    def attrs(self, group: str | None = None) -> dict[str, Any]:
        """A group's attributes: exposure header keywords, references (sha256), config..."""
        return dict(self._root()[self._group(group)].attrs)

    def _group(self, group: str | None) -> str:
        gs = self.groups
        if group is None:
            if len(gs) != 1:
                raise KeyError(f"{self.store}: name the group, one of {gs}")
            return gs[0]
        if group in gs:
            return group
        hits = [g for g in gs if g.endswith("_" + group.lower())]  # e.g. "nrs1"
        if len(hits) == 1:
            return hits[0]
        raise KeyError(f"{self.store}: no group {group!r}; groups are {gs}")

    def cube(self, stage: str = "rateints", group: str | None = None, *, complete_only: bool = False):
        """One stage of one exposure/detector as a lazy labelled :class:`xarray.Dataset`.

        Parameters
        ----------
        stage : str
            ``rateints``, ``cleaned``, ``spectra``, ``lightcurves``, ``references``,
            ``extraction``.
        group : str, optional
            ``<exposure>_<detector>`` or just the detector (``nrs1``); may be left out when
            the store holds one group.
        complete_only : bool
            Keep only integrations whose ``done`` marker is set (stages with a marker).
        """
        from nirbeam._extras import require

        xr = require("xarray")

        g = self._group(group)
        stages = self.stages(g)
        if stage not in stages:
            raise KeyError(f"{self.store}/{g}: no stage {stage!r}; stages are {stages}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = xr.open_zarr(self.store, group=f"{g}/{stage}", consolidated=self.consolidated)
        if complete_only and "done" in ds:
            ds = ds.isel(integration=ds["done"].values == 1)
        return ds

    def lightcurves(self, group: str | None = None):
        """Spectroscopic and white light curves, (integration, wavelength), as a Dataset."""
        return self.cube("lightcurves", group)

    def spectra(self, group: str | None = None, *, complete_only: bool = True):
        """1-D spectra, (integration, wavelength), as a Dataset."""
        return self.cube("spectra", group, complete_only=complete_only)

    def rateints(self, group: str | None = None, *, complete_only: bool = False):
        """Rate cubes, (integration, y, x), as a lazy Dataset."""
        return self.cube("rateints", group, complete_only=complete_only)

    # --- tables ----------------------------------------------------------------------
    def _table_path(self, stem: str, ext: str) -> str:
        p = fs.join(self.outdir, stem + ext)
        if not fs.isfile(p):
            raise FileNotFoundError(f"{p}: not written (run unfinished, or that product is switched off in the config)")
        return p

    def whitelight(self, kind: str = "pandas"):
        """White-light table: ``kind='pandas'`` (DataFrame) or ``'astropy'`` (Table with units/meta)."""
        return self._table("whitelight", kind)

    def speclc(self, group: str | None = None, kind: str = "pandas"):
        """Spectroscopic light curves.

        ``kind='pandas'``: long format from the Parquet file (one row per integration and
        wavelength bin). ``kind='astropy'``: the ECSV table in wide format (one row per
        integration; ``flux``, ``flux_error``, ``dq`` are vectors over the bins whose centres
        and edges are in ``meta['wavelength_um']`` and ``meta['bin_edges_um']``).
        """
        return self._table(f"speclc_{self._group(group)}", kind)

    def _table(self, stem: str, kind: str):
        if kind == "astropy":
            from astropy.table import Table

            return Table.read(fs.read_text(self._table_path(stem, ".ecsv")),  # data, not a name
                              format="ascii.ecsv")
        if kind != "pandas":
            raise ValueError(f"kind must be 'pandas' or 'astropy', not {kind!r}")
        import pandas as pd

        try:
            return pd.read_parquet(self._table_path(stem, ".parquet"))
        except FileNotFoundError:
            return self._table(stem, "astropy").to_pandas()

    def deadletters(self):
        """``deadletter.jsonl`` as a DataFrame (one row per integration that failed)."""
        import pandas as pd

        p = fs.join(self.outdir, "deadletter.jsonl")
        cols = ["exposure", "detector", "integration", "step", "reason", "source"]
        text = fs.read_text(p) if fs.isfile(p) else ""
        if not text.strip():
            return pd.DataFrame(columns=cols)
        return pd.read_json(io.StringIO(text), lines=True)

    def fit(self, group: str | None = None) -> dict[str, Any]:
        """The quick-look white-light fit (``fit_<group>.json``)."""
        return json.loads(fs.read_text(self._table_path(f"fit_{self._group(group)}", ".json")))

    @property
    def x1dints(self) -> str:
        """Path of the only group's ``<group>_x1dints.fits`` (see :meth:`x1dints_path`)."""
        return self.x1dints_path()

    def x1dints_path(self, group: str | None = None) -> str:
        """Path of ``<exposure>_<det>_x1dints.fits`` (TSOMultiSpecModel: stdatamodels opens it)."""
        return self._table_path(f"{self._group(group)}_x1dints", ".fits")


def open_products(outdir: str | os.PathLike) -> Products:
    """Open a nirbeam output folder for analysis (see :class:`Products`)."""
    return Products(outdir)
