"""Quick-look transit fit: batman transit x polynomial baseline, by least squares.

Kernels only (numpy/scipy/batman): no Beam imports.

Model: ``F(t) = T(t; t0, per, rp, a, inc, ecc, w, u) * sum_k c_k (t - t_ref)^k`` with ``T``
from ``batman`` and ``t_ref`` the median time. Fitted with
``scipy.optimize.least_squares`` on ``(F - data) / error``.

Uncertainties: ``cov = (J^T J)^-1`` from the Jacobian at the solution. When the reduced
chi-square exceeds 1 the errors are underestimated (excess noise), so every uncertainty is
multiplied by ``sqrt(chi2 / dof)``; below 1 they are left as they are. Correlated (red)
noise is accounted for by the time-averaging factor ``beta`` (Pont, Zucker & Queloz 2006;
Winn et al. 2008): the residuals are binned over ``N`` points for a range of ``N``, the
ratio of their RMS to the white-noise expectation ``sigma_1 / sqrt(N) * sqrt(M / (M - 1))``
is averaged over the bin sizes, and the errors are multiplied by ``max(1, beta)`` too
(``FitResult.error_scale`` is the product). This is a quick look, not a posterior:
parameters near a bound (e.g. inc -> 90) get Jacobian errors that ignore the bound.

Gaussian priors (``priors={"u1": (mu, sigma)}``) enter as extra residuals
``(p - mu) / sigma``. :func:`fit_spectroscopic` fits each bin with the geometry fixed to the
white light and, by default, the limb darkening free with Gaussian priors centred on the
white-light values (``FitConfig.ld_prior_sigma`` wide), so each bin gets its own
coefficients instead of the white light's.

There is no default orbit: ``per`` must come from the configuration (a fit without it is
refused), and :attr:`FitResult.assumptions` lists every value that was not fitted or was
started from a guess.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

__all__ = [
    "FitConfig",
    "FitResult",
    "TransmissionSpectrum",
    "transit_model",
    "transit_duration",
    "fit_transit",
    "read_lightcurve_table",
    "fit_table",
    "write_fit_json",
    "fit_spectroscopic",
    "time_averaging_beta",
    "read_lightcurve_tables",
    "fit_joint",
]

_TRANSIT_PARAMS = ("t0", "per", "rp", "a", "inc", "ecc", "w", "u1", "u2", "u3", "u4")
_N_LD = {
    "uniform": 0,
    "linear": 1,
    "quadratic": 2,
    "squareroot": 2,
    "logarithmic": 2,
    "exponential": 2,
    "power2": 2,
    "nonlinear": 4,
}
_BOUNDS = {
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

#: Column names recognised by :func:`read_lightcurve_table` (first match wins).
TIME_COLUMNS = ("int_mid_BJD_TDB", "time", "BJD_TDB", "bjd_tdb", "BJD_TDB_NRS1", "MJD_UTC", "mjd")
FLUX_COLUMNS = ("flux", "lcdata", "whitelight_flux", "whitelight_flux_NRS1", "flux_white")
ERROR_COLUMNS = ("flux_error", "lcerr", "error", "err", "flux_err", "err_white")
DQ_COLUMNS = ("dq", "DQ")


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
        if self.limb_dark not in _N_LD:
            raise ValueError(f"FitConfig.limb_dark: unknown law {self.limb_dark!r}")
        if len(self.u) != _N_LD[self.limb_dark]:
            raise ValueError(
                f"FitConfig.u: law {self.limb_dark!r} needs {_N_LD[self.limb_dark]} "
                f"coefficients, got {len(self.u)}"
            )
        for name in self.free:
            if name not in _TRANSIT_PARAMS:
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


def _batman():
    from nirbeam._extras import require

    return require("batman")


def _params_obj(p: dict, law: str, nld: int):
    bm = _batman()
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
    tp = _params_obj(params, limb_dark, _N_LD[limb_dark])
    m = _batman().TransitModel(tp, np.asarray(time, np.float64), **kw)
    return m.light_curve(tp)


def transit_duration(per: float, rp: float, a: float, inc: float) -> float:
    """Total duration T14 (circular orbit), days; 0 if no transit."""
    b = a * math.cos(math.radians(inc))
    arg = (1 + rp) ** 2 - b**2
    if arg <= 0:
        return 0.0
    s = math.sqrt(arg) / (a * math.sin(math.radians(inc)))
    return per / math.pi * math.asin(min(s, 1.0))


def _guess_t0(time: np.ndarray, flux: np.ndarray) -> float:
    n = max(5, time.size // 50)
    from scipy.ndimage import median_filter

    sm = median_filter(flux, size=n, mode="nearest")
    return float(time[int(np.argmin(sm))])


def _out_of_transit(time, config: FitConfig, t0: float) -> np.ndarray:
    dur = transit_duration(config.per, config.rp, config.a, config.inc)
    if dur <= 0:
        dur = 0.1 * (time.max() - time.min())
    phase = (time - t0 + 0.5 * config.per) % config.per - 0.5 * config.per
    return np.abs(phase) > 0.55 * dur


def fit_transit(
    time: np.ndarray,
    flux: np.ndarray,
    error: np.ndarray,
    config: FitConfig = FitConfig(),
    *,
    mask: np.ndarray | None = None,
    priors: dict | None = None,
) -> FitResult:
    """Fit a transit + polynomial baseline by least squares.

    Parameters
    ----------
    time : float, (n,), days
    flux, error : float, (n,)
        Any units; normalised by the out-of-transit median when ``config.normalise``.
    config : FitConfig
    mask : bool, (n,), optional
        True = use the point (default: all finite points).
    priors : dict, optional
        ``name -> (mu, sigma)``: Gaussian priors on free transit parameters.

    Returns
    -------
    FitResult

    Raises
    ------
    ValueError
        Without ``config.per`` (no default period), or with too few points.
    """
    from scipy.optimize import least_squares

    if config.per is None:
        raise ValueError(
            "fit: no orbital period: set [fit] per (days) from the planet's ephemeris; "
            "nirbeam has no default planet")
    priors = {k: (float(m), float(sg)) for k, (m, sg) in (priors or {}).items()}
    for k, (_m, sg) in priors.items():
        if k not in config.free:
            raise ValueError(f"fit: prior on {k!r}, which is not free ({list(config.free)})")
        if not sg > 0:
            raise ValueError(f"fit: prior on {k!r} needs sigma > 0, got {sg}")

    t = np.asarray(time, np.float64)
    f = np.asarray(flux, np.float64)
    e = np.asarray(error, np.float64)
    use = np.isfinite(t) & np.isfinite(f) & np.isfinite(e) & (e > 0)
    if mask is not None:
        use &= np.asarray(mask, bool)
    t, f, e = t[use], f[use], e[use]
    order = np.argsort(t)
    t, f, e = t[order], f[order], e[order]
    nfree_base = config.baseline_order + 1
    if t.size <= len(config.free) + nfree_base:
        raise ValueError(f"fit_transit: {t.size} usable points is too few")
    t0 = _guess_t0(t, f) if config.t0 is None else float(config.t0)
    norm = 1.0
    if config.normalise:
        oot = _out_of_transit(t, config, t0)
        norm = float(np.median(f[oot])) if oot.sum() >= 3 else float(np.median(f))
        f = f / norm
        e = e / norm
    t_ref = float(np.median(t))
    base = {
        "t0": t0,
        "per": config.per,
        "rp": config.rp,
        "a": config.a,
        "inc": config.inc,
        "ecc": config.ecc,
        "w": config.w,
    }
    for i, u in enumerate(config.u):
        base[f"u{i + 1}"] = float(u)
    nld = len(config.u)
    free = tuple(config.free)
    tp0 = _params_obj(base, config.limb_dark, nld)
    kw = {}
    if config.supersample_factor > 1 and config.exp_time > 0:
        kw = {"supersample_factor": config.supersample_factor, "exp_time": config.exp_time}
    bm_model = _batman().TransitModel(tp0, t, **kw)
    dt = t - t_ref

    def unpack(x):
        p = dict(base)
        for i, name in enumerate(free):
            p[name] = x[i]
        c = x[len(free) :]
        return p, c

    def model_parts(x):
        p, c = unpack(x)
        tp = _params_obj(p, config.limb_dark, nld)
        tr = bm_model.light_curve(tp)
        bl = np.polynomial.polynomial.polyval(dt, c)
        return tr, bl

    prior_idx = [(free.index(k), m, sg) for k, (m, sg) in priors.items()]

    def resid(x):
        tr, bl = model_parts(x)
        r = (tr * bl - f) / e
        if prior_idx:
            r = np.concatenate([r, [(x[i] - m) / sg for i, m, sg in prior_idx]])
        return r

    x0 = [priors[n][0] if n in priors else base[n] for n in free]
    x0 += [1.0] + [0.0] * config.baseline_order
    lo = [(_BOUNDS.get(n, (-np.inf, np.inf))[0]) for n in free] + [-np.inf] * nfree_base
    hi = [(_BOUNDS.get(n, (-np.inf, np.inf))[1]) for n in free] + [np.inf] * nfree_base
    if "t0" in free:
        i = free.index("t0")
        lo[i], hi[i] = t0 - 0.25 * config.per, t0 + 0.25 * config.per
    x0 = [
        min(max(v, a_ + 1e-9 * max(1, abs(a_))), b_ - 1e-9 * max(1, abs(b_)))
        if np.isfinite(a_) and np.isfinite(b_)
        else v
        for v, a_, b_ in zip(x0, lo, hi, strict=True)
    ]
    xs = [1e-3 if n == "t0" else max(abs(v), 1e-3) * 0.1 for n, v in zip(free, x0, strict=False)]
    xs += [1e-3] * nfree_base
    sol = least_squares(
        resid,
        np.asarray(x0),
        bounds=(lo, hi),
        x_scale=np.asarray(xs),
        max_nfev=config.max_nfev,
        method="trf",
    )
    r = sol.fun[: t.size]
    chi2 = float(np.sum(r**2))
    dof = int(t.size - sol.x.size)
    red = chi2 / dof if dof > 0 else float("nan")
    scale = max(1.0, math.sqrt(red)) if np.isfinite(red) else 1.0
    tr_, bl_ = model_parts(sol.x)
    beta = time_averaging_beta(f / (tr_ * bl_) - 1.0, config.beta_max_bin) \
        if config.red_noise else 1.0
    scale *= beta
    J = sol.jac
    try:
        cov = np.linalg.inv(J.T @ J)
        err = np.sqrt(np.clip(np.diag(cov), 0, None)) * scale
    except np.linalg.LinAlgError:
        err = np.full(sol.x.size, np.nan)
    p, c = unpack(sol.x)
    tr, bl = model_parts(sol.x)
    model = tr * bl
    params = dict(p)
    errors = {}
    for i, name in enumerate(free):
        errors[name] = float(err[i])
    for k in range(nfree_base):
        params[f"c{k}"] = float(c[k])
        errors[f"c{k}"] = float(err[len(free) + k])
    return FitResult(
        params={k: float(v) for k, v in params.items()},
        errors=errors,
        free=free,
        chi2=chi2,
        dof=dof,
        reduced_chi2=red,
        error_scale=scale,
        rms_ppm=float(np.std(f / model - 1.0) * 1e6),
        time=t,
        flux=f,
        error=e,
        model=model,
        transit=tr,
        baseline=bl,
        t_ref=t_ref,
        norm=norm,
        success=bool(sol.success),
        message=str(sol.message),
        config=config,
        beta=float(beta),
        assumptions=_assumptions(config, base, free, priors, beta),
        priors=priors,
    )


def fit_joint(curves: dict, config: FitConfig) -> dict:
    """Fit several light curves (e.g. NRS1 and NRS2) with one shared transit.

    Each curve keeps its own normalisation and polynomial baseline; the transit parameters
    in ``config.free`` are shared. Only on request: detectors are otherwise fitted apart.

    Parameters
    ----------
    curves : dict
        ``label -> (time, flux, error, use)`` (days; any flux unit; use: bool mask).
    config : FitConfig

    Returns
    -------
    dict
        JSON-ready: shared ``params``/``errors``, per-curve ``baselines``, ``chi2``, ``dof``,
        ``beta`` per curve, ``rms_ppm`` per curve, ``assumptions``.
    """
    from scipy.optimize import least_squares

    if config.per is None:
        raise ValueError("fit: no orbital period: set [fit] per (days); nirbeam has no "
                         "default planet")
    data = {}
    for lab, (t, f, e, use) in curves.items():
        t, f, e = (np.asarray(x, np.float64) for x in (t, f, e))
        m = np.isfinite(t) & np.isfinite(f) & np.isfinite(e) & (e > 0) & np.asarray(use, bool)
        o = np.argsort(t[m])
        t, f, e = t[m][o], f[m][o], e[m][o]
        norm = float(np.median(f))
        data[lab] = (t, f / norm, e / norm, norm)
    allt = np.concatenate([d[0] for d in data.values()])
    allf = np.concatenate([d[1] for d in data.values()])
    t0 = _guess_t0(np.sort(allt), allf[np.argsort(allt)]) if config.t0 is None else config.t0
    base = {"t0": t0, "per": config.per, "rp": config.rp, "a": config.a, "inc": config.inc,
            "ecc": config.ecc, "w": config.w}
    nld = len(config.u)
    for i, u in enumerate(config.u):
        base[f"u{i + 1}"] = float(u)
    free = tuple(config.free)
    nb = config.baseline_order + 1
    labels = list(data)
    models = {lab: _batman().TransitModel(_params_obj(base, config.limb_dark, nld), d[0])
              for lab, d in data.items()}

    def unpack(x):
        p = dict(base)
        for i, n in enumerate(free):
            p[n] = x[i]
        return p

    def parts(x):
        p = unpack(x)
        tp = _params_obj(p, config.limb_dark, nld)
        out = {}
        for j, lab in enumerate(labels):
            t = data[lab][0]
            c = x[len(free) + j * nb: len(free) + (j + 1) * nb]
            out[lab] = (models[lab].light_curve(tp),
                        np.polynomial.polynomial.polyval(t - np.median(t), c))
        return out

    def resid(x):
        pr = parts(x)
        return np.concatenate([(pr[lab][0] * pr[lab][1] - data[lab][1]) / data[lab][2]
                               for lab in labels])

    x0 = [base[n] for n in free] + ([1.0] + [0.0] * config.baseline_order) * len(labels)
    lo = [_BOUNDS.get(n, (-np.inf, np.inf))[0] for n in free] + [-np.inf] * nb * len(labels)
    hi = [_BOUNDS.get(n, (-np.inf, np.inf))[1] for n in free] + [np.inf] * nb * len(labels)
    if "t0" in free:
        i = free.index("t0")
        lo[i], hi[i] = t0 - 0.25 * config.per, t0 + 0.25 * config.per
    xs = [1e-3 if n == "t0" else max(abs(v), 1e-3) * 0.1 for n, v in zip(free, x0, strict=False)]
    xs += [1e-3] * nb * len(labels)
    sol = least_squares(resid, np.asarray(x0, float), bounds=(lo, hi), x_scale=np.asarray(xs),
                        max_nfev=config.max_nfev, method="trf")
    r = sol.fun
    chi2 = float(np.sum(r**2))
    dof = int(r.size - sol.x.size)
    red = chi2 / dof if dof > 0 else float("nan")
    pr = parts(sol.x)
    betas = {lab: (time_averaging_beta(data[lab][1] / (pr[lab][0] * pr[lab][1]) - 1.0,
                                       config.beta_max_bin) if config.red_noise else 1.0)
             for lab in labels}
    beta = max(betas.values())
    scale = (max(1.0, math.sqrt(red)) if np.isfinite(red) else 1.0) * beta
    try:
        err = np.sqrt(np.clip(np.diag(np.linalg.inv(sol.jac.T @ sol.jac)), 0, None)) * scale
    except np.linalg.LinAlgError:
        err = np.full(sol.x.size, np.nan)
    p = unpack(sol.x)
    return {
        "joint": True, "curves": labels,
        "params": {k: float(v) for k, v in p.items()},
        "errors": {n: float(err[i]) for i, n in enumerate(free)},
        "baselines": {lab: [float(v) for v in sol.x[len(free) + j * nb: len(free) + (j + 1) * nb]]
                      for j, lab in enumerate(labels)},
        "norm": {lab: data[lab][3] for lab in labels},
        "chi2": chi2, "dof": dof, "reduced_chi2": red, "error_scale": scale,
        "beta": betas,
        "rms_ppm": {lab: float(np.std(data[lab][1] / (pr[lab][0] * pr[lab][1]) - 1) * 1e6)
                    for lab in labels},
        "success": bool(sol.success), "message": str(sol.message),
        "assumptions": _assumptions(config, base, free, {}, beta) + [
            f"joint fit of {labels}: transit parameters shared, each curve normalised by its "
            "median with its own baseline; errors scaled by the largest beta"],
    }


def _assumptions(config: FitConfig, base: dict, free, priors, beta) -> list[str]:
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
    config: FitConfig = FitConfig(),
    columns: dict | None = None,
) -> FitResult:
    """Read a light-curve table (see :func:`read_lightcurve_table`) and fit it."""
    t, f, e, use = read_lightcurve_table(path, columns)
    return fit_transit(t, f, e, config, mask=use)


def write_fit_json(result: FitResult, path: str | Path) -> Path:
    """Write :meth:`FitResult.to_dict` as indented JSON; returns the path."""
    path = Path(path)
    path.write_text(json.dumps(result.to_dict(), indent=2, default=float))
    return path


@dataclass(frozen=True, eq=False)
class TransmissionSpectrum:
    """Per-bin depths from :func:`fit_spectroscopic`.

    Attributes
    ----------
    wavelength : float64, (nbin,), µm
    rp, rp_error : float64, (nbin,)
    depth, depth_error : float64, (nbin,)
        (Rp/R*)^2 and 2 rp sigma_rp.
    reduced_chi2 : float64, (nbin,)
    results : list of FitResult
    """

    wavelength: np.ndarray
    rp: np.ndarray
    rp_error: np.ndarray
    depth: np.ndarray
    depth_error: np.ndarray
    reduced_chi2: np.ndarray
    results: list = field(default_factory=list)

    def limb_darkening(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-bin limb-darkening coefficients and errors, (nbin, nld) each (NaN: none)."""
        nld = max((len(r.config.u) for r in self.results if r is not None), default=0)
        u = np.full((len(self.results), nld), np.nan)
        ue = np.full_like(u, np.nan)
        for k, r in enumerate(self.results):
            if r is None:
                continue
            for i in range(nld):
                u[k, i] = r.params.get(f"u{i + 1}", np.nan)
                ue[k, i] = r.errors.get(f"u{i + 1}", np.nan)
        return u, ue


def fit_spectroscopic(
    time: np.ndarray,
    flux: np.ndarray,
    error: np.ndarray,
    wavelength: np.ndarray,
    white: FitResult,
    *,
    u: Sequence[Sequence[float]] | None = None,
    mask: np.ndarray | None = None,
) -> TransmissionSpectrum:
    """Fit each spectroscopic bin with the geometry fixed to the white-light fit.

    ``t0``, ``a``, ``inc`` (and ``per``, ``ecc``, ``w``) are taken from ``white`` and
    fixed; ``rp`` and the baseline are free. Limb darkening per bin: with
    ``white.config.spec_ld == "prior"`` (default) the coefficients are free with Gaussian
    priors centred on ``u[k]`` or the white-light values, of width ``max(ld_prior_sigma,
    white-light error)``; with ``"fixed"`` they are fixed to those values.

    Parameters
    ----------
    time : float, (nint,)
    flux, error : float, (nint, nbin)
    wavelength : float, (nbin,), µm (or pixels without a wavelength solution)
    white : FitResult
    u : (nbin, nld), optional
        Prior centres (or fixed values) per bin, e.g. from a model atmosphere.
    mask : bool, (nint,) or (nint, nbin), optional
    """
    f = np.asarray(flux, np.float64)
    e = np.asarray(error, np.float64)
    nbin = f.shape[1]
    wc = white.config
    p = white.params
    nld = len(wc.u)
    ld_names = tuple(f"u{i + 1}" for i in range(nld))
    free_ld = wc.spec_ld == "prior" and nld > 0
    rps, rpe, red, res = [], [], [], []
    for k in range(nbin):
        uk = tuple(
            float(v) for v in (u[k] if u is not None else [p[f"u{i + 1}"] for i in range(nld)])
        )
        priors = None
        if free_ld:
            priors = {n: (uk[i], max(wc.ld_prior_sigma,
                                     float(white.errors.get(n, 0.0)) if np.isfinite(
                                         white.errors.get(n, 0.0)) else 0.0))
                      for i, n in enumerate(ld_names)}
        cfg = replace(
            wc,
            t0=p["t0"],
            per=p["per"],
            a=p["a"],
            inc=p["inc"],
            ecc=p["ecc"],
            w=p["w"],
            rp=p["rp"],
            u=uk,
            free=("rp", *ld_names) if free_ld else ("rp",),
        )
        m = None
        if mask is not None:
            mk = np.asarray(mask, bool)
            m = mk[:, k] if mk.ndim == 2 else mk
        if not np.isfinite(f[:, k]).any():
            rps.append(np.nan)
            rpe.append(np.nan)
            red.append(np.nan)
            res.append(None)
            continue
        r = fit_transit(time, f[:, k], e[:, k], cfg, mask=m, priors=priors)
        rps.append(r.params["rp"])
        rpe.append(r.errors["rp"])
        red.append(r.reduced_chi2)
        res.append(r)
    rps = np.asarray(rps)
    rpe = np.asarray(rpe)
    return TransmissionSpectrum(
        wavelength=np.asarray(wavelength, np.float64),
        rp=rps,
        rp_error=rpe,
        depth=rps**2,
        depth_error=2 * rps * rpe,
        reduced_chi2=np.asarray(red),
        results=res,
    )
