"""Geometry as data: the BOTS mode plan, region rules, and the store schema's agreement with
the modules that still carry their own copies of stage names and dtypes."""

from __future__ import annotations

import os
import pickle
from dataclasses import replace

import numpy as np
import pytest

from nirbeam.core import schema
from nirbeam.core.geometry import BackgroundRule, BoundingBox, ModePlan, SpectralRegion, TraceRule
from nirbeam.core.records import ExposureMeta
from nirbeam.modes import BOTS, ModeError, mode_for
from nirbeam.stream.settings import Settings

META = ExposureMeta("jw01366004001_04101_00001", "NRS1", "NIRSPEC", "NRS_BRIGHTOBJ", "NRSRAPID",
                    "SUB512", 1, 1, 512, 32, 465, 70, 1, 0, 0.90156, 0.90156, 63.14)


def test_bots_is_one_region_per_detector_from_the_config():
    s = Settings.from_dict({"extract": {"background_region": [6.0, 12.0], "trace_deg": 3}})
    (r,) = BOTS.regions(META, s)
    assert mode_for(META) is BOTS and r.detector == "NRS1" and r.name == "S1600A1"
    assert r.bbox == BoundingBox(0, 32, 0, 512) and r.bbox.shape == META.image_shape
    assert r.trace == TraceRule("fit", 3)
    assert r.background == BackgroundRule("annulus", 6.0, 12.0)
    assert r.wavelength.kind == "columns"  # nothing configured: never labelled µm
    assert BOTS.ensemble(s).kind == "time" and BOTS.ensemble(s).window == 25
    # the flat store path: BOTS stores are those of before the mode existed
    assert BOTS.store_group(META, r) == META.group_name == schema.group_name("jw01366004001_04101_00001", "NRS1")
    s2 = Settings.from_dict({"extract": {"trace_coefficients": [0.001, 16.0],
                                         "wavelength_coefficients": [0.01, 0.6]}})
    (r2,) = BOTS.regions(META, s2)
    assert r2.trace.kind == "fixed" and r2.wavelength.kind == "polynomial"
    assert pickle.loads(pickle.dumps(BOTS)).regions(META, s) == (r,)  # plans go to workers
    assert len({r, r2}) == 2  # hashable


def test_other_modes_are_refused_by_name():
    fs = replace(META, exp_type="NRS_FIXEDSLIT", tsovisit=False)
    assert not BOTS.handles(fs)
    assert mode_for(fs).name == "fs"  # issue 16
    lamp = replace(META, exp_type="NRS_LAMP", tsovisit=False)
    with pytest.raises(ModeError, match="NRS_LAMP"):
        mode_for(lamp)


def test_region_rules_refuse_what_cannot_be_measured():
    with pytest.raises(ValueError, match="inner < outer"):
        BackgroundRule("annulus", 12.0, 6.0)
    with pytest.raises(ValueError, match="partner"):
        BackgroundRule("nod_partner")
    with pytest.raises(ValueError, match="empty"):
        BoundingBox(5, 5, 0, 10)
    with pytest.raises(ValueError, match="fixed trace"):
        TraceRule("fixed")

    def two_slits(meta, settings):  # a multi-region plan (an FS-like mode) and its checks
        box = BoundingBox(0, 16, 0, 100)
        return (SpectralRegion("S200A1", meta.detector, box), SpectralRegion("S200A1", meta.detector, box))

    fs_like = ModePlan("fs", ("NRS_FIXEDSLIT",), two_slits, BOTS.ensemble, ("x1d",))
    with pytest.raises(ValueError, match="repeat"):
        fs_like.regions(META, Settings.from_dict({}))
    one = SpectralRegion("S200A1", "NRS1", BoundingBox(0, 16, 0, 100))
    assert fs_like.store_group(META, one) == f"{META.group_name}/S200A1"  # region sub-group


def test_store_schema_agrees_with_the_writers_copies():
    """A stage or array renamed in nirbeam.core.schema but not in a module that still has
    its own copy (docs/ARCHITECTURE.md, known gaps) fails here."""
    from nirbeam import api
    from nirbeam.stream import pipeline, products
    from nirbeam.transforms.spectra import SPECTRUM_ARRAYS

    assert api.STAGES == schema.STAGES
    assert pipeline.RATEINTS == schema.RATEINTS and products.SPECTRA == schema.SPECTRA
    assert products.CLEANED == schema.CLEANED and products.EXTRACTION == schema.EXTRACTION
    rate = schema.STAGE_SPECS[schema.RATEINTS]
    assert {k: np.dtype(v) for k, v in rate.dtypes().items()} == {
        k: np.dtype(v) for k, v in pipeline.RATE_ARRAYS.items()}
    for k, a in rate.attrs().items():
        assert pipeline.RATE_ATTRS[k] == a, k
    spec = schema.STAGE_SPECS[schema.SPECTRA]
    assert {k: np.dtype(v) for k, v in spec.dtypes().items()} == {
        k: np.dtype(v) for k, v in SPECTRUM_ARRAYS.items()}
    assert spec.time_chunk == products.BLOCK


# --- the dispatch table (nirbeam.modes.DISPATCH): one row per mode and input level ---------

from nirbeam import modes as _modes  # noqa: E402

# (entry name, primary keywords of an input file, level); one case per DISPATCH row
RECOGNITION = [
    ("bots", {"EXP_TYPE": "NRS_BRIGHTOBJ", "TSOVISIT": True}, "uncal"),
    ("bots", {"EXP_TYPE": "NRS_AUTOWAVE", "TSOVISIT": True}, "uncal"),  # a TSO visit
    ("fs", {"EXP_TYPE": "NRS_FIXEDSLIT", "TSOVISIT": False}, "uncal"),
    ("fs", {"EXP_TYPE": "NRS_FIXEDSLIT", "TSOVISIT": True}, "uncal"),  # EXP_TYPE first
    ("mos", {"EXP_TYPE": "NRS_MSASPEC", "TSOVISIT": False, "MSAMETFL": "x_msa.fits"}, "uncal"),
    ("ifu", {"EXP_TYPE": "NRS_IFU", "TSOVISIT": False}, "uncal"),
    ("mos-level2", {"EXP_TYPE": "NRS_MSASPEC", "DATAMODL": "MultiSlitModel"}, "level2"),
]


def _write_input(path, header, level, uncal_writer):
    from astropy.io import fits

    if level == "uncal":
        return uncal_writer(path, np.zeros((2, 3, 8, 16), np.uint16), header=header)
    ph = fits.Header()
    for k, v in {"TELESCOP": "JWST", "INSTRUME": "NIRSPEC", **header}.items():
        ph[k] = v
    sci = fits.ImageHDU(np.zeros((8, 16), np.float32), name="SCI")
    sci.header["SLTNAME"] = "1"
    fits.HDUList([fits.PrimaryHDU(header=ph), sci]).writeto(path)
    return str(path)


def _name(i, level):
    return f"jw01234001001_0{i + 1}101_00001_nrs1_{'uncal' if level == 'uncal' else 'cal'}.fits"


def test_every_dispatch_row_is_recognised_by_its_inputs():
    """A row removed from DISPATCH makes its case here fail; a row added needs a case."""
    assert {name for name, _, _ in RECOGNITION} == {e.name for e in _modes.DISPATCH}
    assert len({e.name for e in _modes.DISPATCH}) == len(_modes.DISPATCH)


@pytest.mark.parametrize("name,header,level", RECOGNITION, ids=[f"{c[0]}-{c[1]['EXP_TYPE']}" for c in RECOGNITION])
def test_inputs_classified_by_the_table(name, header, level, tmp_path, uncal_writer):
    from nirbeam.stream.run_commands import command_of

    d = tmp_path / "in"
    d.mkdir()
    for i in range(2):
        _write_input(d / _name(i, level), header, level, uncal_writer)
    c = _modes.classify_inputs([str(d)])
    assert c.entry.name == name and len(c.files) == 2
    assert c.files[0].exp_type == header["EXP_TYPE"] and c.files[0].level == level
    assert callable(command_of(c.entry))  # the command the row names exists
    # the same from InputFile records (no I/O); once the row is gone the files are refused
    # by name, or (an FS exposure of a TSO visit) go to another row
    assert _modes.classify(c.files).entry is c.entry
    table = tuple(e for e in _modes.DISPATCH if e.name != name)
    try:
        assert _modes.classify(c.files, table).entry.name != name
    except _modes.ModeInputError as exc:
        assert header["EXP_TYPE"] in str(exc) and c.files[0].path in str(exc)


def test_mixed_inputs_refused_naming_files_and_exp_types(tmp_path, uncal_writer, capsys):
    from nirbeam.stream.cli import EXIT_BAD_INPUT, main

    d = tmp_path / "mixed"
    d.mkdir()
    a = _write_input(d / _name(0, "uncal"), {"EXP_TYPE": "NRS_BRIGHTOBJ"}, "uncal", uncal_writer)
    b = _write_input(d / _name(1, "uncal"), {"EXP_TYPE": "NRS_IFU", "TSOVISIT": False}, "uncal",
                     uncal_writer)
    with pytest.raises(_modes.ModeInputError) as exc:
        _modes.classify_inputs([str(d)])
    msg = str(exc.value)
    assert a in msg and b in msg and "'NRS_BRIGHTOBJ'" in msg and "'NRS_IFU'" in msg
    assert "bots:" in msg and "ifu:" in msg and "2 modes" in msg
    assert main(["run", str(d), "--out", str(tmp_path / "o"), "--no-progress"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert a in err and b in err and "Traceback" not in err


def test_unknown_and_unreadable_inputs(tmp_path, uncal_writer):
    d = tmp_path / "lamp"
    d.mkdir()
    p = _write_input(d / _name(0, "uncal"), {"EXP_TYPE": "NRS_LAMP", "TSOVISIT": False}, "uncal",
                     uncal_writer)
    with pytest.raises(_modes.ModeInputError, match="NRS_LAMP.*handled by no mode") as exc:
        _modes.classify_inputs([p])
    assert p in str(exc.value) and "NRS_IFU" in str(exc.value)  # says what each mode takes
    # inputs that cannot be read go to the BOTS driver, which names what is wrong
    bad = tmp_path / "jw01234001001_01101_00001_nrs1_uncal.fits"
    bad.write_text("not fits\n" * 100)
    assert _modes.classify_inputs([str(bad)]).entry.name == "bots"
    assert _modes.classify_inputs([str(tmp_path / "nope")]).entry.name == "bots"


def test_s3d_primary_is_the_shared_product_primary(tmp_path):
    """The cube's PRIMARY comes from fits_products.primary_hdu (one list of structural
    keywords for every product), plus the cube's own model keywords."""
    from types import SimpleNamespace

    from astropy.io import fits

    from nirbeam.sinks.cube_fits import write_s3d
    from nirbeam.sinks.fits_products import primary_hdu

    grid = SimpleNamespace(shape=(3, 4, 5), x0=-1.0, y0=-1.0, cdelt=0.1, wave0=1.0, dwave=0.01)
    hdr = {"EXP_TYPE": "NRS_IFU", "NAXIS": 7, "BITPIX": 8, "EXTEND": False, "DATAMODL": "Level1bModel",
           "PATT_NUM": 2, "FILENAME": "x_uncal.fits"}
    p = write_s3d(str(tmp_path / "c_s3d.fits"), np.ones(grid.shape), np.ones(grid.shape),
                  np.ones(grid.shape), grid, hdr, {"weighting": "drizzle"})
    with fits.open(p) as h:
        ph = h[0].header
        assert ph["DATAMODL"] == "IFUCubeModel" and ph["EXP_TYPE"] == "NRS_IFU" and ph["PATT_NUM"] == 2
        assert ph["NAXIS"] == 0 and ph["BITPIX"] == 8 and "FILENAME" not in ph  # not copied
        shared = primary_hdu(hdr, "IFUCubeModel").header
        assert all(ph[k] == shared[k] for k in shared)
        assert h["SCI"].data.shape == grid.shape and h["SCI"].header["CTYPE3"] == "WAVE"


CEERS = "/work/shared/data/modes/mos_ceers"  # three real jwst level-2 MOS nods (FIELD.md)


@pytest.mark.skipif(not os.path.isdir(CEERS), reason="CEERS MOS files not present")
def test_real_level2_mos_files_go_to_the_level2_row():
    c = _modes.classify_inputs([CEERS])
    assert c.entry.name == "mos-level2" and len(c.files) == 3
    assert {f.exp_type for f in c.files} == {"NRS_MSASPEC"}
