"""Stage 2's work of a time series, per exposure/detector and region: the extraction model
(built by the driver from a sample of the rates, saved in the store) and the block step
:class:`ProcessBlock` (outlier flags from a window read from the store, extraction, whole
chunks written). The region (:class:`~nirbeam.core.geometry.SpectralRegion`, from the
mode plan) gives the trace rule and the background rule.

Moved from :mod:`nirbeam.stream.products` (which re-exports every public name).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from dataclasses import dataclass

import numpy as np

from nirbeam import dqflags
from nirbeam.sinks import zarr_store
from nirbeam.stream.plan import BLOCK, MAX_SPAN_BLOCKS, SpectraBlock
from nirbeam.stream.records import DeadLetter, IntegrationKey
from nirbeam.stream.wavelengths import axis_units, is_pixel_axis
from nirbeam.transforms.outliers import flag_outliers, nanmedian_axis0
from nirbeam.transforms.spectra import (
    SPECTRUM_ARRAYS,
    ExtractionModel,
    build_extraction_model,
    extract_integration,
)
from nirbeam.transforms.spectra_block import extract_block

__all__ = ["RATEINTS", "SPECTRA", "CLEANED", "EXTRACTION", "find_wavelengths", "axis_attrs",
           "prepare_spectra", "done_digest", "extraction_model", "build_model",
           "extraction_settings", "region_of", "ProcessBlock", "SpectraBlock"]

log = logging.getLogger("nirbeam")

RATEINTS = "rateints"
SPECTRA = "spectra"
CLEANED = "cleaned"
EXTRACTION = "extraction"


# ---------------------------------------------------------------------------------------
# Wavelengths


def find_wavelengths(plan, cfg, trace, nx: int):
    """The exposure's wavelengths from the user's sources, or the pixel axis.

    See :mod:`nirbeam.stream.wavelengths`: a jwst product or wavelength map, a polynomial,
    optionally jwst's assign_wcs; never a simulator's truth file.
    """
    from nirbeam.stream.wavelengths import find_wavelengths as _find

    return _find(plan, cfg, trace, nx)


# ---------------------------------------------------------------------------------------
# Preparing the stage (driver)


def axis_attrs(source: str) -> dict:
    """Attributes of the spectral-axis coordinate: µm, or pixels said in plain words."""
    if is_pixel_axis(source):
        return {"units": "pixel", "source": source,
                "description": "NO WAVELENGTH SOLUTION: 0-based detector column index "
                               "(pixels), not a wavelength"}
    return {"units": "um", "source": source, "description": "wavelength along the trace"}


def _sample_indices(done: np.ndarray, n: int) -> np.ndarray:
    idx = np.flatnonzero(done)
    if idx.size <= n:
        return idx
    return idx[np.linspace(0, idx.size - 1, n).round().astype(int)]


def prepare_spectra(root: str, plan, settings, region=None) -> ExtractionModel | str | None:
    """Build and save the extraction model; create the spectra and cleaned stages.

    Returns the model, None when no integration has rates, or a string saying why no
    model could be built. ``region``: the mode plan's region (default: :func:`region_of`).
    """

    meta = plan.meta
    group = meta.group_name
    done = zarr_store.completed(root, group, RATEINTS)
    if not done.any():
        return None
    cfg = settings.extract
    # The model (and every spectrum and outlier flag made with it) depends on the set of
    # integrations with rates: when that set changed since (a resumed run that completed
    # integrations an earlier run lost), rebuild and redo the stage, so products equal
    # those of an uninterrupted run.
    digest = done_digest(done)
    try:
        arrays, attrs = zarr_store.load_arrays(root, f"{group}/{EXTRACTION}")
        model = ExtractionModel.from_arrays(arrays, attrs)
        if (attrs.get("settings") == extraction_settings(settings)
                and attrs.get("rateints_digest") == digest):
            return model
    except Exception:  # noqa: BLE001 - absent or stale: rebuild
        pass
    for stage in (SPECTRA, CLEANED):
        _reset_completed(root, group, stage)
    sel = _sample_indices(done, cfg.profile_nints)
    sci = zarr_store.read_stack(root, group, RATEINTS, "sci", sel)
    dq = zarr_store.read_stack(root, group, RATEINTS, "dq", sel)
    model = extraction_model(sci, dq, meta, settings, plan, region)
    if isinstance(model, str):
        return model
    ny, nx = meta.image_shape
    wl = model.wavelength
    arrays, attrs = model.to_arrays()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        arrays["median_image"] = nanmedian_axis0(np.where((dq & 1) != 0, np.nan, sci))
    attrs["settings"] = extraction_settings(settings)
    attrs["rateints_digest"] = digest
    zarr_store.save_arrays(root, f"{group}/{EXTRACTION}", arrays, attrs)
    coords = {
        n: zarr_store.read_stack(root, group, RATEINTS, n)
        for n in ("integration_number", "int_mid_BJD_TDB", "int_mid_MJD_UTC")
    }
    spec_attrs = {
        "flux": {"units": "DN/s", "description": "extracted flux per column (configured method)"},
        "flux_error": {"units": "DN/s", "description": "1-sigma error of flux"},
        "box_flux": {"units": "DN/s", "description": "curved-box flux per column"},
        "box_flux_error": {"units": "DN/s", "description": "1-sigma error of box_flux"},
        "flux_var_poisson": {"units": "(DN/s)^2", "description": "Poisson variance of flux"},
        "flux_var_rnoise": {"units": "(DN/s)^2", "description": "read-noise variance of flux"},
        "dq": {"units": "", "description": "OR of DQ of pixels masked in the aperture"},
        "npixels": {"units": "", "description": "pixels used"},
        "background": {"units": "DN/s", "description": "background per pixel subtracted"},
    }
    g = zarr_store.prepare_stage(
        root, group, SPECTRA, meta.nints, (nx,), SPECTRUM_ARRAYS, frame_dims=("wavelength",),
        coords=coords, array_attrs=spec_attrs, time_chunk=BLOCK,
        attrs={"wavelength_source": wl.source, "method": cfg.method,
               "spectral_axis_units": axis_units(wl.source)},
    )
    if "wavelength" not in g:
        g.create_array("wavelength", data=wl.wavelength, dimension_names=("wavelength",),
                       attributes=zarr_store.cf_attrs("wavelength", axis_attrs(wl.source)))
    zarr_store.prepare_stage(
        root, group, CLEANED, meta.nints, (ny, nx), {"dq": np.uint32}, coords=coords,
        time_chunk=BLOCK,
        array_attrs={"dq": {"units": "", "description": "rateints DQ plus OUTLIER flags along time"}},
    )
    return model


def done_digest(done: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(done).tobytes()).hexdigest()


def _reset_completed(root: str, group: str, stage: str) -> None:
    """Mark every integration of a stage as not done (the stage will be redone)."""
    import zarr

    try:
        done = zarr.open_array(root, path=f"{group}/{stage}/done", mode="r+", zarr_format=3)
    except Exception:  # noqa: BLE001 - stage not created yet: nothing to reset
        return
    if done[:].any():
        done[:] = 0


def region_of(meta, settings):
    """The one region of a time series' exposure/detector, from its mode plan."""
    from nirbeam.stream.plan import exposure_work

    return exposure_work(meta, settings).region


def extraction_model(sci, dq, meta, settings, plan=None, region=None) -> ExtractionModel | str:
    """The extraction model of a sample of rates (batch: spread over the exposure; live:
    its first integrations): the region's trace (fixed, or fitted), the profile, and the
    wavelengths of ``plan`` (none without a plan). Returns the reason when none can be built.

    ``region``: the :class:`~nirbeam.core.geometry.SpectralRegion` (default: the mode
    plan's, :func:`region_of`); its trace rule and background rule are used.
    """
    from nirbeam.transforms.trace import TraceModel

    region = region if region is not None else region_of(meta, settings)
    cfg = settings.extract
    nx = meta.image_shape[1]
    trace = None
    if region.trace.kind == "fixed":
        trace = TraceModel.from_config(list(region.trace.coefficients), 1.0, (0.0, nx - 1.0),
                                       scaled=False)
    elif region.trace.kind != "fit":
        return (f"region {region.name}: trace rule {region.trace.kind!r}: the time-series "
                "extraction needs a fitted or fixed trace")
    model = build_model(sci, dq, cfg, trace, settings, region)
    if isinstance(model, str) or plan is None:
        return model
    wl = find_wavelengths(plan, cfg, model.trace, nx)
    return ExtractionModel(**{**model.__dict__, "wavelength": wl})


def build_model(sci, dq, cfg, trace, settings, region=None) -> ExtractionModel | str:
    """The extraction model, or the reason it cannot be built (e.g. no trace on NRS2).

    With ``region``, its background rule (an annulus, or none) and trace degree replace
    ``[extract] background_region`` and ``trace_deg`` (BOTS: the same values).
    """
    bg = tuple(cfg.background_region) if cfg.background_region else None
    deg = cfg.trace_deg
    if region is not None:
        b = region.background
        if b.kind not in ("annulus", "none"):
            return (f"region {region.name}: background rule {b.kind!r}: the time-series "
                    "extraction subtracts an annulus or nothing")
        bg = (b.inner, b.outer) if b.kind == "annulus" else None
        deg = region.trace.degree
    try:
        return build_extraction_model(
            sci, dq, half_width=cfg.half_width, background_region=bg,
            trace_deg=deg, trace=trace, method=cfg.method, sigma_clip=cfg.sigma_clip,
            flicker=settings.flicker,
        )
    except ValueError as exc:
        return f"no spectral trace could be measured on the median rate image ({exc})"


def extraction_settings(settings) -> dict:
    from nirbeam.stream.config import to_jsonable

    return to_jsonable({"extract": settings.extract, "outliers": settings.outliers,
                        "flicker": settings.flicker})



# ---------------------------------------------------------------------------------------
# Per-block work (Beam workers)


_MODELS: dict[tuple[str, str, str], ExtractionModel] = {}


#: Integrations flagged, extracted and written per step of a work item (whole chunks of
#: the spectra and cleaned stages): the window the flags need is this plus
#: ``outliers.window`` either side, read chunk by chunk, each chunk once per work item.
STEP = BLOCK * MAX_SPAN_BLOCKS


class WindowReader:
    """The outlier window of consecutive steps of one work item, each rateints chunk of
    ``sci``, ``err`` and ``dq`` read (and decoded) once.

    :meth:`get` returns integrations ``lo..hi`` (0-based, ``hi`` exclusive) of the three
    arrays, with ``DO_NOT_USE`` added to the DQ of integrations without rates (never in
    a median); successive calls must not go back (``lo`` and ``hi`` only advance). It
    holds what the next step can still need: the integrations from ``lo`` to the end of
    the last chunk read.
    """

    NAMES = ("sci", "err", "dq")

    def __init__(self, root: str, group: str, done: np.ndarray):
        self.root, self.group, self.done = root, group, done
        self.nints = int(done.size)
        self.chunk = zarr_store.time_chunk(root, group, RATEINTS, "sci")
        self.lo = 0  # the buffers hold integrations [lo, hi)
        self.hi = 0
        self.buf: dict[str, np.ndarray] | None = None

    def get(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        if self.buf is not None and lo < self.lo:
            raise ValueError(f"WindowReader: {lo}..{hi} goes back from {self.lo}..{self.hi}")
        if self.buf is None or lo >= self.hi:  # nothing to keep: start afresh at lo
            self.lo = self.hi = lo
            self.buf = None
        if hi > self.hi:
            top = min(self.nints, -(-hi // self.chunk) * self.chunk)  # whole chunks
            new = zarr_store.read_block(self.root, self.group, RATEINTS, self.NAMES,
                                        slice(self.hi, top))
            bad = ~self.done[self.hi:top]
            if bad.any():
                new["dq"][bad] |= np.uint32(dqflags.DO_NOT_USE)
            if self.buf is None:
                self.buf = new
            else:
                k = lo - self.lo
                self.buf = {n: np.concatenate([self.buf[n][k:], new[n]]) for n in self.NAMES}
                self.lo = lo
            self.hi = top
        k = lo - self.lo
        return {n: self.buf[n][k: k + hi - lo] for n in self.NAMES}


def _spectra_fill(n: int, nx: int) -> dict[str, np.ndarray]:
    """(n, nx) arrays of the store's fill (NaN, DQ DO_NOT_USE): what an integration not
    extracted keeps (missing)."""
    return {k: np.full((n, nx), zarr_store.fill_value_for(k, dt), dt)
            for k, dt in SPECTRUM_ARRAYS.items()}


@dataclass(frozen=True)
class ProcessBlock:
    """Flag outliers (window read from the store), extract, write; return dead letters.

    A work item ``start..stop`` is done in steps of :data:`STEP` integrations (whole
    chunks): each step flags its integrations with the window of the whole exposure
    (``outliers.window`` neighbours either side, from a :class:`WindowReader` that reads
    each rateints chunk once), extracts them in one compiled loop
    (:func:`~nirbeam.transforms.spectra_block.extract_block`; an integration whose
    extraction raises becomes a dead letter), and writes the step's chunks whole: on
    :func:`_step_writer`'s thread while the next step is computed (one step in flight; a
    failed write raises from the work item, later steps unwritten, as when written here).
    That thread also reads step k + 1 while step k is computed (queued after step k - 1's
    writes), and the flags and extraction of a step run in parts on
    :func:`_compute_pool`'s threads; with one thread (``NIRBEAM_D1_THREADS=1``) every read,
    kernel and write runs on the caller's thread in turn.
    """

    root: str
    settings: object

    def __call__(self, block: SpectraBlock) -> list[DeadLetter]:
        g = block.group
        k = (self.root, g, block.model_token)
        if k not in _MODELS:
            arrays, attrs = zarr_store.load_arrays(self.root, f"{g}/{EXTRACTION}")
            _MODELS[k] = ExtractionModel.from_arrays(arrays, attrs)
        model = _MODELS[k]
        done = block.rate_done()
        if done is None:
            done = zarr_store.completed(self.root, g, RATEINTS)
        reader = WindowReader(self.root, g, done)
        dead: list[DeadLetter] = []
        pool = _step_writer()
        steps = [(a0, min(block.stop, a0 + STEP - 1))
                 for a0 in range(block.start, block.stop + 1, STEP)]

        def read(k):
            return self._read(block, reader, *steps[k])

        pending = None  # the previous step's writes, in flight while this step is computed
        ahead = None if pool is None or not steps else pool.submit(read, 0)  # the next reads
        for k, (a0, a1) in enumerate(steps):
            try:
                if pool is None:
                    got = read(k)
                else:  # step k + 1's reads, queued after step k - 1's writes, run meanwhile
                    ahead, fut = None, ahead
                    got = fut.result()
                    if k + 1 < len(steps):
                        ahead = pool.submit(read, k + 1)
                step_dead, write = self._step(block, model, done, got, a0, a1)
            except BaseException:
                _settle(ahead)  # the reads ahead end (unused) before the item raises
                if pending is not None:  # the serial stage raised that write's failure first
                    pending.result()
                raise
            if pending is not None:  # at most one step's writes in flight
                pending, fut = None, pending
                try:
                    fut.result()  # raises what the write raised (this step is not written)
                except BaseException:
                    _settle(ahead)
                    raise
            dead += step_dead
            if pool is None:
                write()
            else:
                pending = pool.submit(write)
        if pending is not None:
            pending.result()
        return dead

    def _read(self, block, reader, start: int, stop: int):
        """What step ``start..stop`` (1-based) reads: ``(lo, window, variances)``: the
        window from integration ``lo`` (the step and its neighbours) of what the outlier
        flags need, the step alone of the variances, which only the extraction needs.
        Steps are read in order (``reader`` only advances), here or on
        :func:`_step_writer`'s thread."""
        s = self.settings
        w = s.outliers.window if s.outliers.enabled else 0
        lo = max(1, start - w)
        hi = min(block.nints, stop + w)
        window = reader.get(lo - 1, hi)
        var = zarr_store.read_block(self.root, block.group, RATEINTS,
                                    ("var_poisson", "var_rnoise"), slice(start - 1, stop))
        return lo, window, var

    def _step(self, block, model, done, got, start: int, stop: int):
        """Integrations ``start..stop`` (1-based) of the work item from their reads ``got``
        (:meth:`_read`): ``(dead letters, write)``, ``write()`` writing the step's chunks
        (the caller calls it, here or on :func:`_step_writer`'s thread)."""
        s = self.settings
        g = block.group
        lo, read, var = got
        a, b = start - lo, stop - lo + 1
        pool, parts = _compute_pool()
        if s.outliers.enabled:  # the step alone (span), its window's rows / integrations in parts
            new_dq = flag_outliers(read["sci"], read["err"], read["dq"], s.outliers.window,
                                   s.outliers.n_sigma, span=(a, b), pool=pool, parts=parts)
        else:
            new_dq = read["dq"]
        n = stop - start + 1
        nx = model.profile.shape[1]
        spec = _spectra_fill(n, nx)
        ok = np.asarray(done[start - 1: stop], bool).copy()  # dead in detector1: a dead letter already
        dead = []
        try:
            extract_block(read["sci"][a:b], read["err"][a:b], new_dq[a:b], var["var_poisson"],
                          var["var_rnoise"], model, s.flicker, ok, spec, pool=pool, parts=parts)
        except Exception:  # noqa: BLE001 - one at a time: which integration fails
            spec = _spectra_fill(n, nx)
            for i in np.flatnonzero(ok):
                try:
                    out = extract_integration(
                        read["sci"][a + i], read["err"][a + i], new_dq[a + i],
                        var["var_poisson"][i], var["var_rnoise"][i], model, s.flicker)
                except Exception as exc:  # noqa: BLE001 - becomes a dead letter
                    dead.append(DeadLetter(IntegrationKey(block.exposure, block.detector,
                                                          start + int(i)),
                                           "extract", f"{type(exc).__name__}: {exc}"))
                    ok[i] = False
                    continue
                for key, v in out.items():
                    spec[key][i] = v
        root, cleaned = self.root, new_dq[a:b]

        def write():
            # one writer owns the step's chunks: write them whole, then the markers
            zarr_store.write_block(root, g, CLEANED, start, {"dq": cleaned}, ok)
            zarr_store.write_block(root, g, SPECTRA, start, spec, ok)

        return dead, write


def _settle(fut) -> None:
    """Wait for ``fut`` (None: nothing) to end, whatever it raised."""
    if fut is not None:
        fut.exception()


_STEP_WRITER: list = []  # [(pid, ThreadPoolExecutor)]
_STEP_WRITER_LOCK = threading.Lock()


def _step_writer():
    """The thread :class:`ProcessBlock` writes a step's chunks on while it computes the
    next step (compression and I/O on a second core; one step in flight) and reads the
    step after it, or None to read and write on the caller's thread: when detector1 runs
    on one thread
    (:func:`~nirbeam.stream.rate_steps.detector1_threads`: ``NIRBEAM_D1_THREADS=1``, a
    runner's worker process)."""
    from nirbeam.stream.rate_steps import detector1_threads

    if detector1_threads() <= 1:
        return None
    with _STEP_WRITER_LOCK:
        if not _STEP_WRITER or _STEP_WRITER[0][0] != os.getpid():  # none yet, or forked
            from concurrent.futures import ThreadPoolExecutor

            _STEP_WRITER[:] = [(os.getpid(),
                                ThreadPoolExecutor(1, thread_name_prefix="nirbeam-spectra-write"))]
        return _STEP_WRITER[0][1]


#: Parts per thread a step's flags and extraction are split in on :func:`_compute_pool`'s
#: threads (more parts than threads: a thread held up by the writer or zarr's I/O thread
#: leaves its later parts to the others).
PARTS_PER_THREAD = 2


def _compute_pool():
    """``(pool, parts)``: the process's detector1 thread pool
    (:func:`~nirbeam.stream.rate_steps.detector1_pool`, idle during stage 2) and the
    number of parts a step's rolling flags, motion fits and extraction are split in on it;
    ``(None, 1)`` (all on the caller's thread, as before) with one thread
    (``NIRBEAM_D1_THREADS=1``, a runner's worker process)."""
    from nirbeam.stream.rate_steps import detector1_pool

    n, pool = detector1_pool((None, None))
    if pool is None or n <= 1:
        return None, 1
    return pool, n * PARTS_PER_THREAD
