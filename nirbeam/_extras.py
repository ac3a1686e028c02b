"""Optional dependencies: import them where they are used, naming the extra when missing.

The core install (``pip install nirbeam``) reduces exposures and writes the zarr store,
ECSV tables, FITS products and run.json. Plots, the transit fit, Parquet tables, xarray
access, Beam on Dask and S3 each need an extra::

    pip install "nirbeam[plots]"     # matplotlib
    pip install "nirbeam[fit]"       # batman-package
    pip install "nirbeam[parquet]"   # pyarrow
    pip install "nirbeam[xarray]"    # xarray (+ dask.array for lazy reads)
    pip install "nirbeam[dask]"      # dask.distributed, apache-beam[dask]
    pip install "nirbeam[s3]"        # s3fs
    pip install "nirbeam[all]"       # all of the above
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require", "have"]

#: import name -> (extra, what it is for)
EXTRAS: dict[str, tuple[str, str]] = {
    "matplotlib": ("plots", "plots"),
    "batman": ("fit", "the quick-look transit fit"),
    "pyarrow": ("parquet", "Parquet tables"),
    "xarray": ("xarray", "reading products as xarray Datasets"),
    "dask": ("dask", "the dask runner"),
    "distributed": ("dask", "the dask runner"),
    "s3fs": ("s3", "s3:// output folders"),
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str | None = None, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the pip extra.

    Parameters
    ----------
    module : str
        Import name, e.g. ``"matplotlib.pyplot"``.
    extra, purpose : str, optional
        Default from :data:`EXTRAS` by the top-level package name.
    """
    top = module.split(".")[0]
    ex, why = EXTRAS.get(top, (extra or "all", purpose or top))
    extra = extra or ex
    purpose = purpose or why
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} need(s) the optional package {top!r}, which is not installed "
            f"({exc}); install it with: pip install \"nirbeam[{extra}]\""
        ) from None


def have(module: str) -> bool:
    """True when ``module`` can be imported (without raising)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
