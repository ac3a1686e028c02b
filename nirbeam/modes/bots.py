"""BOTS (Bright Object Time Series) as a mode plan: one region per detector, found by
fitting; the ensemble is a time window of integrations; the products are the time-series
set.

The region is the whole science array (the S1600A1 slit's spectrum crosses the subarray);
its trace is fitted on the median rate image (``[extract] trace_deg``) unless
``trace_coefficients`` fix it; wavelengths come from ``wavelength_map`` (a per-pixel map),
``wavelength_coefficients`` (a polynomial), or are column indices; the background is the
annulus ``background_region`` pixels from the trace. The store keeps the flat path
``<exposure>_<det>/<stage>`` (one region per detector), so BOTS products and stores are
those of before the mode existed.
"""

from __future__ import annotations

from nirbeam.core.geometry import (
    BackgroundRule,
    BoundingBox,
    EnsembleAxis,
    ModePlan,
    SpectralRegion,
    TraceRule,
    WavelengthRule,
)

__all__ = ["BOTS", "bots_regions", "bots_ensemble", "SLIT"]

SLIT = "S1600A1"


def bots_regions(meta, settings) -> tuple[SpectralRegion, ...]:
    """The one BOTS region of an exposure/detector, from its shape and ``[extract]``."""
    ny, nx = meta.image_shape
    cfg = settings.extract
    if cfg.trace_coefficients:
        trace = TraceRule("fixed", len(cfg.trace_coefficients) - 1, tuple(cfg.trace_coefficients))
    else:
        trace = TraceRule("fit", int(cfg.trace_deg))
    if cfg.wavelength_map:
        wl = WavelengthRule("map", str(cfg.wavelength_map))
    elif cfg.wavelength_coefficients:
        wl = WavelengthRule("polynomial", "[extract] wavelength_coefficients",
                            tuple(cfg.wavelength_coefficients))
    else:
        wl = WavelengthRule("columns", "no wavelength solution configured")
    if cfg.background_region:
        inner, outer = (float(v) for v in cfg.background_region)
        bg = BackgroundRule("annulus", inner, outer)
    else:
        bg = BackgroundRule("none")
    return (SpectralRegion(SLIT, meta.detector, BoundingBox(0, ny, 0, nx), trace, wl, bg),)


def bots_ensemble(settings) -> EnsembleAxis:
    """A time series: the outlier window runs over ``[outliers] window`` integrations."""
    o = settings.outliers
    return EnsembleAxis("time", int(o.window) if o.enabled else 1)


BOTS = ModePlan(
    name="bots",
    exp_types=("NRS_BRIGHTOBJ",),
    find_regions=bots_regions,
    ensemble=bots_ensemble,
    products=("rateints", "cleaned", "spectra", "lightcurves", "whitelight", "speclc",
              "x1dints", "fit", "plots"),
    flat_store=True,
)
