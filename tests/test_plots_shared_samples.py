"""The trace and 1/f plots' kernels on their sampled rateints, computed from the products'
read of all the rateints (``trace_diagnostics(..., samples)``) and handed to the plots
(``shared_samples``), equal bit for bit what the plots compute reading the samples again."""

import numpy as np
import pytest

from nirbeam.sinks import diagnostics as d
from nirbeam.sinks import zarr_store as zs
from nirbeam.stream import products as P
from nirbeam.transforms.spectra import ExtractionModel
from nirbeam.transforms.trace import TraceModel, WavelengthSolution

G = "g"
N, NY, NX = 600, 10, 24  # > MAX_SAMPLED: the plots sample 256 of them


def _store(tmp_path, seed=3, rate_missing=(5, 200, 201, 599), spectra_missing=range(64, 96)):
    rng = np.random.default_rng(seed)
    root = str(tmp_path / f"c{seed}.zarr")
    model = ExtractionModel(
        trace=TraceModel(coefficients=(4.6, 0.3), width_coefficients=(1.1,),
                         x_range=(0.0, NX - 1.0)),
        wavelength=WavelengthSolution(np.linspace(1, 5, NX), "polynomial"),
        profile=np.full((NY, NX), 1.0 / NY), scene_mask=np.zeros((NY, NX), bool),
        half_width=2.0, background_region=(3.0, 5.0))
    m = np.zeros((NY, NX), bool)
    m[2:8] = True
    model = ExtractionModel(**{**model.__dict__, "scene_mask": m})
    arrays, attrs = model.to_arrays()
    zs.save_arrays(root, f"{G}/extraction", arrays, attrs)
    coords = {"integration_number": np.arange(1, N + 1),
              "int_mid_BJD_TDB": 60000 + np.arange(N) * 1e-3,
              "int_mid_MJD_UTC": 60000 + np.arange(N) * 1e-3}
    zs.prepare_stage(root, G, P.RATEINTS, N, (NY, NX), {"sci": np.float32, "dq": np.uint32},
                     coords=coords, time_chunk=32)
    sci = rng.normal(3.0, 2.0, (N, NY, NX)).astype(np.float32)
    sci[:, 4:6] += 100.0 * (1 + 0.01 * rng.normal(size=(N, 1, NX)))
    sci[rng.random(sci.shape) < 0.01] = np.nan
    dq = (rng.random(sci.shape) < 0.02).astype(np.uint32)
    ok = np.ones(N, bool)
    ok[list(rate_missing)] = False
    for s in range(0, N, 32):
        zs.write_block(root, G, P.RATEINTS, s + 1, {"sci": sci[s:s + 32], "dq": dq[s:s + 32]},
                       ok[s:s + 32])
    zs.prepare_stage(root, G, P.SPECTRA, N, (NX,), dict.fromkeys(
        ("flux", "flux_error", "background"), np.float64), frame_dims=("x",), coords=coords,
        time_chunk=32)
    zs.save_arrays(root, f"{G}/{P.SPECTRA}", {"wavelength": np.linspace(1, 5, NX)})
    sdone = np.ones(N, bool)
    sdone[list(spectra_missing)] = False  # rateints there, spectra not: still sampled
    return root, arrays, attrs, sdone


def _separate(root, arrays, attrs):
    """What the plots compute reading their samples themselves."""
    idx = d.sampled_indices(zs.completed(root, G, P.RATEINTS))
    r = d._SampledRates(root, G, idx)
    c, w = r.both(arrays["trace_center"], float(attrs["half_width"]),
                  tuple(attrs["background_region"]), arrays["scene_mask"])
    return idx, c, w, r.column_offsets(arrays["scene_mask"])


@pytest.mark.parametrize("seed", [3, 4])
def test_shared_kernels_equal_the_plots_own_reads(tmp_path, seed):
    root, arrays, attrs, sdone = _store(tmp_path, seed)
    arrays, attrs = zs.load_arrays(root, f"{G}/extraction")
    samples = {}
    diag = P.trace_diagnostics(root, G, sdone, samples)
    assert np.isnan(diag["width"][64:96]).all()  # spectra not done: no diagnostics there
    k = samples[G]
    idx, c, w, off = _separate(root, arrays, attrs)
    assert idx.size == d.MAX_SAMPLED and np.isin(np.arange(64, 96), idx).any()
    r = k.result()
    assert r is not None
    for a, b in zip(r, (c, w, off), strict=True):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    # handed over: the plots take them (no read), the same values
    with d.shared_samples(root, samples):
        s = d._SampledRates(root, G, idx)
        s.blocks = None  # reading would fail
        got = s.both(arrays["trace_center"], float(attrs["half_width"]),
                     tuple(attrs["background_region"]), arrays["scene_mask"])
        np.testing.assert_array_equal(got[0], c)
        np.testing.assert_array_equal(s.column_offsets(arrays["scene_mask"]), off)
    assert not d._SHARED


def test_shared_kernels_used_only_when_they_match(tmp_path):
    root, arrays, attrs, sdone = _store(tmp_path)
    arrays, attrs = zs.load_arrays(root, f"{G}/extraction")
    samples = {}
    P.trace_diagnostics(root, G, sdone, samples)
    idx, c, w, off = _separate(root, arrays, attrs)
    k = samples[G]
    bg = tuple(attrs["background_region"])
    assert k.matches(idx, arrays["trace_center"], attrs["half_width"], bg, arrays["scene_mask"])
    assert not k.matches(idx[1:], arrays["trace_center"], attrs["half_width"], bg, None)
    assert not k.matches(idx, arrays["trace_center"] + 1e-9, attrs["half_width"], bg, None)
    assert not k.matches(idx, arrays["trace_center"], 2.5, bg, None)
    assert not k.matches(idx, arrays["trace_center"], attrs["half_width"], None, None)
    assert not k.matches(idx, arrays["trace_center"], attrs["half_width"], bg,
                         ~arrays["scene_mask"].astype(bool))
    # another model: the plots read (and compute their own values)
    with d.shared_samples(root, samples):
        s = d._SampledRates(root, G, idx)
        got = s.both(arrays["trace_center"], 1.5, bg, arrays["scene_mask"])
    want = d._SampledRates(root, G, idx).both(arrays["trace_center"], 1.5, bg,
                                              arrays["scene_mask"])
    np.testing.assert_array_equal(got[0], want[0])
    assert not np.array_equal(got[0], c, equal_nan=True)


def test_samples_fed_out_of_order_or_partly_give_no_result():
    idx = np.arange(0, 100, 3)
    tc = np.full(NX, 4.0)
    rng = np.random.default_rng(1)
    sci = rng.normal(size=(100, NY, NX)).astype(np.float32)
    dq = np.zeros(sci.shape, np.uint32)
    k = d.SampledKernels(idx, tc, 2.0, None, None)
    k.feed(0, sci[:50], dq[:50])
    assert k.result() is None  # 50..99 missing
    k.feed(60, sci[60:], dq[60:])  # 50..59 skipped
    assert k.result() is None
    k = d.SampledKernels(idx, tc, 2.0, None, None)
    for s in range(0, 100, 7):
        k.feed(s, sci[s:s + 7], dq[s:s + 7])
    c, w, off = k.result()
    assert off is None
    want = d.measure_trace(sci[idx], dq[idx], tc, 2.0, None)
    np.testing.assert_array_equal(c, want[0])
    np.testing.assert_array_equal(w, want[1])


def test_shared_spectra_are_the_store_reads_and_used_only_with_the_same_markers(tmp_path):
    root, arrays, attrs, sdone = _store(tmp_path)
    rng = np.random.default_rng(8)
    flux = rng.normal(size=(N, NX))
    zs.write_block(root, G, P.SPECTRA, 1, {"flux": flux[:32]}, sdone[:32])
    read = d._spectra_arrays(root, G)  # nothing shared: the store's
    np.testing.assert_array_equal(read["flux"], zs.read_stack(root, G, P.SPECTRA, "flux"))
    assert read["done"].sum() == 32
    fake = {n: np.asarray(v) + 0 for n, v in read.items()}
    fake["flux"] = fake["flux"] + 1.0  # told apart from the store's
    with d.shared_samples(root, {}, {G: fake}):
        np.testing.assert_array_equal(d._spectra_arrays(root, G)["flux"], fake["flux"])
        other = {**fake, "done": ~fake["done"]}
    with d.shared_samples(root, {}, {G: other}):  # other markers: read again
        np.testing.assert_array_equal(d._spectra_arrays(root, G)["flux"], read["flux"])
    assert not d._SHARED_SPECTRA
