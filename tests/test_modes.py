"""Geometry as data: the BOTS mode plan, region rules, and the store schema's agreement with
the modules that still carry their own copies of stage names and dtypes."""

from __future__ import annotations

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
