"""The inputs' resume-key hashes started ahead on a thread (issue 14: they overlap the
draft scene mask) give the same fingerprint as hashing on the spot, are not taken for a
file changed since, and the batch driver starts them before it makes the drafts."""

from __future__ import annotations

import hashlib
import os
import time
from types import SimpleNamespace

import pytest

from nirbeam.stream import pipeline, resume


def _seg(path, data_offset=0, integration_bytes=0, nints=0):
    return SimpleNamespace(path=str(path), data_offset=data_offset,
                           integration_bytes=integration_bytes, nints=nints)


@pytest.fixture(autouse=True)
def _no_leftovers():
    resume._AHEAD.clear()
    yield
    resume._AHEAD.clear()


def _write(path, nbytes, seed):
    import numpy as np

    data = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    return data


def test_prefetched_fingerprint_equals_hash_on_the_spot(tmp_path):
    files = [tmp_path / f"seg{i}.fits" for i in range(3)]
    datas = [_write(f, 3_000_000 + 1000 * i, i) for i, f in enumerate(files)]
    segs = [_seg(f) for f in files]
    resume.prefetch_fingerprints(segs)
    assert len(resume._AHEAD) == 3
    got = [resume.input_fingerprint(s) for s in segs]
    assert not resume._AHEAD  # every prefetched result was taken
    for g, d, f in zip(got, datas, files, strict=True):
        assert g["sha256"] == hashlib.sha256(d).hexdigest()
        assert g["size"] == len(d) and g["method"] == "full"
        assert g["mtime"] == os.stat(f).st_mtime


def test_a_file_changed_after_the_prefetch_is_hashed_again(tmp_path):
    f = tmp_path / "seg.fits"
    _write(f, 2_000_000, 1)
    seg = _seg(f)
    resume.prefetch_fingerprints([seg])
    while not all(fut.done() for fut in resume._AHEAD.values()):
        time.sleep(0.01)
    st = os.stat(f)
    new = _write(f, 2_000_000, 2)  # same size: only the mtime tells
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    got = resume.input_fingerprint(seg)
    assert got["sha256"] == hashlib.sha256(new).hexdigest()


def test_missing_input_is_named_where_the_fingerprint_is_taken(tmp_path):
    seg = _seg(tmp_path / "gone.fits")
    resume.prefetch_fingerprints([seg])  # skipped, no error here
    with pytest.raises(FileNotFoundError, match="gone.fits"):
        resume.input_fingerprint(seg)


def test_driver_starts_the_hashes_before_the_drafts(tmp_path, monkeypatch):
    """prepare_rate_blocks: the hashes are running (queued on their thread) when the first
    draft scene mask is made, and the key is taken after the draft."""
    calls = []
    monkeypatch.setattr(pipeline, "prefetch_fingerprints",
                        lambda segs: calls.append(("prefetch", len(list(segs)))))
    monkeypatch.setattr(pipeline, "load_exposure_refs", lambda *a: ({}, {}))

    def draft(plan, refs, settings, trace_mask=None):
        calls.append(("draft", plan.meta.group_name))
        return (None,)

    def key(plan, prov, settings):
        calls.append(("key", plan.meta.group_name))
        raise _Stop

    monkeypatch.setattr(pipeline, "exposure_draft", draft)
    monkeypatch.setattr(pipeline, "resume_key", key)
    plan = SimpleNamespace(segments=[_seg("a"), _seg("b")],
                           meta=SimpleNamespace(group_name="g1"))
    with pytest.raises(_Stop):
        pipeline.prepare_rate_blocks([plan], str(tmp_path), None, None, None, None,
                                     allow_standins=True, overwrite=False, dead_dir="")
    assert calls == [("prefetch", 2), ("draft", "g1"), ("key", "g1")]


class _Stop(Exception):
    pass
