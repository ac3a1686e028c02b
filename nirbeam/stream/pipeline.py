"""The batch driver (``nirbeam run``): uncal segments -> integration records -> detector1 ->
zarr cubes -> stage 2 -> products.

The driver does the small, once-per-exposure work (scan headers, plan segments, choose and
cut reference files, create the store template, find what a previous run completed); Beam
does the per-integration work (read one ramp, calibrate it, write its region). Results
return through the store, never through the driver's memory.

The work comes from the plan (:mod:`nirbeam.stream.plan`: each exposure's mode and regions
from :func:`nirbeam.modes.mode_for`, its rate blocks); the Beam steps that execute it are
composed in :mod:`nirbeam.stream.graph`. The record functions live in
:mod:`nirbeam.stream.rate_steps`, the resume key in :mod:`nirbeam.stream.resume`, the run
summary in :mod:`nirbeam.stream.summary`; every public name is re-exported here.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from nirbeam import __version__
from nirbeam.modes import ModeError
from nirbeam.sinks import fs, zarr_store
from nirbeam.stream.graph import RateStage, run_bounded
from nirbeam.stream.plan import (
    RATE_BLOCK,
    ExposureWork,
    PlanError,
    RateBlock,
    ReadItem,
    exposure_work,
    rate_block_size,
    rate_blocks,
)
from nirbeam.stream.products import finalize_products, run_spectra_stage
from nirbeam.stream.rate_steps import (
    BAD_TIME_STEP,
    RATE_ARRAYS,
    RATE_ATTRS,
    RATEINTS,
    Calibrate,
    CalibrateBlock,
    WriteDeadLetter,
    WriteRateints,
    draft_scene_mask,
    read_record,
    refs_from_store,
    save_refs_to_store,
    scene_mask_from_store,
)
from nirbeam.stream.records import ExposureMeta, IntegrationKey, IntTimes
from nirbeam.stream.resume import (
    RESUME_KEY_VERSION,
    ResumeMismatch,
    check_resume,
    input_fingerprint,
    rate_settings,
    reset_group,
    resume_differences,
    resume_key,
    stored_resume_key,
)
from nirbeam.stream.runners import (
    RunnerSpec,
    available_cores,
    cpu_seconds,
    cpu_summary,
    pixel_groups,
    resolve_auto,
)
from nirbeam.stream.summary import (
    EXIT_INCOMPLETE,
    account,
    check_outdir,
    exit_status,
    peak_rss_mib,
    whitelight_points,
    write_json_atomic,
)
from nirbeam.stream.uncal import (
    BadInputError,
    ExposurePlan,
    find_uncal_files,
    plan_exposures,
    read_ramp,
    scan_segment,
)

__all__ = [
    # the driver
    "run", "RunResult", "run_rate_blocks", "prepare_rate_blocks", "PreparedExposure", "prepare_exposure", "load_exposure_refs", "no_refs_error",
    # re-exported from where they live now (old imports keep working)
    "RATE_BLOCK", "RATE_ARRAYS", "RATE_ATTRS", "RATEINTS", "BAD_TIME_STEP", "rate_block_size",
    "rate_blocks", "RateBlock", "ReadItem", "ExposureWork", "PlanError", "exposure_work",
    "Calibrate", "CalibrateBlock", "WriteDeadLetter", "WriteRateints", "draft_scene_mask",
    "read_record", "refs_from_store", "save_refs_to_store", "scene_mask_from_store",
    "RESUME_KEY_VERSION", "ResumeMismatch", "check_resume", "input_fingerprint",
    "rate_settings", "reset_group", "resume_differences", "resume_key", "stored_resume_key",
    "EXIT_INCOMPLETE", "account", "check_outdir", "exit_status", "peak_rss_mib",
    "whitelight_points", "write_json_atomic",
]

log = logging.getLogger("nirbeam")

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


def load_exposure_refs(plan: ExposurePlan, refs_dir, ref_index, allow_standins: bool):
    """References for one exposure/detector (files, or stand-ins when allowed)."""
    from nirbeam.stream.refs import load_references, standin_references

    first = plan.segments[0]
    first_ramp = read_ramp(first, first.intstart)
    if refs_dir:
        return load_references(refs_dir, plan.meta, ref_index, first_ramp=first_ramp,
                               allow_standins=allow_standins)
    if not allow_standins:
        raise no_refs_error()
    return standin_references(plan.meta, first_ramp)


def no_refs_error() -> BadInputError:
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
            reset_group(root, group, dead_dir)
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

    t_start, cpu_start = time.time(), cpu_seconds()
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
    runner, runner_why = resolve_auto(runner, pixel_groups(pl.meta for pl in plans))
    works = {}
    for plan in plans:  # each exposure's mode and regions (nirbeam.modes), refused by name
        try:
            works[plan.meta.group_name] = exposure_work(plan.meta, settings)
        except (ModeError, PlanError) as exc:
            raise BadInputError(plan.segments[0].path, str(exc)) from None
    check_outdir(outdir)
    if not refs_dir and not allow_standins:
        raise no_refs_error()
    ref_index = index_references(refs_dir) if refs_dir else None
    root = fs.join(outdir, "cubes.zarr")
    zarr_store.open_root(root)
    dead_dir = fs.join(outdir, "_deadletters")
    timings = {"scan": time.time() - t_start}

    per_group: dict[str, dict] = {}
    t0 = time.time()
    st = bar.stage("prepare", total=len(plans), unit="exposures")
    blocks, prepared = prepare_rate_blocks(plans, root, refs_dir, ref_index, settings, runner,
                                           allow_standins=allow_standins, overwrite=overwrite,
                                           dead_dir=dead_dir, advance=st.advance)
    for p in prepared:
        plan, info, done, group = p.plan, p.info, p.done, p.plan.meta.group_name
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
            "recomputed": p.recomputed,
            "notes": list(plan.notes) + _exposure_notes(plan.meta, settings),
            **works[group].describe(),
        }
    st.close()
    timings["prepare"] = time.time() - t0

    t0 = time.time()
    metrics = {}
    if blocks:
        metrics = run_rate_blocks(blocks, root, dead_dir, settings, runner, per_group, bar)
    timings["detector1"] = time.time() - t0
    peak = {"detector1": peak_rss_mib()}

    t0 = time.time()
    groups = [pl.meta.group_name for pl in plans]
    with bar.stage("spectra", total=sum(zarr_store.count_completed(root, g, RATEINTS) for g in groups),
                   poll=lambda: sum(zarr_store.count_completed(root, g, "spectra") for g in groups)):
        metrics.update(run_spectra_stage(root, plans, settings, runner, dead_dir))
    timings["spectra"] = time.time() - t0
    peak["spectra"] = peak_rss_mib()
    t0 = time.time()
    with bar.stage("products", total=len(plans), unit="exposures") as st:
        # the store consolidated once the products are written (a plot process may draw on)
        products = finalize_products(outdir, root, plans, settings, then=lambda: zarr_store.consolidate(
            root, {"nirbeam_version": __version__}))
        st.set(len(products.get("exposures", {})))
    timings["products"] = time.time() - t0
    peak["products"] = peak_rss_mib()

    summary = account(outdir, root, plans, per_group, dead_dir)
    summary.update({
        "nirbeam_version": __version__,
        "command": "run",
        "inputs": files,
        "outdir": fs.abspath(outdir),
        "refs_dir": os.path.abspath(refs_dir) if refs_dir else None,
        "runner": {"name": runner.name, "workers": runner.workers, "beam_args": list(runner.beam_args),
                   "chosen": runner_why, "cores_available": available_cores()},
        "config": settings.as_json(),
        "config_input": config or {},
        "products": products,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "peak_rss_mib_after": peak,
        "metrics": metrics,
        "wall_s": round(time.time() - t_start, 3),
    })
    summary["cpu"] = cpu_summary(time.time() - t_start, cpu_seconds() - cpu_start,
                                 runner, pixel_groups(pl.meta for pl in plans))
    summary["exit_code"] = exit_status(summary)
    write_json_atomic(fs.join(outdir, "run.json"), summary)
    return RunResult(outdir, summary, summary["exit_code"])



@dataclass(frozen=True)
class PreparedExposure:
    """One exposure after :func:`prepare_rate_blocks`: its plan, what
    :func:`prepare_exposure` returned, the store's completed flags, whether it was reset
    and the mode's scene mask (or None)."""

    plan: ExposurePlan
    info: dict
    done: np.ndarray
    recomputed: bool
    trace_mask: np.ndarray | None


def prepare_rate_blocks(plans, root: str, refs_dir, ref_index, settings, runner: RunnerSpec, *,
                        allow_standins: bool, overwrite: bool, dead_dir: str,
                        trace_mask_for=None, advance=None) -> tuple[list, list[PreparedExposure]]:
    """Stage 1's preparation, shared by the BOTS driver and the ensemble modes.

    Every exposure's references and resume key are checked first (nothing is written if
    one is refused); then each is reset if its key changed, prepared
    (:func:`prepare_exposure`, with ``trace_mask_for(plan)`` as the mode's scene mask) and
    its rate blocks planned: whole numbers of the store's chunks (a resumed store keeps
    its own). ``advance`` is called once per prepared exposure (a progress stage).
    """
    loaded, reset = [], []
    for plan in plans:
        refs, prov = load_exposure_refs(plan, refs_dir, ref_index, allow_standins)
        key = resume_key(plan, prov, settings)
        reset.append(check_resume(root, plan.meta.group_name, key, overwrite))
        loaded.append((refs, prov, key))
    blocks: list[RateBlock] = []
    prepared: list[PreparedExposure] = []
    for plan, ld, rs in zip(plans, loaded, reset, strict=True):
        group = plan.meta.group_name
        if rs:
            reset_group(root, group, dead_dir)
        mask = trace_mask_for(plan) if trace_mask_for else None
        info = prepare_exposure(root, plan, refs_dir, ref_index, settings, loaded=ld,
                                time_chunk=rate_block_size(plan.meta.nints, runner),
                                trace_mask=mask)
        if advance is not None:
            advance()
        done = zarr_store.completed(root, group, RATEINTS)

        def item(i, plan=plan, info=info):
            return ReadItem(IntegrationKey(plan.meta.exposure, plan.meta.detector, i),
                            replace(plan.segment_of(i), times={}), info["times"][i])

        c = zarr_store.time_chunk(root, group, RATEINTS)
        block = c * max(1, rate_block_size(plan.meta.nints, runner) // c)
        blocks += rate_blocks(group, plan.meta.nints, plan.present, done, item, block)
        prepared.append(PreparedExposure(plan, info, done, bool(rs), mask))
    return blocks, prepared


def run_rate_blocks(blocks, root, dead_dir, settings, runner, per_group, progress) -> dict:
    """Stage 1 on the runner: :class:`~nirbeam.stream.graph.RateStage` of the plan's blocks."""
    from nirbeam.stream.progress import Progress

    bar = progress if isinstance(progress, Progress) else Progress(enabled=bool(progress))
    before = sum(v["skipped_complete"] for v in per_group.values())
    st = bar.stage("detector1", total=sum(len(b.items) for b in blocks), poll=lambda: sum(
        zarr_store.count_completed(root, g, RATEINTS) for g in per_group) - before)
    token = uuid.uuid4().hex
    try:
        return run_bounded(
            lambda p: p | "RateStage" >> RateStage(blocks, root, settings, token, dead_dir),
            runner)
    finally:
        st.close()
