"""Batch rateints in blocks: planning, whole-chunk block writes, reads back, alignment."""

import time

import numpy as np
import pytest

from nirbeam.sinks import zarr_store as zs
from nirbeam.stream.pipeline import RateBlock, rate_blocks

ARR = {"sci": np.float32, "dq": np.uint32}


def test_blocks_are_chunk_aligned_and_skip_complete_ones():
    done = np.zeros(70, bool)
    done[:32] = True  # block 1 complete: not planned
    done[40] = True  # integration 41 complete: read back, not recomputed
    present = [i for i in range(1, 71) if i != 50]  # 50 in a missing segment
    blocks = rate_blocks("g", 70, present, done, lambda i: i, block=32)
    assert [(b.start, b.stop) for b in blocks] == [(33, 64), (65, 70)]
    b = blocks[0]
    assert isinstance(b, RateBlock) and b.stored == (41,)
    assert b.items == tuple(i for i in range(33, 65) if i not in (41, 50))
    assert blocks[1].items == tuple(range(65, 71)) and blocks[1].stored == ()
    assert rate_blocks("g", 70, present, np.ones(70, bool), lambda i: i) == []


def test_block_write_is_one_chunk_per_array_and_reads_back(tmp_path, rng):
    root = str(tmp_path / "c.zarr")
    zs.prepare_stage(root, "g", "rateints", 40, (4, 8), ARR, time_chunk=16)
    assert zs.time_chunk(root, "g", "rateints") == 16
    sci = rng.normal(0, 1, (16, 4, 8)).astype(np.float32)
    dq = rng.integers(0, 9, (16, 4, 8)).astype(np.uint32)
    ok = np.ones(16, bool)
    ok[3] = False
    zs.write_block(root, "g", "rateints", 17, {"sci": sci, "dq": dq}, ok)
    back = zs.read_block(root, "g", "rateints", ("sci", "dq"), slice(16, 32))
    np.testing.assert_array_equal(back["sci"], sci)
    np.testing.assert_array_equal(back["dq"], dq)
    done = zs.completed(root, "g", "rateints")
    assert done[16:32].tolist() == ok.tolist() and not done[:16].any() and not done[32:].any()
    chunks = sorted((tmp_path / "c.zarr" / "g" / "rateints" / "sci" / "c").iterdir())
    assert [c.name for c in chunks] == ["1"]  # the block's one chunk, nothing else
    # the short last block runs to the end of the exposure: allowed
    zs.write_block(root, "g", "rateints", 33, {"sci": sci[:8]}, np.ones(8, bool))
    with pytest.raises(zs.StoreError, match="block 9..24 is not aligned with chunks of 16"):
        zs.write_block(root, "g", "rateints", 9, {"sci": sci}, ok)
    assert np.isnan(zs.fill_values(root, "g", "rateints", ("sci",))["sci"])  # NaN: never written


def test_block_size_keeps_every_worker_busy():
    from nirbeam.stream.pipeline import RATE_BLOCK, rate_block_size
    from nirbeam.stream.runners import RunnerSpec

    assert rate_block_size(1200) == RATE_BLOCK  # direct: one worker, large blocks
    assert rate_block_size(24) == 24  # one worker: one block (and chunk) of 24
    assert rate_block_size(16, RunnerSpec("dask", workers=2)) == 2  # 8 blocks for 2 workers
    assert rate_block_size(3, RunnerSpec("multiprocess")) == 1


class _Recorder:
    """Stands in for a Beam distribution: keeps every value."""

    def __init__(self):
        self.values = []

    def update(self, v):
        self.values.append(v)


def test_block_ms_times_the_write_not_the_next_blocks_calibration(tmp_path, monkeypatch):
    """``write_rateints.block_ms`` is the block write's own time on the writer thread. It
    used to run from the hand-over until the next block had been calibrated (the drain),
    so it grew with detector1's time: here each integration's calibration takes 0.4 s and
    the write of a 2 x 4 x 8 block a few ms, so the old span read >= 800 ms."""
    from types import SimpleNamespace

    from nirbeam.stream import rate_steps
    from nirbeam.stream.rate_steps import RATE_ARRAYS, RATEINTS, CalibrateBlock

    root = str(tmp_path / "c.zarr")
    zs.prepare_stage(root, "g", RATEINTS, 4, (4, 8), RATE_ARRAYS, time_chunk=2)
    calib_s = 0.4

    def calibrate(holder):
        item = holder.pop()
        time.sleep(calib_s)  # detector1's time, overlapped with the previous block's write
        v = np.full((4, 8), float(item.key.integration), np.float32)
        return SimpleNamespace(rate=v, err=v, dq=np.zeros((4, 8), np.uint32), var_poisson=v,
                               var_rnoise=v)

    monkeypatch.setattr(rate_steps, "read_record", lambda item: item)
    cb = CalibrateBlock.__new__(CalibrateBlock)  # no Beam metrics outside a pipeline
    cb.root = root
    cb.calibrate = SimpleNamespace(owned=calibrate)
    cb.m = {k: SimpleNamespace(inc=lambda n=1: None)
            for k in ("read.records", "detector1.records", "write_rateints.records")}
    cb.ms = {"read": _Recorder(), "detector1": _Recorder()}
    cb.block_ms = _Recorder()
    items = [SimpleNamespace(key=SimpleNamespace(integration=i)) for i in range(1, 5)]
    cb.start_bundle()
    for b in (RateBlock("g", 1, 2, tuple(items[:2])), RateBlock("g", 3, 4, tuple(items[2:]))):
        assert list(cb.process(b)) == []
    assert list(cb.finish_bundle()) == []
    assert len(cb.block_ms.values) == 2
    # the first block's write overlapped 2 x 0.4 s of calibration: its own time is far less
    assert all(0 <= v < 2 * calib_s * 1000 / 2 for v in cb.block_ms.values), cb.block_ms.values
    back = zs.read_block(root, "g", RATEINTS, ("sci",), slice(0, 4))["sci"]
    np.testing.assert_array_equal(back[:, 0, 0], [1, 2, 3, 4])
    assert zs.completed(root, "g", RATEINTS).all()
