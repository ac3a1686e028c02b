"""Wavelength sources: user files (map, calints cut-out, x1dints), polynomial, WCS plumbing,
and the pixel axis when none is given (binning by wavelength refused)."""

import os

import numpy as np
import pytest
from astropy.io import fits

from nirbeam.stream.config import ConfigError
from nirbeam.stream.products import lightcurve_edges as _lightcurve_edges
from nirbeam.stream.settings import LightcurveConfig, Settings
from nirbeam.stream.uncal import BadInputError
from nirbeam.stream.wavelengths import (
    PIXEL_SOURCE,
    is_pixel_axis,
    load_wavelength_file,
    wavelengths_from_wcs,
)
from nirbeam.transforms.trace import TraceModel

NY, NX = 32, 64


def _trace(y0=15.3):
    return TraceModel(coefficients=(y0,), width_coefficients=(1.0,), x_range=(0.0, NX - 1.0),
                      rms=0.0, source="test")


def _map(ny=NY, nx=NX):
    """A wavelength map that varies along y too, so 'along the trace' matters."""
    y, x = np.mgrid[0:ny, 0:nx]
    return 2.8 + 1e-3 * x + 1e-4 * y


def test_map_taken_along_the_trace(tmp_path):
    p = tmp_path / "map.fits"
    fits.HDUList([fits.PrimaryHDU(header=fits.Header({"DETECTOR": "NRS1"})),
                  fits.ImageHDU(_map(), name="WAVELENGTH")]).writeto(p)
    wl = load_wavelength_file(str(p), "NRS1", (NY, NX), _trace(15.3))
    np.testing.assert_allclose(wl.wavelength, 2.8 + 1e-3 * np.arange(NX) + 1e-4 * 15.3,
                               rtol=0, atol=1e-12)
    assert wl.source == "map:map.fits" and not is_pixel_axis(wl.source)
    with pytest.raises(BadInputError, match="DETECTOR=NRS1.*NRS2"):
        load_wavelength_file(str(p), "NRS2", (NY, NX), _trace())


def test_calints_cutout_placed_with_sltstrt(tmp_path):
    full = _map()
    cut = full[4:20, 10:50]
    sci = fits.ImageHDU(np.zeros((2, 16, 40), np.float32), name="SCI")
    sci.header["SLTSTRT1"] = 11
    sci.header["SLTSTRT2"] = 5
    p = tmp_path / "jw_nrs1_calints.fits"
    fits.HDUList([fits.PrimaryHDU(), sci, fits.ImageHDU(cut, name="WAVELENGTH")]).writeto(p)
    wl = load_wavelength_file(str(p), "NRS1", (NY, NX), _trace(12.0))
    inside = np.arange(10, 50)
    np.testing.assert_allclose(wl.wavelength[inside], full[12, inside], atol=1e-12)
    assert np.isnan(wl.wavelength[:10]).all() and np.isnan(wl.wavelength[50:]).all()
    # without SLTSTRT the cut-out cannot be placed: refused, naming the keyword
    p2 = tmp_path / "nokw.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(cut, name="WAVELENGTH")]).writeto(p2)
    with pytest.raises(BadInputError, match="SLTSTRT1"):
        load_wavelength_file(str(p2), "NRS1", (NY, NX), _trace())


def test_x1dints_table_of_the_right_detector(tmp_path):
    cols = []
    hdus = [fits.PrimaryHDU()]
    for det, off in (("NRS1", 2.8), ("NRS2", 3.8)):
        w = np.tile(off + 1e-3 * np.arange(NX), (3, 1))
        cols = [fits.Column("WAVELENGTH", f"{NX}D", array=w),
                fits.Column("FLUX", f"{NX}D", array=np.ones((3, NX)))]
        h = fits.BinTableHDU.from_columns(cols, name="EXTRACT1D")
        h.header["DETECTOR"] = det
        hdus.append(h)
    p = tmp_path / "x1dints.fits"
    fits.HDUList(hdus).writeto(p)
    wl = load_wavelength_file(str(p), "NRS2", (NY, NX), _trace())
    np.testing.assert_allclose(wl.wavelength, 3.8 + 1e-3 * np.arange(NX))
    assert wl.source.startswith("x1dints:x1dints.fits")
    with pytest.raises(BadInputError, match="no such file"):
        load_wavelength_file(str(tmp_path / "none.fits"), "NRS1", (NY, NX), _trace())


def test_wcs_plumbing_on_a_synthetic_gwcs():
    gwcs = pytest.importorskip("gwcs")
    from astropy import units as u
    from astropy.modeling import models
    from gwcs import coordinate_frames as cf

    # detector (x, y) -> wavelength depending on both, as a slit WCS does
    fwd = models.Mapping((0, 1)) | (models.Polynomial1D(1, c0=2.8, c1=1e-3)
                                     & models.Polynomial1D(1, c0=0.0, c1=1e-4)) | models.math.AddUfunc()
    w = gwcs.WCS(forward_transform=fwd,
                 input_frame=cf.Frame2D(name="detector"),
                 output_frame=cf.SpectralFrame(name="spectral", unit=(u.um,),
                                               axes_names=("wavelength",)))
    wl = wavelengths_from_wcs(w, _trace(15.3), NX, x_offset=0.0, name="synthetic")
    np.testing.assert_allclose(wl.wavelength, 2.8 + 1e-3 * np.arange(NX) + 1e-4 * 15.3, atol=1e-12)
    assert wl.source == "wcs:synthetic"


def test_assign_wcs_needs_the_extra_and_a_crds_cache(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from nirbeam.stream.wavelengths import assign_wcs_wavelengths

    plan = SimpleNamespace(segments=[SimpleNamespace(path=str(tmp_path / "x_uncal.fits"))],
                           meta=SimpleNamespace(image_shape=(NY, NX)))
    try:
        import jwst  # noqa: F401
    except ImportError:
        with pytest.raises(BadInputError, match=r"nirbeam\[jwst\]"):
            assign_wcs_wavelengths(plan, _trace(), NX)
        return
    if not os.environ.get("CRDS_PATH"):
        monkeypatch.delenv("CRDS_PATH", raising=False)
        with pytest.raises(BadInputError, match="CRDS_PATH"):
            assign_wcs_wavelengths(plan, _trace(), NX)
        pytest.skip("jwst installed but no CRDS cache (CRDS_PATH): the real assign_wcs path "
                    "is not exercised")


def test_binning_by_wavelength_refused_without_a_source():
    for lc in ({"binning": "resolution"}, {"binning": "edges", "edges": [3.0, 4.0]},
               {"wmin": 3.0}):
        with pytest.raises(ConfigError, match="needs wavelengths.*wavelength_map"):
            Settings.from_dict({"lightcurve": lc})
    # with a source, or binning by pixel, it is accepted
    Settings.from_dict({"lightcurve": {"binning": "resolution"},
                        "extract": {"wavelength_coefficients": [2.8, 1e-3]}})
    Settings.from_dict({"lightcurve": {"binning": "native"}})
    s = Settings.from_dict({})
    assert s.lightcurve.binning == "auto"


def test_auto_binning_is_by_columns_on_a_pixel_axis():
    cols = np.arange(512, dtype=float)
    e = _lightcurve_edges(LightcurveConfig(), cols, PIXEL_SOURCE)
    np.testing.assert_allclose(np.diff(e), 16.0)
    assert e[0] == -0.5 and e[-1] == 511.5
    with pytest.raises(ValueError, match="needs wavelengths"):
        _lightcurve_edges(LightcurveConfig(binning="resolution"), cols, PIXEL_SOURCE)
    # with wavelengths, auto is constant R
    wl = np.linspace(2.8, 3.7, 512)
    e = _lightcurve_edges(LightcurveConfig(resolution=50), wl, "map:x")
    r = 0.5 * (e[1:] + e[:-1]) / np.diff(e)
    np.testing.assert_allclose(r, 50, rtol=1e-6)
