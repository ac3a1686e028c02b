"""nirbeam.sources.msa on the two real-layout MSA metadata files, against jwst's own
``get_open_msa_slits`` (run in .venv-jwst when it exists: jwst is test-only) and against
facts read off the SHUTTER_INFO table."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from astropy.io import fits

from nirbeam.sources.msa import read_msa, read_shutters
from nirbeam.stream.uncal import BadInputError

GEOM = "/work/shared/data/modes/jwst_geometry"
MSA = os.path.join(GEOM, "msa_configuration.fits")
MSA_FS = os.path.join(GEOM, "msa_fs_configuration.fits")
JWST_PY = os.path.join(os.path.dirname(__file__), "..", ".venv-jwst", "bin", "python")
pytestmark = pytest.mark.skipif(not os.path.isfile(MSA), reason="MSA metadata files not present")

_JWST_DUMP = """
import json, sys, numpy as np
from jwst.assign_wcs.nirspec import get_open_msa_slits
out = {}
for f in sys.argv[1:]:
    for mid in (2, 12, 13, 14, 15, 16, 64):
        try:
            slits = get_open_msa_slits('95065', f, mid, 1)
        except Exception as exc:
            out[f"{f}|{mid}|error"] = type(exc).__name__
            continue
        for s in slits:
            out[f"{f}|{mid}|{s.name}"] = [str(s.name), int(s.shutter_id), int(s.xcen), int(s.ycen),
                float(s.ymin), float(s.ymax), int(s.quadrant), int(s.source_id), str(s.shutter_state),
                str(s.source_name), str(s.source_alias), float(s.stellarity),
                float(s.source_xpos), float(s.source_ypos)]
print(json.dumps(out))
"""


def _ours(f, mid):
    return {f"{f}|{mid}|{s.name}": [s.name, s.shutter_id, s.xcen, s.ycen, s.ymin, s.ymax, s.quadrant,
                                    s.source_id, s.shutter_state, s.source_name, s.source_alias,
                                    s.stellarity, s.source_xpos, s.source_ypos]
            for s in read_msa(f, mid, 1, program="95065")}


@pytest.mark.skipif(not os.path.isfile(JWST_PY), reason="no .venv-jwst (pip install jwst==3.0.0)")
def test_same_slitlets_as_jwst():
    res = subprocess.run([JWST_PY, "-c", _JWST_DUMP, MSA, MSA_FS], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    ref = json.loads(res.stdout.strip().splitlines()[-1])
    ours = {}
    for f in (MSA, MSA_FS):
        for mid in (2, 12, 13, 14, 15, 16, 64):
            try:
                ours.update(_ours(f, mid))
            except BadInputError:
                ours[f"{f}|{mid}|error"] = "MSAFileError"
    assert sorted(ours) == sorted(ref)
    assert ref[f"{MSA}|13|error"] == "MSAFileError"   # two primaries in slitlet 56: both refuse
    for k, r in ref.items():
        if k.endswith("|error"):
            continue
        o = ours[k]
        assert o[:4] == r[:4] and o[6:11] == r[6:11], k
        np.testing.assert_allclose(o[4:6] + o[11:], r[4:6] + r[11:], rtol=1e-6, atol=1e-7, err_msg=k)


def test_rules_on_the_real_layout():
    by = {s.name: s for s in read_msa(MSA, 16, 1)}
    assert sorted(by) == ["59", "60"]          # rows kept by MSAMETID and PATT_NUM, grouped
    s59 = by["59"]
    assert s59.columns == (22, 23, 24, 25, 27, 28) and s59.shutter_state == "11x1011"
    assert s59.source_id == 1 and s59.source_name == "95065_1" and not s59.background
    assert s59.shutter_id == 256 + (24 - 1) * 365
    assert by["60"].source_id == 2
    (bkg,) = read_msa(MSA, 14, 1)                # no primary shutter: a background slitlet
    assert bkg.background and bkg.source_id == 57 and bkg.source_name == "95065_BKG57"
    assert bkg.shutter_state == "1x1" and bkg.source_xpos == 0.0
    fs = {s.name: s for s in read_msa(MSA_FS, 12, 1)}
    assert sorted(fs) == ["55", "S200A1"]         # fixed slits that are not primary are skipped
    assert fs["S200A1"].fixed_slit == "S200A1" and fs["S200A1"].source_id == 3
    assert len(read_shutters(MSA, 2, 1)) == 3


def test_virtual_slit_and_errors(tmp_path):
    f = tmp_path / "jw_test_msa.fits"
    shutil.copy(MSA, f)
    with fits.open(f, mode="update") as h:
        t = h["SHUTTER_INFO"].data
        t["source_id"][t["msa_metadata_id"] == 2] = -7
    (v,) = read_msa(str(f), 2, 1, program="95065")
    assert v.virtual and v.source_id == -7 and v.source_name == "95065_VRT12"
    with fits.open(f, mode="update") as h:
        t = h["SHUTTER_INFO"].data
        t["primary_source"][t["msa_metadata_id"] == 2] = "Y"
    with pytest.raises(BadInputError, match=r"SHUTTER_INFO\] primary_source.*slitlet 12"):
        read_msa(str(f), 2, 1)
    with pytest.raises(BadInputError, match=r"MSAMETID.*msa_metadata_id == 99"):
        read_msa(MSA, 99, 1)
    with pytest.raises(BadInputError, match="MSAMETFL"):
        read_msa(str(tmp_path / "missing_msa.fits"), 2, 1)
