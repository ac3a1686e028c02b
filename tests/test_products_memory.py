"""The products step's memory does not grow with NINTS (issue 14), and what keeps it flat
changes no product: the x1dints file written in row blocks is byte for byte the
whole-table file, and the trace / 1/f diagnostics read block by block equal the
whole-stack kernels.

Two G395H SUB2048 exposures (NRS1, 3 groups, so that stage 1 is cheap) of N and 4N
integrations are run once; the products step (``finalize_products``; plots off: they are
slow, and their sampled-rates reads are bounded by MAX_SAMPLED and tested for equality
below) is then rerun in this process under tracemalloc on each store.
"""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from nirbeam.sim.simulator import simulate
from nirbeam.sinks import zarr_store
from nirbeam.stream import products
from nirbeam.stream.pipeline import run
from nirbeam.stream.settings import Settings
from nirbeam.stream.uncal import find_uncal_files, plan_exposures, scan_segment

N = 32
NX = 2048
#: fit and plots off; every table on, as a default run
CONFIG = {"fit": {"per": None}, "products": {"plots": False}}


def _exposure(tmp_path_factory, nints):
    d = tmp_path_factory.mktemp(f"mem{nints}")
    sim = simulate(d / "sim", preset="g395h-sub2048", nints=nints, seed=3, ngroups=3,
                   detectors=("NRS1",), ints_per_segment=nints)
    out = d / "out"
    run([str(sim.outdir)], str(out), refs_dir=str(sim.refs_dir), config=CONFIG,
        progress=False)
    plans = plan_exposures([scan_segment(f) for f in find_uncal_files([str(sim.outdir)])])
    return out, plans


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _exposure(tmp_path_factory, N)


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    return _exposure(tmp_path_factory, 4 * N)


def _products_peak(out, plans) -> float:
    """tracemalloc peak (MiB) of the products step over what was held before it."""
    settings = Settings.from_dict(CONFIG)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        products.finalize_products(str(out), str(out / "cubes.zarr"), plans, settings)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return (peak - base) / 2**20


def test_products_peak_is_flat_in_nints(small, large, monkeypatch):
    """From N to 4N integrations, the products step's peak grows by less than 3x the
    spectra it must read (7 float64 arrays of NX per integration): no whole-exposure copy
    of a table or cube on top of them. N = 32 fills a rateints chunk and a trace block
    (below that the peak grows with them, up to their size); x1dints blocks of 8 rows so
    that N already spans blocks.

    The old x1dints writer (the whole table at once: ~20 float64 columns of NX per row,
    formed and then copied by astropy) grows by ~5-6x that (mutation ``X1D_BLOCK`` =
    10**9: red).
    """
    monkeypatch.setattr(products, "X1D_BLOCK", 8)
    p1 = _products_peak(*small)
    p4 = _products_peak(*large)
    per_int = (p4 - p1) * 2**20 / (3 * N)
    spectra_row = len(products._PRODUCT_SPECTRA) * NX * 8
    assert per_int < 3 * spectra_row, (p1, p4, per_int / spectra_row)


def test_x1dints_in_blocks_is_the_whole_table_file(large, tmp_path, monkeypatch):
    """Row blocks (7 rows: a short last block; and 1 row) give the file that
    ``write_x1dints`` writes for the whole table, byte for byte."""
    from nirbeam.sinks.fits_products import write_x1dints
    from nirbeam.stream.product_tables import white_light_series

    out, plans = large
    (plan,) = plans
    root, g = str(out / "cubes.zarr"), plan.meta.group_name
    done = zarr_store.completed(root, g, "spectra")
    S = {n: zarr_store.read_stack(root, g, "spectra", n) for n in products._PRODUCT_SPECTRA}
    wl = zarr_store.read_stack(root, g, "spectra", "wavelength")
    num = zarr_store.read_stack(root, g, "spectra", "integration_number")
    source = products.wl_source(root, g)
    w = white_light_series(done, S, wl, source, Settings.from_dict(CONFIG).lightcurve)
    t, _ = products.x1dints_table(plan, num, wl, w.flux, w.err, w.cdq, S, source)
    write_x1dints(str(tmp_path / "whole.fits"), t)
    whole = (tmp_path / "whole.fits").read_bytes()
    assert len(whole) % 2880 == 0
    for block in (7, 1, 4 * N):
        monkeypatch.setattr(products, "X1D_BLOCK", block)
        d = tmp_path / f"b{block}"
        name, unit = products._write_x1dints(str(d), plan, num, wl, w.flux, w.err, w.cdq, S,
                                             source)
        assert unit == "DN/s"
        assert (d / name).read_bytes() == whole, block
    # and the run's own file is that file
    assert (out / name).read_bytes() == whole


def test_sampled_rates_in_blocks_equal_whole_stack_kernels(large, monkeypatch):
    from nirbeam.sinks import diagnostics as D

    out, plans = large
    root, g = str(out / "cubes.zarr"), plans[0].meta.group_name
    arrays, attrs = zarr_store.load_arrays(root, f"{g}/extraction")
    idx = np.arange(0, 4 * N, 4)  # 32 sampled: blocks of 5 (a short last one)
    sci = zarr_store.read_stack(root, g, "rateints", "sci", idx)
    dq = zarr_store.read_stack(root, g, "rateints", "dq", idx)
    monkeypatch.setattr(D, "_BLOCK", 5)
    s = D._SampledRates(root, g, idx)
    bg = tuple(attrs["background_region"]) if attrs.get("background_region") else None
    for a, b in zip(s.trace(arrays["trace_center"], float(attrs["half_width"]), bg),
                    D.measure_trace(sci, dq, arrays["trace_center"], float(attrs["half_width"]),
                                    bg), strict=True):
        assert np.array_equal(a, b, equal_nan=True)
    assert np.isfinite(a).sum() > 25
    c = s.column_offsets(arrays["scene_mask"])
    assert np.array_equal(c, D.column_offsets(sci, dq, arrays["scene_mask"]), equal_nan=True)
    assert c.shape == (idx.size, sci.shape[-1]) and np.isfinite(c).any()
