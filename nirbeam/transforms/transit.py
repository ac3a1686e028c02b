"""Quick-look transit fit: batman transit x polynomial baseline, by least squares.

Kernels only (numpy/scipy/batman): no Beam imports.

Model: ``F(t) = T(t; t0, per, rp, a, inc, ecc, w, u) * sum_k c_k (t - t_ref)^k`` with ``T``
from ``batman`` and ``t_ref`` the median time. Fitted with
``scipy.optimize.least_squares`` on ``(F - data) / error``.

Uncertainties: ``cov = (J^T J)^-1`` from the Jacobian at the solution. When the reduced
chi-square exceeds 1 the errors are underestimated (correlated/excess noise), so every
uncertainty is multiplied by ``sqrt(chi2 / dof)`` (recorded in ``FitResult.error_scale``);
below 1 they are left as they are. This is a quick look, not a posterior: parameters near
a bound (e.g. inc -> 90) get Jacobian errors that ignore the bound.
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
    per : float, days
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
    """

    per: float = 5.7214742
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

    def __post_init__(self):
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
        ``max(1, sqrt(reduced_chi2))``, applied to ``errors``.
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
            "error_note": "1-sigma from (J^T J)^-1, multiplied by sqrt(chi2/dof) when > 1",
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

    Returns
    -------
    FitResult
    """
    from scipy.optimize import least_squares

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

    def resid(x):
        tr, bl = model_parts(x)
        return (tr * bl - f) / e

    x0 = [base[n] for n in free] + [1.0] + [0.0] * config.baseline_order
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
    r = sol.fun
    chi2 = float(np.sum(r**2))
    dof = int(t.size - sol.x.size)
    red = chi2 / dof if dof > 0 else float("nan")
    scale = max(1.0, math.sqrt(red)) if np.isfinite(red) else 1.0
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
    )


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
    fixed; ``rp`` and the baseline are free; limb darkening from ``u[k]`` or the
    white-light values.

    Parameters
    ----------
    time : float, (nint,)
    flux, error : float, (nint, nbin)
    wavelength : float, (nbin,), µm
    white : FitResult
    u : (nbin, nld), optional
    mask : bool, (nint,) or (nint, nbin), optional
    """
    f = np.asarray(flux, np.float64)
    e = np.asarray(error, np.float64)
    nbin = f.shape[1]
    wc = white.config
    p = white.params
    nld = len(wc.u)
    rps, rpe, red, res = [], [], [], []
    for k in range(nbin):
        uk = tuple(
            float(v) for v in (u[k] if u is not None else [p[f"u{i + 1}"] for i in range(nld)])
        )
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
            free=("rp",),
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
        r = fit_transit(time, f[:, k], e[:, k], cfg, mask=m)
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
