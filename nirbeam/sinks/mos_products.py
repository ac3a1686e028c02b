"""MOS products besides the shared spectrum writers: the 2-D cut-outs of each slitlet in
zarr, and the slitlet plots (nod images, fitted model, residuals, 1-D spectrum, S/N).

``cutouts.zarr`` (zarr format 3): one group per slitlet (``<DETECTOR>_<SLTNAME>``) with
``sci`` float32 (nods, ny, nx) MJy/sr, ``var`` (MJy/sr)^2, ``dq`` uint32, ``wavelength``
(ny, nx) µm, ``background`` (ny, nx) MJy/sr (the part common to all nods), ``model``
(nods, ny, nx) MJy/sr, ``profile`` (nods, ny, nx); group attributes say the units.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["write_cutouts", "plot_slitlet"]

_UNITS = {"sci": "MJy/sr", "var": "(MJy/sr)^2", "dq": "JWST DQ bits", "wavelength": "um",
          "background": "MJy/sr", "model": "MJy/sr", "profile": "fraction of the source per pixel"}


def write_cutouts(path: str, slitlets: dict[str, dict[str, np.ndarray]]) -> str:
    """Write every slitlet's arrays (see the module notes); returns ``path``."""
    import zarr

    root = zarr.open_group(path, mode="w", zarr_format=3)
    for name, arrays in slitlets.items():
        g = root.create_group(name)
        g.attrs["units"] = {k: _UNITS.get(k, "") for k in arrays}
        for k, a in arrays.items():
            a = np.asarray(a)
            z = g.create_array(k, shape=a.shape, dtype=a.dtype, chunks=a.shape)
            z[...] = a
    return path


def plot_slitlet(outdir: str, spectrum, cut: dict, per_nod_ujy, nod_diff_ujy=None) -> list[str]:
    """Two PNGs per slitlet: ``<slit>_2d.png`` (each nod, the model, the residual) and
    ``<slit>_spectrum.png`` (combined and per-nod spectra in µJy, and S/N per element)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(outdir, exist_ok=True)
    name = f"{spectrum.detector}_{spectrum.region}"
    sci, model = np.asarray(cut["sci"]), np.asarray(cut["model"])
    n = sci.shape[0]
    fig, ax = plt.subplots(3, n, figsize=(4 * n, 6), squeeze=False)
    lo, hi = np.nanpercentile(sci, [2, 98])
    res = sci - model
    rl = np.nanpercentile(np.abs(res), 98)
    for k in range(n):
        ax[0, k].imshow(sci[k], origin="lower", aspect="auto", vmin=lo, vmax=hi, cmap="magma")
        ax[0, k].set_title(f"nod {k + 1}: SCI [MJy/sr]", fontsize=8)
        ax[1, k].imshow(sci[k] - cut["background"], origin="lower", aspect="auto",
                        vmin=-rl, vmax=rl, cmap="RdBu_r")
        ax[1, k].set_title("SCI - common background", fontsize=8)
        ax[2, k].imshow(res[k], origin="lower", aspect="auto", vmin=-rl, vmax=rl, cmap="RdBu_r")
        ax[2, k].set_title("residual (data - model)", fontsize=8)
    for a in ax.ravel():
        a.set_xlabel("column", fontsize=7)
        a.set_ylabel("row", fontsize=7)
    fig.suptitle(f"slitlet {spectrum.region} source {spectrum.source_id} ({spectrum.detector})")
    p1 = os.path.join(outdir, f"{name}_2d.png")
    fig.savefig(p1, dpi=72)
    plt.close(fig)
    fig, ax = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    w = spectrum.wavelength
    for k in range(np.asarray(per_nod_ujy).shape[0]):
        ax[0].plot(w, per_nod_ujy[k], lw=0.5, alpha=0.5, label=f"nod {k + 1}")
    if nod_diff_ujy is not None and np.size(nod_diff_ujy) == w.size:
        ax[0].plot(w, nod_diff_ujy, lw=0.7, color="0.5", label="nod difference, box (jwst way)")
    ax[0].plot(w, spectrum.flux, color="k", lw=1.0, label="combined (optimal)")
    ax[0].fill_between(w, spectrum.flux - spectrum.flux_error, spectrum.flux + spectrum.flux_error,
                       color="k", alpha=0.2, lw=0)
    ax[0].set_ylabel("flux [µJy]")
    ax[0].legend(fontsize=7)
    with np.errstate(invalid="ignore", divide="ignore"):
        ax[1].plot(w, spectrum.flux / spectrum.flux_error, lw=0.7)
    ax[1].set_ylabel("S/N per element")
    ax[1].set_xlabel("wavelength [µm]")
    p2 = os.path.join(outdir, f"{name}_spectrum.png")
    fig.savefig(p2, dpi=72)
    plt.close(fig)
    return [p1, p2]
