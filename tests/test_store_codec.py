"""The cube store's codec is lossless on what the pipeline writes (bit for bit)."""

import numpy as np
import pytest
import zarr

from nirbeam.sinks.zarr_store import CUBE_CODEC


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint32, np.uint8, np.int32])
def test_cube_codec_round_trips_bit_for_bit(tmp_path, dtype):
    rng = np.random.default_rng(7)
    shape = (5, 32, 64)
    if np.dtype(dtype).kind == "f":
        a = rng.normal(1e3, 30, shape).astype(dtype)
        a.flat[::97] = np.nan
        a.flat[1::211] = np.inf
        a.flat[2::307] = -0.0
        a.flat[3::401] = np.finfo(dtype).tiny / 3  # subnormal
    else:
        a = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    z = zarr.create_array(str(tmp_path / "a.zarr"), shape=shape, dtype=dtype,
                          chunks=(2, 32, 64), compressors=CUBE_CODEC(dtype))
    z[:] = a
    b = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")[:]
    assert b.dtype == a.dtype
    assert a.tobytes() == b.tobytes()
