"""Stage 2's writes overlapped with the next step (issue 14, session 14):
:class:`ProcessBlock` writes a step's cleaned and spectra chunks on a thread while the
next step is read, flagged and extracted; the store and the dead letters are the same as
when every step is written on the DoFn's thread (``NIRBEAM_D1_THREADS=1``), and a failed
write stops the work item as before (raised, later steps not written)."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
from conftest import assert_same_arrays, read_deadletters, run_sim

from nirbeam.sinks import zarr_store
from nirbeam.stream import spectra_stage
from nirbeam.stream.plan import BLOCK
from nirbeam.stream.rate_steps import D1_THREADS_ENV
from nirbeam.stream.settings import Settings
from nirbeam.transforms.spectra import SPECTRUM_ARRAYS

NINTS = 100  # four steps of one chunk (STEP patched to BLOCK): 32, 32, 32, 4
SIM = dict(nints=NINTS, seed=7, ints_per_segment=40)


@pytest.fixture(scope="module")
def serial_store(prism_sim, tmp_path_factory):
    """The store of a whole run of the simulation, writes on the DoFn thread
    (``NIRBEAM_D1_THREADS=1``), no failure: the failed-write tests reprocess copies."""
    out = tmp_path_factory.mktemp("spthr_serial") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(D1_THREADS_ENV, "1")
        assert run_sim(prism_sim(**SIM), out) == 0
    return out / "cubes.zarr"


def _run(sim, out, threads, monkeypatch):
    """The whole run with stage 2 in steps of one chunk, the second step's block
    extraction failing (its integrations one by one, the third of those a dead letter);
    returns the threads the steps were written on."""
    real_block, real_one, real_write = (spectra_stage.extract_block,
                                        spectra_stage.extract_integration,
                                        zarr_store.write_block)
    calls = {"block": 0, "one": 0}
    wrote_on = set()

    def flaky_block(*a, **k):
        calls["block"] += 1
        if calls["block"] == 2:
            raise RuntimeError("injected block failure")
        return real_block(*a, **k)

    def flaky_one(*a, **k):
        calls["one"] += 1
        if calls["one"] == 3:
            raise ValueError("injected extraction failure")
        return real_one(*a, **k)

    def spy_write(root, group, stage, *a, **k):
        if stage in (spectra_stage.SPECTRA, spectra_stage.CLEANED):
            wrote_on.add(threading.current_thread().name)
        return real_write(root, group, stage, *a, **k)

    monkeypatch.setenv(D1_THREADS_ENV, str(threads))
    monkeypatch.setattr(spectra_stage, "STEP", BLOCK)
    monkeypatch.setattr(spectra_stage, "extract_block", flaky_block)
    monkeypatch.setattr(spectra_stage, "extract_integration", flaky_one)
    monkeypatch.setattr(zarr_store, "write_block", spy_write)
    try:
        assert run_sim(sim, out) == 3  # one dead letter
    finally:
        monkeypatch.undo()
    return wrote_on


def test_overlapped_writes_equal_serial_bit_for_bit(prism_sim, tmp_path, monkeypatch):
    sim = prism_sim(**SIM)
    one, two = tmp_path / "one", tmp_path / "two"
    on1 = _run(sim, one, 1, monkeypatch)
    on2 = _run(sim, two, 2, monkeypatch)
    assert not any(n.startswith("nirbeam-spectra-write") for n in on1), on1
    assert on2 and all(n.startswith("nirbeam-spectra-write") for n in on2), on2
    group = f"{sim.exposure}_nrs1"
    for stage, names in ((spectra_stage.SPECTRA, SPECTRUM_ARRAYS), (spectra_stage.CLEANED, ("dq",))):
        assert_same_arrays(one, two, group, stage, (*names, "done"), NINTS)  # NaN fills too
    done = zarr_store.completed(str(two / "cubes.zarr"), group, spectra_stage.SPECTRA)
    assert np.flatnonzero(~done).tolist() == [BLOCK + 2]  # the second step's third
    d1, d2 = read_deadletters(one), read_deadletters(two)
    assert d1 == d2
    assert [(x["integration"], x["step"]) for x in d1] == [(BLOCK + 3, "extract")]


@pytest.mark.parametrize("threads", [1, 2])
def test_failed_write_stops_the_item_as_before(prism_sim, serial_store, tmp_path, monkeypatch,
                                               threads):
    """The second step's spectra write fails: the work item raises that error, the first
    step is written, the second's cleaned chunk (written before its spectra) too, no later
    step is written — with the writes on the DoFn thread or overlapped."""
    sim, root = prism_sim(**SIM), str(tmp_path / "cubes.zarr")
    shutil.copytree(serial_store, root)
    group = f"{sim.exposure}_nrs1"
    for stage in (spectra_stage.SPECTRA, spectra_stage.CLEANED):
        spectra_stage._reset_completed(root, group, stage)
    block = spectra_stage.SpectraBlock(exposure=sim.exposure, detector="NRS1", nints=NINTS,
                                       start=1, stop=NINTS, model_token="failed-write")
    assert block.group == group
    real_write = zarr_store.write_block

    def failing(root_, group_, stage, start, *a, **k):
        if stage == spectra_stage.SPECTRA and start == BLOCK + 1:
            raise OSError("injected write failure")
        return real_write(root_, group_, stage, start, *a, **k)

    monkeypatch.setenv(D1_THREADS_ENV, str(threads))
    monkeypatch.setattr(spectra_stage, "STEP", BLOCK)
    monkeypatch.setattr(zarr_store, "write_block", failing)
    with pytest.raises(OSError, match="injected write failure"):
        spectra_stage.ProcessBlock(root, Settings())(block)
    spec = zarr_store.completed(root, group, spectra_stage.SPECTRA)
    cleaned = zarr_store.completed(root, group, spectra_stage.CLEANED)
    assert np.flatnonzero(spec).tolist() == list(range(BLOCK))
    assert np.flatnonzero(cleaned).tolist() == list(range(2 * BLOCK))


def test_stage2_kernels_release_the_gil():
    """The kernels of a step's flags and extraction (the rolling flags, the motion fit,
    the block extraction) have ``nogil=True``: the step writer's compression (its Python
    glue) runs beside them instead of waiting for the GIL."""
    from nirbeam.transforms import outliers, spectra_block

    for kernel in (outliers._flag_rolling, outliers._motion_setup, outliers._motion_normal,
                   outliers._motion_apply, outliers._motion_flag,
                   spectra_block._extract_block_kernel):
        assert kernel.targetoptions.get("nogil") is True, kernel.__name__
