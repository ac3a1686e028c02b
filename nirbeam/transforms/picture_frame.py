"""Picture-frame correction of NIRSpec full frames (jwst 3.0 ``picture_frame``).

The "picture frame" (STScI 2025 known issue) is a thermally driven offset that grows
toward the edges of a full frame and changes with time. jwst's step scales a
PICTUREFRAME reference image (a template of the pattern) to each group:

* regions: the *centre* ``[76, 1984)`` in both axes, the *edge* bands ``[4, 75)`` and
  ``[1985, 2043)`` along either axis (the 4-pixel reference border excluded); both
  restricted to background pixels;
* for every group ``g >= 1``: ``d = group_g - group_0``; ``s = (median_c(d) -
  median_e(d)) / (median_c(T) - median_e(T))`` and the correction
  ``s * (T - median_e(T)) + median_e(d)`` is subtracted from group ``g`` (group 0 is
  left as is, so the ramp's slope loses the pattern and the edge level).

Background pixels (:func:`background_mask`): finite, not DO_NOT_USE, outside the given
scene mask (slits, slices), and not more than ``n_sigma`` (2) above the sigma-clipped
(3 sigma) centre of a draft rate image, as jwst's ``clip_to_background`` without its
histogram fit. jwst masks the science regions from the WCS; here the caller passes them
(``scene_mask``; :mod:`nirbeam.core.geometry` regions), or only the clipping acts.

:class:`PictureFrameHook` is the detector1 group hook (after jump, as jwst orders it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nirbeam import dqflags

__all__ = ["region_masks", "background_mask", "picture_frame_correction",
           "correct_picture_frame", "PictureFrameHook", "PictureFrameParams", "CENTER",
           "LOWER_EDGE", "UPPER_EDGE"]

LOWER_EDGE = (4, 75)
UPPER_EDGE = (1985, 2043)
CENTER = (76, 1984)


def region_masks(background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centre, edge) bool masks (ny, nx) of the background pixels in each region."""
    ny, nx = background.shape
    y = np.arange(ny)[:, None]
    x = np.arange(nx)[None, :]

    def band(v, lo_hi):
        return (v >= lo_hi[0]) & (v < lo_hi[1])

    centre = background & band(y, CENTER) & band(x, CENTER)
    inside = band(y, (LOWER_EDGE[0], UPPER_EDGE[1])) & band(x, (LOWER_EDGE[0], UPPER_EDGE[1]))
    edge = background & inside & (band(y, LOWER_EDGE) | band(y, UPPER_EDGE)
                                  | band(x, LOWER_EDGE) | band(x, UPPER_EDGE))
    return centre, edge


def background_mask(rate: np.ndarray, pixeldq: np.ndarray | None = None,
                    scene_mask: np.ndarray | None = None, n_sigma: float = 2.0) -> np.ndarray:
    """bool (ny, nx): pixels fit to measure the background on.

    Parameters
    ----------
    rate : float, (ny, nx), a draft rate (or last-minus-first group) image
    pixeldq : uint32, (ny, nx) or None; DO_NOT_USE pixels are left out
    scene_mask : bool, (ny, nx) or None; True where the scene (slits, sources) is
    n_sigma : float; upper clipping limit above the background centre (0: none)
    """
    from astropy.stats import sigma_clipped_stats

    rate = np.asarray(rate, np.float64)
    ok = np.isfinite(rate) & (rate != 0)
    if pixeldq is not None:
        ok &= (np.asarray(pixeldq, np.uint32) & np.uint32(dqflags.DO_NOT_USE)) == 0
    if scene_mask is not None:
        ok &= ~np.asarray(scene_mask, bool)
    if n_sigma > 0 and ok.any():
        _, med, sig = sigma_clipped_stats(rate[ok], sigma=3.0)
        ok &= rate <= med + n_sigma * sig
    return ok


def picture_frame_correction(groups: np.ndarray, template: np.ndarray,
                             background: np.ndarray) -> np.ndarray | None:
    """The correction of each group, float32 (ngroups, ny, nx) (group 0: zeros), or None
    when a region has no background pixel or the template does not separate them.

    Parameters
    ----------
    groups : float32, (ngroups, ny, nx), DN
    template : float, (ny, nx), the PICTUREFRAME reference
    background : bool, (ny, nx)
    """
    centre, edge = region_masks(background)
    if not centre.any() or not edge.any():
        return None
    t = np.asarray(template, np.float64)
    tc, te = np.nanmedian(t[centre]), np.nanmedian(t[edge])
    if not np.isfinite(tc - te) or tc == te:
        return None
    ng = groups.shape[0]
    out = np.zeros(groups.shape, np.float32)
    g0 = groups[0].astype(np.float64)
    for g in range(1, ng):
        d = groups[g] - g0
        mc, me = np.nanmedian(d[centre]), np.nanmedian(d[edge])
        s = (mc - me) / (tc - te)
        out[g] = (s * (t - te) + me).astype(np.float32)
    return out


def correct_picture_frame(groups: np.ndarray, template: np.ndarray,
                          background: np.ndarray) -> bool:
    """Subtract :func:`picture_frame_correction` from ``groups`` in place, one group at a
    time (no correction cube: a full frame's is 335 MB at 20 groups); False (groups
    unchanged) when it cannot be measured or there is a single group."""
    if groups.shape[0] < 2:
        return False
    centre, edge = region_masks(background)
    if not centre.any() or not edge.any():
        return False
    t = np.asarray(template, np.float64)
    tc, te = np.nanmedian(t[centre]), np.nanmedian(t[edge])
    if not np.isfinite(tc - te) or tc == te:
        return False
    g0 = groups[0].astype(np.float64)
    for g in range(1, groups.shape[0]):
        d = groups[g] - g0
        mc, me = np.nanmedian(d[centre]), np.nanmedian(d[edge])
        s = (mc - me) / (tc - te)
        groups[g] -= (s * (t - te) + me).astype(np.float32)
    return True


@dataclass(frozen=True)
class PictureFrameParams:
    """The picture-frame step (``[detector1.picture_frame]`` in the config).

    Attributes
    ----------
    enabled : bool
        Off by default, as jwst 3.0's ``picture_frame`` step (``skip = True``). On: NIRSpec
        FULL-frame exposures are corrected with the PICTUREFRAME reference of the
        reference folder (a run without one stops); other subarrays are left as they are.
    n_sigma : float
        Background clipping of the draft rate (jwst ``n_sigma``, 2).
    """

    enabled: bool = False
    n_sigma: float = 2.0


@dataclass(frozen=True, eq=False)
class PictureFrameHook:
    """detector1 group hook: the picture-frame correction between jump and ramp fit.

    Attributes
    ----------
    template : float32, (2048, 2048), the PICTUREFRAME reference (DMS frame)
    scene_mask : bool, (2048, 2048) or None; the scene (slits, slices) to leave out
    n_sigma : float; background clipping (jwst 2)
    """

    template: np.ndarray
    scene_mask: np.ndarray | None = None
    n_sigma: float = 2.0
    before_jump = False

    def __call__(self, groups, groupdq, pixeldq):
        """(ngroups, ny, nx) groups -> corrected groups (same array)."""
        if groups.shape[0] < 2 or groups.shape[1:] != self.template.shape:
            return groups
        draft = groups[-1] - groups[0]
        bg = background_mask(draft, pixeldq, self.scene_mask, self.n_sigma)
        correct_picture_frame(groups, self.template, bg)
        return groups
