"""Stage 2's writes overlapped with the next step (issue 14, session 14):
:class:`ProcessBlock` writes a step's cleaned and spectra chunks on a thread while the
next step is read, flagged and extracted; the store and the dead letters are the same as
when every step is written on the DoFn's thread (``NIRBEAM_D1_THREADS=1``), and a failed
write stops the work item as before (raised, later steps not written)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import zarr

from nirbeam.sim.simulator import simulate
from nirbeam.sinks import zarr_store
from nirbeam.stream import spectra_stage
from nirbeam.stream.cli import main
from nirbeam.stream.plan import BLOCK
from nirbeam.stream.rate_steps import D1_THREADS_ENV
from nirbeam.stream.settings import Settings
from nirbeam.transforms.spectra import SPECTRUM_ARRAYS

NINTS = 100  # four steps of one chunk (STEP patched to BLOCK): 32, 32, 32, 4


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("spthr")
    return simulate(d, preset="prism-sub512", nints=NINTS, seed=7, ints_per_segment=40)


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
        assert main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--out", str(out),
                     "--no-progress", "--runner", "direct"]) == 3  # one dead letter
    finally:
        monkeypatch.undo()
    return wrote_on


def test_overlapped_writes_equal_serial_bit_for_bit(sim, tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    on1 = _run(sim, one, 1, monkeypatch)
    on2 = _run(sim, two, 2, monkeypatch)
    assert not any(n.startswith("nirbeam-spectra-write") for n in on1), on1
    assert on2 and all(n.startswith("nirbeam-spectra-write") for n in on2), on2
    group = f"{sim.exposure}_nrs1"
    for stage, names in ((spectra_stage.SPECTRA, SPECTRUM_ARRAYS), (spectra_stage.CLEANED, ("dq",))):
        za = zarr.open_group(str(one / "cubes.zarr"), mode="r")[group][stage]
        zb = zarr.open_group(str(two / "cubes.zarr"), mode="r")[group][stage]
        for name in (*names, "done"):
            a, b = za[name][:], zb[name][:]
            assert a.dtype == b.dtype and a.shape == b.shape and a.shape[0] == NINTS
            assert a.tobytes() == b.tobytes(), (stage, name)  # NaN fills included
    done = zarr_store.completed(str(two / "cubes.zarr"), group, spectra_stage.SPECTRA)
    assert np.flatnonzero(~done).tolist() == [BLOCK + 2]  # the second step's third
    d1 = [json.loads(x) for x in (one / "deadletter.jsonl").read_text().splitlines()]
    d2 = [json.loads(x) for x in (two / "deadletter.jsonl").read_text().splitlines()]
    assert d1 == d2
    assert [(x["integration"], x["step"]) for x in d1] == [(BLOCK + 3, "extract")]


@pytest.mark.parametrize("threads", [1, 2])
def test_failed_write_stops_the_item_as_before(sim, tmp_path, monkeypatch, threads):
    """The second step's spectra write fails: the work item raises that error, the first
    step is written, the second's cleaned chunk (written before its spectra) too, no later
    step is written — with the writes on the DoFn thread or overlapped."""
    out = tmp_path / "run"
    monkeypatch.setenv(D1_THREADS_ENV, "1")
    assert main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--out", str(out),
                 "--no-progress", "--runner", "direct"]) == 0
    root, group = str(out / "cubes.zarr"), f"{sim.exposure}_nrs1"
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
