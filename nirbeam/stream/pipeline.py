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
from nirbeam.transforms.common import RecordStep
from nirbeam.transforms.reference import ReferenceArrays

__all__ = [
    "Calibrate",
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
    """Read one integration's ramp into a record of stage ``ramp``."""
    ramp = read_ramp(item.segment, item.key.integration)
    return IntegrationRecord(
        key=item.key,
        meta=item.segment.meta,
        times=item.times,
        stage="ramp",
        source=item.segment.path,
        ramp=ramp,
    )


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
        fl = self.settings.flicker
        hook = None
        if fl.enabled and fl.level == "group":
            hook = make_group_hook(fl, scene_mask_from_store(self.root, rec.key.group, self.token))
        out = calibrate_record(rec, refs, self.settings.detector1, hook)
        if hook is not None:
            out = out.with_step("flicker", f"level=group method={fl.method} n_sigma={fl.n_sigma}")
        return out


def draft_scene_mask(plan: ExposurePlan, refs: ReferenceArrays, settings, n: int = 3) -> np.ndarray:
    """1/f scene mask from the median draft rate of the first few integrations."""
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
    return scene_mask(rate, dq=dq, **settings.flicker.mask_kwargs())


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


def _check_same_rate_settings(root: str, group: str, settings) -> None:
    """Refuse to resume a store whose completed rates were made with other settings."""
    from nirbeam.stream.config import ConfigError

    if not zarr_store.completed(root, group, RATEINTS).any():
        return
    try:
        old = dict(zarr_store.open_root(root)[group].attrs).get("config")
    except KeyError:
        return
    if old is None:
        return
    new = _rate_settings(settings)
    before = {"detector1": old.get("detector1"), "flicker": old.get("flicker")}
    if json.loads(json.dumps(before)) != json.loads(json.dumps(new)):
        raise ConfigError(
            f"{root}/{group}: this OUTDIR holds rates made with other detector1/flicker "
            "settings; resuming would mix them. Use a new --out folder (or the old config)."
        )


def prepare_exposure(root: str, plan: ExposurePlan, refs_dir, ref_index, settings) -> dict:
    """Choose references and create the store template for one exposure/detector."""
    from nirbeam.stream.refs import load_references, standin_references

    meta = plan.meta
    group = meta.group_name
    _check_same_rate_settings(root, group, settings)
    first = plan.segments[0]
    first_ramp = read_ramp(first, first.intstart)
    if refs_dir:
        refs, prov = load_references(refs_dir, meta, ref_index, first_ramp=first_ramp)
    else:
        refs, prov = standin_references(meta, first_ramp)
    fl = settings.flicker
    mask = draft_scene_mask(plan, refs, settings) if fl.enabled and fl.level == "group" else None
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
        array_attrs=RATE_ATTRS,
    )
    zarr_store.set_attrs(
        root, group,
        {"exposure": meta.header_dict(), "nirbeam_version": __version__,
         "references": prov, "notes": list(plan.notes), "config": settings.as_json()},
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
) -> RunResult:
    """Run the batch pipeline over uncal files/folders into OUTDIR.

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
    root = fs.join(outdir, "cubes.zarr")
    zarr_store.open_root(root)
    ref_index = index_references(refs_dir) if refs_dir else None
    timings = {"scan": time.time() - t_start}

    items: list[ReadItem] = []
    per_group: dict[str, dict] = {}
    t0 = time.time()
    st = bar.stage("prepare", total=len(plans), unit="exposures")
    for plan in plans:
        info = prepare_exposure(root, plan, refs_dir, ref_index, settings)
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
            "notes": list(plan.notes) + _exposure_notes(plan.meta, settings),
        }
        for i in todo:
            seg = plan.segment_of(i)
            items.append(ReadItem(
                IntegrationKey(plan.meta.exposure, plan.meta.detector, i),
                replace(seg, times={}),
                info["times"][i],
            ))
    st.close()
    timings["prepare"] = time.time() - t0

    dead_dir = fs.join(outdir, "_deadletters")
    t0 = time.time()
    metrics = {}
    if items:
        metrics = _run_detector1(items, root, dead_dir, settings, runner, per_group, bar)
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
    _write_json_atomic(fs.join(outdir, "run.json"), summary)
    return RunResult(outdir, summary, 0)


def _run_detector1(items, root, dead_dir, settings, runner, per_group, progress) -> dict:
    beam_runner, options, cleanup = make_runner(runner)
    from nirbeam.stream.progress import Progress

    bar = progress if isinstance(progress, Progress) else Progress(enabled=bool(progress))
    before = sum(v["skipped_complete"] for v in per_group.values())
    st = bar.stage("detector1", total=len(items), poll=lambda: sum(
        zarr_store.count_completed(root, g, RATEINTS) for g in per_group) - before)
    try:
        p = beam.Pipeline(runner=beam_runner, options=options)
        recs = (
            p
            | "Plan" >> beam.Create(items, reshuffle=False)
            | "Distribute" >> beam.Reshuffle()
        )
        read = recs | RecordStep(read_record, "read")
        cal = read.records | RecordStep(Calibrate(root, settings, uuid.uuid4().hex), "detector1")
        written = cal.records | RecordStep(WriteRateints(root), "write_rateints")
        dead = (read.deadletter, cal.deadletter, written.deadletter) | "AllDead" >> beam.Flatten()
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
        info.update({
            "processed": processed,
            "deadlettered": len(rate_dead),
            "extracted": extracted,
            "extract_failed": len(ext_dead),
            "accounted": processed + len(rate_dead),
            "complete": processed + len(rate_dead) == n and extracted + len(ext_dead) == processed,
        })
        exposures.append(info)
        lines.extend(here.values())
    fs.write_text(fs.join(outdir, "deadletter.jsonl"), "".join(
        json.dumps(d) + "\n"
        for d in sorted(lines, key=lambda d: (d["exposure"], d["detector"], d["integration"], d["step"]))))
    return {"exposures": exposures}


def _write_json_atomic(path: str, obj) -> None:
    fs.write_text(path, json.dumps(obj, indent=2, default=str))

