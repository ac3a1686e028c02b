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

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from nirbeam.transforms.transit_model import (
    BOUNDS,
    N_LD,
    TRANSIT_PARAMS,
    FitConfig,
    FitResult,
    batman_module,
    fit_assumptions,
    guess_t0,
    out_of_transit,
    params_object,
    time_averaging_beta,
    transit_duration,
    transit_model,
)

__all__ = [
    "FitConfig",
    "FitResult",
    "TransmissionSpectrum",
    "transit_model",
    "transit_duration",
    "fit_transit",
    "fit_spectroscopic",
    "time_averaging_beta",
    "fit_joint",
    # the model's other public names (nirbeam.transforms.transit_model)
    "TRANSIT_PARAMS", "N_LD", "BOUNDS", "batman_module", "params_object", "guess_t0",
    "out_of_transit", "fit_assumptions",
]
# The light-curve table readers (read_lightcurve_table(s), fit_table) moved to
# nirbeam.sources.lightcurve_tables and write_fit_json to nirbeam.sinks.fit_json: kernels do
# no I/O (import-linter contract kernels-no-io).


def fit_transit(
    time: np.ndarray,
    flux: np.ndarray,
    error: np.ndarray,
    config: FitConfig = FitConfig(),  # noqa: B008 - frozen
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
    t0 = guess_t0(t, f) if config.t0 is None else float(config.t0)
    norm = 1.0
    if config.normalise:
        oot = out_of_transit(t, config, t0)
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
    tp0 = params_object(base, config.limb_dark, nld)
    kw = {}
    if config.supersample_factor > 1 and config.exp_time > 0:
        kw = {"supersample_factor": config.supersample_factor, "exp_time": config.exp_time}
    bm_model = batman_module().TransitModel(tp0, t, **kw)
    dt = t - t_ref

    def unpack(x):
        p = dict(base)
        for i, name in enumerate(free):
            p[name] = x[i]
        c = x[len(free) :]
        return p, c

    def model_parts(x):
        p, c = unpack(x)
        tp = params_object(p, config.limb_dark, nld)
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
    lo = [(BOUNDS.get(n, (-np.inf, np.inf))[0]) for n in free] + [-np.inf] * nfree_base
    hi = [(BOUNDS.get(n, (-np.inf, np.inf))[1]) for n in free] + [np.inf] * nfree_base
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
        assumptions=fit_assumptions(config, base, free, priors, beta),
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
    t0 = guess_t0(np.sort(allt), allf[np.argsort(allt)]) if config.t0 is None else config.t0
    base = {"t0": t0, "per": config.per, "rp": config.rp, "a": config.a, "inc": config.inc,
            "ecc": config.ecc, "w": config.w}
    nld = len(config.u)
    for i, u in enumerate(config.u):
        base[f"u{i + 1}"] = float(u)
    free = tuple(config.free)
    nb = config.baseline_order + 1
    labels = list(data)
    models = {lab: batman_module().TransitModel(params_object(base, config.limb_dark, nld), d[0])
              for lab, d in data.items()}

    def unpack(x):
        p = dict(base)
        for i, n in enumerate(free):
            p[n] = x[i]
        return p

    def parts(x):
        p = unpack(x)
        tp = params_object(p, config.limb_dark, nld)
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
    lo = [BOUNDS.get(n, (-np.inf, np.inf))[0] for n in free] + [-np.inf] * nb * len(labels)
    hi = [BOUNDS.get(n, (-np.inf, np.inf))[1] for n in free] + [np.inf] * nb * len(labels)
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
        "assumptions": fit_assumptions(config, base, free, {}, beta) + [
            f"joint fit of {labels}: transit parameters shared, each curve normalised by its "
            "median with its own baseline; errors scaled by the largest beta"],
    }


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
