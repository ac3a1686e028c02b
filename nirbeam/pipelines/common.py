"""Stage 1 of the ensemble modes (FS, MOS, IFU): uncal exposures -> calibrated rates.

The same detector1 as BOTS, through the same record functions and Beam step
(:class:`nirbeam.stream.pipeline.CalibrateBlock`: read, detector1 with 1/f cleaning of the
groups as its hook, block writes of ``rateints`` into the store), with one difference:
the 1/f scene mask excludes every pixel the mode says holds light (every slit, slitlet or
slice: ``trace_mask_for(plan)``), as well as what the draft rate image shows.

Then each exposure's integrations become one exposure rate (:func:`exposure_rate`):
outliers among the integrations flagged with the time-series kernel, and the good
integrations averaged (:mod:`nirbeam.transforms.slit2d`). The rate is saved in the store
at ``<exposure>_<det>/rate`` (``sci``, ``var``, ``dq``, ``var_rnoise``, ``var_poisson``).

Nothing here knows a mode's geometry: a mode passes its mask.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from nirbeam import dqflags
from nirbeam.sinks import fs, zarr_store
from nirbeam.stream.pipeline import (
    RATE_ARRAYS,
    RATEINTS,
    check_outdir,
    no_refs_error,
    prepare_rate_blocks,
    run_rate_blocks,
)
from nirbeam.stream.runners import RunnerSpec
from nirbeam.stream.uncal import ExposurePlan, find_uncal_files, plan_exposures, scan_segment
from nirbeam.transforms.slit2d import combine_integrations, flag_ensemble_outliers, good_pixels

__all__ = ["Stage1Result", "scan_inputs", "run_stage1", "exposure_rate", "load_exposure_rate",
           "RATE_GROUP"]

log = logging.getLogger("nirbeam")

RATE_GROUP = "rate"
"""Store sub-group of an exposure's combined rate (``sci``, ``var``, ``dq``)."""


@dataclass(frozen=True)
class Stage1Result:
    """What :func:`run_stage1` did.

    Attributes
    ----------
    root : str
        The store (``OUTDIR/cubes.zarr``).
    plans : list of ExposurePlan
    per_group : dict
        Per exposure/detector: integrations present, dead letters, references used.
    metrics : dict
        Beam counters of the detector1 step.
    timings_s : dict
    """

    root: str
    plans: list
    per_group: dict
    metrics: dict = field(default_factory=dict)
    timings_s: dict = field(default_factory=dict)


def scan_inputs(inputs: Sequence[str]) -> list[ExposurePlan]:
    """uncal files/folders -> exposure plans (any EXP_TYPE: no time-series check)."""
    files = find_uncal_files(list(inputs))
    if not files:
        from nirbeam.stream.uncal import BadInputError

        raise BadInputError(", ".join(map(str, inputs)), "no *_uncal.fits files found")
    return plan_exposures([scan_segment(f, require_tso=False) for f in files])


def run_stage1(plans: Sequence[ExposurePlan], outdir: str, settings, *,
               refs_dir: str | None = None, runner: RunnerSpec | None = None,
               trace_mask_for: Callable[[ExposurePlan], np.ndarray | None] | None = None,
               allow_standins: bool = False, overwrite: bool = False,
               progress: bool = False) -> Stage1Result:
    """detector1 on every integration of every exposure, on Beam, into ``OUTDIR/cubes.zarr``.

    The driver of :func:`nirbeam.stream.pipeline.run` up to its detector1 stage (the same
    resume checks, reference choice, store template and Beam step), with the mode's
    scene mask. Completed integrations of an earlier identical run are not recomputed.

    Parameters
    ----------
    plans : from :func:`scan_inputs`
    settings : nirbeam.stream.settings.Settings
    trace_mask_for : callable ``plan -> bool (ny, nx)``, optional
        Pixels of the exposure that hold light (every slit), kept out of the 1/f fit.
    """
    from nirbeam.stream.progress import Progress
    from nirbeam.stream.refs import index_references

    t0 = time.time()
    runner = runner or RunnerSpec()
    bar = Progress(enabled=bool(progress))
    check_outdir(outdir)
    if not refs_dir and not allow_standins:
        raise no_refs_error()
    ref_index = index_references(refs_dir) if refs_dir else None
    root = fs.join(outdir, "cubes.zarr")
    zarr_store.open_root(root)
    dead_dir = fs.join(outdir, "_deadletters")
    blocks, prepared = prepare_rate_blocks(plans, root, refs_dir, ref_index, settings, runner,
                                           allow_standins=allow_standins, overwrite=overwrite,
                                           dead_dir=dead_dir, trace_mask_for=trace_mask_for)
    per_group = {}
    for p in prepared:
        plan, done = p.plan, p.done
        per_group[plan.meta.group_name] = {
            "exposure": plan.meta.exposure, "detector": plan.meta.detector,
            "exp_type": plan.meta.exp_type, "nints": plan.meta.nints,
            "present": len(plan.present), "missing": list(plan.missing),
            "skipped_complete": int(sum(done[i - 1] for i in plan.present)),
            "segments": [os.path.basename(s.path) for s in plan.segments],
            "references": p.info["refs"], "scene_mask_from_mode": p.trace_mask is not None,
            "recomputed": p.recomputed,
        }
    t_prep = time.time() - t0
    t1 = time.time()
    metrics = run_rate_blocks(blocks, root, dead_dir, settings, runner, per_group, bar) if blocks else {}
    for g, v in per_group.items():
        v["completed"] = zarr_store.count_completed(root, g, RATEINTS)
    return Stage1Result(root, list(plans), per_group, metrics,
                        {"prepare": round(t_prep, 3), "detector1": round(time.time() - t1, 3)})


def exposure_rate(root: str, group: str, *, n_sigma: float = 5.0, save: bool = True):
    """One exposure's rate from its calibrated integrations.

    Integrations not completed (dead-lettered) are left out; outliers among the others
    are flagged (:func:`~nirbeam.transforms.slit2d.flag_ensemble_outliers`, the BOTS
    time-series kernel with the window = all integrations; needs >= 3) and the good ones
    averaged (equal weights: they share the exposure time; ERR^2, VAR_RNOISE and
    VAR_POISSON propagated).

    Returns
    -------
    rate : float64, (ny, nx), DN/s
    var : float64, (ny, nx), (DN/s)^2
    dq : uint32, (ny, nx)
    """
    done = zarr_store.completed(root, group, RATEINTS)
    if not done.any():
        raise ValueError(f"{root}/{group}/{RATEINTS}: no calibrated integration (all "
                         "dead-lettered?): no exposure rate")
    blk = zarr_store.read_block(root, group, RATEINTS, list(RATE_ARRAYS), slice(0, done.size))
    keep = np.flatnonzero(done)
    sci = blk["sci"][keep]
    err = blk["err"][keep]
    dq = flag_ensemble_outliers(sci, err, blk["dq"][keep], n_sigma)
    var_i = err.astype(np.float64) ** 2
    rate, var, rdq = combine_integrations(sci, var_i, dq)
    ok = good_pixels(sci, var_i, dq)
    n2 = np.maximum(ok.sum(axis=0), 1).astype(np.float64) ** 2
    parts = {k: (np.where(ok, blk[k][keep], 0.0).sum(axis=0) / n2).astype(np.float32)
             for k in ("var_rnoise", "var_poisson")}
    if save:
        zarr_store.save_arrays(
            root, f"{group}/{RATE_GROUP}",
            {"sci": rate.astype(np.float32), "var": var.astype(np.float32), "dq": rdq, **parts},
            attrs={"integrations": [int(i) + 1 for i in keep],
                   "outliers_flagged": int(((dq & dqflags.OUTLIER) != 0).sum()),
                   "description": "inverse-variance mean of the integrations (DN/s)"},
            array_attrs={"sci": {"units": "DN/s"}, "var": {"units": "(DN/s)^2"},
                         "dq": {"units": ""}, "var_rnoise": {"units": "(DN/s)^2"},
                         "var_poisson": {"units": "(DN/s)^2"}})
    return rate, var, rdq


def load_exposure_rate(root: str, group: str, parts: bool = False):
    """(rate, var, dq) saved by :func:`exposure_rate`; with ``parts`` also
    (var_rnoise, var_poisson)."""
    a, _ = zarr_store.load_arrays(root, f"{group}/{RATE_GROUP}")
    out = (a["sci"].astype(np.float64), a["var"].astype(np.float64), a["dq"].astype(np.uint32))
    if parts:
        out += (a["var_rnoise"].astype(np.float64), a["var_poisson"].astype(np.float64))
    return out


def ensemble_mode_of(inputs: Sequence[str]) -> str | None:
    """The mode name (``"fs"``, ...) when every uncal input is of one ensemble mode (not
    BOTS), by the dispatch table (:func:`nirbeam.modes.classify_inputs`); None for BOTS
    inputs, inputs that cannot be read, and mixtures or unknown types (which
    ``classify_inputs`` refuses by name)."""
    from nirbeam.modes import UNCAL, ModeInputError, classify_inputs

    try:
        c = classify_inputs(inputs)
    except ModeInputError:
        return None
    if c.entry.level != UNCAL or c.mode == "bots":
        return None
    return c.mode
