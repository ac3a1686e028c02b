"""Run jwst's IRS2 reference correction on :func:`nirbeam.sim.irs2.comparison_case` and save
what the test compares against when jwst is not installed (``tests/data/irs2_jwst.npz``).

jwst 3.0 cannot be in the ``test`` extra: it needs numpy >= 2, astropy >= 7.2 and
scipy >= 1.15.3, above the lower bounds that ``./run lower-bounds`` tests
(ci/lower-bounds.txt: numpy 1.26, astropy 6.1, scipy 1.14.1). So::

    python -m venv .venv-jwst && .venv-jwst/bin/pip install "jwst==3.0.*" -e ".[test]"
    .venv-jwst/bin/python bench/irs2_jwst_fixture.py          # writes the fixture
    .venv-jwst/bin/python -m pytest tests/test_irs2.py        # compares with jwst itself

The jwst path is the refpix step's for IRS2 with its defaults: ``flag_bad_refpix``
(flag_only, n_sigma 3), ``flag_bad_refpix`` (replace_only), ``correct_model``. Saved: the
flagged reference rows and the corrected values at 20,000 seeded pixel positions per
detector, with the time each took.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nirbeam.sim.irs2 import comparison_case  # noqa: E402
from nirbeam.transforms import irs2  # noqa: E402

CASES = {"NRS1": 3, "NRS2": 2}  # detector -> ngroups
NSAMPLE = 20000


def jwst_correct(data: np.ndarray, ref: irs2.IRS2Reference, detector: str):
    """jwst's IRS2 refpix on one integration (ngroups, 3200, 2048): (corrected, bad rows)."""
    from jwst.refpix import irs2_subtract_reference as j
    from stdatamodels.jwst import datamodels
    from stdatamodels.jwst.datamodels import dqflags

    ng = data.shape[0]
    m = datamodels.RampModel(
        data=data[None].copy(), pixeldq=np.zeros(data.shape[1:], np.uint32),
        groupdq=np.zeros((1, *data.shape), np.uint8), err=np.zeros((1, *data.shape), np.float32))
    m.meta.exposure.nrs_normal = 16
    m.meta.exposure.nrs_reference = 4
    m.meta.instrument.name = "NIRSPEC"
    m.meta.instrument.detector = detector
    cols = {}
    for name, a in (("alpha", ref.alpha), ("beta", ref.beta)):
        for k in range(4):
            v = np.empty(2 * a.shape[1], np.float32)
            v[0::2], v[1::2] = a[k].real, a[k].imag
            cols[f"{name}_{k}"] = v

    class _Ref:  # the two tables IRS2Model exposes
        irs2_table = np.rec.fromarrays(list(cols.values()), names=list(cols))
        dq_table = np.rec.fromarrays([ref.dq_output, ref.dq_odd_even, ref.dq_mask],
                                     names=["output", "odd_even", "mask"])

    j.flag_bad_refpix(m, n_sigma=3.0, flag_only=True)
    bad = np.flatnonzero(np.any(m.pixeldq & dqflags.pixel["BAD_REF_PIXEL"], axis=1))
    j.flag_bad_refpix(m, replace_only=True)
    out = j.correct_model(m, _Ref())
    assert out.data.shape == (1, ng, 2048, 2048)
    return np.asarray(out.data[0], np.float32), bad


def sample_positions(ng: int, seed: int = 7) -> np.ndarray:
    """(NSAMPLE, 3) int: (group, y, x) positions compared."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, ng, NSAMPLE), rng.integers(0, 2048, NSAMPLE),
                     rng.integers(0, 2048, NSAMPLE)], axis=1)


def main() -> None:
    import jwst

    out = {"jwst_version": np.array(jwst.__version__)}
    for det, ng in CASES.items():
        data, ref = comparison_case(ngroups=ng)
        t0 = time.perf_counter()
        jw, bad = jwst_correct(data, ref, det)
        t1 = time.perf_counter()
        mine = irs2.subtract_reference_irs2(data, ref, det)
        t2 = time.perf_counter()
        pos = sample_positions(ng)
        g, y, x = pos.T
        d = np.abs(mine.astype(np.float64) - jw)
        print(f"{det}: {ng} groups, jwst {t1 - t0:.1f} s, nirbeam {t2 - t1:.1f} s; "
              f"max |diff| {d.max():.3g} DN, max rel {(d / np.abs(jw)).max():.3g}; "
              f"bad reference rows {bad.tolist()}")
        out[f"{det}_pos"] = pos.astype(np.int32)
        out[f"{det}_values"] = jw[g, y, x]
        out[f"{det}_bad_rows"] = bad.astype(np.int32)
        out[f"{det}_seconds"] = np.array([t1 - t0, t2 - t1])
    path = ROOT / "tests" / "data" / "irs2_jwst.npz"
    path.parent.mkdir(exist_ok=True)
    np.savez_compressed(path, **out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
