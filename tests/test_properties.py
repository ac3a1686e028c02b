"""Property tests (hypothesis): random shapes, DQ patterns, NaN/inf inputs.

Invariants: no crash; no NaN or inf leaks into an output that is not flagged DO_NOT_USE;
the reader returns exactly what was written.
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nirbeam import dqflags
from nirbeam.stream.uncal import plan_exposures, read_ramp, scan_segment
from nirbeam.transforms.detector1 import Detector1Params, RampTiming, run_detector1
from nirbeam.transforms.outliers import flag_outliers
from nirbeam.transforms.reference import ReferenceArrays

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(
    nints=st.integers(1, 3), ngroups=st.integers(1, 4), ny=st.integers(1, 6), nx=st.integers(1, 7),
    seed=st.integers(0, 2**31), split=st.booleans(),
)
def test_reader_round_trip_any_shape(tmp_path_factory, uncal_writer, nints, ngroups, ny, nx, seed, split):
    rng = np.random.default_rng(seed)
    sci = rng.integers(0, 65536, (nints, ngroups, ny, nx), dtype=np.uint16)
    sci.flat[0] = 65535
    sci.flat[-1] = 0
    d = tmp_path_factory.mktemp("rt")
    paths = []
    cut = 1 if (split and nints > 1) else nints
    for k, (a, b) in enumerate(((0, cut), (cut, nints))):
        if a == b:
            continue
        p = d / f"jw01366004001_04101_00001-seg{k + 1:03d}_nrs1_uncal.fits"
        paths.append(uncal_writer(p, sci[a:b], nints_total=nints, intstart=a + 1, segnum=k + 1,
                                  segtot=2 if cut < nints else 1))
    (plan,) = plan_exposures([scan_segment(p) for p in paths])
    assert plan.missing == ()
    for i in range(1, nints + 1):
        np.testing.assert_array_equal(read_ramp(plan.segment_of(i), i), sci[i - 1])


def _refs(rng, ny, nx, ng, nan_frac):
    r = ReferenceArrays.flat(ny, nx, ng, bias=1000.0, readnoise=12.0, gain=1.1)
    mask = rng.choice(np.array([0, dqflags.DO_NOT_USE, dqflags.HOT, dqflags.DEAD | 1], np.uint32),
                      size=(ny, nx), p=[0.85, 0.05, 0.05, 0.05])
    gain = r.gain.copy()
    rn = r.readnoise.copy()
    bad = rng.random((ny, nx)) < nan_frac
    # what the reference loader hands over for NaN pixels: finite values + DO_NOT_USE
    gain[bad] = 1.0
    mask[bad] |= dqflags.DO_NOT_USE | dqflags.NO_GAIN_VALUE
    return ReferenceArrays(
        mask=mask, saturation=np.full((ny, nx), 60000, np.float32), saturation_dq=r.saturation_dq,
        superbias=r.superbias, superbias_dq=r.superbias_dq, linearity=None,
        linearity_dq=r.linearity_dq, dark=None, dark_dq=r.dark_dq, readnoise=rn, gain=gain,
    )


@SETTINGS
@given(
    ngroups=st.integers(1, 7), ny=st.integers(1, 5), nx=st.integers(1, 9), seed=st.integers(0, 2**31),
    nan_frac=st.sampled_from([0.0, 0.2]), extreme=st.booleans(),
)
def test_detector1_never_leaks_nan_into_good_pixels(ngroups, ny, nx, seed, nan_frac, extreme):
    rng = np.random.default_rng(seed)
    rate = rng.uniform(-5, 3000, (ny, nx))
    t = 0.22616
    ramp = 1000 + rate[None] * t * np.arange(1, ngroups + 1)[:, None, None]
    ramp = ramp + rng.normal(0, 12, ramp.shape)
    if extreme:  # saturated, zero and jumpy pixels
        ramp[:, 0, 0] = 65535
        ramp.flat[rng.integers(0, ramp.size)] = 0
        ramp[ngroups // 2:, -1, -1] += 20000
    ramp = np.clip(ramp, 0, 65535).astype(np.uint16)
    refs = _refs(rng, ny, nx, ngroups, nan_frac)
    res = run_detector1(ramp, refs, RampTiming(ngroups, 1, 0, t, t), Detector1Params())
    for name in ("rate", "err", "var_poisson", "var_rnoise"):
        a = getattr(res, name)
        assert a.shape == (ny, nx)
        usable = (res.dq & dqflags.DO_NOT_USE) == 0
        assert np.all(np.isfinite(a[usable])), name
    assert np.all((res.dq & refs.mask) == refs.mask)  # reference DQ always carried


@SETTINGS
@given(nint=st.integers(1, 30), window=st.integers(3, 25), seed=st.integers(0, 2**31))
def test_outliers_with_nan_inputs(nint, window, seed):
    rng = np.random.default_rng(seed)
    cube = rng.normal(100, 5, (nint, 3, 4)).astype(np.float32)
    err = np.full_like(cube, 5.0)
    dq = np.zeros(cube.shape, np.uint32)
    nan = rng.random(cube.shape) < 0.1
    cube[nan] = np.nan
    dq[nan] |= dqflags.DO_NOT_USE
    new = flag_outliers(cube, err, dq, window=window, n_sigma=5.0)
    assert new.shape == dq.shape and new.dtype == np.uint32
    assert np.all((new & dq) == dq)  # never clears a flag
    assert np.all(new[nan] == dq[nan])  # already-bad pixels untouched


def _scene(rng, n, ny=20, nx=48):
    y = np.arange(ny)[:, None]
    x = np.arange(nx)[None, :]
    yc = 9.5 + 0.02 * (x - nx / 2) + 0.001 * (x - nx / 2) ** 2
    prof = np.exp(-0.5 * ((y - yc) / 1.1) ** 2)
    prof /= prof.sum(axis=0)
    flux = 2000 + 500 * np.sin(x / 7.0)
    img = flux * prof
    return np.stack([img + rng.normal(0, 3, img.shape) for _ in range(n)]).astype(np.float32)


@SETTINGS
@given(seed=st.integers(0, 2**31), frac=st.sampled_from([0.0, 0.02, 0.1]), inf=st.booleans())
def test_extraction_flags_instead_of_leaking_nan(seed, frac, inf):
    from nirbeam.transforms.spectra import build_extraction_model, extract_integration

    rng = np.random.default_rng(seed)
    imgs = _scene(rng, 6)
    dq = np.zeros(imgs.shape, np.uint32)
    model = build_extraction_model(imgs, dq, half_width=4.0, background_region=(6.0, 9.0))
    rate = imgs[0].copy()
    d = np.zeros(rate.shape, np.uint32)
    bad = rng.random(rate.shape) < frac
    rate[bad] = np.inf if inf else np.nan
    d[bad] = dqflags.DO_NOT_USE
    var = np.full(rate.shape, 9.0, np.float32)
    out = extract_integration(rate, np.sqrt(var), d, var * 0.5, var * 0.5, model)
    for name in ("flux", "flux_error", "box_flux"):
        a = out[name]
        ok = (out["dq"] & dqflags.DO_NOT_USE) == 0
        assert np.all(np.isfinite(a[ok])), name
    assert np.isfinite(out["flux"]).mean() > 0.9
