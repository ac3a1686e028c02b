"""Quick-look plots of one slit of a nod set: its 2-D spectra (each nod, and the first nod
less the background) and its 1-D extractions, every method side by side.

Same conventions as :mod:`nirbeam.sinks.plots` (Agg backend, matplotlib on first use,
atomic writes, figure closed after saving).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from nirbeam.sinks.fs import makedirs
from nirbeam.sinks.plots import _save, plt

__all__ = ["plot_slit"]


def _lims(a):
    v = np.asarray(a, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(v, [2, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def plot_slit(path: str, slit: str, arrays: Mapping[str, np.ndarray],
              spectra: Mapping[str, Mapping], main: str | None) -> str:
    """Write one PNG for a slit.

    Parameters
    ----------
    arrays : the slit's cut-outs (``rate`` (N, ny, nx) DN/s, and a background:
        ``background_joint`` / ``background_masked`` (ny, nx) or ``background_nod``)
    spectra : method -> {"wavelength" um, "flux" uJy, "flux_error", "how"}
    main : the method written to the products (drawn thicker)
    """
    import os

    makedirs(os.path.dirname(str(path)) or ".")
    rate = np.asarray(arrays["rate"], float)
    n = rate.shape[0]
    bkg = arrays.get("background_joint", arrays.get("background_masked"))
    label_b = "joint-fit background" if "background_joint" in arrays else "masked background"
    if bkg is None:
        bkg = np.asarray(arrays["background_nod"])[0]
        label_b = "nod-difference background"
    rows = n + 2
    fig, axes = plt.subplots(rows, 1, figsize=(9, 1.3 * (n + 1) + 3.2),
                             gridspec_kw={"height_ratios": [1] * (n + 1) + [2.4]})
    lo, hi = _lims(rate)
    for k in range(n):
        axes[k].imshow(rate[k], origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="viridis")
        axes[k].set_ylabel(f"nod {k + 1}\nrow", fontsize=7)
        axes[k].tick_params(labelsize=6)
    d = rate[0] - np.asarray(bkg)
    lo2, hi2 = _lims(d)
    axes[n].imshow(d, origin="lower", aspect="auto", vmin=lo2, vmax=hi2, cmap="magma")
    axes[n].set_ylabel("nod 1 -\nbkg", fontsize=7)
    axes[n].set_xlabel(f"column of the cut-out (DN/s; {label_b})", fontsize=7)
    axes[n].tick_params(labelsize=6)
    ax = axes[n + 1]
    for name, sp in spectra.items():
        w = np.asarray(sp["wavelength"], float)
        f = np.asarray(sp["flux"], float)
        ax.plot(w, f, lw=1.4 if name == main else 0.7, label=f"{name}: {sp.get('how', '')}"[:80])
    ax.set_xlabel("wavelength [um]")
    ax.set_ylabel("flux [uJy]")
    if spectra:
        ax.legend(fontsize=6, loc="best")
    else:
        ax.text(0.5, 0.5, "no source extracted in this slit", ha="center", transform=ax.transAxes)
    fig.suptitle(f"{slit}: {n} nods", fontsize=9)
    return str(_save(fig, path))
