"""The plan of a run, independent of the executor: which records and blocks, which steps,
which products, for each exposure/detector.

Pure: dataclasses and functions of the exposure's metadata, the settings and the
completion markers an earlier run left (passed in, never read here); no Beam, no store.
The batch driver (:func:`nirbeam.stream.pipeline.run`, stage 2 in
:mod:`nirbeam.stream.products`) and the stream (:mod:`nirbeam.stream.streaming`) take their
work from here; :mod:`nirbeam.stream.graph` composes the Beam steps that execute it.

- :func:`exposure_work`: an exposure/detector's mode (:func:`nirbeam.modes.mode_for`), its
  regions (``mode.regions(meta, settings)``), their store groups, the record steps each
  integration goes through (:data:`RECORD_STEPS`), the stage-2 steps and the products.
  The time-series stages take one region per detector covering the science array in the
  flat store path (BOTS); a mode whose regions are otherwise is refused by name (its
  batch pipeline lives in :mod:`nirbeam.pipelines`).
- :class:`ReadItem` (one integration to read), :class:`RateBlock` and :func:`rate_blocks`
  (stage 1 work items of batch), :class:`SpectraBlock` and :func:`spectra_blocks` (stage 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from nirbeam.core.geometry import SpectralRegion
from nirbeam.core.records import IntegrationKey, IntTimes

if TYPE_CHECKING:  # types only: the plan imports no reader and no runner
    from nirbeam.stream.runners import RunnerSpec
    from nirbeam.stream.uncal import SegmentInfo

__all__ = ["RECORD_STEPS", "STAGE2_STEPS", "RATE_BLOCK", "BLOCK", "MAX_SPAN_BLOCKS",
           "PlanError", "ExposureWork", "exposure_work", "ReadItem", "RateBlock",
           "rate_block_size", "rate_blocks", "SpectraBlock", "block_span", "spectra_blocks"]

RECORD_STEPS = ("read", "detector1", "write_rateints")
"""The steps every integration goes through, in order, in batch and in the stream (each a
Beam counter ``<step>.records`` and a dead-letter step name)."""

STAGE2_STEPS = ("outliers", "extract")
"""Stage 2 of a time series: outlier flags along time, then extraction per region."""

RATE_BLOCK = 32
"""Integrations per batch rateints write (and per chunk along time of a batch run's
rateints): one worker reads, calibrates and writes a whole block, so no two writers ever
share a chunk, and each array gets one write per block instead of one per integration.
The same size as the stage-2 blocks (:data:`BLOCK`), so their windows read whole chunks."""

BLOCK = 32
"""Integrations per chunk along time of the spectra and cleaned stages."""


class PlanError(ValueError):
    """An exposure the time-series plan cannot take (names the mode and why)."""


@dataclass(frozen=True)
class ExposureWork:
    """What a run does with one exposure/detector (see the module notes)."""

    exposure: str
    detector: str
    nints: int
    mode: str
    regions: tuple[SpectralRegion, ...]
    store_groups: tuple[str, ...]
    ensemble: str = "time"
    steps: tuple[str, ...] = RECORD_STEPS + STAGE2_STEPS
    products: tuple[str, ...] = field(default=())

    @property
    def group(self) -> str:
        """The detector's store group (rateints live here for every mode)."""
        return f"{self.exposure}_{self.detector.lower()}"

    @property
    def region(self) -> SpectralRegion:
        """The one region of a time series (stage 2 extracts it)."""
        return self.regions[0]

    def describe(self) -> dict:
        """``{"mode", "regions": [...]}`` for ``run.json``."""
        return {"mode": self.mode, "regions": [
            {"name": r.name, "bbox": [r.bbox.y0, r.bbox.y1, r.bbox.x0, r.bbox.x1],
             "trace": r.trace.kind, "wavelength": r.wavelength.kind,
             "background": r.background.kind, "store_group": g}
            for r, g in zip(self.regions, self.store_groups, strict=True)]}


def exposure_work(meta, settings, mode=None) -> ExposureWork:
    """The work of one exposure/detector: its mode's regions and products.

    ``mode``: a :class:`~nirbeam.core.geometry.ModePlan` (default
    :func:`nirbeam.modes.mode_for`).

    Raises
    ------
    nirbeam.modes.ModeError
        No mode handles the EXP_TYPE.
    PlanError
        The mode's regions are not a time series the rate/spectra stages can take: one
        region per detector, the whole science array, in the flat store path.
    """
    from nirbeam.modes import mode_for

    mode = mode or mode_for(meta)
    regions = mode.regions(meta, settings)
    groups = tuple(mode.store_group(meta, r) for r in regions)
    ens = mode.ensemble(settings)
    ny, nx = meta.image_shape
    why = []
    if ens.kind != "time":
        why.append(f"its ensemble is {ens.kind!r}, not a time series")
    if len(regions) != 1:
        why.append(f"it has {len(regions)} regions per detector")
    elif (regions[0].bbox.y0, regions[0].bbox.y1, regions[0].bbox.x0, regions[0].bbox.x1) \
            != (0, ny, 0, nx):
        why.append(f"its region {regions[0].name} is not the whole {ny}x{nx} science array")
    if any(g != meta.group_name for g in groups):
        why.append("its regions have their own store groups")
    if why:
        raise PlanError(
            f"{meta.exposure} {meta.detector}: mode {mode.name!r} (EXP_TYPE {meta.exp_type!r}) "
            f"is not a time series of one full-array region: {'; '.join(why)}; its batch "
            "pipeline is in nirbeam.pipelines")
    return ExposureWork(meta.exposure, meta.detector, int(meta.nints), mode.name, regions,
                        groups, ens.kind, products=tuple(mode.products))


@dataclass(frozen=True)
class ReadItem:
    """What a worker needs to read one integration: its key, segment and times."""

    key: IntegrationKey
    segment: SegmentInfo
    times: IntTimes


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



@dataclass(frozen=True)
class SpectraBlock:
    """Integrations ``start..stop`` (1-based, inclusive) of one exposure/detector."""

    exposure: str
    detector: str
    nints: int
    start: int
    stop: int
    model_token: str = ""  # digest of the extraction model's inputs: worker caches key on it
    rate_done_bits: bytes = b""  # np.packbits of the rateints completion markers (driver)

    def rate_done(self) -> np.ndarray | None:
        """The rateints markers the driver read (None: read them from the store)."""
        if not self.rate_done_bits:
            return None
        return np.unpackbits(np.frombuffer(self.rate_done_bits, np.uint8))[: self.nints].astype(bool)

    @property
    def group(self) -> str:
        """Store group name."""
        return f"{self.exposure}_{self.detector.lower()}"


MAX_SPAN_BLOCKS = 4
"""A stage-2 work item is flagged, extracted and written in steps of up to this many
BLOCKs (the window a step reads: the step and ``outliers.window`` integrations either
side). On a parallel runner an item is one such step: each item reads its neighbours
again ((span + 2 window) / span: 2.6x for one block, 1.4x for four)."""


def block_span(nints: int, ngroups: int, runner_spec) -> int:
    """Integrations per stage-2 work item: a multiple of BLOCK (aligned with the chunks of
    the spectra and cleaned stages).

    The ``direct`` runner (one worker): the whole exposure, one item that reads each
    rateints chunk once (its steps share their windows' neighbours). Other runners: up
    to MAX_SPAN_BLOCKS blocks, fewer where that would leave the workers fewer than two
    items each."""
    if runner_spec is None or runner_spec.name == "direct":
        return BLOCK * max(1, -(-int(nints) // BLOCK))
    workers = runner_spec.workers or 2
    nblocks = max(1, -(-nints // BLOCK)) * max(1, ngroups)
    k = max(1, min(MAX_SPAN_BLOCKS, nblocks // (2 * workers)))
    return BLOCK * k


def spectra_blocks(work: ExposureWork, rate_done: np.ndarray, spec_done: np.ndarray,
                   span: int, digest: str = "") -> list[SpectraBlock]:
    """Stage-2 work items of one exposure/detector: spans of ``span`` integrations that
    hold an integration with rates and no spectrum yet.

    ``rate_done``, ``spec_done``: bool (nints,), the stores' completion markers.
    """
    todo = np.flatnonzero(rate_done & ~spec_done) + 1
    if todo.size == 0:
        return []
    n = work.nints
    bits = np.packbits(rate_done).tobytes()
    out = []
    for start in range(1, n + 1, span):
        stop = min(n, start + span - 1)
        if np.any((todo >= start) & (todo <= stop)):
            out.append(SpectraBlock(work.exposure, work.detector, n, start, stop, digest, bits))
    return out
