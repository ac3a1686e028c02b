"""IFU cube kernels: point clouds, cube building, outliers across dithers, centroids,
wander correction and aperture extraction. numpy + numba; no Beam, no I/O.

Frames and units
----------------
A detector pixel of an IFU exposure is a *point* of the cloud: its wavelength ``wave``
(µm) and spectral width ``dwave`` (µm), its along-slice coordinate ``alpha`` and
across-slice coordinate ``beta`` (arcsec, slicer frame, from the geometry reference as
jwst's ``assign_wcs`` gives them), the footprint ``dalpha`` x ``dbeta`` (arcsec: the
pixel's along-slice size and the slice width), its surface brightness ``flux`` (MJy/sr)
and variance ``var`` ((MJy/sr)^2). Sky coordinates are those of the cube frame aligned
with the slicer (jwst's ``coord_system='ifualign'``): ``x = alpha - xoffset``,
``y = beta - yoffset`` with the dither's pointing offsets (arcsec).

A :class:`CubeGrid` is the cube's spaxel grid (x, y centres in arcsec, spaxel size
``cdelt``) and its wavelength planes (centres ``wave``, width ``dwave``).

Weightings (:func:`build_plane`)
--------------------------------
``drizzle``
    3-D volume overlap (jwst's default for NIRSpec): a point's weight in a spaxel is
    the area its footprint shares with the spaxel times the fraction of the plane's
    wavelength width its spectral width shares; the spaxel value is the weighted mean.
    Where the dithers cover a plane uniformly, sum(spaxel value x spaxel area) equals
    the mean over exposures of sum(point value x footprint area): the cube conserves
    flux.
``emsm``
    Exponential modified Shepard method (jwst ``weighting='emsm'``): points within the
    region of interest ``roi_spatial`` (arcsec) and ``roi_spectral`` (µm) weigh
    ``exp(-(dx^2 + dy^2) / scalerad^2 - dw^2 / scalerad_w^2)``, distances from the point
    to the spaxel centre.
``nearest``
    Each point goes to the spaxel and plane its centre falls in (a plain mean): the
    resampling without any footprint, kept as the reference the ripple is measured
    against.

Spaxels no point reaches are NaN with weight 0.

Size note: over 600 lines on purpose: point cloud, three weightings, outliers across dithers, centroid and aperture for cubes: kernels that share the cloud and grid types.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

__all__ = [
    "CubeGrid",
    "PointCloud",
    "WEIGHTINGS",
    "point_cloud",
    "concat_clouds",
    "plane_members",
    "build_plane",
    "build_cube",
    "flag_dither_outliers",
    "plane_centroids",
    "smooth_wander",
    "shift_cloud",
    "aperture_radius",
    "aperture_spectrum",
    "circle_fraction",
    "MJYSR_ARCSEC2_TO_UJY",
]

WEIGHTINGS = ("drizzle", "emsm", "nearest")
#: 1 MJy/sr over 1 arcsec^2 in µJy: 1e12 µJy/MJy x (pi/(180*3600))^2 sr/arcsec^2.
MJYSR_ARCSEC2_TO_UJY = 1e12 * (np.pi / (180.0 * 3600.0)) ** 2


@dataclass(frozen=True)
class PointCloud:
    """Detector pixels of one or more exposures as points (see the module notes).

    All arrays float64, (n,), except ``exposure`` int32 (n,): the exposure index.
    """

    wave: np.ndarray
    dwave: np.ndarray
    x: np.ndarray
    y: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    flux: np.ndarray
    var: np.ndarray
    exposure: np.ndarray

    @property
    def size(self) -> int:
        """Number of points."""
        return int(self.wave.size)

    def take(self, idx) -> PointCloud:
        """The points ``idx`` (a slice: views; an index array or boolean mask: copies)."""
        return PointCloud(*(getattr(self, f)[idx] for f in CLOUD_FIELDS))


CLOUD_FIELDS = ("wave", "dwave", "x", "y", "dx", "dy", "flux", "var", "exposure")


@dataclass(frozen=True)
class CubeGrid:
    """The cube's grid: spaxel centres ``x0 + i*cdelt`` (i < nx), ``y0 + j*cdelt``
    (j < ny), arcsec; wavelength plane centres ``wave`` (µm, increasing, uniform step
    ``dwave``)."""

    x0: float
    y0: float
    nx: int
    ny: int
    cdelt: float
    wave0: float
    dwave: float
    nwave: int

    @property
    def wave(self) -> np.ndarray:
        """Plane centres, µm, (nwave,)."""
        return self.wave0 + self.dwave * np.arange(self.nwave)

    @property
    def xc(self) -> np.ndarray:
        """Spaxel centres along x, arcsec, (nx,)."""
        return self.x0 + self.cdelt * np.arange(self.nx)

    @property
    def yc(self) -> np.ndarray:
        """Spaxel centres along y, arcsec, (ny,)."""
        return self.y0 + self.cdelt * np.arange(self.ny)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(nwave, ny, nx)."""
        return (self.nwave, self.ny, self.nx)

    @classmethod
    def covering(cls, cloud: PointCloud, cdelt: float, dwave: float,
                 wave_range: tuple[float, float] | None = None) -> CubeGrid:
        """The grid that covers a cloud's footprints, spaxels of ``cdelt`` arcsec centred
        on whole multiples of ``cdelt``, planes of ``dwave`` µm over ``wave_range`` (default
        the cloud's)."""
        xlo = np.min(cloud.x - cloud.dx / 2)
        xhi = np.max(cloud.x + cloud.dx / 2)
        ylo = np.min(cloud.y - cloud.dy / 2)
        yhi = np.max(cloud.y + cloud.dy / 2)
        i0, i1 = int(np.floor(xlo / cdelt + 0.5)), int(np.ceil(xhi / cdelt - 0.5))
        j0, j1 = int(np.floor(ylo / cdelt + 0.5)), int(np.ceil(yhi / cdelt - 0.5))
        w0, w1 = wave_range if wave_range is not None else (np.min(cloud.wave), np.max(cloud.wave))
        nw = int(np.floor((w1 - w0) / dwave)) + 1
        return cls(i0 * cdelt, j0 * cdelt, i1 - i0 + 1, j1 - j0 + 1, float(cdelt),
                   float(w0), float(dwave), nw)


def point_cloud(flux, var, dq, wave, dwave, alpha, dalpha, beta, dbeta,
                xoffset: float, yoffset: float, exposure: int, bad_bits: int = 1) -> PointCloud:
    """One exposure's calibrated image as a point cloud.

    Parameters
    ----------
    flux, var : float (ny, nx)
        Surface brightness, MJy/sr, and its variance.
    dq : uint32 (ny, nx)
        Pixels with any of ``bad_bits`` are left out.
    wave, dwave : float (ny, nx)
        Wavelength and spectral width of each pixel, µm; NaN off the slices (a pixel
        with either NaN is left out).
    alpha, dalpha, beta, dbeta : float (ny, nx)
        Along-slice / across-slice coordinate and footprint size, arcsec.
    xoffset, yoffset : float
        The exposure's pointing offset in the slicer frame, arcsec.
    exposure : int
        Index stored with the points.
    """
    good = (np.isfinite(flux) & np.isfinite(var) & np.isfinite(wave) & np.isfinite(dwave)
            & np.isfinite(alpha)
            & np.isfinite(beta) & ((np.asarray(dq).astype(np.uint32) & np.uint32(bad_bits)) == 0))
    n = int(good.sum())
    f64 = np.float64
    return PointCloud(
        wave=np.asarray(wave, f64)[good], dwave=np.asarray(dwave, f64)[good],
        x=np.asarray(alpha, f64)[good] - xoffset, y=np.asarray(beta, f64)[good] - yoffset,
        dx=np.asarray(dalpha, f64)[good], dy=np.asarray(dbeta, f64)[good],
        flux=np.asarray(flux, f64)[good], var=np.asarray(var, f64)[good],
        exposure=np.full(n, exposure, np.int32))


def concat_clouds(clouds) -> PointCloud:
    """Points of several clouds, sorted by wavelength."""
    clouds = list(clouds)
    cat = PointCloud(*(np.concatenate([getattr(c, f) for c in clouds]) for f in CLOUD_FIELDS))
    return cat.take(np.argsort(cat.wave, kind="stable"))


def spectral_reach(grid: CubeGrid, weighting: str, roi_spectral: float, max_dwave: float) -> float:
    if weighting == "drizzle":
        return 0.5 * (grid.dwave + max_dwave)
    if weighting == "emsm":
        return roi_spectral
    return 0.5 * grid.dwave


def plane_members(cloud: PointCloud, grid: CubeGrid, k0: int, k1: int, weighting: str,
                  roi_spectral: float | None = None, max_dwave: float | None = None) -> slice:
    """The points that can reach planes ``k0..k1-1`` (a wavelength-sorted cloud: one
    contiguous range, found by bisection), as a slice (``cloud.take`` gives views).
    ``max_dwave``: the cloud's largest spectral width (found when not given)."""
    roi_w = grid.dwave if roi_spectral is None else roi_spectral
    if max_dwave is None:
        max_dwave = float(np.max(cloud.dwave)) if cloud.size else 0.0
    reach = spectral_reach(grid, weighting, roi_w, max_dwave)
    w = grid.wave
    lo = int(np.searchsorted(cloud.wave, w[k0] - reach, side="left"))
    hi = int(np.searchsorted(cloud.wave, w[k1 - 1] + reach, side="right"))
    return slice(lo, hi)


@numba.njit(cache=True)
def _overlap(a0, a1, b0, b1):  # pragma: no cover - compiled
    v = min(a1, b1) - max(a0, b0)
    return v if v > 0.0 else 0.0


@numba.njit(cache=True)
def _plane_drizzle(wave, dwave, x, y, dx, dy, flux, var, wc, dw, x0, y0, cdelt, nx, ny,
                   num, wsum, vsum):  # pragma: no cover - compiled
    w0 = wc - 0.5 * dw
    w1 = wc + 0.5 * dw
    for p in range(wave.size):
        fw = _overlap(wave[p] - 0.5 * dwave[p], wave[p] + 0.5 * dwave[p], w0, w1) / dw
        if fw <= 0.0:
            continue
        xa = x[p] - 0.5 * dx[p]
        xb = x[p] + 0.5 * dx[p]
        ya = y[p] - 0.5 * dy[p]
        yb = y[p] + 0.5 * dy[p]
        i0 = max(int(np.floor((xa - x0) / cdelt + 0.5)), 0)
        i1 = min(int(np.floor((xb - x0) / cdelt + 0.5)), nx - 1)
        j0 = max(int(np.floor((ya - y0) / cdelt + 0.5)), 0)
        j1 = min(int(np.floor((yb - y0) / cdelt + 0.5)), ny - 1)
        for j in range(j0, j1 + 1):
            yc = y0 + j * cdelt
            oy = _overlap(ya, yb, yc - 0.5 * cdelt, yc + 0.5 * cdelt)
            if oy <= 0.0:
                continue
            for i in range(i0, i1 + 1):
                xc = x0 + i * cdelt
                ox = _overlap(xa, xb, xc - 0.5 * cdelt, xc + 0.5 * cdelt)
                if ox <= 0.0:
                    continue
                wgt = ox * oy * fw
                num[j, i] += wgt * flux[p]
                wsum[j, i] += wgt
                vsum[j, i] += wgt * wgt * var[p]


@numba.njit(cache=True)
def _plane_emsm(wave, x, y, flux, var, wc, x0, y0, cdelt, nx, ny, roi_s, roi_w,
                scalerad, scalerad_w, num, wsum, vsum):  # pragma: no cover - compiled
    for p in range(wave.size):
        dwl = wave[p] - wc
        if abs(dwl) > roi_w:
            continue
        i0 = max(int(np.ceil((x[p] - roi_s - x0) / cdelt)), 0)
        i1 = min(int(np.floor((x[p] + roi_s - x0) / cdelt)), nx - 1)
        j0 = max(int(np.ceil((y[p] - roi_s - y0) / cdelt)), 0)
        j1 = min(int(np.floor((y[p] + roi_s - y0) / cdelt)), ny - 1)
        ew = (dwl / scalerad_w) ** 2
        for j in range(j0, j1 + 1):
            ddy = y0 + j * cdelt - y[p]
            for i in range(i0, i1 + 1):
                ddx = x0 + i * cdelt - x[p]
                if ddx * ddx + ddy * ddy > roi_s * roi_s:
                    continue
                wgt = np.exp(-(ddx * ddx + ddy * ddy) / (scalerad * scalerad) - ew)
                num[j, i] += wgt * flux[p]
                wsum[j, i] += wgt
                vsum[j, i] += wgt * wgt * var[p]


@numba.njit(cache=True)
def _plane_nearest(wave, x, y, flux, var, wc, dw, x0, y0, cdelt, nx, ny,
                   num, wsum, vsum):  # pragma: no cover - compiled
    for p in range(wave.size):
        if not (wc - 0.5 * dw <= wave[p] < wc + 0.5 * dw):
            continue
        i = int(np.floor((x[p] - x0) / cdelt + 0.5))
        j = int(np.floor((y[p] - y0) / cdelt + 0.5))
        if i < 0 or i >= nx or j < 0 or j >= ny:
            continue
        num[j, i] += flux[p]
        wsum[j, i] += 1.0
        vsum[j, i] += var[p]


def build_plane(cloud: PointCloud, grid: CubeGrid, k: int, weighting: str = "drizzle",
                roi_spatial: float | None = None, roi_spectral: float | None = None,
                scalerad: float | None = None, scalerad_w: float | None = None):
    """One wavelength plane of the cube.

    ``cloud`` may be the whole cloud or only the points near plane ``k``
    (:func:`plane_members`). EMSM defaults (jwst-like for NIRSpec): ``roi_spatial`` =
    ``cdelt``, ``scalerad`` = 0.5 ``cdelt``, ``roi_spectral`` = ``dwave``, ``scalerad_w`` =
    0.5 ``dwave``.

    Returns
    -------
    flux, var, weight : float64 (ny, nx)
        Weighted mean surface brightness (MJy/sr, NaN where the weight is 0), its variance
        and the summed weight.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting {weighting!r}: expected one of {WEIGHTINGS}")
    num = np.zeros((grid.ny, grid.nx))
    wsum = np.zeros_like(num)
    vsum = np.zeros_like(num)
    wc = float(grid.wave[k])
    c = cloud
    if weighting == "drizzle":
        _plane_drizzle(c.wave, c.dwave, c.x, c.y, c.dx, c.dy, c.flux, c.var, wc, grid.dwave,
                       grid.x0, grid.y0, grid.cdelt, grid.nx, grid.ny, num, wsum, vsum)
    elif weighting == "emsm":
        roi_s = grid.cdelt if roi_spatial is None else roi_spatial
        roi_w = grid.dwave if roi_spectral is None else roi_spectral
        sr = 0.5 * grid.cdelt if scalerad is None else scalerad
        srw = 0.5 * grid.dwave if scalerad_w is None else scalerad_w
        _plane_emsm(c.wave, c.x, c.y, c.flux, c.var, wc, grid.x0, grid.y0, grid.cdelt,
                    grid.nx, grid.ny, roi_s, roi_w, sr, srw, num, wsum, vsum)
    else:
        _plane_nearest(c.wave, c.x, c.y, c.flux, c.var, wc, grid.dwave, grid.x0, grid.y0,
                       grid.cdelt, grid.nx, grid.ny, num, wsum, vsum)
    with np.errstate(invalid="ignore", divide="ignore"):
        flux = np.where(wsum > 0, num / wsum, np.nan)
        var = np.where(wsum > 0, vsum / wsum**2, np.nan)
    return flux, var, wsum


def build_cube(cloud: PointCloud, grid: CubeGrid, weighting: str = "drizzle", **kw):
    """Every plane of the cube in one process (the reference of the Beam transform).

    ``cloud`` must be sorted by wavelength (:func:`concat_clouds`).

    Returns
    -------
    flux, var, weight : float64 (nwave, ny, nx)
    """
    shape = grid.shape
    flux = np.empty(shape)
    var = np.empty(shape)
    wgt = np.empty(shape)
    mdw = float(np.max(cloud.dwave)) if cloud.size else 0.0
    for k in range(grid.nwave):
        sub = cloud.take(plane_members(cloud, grid, k, k + 1, weighting, kw.get("roi_spectral"), mdw))
        flux[k], var[k], wgt[k] = build_plane(sub, grid, k, weighting, **kw)
    return flux, var, wgt


# ---------------------------------------------------------------- outliers across dithers


def _neighbour_excess(img: np.ndarray, slice_map: np.ndarray, axis: int):
    """Along ``axis`` (1: columns, the dispersion; 0: rows, along the slice), a pixel's
    difference from the mean of its two neighbours in the same slice (zero on a linear
    gradient, large on a one-pixel spike; 0 where a neighbour deviates more: a spike's
    neighbours deviate by half of it) and the larger neighbour's absolute value; NaN where
    a neighbour is missing."""
    a = np.moveaxis(np.asarray(img, np.float64), axis, 0)
    sm = np.moveaxis(slice_map, axis, 0)
    exc = np.full_like(a, np.nan)
    nb = np.full_like(a, np.nan)
    ok = (sm[1:-1] == sm[:-2]) & (sm[1:-1] == sm[2:]) & (sm[1:-1] >= 0)
    exc[1:-1] = np.where(ok, np.abs(a[1:-1] - 0.5 * (a[:-2] + a[2:])), np.nan)
    nb[1:-1] = np.where(ok, np.fmax(np.abs(a[:-2]), np.abs(a[2:])), np.nan)
    # a spike's neighbours deviate by half the spike: keep only the local maximum
    e0 = np.nan_to_num(exc, nan=-1.0)
    peak = np.ones(a.shape, bool)
    peak[1:] &= e0[1:] >= e0[:-1]
    peak[:-1] &= e0[:-1] >= e0[1:]
    exc = np.where(peak, exc, 0.0 * exc)
    return np.moveaxis(exc, 0, axis), np.moveaxis(nb, 0, axis)


def flag_dither_outliers(images, errs, slice_map, n_sigma: float = 5.0,
                         threshold_percent: float | None = None,
                         direction: str = "spectral", scale: float = 0.3) -> np.ndarray:
    """Outliers across dithers, in the spirit of jwst's IFU ``outlier_detection``.

    For each exposure, the absolute difference of a pixel from the mean of its two
    neighbours (zero on a smooth gradient; a cosmic ray or a hot pixel raises it on one
    pixel; jwst takes the smaller of the two neighbour differences) is compared with
    the same quantity over all exposures of the pattern: a pixel is an outlier when its
    difference exceeds the median over exposures by ``n_sigma`` x the pixel's error plus
    ``scale`` x the larger neighbour's value (the tolerance for a real gradient's curvature, as jwst's blot
    comparison allows ``scale`` x the local derivative) (and,
    with ``threshold_percent``, that exposure's percentile of the differences, jwst's
    threshold). jwst takes the difference across the dispersion (along the slice); here
    the default ``direction="spectral"`` takes it along the dispersion, where the scene is
    smooth (a spectrum) and a feature that is real sits at the same detector column in every
    dither (the dithers move the scene along and across the slices, not in wavelength). With
    ``"spatial"`` (jwst's), an undersampled point source, whose peak pixel changes by a
    large factor from dither to dither, is flagged (measured on the simulator: hundreds of
    its pixels with 4 dithers).

    Parameters
    ----------
    images, errs : float (nexp, ny, nx)
        Calibrated images of the dithers on the same detector, and their errors.
    slice_map : int (ny, nx)
        Slice number of each pixel, -1 off the slices.

    Returns
    -------
    bool (nexp, ny, nx)
        True where flagged.
    """
    from nirbeam.transforms.outliers import window_median

    images = np.asarray(images, np.float64)
    errs = np.asarray(errs, np.float64)
    if images.ndim != 3 or images.shape != errs.shape or images.shape[1:] != slice_map.shape:
        raise ValueError(f"images {images.shape}, errs {errs.shape}, slice_map "
                         f"{slice_map.shape}: expected (nexp, ny, nx), the same shapes")
    if direction not in ("spectral", "spatial"):
        raise ValueError(f"direction {direction!r}: expected 'spectral' or 'spatial'")
    axis = 1 if direction == "spectral" else 0
    on = slice_map >= 0
    pairs = [_neighbour_excess(im, slice_map, axis) for im in images]
    diffs = np.stack([p[0] for p in pairs])
    nbs = np.stack([p[1] for p in pairs])
    diffs[:, ~on] = np.nan
    valid = np.isfinite(diffs)
    med = window_median(np.where(valid, diffs, 0.0), valid)
    out = np.zeros(images.shape, bool)
    for e in range(images.shape[0]):
        d = diffs[e]
        ok = np.isfinite(d) & np.isfinite(errs[e])
        if not ok.any():
            continue
        with np.errstate(invalid="ignore"):
            f = ok & (d > med + n_sigma * errs[e] + scale * nbs[e])
            if threshold_percent is not None:
                f &= d > np.percentile(d[ok], threshold_percent)
        out[e] = f
    return out


# ---------------------------------------------------------------- centroids and wander


def plane_centroids(flux: np.ndarray, grid: CubeGrid, guess: tuple[float, float],
                    half_width: int = 2) -> np.ndarray:
    """Point-source centroid (x, y, arcsec) in each plane: flux-weighted moments in a box
    of ``2*half_width+1`` spaxels around the brightest spaxel near ``guess``, after
    subtracting the box edge's median.

    Returns float64 (nwave, 2); NaN where the box has no positive flux.
    """
    nw = flux.shape[0]
    out = np.full((nw, 2), np.nan)
    gi = int(round((guess[0] - grid.x0) / grid.cdelt))
    gj = int(round((guess[1] - grid.y0) / grid.cdelt))
    s = half_width + 1
    j0, j1 = max(gj - s, 0), min(gj + s + 1, grid.ny)
    i0, i1 = max(gi - s, 0), min(gi + s + 1, grid.nx)
    sub_all = flux[:, j0:j1, i0:i1]
    for k in range(nw):
        sub = sub_all[k]
        if not np.isfinite(sub).any():
            continue
        pj, pi = np.unravel_index(np.nanargmax(sub), sub.shape)
        pj += j0
        pi += i0
        b0, b1 = max(pj - half_width, 0), min(pj + half_width + 1, grid.ny)
        a0, a1 = max(pi - half_width, 0), min(pi + half_width + 1, grid.nx)
        box = flux[k, b0:b1, a0:a1]
        edge = np.concatenate([box[0], box[-1], box[1:-1, 0], box[1:-1, -1]])
        bkg = np.nanmedian(edge) if np.isfinite(edge).any() else 0.0
        w = np.nan_to_num(box - bkg)
        w = np.where(w > 0, w, 0.0)
        tot = w.sum()
        if tot <= 0:
            continue
        yy, xx = np.mgrid[b0:b1, a0:a1]
        out[k, 0] = grid.x0 + grid.cdelt * (w * xx).sum() / tot
        out[k, 1] = grid.y0 + grid.cdelt * (w * yy).sum() / tot
    return out


def smooth_wander(wave: np.ndarray, centroids: np.ndarray, degree: int = 3,
                  reference: float | None = None):
    """A smooth model of the centroid's wander with wavelength: a polynomial of
    ``degree`` in wavelength fitted (3-sigma clipped, twice) to each coordinate of the
    per-plane centroids, minus its value at ``reference`` (default: the median
    wavelength), so that the correction moves the source to where it is at the reference.

    Returns
    -------
    float64 (nwave, 2)
        The wander (dx, dy), arcsec, at ``wave``.
    coeffs : list of two arrays
        The polynomials (numpy.polyfit order, in ``(wave - wmid)``).
    """
    wave = np.asarray(wave, np.float64)
    wmid = float(np.median(wave)) if reference is None else float(reference)
    out = np.zeros((wave.size, 2))
    coeffs = []
    for d in range(2):
        c = centroids[:, d]
        ok = np.isfinite(c)
        p = np.zeros(degree + 1)
        for _ in range(3):
            if ok.sum() <= degree:
                break
            p = np.polyfit(wave[ok] - wmid, c[ok], degree)
            r = c - np.polyval(p, wave - wmid)
            s = 1.4826 * np.nanmedian(np.abs(r[ok]))
            ok = np.isfinite(c) & (np.abs(r) <= 3 * max(s, 1e-12))
        p = p.copy()
        p[-1] -= np.polyval(p, 0.0)  # zero at the reference wavelength
        coeffs.append(p)
        out[:, d] = np.polyval(p, wave - wmid)
    return out, (wmid, coeffs)


def shift_cloud(cloud: PointCloud, model) -> PointCloud:
    """The cloud with each point moved by minus the wander at its wavelength (``model``:
    the second value of :func:`smooth_wander`)."""
    wmid, coeffs = model
    t = cloud.wave - wmid
    return PointCloud(cloud.wave, cloud.dwave, cloud.x - np.polyval(coeffs[0], t),
                      cloud.y - np.polyval(coeffs[1], t), cloud.dx, cloud.dy, cloud.flux,
                      cloud.var, cloud.exposure)


# ---------------------------------------------------------------- aperture extraction


def aperture_radius(wave, radius_ref: float, wave_ref: float, minimum: float = 0.0) -> np.ndarray:
    """An aperture growing with wavelength like the PSF's diffraction core:
    ``radius_ref * wave / wave_ref`` (arcsec), at least ``minimum``."""
    return np.maximum(radius_ref * np.asarray(wave, np.float64) / wave_ref, minimum)


def circle_fraction(grid: CubeGrid, xc: float, yc: float, r: float, sub: int = 8) -> np.ndarray:
    """Fraction of each spaxel inside the circle (xc, yc, r), arcsec, by ``sub`` x ``sub``
    subsampling of the spaxels near the circle. float64 (ny, nx)."""
    frac = np.zeros((grid.ny, grid.nx))
    c = grid.cdelt
    i0 = max(int(np.floor((xc - r - grid.x0) / c)) - 1, 0)
    i1 = min(int(np.ceil((xc + r - grid.x0) / c)) + 2, grid.nx)
    j0 = max(int(np.floor((yc - r - grid.y0) / c)) - 1, 0)
    j1 = min(int(np.ceil((yc + r - grid.y0) / c)) + 2, grid.ny)
    if i1 <= i0 or j1 <= j0:
        return frac
    o = (np.arange(sub) + 0.5) / sub - 0.5
    xs = (grid.x0 + c * np.arange(i0, i1))[:, None] + c * o[None, :]  # (nx', sub)
    ys = (grid.y0 + c * np.arange(j0, j1))[:, None] + c * o[None, :]
    inside = ((xs[None, :, None, :] - xc) ** 2 + (ys[:, None, :, None] - yc) ** 2) <= r * r
    frac[j0:j1, i0:i1] = inside.mean(axis=(2, 3))
    return frac


def aperture_spectrum(flux, var, grid: CubeGrid, centers, radii):
    """Sum of the cube inside a circular aperture per plane, in µJy.

    Parameters
    ----------
    flux, var : float (nwave, ny, nx)
        Cube, MJy/sr, and variance.
    centers : float (nwave, 2)
        Aperture centre (x, y) per plane, arcsec.
    radii : float (nwave,)
        Aperture radius per plane, arcsec.

    Returns
    -------
    flux_ujy, err_ujy : float64 (nwave,)
    npix : float64 (nwave,)
        Spaxels (fractional) summed; a plane with a NaN spaxel inside the aperture gives NaN.
    """
    nw = flux.shape[0]
    f = np.full(nw, np.nan)
    e = np.full(nw, np.nan)
    n = np.zeros(nw)
    scale = grid.cdelt**2 * MJYSR_ARCSEC2_TO_UJY
    for k in range(nw):
        fr = circle_fraction(grid, float(centers[k, 0]), float(centers[k, 1]), float(radii[k]))
        m = fr > 0
        n[k] = fr.sum()
        vals = flux[k][m]
        if not m.any() or not np.isfinite(vals).all():
            continue
        f[k] = scale * float((fr[m] * vals).sum())
        e[k] = scale * float(np.sqrt((fr[m] ** 2 * var[k][m]).sum()))
    return f, e, n


# ---------------------------------------------------------------- detector-side helpers


def pixel_dwave(wave: np.ndarray, slice_map: np.ndarray) -> np.ndarray:
    """Spectral width of each pixel (µm): half the wavelength difference of its two
    neighbours along the dispersion (columns) in the same slice, one-sided at a slice's
    ends. NaN off the slices. float64 (ny, nx)."""
    w = np.asarray(wave, np.float64)
    left = np.full_like(w, np.nan)
    right = np.full_like(w, np.nan)
    same = (slice_map[:, 1:] == slice_map[:, :-1]) & (slice_map[:, 1:] >= 0)
    d = np.abs(w[:, 1:] - w[:, :-1])
    right[:, :-1] = np.where(same, d, np.nan)
    left[:, 1:] = np.where(same, d, np.nan)
    with np.errstate(invalid="ignore"):
        out = np.where(np.isfinite(left) & np.isfinite(right), 0.5 * (left + right),
                       np.fmax(left, right))
    out[slice_map < 0] = np.nan
    return out


def surface_brightness(rate, err, wave, conversion_at):
    """Rate (DN/s) to surface brightness (MJy/sr): divide by the flux calibration.

    Parameters
    ----------
    rate, err : float (ny, nx), DN/s
    wave : float (ny, nx), µm
    conversion_at : callable ``wave -> DN/s per MJy/sr``

    Returns
    -------
    flux, var : float64 (ny, nx), MJy/sr and (MJy/sr)^2; NaN where the wavelength or the
        conversion is unknown.
    """
    on = np.isfinite(wave)
    c = np.full(np.shape(wave), np.nan)
    c[on] = conversion_at(np.asarray(wave)[on])
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.asarray(rate, np.float64) / c
        v = (np.asarray(err, np.float64) / c) ** 2
    return f, v
