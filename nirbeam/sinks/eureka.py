"""Eureka! exchange: a run's spectra as Stage 3 ``SpecData.h5``, light curves as Stage 4
``LCData.h5``, so Eureka users continue at Stage 4 (binning) or Stage 5 (fitting).

The layout copies Eureka's own files (xarray datasets written to HDF5/netCDF, checked
variable by variable against real Eureka outputs in the tests):

``SpecData.h5`` -- dims ``time``, ``x`` (column), ``y`` (row):
    ``optspec``, ``opterr`` (float32, (time, x)), ``optmask`` (bool, (time, x), True =
    bad), ``stdspec``, ``stdvar`` (box extraction, float32), ``skylev`` (float32, background
    per pixel), ``skyerr`` (float64), ``centroid_y``, ``centroid_sy`` (float64, (time,),
    pixels), ``wave_1d`` (float32, (x,), microns), ``medflux`` (float64, (y, x));
    coordinates ``time`` (BMJD_TDB = BJD_TDB - 2400000.5), ``x``, ``y`` (int64).
``LCData.h5`` -- dims ``wavelength``, ``time``:
    ``data``, ``err``, ``mask``, ``skylev``, ``skyerr`` ((wavelength, time)), ``wave_low``,
    ``wave_hi``, ``wave_mid``, ``wave_err`` ((wavelength,)), ``flux_white``, ``err_white``,
    ``mask_white``, ``skylev_white``, ``skyerr_white``, ``centroid_y``, ``centroid_sy``
    ((time,)); binned as Eureka Stage 4 bins: the mean over the bin's columns, error
    ``sqrt(sum err^2) / N``.

Units: nirbeam's fluxes are DN/s (``flux_units = "DN/s"``), not Eureka's default
electrons; quantities nirbeam does not measure (``skyerr``) are NaN. Eureka bins in
microns, so a run without a wavelength solution is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["spec_dataset", "lc_dataset", "write_eureka", "mean_bins"]

TIME_UNITS = "BMJD_TDB"
WAVE_UNITS = "microns"


def mean_bins(flux: np.ndarray, error: np.ndarray, bad: np.ndarray, wavelength: np.ndarray,
              edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eureka Stage 4 binning: mean of the good columns, ``sqrt(sum err^2) / N``.

    Parameters
    ----------
    flux, error : float, (nint, nx)
    bad : bool, (nint, nx)
    wavelength : float, (nx,), µm
    edges : float, (nbin + 1,), µm; bin k is ``edges[k] <= wavelength < edges[k + 1]``

    Returns
    -------
    mean, err : float64, (nbin, nint); mask : bool, (nbin, nint), True = no good column
    """
    f = np.where(bad, np.nan, np.asarray(flux, np.float64))
    e = np.where(bad, np.nan, np.asarray(error, np.float64))
    nb = edges.size - 1
    nint = f.shape[0]
    mean = np.full((nb, nint), np.nan)
    err = np.full((nb, nint), np.nan)
    wl = np.asarray(wavelength, np.float64)
    for k in range(nb):
        cols = np.isfinite(wl) & (wl >= edges[k]) & (wl < edges[k + 1])
        if not cols.any():
            continue
        fk, ek = f[:, cols], e[:, cols]
        ok = np.isfinite(fk) & np.isfinite(ek)
        n = ok.sum(axis=1)
        with np.errstate(all="ignore"):
            mean[k] = np.where(n > 0, np.where(ok, fk, 0).sum(axis=1) / n, np.nan)
            err[k] = np.where(n > 0, np.sqrt(np.where(ok, ek**2, 0).sum(axis=1)) / n, np.nan)
    return mean, err, ~np.isfinite(mean)


def spec_dataset(*, time, wavelength, optspec, opterr, optmask, stdspec, stdvar, skylev,
                 centroid_y, centroid_sy, medflux, flux_units="DN/s",
                 attrs: Mapping | None = None):
    """Stage 3 ``SpecData`` as an :class:`xarray.Dataset` (see module docstring)."""
    import xarray as xr

    nint, nx = np.shape(optspec)
    ny = np.shape(medflux)[0]
    tx = ("time", "x")
    fl = {"flux_units": flux_units, "time_units": TIME_UNITS}
    ds = xr.Dataset(
        {
            "wave_1d": (("x",), np.asarray(wavelength, np.float32), {"wave_units": WAVE_UNITS}),
            "medflux": (("y", "x"), np.asarray(medflux, np.float64), {"flux_units": flux_units}),
            "skylev": (tx, np.asarray(skylev, np.float32), {"flux_units": flux_units}),
            "skyerr": (tx, np.full((nint, nx), np.nan), {"flux_units": flux_units}),
            "centroid_y": (("time",), np.asarray(centroid_y, np.float64), {"units": "pixels"}),
            "centroid_sy": (("time",), np.asarray(centroid_sy, np.float64), {"units": "pixels"}),
            "stdspec": (tx, np.asarray(stdspec, np.float32), dict(fl)),
            "stdvar": (tx, np.asarray(stdvar, np.float32), dict(fl)),
            "optspec": (tx, np.asarray(optspec, np.float32), {**fl, "wave_units": WAVE_UNITS}),
            "opterr": (tx, np.asarray(opterr, np.float32), {**fl, "wave_units": WAVE_UNITS}),
            "optmask": (tx, np.asarray(optmask, bool),
                        {"flux_units": "None", "time_units": TIME_UNITS,
                         "wave_units": WAVE_UNITS}),
        },
        coords={"x": np.arange(nx, dtype=np.int64), "y": np.arange(ny, dtype=np.int64),
                "time": ("time", np.asarray(time, np.float64), {"time_units": TIME_UNITS})},
        attrs={"data_format": "eureka", **dict(attrs or {})},
    )
    return ds


def lc_dataset(*, time, edges, data, err, mask, skylev, white, white_err, white_mask,
               white_skylev, white_wavelength, centroid_y, centroid_sy, flux_units="DN/s",
               attrs: Mapping | None = None):
    """Stage 4 ``LCData`` as an :class:`xarray.Dataset` (see module docstring)."""
    import xarray as xr

    e = np.asarray(edges, np.float64)
    mid = 0.5 * (e[:-1] + e[1:])
    wt = ("wavelength", "time")
    wv = {"wave_units": WAVE_UNITS}
    full = {"flux_units": flux_units, "wave_units": WAVE_UNITS, "time_units": TIME_UNITS}
    wa = {"wavelength": np.float32(white_wavelength), "wave_units": WAVE_UNITS,
          "time_units": TIME_UNITS}
    nb, nint = np.shape(data)
    ds = xr.Dataset(
        {
            "data": (wt, np.asarray(data, np.float64), dict(full)),
            "err": (wt, np.asarray(err, np.float64), dict(full)),
            "mask": (wt, np.asarray(mask, bool), {**full, "flux_units": "None"}),
            "skylev": (wt, np.asarray(skylev, np.float64), dict(full)),
            "skyerr": (wt, np.full((nb, nint), np.nan), dict(full)),
            "centroid_y": (("time",), np.asarray(centroid_y, np.float64), {"units": "pixels"}),
            "centroid_sy": (("time",), np.asarray(centroid_sy, np.float64), {"units": "pixels"}),
            "wave_low": (("wavelength",), e[:-1], dict(wv)),
            "wave_hi": (("wavelength",), e[1:], dict(wv)),
            "wave_mid": (("wavelength",), mid, dict(wv)),
            "wave_err": (("wavelength",), 0.5 * (e[1:] - e[:-1]), dict(wv)),
            "flux_white": (("time",), np.asarray(white, np.float64), {"units": flux_units, **wa}),
            "err_white": (("time",), np.asarray(white_err, np.float64), {"units": flux_units, **wa}),
            "mask_white": (("time",), np.asarray(white_mask, bool), {"units": "None", **wa}),
            "skylev_white": (("time",), np.asarray(white_skylev, np.float64),
                             {"flux_units": flux_units, **wa}),
            "skyerr_white": (("time",), np.full(nint, np.nan), {"flux_units": flux_units, **wa}),
        },
        coords={"wavelength": ("wavelength", mid, dict(wv)),
                "time": ("time", np.asarray(time, np.float64), {"time_units": TIME_UNITS})},
        attrs={"data_format": "eureka", **dict(attrs or {})},
    )
    return ds


def write_eureka(ds, path: str) -> str:
    """Write a dataset as Eureka does (HDF5 through h5netcdf), atomically."""
    try:
        import h5netcdf  # noqa: F401
    except ImportError:
        raise RuntimeError("nirbeam export eureka needs h5netcdf: pip install h5netcdf "
                           "(or nirbeam[eureka])") from None
    from nirbeam.sinks.fs import atomic_path

    with atomic_path(path) as tmp:  # xarray stores bools as int8 with dtype="bool", as Eureka's
        ds.to_netcdf(tmp, engine="h5netcdf", invalid_netcdf=True)  # bool attrs, as Eureka
    return path
