"""The quick-look transit fits of a run and ``nirbeam fit``: white-light fit, spectroscopic
fits (transmission spectrum), the plots made from the products, and the fit command on
a light-curve table.

Moved from :mod:`nirbeam.stream.products` (which re-exports every public name).
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np

from nirbeam.sinks import fs
from nirbeam.stream.product_tables import spectral_axis_words
from nirbeam.stream.wavelengths import is_pixel_axis

__all__ = ["quicklook_fit_config", "fit_and_plot", "plot_all", "fit_command"]

log = logging.getLogger("nirbeam")


def quicklook_fit_config(cfg, time_d: np.ndarray, flux: np.ndarray):
    """The quick-look fit configuration for good white-light points (batch and live).

    ``cfg.t0`` when configured; otherwise the time of the deepest point of the flux
    (normalised by its median) smoothed over ``max(3, n // 50)`` points, or the median time
    when there are too few points to smooth.

    Parameters
    ----------
    cfg : FitConfig
    time_d : float, (n,), days (BJD_TDB - 2400000.5)
    flux : float, (n,), good points only
    """
    from dataclasses import replace

    if cfg.t0 is not None:
        return cfg
    n = flux.size
    f = flux / np.nanmedian(flux)
    k = max(3, n // 50)
    sm = np.convolve(f, np.ones(k) / k, mode="same")
    t0 = float(time_d[np.argmin(sm[k:-k]) + k]) if n > 2 * k else float(np.median(time_d))
    return replace(cfg, t0=t0)


def fit_and_plot(outdir, root, fits_done, settings, wl_sources: dict, *, drawn=None) -> dict:
    """Quick-look white-light and spectroscopic fits of each group; fit and transmission
    JSON files; then the plots. ``wl_sources``: group -> wavelength source; ``drawn``: the
    plots drawn already (:func:`plot_all`)."""
    from nirbeam.sinks.fit_json import write_fit_json
    from nirbeam.sinks.tables import write_json
    from nirbeam.transforms.transit import fit_spectroscopic, fit_transit

    results = {}
    fitted = {}
    for g, (_meta, bjd, wf, we, wdq, lc, _sdq) in sorted(fits_done.items()):
        use = (wdq == 0) & np.isfinite(wf) & np.isfinite(we) & (we > 0)
        if use.sum() < 10:
            results[g] = {"error": "fewer than 10 good white-light points: no fit"}
            continue
        if settings.fit.per is None:
            results[g] = {"error": "no fit: no orbital period given; set [fit] per (days) "
                                   "from the planet's ephemeris (nirbeam has no default planet)"}
            continue
        cfg = quicklook_fit_config(settings.fit, bjd[use], wf[use])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = fit_transit(bjd[use], wf[use], we[use], cfg)
        except Exception as exc:  # noqa: BLE001 - a quick look must not kill the run
            results[g] = {"error": f"white-light fit failed: {type(exc).__name__}: {exc}"}
            continue
        with fs.atomic_path(fs.join(outdir, f"fit_{g}.json")) as tmp:
            write_fit_json(res, tmp)
        entry = {"rp": res.params.get("rp"), "rp_error": res.errors.get("rp"),
                 "rms_ppm": res.rms_ppm, "reduced_chi2": res.reduced_chi2, "beta": res.beta,
                 "success": res.success, "assumptions": res.assumptions}
        try:
            okb = use & np.all(np.isfinite(lc.flux), axis=1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ts = fit_spectroscopic(bjd[okb], lc.flux[okb], lc.error[okb], lc.centers, res)
            u_bin, u_err = ts.limb_darkening()
            source = wl_sources.get(g, "")
            write_json(fs.join(outdir, f"transmission_{g}.json"), {
                ("column_pixel" if is_pixel_axis(source) else "wavelength_um"):
                    ts.wavelength.tolist(),
                "spectral_axis": spectral_axis_words(source),
                "rp": ts.rp.tolist(),
                "rp_error": ts.rp_error.tolist(), "depth": ts.depth.tolist(),
                "depth_error": ts.depth_error.tolist(), "reduced_chi2": ts.reduced_chi2.tolist(),
                "limb_darkening": u_bin.tolist(), "limb_darkening_error": u_err.tolist(),
                "limb_darkening_law": res.config.limb_dark,
                "beta": [r.beta if r is not None else None for r in ts.results],
                "assumptions": (ts.results[0].assumptions if ts.results and ts.results[0]
                                else []),
            })
            entry["nbins_fitted"] = int(np.isfinite(ts.depth).sum())
        except Exception as exc:  # noqa: BLE001
            ts = None
            entry["spectroscopic_error"] = f"{type(exc).__name__}: {exc}"
        results[g] = entry
        fitted[g] = (res, ts, use)
    if settings.products.plots:
        plot_all(outdir, root, fits_done, fitted, settings, drawn=drawn)
    return results


def plot_all(outdir, root, fits_done, fitted, settings, *, drawn=None) -> None:
    """Every plot, from the products just written (:mod:`nirbeam.sinks.diagnostics`);
    ``drawn``: the entries of plots drawn already (a plot process draws
    :data:`~nirbeam.sinks.diagnostics.EARLY_PLOTS` before the light curves are written):
    the others drawn, all listed in ``plots/index.json``."""
    from nirbeam.sinks.diagnostics import PLOT_KINDS, plot_products

    try:
        if drawn is None:
            plot_products(outdir, root)
        else:
            done = {e.kind for e in drawn}
            plot_products(outdir, root, kinds=[k for k in PLOT_KINDS if k not in done],
                          drawn=drawn)
    except Exception as exc:  # noqa: BLE001 - plots must not kill a run
        log.warning("plots failed: %s", exc)



def fit_command(table: str, config_path: str | None, out: str | None,
                joint: bool = False) -> int:
    """``nirbeam fit TABLE``: fit each detector's light curve on its own.

    TABLE: nirbeam's ``whitelight``/``speclc`` tables, jwst's ``*_whtlt.ecsv`` or Eureka's
    ``LCData.h5``/Stage 5 tables (see :func:`nirbeam.sources.lightcurve_tables.read_lightcurve_tables`). Writes
    ``fit_<label>.json`` and ``fit_<label>.png`` per curve (``fit.json``/``fit.png`` for a
    table holding one unlabelled curve). NRS1 and NRS2 are never mixed.
    """
    from nirbeam.sinks import plots
    from nirbeam.sinks.fit_json import write_fit_json
    from nirbeam.sources.lightcurve_tables import read_lightcurve_tables
    from nirbeam.stream.config import ConfigError, build_dataclass, load_config_file
    from nirbeam.stream.uncal import BadInputError
    from nirbeam.transforms.transit import FitConfig, fit_transit

    if not os.path.isfile(table):
        raise BadInputError(table, "no such light-curve table")
    cfg = load_config_file(config_path)
    columns = cfg.pop("columns", None) if isinstance(cfg.get("columns"), dict) else None
    fit_cfg = build_dataclass(FitConfig, cfg.get("fit", {}), "config.fit")
    if fit_cfg.per is None:
        raise ConfigError("nirbeam fit: no orbital period: set [fit] per (days) in --config "
                          "(nirbeam has no default planet)")
    out = out or os.path.dirname(os.path.abspath(table))
    os.makedirs(out, exist_ok=True)
    try:
        curves = read_lightcurve_tables(table, columns)
    except (KeyError, ValueError) as exc:
        raise BadInputError(table, str(exc).strip("'\"")) from None
    if joint:
        from nirbeam.sinks.tables import write_json
        from nirbeam.transforms.transit import fit_joint

        if len(curves) < 2:
            raise ConfigError(f"nirbeam fit --joint: {table} holds {len(curves)} light curve(s); "
                              "a joint fit needs two or more (e.g. NRS1 and NRS2)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fit_joint({k: (c["time"], c["flux"], c["error"], c["use"])
                             for k, c in curves.items()}, fit_cfg)
        write_json(os.path.join(out, "fit_joint.json"), res)
        rp, drp = res["params"]["rp"], res["errors"].get("rp", float("nan"))
        print(f"joint {res['curves']}: Rp/R* = {rp:.5f} +/- {drp:.5f}; chi2/dof "
              f"{res['reduced_chi2']:.3f}")
        print(f"wrote {os.path.join(out, 'fit_joint.json')}")
        return 0
    for label, c in curves.items():
        stem = f"fit_{label}" if label else "fit"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fit_transit(c["time"], c["flux"], c["error"], fit_cfg, mask=c["use"])
        if c["notes"]:
            res.assumptions.extend(f"input: {n}" for n in c["notes"])
        write_fit_json(res, os.path.join(out, f"{stem}.json"))
        plots.plot_fit(res, os.path.join(out, f"{stem}.png"))
        rp, drp = res.params.get("rp"), res.errors.get("rp")
        print(f"{label or 'light curve'}: Rp/R* = {rp:.5f} +/- {drp:.5f}; residual RMS "
              f"{res.rms_ppm:.0f} ppm; chi2/dof {res.reduced_chi2:.3f}; beta {res.beta:.2f}")
        print(f"wrote {os.path.join(out, stem + '.json')} and {stem}.png")
    return 0
