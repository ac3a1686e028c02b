"""zarr's codec/file calls run inline on its loop thread (zarr_store._inline_codecs):
the same stored bytes and read values as zarr's own thread pool, errors still raised,
and no zarr worker thread started."""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from nirbeam.sinks import zarr_store as zs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WRITER = r"""
import hashlib, json, os, sys, threading
import numpy as np
from nirbeam.sinks import zarr_store as zs
root = sys.argv[1]
rng = np.random.default_rng(3)
sci = rng.normal(1e3, 30, (32, 4, 8)).astype(np.float32)
sci.flat[::37] = np.nan
dq = rng.integers(0, 2**32 - 1, (32, 4, 8), endpoint=True).astype(np.uint32)
zs.prepare_stage(root, "g", "rateints", 40, (4, 8), {"sci": np.float32, "dq": np.uint32},
                 time_chunk=16)
zs.write_block(root, "g", "rateints", 1, {"sci": sci, "dq": dq}, np.ones(32, bool))
zs.save_arrays(root, "g/trace", {"w": np.arange(40.0)})
got = zs.read_block(root, "g", "rateints", ("sci", "dq"), slice(0, 40))
files = {}
for d, _, names in os.walk(root):
    for n in names:
        if n != "zarr.json":
            p = os.path.join(d, n)
            files[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
print(json.dumps({"files": files,
                  "read": hashlib.sha256(got["sci"].tobytes() + got["dq"].tobytes()).hexdigest(),
                  "done": zs.completed(root, "g", "rateints").tolist(),
                  "pool_threads": sum(t.name.startswith(("zarr_pool", "asyncio_", "ThreadPool"))
                                      for t in threading.enumerate()),
                  "inline": zs.INLINE_CODECS}))
"""


def _write(tmp_path, name, pool: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("NIRBEAM_ZARR_POOL", None)
    if pool:
        env["NIRBEAM_ZARR_POOL"] = "1"
    p = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path / name)], env=env,
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_inline_codecs_store_the_same_bytes_as_zarrs_pool(tmp_path):
    pool = _write(tmp_path, "pool.zarr", pool=True)
    inline = _write(tmp_path, "inline.zarr", pool=False)
    assert not pool["inline"] and inline["inline"]
    assert pool["files"] and pool["files"] == inline["files"]  # chunk files byte for byte
    assert pool["read"] == inline["read"]
    assert pool["done"] == inline["done"] == [True] * 32 + [False] * 8
    assert pool["pool_threads"] > 0  # zarr's pool did the work there ...
    assert inline["pool_threads"] == 0  # ... and no worker thread was started here


def test_inline_executor_runs_in_the_caller_and_raises():
    ex = zs._InlineExecutor(max_workers=1)
    assert ex.submit(threading.get_ident).result() == threading.get_ident()

    def boom():
        raise OSError("no such chunk")

    with pytest.raises(OSError, match="no such chunk"):
        ex.submit(boom).result()


def test_inline_store_errors_still_raise(tmp_path):
    root = str(tmp_path / "s.zarr")
    zs.open_root(root)
    zs.prepare_stage(root, "g", "rateints", 4, (2, 2), {"sci": np.float32}, time_chunk=2)
    with pytest.raises(zs.StoreError):
        zs.write_block(root, "g", "rateints", 2, {"sci": np.zeros((2, 2, 2), np.float32)},
                       np.ones(2, bool))
    assert zs.read_block(root, "g", "rateints", ("sci",), slice(0, 4))["sci"].shape == (4, 2, 2)
    assert np.isnan(zs.read_stack(root, "g", "rateints", "sci")).all()
