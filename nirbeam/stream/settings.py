"""All run settings in one frozen object, built and validated from a config dict.

Config file (TOML) sections and their classes::

    [detector1]   nirbeam.transforms.detector1.Detector1Params (nested per step:
                  [detector1.jump], [detector1.ramp_fit], ...)
    [flicker]     nirbeam.transforms.flicker.FlickerParams   (1/f cleaning)
    [outliers]    OutlierConfig                                 (time-domain outliers)
    [extract]     ExtractConfig                                 (trace, wavelengths, extraction)
    [lightcurve]  LightcurveConfig                              (white light and bins)
    [fit]         nirbeam.transforms.transit.FitConfig          (quick-look transit fit)
    [products]    nirbeam.stream.config.ProductsConfig          (optional products)
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from nirbeam.stream.config import ConfigError, ProductsConfig, build_dataclass, to_jsonable
from nirbeam.stream.wavelengths import has_wavelength_source
from nirbeam.transforms.detector1 import Detector1Params
from nirbeam.transforms.flicker import FlickerParams
from nirbeam.transforms.transit import FitConfig

__all__ = ["Settings", "OutlierConfig", "ExtractConfig", "LightcurveConfig"]


@dataclass(frozen=True)
class OutlierConfig:
    """Per-pixel outlier rejection along time (jwst tso outlier_detection defaults)."""

    enabled: bool = True
    window: int = 25
    n_sigma: float = 5.0

    def validate(self):
        """Range checks."""
        if self.window < 3:
            raise ValueError(f"window must be >= 3 integrations, got {self.window}")
        if self.n_sigma <= 0:
            raise ValueError(f"n_sigma must be > 0, got {self.n_sigma}")


@dataclass(frozen=True)
class ExtractConfig:
    """Trace, wavelengths and 1-D extraction.

    Attributes
    ----------
    method : 'optimal' or 'box'
        Which extraction feeds the light curves (both are written).
    half_width : float
        Aperture half-width in pixels, perpendicular offset from the trace centre.
    background_region : (inner, outer)
        Background pixels lie between these distances (px) from the trace centre;
        ``()`` for no background subtraction.
    trace_deg : int
        Degree of the robust polynomial fit of the trace centre.
    trace_coefficients : tuple
        Trace y_center(x) polynomial (numpy.polyval order, highest power first) from
        the config instead of the data.
    wavelength_coefficients : tuple
        Wavelength (um) per column as a polynomial in the 0-based column x, lowest order
        first (``sum_k c_k x**k``).
    wavelength_map : str
        FITS file giving the wavelengths: a WAVELENGTH image extension (a jwst calints
        product or a wavelength map; the value along the trace is used) or EXTRACT1D
        tables with a WAVELENGTH column (a jwst x1dints product); ``{detector}`` in the
        path becomes ``nrs1``/``nrs2``. ``"jwst:assign_wcs"``: jwst's assign_wcs (optional
        ``nirbeam[jwst]`` extra and a CRDS cache). See :mod:`nirbeam.stream.wavelengths`.
    photom : str
        CRDS NIRSpec fixed-slit PHOTOM reference (FITS): with a wavelength solution the
        x1dints FLUX is in Jy (see :mod:`nirbeam.stream.photom`); otherwise DN/s.
    profile_nints : int
        Integrations sampled (evenly) for the median image, trace and profile.
    sigma_clip : float
        Outlier rejection threshold in the optimal extraction.
    """

    method: str = "optimal"
    half_width: float = 4.0
    background_region: tuple[float, ...] = (8.0, 15.0)
    trace_deg: int = 2
    trace_coefficients: tuple[float, ...] = ()
    wavelength_coefficients: tuple[float, ...] = ()
    wavelength_map: str = ""
    photom: str = ""
    profile_nints: int = 64
    sigma_clip: float = 5.0

    def validate(self):
        """Range checks."""
        if self.method not in ("optimal", "box"):
            raise ValueError(f"method must be 'optimal' or 'box', got {self.method!r}")
        if not self.half_width > 0:
            raise ValueError(f"half_width must be > 0, got {self.half_width}")
        if self.background_region and (
            len(self.background_region) != 2
            or not 0 <= self.background_region[0] < self.background_region[1]
        ):
            raise ValueError(
                f"background_region must be [inner, outer] with 0 <= inner < outer, got "
                f"{list(self.background_region)}"
            )


@dataclass(frozen=True)
class LightcurveConfig:
    """White-light range and spectroscopic binning.

    ``binning``: ``"resolution"`` (constant R, needs wavelengths), ``"edges"`` (µm, needs
    wavelengths), ``"native"`` (one bin per column), ``"columns"`` (``column_width``
    columns per bin), or ``"auto"`` (the default: ``resolution`` when the exposure has a
    wavelength source, ``columns`` when it has none). ``wmin``/``wmax`` are µm and need
    wavelengths too.
    """

    wmin: float | None = None
    wmax: float | None = None
    binning: str = "auto"
    resolution: float = 50.0
    edges: tuple[float, ...] = ()
    column_width: int = 16

    def validate(self):
        """Range checks."""
        if self.binning not in ("auto", "resolution", "edges", "native", "columns"):
            raise ValueError(f"binning must be 'auto', 'resolution', 'edges', 'native' or "
                             f"'columns', got {self.binning!r}")
        if self.column_width < 1:
            raise ValueError(f"column_width must be >= 1, got {self.column_width}")
        if self.binning == "edges" and len(self.edges) < 2:
            raise ValueError("binning = 'edges' needs at least two edges")
        if self.binning == "resolution" and not self.resolution > 0:
            raise ValueError(f"resolution must be > 0, got {self.resolution}")


@dataclass(frozen=True)
class Settings:
    """Everything a run may be configured with; defaults are the documented ones."""

    detector1: Detector1Params = field(default_factory=Detector1Params)
    flicker: FlickerParams = field(default_factory=FlickerParams)
    outliers: OutlierConfig = field(default_factory=OutlierConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    lightcurve: LightcurveConfig = field(default_factory=LightcurveConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    products: ProductsConfig = field(default_factory=ProductsConfig)

    @classmethod
    def from_dict(cls, config: dict[str, Any] | None, where: str = "config") -> Settings:
        """Build from a parsed config file; unknown sections and keys are refused."""
        config = dict(config or {})
        if "fit" in config and "enabled" in config["fit"]:
            raise ConfigError(f"{where}.fit.enabled: use [products] fit = false instead")
        settings = build_dataclass(cls, config, where)
        lc = settings.lightcurve
        if not has_wavelength_source(settings.extract):
            asked = [k for k, bad in (
                (f"binning = {lc.binning!r}", lc.binning in ("resolution", "edges")),
                ("wmin", lc.wmin is not None), ("wmax", lc.wmax is not None)) if bad]
            if asked:
                raise ConfigError(
                    f"{where}.lightcurve: {', '.join(asked)} needs wavelengths, and "
                    f"{where}.extract gives no wavelength source: set [extract] "
                    "wavelength_map (a jwst calints/x1dints or wavelength-map FITS file) or "
                    "wavelength_coefficients, or bin by pixel with binning = 'native' or "
                    "'columns' (and no wmin/wmax)")
        return settings

    def as_json(self) -> dict:
        """All values, as written into run.json and the store attributes."""
        return to_jsonable(self)

    def validate(self):
        """Every range check of every section, before any work starts.

        Raises ValueError naming the key (``section.key``), the value and the allowed range.
        """
        _check_finite(self, "")
        for path, ok, want in _range_rules(self):
            if not ok:
                raise ValueError(f"{path} = {_value(self, path)!r}: expected {want}")
        wm = self.extract.wavelength_map
        if wm and wm != "jwst:assign_wcs":
            # "{detector}" stands for nrs1/nrs2 (nirbeam.stream.wavelengths): at least one file
            paths = ([wm.replace("{detector}", d) for d in ("nrs1", "nrs2")]
                     if "{detector}" in wm else [wm])
            found = [q for q in paths if os.path.isfile(q)]
            if not found:
                raise ValueError(f"extract.wavelength_map = {wm!r}: no such file (expected a "
                                 "FITS file with a WAVELENGTH image extension or EXTRACT1D "
                                 "tables with a WAVELENGTH column)")
            for q in found:
                _check_wavelength_map(q)


def _value(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part.split("[")[0])
    return obj


def _check_finite(obj, where: str) -> None:
    """Refuse NaN and infinities anywhere in the settings (no field means them)."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        here = f"{where}.{f.name}" if where else f.name
        if dataclasses.is_dataclass(v):
            _check_finite(v, here)
            continue
        values = v if isinstance(v, tuple) else (v,)
        for k, x in enumerate(values):
            if isinstance(x, float) and not math.isfinite(x):
                at = f"{here}[{k}]" if isinstance(v, tuple) else here
                raise ValueError(f"{at} = {x!r}: expected a finite number")


def _increasing(v) -> bool:
    return all(b > a for a, b in zip(v, v[1:], strict=False))


def _range_rules(s: Settings):
    """(key, condition, what is expected) for every bounded setting."""
    j, ex, lc, ft, fl = s.detector1.jump, s.extract, s.lightcurve, s.fit, s.flicker
    return [
        ("detector1.jump.rejection_threshold", j.rejection_threshold > 0, "> 0 (sigma)"),
        ("detector1.jump.three_group_rejection_threshold", j.three_group_rejection_threshold > 0,
         "> 0 (sigma)"),
        ("detector1.jump.four_group_rejection_threshold", j.four_group_rejection_threshold > 0,
         "> 0 (sigma)"),
        ("detector1.jump.min_jump_to_flag_neighbors", j.min_jump_to_flag_neighbors >= 0, ">= 0"),
        ("detector1.jump.max_jump_to_flag_neighbors",
         j.max_jump_to_flag_neighbors >= j.min_jump_to_flag_neighbors,
         ">= detector1.jump.min_jump_to_flag_neighbors"),
        ("detector1.jump.minimum_groups", j.minimum_groups >= 1, ">= 1"),
        ("detector1.jump.min_diffs_single_pass", j.min_diffs_single_pass >= 1, ">= 1"),
        ("detector1.saturation.n_pix_grow_sat", 0 <= s.detector1.saturation.n_pix_grow_sat <= 10,
         "0..10 pixels"),
        ("flicker.n_sigma", fl.n_sigma > 0, "> 0"),
        ("outliers.window", s.outliers.window >= 3, ">= 3 integrations"),
        ("outliers.n_sigma", s.outliers.n_sigma > 0, "> 0 (sigma)"),
        ("extract.half_width", 0 < ex.half_width <= 1000, "0 < half_width <= 1000 pixels"),
        ("extract.trace_deg", 0 <= ex.trace_deg <= 10, "0..10"),
        ("extract.profile_nints", ex.profile_nints >= 1, ">= 1 integration"),
        ("extract.sigma_clip", ex.sigma_clip > 0, "> 0 (sigma)"),
        ("lightcurve.wmax",
         lc.wmin is None or lc.wmax is None or lc.wmin < lc.wmax, "> lightcurve.wmin"),
        ("lightcurve.wmin", lc.wmin is None or lc.wmin >= 0, ">= 0 (um)"),
        ("lightcurve.edges", not lc.edges or _increasing(lc.edges),
         "strictly increasing bin edges (um)"),
        ("lightcurve.resolution", lc.resolution > 0, "> 0"),
        ("fit.per", ft.per is None or ft.per > 0, "> 0 days (or unset: no fit)"),
        ("fit.rp", ft.rp > 0, "> 0 (Rp/R*)"),
        ("fit.a", ft.a > 1, "> 1 (a/R*)"),
        ("fit.inc", 0 < ft.inc <= 90, "0 < inc <= 90 degrees"),
        ("fit.ecc", 0 <= ft.ecc < 1, "0 <= ecc < 1"),
        ("fit.supersample_factor", ft.supersample_factor >= 1, ">= 1"),
        ("fit.exp_time", ft.exp_time >= 0, ">= 0 days"),
        ("fit.max_nfev", ft.max_nfev >= 1, ">= 1"),
    ]


def _check_wavelength_map(path: str) -> None:
    """A wavelength file has a 1-3-D WAVELENGTH image (map, calints) or EXTRACT1D tables
    with a WAVELENGTH column (x1dints); the full check per detector is at load time."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=True) as h:
            names = [x.name for x in h]
            if "WAVELENGTH" in names and h["WAVELENGTH"].is_image:
                if h["WAVELENGTH"].header.get("NAXIS", 0) not in (1, 2, 3):
                    raise ValueError(f"extract.wavelength_map = {path!r}: WAVELENGTH is not a "
                                     "1-, 2- or 3-D image")
                return
            tabs = [x for x in h if isinstance(x, fits.BinTableHDU) and x.name == "EXTRACT1D"
                    and "WAVELENGTH" in [c.upper() for c in x.columns.names]]
            if not tabs:
                raise ValueError(f"extract.wavelength_map = {path!r}: no WAVELENGTH image "
                                 f"extension and no EXTRACT1D table with WAVELENGTH (has {names})")
    except OSError as exc:
        raise ValueError(f"extract.wavelength_map = {path!r}: not a readable FITS file ({exc})") from None
