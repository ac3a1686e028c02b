"""The plan of a run (nirbeam.stream.plan): work from the mode plan, blocks from the
completion markers, and stage 2 taking its trace and background rules from the region
(so a mode plugs in by its regions, not by a config switch)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from nirbeam.core.geometry import (
    BackgroundRule,
    BoundingBox,
    EnsembleAxis,
    ModePlan,
    SpectralRegion,
    TraceRule,
)
from nirbeam.core.records import ExposureMeta
from nirbeam.modes import BOTS
from nirbeam.stream.plan import (
    RECORD_STEPS,
    PlanError,
    exposure_work,
    rate_blocks,
    spectra_blocks,
)
from nirbeam.stream.settings import Settings

NY, NX = 32, 120
META = ExposureMeta("jw01366004001_04101_00001", "NRS1", "NIRSPEC", "NRS_BRIGHTOBJ", "NRSRAPID",
                    "SUB", 1, 1, NX, NY, 70, 5, 1, 0, 0.90156, 0.90156, 4.5)


def test_bots_work_is_one_full_array_region_in_the_flat_store():
    w = exposure_work(META, Settings())
    assert w.mode == "bots" and w.group == META.group_name and w.store_groups == (META.group_name,)
    (r,) = w.regions
    assert r is w.region and r.bbox == BoundingBox(0, NY, 0, NX)
    assert w.steps[:3] == RECORD_STEPS == ("read", "detector1", "write_rateints")
    assert "whitelight" in w.products and w.ensemble == "time"
    d = w.describe()
    assert d["mode"] == "bots" and d["regions"][0]["store_group"] == META.group_name
    assert d["regions"][0]["bbox"] == [0, NY, 0, NX] and d["regions"][0]["trace"] == "fit"


def _mode(find_regions, ensemble=lambda s: EnsembleAxis("time", 25), flat=True):
    return ModePlan("probe", ("NRS_BRIGHTOBJ",), find_regions, ensemble, ("whitelight",), flat)


def _two(meta, settings):
    return (SpectralRegion("A", meta.detector, BoundingBox(0, 16, 0, NX)),
            SpectralRegion("B", meta.detector, BoundingBox(16, 32, 0, NX)))


def _half(meta, settings):
    return (SpectralRegion("A", meta.detector, BoundingBox(0, 16, 0, NX)),)


@pytest.mark.parametrize("mode, words", [
    (_mode(_two), "2 regions"),
    (_mode(_half), "not the whole 32x120"),
    (_mode(_half, flat=False), "own store groups"),
    (_mode(BOTS.find_regions, ensemble=lambda s: EnsembleAxis("nod")), "'nod'"),
])
def test_plan_refuses_what_the_time_series_stages_cannot_take(mode, words):
    with pytest.raises(PlanError, match="mode 'probe'") as e:
        exposure_work(META, Settings(), mode)
    assert words in str(e.value) and "nirbeam.pipelines" in str(e.value)


def test_rate_and_spectra_blocks_cover_exactly_what_is_left():
    done = np.zeros(70, bool)
    done[:40] = True  # an earlier run completed 1..40
    present = [i for i in range(1, 71) if not 50 <= i <= 55]  # a missing segment
    blocks = rate_blocks("g", 70, present, done, lambda i: i, 32)
    assert [(b.start, b.stop) for b in blocks] == [(33, 64), (65, 70)]
    assert blocks[0].items == tuple(i for i in range(41, 65) if not 50 <= i <= 55)
    assert blocks[0].stored == tuple(range(33, 41)) and blocks[1].stored == ()
    w = exposure_work(META, Settings())
    spec = np.zeros(70, bool)
    spec[:32] = True
    sb = spectra_blocks(w, done, spec, 32, "tok")
    assert [(b.start, b.stop) for b in sb] == [(33, 64)]  # 65..70 have no rates
    assert sb[0].group == META.group_name and sb[0].model_token == "tok"
    np.testing.assert_array_equal(sb[0].rate_done(), done)
    assert spectra_blocks(w, done, done, 32) == []


def _scene(seed=3):
    rng = np.random.default_rng(seed)
    y = np.arange(NY)[:, None]
    x = np.arange(NX)[None, :]
    center = 12.0 + 0.02 * x  # a tilted trace
    img = 2000.0 * np.exp(-0.5 * ((y - center) / 1.2) ** 2) + 5.0
    sci = (img[None] + rng.normal(0, 1.0, (6, NY, NX))).astype(np.float32)
    return sci, np.zeros(sci.shape, np.uint32), center[0]


def test_stage2_takes_trace_and_background_from_the_region():
    """A mode whose region fixes the trace (and subtracts no background) is extracted with
    that trace, whatever ``[extract]`` says: the region, not the config, is the source."""
    from nirbeam.stream.spectra_stage import extraction_model, region_of

    sci, dq, center = _scene()
    s = Settings()
    fitted = extraction_model(sci, dq, META, s)  # BOTS: fitted trace, annulus background
    assert np.max(np.abs(fitted.trace.center(np.arange(NX)) - center)) < 0.1
    assert region_of(META, s) == exposure_work(META, s).region
    offset = TraceRule("fixed", 1, (20.0, 0.0))  # y = 20 (a row away from the star)
    region = SpectralRegion("S1600A1", "NRS1", BoundingBox(0, NY, 0, NX), offset,
                            background=BackgroundRule("none"))
    fixed = extraction_model(sci, dq, META, s, region=region)
    np.testing.assert_allclose(fixed.trace.center(np.arange(NX)), 20.0, atol=1e-9)
    assert fixed.background_region is None and fitted.background_region == (8.0, 15.0)
    bad = replace(region, background=BackgroundRule("nod_partner", partner="B"))
    assert "nod_partner" in extraction_model(sci, dq, META, s, region=bad)
