"""x1d.fits (MultiSpecModel) and spec1d_<id>.ecsv writers, checked with stdatamodels and
its own schema; units never claimed where no calibration was applied."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from nirbeam import dqflags
from nirbeam.core.spectra import Spectrum1D, UnitError
from nirbeam.sinks import spec1d

HEADER = {"INSTRUME": "NIRSPEC", "EXP_TYPE": "NRS_FIXEDSLIT", "DETECTOR": "NRS1",
          "FILTER": "F100LP", "GRATING": "G140M", "FXD_SLIT": "S1600A1", "NAXIS": 0}


def _spec(sid=3, region="S1600A1", unit="uJy", n=40, kind="POINT"):
    wl = np.linspace(0.97, 1.84, n)
    dq = np.zeros(n, np.uint32)
    dq[5] = dqflags.DO_NOT_USE
    return Spectrum1D(sid, f"src{sid}", region, wl, 100 + wl, np.full(n, 2.0), dq,
                      flux_unit=unit, flux_var_poisson=np.full(n, 3.0),
                      flux_var_rnoise=np.full(n, 1.0), source_type=kind, detector="NRS1",
                      exposure="jw0", extraction={"method": "optimal", "source_ypos": -0.25})


def _schema():
    import yaml
    from stdatamodels.jwst import datamodels

    path = os.path.join(os.path.dirname(datamodels.__file__), "schemas", "spectable.schema.yaml")
    with open(path) as fh:
        return yaml.safe_load(fh)["datatype"]


def test_x1d_opens_as_multispecmodel_with_the_schema_columns(tmp_path):
    datamodels = pytest.importorskip("stdatamodels.jwst.datamodels")
    sps = [_spec(3), _spec(4, "S200A2", kind="EXTENDED")]
    path = spec1d.write_x1d(str(tmp_path / "x1d.fits"), sps, HEADER)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = datamodels.open(path)
    assert type(m).__name__ == "MultiSpecModel"
    m.validate()
    assert [s.name for s in m.spec] == ["S1600A1", "S200A2"]
    assert [s.source_id for s in m.spec] == [3, 4]
    assert [s.source_type for s in m.spec] == ["POINT", "EXTENDED"]
    assert m.meta.exposure.type == "NRS_FIXEDSLIT"
    t = m.spec[0].spec_table
    np.testing.assert_allclose(t["FLUX"], sps[0].flux * 1e-6)  # uJy -> Jy, as jwst
    np.testing.assert_allclose(t["FLUX_VAR_POISSON"], 3.0e-12)
    np.testing.assert_array_equal(t["DQ"], sps[0].dq)
    assert m.spec[0].source_ypos == pytest.approx(-0.25)
    schema = _schema()
    with fits.open(path) as h:
        ext = [x for x in h if x.name == "EXTRACT1D"]
        assert [x.header["EXTVER"] for x in ext] == [1, 2]
        for x in ext:
            assert list(x.data.columns.names) == [c["name"] for c in schema]
            for c in schema:
                got = x.data[c["name"]].dtype
                want = np.dtype(c["datatype"])
                assert (got.kind, got.itemsize) == (want.kind, want.itemsize), (c, got)
            assert x.columns["FLUX"].unit == "Jy" and x.header["BUNIT"] == "Jy"


def test_uncalibrated_spectra_keep_their_unit(tmp_path):
    sp = _spec(unit="DN/s")
    path = spec1d.write_x1d(str(tmp_path / "x1d.fits"), [sp], HEADER)
    with fits.open(path) as h:
        e = h["EXTRACT1D"]
        assert e.columns["FLUX"].unit == "DN/s" and e.header["BUNIT"] == "DN/s"
        assert "NOT Jy" in str(e.header["COMMENT"])
        np.testing.assert_allclose(e.data["FLUX"], sp.flux)
    with pytest.raises(UnitError, match="not flux-calibrated"):
        spec1d.write_spec1d_ecsv(str(tmp_path / "s.ecsv"), sp)
    p = spec1d.write_spec1d_ecsv(str(tmp_path / "s.ecsv"), sp, allow_uncalibrated=True)
    t = Table.read(p)
    assert str(t["flux"].unit) == "DN / s" and t.meta["flux_calibrated"] is False


def test_spec1d_ecsv_columns_units_and_meta(tmp_path):
    sp = _spec(7, unit="Jy")  # calibrated in Jy: written in uJy
    p = spec1d.write_spec1d_ecsv(str(tmp_path / spec1d.spec1d_name(7)), sp)
    assert os.path.basename(p) == "spec1d_7.ecsv"
    t = Table.read(p)
    assert t.colnames == ["wavelength", "flux", "flux_error", "dq"]
    assert str(t["wavelength"].unit) == "um" and str(t["flux"].unit) == "uJy"
    assert str(t["flux_error"].unit) == "uJy" and t["dq"].dtype == np.uint32
    np.testing.assert_allclose(t["flux"], sp.flux * 1e6)
    np.testing.assert_allclose(t["flux_error"], 2e6)
    assert t.meta["source_id"] == 7 and t.meta["slit"] == "S1600A1"
    assert t.meta["extraction"]["method"] == "optimal"


def test_spectrum1d_checks_and_units():
    sp = _spec(unit="mJy")
    assert sp.in_unit("uJy").flux[0] == pytest.approx(sp.flux[0] * 1e3)
    assert sp.in_unit("uJy").flux_var_rnoise[0] == pytest.approx(1e6)
    with pytest.raises(UnitError):
        _spec(unit="DN/s").in_unit("uJy")
    with pytest.raises(ValueError, match="flux"):
        Spectrum1D(1, "a", "S200A1", np.arange(3.0), np.ones(4), np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="region"):
        Spectrum1D(1, "a", "", np.arange(3.0), np.ones(3), np.ones(3), np.zeros(3))
    v, e = sp.integrated()
    good = sp.dq == 0
    ref = np.sum(sp.flux[good] * np.gradient(sp.wavelength[good]))
    assert v == pytest.approx(ref)
