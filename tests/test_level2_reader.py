"""nirbeam.sources.level2 on the three real CEERS nods, checked against stdatamodels."""

from __future__ import annotations

import glob
import os
import shutil
import warnings

import numpy as np
import pytest
from astropy.io import fits

from nirbeam.sources.level2 import is_level2_slit_file, read_level2
from nirbeam.stream.uncal import BadInputError

CEERS = "/work/shared/data/modes/mos_ceers"
FILES = sorted(glob.glob(os.path.join(CEERS, "*_nrs2_phot.138.1345_933.fits")))
pytestmark = pytest.mark.skipif(len(FILES) != 3, reason="CEERS MOS files not present")


@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.basename(p)[:31])
def test_reads_what_stdatamodels_reads(path):
    datamodels = pytest.importorskip("stdatamodels.jwst.datamodels")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = datamodels.open(path)
    (s,) = read_level2(path)
    assert type(m).__name__ == "SlitModel"
    for ours, theirs in [(s.sci, m.data), (s.err, m.err), (s.dq, m.dq), (s.wavelength, m.wavelength),
                         (s.var_poisson, m.var_poisson), (s.var_rnoise, m.var_rnoise),
                         (s.var_flat, m.var_flat), (s.barshadow, m.barshadow),
                         (s.pathloss_ps, m.pathloss_point), (s.pathloss_un, m.pathloss_uniform)]:
        np.testing.assert_array_equal(ours, theirs)
    assert s.dq.dtype == np.uint32
    assert (s.name, s.source_id, s.slitlet_id, s.source_name, s.shutter_state) == (
        m.name, m.source_id, m.slitlet_id, m.source_name, m.shutter_state)
    assert (s.xstart, s.ystart) == (m.xstart, m.ystart)
    assert s.patt_num == m.meta.dither.position_number
    assert s.pixar_sr == pytest.approx(m.meta.photometry.pixelarea_steradians, rel=1e-12)
    assert s.bunit == m.meta.bunit_data == "MJy/sr"
    assert s.srcypos == pytest.approx(m.source_ypos)
    assert s.detector == "NRS2" and s.exp_type == "NRS_MSASPEC"
    m.close()


def test_region_and_keywords():
    slits = [read_level2(p)[0] for p in FILES]
    assert [s.patt_num for s in slits] == [1, 2, 3]
    assert [s.shutter_state for s in slits] == ["1x1", "x11", "11x"]
    r = slits[0].region()
    assert r.name == "138" and r.detector == "NRS2"
    assert (r.bbox.y0, r.bbox.y1, r.bbox.x0, r.bbox.x1) == (658, 683, 0, 341)
    assert r.wavelength.kind == "map" and "WAVELENGTH" in r.wavelength.source
    assert r.background.kind == "nod_partner"
    v = slits[0].variance
    ok = np.isfinite(v) & np.isfinite(slits[0].err)
    np.testing.assert_allclose(v[ok], slits[0].err[ok].astype(np.float64) ** 2, rtol=2e-3)
    assert is_level2_slit_file(FILES[0])


def test_errors_name_file_extension_keyword(tmp_path):
    bad = tmp_path / "jw_bad_phot.fits"
    shutil.copy(FILES[0], bad)
    with fits.open(bad, mode="update") as h:
        del h["SCI"].header["SLTNAME"]
    with pytest.raises(BadInputError, match=r"jw_bad_phot.fits\[SCI,1\] SLTNAME"):
        read_level2(str(bad))
    with fits.open(bad, mode="update") as h:
        h["SCI"].header["SLTNAME"] = "138"
        del h["WAVELENGTH"]
    with pytest.raises(BadInputError, match=r"\[WAVELENGTH,1\]: missing"):
        read_level2(str(bad))
    with fits.open(bad, mode="update") as h:
        h[0].header["DATAMODL"] = "RampModel"
    with pytest.raises(BadInputError, match="PRIMARY.*DATAMODL"):
        read_level2(str(bad))
    assert not is_level2_slit_file(str(bad))
