"""The transit model and the fit's configuration and result: batman transit x polynomial
baseline (:func:`transit_model`), :class:`FitConfig`, :class:`FitResult`, the parameter
bounds and limb-darkening laws, the time-averaging factor ``beta`` and the list of
assumptions a fit reports. The fits themselves are in :mod:`nirbeam.transforms.transit`
(which re-exports every public name here); see its notes for the method.

Kernels only (numpy/scipy/batman): no Beam, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

__all__ = ["TRANSIT_PARAMS", "N_LD", "BOUNDS", "FitConfig", "FitResult", "batman_module",
           "params_object", "transit_model", "transit_duration", "guess_t0",
           "out_of_transit", "fit_assumptions", "time_averaging_beta"]


TRANSIT_PARAMS = ("t0", "per", "rp", "a", "inc", "ecc", "w", "u1", "u2", "u3", "u4")
N_LD = {
    "uniform": 0,
    "linear": 1,
    "quadratic": 2,
    "squareroot": 2,
    "logarithmic": 2,
    "exponential": 2,
    "power2": 2,
    "nonlinear": 4,
}
BOUNDS = {
    "rp": (1e-4, 1.0),
    "a": (1.01, 1e4),
    "inc": (0.0, 90.0),
    "ecc": (0.0, 0.95),
    "w": (-360.0, 360.0),
    "per": (1e-3, 1e5),
    "u1": (-1.0, 2.0),
    "u2": (-1.0, 2.0),
    "u3": (-5.0, 5.0),
    "u4": (-5.0, 5.0),
}


@dataclass(frozen=True)
class FitConfig:
    """Transit-fit configuration (times in the light curve's time unit, days).

    Attributes
    ----------
    per : float or None, days
        Orbital period; required (no default planet): None refuses the fit.
    t0 : float or None
        Mid-transit time; None: the time of the minimum of the median-smoothed curve.
    rp : float
        Rp/R*, starting value.
    a : float
        a/R*.
    inc : float, degrees
    ecc : float
    w : float, degrees
    limb_dark : str
        batman law: "uniform", "linear", "quadratic", "nonlinear", ...
    u : tuple of float
        Limb-darkening coefficients (length per law).
    free : tuple of str
        Free transit parameters among ``t0 per rp a inc ecc w u1..u4``; the rest fixed.
    baseline_order : int
        Polynomial order of the baseline in time (0, 1 or 2...); always free.
    supersample_factor, exp_time : int, float (days)
        batman integration over the exposure (1 / 0: none).
    normalise : bool
        Divide flux and error by the out-of-transit median before fitting.
    spec_ld : 'prior' or 'fixed'
        Limb darkening of the spectroscopic bins: free with Gaussian priors centred on the
        white-light values (``prior``, default) or fixed to them (``fixed``).
    ld_prior_sigma : float
        Width of those priors (floor; the white-light error is used when larger).
    red_noise : bool
        Multiply the errors by the time-averaging beta (correlated noise).
    beta_max_bin : int
        Largest bin (points) in the beta average (default: n // 10, at least 10 bins).
    """

    per: float | None = None
    t0: float | None = None
    rp: float = 0.1
    a: float = 15.0
    inc: float = 89.0
    ecc: float = 0.0
    w: float = 90.0
    limb_dark: str = "quadratic"
    u: tuple[float, ...] = (0.1, 0.2)
    free: tuple[str, ...] = ("t0", "rp", "a", "inc")
    baseline_order: int = 1
    supersample_factor: int = 1
    exp_time: float = 0.0
    normalise: bool = True
    max_nfev: int = 2000
    spec_ld: str = "prior"
    ld_prior_sigma: float = 0.1
    red_noise: bool = True
    beta_max_bin: int = 0

    def __post_init__(self):
        if self.per is not None and not self.per > 0:
            raise ValueError(f"FitConfig.per must be > 0 days, got {self.per}")
        if self.spec_ld not in ("prior", "fixed"):
            raise ValueError(f"FitConfig.spec_ld must be 'prior' or 'fixed', got {self.spec_ld!r}")
        if not self.ld_prior_sigma > 0:
            raise ValueError(f"FitConfig.ld_prior_sigma must be > 0, got {self.ld_prior_sigma}")
        if self.limb_dark not in N_LD:
            raise ValueError(f"FitConfig.limb_dark: unknown law {self.limb_dark!r}")
        if len(self.u) != N_LD[self.limb_dark]:
            raise ValueError(
                f"FitConfig.u: law {self.limb_dark!r} needs {N_LD[self.limb_dark]} "
                f"coefficients, got {len(self.u)}"
            )
        for name in self.free:
            if name not in TRANSIT_PARAMS:
                raise ValueError(f"FitConfig.free: unknown parameter {name!r}")
            if name.startswith("u") and int(name[1]) > len(self.u):
                raise ValueError(f"FitConfig.free: {name} but law has {len(self.u)} coefficients")
        if self.baseline_order < 0:
            raise ValueError("FitConfig.baseline_order must be >= 0")


@dataclass(frozen=True, eq=False)
class FitResult:
    """Outcome of :func:`fit_transit`.

    Attributes
    ----------
    params : dict
        All transit parameters (fitted and fixed) and baseline ``c0..cN``.
    errors : dict
        1-sigma errors of the free parameters (scaled by ``error_scale``).
    free : tuple of str
    chi2, dof, reduced_chi2 : float
    error_scale : float
        ``max(1, sqrt(reduced_chi2)) * beta``, applied to ``errors``.
    beta : float
        Time-averaging red-noise factor (>= 1; 1 when ``red_noise`` is off).
    assumptions : list of str
        What was assumed (fixed values, starting guesses, priors), in plain words.
    priors : dict
        ``name -> (mu, sigma)`` Gaussian priors used.
    rms_ppm : float
        RMS of the normalised residuals (data/model - 1), ppm.
    time, flux, error : float64, (n,)
        The data fitted (normalised if configured; masked rows removed).
    model, transit, baseline : float64, (n,)
        Full model, transit-only model and baseline at ``time``.
    t_ref : float
        Baseline reference time.
    norm : float
        Normalisation factor applied to flux (1 if none).
    success : bool
    message : str
    config : FitConfig
    """

    params: dict
    errors: dict
    free: tuple[str, ...]
    chi2: float
    dof: int
    reduced_chi2: float
    error_scale: float
    rms_ppm: float
    time: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    model: np.ndarray
    transit: np.ndarray
    baseline: np.ndarray
    t_ref: float
    norm: float
    success: bool
    message: str
    config: FitConfig = field(default_factory=FitConfig)
    beta: float = 1.0
    assumptions: list = field(default_factory=list)
    priors: dict = field(default_factory=dict)

    @property
    def residuals(self) -> np.ndarray:
        """data - model (normalised flux units)."""
        return self.flux - self.model

    @property
    def depth(self) -> float:
        """(Rp/R*)^2."""
        return float(self.params["rp"]) ** 2

    @property
    def depth_error(self) -> float:
        """2 rp sigma_rp (NaN if rp fixed)."""
        return 2 * float(self.params["rp"]) * float(self.errors.get("rp", np.nan))

    def to_dict(self) -> dict:
        """JSON-friendly summary (no arrays)."""
        return {
            "params": {k: float(v) for k, v in self.params.items()},
            "errors": {k: float(v) for k, v in self.errors.items()},
            "free": list(self.free),
            "chi2": self.chi2,
            "dof": self.dof,
            "reduced_chi2": self.reduced_chi2,
            "error_scale": self.error_scale,
            "error_note": "1-sigma from (J^T J)^-1, multiplied by sqrt(chi2/dof) when > 1 "
                          "and by the time-averaging beta (correlated noise)",
            "beta": self.beta,
            "assumptions": list(self.assumptions),
            "priors": {k: [float(a), float(b)] for k, (a, b) in self.priors.items()},
            "rms_ppm": self.rms_ppm,
            "depth": self.depth,
            "depth_error": self.depth_error,
            "t_ref": self.t_ref,
            "norm": self.norm,
            "n_points": int(self.time.size),
            "success": self.success,
            "message": self.message,
            "config": {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.config).items()
            },
        }


def batman_module():
    """The ``batman`` package, imported without ``batman.openmp``'s compiler probe.

    batman's ``transitmodel`` imports ``batman.openmp`` at import time, which imports
    ``distutils.ccompiler`` (setuptools' shim, pkg_resources' machinery: ~0.2-1 s) for
    ``openmp.detect()``, called only for ``TransitModel(..., nthreads > 1)``. Before the
    first import a stand-in ``batman.openmp`` is put in ``sys.modules`` whose ``detect``
    loads the real module from batman's own file and calls it, so batman behaves the same
    (``nthreads > 1`` still probes the compiler) and a run with ``nthreads = 1`` (ours)
    never imports distutils.
    """
    import sys

    from nirbeam._extras import require

    if "batman" not in sys.modules and "batman.openmp" not in sys.modules:
        _lazy_batman_openmp()
    bm = require("batman")
    if not hasattr(bm, "openmp") and "batman.openmp" in sys.modules:
        bm.openmp = sys.modules["batman.openmp"]  # as the real import would have set it
    return bm


def _lazy_batman_openmp() -> None:
    """Put the stand-in ``batman.openmp`` (see :func:`batman_module`) in ``sys.modules``."""
    import importlib.util
    import os
    import sys
    import types

    spec = importlib.util.find_spec("batman")  # a top-level find: batman is not imported
    if spec is None or not spec.submodule_search_locations:
        return  # not installed: require() names the extra
    path = os.path.join(list(spec.submodule_search_locations)[0], "openmp.py")
    if not os.path.isfile(path):
        return  # a batman without openmp.py: import it as it is
    stub = types.ModuleType("batman.openmp", "batman.openmp, loaded on first detect()")
    stub.__file__ = path
    stub.__all__ = ["detect"]

    loaded = []

    def real():
        if not loaded:
            s = importlib.util.spec_from_file_location("batman._openmp_probe", path)
            mod = importlib.util.module_from_spec(s)
            s.loader.exec_module(mod)
            loaded.append(mod)
        return loaded[0]

    def detect():
        """Does this compiler support OpenMP (batman.openmp.detect, loaded now)?"""
        return real().detect()

    def __getattr__(name):  # hasfunction and the rest, from the real module
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(real(), name)

    stub.detect = detect
    stub.__getattr__ = __getattr__
    sys.modules["batman.openmp"] = stub


def params_object(p: dict, law: str, nld: int):
    bm = batman_module()
    tp = bm.TransitParams()
    tp.t0 = p["t0"]
    tp.per = p["per"]
    tp.rp = p["rp"]
    tp.a = p["a"]
    tp.inc = p["inc"]
    tp.ecc = p["ecc"]
    tp.w = p["w"]
    tp.limb_dark = law
    tp.u = [p[f"u{i + 1}"] for i in range(nld)]
    return tp


def transit_model(time: np.ndarray, params: dict, limb_dark: str = "quadratic", **kw) -> np.ndarray:
    """batman light curve (relative flux, 1 out of transit).

    Parameters
    ----------
    time : float, (n,), days
    params : dict
        ``t0 per rp a inc ecc w`` and ``u1..`` for the law.
    """
    tp = params_object(params, limb_dark, N_LD[limb_dark])
    m = batman_module().TransitModel(tp, np.asarray(time, np.float64), **kw)
    return m.light_curve(tp)


def transit_duration(per: float, rp: float, a: float, inc: float) -> float:
    """Total duration T14 (circular orbit), days; 0 if no transit."""
    b = a * math.cos(math.radians(inc))
    arg = (1 + rp) ** 2 - b**2
    if arg <= 0:
        return 0.0
    s = math.sqrt(arg) / (a * math.sin(math.radians(inc)))
    return per / math.pi * math.asin(min(s, 1.0))


def guess_t0(time: np.ndarray, flux: np.ndarray) -> float:
    n = max(5, time.size // 50)
    from scipy.ndimage import median_filter

    sm = median_filter(flux, size=n, mode="nearest")
    return float(time[int(np.argmin(sm))])


def out_of_transit(time, config: FitConfig, t0: float) -> np.ndarray:
    dur = transit_duration(config.per, config.rp, config.a, config.inc)
    if dur <= 0:
        dur = 0.1 * (time.max() - time.min())
    phase = (time - t0 + 0.5 * config.per) % config.per - 0.5 * config.per
    return np.abs(phase) > 0.55 * dur


def fit_assumptions(config: FitConfig, base: dict, free, priors, beta) -> list[str]:
    """What the fit took as given, in plain words."""
    out = [f"period fixed at {config.per} d (from the configuration)"]
    for k in ("t0", "rp", "a", "inc", "ecc", "w"):
        if k not in free:
            out.append(f"{k} fixed at {base[k]}")
    if "t0" in free and config.t0 is None:
        out.append(f"t0 started at {base['t0']:.6f} (minimum of the smoothed light curve)")
    nld = len(config.u)
    for i in range(nld):
        k = f"u{i + 1}"
        if k in priors:
            out.append(f"{config.limb_dark} limb darkening {k}: Gaussian prior "
                       f"{priors[k][0]:.4f} +/- {priors[k][1]:.4f}")
        elif k in free:
            out.append(f"{config.limb_dark} limb darkening {k} free, started at {base[k]}")
        else:
            out.append(f"{config.limb_dark} limb darkening {k} fixed at {base[k]}")
    out.append(f"baseline: polynomial of order {config.baseline_order} in time")
    if config.red_noise:
        out.append(f"errors multiplied by the time-averaging beta = {beta:.3f} (correlated "
                   "noise) and by sqrt(chi2/dof) when > 1")
    else:
        out.append("errors: white noise only (red_noise = false), times sqrt(chi2/dof) when > 1")
    return out


def time_averaging_beta(residuals: np.ndarray, max_bin: int = 0, min_bins: int = 10) -> float:
    """Red-noise factor beta from binned residuals (Pont et al. 2006; Winn et al. 2008).

    For bin sizes ``N = 2 .. max_bin`` (default ``n // min_bins``), ``M = n // N`` bins:
    ``beta_N = sigma_N / (sigma_1 / sqrt(N) * sqrt(M / (M - 1)))``; beta is the mean of
    ``beta_N``, floored at 1.

    Parameters
    ----------
    residuals : float, (n,)
        Time-ordered residuals (any unit).
    """
    r = np.asarray(residuals, np.float64)
    r = r[np.isfinite(r)]
    n = r.size
    top = max_bin if max_bin > 0 else n // min_bins
    if n < 2 * min_bins or top < 2:
        return 1.0
    s1 = float(np.std(r))
    if not s1 > 0:
        return 1.0
    betas = []
    for nb in range(2, top + 1):
        m = n // nb
        if m < 2:
            break
        means = r[: m * nb].reshape(m, nb).mean(axis=1)
        expect = s1 / math.sqrt(nb) * math.sqrt(m / (m - 1))
        betas.append(float(np.std(means)) / expect)
    return max(1.0, float(np.mean(betas))) if betas else 1.0
