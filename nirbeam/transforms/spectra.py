"""From rateints to 1-D spectra, one integration (or a block of them) at a time.

Wires the kernels of :mod:`trace`, :mod:`extract`, :mod:`outliers` and :mod:`flicker`
into per-integration functions shared by batch (blocks read from the store) and
streaming (integrations as they arrive). No Beam here: the Beam steps live in
:mod:`nirbeam.stream.pipeline`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from nirbeam import dqflags
from nirbeam.transforms.extract import box_extract, build_profile, optimal_extract
from nirbeam.transforms.flicker import FlickerParams, clean_rate
from nirbeam.transforms.outliers import flag_outliers, nanmedian_axis0
from nirbeam.transforms.trace import TraceModel, WavelengthSolution, find_trace

__all__ = [
    "ExtractionModel",
    "SPECTRUM_ARRAYS",
    "build_extraction_model",
    "extract_integration",
    "flag_block",
]

#: Arrays written per integration in the ``spectra`` stage (all (nx,) per integration).
SPECTRUM_ARRAYS = {
    "flux": np.float64,
    "flux_error": np.float64,
    "flux_var_poisson": np.float64,
    "flux_var_rnoise": np.float64,
    "dq": np.uint32,
    "npixels": np.float64,
    "background": np.float64,
    "box_flux": np.float64,
    "box_flux_error": np.float64,
}

#: Only DO_NOT_USE excludes a pixel: SATURATED or JUMP_DET in a rate DQ mean the ramp fit
#: used the good groups, and the rate is valid (as jwst extract_1d treats them).
BAD_BITS = dqflags.DO_NOT_USE


@dataclass(frozen=True, eq=False)
class ExtractionModel:
    """Everything extraction needs that does not change between integrations.

    Attributes
    ----------
    trace : TraceModel
    wavelength : WavelengthSolution
    profile : float64, (ny, nx)
        Normalised spatial profile for optimal extraction.
    scene_mask : bool, (ny, nx)
        True on background pixels usable for rate-level 1/f cleaning.
    half_width : float
    background_region : tuple (inner, outer) or None
    method : 'optimal' or 'box'
    sigma_clip : float
    """

    trace: TraceModel
    wavelength: WavelengthSolution
    profile: np.ndarray
    scene_mask: np.ndarray
    half_width: float
    background_region: tuple[float, float] | None
    method: str = "optimal"
    sigma_clip: float = 5.0

    def to_arrays(self) -> tuple[dict, dict]:
        """(arrays, attrs) for storing in a zarr group."""
        arrays = {
            "profile": self.profile,
            "scene_mask": self.scene_mask.astype(np.uint8),
            "wavelength": self.wavelength.wavelength,
            "trace_center": self.trace.center(np.arange(self.profile.shape[1])),
        }
        attrs = {
            "trace": {
                "coefficients": list(self.trace.coefficients),
                "width_coefficients": list(self.trace.width_coefficients),
                "x_range": list(self.trace.x_range),
                "rms": self.trace.rms,
                "source": self.trace.source,
            },
            "wavelength_source": self.wavelength.source,
            "half_width": self.half_width,
            "background_region": list(self.background_region) if self.background_region else None,
            "method": self.method,
            "sigma_clip": self.sigma_clip,
        }
        return arrays, attrs

    @classmethod
    def from_arrays(cls, arrays: dict, attrs: dict) -> ExtractionModel:
        """Inverse of :meth:`to_arrays`."""
        t = attrs["trace"]
        trace = TraceModel(
            coefficients=tuple(t["coefficients"]),
            width_coefficients=tuple(t["width_coefficients"]),
            x_range=tuple(t["x_range"]),
            rms=float(t["rms"]),
            source=t["source"],
        )
        bg = attrs.get("background_region")
        return cls(
            trace=trace,
            wavelength=WavelengthSolution(np.asarray(arrays["wavelength"]), attrs["wavelength_source"]),
            profile=np.asarray(arrays["profile"]),
            scene_mask=np.asarray(arrays["scene_mask"]).astype(bool),
            half_width=float(attrs["half_width"]),
            background_region=tuple(bg) if bg else None,
            method=attrs["method"],
            sigma_clip=float(attrs["sigma_clip"]),
        )


def build_extraction_model(
    images: np.ndarray,
    dq: np.ndarray,
    *,
    half_width: float,
    background_region: tuple[float, float] | None,
    trace_deg: int = 2,
    trace: TraceModel | None = None,
    wavelength: WavelengthSolution | None = None,
    method: str = "optimal",
    sigma_clip: float = 5.0,
    flicker: FlickerParams | None = None,
) -> ExtractionModel:
    """Trace, profile and scene mask from a sample of rate images.

    Parameters
    ----------
    images : float32, (n, ny, nx), DN/s
        Rate images sampled over the exposure.
    dq : uint32, (n, ny, nx)
    """
    from nirbeam.transforms.flicker import scene_mask

    images = np.asarray(images, np.float64)
    bad = (np.asarray(dq) & BAD_BITS) != 0
    masked = np.where(bad, np.nan, images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled below
        median = nanmedian_axis0(masked)
    med_dq = np.where(np.all(bad, axis=0), dqflags.DO_NOT_USE, 0).astype(np.uint32)
    median = np.where(np.isfinite(median), median, 0.0)
    if trace is None:
        trace = find_trace(median, med_dq, deg=trace_deg, bad_bits=BAD_BITS)
    ny, nx = median.shape
    if wavelength is None:
        wavelength = WavelengthSolution(np.arange(nx, dtype=np.float64), "none: column index")
    profile = build_profile(images, trace, max(half_width, 4.0 * float(np.max(trace.width(np.arange(nx))))),
                            dq=np.asarray(dq), bad_bits=BAD_BITS,
                            background_region=tuple(background_region) if background_region else None)
    fp = flicker or FlickerParams()
    y = np.arange(ny)[:, None]
    aperture = np.abs(y - trace.center(np.arange(nx))[None, :]) <= half_width + fp.mask_dilate
    mask = scene_mask(median, dq=med_dq, trace_mask=aperture, **fp.mask_kwargs())
    return ExtractionModel(
        trace=trace, wavelength=wavelength, profile=profile, scene_mask=mask,
        half_width=float(half_width),
        background_region=tuple(background_region) if background_region else None,
        method=method, sigma_clip=float(sigma_clip),
    )


def flag_block(sci, err, dq, window: int, n_sigma: float, span=None) -> np.ndarray:
    """Outlier flags along time for a stack (see :func:`outliers.flag_outliers`; ``span``:
    flag only those integrations of it)."""
    return flag_outliers(sci, err, dq, window=window, n_sigma=n_sigma, span=span)


def extract_integration(
    rate: np.ndarray,
    err: np.ndarray,
    dq: np.ndarray,
    var_poisson: np.ndarray,
    var_rnoise: np.ndarray,
    model: ExtractionModel,
    flicker: FlickerParams | None = None,
) -> dict[str, np.ndarray]:
    """Extract one integration (box and optimal), after rate-level 1/f cleaning if asked.

    Parameters
    ----------
    rate, err, var_poisson, var_rnoise : float32, (ny, nx), DN/s and (DN/s)^2
    dq : uint32, (ny, nx)

    Returns
    -------
    dict of (nx,) arrays named as :data:`SPECTRUM_ARRAYS`; ``flux``/``flux_error`` are
    from the configured method, ``box_flux``/``box_flux_error`` always from the box.
    """
    rate = np.asarray(rate, np.float64)
    if flicker is not None and flicker.enabled and flicker.level == "rate":
        rate, _ = clean_rate(rate, model.scene_mask, flicker.method, **flicker.cleaner_kwargs())
        rate = np.asarray(rate, np.float64)
    vp = np.asarray(var_poisson, np.float64)
    vr = np.asarray(var_rnoise, np.float64)
    var = vp + vr
    bad = ~np.isfinite(var) | (var <= 0)
    var = np.where(bad, np.asarray(err, np.float64) ** 2, var)
    box = box_extract(rate, var, dq, model.trace, model.half_width, model.background_region,
                      profile=model.profile, bad_bits=BAD_BITS)
    if model.method == "optimal":
        spec = optimal_extract(rate, var, dq, model.profile, background=box.background,
                               background_var=box.background_var,
                               var_rnoise=vr, var_poisson=vp, sigma_clip=model.sigma_clip,
                               bad_bits=BAD_BITS)
    else:
        spec = box
    # split the variance into Poisson and read-noise parts in the ratio of the aperture
    w = model.profile
    sp = np.nansum(w * w * np.where(np.isfinite(vp), vp, 0), axis=0)
    sr = np.nansum(w * w * np.where(np.isfinite(vr), vr, 0), axis=0)
    frac_p = np.where(sp + sr > 0, sp / np.where(sp + sr > 0, sp + sr, 1), 0.5)
    fe2 = np.asarray(spec.flux_error, np.float64) ** 2
    return {
        "flux": np.asarray(spec.flux, np.float64),
        "flux_error": np.asarray(spec.flux_error, np.float64),
        "flux_var_poisson": fe2 * frac_p,
        "flux_var_rnoise": fe2 * (1 - frac_p),
        "dq": np.asarray(spec.dq, np.uint32),
        "npixels": np.asarray(spec.npixels, np.float64),
        "background": np.asarray(box.background, np.float64),
        "box_flux": np.asarray(box.flux, np.float64),
        "box_flux_error": np.asarray(box.flux_error, np.float64),
    }
