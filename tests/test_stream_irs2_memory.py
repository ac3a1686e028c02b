"""The stream's record chain frees an IRS2 record's raw ramp before detector1, as batch's
``CalibrateBlock`` does: the integration is read inside the detector1 step and handed over
(``Calibrate.owned``), so no Beam element holds the raw ramp while detector1 runs (it
did when the read step emitted the record: +262 MB for a 20-group full frame)."""

from __future__ import annotations

import gc
import tracemalloc
import weakref
from types import SimpleNamespace

import apache_beam as beam
import numpy as np

from nirbeam.core.records import IntegrationKey, IntegrationRecord, IntTimes
from nirbeam.stream import rate_steps, stream_source
from nirbeam.stream.graph import RecordChain
from nirbeam.stream.plan import ReadItem
from nirbeam.stream.records import ExposureMeta
from nirbeam.stream.settings import Settings
from nirbeam.stream.stream_complete import StreamConfig, record_functions
from nirbeam.stream.stream_source import StreamItem
from nirbeam.stream.watch import file_signature

EXP, DET = "jw01366004001_04101_00001", "NRS1"
SEEN: list = []  # (raw ramp alive at detector1?, traced bytes then)
RAMPS: list = []  # weak references to the raw ramps read


def _meta(ngroups):
    return ExposureMeta(EXP, DET, "NIRSPEC", "NRS_BRIGHTOBJ", "NRSIRS2RAPID", "FULL", 1, 1,
                        2048, 2048, 1, ngroups, 1, 0, 14.6, 14.6, 14.6 * (ngroups - 1),
                        "CLEAR", "PRISM", 1, True)


def _fake_read(item):
    """A raw IRS2 ramp as stored: (ngroups, 3200, 2048) uint16."""
    m = item.segment.meta
    ramp = np.full((m.ngroups, 3200, 2048), 1000, np.uint16)
    RAMPS.append(weakref.ref(ramp))
    t = 60000.0
    return IntegrationRecord(item.key, m, IntTimes(t, t, t, t, t, t), "ramp", item.segment.path,
                             ramp=ramp)


def _fake_bands(holder, refs, timing, params, hook, overwrite_input=False, parallel=None):
    gc.collect()
    SEEN.append((RAMPS[-1]() is not None, tracemalloc.get_traced_memory()[0]))
    shape = holder[0].shape[1:]
    z = np.zeros(shape, np.float32)
    return SimpleNamespace(rate=z, err=z, dq=np.zeros(shape, np.uint32), var_poisson=z,
                           var_rnoise=z, n_jumps=0, jump_skipped=False)


def run_chain(tmp_path, monkeypatch, ngroups=3, functions=record_functions):
    """One IRS2 integration through the stream's record chain (Beam, in process), with the
    file read, the references and the banded detector1 replaced by stand-ins; returns
    (raw ramp alive when detector1 started, traced bytes then, raw ramp bytes).
    ``functions(cfg)``: the chain's record functions (the stream's by default)."""
    from nirbeam.transforms import detector1_bands

    monkeypatch.setattr(stream_source, "read_record", _fake_read)
    monkeypatch.setattr(rate_steps, "refs_from_store",
                        lambda root, group, token="": SimpleNamespace(irs2=None, sources={}))
    monkeypatch.setattr(detector1_bands, "run_detector1_bands", _fake_bands)
    f = tmp_path / f"{EXP}_nrs1_uncal.fits"
    f.write_bytes(b"x")
    seg = SimpleNamespace(path=str(f), meta=_meta(ngroups))
    item = StreamItem(ReadItem(IntegrationKey(EXP, DET, 1), seg, None), file_signature(str(f)))
    settings = Settings.from_dict({"flicker": {"enabled": False}})
    cfg = StreamConfig(str(tmp_path), str(tmp_path / "out"), settings)
    read, calibrate, _, _ = functions(cfg)
    SEEN.clear()
    RAMPS.clear()
    dead = []
    tracemalloc.start()
    try:
        with beam.Pipeline() as p:
            _ = (p | beam.Create([item])
                 | RecordChain(read, calibrate, lambda r: r, dead.append))
    finally:
        tracemalloc.stop()
    assert not dead and len(SEEN) == 1, (dead, SEEN)
    return (*SEEN[0], ngroups * 3200 * 2048 * 2)


def test_raw_irs2_ramp_is_freed_before_detector1(tmp_path, monkeypatch):
    alive, traced, raw = run_chain(tmp_path, monkeypatch, ngroups=3)
    assert not alive, "the raw IRS2 ramp is still referenced when detector1 starts"
    # what is traced then: the normal-layout ramp (3 x 2048 x 2048 uint16), not the raw one too
    assert traced < raw, (traced, raw)
