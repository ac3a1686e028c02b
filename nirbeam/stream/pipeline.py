"""Pipeline assembly: uncal segments -> integration records -> detector1 -> zarr cubes.

The driver does the small, once-per-exposure work (scan headers, plan segments, choose and
cut reference files, create the store template, find what a previous run completed); Beam
does the per-integration work (read one ramp, calibrate it, write its region). Results
return through the store, never through the driver's memory.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import apache_beam as beam
import numpy as np

from nirbeam import __version__
from nirbeam.sinks import fs, zarr_store
from nirbeam.stream.records import (
    DeadLetter,
    ExposureMeta,
    IntegrationKey,
    IntegrationRecord,
    IntTimes,
)
from nirbeam.stream.runners import RunnerSpec, make_runner
from nirbeam.stream.uncal import (
    BadInputError,
    ExposurePlan,
    SegmentInfo,
    find_uncal_files,
    plan_exposures,
    read_ramp,
    scan_segment,
)
from nirbeam.transforms.common import StepFailed
from nirbeam.transforms.reference import ReferenceArrays

__all__ = [
    "RATE_BLOCK",
    "rate_block_size",
    "rate_blocks",
    "Calibrate",
    "CalibrateBlock",
    "RateBlock",
    "ReadItem",
    "RunResult",
    "WriteDeadLetter",
    "WriteRateints",
    "prepare_exposure",
    "read_record",
    "refs_from_store",
    "run",
]

log = logging.getLogger("nirbeam")

RATEINTS = "rateints"
RATE_ARRAYS = {
    "sci": np.float32,
    "err": np.float32,
    "dq": np.uint32,
    "var_poisson": np.float32,
    "var_rnoise": np.float32,
}
RATE_BLOCK = 32
"""Integrations per batch rateints write (and per chunk along time of a batch run's
rateints): one worker reads, calibrates and writes a whole block, so no two writers ever
share a chunk, and each array gets one write per block instead of one per integration.
The same size as the stage-2 blocks (``products.BLOCK``), so their windows read whole
chunks."""

def rate_block_size(nints: int, runner: RunnerSpec | None = None) -> int:
    """Integrations per rateints block (and chunk along time) for a new store.

    :data:`RATE_BLOCK` (at most NINTS), or fewer where that would leave the workers of a
    parallel runner fewer than four blocks each (a short exposure on a cluster):
    parallelism first, then fewer and larger writes. ``direct`` has one worker, which
    needs no split; other runners count ``--workers``, or 2 when not given.
    """
    if runner is None or runner.name == "direct":
        return int(max(1, min(RATE_BLOCK, int(nints))))
    workers = runner.workers or 2
    return int(max(1, min(RATE_BLOCK, int(nints) // (4 * workers))))


RATE_ATTRS = {
    "sci": {"units": "DN/s", "description": "count rate per integration (rateints SCI)"},
    "err": {"units": "DN/s", "description": "1-sigma error of sci"},
    "dq": {"units": "", "description": "pixel DQ, JWST bit values"},
    "var_poisson": {"units": "(DN/s)^2", "description": "Poisson variance of sci"},
    "var_rnoise": {"units": "(DN/s)^2", "description": "read-noise variance of sci"},
    "integration_number": {"units": "", "description": "1-based integration number (INT_TIMES)"},
    "int_mid_BJD_TDB": {"units": "d", "description": "integration mid-time, BJD_TDB"},
    "int_mid_MJD_UTC": {"units": "d", "description": "integration mid-time, MJD UTC"},
}


# ---------------------------------------------------------------------------------------
# Per-integration work items and record functions (picklable, no driver state)


@dataclass(frozen=True)
class ReadItem:
    """What a worker needs to read one integration: its key, segment and times."""

    key: IntegrationKey
    segment: SegmentInfo
    times: IntTimes


def read_record(item: ReadItem) -> IntegrationRecord:
    """Read one integration's ramp into a record of stage ``ramp``.

    An integration whose INT_TIMES row failed its checks carries an ``int_times`` step in
    its provenance; :class:`Calibrate` flags it DO_NOT_USE.
    """
    ramp = read_ramp(item.segment, item.key.integration)
    rec = IntegrationRecord(
        key=item.key,
        meta=item.segment.meta,
        times=item.times,
        stage="ramp",
        source=item.segment.path,
        ramp=ramp,
    )
    bad = dict(item.segment.bad_times).get(item.key.integration)
    if bad:
        rec = rec.with_step(BAD_TIME_STEP, bad)
    return rec


BAD_TIME_STEP = "int_times"
"""Provenance step of an integration whose INT_TIMES row failed its checks."""


_REF_CACHE: dict[tuple[str, str, str], ReferenceArrays] = {}
_REF_LOCK = threading.Lock()


def refs_from_store(root: str, group: str, token: str = "") -> ReferenceArrays:
    """Load (once per process and run token) the cut references the driver saved."""
    k = (root, group, token)
    with _REF_LOCK:
        r = _REF_CACHE.get(k)
    if r is None:
        arrays, attrs = zarr_store.load_arrays(root, f"{group}/references")
        r = ReferenceArrays(
            mask=arrays["mask"],
            saturation=arrays["saturation"],
            saturation_dq=arrays["saturation_dq"],
            superbias=arrays.get("superbias"),
            superbias_dq=arrays["superbias_dq"],
            linearity=arrays.get("linearity"),
            linearity_dq=arrays["linearity_dq"],
            dark=arrays.get("dark"),
            dark_dq=arrays["dark_dq"],
            readnoise=arrays["readnoise"],
            gain=arrays["gain"],
            sources=dict(attrs.get("sources", {})),
        )
        with _REF_LOCK:
            _REF_CACHE[k] = r
    return r


def save_refs_to_store(
    root: str, group: str, refs: ReferenceArrays, provenance: dict, scene_mask=None
) -> None:
    """Write the cut references (and where they came from) into the store."""
    zarr_store.save_arrays(
        root,
        f"{group}/references",
        {
            "mask": refs.mask, "saturation": refs.saturation, "saturation_dq": refs.saturation_dq,
            "superbias": refs.superbias, "superbias_dq": refs.superbias_dq,
            "linearity": refs.linearity, "linearity_dq": refs.linearity_dq,
            "dark": refs.dark, "dark_dq": refs.dark_dq, "readnoise": refs.readnoise,
            "gain": refs.gain,
            "scene_mask": None if scene_mask is None else scene_mask.astype(np.uint8),
        },
        attrs={"sources": refs.sources, "provenance": provenance},
        dims={"dark": ("group", "y", "x"), "linearity": ("coefficient", "y", "x")},
    )
    with _REF_LOCK:
        for cache in (_REF_CACHE, _MASK_CACHE):
            for k in [k for k in cache if k[:2] == (root, group)]:
                cache.pop(k, None)


_MASK_CACHE: dict[tuple[str, str, str], np.ndarray | None] = {}


def scene_mask_from_store(root: str, group: str, token: str = "") -> np.ndarray | None:
    """The 1/f scene mask the driver saved (None when group-level cleaning is off)."""
    k = (root, group, token)
    if k not in _MASK_CACHE:
        arrays, _ = zarr_store.load_arrays(root, f"{group}/references")
        m = arrays.get("scene_mask")
        _MASK_CACHE[k] = None if m is None else m.astype(bool)
    return _MASK_CACHE[k]


@dataclass(frozen=True)
class Calibrate:
    """detector1 on one record (1/f cleaning of group differences as its group hook)."""

    root: str
    settings: Any
    token: str = ""  # this run's id: worker caches of references key on it

    def __call__(self, rec: IntegrationRecord) -> IntegrationRecord:
        from nirbeam.transforms.detector1 import calibrate_record
        from nirbeam.transforms.flicker import make_group_hook

        refs = refs_from_store(self.root, rec.key.group, self.token)
        fl = self.settings.flicker.for_detector(rec.meta.detector)  # NRS2 readout direction
        hook = None
        if fl.enabled and fl.level == "group":
            hook = make_group_hook(fl, scene_mask_from_store(self.root, rec.key.group, self.token))
        out = calibrate_record(rec, refs, self.settings.detector1, hook)
        if hook is not None:
            out = out.with_step("flicker", f"level=group method={fl.method} n_sigma={fl.n_sigma}")
        if any(step == BAD_TIME_STEP for step, _ in rec.provenance):
            # its time is not known: the rates are kept, every pixel says do not use
            from nirbeam import dqflags

            out = out.replace(dq=out.dq | np.uint32(dqflags.DO_NOT_USE))
        return out


def draft_scene_mask(plan: ExposurePlan, refs: ReferenceArrays, settings, n: int = 3,
                     trace_mask: np.ndarray | None = None) -> np.ndarray:
    """1/f scene mask from the median draft rate of the first few integrations
    (``trace_mask``: pixels a mode knows are scene, e.g. every slit; excluded too)."""
    from nirbeam.transforms.detector1 import RampTiming, run_detector1
    from nirbeam.transforms.flicker import scene_mask
    from nirbeam.transforms.refpix import SubarrayGeometry

    meta = plan.meta
    rates, dqs = [], []
    for i in plan.present[:n]:
        res = run_detector1(read_ramp(plan.segment_of(i), i), refs, RampTiming.from_meta(meta),
                            settings.detector1, SubarrayGeometry.from_meta(meta))
        rates.append(res.rate)
        dqs.append(res.dq)
    rate = np.median(np.stack(rates), axis=0)
    dq = np.bitwise_and.reduce(np.stack(dqs), axis=0)
    return scene_mask(rate, dq=dq, trace_mask=trace_mask, **settings.flicker.mask_kwargs())


@dataclass(frozen=True)
class WriteRateints:
    """Write a rateints record's region into the store, then its completion marker.

    The record passed on drops its 2-D arrays unless ``keep`` (streaming extracts from
    them next).
    """

    root: str
    keep: bool = False

    def __call__(self, rec: IntegrationRecord) -> IntegrationRecord:
        zarr_store.write_integration(
            self.root, rec.key.group, RATEINTS, rec.key.integration,
            {"sci": rec.rate, "err": rec.err, "dq": rec.dq,
             "var_poisson": rec.var_poisson, "var_rnoise": rec.var_rnoise},
        )
        if self.keep:
            return rec
        return rec.replace(rate=None, err=None, var_poisson=None, var_rnoise=None)


@dataclass(frozen=True)
class RateBlock:
    """Integrations ``start..stop`` (1-based, inclusive) of one exposure/detector, aligned
    with the rateints chunks: ``items`` are the integrations to calibrate, ``stored`` those
    an earlier run completed (read back and rewritten unchanged, since the block's chunks
    are written whole); the others (missing segments) keep the fill value and marker 0."""

    group: str
    start: int
    stop: int
    items: tuple[ReadItem, ...]
    stored: tuple[int, ...] = ()


def rate_blocks(group: str, nints: int, present, done: np.ndarray, make_item,
                block: int = RATE_BLOCK) -> list[RateBlock]:
    """The blocks of one exposure/detector that hold an integration still to calibrate.

    ``present``: integrations in the input segments; ``done`` (bool, (nints,)): the
    completion markers of an earlier run; ``make_item(i)`` -> :class:`ReadItem`.
    """
    present = set(int(i) for i in present)
    out = []
    for start in range(1, nints + 1, block):
        stop = min(nints, start + block - 1)
        here = [i for i in range(start, stop + 1) if i in present]
        todo = [i for i in here if not done[i - 1]]
        if todo:
            out.append(RateBlock(group, start, stop, tuple(make_item(i) for i in todo),
                                 tuple(i for i in here if done[i - 1])))
    return out


class CalibrateBlock(beam.DoFn):
    """Read, calibrate and write one :class:`RateBlock`; yield its dead letters.

    Each integration is read and calibrated on its own (a failure dead-letters that
    integration, step ``read`` or ``detector1``); the block's five arrays are then
    written in one call of whole chunks, and its markers after them, on the process's
    writer thread while the next block is calibrated (compression and I/O on a second
    core; at most two blocks in memory). When the block write
    fails, each integration is written on its own, so a failure (a full disk) dead-letters
    only the integrations that could not be written (step ``write_rateints``). Counts the
    same Beam metrics as the per-integration steps (``read.records``,
    ``detector1.records``, ``detector1.ms``, ``write_rateints.records``...).
    """

    def __init__(self, root: str, settings, token: str = ""):
        from apache_beam.metrics import Metrics

        self.root = root
        self.calibrate = Calibrate(root, settings, token)
        self.m = {
            f"{step}.{what}": Metrics.counter("nirbeam", f"{step}.{what}")
            for step in ("read", "detector1", "write_rateints") for what in ("records", "deadletters")
        }
        self.ms = {step: Metrics.distribution("nirbeam", f"{step}.ms") for step in ("read", "detector1")}
        self.block_ms = Metrics.distribution("nirbeam", "write_rateints.block_ms")

    def _dead(self, item: ReadItem, step: str, exc: Exception) -> DeadLetter:
        reason = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, StepFailed):
            log.warning("%s failed on %s: %s", step, item.key, reason, exc_info=True)
        self.m[f"{step}.deadletters"].inc()
        return DeadLetter(item.key, step, reason, item.segment.path)

    def process(self, block: RateBlock):
        """Yield the block's dead letters (if any)."""
        n = block.stop - block.start + 1
        root, g = self.root, block.group
        fill = zarr_store.fill_values(root, g, RATEINTS, RATE_ARRAYS)
        buf: dict[str, np.ndarray] | None = None
        ok = np.zeros(n, bool)
        dead = []
        computed = []
        for item in block.items:
            t0 = time.perf_counter()
            try:
                rec = read_record(item)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a dead letter
                dead.append(self._dead(item, "read", exc))
                continue
            self.m["read.records"].inc()
            self.ms["read"].update(int((time.perf_counter() - t0) * 1000))
            t0 = time.perf_counter()
            try:
                rec = self.calibrate(rec)
            except Exception as exc:  # noqa: BLE001
                dead.append(self._dead(item, "detector1", exc))
                continue
            self.m["detector1.records"].inc()
            self.ms["detector1"].update(int((time.perf_counter() - t0) * 1000))
            values = {"sci": rec.rate, "err": rec.err, "dq": rec.dq,
                      "var_poisson": rec.var_poisson, "var_rnoise": rec.var_rnoise}
            if buf is None:
                buf = {k: np.full((n, *np.shape(v)), fill[k], RATE_ARRAYS[k]) for k, v in values.items()}
            j = item.key.integration - block.start
            for k, v in values.items():
                buf[k][j] = v
            ok[j] = True
            computed.append(item)  # its arrays live on in buf only (no second copy)
        if buf is None:  # nothing calibrated in this block: nothing to write
            yield from dead
            return
        if block.stored:  # completed earlier: the block's chunks are rewritten whole
            old = zarr_store.read_block(root, g, RATEINTS, RATE_ARRAYS,
                                        slice(block.start - 1, block.stop))
            for i in block.stored:
                j = i - block.start
                for k in RATE_ARRAYS:
                    buf[k][j] = old[k][j]
                ok[j] = True
        yield from dead
        # the previous block's write (compressed and written while this block was
        # calibrated) must be complete before this one is handed over: two in flight at most
        yield from self._drain()
        try:
            fut = zarr_store.write_block(root, g, RATEINTS, block.start, buf, ok, wait=False)
        except Exception as exc:  # noqa: BLE001 - refused at once: handled as a failed write
            from concurrent.futures import Future

            fut = Future()
            fut.set_exception(exc)
        self._pending = (block, computed, buf, fut, time.perf_counter())

    def start_bundle(self):
        """No block write in flight."""
        self._pending = None

    def finish_bundle(self):
        """Wait for the last block write; emit its dead letters (if any)."""
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.timestamp import MIN_TIMESTAMP
        from apache_beam.utils.windowed_value import WindowedValue

        for dl in self._drain():
            yield WindowedValue(dl, MIN_TIMESTAMP, [GlobalWindow()])

    def _drain(self) -> list[DeadLetter]:
        """Wait for the block write in flight; when it failed, write its integrations one
        by one and return the dead letters of those that could not be written."""
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is None:
            return []
        block, computed, buf, fut, t0 = pending
        g = block.group
        dead = []
        try:
            fut.result()
            self.m["write_rateints.records"].inc(len(computed))
        except Exception as exc:  # noqa: BLE001 - fall back to one write per integration
            log.warning("%s: block %d..%d could not be written whole (%s: %s); writing its "
                        "integrations one by one", g, block.start, block.stop,
                        type(exc).__name__, exc)
            for item in computed:
                j = item.key.integration - block.start
                try:
                    zarr_store.write_integration(self.root, g, RATEINTS, item.key.integration,
                                                 {k: v[j] for k, v in buf.items()})
                    self.m["write_rateints.records"].inc()
                except Exception as exc:  # noqa: BLE001
                    dead.append(self._dead(item, "write_rateints", exc))
        self.block_ms.update(int((time.perf_counter() - t0) * 1000))
        return dead


@dataclass(frozen=True)
class WriteDeadLetter:
    """Write one dead letter as its own small JSON file (idempotent per key and step)."""

    folder: str

    def __call__(self, dl: DeadLetter) -> None:
        fs.makedirs(self.folder)
        k = dl.key
        name = f"{k.group}_{k.integration:05d}" if k else f"input_{abs(hash(dl.source)):x}"
        fs.write_text(fs.join(self.folder, f"{name}.{dl.step}.json"), json.dumps(dl.to_json()))


# ---------------------------------------------------------------------------------------
# The driver


@dataclass
class RunResult:
    """What a run did (also written as ``run.json``)."""

    outdir: str
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int = 0


def _exposure_notes(meta: ExposureMeta, settings) -> list[str]:
    """What the data cannot support, said once per exposure (also in provenance)."""
    notes = []
    if meta.ngroups < 3 and settings.detector1.jump.enabled:
        notes.append(
            f"NGROUPS={meta.ngroups}: jump detection needs at least 3 groups and was skipped; "
            "slopes fitted from the groups available"
        )
    if meta.ngroups == 1:
        notes.append(
            "NGROUPS=1: no slope can be fitted; the rate is the bias-subtracted group divided "
            "by its effective time ((NFRAMES+1)/2 * TFRAME), as stcal does"
        )
    return notes


def _rate_settings(settings) -> dict:
    """The settings that shape the rateints (detector1 and group-level 1/f cleaning)."""
    j = settings.as_json()
    return {"detector1": j["detector1"], "flicker": j["flicker"]}


class ResumeMismatch(BadInputError):
    """OUTDIR holds results made from other inputs, references, settings or version."""


RESUME_KEY_VERSION = 1
_FULL_HASH_BYTES = 64 << 20  # inputs up to this size are hashed whole
_SAMPLE_BLOCKS, _SAMPLE_BYTES = 64, 64 << 10


def input_fingerprint(seg: SegmentInfo) -> dict:
    """Size, mtime and a sha256 of one segment: whole file up to 64 MiB, else every byte
    outside the SCI cube (headers, INT_TIMES...) plus 64 blocks of 64 KiB spread evenly
    over the SCI data (4 MiB read whatever the size)."""
    import hashlib

    st = os.stat(seg.path)
    h = hashlib.sha256()
    with open(seg.path, "rb") as fh:
        if st.st_size <= _FULL_HASH_BYTES:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
            method = "full"
        else:
            sci_end = seg.data_offset + seg.integration_bytes * seg.nints
            h.update(fh.read(seg.data_offset))
            span = sci_end - seg.data_offset
            for k in range(_SAMPLE_BLOCKS):
                fh.seek(seg.data_offset + (span - _SAMPLE_BYTES) * k // (_SAMPLE_BLOCKS - 1))
                h.update(fh.read(_SAMPLE_BYTES))
            fh.seek(sci_end)
            h.update(fh.read(_FULL_HASH_BYTES))
            method = f"headers+tables+{_SAMPLE_BLOCKS}x{_SAMPLE_BYTES >> 10}KiB of SCI"
    return {"size": st.st_size, "mtime": st.st_mtime, "sha256": h.hexdigest(), "method": method}


def resume_key(plan: ExposurePlan, prov: dict, settings) -> dict:
    """Everything an exposure's rates depend on: inputs' content, references' sha256 (or
    the stand-in used), detector1 and group-level 1/f settings, nirbeam version."""
    refs = {t: (v["sha256"] if "sha256" in v else _standin_label(v.get("standin", "?")))
            for t, v in sorted(prov.items())}
    return {
        "version": RESUME_KEY_VERSION,
        "nirbeam_version": __version__,
        "inputs": {os.path.basename(s.path): input_fingerprint(s) for s in plan.segments},
        "references": refs,
        "settings": json.loads(json.dumps(_rate_settings(settings))),
    }


def _standin_label(text: str) -> str:
    return text if text.startswith("stand-in") else f"stand-in ({text})"


def _flat(d, prefix=""):
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_differences(old: dict | None, new: dict) -> list[str]:
    """What changed between the key stored with earlier results and this run's."""
    if not old:
        return ["the store has no resume key (written by an older nirbeam or interrupted "
                "before its first integration was prepared)"]
    out = []
    if old.get("nirbeam_version") != new["nirbeam_version"]:
        out.append(f"nirbeam version {old.get('nirbeam_version')} -> {new['nirbeam_version']}")
    for name, f in new["inputs"].items():
        o = (old.get("inputs") or {}).get(name)
        if o is None:
            continue  # a segment added since (e.g. one that was missing): nothing to mix
        if (o.get("size"), o.get("sha256")) != (f["size"], f["sha256"]):
            out.append(f"input {name}: content changed (size {o.get('size')} -> {f['size']}, "
                       f"sha256 {str(o.get('sha256'))[:12]}.. -> {f['sha256'][:12]}..)")
    for t in sorted(set(old.get("references", {})) | set(new["references"])):
        a, b = old.get("references", {}).get(t), new["references"].get(t)
        if a != b:
            out.append(f"reference {t}: {_short(a)} -> {_short(b)}")
    fo, fn = _flat(old.get("settings")), _flat(new["settings"])
    for k in sorted(set(fo) | set(fn)):
        if fo.get(k) != fn.get(k):
            out.append(f"setting {k}: {fo.get(k)!r} -> {fn.get(k)!r}")
    return out


def _short(v) -> str:
    if v is None:
        return "(none)"
    v = str(v)
    return f"sha256 {v[:12]}.." if len(v) == 64 and not v.startswith("stand-in") else v[:80]


def stored_resume_key(root: str, group: str) -> dict | None:
    """The resume key of an exposure's earlier results, or None."""
    try:
        return dict(zarr_store.open_root(root, mode="r")[group].attrs).get("resume_key")
    except (KeyError, FileNotFoundError, Exception):  # noqa: BLE001 - no store or group yet
        return None


def check_resume(root: str, group: str, key: dict, overwrite: bool) -> bool:
    """Refuse (or, under ``overwrite``, allow) reusing results made from something else.

    Returns True when the group's earlier results must be removed before this run.

    Raises
    ------
    ResumeMismatch
        Naming every difference, when results exist, differ and ``overwrite`` is False.
    """
    has = zarr_store.completed(root, group, RATEINTS)
    if not has.any():  # nothing to mix; stale references or dead letters are cleared
        old = stored_resume_key(root, group)
        return old is not None and bool(resume_differences(old, key))
    diffs = resume_differences(stored_resume_key(root, group), key)
    if not diffs:
        return False
    if overwrite:
        log.warning("%s: recomputing (--overwrite): %s", group, "; ".join(diffs))
        return True
    raise ResumeMismatch(
        root,
        f"exposure {group}: this OUTDIR holds {int(has.sum())} integrations' rates made from something "
        f"else; resuming would mix them. Changed: {'; '.join(diffs)}. Rerun with --overwrite "
        "to recompute them, or use a new --out folder.",
    )


def _reset_group(root: str, group: str, dead_dir: str | None) -> None:
    """Remove an exposure's earlier results (store group and its dead letters)."""
    g = zarr_store.open_root(root)
    if group in g:
        del g[group]
    zarr_store.forget_cache()
    with _REF_LOCK:
        for cache in (_REF_CACHE, _MASK_CACHE):
            for k in [k for k in cache if k[:2] == (root, group)]:
                cache.pop(k, None)
    if dead_dir:
        for n in fs.listdir(dead_dir):
            if n.startswith(f"{group}_"):
                fs.remove(fs.join(dead_dir, n))


def load_exposure_refs(plan: ExposurePlan, refs_dir, ref_index, allow_standins: bool):
    """References for one exposure/detector (files, or stand-ins when allowed)."""
    from nirbeam.stream.refs import load_references, standin_references

    first = plan.segments[0]
    first_ramp = read_ramp(first, first.intstart)
    if refs_dir:
        return load_references(refs_dir, plan.meta, ref_index, first_ramp=first_ramp,
                               allow_standins=allow_standins)
    if not allow_standins:
        raise _no_refs_error()
    return standin_references(plan.meta, first_ramp)


def _no_refs_error() -> BadInputError:
    from nirbeam.stream.refs import STANDIN_COST

    costs = "; ".join(f"{t}: {c}" for t, c in STANDIN_COST.items())
    return BadInputError(
        "--refs", "no reference folder given. Pass --refs DIR (CRDS-format files, e.g. your CRDS "
        f"cache), or --allow-standins to derive stand-ins from the data, which costs: {costs}")


def prepare_exposure(root: str, plan: ExposurePlan, refs_dir, ref_index, settings, *,
                     allow_standins: bool = False, overwrite: bool = False,
                     loaded=None, dead_dir: str | None = None, time_chunk: int = 1,
                     trace_mask: np.ndarray | None = None) -> dict:
    """Choose references, check the resume key, create the store template for one
    exposure/detector.

    ``time_chunk``: integrations per rateints chunk along time (1 for writers of single
    integrations, :data:`RATE_BLOCK` for the batch block writers). A store made before
    keeps its chunks; block writes into chunks of one integration are just as safe.

    ``loaded`` is ``(refs, provenance, key)`` from a first pass that checked every exposure
    before anything was written (the batch driver); without it they are made here.
    ``trace_mask`` (bool, the science array's shape): scene pixels a mode knows (every
    slit of FS/MOS/IFU), kept out of the 1/f fit as well as what the draft shows.
    """
    meta = plan.meta
    group = meta.group_name
    if loaded is None:
        refs, prov = load_exposure_refs(plan, refs_dir, ref_index, allow_standins)
        key = resume_key(plan, prov, settings)
        if check_resume(root, group, key, overwrite):
            _reset_group(root, group, dead_dir)
    else:
        refs, prov, key = loaded
    old = stored_resume_key(root, group) or {}
    key = {**key, "inputs": {**(old.get("inputs") or {}), **key["inputs"]}}
    fl = settings.flicker
    mask = (draft_scene_mask(plan, refs, settings, trace_mask=trace_mask)
            if fl.enabled and fl.level == "group" else None)
    save_refs_to_store(root, group, refs, prov, mask)
    times: dict[int, IntTimes] = {}
    for s in plan.segments:
        times.update(s.times)
    it = plan.int_times()
    bjd, mjd = it["int_mid_BJD_TDB"], it["int_mid_MJD_UTC"]
    zarr_store.prepare_stage(
        root, group, RATEINTS, meta.nints, meta.image_shape, RATE_ARRAYS,
        coords={
            "integration_number": np.arange(1, meta.nints + 1, dtype=np.int32),
            "int_mid_BJD_TDB": bjd,
            "int_mid_MJD_UTC": mjd,
        },
        array_attrs=RATE_ATTRS, time_chunk=time_chunk,
    )
    zarr_store.set_attrs(
        root, group,
        {"exposure": meta.header_dict(), "nirbeam_version": __version__,
         "references": prov, "notes": list(plan.notes), "config": settings.as_json(),
         "resume_key": key},
    )
    return {"refs": prov, "times": times}


def run(
    inputs: list[str],
    outdir: str,
    *,
    refs_dir: str | None = None,
    config: dict | None = None,
    runner: RunnerSpec | None = None,
    progress: bool = True,
    allow_standins: bool = False,
    overwrite: bool = False,
) -> RunResult:
    """Run the batch pipeline over uncal files/folders into OUTDIR.

    Every exposure's references and resume key are checked before anything is written:
    an OUTDIR whose results were made from other inputs, references, settings or nirbeam
    version is refused (``overwrite``: those exposures are recomputed).

    Returns
    -------
    RunResult
        ``exit_code`` 0, or :data:`EXIT_INCOMPLETE` (3) when any integration is
        dead-lettered or an exposure has no good white-light point.

    Raises
    ------
    BadInputError
        Inputs that cannot be processed (the CLI turns it into exit code 2).
    """
    from nirbeam.stream.progress import Progress
    from nirbeam.stream.refs import index_references
    from nirbeam.stream.settings import Settings

    t_start = time.time()
    runner = runner or RunnerSpec()
    settings = Settings.from_dict(config or {})
    bar = progress if isinstance(progress, Progress) else Progress(enabled=bool(progress))
    files = find_uncal_files(inputs)
    infos = []
    with bar.stage("scan", total=len(files), unit="segments") as st:
        for f in files:
            infos.append(scan_segment(f))
            st.advance()
    plans = plan_exposures(infos)
    _check_outdir(outdir)
    if not refs_dir and not allow_standins:
        raise _no_refs_error()
    ref_index = index_references(refs_dir) if refs_dir else None
    root = fs.join(outdir, "cubes.zarr")
    zarr_store.open_root(root)
    dead_dir = fs.join(outdir, "_deadletters")
    timings = {"scan": time.time() - t_start}

    blocks: list[RateBlock] = []
    per_group: dict[str, dict] = {}
    t0 = time.time()
    loaded, reset = [], []
    st = bar.stage("prepare", total=len(plans), unit="exposures")
    for plan in plans:  # every check first: nothing is written if one exposure is refused
        refs, prov = load_exposure_refs(plan, refs_dir, ref_index, allow_standins)
        key = resume_key(plan, prov, settings)
        reset.append(check_resume(root, plan.meta.group_name, key, overwrite))
        loaded.append((refs, prov, key))
    for plan, ld, rs in zip(plans, loaded, reset, strict=True):
        if rs:
            _reset_group(root, plan.meta.group_name, dead_dir)
        info = prepare_exposure(root, plan, refs_dir, ref_index, settings, loaded=ld,
                                time_chunk=rate_block_size(plan.meta.nints, runner))
        st.advance()
        group = plan.meta.group_name
        done = zarr_store.completed(root, group, RATEINTS)
        todo = [i for i in plan.present if not done[i - 1]]
        per_group[group] = {
            "exposure": plan.meta.exposure,
            "detector": plan.meta.detector,
            "nints": plan.meta.nints,
            "present": len(plan.present),
            "missing": list(plan.missing),
            "skipped_complete": len(plan.present) - len(todo),
            "segments": [os.path.basename(s.path) for s in plan.segments],
            "references": info["refs"],
            "standins": {t: v["cost"] for t, v in info["refs"].items() if "standin" in v},
            "bad_int_times": {str(i): r for s in plan.segments for i, r in s.bad_times},
            "recomputed": bool(rs),
            "notes": list(plan.notes) + _exposure_notes(plan.meta, settings),
        }

        def item(i, plan=plan, info=info):
            return ReadItem(IntegrationKey(plan.meta.exposure, plan.meta.detector, i),
                            replace(plan.segment_of(i), times={}), info["times"][i])

        # a block is a whole number of the store's chunks (a resumed store keeps its own)
        c = zarr_store.time_chunk(root, group, RATEINTS)
        block = c * max(1, rate_block_size(plan.meta.nints, runner) // c)
        blocks += rate_blocks(group, plan.meta.nints, plan.present, done, item, block)
    st.close()
    timings["prepare"] = time.time() - t0

    t0 = time.time()
    metrics = {}
    if blocks:
        metrics = _run_detector1(blocks, root, dead_dir, settings, runner, per_group, bar)
    timings["detector1"] = time.time() - t0
    peak = {"detector1": _peak_rss_mib()}

    from nirbeam.stream.products import finalize_products, run_spectra_stage

    t0 = time.time()
    groups = [pl.meta.group_name for pl in plans]
    with bar.stage("spectra", total=sum(zarr_store.count_completed(root, g, RATEINTS) for g in groups),
                   poll=lambda: sum(zarr_store.count_completed(root, g, "spectra") for g in groups)):
        metrics.update(run_spectra_stage(root, plans, settings, runner, dead_dir))
    timings["spectra"] = time.time() - t0
    peak["spectra"] = _peak_rss_mib()
    t0 = time.time()
    with bar.stage("products", total=len(plans), unit="exposures") as st:
        products = finalize_products(outdir, root, plans, settings)
        zarr_store.consolidate(root, {"nirbeam_version": __version__})
        st.set(len(products.get("exposures", {})))
    timings["products"] = time.time() - t0
    peak["products"] = _peak_rss_mib()

    summary = _account(outdir, root, plans, per_group, dead_dir)
    summary.update({
        "nirbeam_version": __version__,
        "command": "run",
        "inputs": files,
        "outdir": fs.abspath(outdir),
        "refs_dir": os.path.abspath(refs_dir) if refs_dir else None,
        "runner": {"name": runner.name, "workers": runner.workers, "beam_args": list(runner.beam_args)},
        "config": settings.as_json(),
        "config_input": config or {},
        "products": products,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "peak_rss_mib_after": peak,
        "metrics": metrics,
        "wall_s": round(time.time() - t_start, 3),
    })
    summary["exit_code"] = exit_status(summary)
    _write_json_atomic(fs.join(outdir, "run.json"), summary)
    return RunResult(outdir, summary, summary["exit_code"])


EXIT_INCOMPLETE = 3
"""Exit code of a run that ended with incomplete products (documented in the CLI)."""


def exit_status(summary: dict) -> int:
    """0, or :data:`EXIT_INCOMPLETE` when any exposure's products are incomplete."""
    exps = summary.get("exposures", [])
    if any(not e.get("products_complete", e.get("complete", True)) for e in exps):
        return EXIT_INCOMPLETE
    return 0


def _run_detector1(blocks, root, dead_dir, settings, runner, per_group, progress) -> dict:
    beam_runner, options, cleanup = make_runner(runner)
    from nirbeam.stream.progress import Progress

    bar = progress if isinstance(progress, Progress) else Progress(enabled=bool(progress))
    before = sum(v["skipped_complete"] for v in per_group.values())
    st = bar.stage("detector1", total=sum(len(b.items) for b in blocks), poll=lambda: sum(
        zarr_store.count_completed(root, g, RATEINTS) for g in per_group) - before)
    try:
        p = beam.Pipeline(runner=beam_runner, options=options)
        dead = (
            p
            | "PlanBlocks" >> beam.Create(blocks, reshuffle=False)
            | "Distribute" >> beam.Reshuffle()
            | "ReadCalibrateWrite" >> beam.ParDo(CalibrateBlock(root, settings, uuid.uuid4().hex))
        )
        _ = dead | "WriteDead" >> beam.Map(WriteDeadLetter(dead_dir))
        result = p.run()
        result.wait_until_finish()
        return _metrics(result)
    finally:
        st.close()
        if cleanup:
            cleanup()


def _metrics(result) -> dict:
    out = {}
    try:
        m = result.metrics().query()
    except Exception:  # noqa: BLE001 - some runners have no metrics
        return out
    for c in m.get("counters", []):
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + c.committed
    for d in m.get("distributions", []):
        v = d.committed
        if v is not None and v.count:
            out[d.key.metric.name] = {"count": v.count, "mean": round(v.sum / v.count, 3), "max": v.max}
    return out


def _peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _check_outdir(outdir: str) -> None:
    try:
        fs.makedirs(outdir)
        probe = fs.join(outdir, ".nirbeam-write-test")
        fs.write_text(probe, "ok")
        fs.remove(probe)
    except OSError as exc:
        raise BadInputError(outdir, f"output folder is not writable ({exc.strerror})") from None


_STAGE_OF_STEP = {"read": RATEINTS, "detector1": RATEINTS, "write_rateints": RATEINTS,
                  "extract": "spectra"}


def _account(outdir, root, plans, per_group, dead_dir) -> dict:
    """Every input integration: processed or dead-lettered; write deadletter.jsonl.

    ``processed`` counts integrations with a complete rateints region; ``deadlettered``
    those without one (each has a line in deadletter.jsonl saying where and why);
    ``processed + deadlettered == nints``. Of the processed, ``extracted`` have a spectrum
    and ``extract_failed`` a dead letter of the extract step.
    """
    dead: list[dict] = []
    for n in fs.listdir(dead_dir):
        if n.endswith(".json") and not n.startswith("."):  # ".name.*.json": a temporary
            dead.append(json.loads(fs.read_text(fs.join(dead_dir, n))))
    exposures = []
    lines = []
    for plan in plans:
        g = plan.meta.group_name
        n = plan.meta.nints
        done = {RATEINTS: zarr_store.completed(root, g, RATEINTS),
                "spectra": zarr_store.completed(root, g, "spectra")}
        if done["spectra"].size == 0:
            done["spectra"] = np.zeros(n, bool)
        key = (plan.meta.exposure, plan.meta.detector)
        here = {}
        for d in dead:
            if (d["exposure"], d["detector"]) != key or not d.get("integration"):
                continue
            stage = _STAGE_OF_STEP.get(d["step"], RATEINTS)
            if done[stage][d["integration"] - 1]:
                continue  # failed in an earlier run, complete now
            here[(d["integration"], d["step"])] = d
        for i in plan.missing:
            here.setdefault((i, "read"), {
                "exposure": key[0], "detector": key[1], "integration": i, "step": "read",
                "reason": "integration is in no input segment (missing segment)", "source": "",
            })
        rate_dead = {i for (i, step) in here if _STAGE_OF_STEP.get(step, RATEINTS) == RATEINTS}
        ext_dead = {i for (i, step) in here if step == "extract"}
        processed = int(done[RATEINTS].sum())
        extracted = int(done["spectra"].sum())
        info = dict(per_group[g])
        wl_good = _whitelight_points(root, g)
        info.update({
            "processed": processed,
            "deadlettered": len(rate_dead),
            "extracted": extracted,
            "extract_failed": len(ext_dead),
            "accounted": processed + len(rate_dead),
            "complete": processed + len(rate_dead) == n and extracted + len(ext_dead) == processed,
            "whitelight_points": wl_good,
            # what the exit status says: every integration calibrated and extracted, and a
            # white-light curve with at least one good point
            "products_complete": not here and processed == n and extracted == n and wl_good > 0,
        })
        exposures.append(info)
        lines.extend(here.values())
    fs.write_text(fs.join(outdir, "deadletter.jsonl"), "".join(
        json.dumps(d) + "\n"
        for d in sorted(lines, key=lambda d: (d["exposure"], d["detector"], d["integration"], d["step"]))))
    return {"exposures": exposures, "deadletters": len(lines),
            "products_complete": all(e["products_complete"] for e in exposures)}


def _whitelight_points(root: str, group: str) -> int:
    """Good (DQ 0) white-light points of an exposure's light curves (0 when none)."""
    try:
        wdq = zarr_store.read_stack(root, group, "lightcurves", "white_dq")
    except Exception:  # noqa: BLE001 - no light curves written
        return 0
    return int(np.sum(np.asarray(wdq) == 0))


def _write_json_atomic(path: str, obj) -> None:
    fs.write_text(path, json.dumps(obj, indent=2, default=str))

