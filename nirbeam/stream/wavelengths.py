"""Where a run's wavelengths come from: only sources a user could give, never invented.

In order of preference (``[extract]`` keys):

1. ``wavelength_map``: a FITS file the user gives, e.g.

   - a jwst ``calints``/``cal`` product or a wavelength map: an image extension named
     ``WAVELENGTH`` (2-D ``(ny, nx)``, 3-D ``(nint, ny, nx)`` or 1-D ``(nx,)``, µm);
     a cut-out smaller than the subarray is placed with its ``SLTSTRT1``/``SLTSTRT2``
     keywords (1-based, subarray pixels);
   - a jwst ``x1dints``/``x1d`` product: ``EXTRACT1D`` table(s) with a ``WAVELENGTH``
     column; the table whose ``DETECTOR`` matches the exposure is used.

   ``{detector}`` in the path is replaced by the detector in lower case (``nrs1``), so
   one config serves NRS1 and NRS2. The special value ``jwst:assign_wcs`` asks for jwst's
   ``assign_wcs`` (optional ``nirbeam[jwst]`` extra and a CRDS cache; see
   :func:`assign_wcs_wavelengths`).
2. ``wavelength_coefficients``: a polynomial in the column index (µm, lowest order first).
3. None of these: the spectral axis is the detector column in **pixels**;
   :data:`PIXEL_SOURCE` says so in every product, and binning by wavelength is refused.

Production code never reads a simulator's truth files: the simulator writes its
wavelengths as a map file and references it from the ``nirbeam.toml`` it writes, as a
user would.
"""

from __future__ import annotations

import os

import numpy as np

from nirbeam.transforms.trace import TraceModel, WavelengthSolution

__all__ = [
    "PIXEL_SOURCE",
    "ASSIGN_WCS",
    "is_pixel_axis",
    "has_wavelength_source",
    "find_wavelengths",
    "load_wavelength_file",
    "wavelengths_from_wcs",
    "assign_wcs_wavelengths",
    "axis_units",
]

#: ``wavelength_source`` when no wavelength source was given (starts with "none").
PIXEL_SOURCE = (
    "none: no wavelength source was given ([extract] wavelength_map or "
    "wavelength_coefficients); the spectral axis is the detector column index in pixels "
    "(0-based), NOT a wavelength"
)
#: ``[extract] wavelength_map`` value that asks for jwst's assign_wcs.
ASSIGN_WCS = "jwst:assign_wcs"


def is_pixel_axis(source: str) -> bool:
    """True when ``source`` says there is no wavelength solution (pixel axis)."""
    return (source or "none").startswith("none")


def axis_units(source: str) -> str:
    """Units of the spectral axis: ``"um"`` with a wavelength solution, else ``"pixel"``."""
    return "pixel" if is_pixel_axis(source) else "um"


def has_wavelength_source(extract_cfg) -> bool:
    """True when the ``[extract]`` config names a wavelength source."""
    return bool(extract_cfg.wavelength_map or extract_cfg.wavelength_coefficients)


def find_wavelengths(plan, cfg, trace: TraceModel, nx: int) -> WavelengthSolution:
    """The exposure's wavelengths from the configured source, or the pixel axis.

    Parameters
    ----------
    plan : ExposurePlan
        Its ``meta`` gives the detector and the image shape.
    cfg : ExtractConfig
    trace : TraceModel
        The values of a 2-D map are taken along the trace.
    nx : int
        Columns of the subarray.
    """
    meta = plan.meta
    if cfg.wavelength_map:
        if cfg.wavelength_map.strip().lower() == ASSIGN_WCS:
            return assign_wcs_wavelengths(plan, trace, nx)
        path = cfg.wavelength_map.replace("{detector}", meta.detector.lower())
        return load_wavelength_file(path, meta.detector, meta.image_shape, trace)
    if cfg.wavelength_coefficients:
        return WavelengthSolution.from_coefficients(cfg.wavelength_coefficients, nx)
    return WavelengthSolution(np.arange(nx, dtype=np.float64), PIXEL_SOURCE)


def _bad(path, why, keyword=None, extension=None):
    from nirbeam.stream.uncal import BadInputError

    return BadInputError(path, why, extension, keyword)


def load_wavelength_file(
    path: str, detector: str, shape: tuple[int, int], trace: TraceModel
) -> WavelengthSolution:
    """Wavelengths per column from a user's FITS file (map, calints or x1dints).

    Parameters
    ----------
    path : str
    detector : str
        ``NRS1``/``NRS2``: a file for another detector is refused.
    shape : (ny, nx)
        The exposure's subarray.
    trace : TraceModel

    Raises
    ------
    BadInputError
        Naming the file, extension and keyword when the file cannot be used.
    """
    from astropy.io import fits

    ny, nx = shape
    if not os.path.isfile(path):
        raise _bad(path, "[extract] wavelength_map: no such file")
    name = os.path.basename(path)
    with fits.open(path) as h:
        pdet = str(h[0].header.get("DETECTOR", "")).strip().upper()
        names = [x.name for x in h]
        if "WAVELENGTH" in names and h["WAVELENGTH"].is_image:
            if pdet and pdet != detector.upper():
                raise _bad(path, f"wavelength map is for DETECTOR={pdet}, the exposure is "
                                 f"{detector}; use {{detector}} in the path", "DETECTOR")
            ext = h["WAVELENGTH"]
            wm = np.asarray(ext.data, np.float64)
            if wm.ndim == 3:
                wm = np.nanmedian(wm, axis=0) if wm.shape[0] > 1 else wm[0]
            if wm.ndim == 1:
                if wm.size != nx:
                    raise _bad(path, f"WAVELENGTH is 1-D of {wm.size} values; expected {nx} "
                                     "(one per column)", "NAXIS1")
                return WavelengthSolution(np.where(wm > 0, wm, np.nan), f"map:{name}")
            wm = _place(path, wm, ext.header, h, (ny, nx))
            return WavelengthSolution.from_map(np.where(wm > 0, wm, np.nan), trace, name=name)
        tabs = [x for x in h if isinstance(x, fits.BinTableHDU) and x.name in ("EXTRACT1D",)]
        tabs = [t for t in tabs if "WAVELENGTH" in [c.upper() for c in t.columns.names]]
        if not tabs:
            raise _bad(path, "neither a WAVELENGTH image extension (calints, wavelength map) "
                             "nor EXTRACT1D tables with a WAVELENGTH column (x1dints)",
                       "WAVELENGTH")
        mine = [t for t in tabs
                if str(t.header.get("DETECTOR", pdet)).strip().upper() in ("", detector.upper())]
        if not mine:
            dets = sorted({str(t.header.get("DETECTOR", "")) for t in tabs})
            raise _bad(path, f"no EXTRACT1D table for DETECTOR={detector} (tables are for "
                             f"{dets}); use {{detector}} in the path", "DETECTOR")
        t = mine[0]
        wl = np.asarray(t.data["WAVELENGTH"], np.float64)
        if wl.ndim == 2:
            with np.errstate(all="ignore"):
                wl = np.nanmedian(np.where(wl > 0, wl, np.nan), axis=0)
        wl = np.where(wl > 0, wl, np.nan)
        if wl.size == nx:
            return WavelengthSolution(wl, f"x1dints:{name}[EXTRACT1D,{t.ver}]")
        x0 = t.header.get("SLTSTRT1", h[0].header.get("SLTSTRT1"))
        if x0 is None:
            raise _bad(path, f"EXTRACT1D WAVELENGTH has {wl.size} values, the subarray {nx} "
                             "columns, and no SLTSTRT1 says where the spectrum starts",
                       "SLTSTRT1")
        out = np.full(nx, np.nan)
        a = int(x0) - 1
        lo, hi = max(0, a), min(nx, a + wl.size)
        out[lo:hi] = wl[lo - a: hi - a]
        return WavelengthSolution(out, f"x1dints:{name}[EXTRACT1D,{t.ver}]")


def _place(path, wm, header, hdul, shape):
    """Put a (cut-out) 2-D map into the subarray frame with SLTSTRT1/2."""
    ny, nx = shape
    if wm.shape == (ny, nx):
        return wm
    hdr_sci = hdul["SCI"].header if "SCI" in [x.name for x in hdul] else {}
    x0 = header.get("SLTSTRT1", hdr_sci.get("SLTSTRT1"))
    y0 = header.get("SLTSTRT2", hdr_sci.get("SLTSTRT2"))
    if x0 is None or y0 is None:
        raise _bad(path, f"WAVELENGTH is {wm.shape}, the subarray {(ny, nx)}, and no "
                         "SLTSTRT1/SLTSTRT2 place the cut-out", "SLTSTRT1")
    out = np.full((ny, nx), np.nan)
    a, b = int(x0) - 1, int(y0) - 1
    my, mx = wm.shape
    ys, xs = slice(max(0, b), min(ny, b + my)), slice(max(0, a), min(nx, a + mx))
    out[ys, xs] = wm[ys.start - b: ys.stop - b, xs.start - a: xs.stop - a]
    return out


def wavelengths_from_wcs(transform, trace: TraceModel, nx: int, *, x_offset: float = 0.0,
                         y_offset: float = 0.0, name: str = "wcs") -> WavelengthSolution:
    """Evaluate a detector -> world transform along the trace.

    Parameters
    ----------
    transform : callable
        ``transform(x, y)`` returning a tuple whose last element is the wavelength in µm
        (a gWCS ``WCS`` object or its ``forward_transform``; jwst's NIRSpec slit WCS
        returns ``(ra, dec, lam)``).
    trace : TraceModel
    nx : int
    x_offset, y_offset : float
        Added to the subarray column/row before evaluation (e.g. a cut-out's origin).
    """
    x = np.arange(nx, dtype=np.float64)
    y = trace.center(x)
    out = transform(x + x_offset, y + y_offset)
    lam = np.asarray(out[-1] if isinstance(out, tuple | list) else out, np.float64)
    lam = np.where(np.isfinite(lam) & (lam > 0), lam, np.nan)
    if not np.isfinite(lam).any():
        raise ValueError(f"{name}: the transform gave no finite wavelength along the trace")
    return WavelengthSolution(lam, f"wcs:{name}")


def assign_wcs_wavelengths(plan, trace: TraceModel, nx: int) -> WavelengthSolution:
    """Wavelengths from jwst's ``assign_wcs`` on the first segment (optional extra).

    Needs ``pip install nirbeam[jwst]`` and a CRDS cache holding the NIRSpec optical-model
    references (``CRDS_PATH``; offline use needs ``CRDS_SERVER_URL`` and a full cache).
    Raises :class:`BadInputError` saying which of them is missing.
    """
    path = plan.segments[0].path
    try:
        from jwst.assign_wcs import AssignWcsStep  # noqa: F401 - availability check
        from stdatamodels.jwst import datamodels
    except ImportError:
        raise _bad(path, "[extract] wavelength_map = 'jwst:assign_wcs' needs the optional "
                         "jwst package: pip install 'nirbeam[jwst]'") from None
    cache = os.environ.get("CRDS_PATH", "")
    if not cache or not os.path.isdir(cache):
        raise _bad(path, "[extract] wavelength_map = 'jwst:assign_wcs' needs a CRDS cache "
                         "with the NIRSpec optical-model references: set CRDS_PATH "
                         f"(now {cache!r})")
    from jwst.assign_wcs import AssignWcsStep

    with datamodels.open(path) as m:
        # assign_wcs wants a rate-like 2-D model; the header is what matters
        from stdatamodels.jwst.datamodels import ImageModel

        img = ImageModel(np.zeros(plan.meta.image_shape, np.float32))
        img.update(m)
        res = AssignWcsStep.call(img)
    slit_wcs = _bots_slit_wcs(res)
    return wavelengths_from_wcs(slit_wcs, trace, nx, name="jwst assign_wcs")


def _bots_slit_wcs(model):  # pragma: no cover - needs jwst and a CRDS cache
    from jwst.assign_wcs import nirspec

    slits = nirspec.get_open_slits(model)
    slit = [s for s in slits if str(s.name).upper().startswith("S1600")][0]
    return nirspec.nrs_wcs_set_input(model, slit.name)
