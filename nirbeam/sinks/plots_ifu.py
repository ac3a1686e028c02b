"""IFU plots: the cube's white-light image (with the extraction apertures) and the
extracted spectra. matplotlib (the ``plots`` extra), Agg backend; nothing here computes
science."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_white_light", "plot_spectra"]


def _plt():
    from nirbeam._extras import require

    require("matplotlib", "plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_white_light(path: str, sci, grid, spectra=()) -> str:
    """Mean over wavelength of the cube (MJy/sr), the apertures at the median wavelength."""
    plt = _plt()
    white = np.nanmean(sci, axis=0)
    fig, ax = plt.subplots(figsize=(5.2, 4.5))
    ext = (grid.x0 - grid.cdelt / 2, grid.x0 + grid.cdelt * (grid.nx - 0.5),
           grid.y0 - grid.cdelt / 2, grid.y0 + grid.cdelt * (grid.ny - 0.5))
    im = ax.imshow(white, origin="lower", extent=ext, cmap="magma")
    fig.colorbar(im, ax=ax, label="mean surface brightness (MJy/sr)")
    for s in spectra:
        r = float(np.nanmedian(s["radius"]))
        ax.add_patch(plt.Circle(s["center"], r, fill=False, color="c", lw=1))
        ax.annotate(str(s["id"]), s["center"], color="c", ha="center", va="center")
    ax.set_xlabel("x (along slice, arcsec)")
    ax.set_ylabel("y (across slices, arcsec)")
    ax.set_title("white-light image of the cube")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_spectra(path: str, spectra) -> str:
    """Each source's aperture spectrum (µJy) against wavelength (µm)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for s in spectra:
        ax.plot(s["wavelength"], s["flux"], lw=1, label=f"source {s['id']} ({s['kind']})")
        ax.fill_between(s["wavelength"], s["flux"] - s["flux_error"], s["flux"] + s["flux_error"],
                        alpha=0.3)
    ax.set_xlabel("wavelength (µm)")
    ax.set_ylabel("flux (µJy)")
    ax.legend()
    ax.set_title("extracted spectra (apertures growing with wavelength)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
