"""Batch rateints in blocks: planning, whole-chunk block writes, reads back, alignment."""

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
