"""Stage 1's record functions and block writer: one integration read, calibrated and
written (the same functions in batch and streaming), the worker caches of the references
the driver saved, and the batch block step :class:`CalibrateBlock`.

Moved from :mod:`nirbeam.stream.pipeline` (which re-exports every public name).

Size note: ~720 lines: the record steps, the reference and scene-mask storage (with the
1/f light model and the per-exposure hook cache, issue 13/14) and the block writer share
the worker caches; the light model's arithmetic is in :mod:`nirbeam.transforms.flicker_light`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np

from nirbeam.sinks import fs, zarr_store
from nirbeam.stream.plan import RATE_BLOCK, RateBlock, ReadItem
from nirbeam.stream.records import DeadLetter, IntegrationRecord
from nirbeam.stream.uncal import ExposurePlan, read_ramp
from nirbeam.transforms.common import StepFailed
from nirbeam.transforms.flicker_light import SceneModel
from nirbeam.transforms.irs2 import is_irs2
from nirbeam.transforms.reference import ReferenceArrays

__all__ = ["RATEINTS", "RATE_ARRAYS", "RATE_ATTRS", "RATE_BLOCK", "BAD_TIME_STEP", "ReadItem",
           "read_record", "refs_from_store", "save_refs_to_store", "scene_mask_from_store",
           "forget_group", "Calibrate", "calibrate_irs2_record", "draft_scene_mask", "draft_nints",
           "SceneModel", "scene_light_from_store", "group_hook_from_store",
           "picture_frame_from_store",
           "WriteRateints", "RateBlock", "CalibrateBlock", "WriteDeadLetter"]  # ReadItem, RateBlock: from nirbeam.stream.plan

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


D1_THREADS_ENV = "NIRBEAM_D1_THREADS"
"""Environment variable: threads that read and calibrate a block's integrations
(:class:`CalibrateBlock`); ``1`` keeps them on the DoFn thread, ``auto`` (or unset):
:func:`detector1_threads`."""
D1_MAX_THREADS = 4
"""At most this many threads under ``auto`` (measured on 2 cores only; the DoFn thread's
Python glue and the block writer share the process's GIL)."""


def detector1_threads() -> int:
    """Threads :class:`CalibrateBlock` reads and calibrates integrations on:
    ``$NIRBEAM_D1_THREADS`` when it is a number (>= 1), else the cores this process may
    use (:func:`nirbeam.stream.runners.available_cores`, at most :data:`D1_MAX_THREADS`),
    but 1 in a runner's worker process (``NUMBA_NUM_THREADS=1`` there, from
    :data:`~nirbeam.stream.runners.WORKER_ENV`: the processes are the parallelism) and
    when detector1 runs its numba-parallel kernel (``NIRBEAM_DETECTOR1_PARALLEL=1``: numba's
    workqueue layer takes no concurrent calls)."""
    v = os.environ.get(D1_THREADS_ENV, "").strip().lower()
    if v not in ("", "auto"):
        try:
            return max(1, int(v))
        except ValueError:
            raise ValueError(f"{D1_THREADS_ENV}={v!r}: expected an integer >= 1 or 'auto'") from None
    if os.environ.get("NUMBA_NUM_THREADS", "").strip() == "1":
        return 1
    from nirbeam.transforms.detector1 import default_parallel

    if default_parallel():
        return 1
    from nirbeam.stream.runners import available_cores

    return min(available_cores(), D1_MAX_THREADS)


_D1_POOL: list = []  # [(threads, ThreadPoolExecutor)]: this process's, made on first use
_D1_POOL_LOCK = threading.Lock()


def detector1_pool(items):
    """``(threads, pool)``: the process's thread pool for reading and calibrating
    ``items`` (one block's), or ``(1, None)`` to run them on the caller's thread: for one
    thread (:func:`detector1_threads`), a single item, or full frames (2048 x 2048, IRS2
    too: hundreds of MB per integration in flight, and detector1 works in column bands
    there). One pool per process, shared by every :class:`CalibrateBlock` (a runner's
    several DoFn threads share its threads)."""
    n = detector1_threads()
    if n <= 1 or len(items) < 2:
        return 1, None
    meta = getattr(getattr(items[0], "segment", None), "meta", None)
    shape = tuple(getattr(meta, "image_shape", ()) or ())
    if len(shape) == 2 and shape[0] * shape[1] >= 2048 * 2048:
        return 1, None
    with _D1_POOL_LOCK:
        if not _D1_POOL or _D1_POOL[0][0] != n:  # (another count: a test or bench changed it)
            from concurrent.futures import ThreadPoolExecutor

            # an old pool is dropped, not shut down (a caller may still be submitting to
            # it): its idle threads end when it is collected
            _D1_POOL[:] = [(n, ThreadPoolExecutor(n, thread_name_prefix="nirbeam-d1"))]
        return _D1_POOL[0]


_REF_CACHE: dict[tuple[str, str, str], ReferenceArrays] = {}
_REF_LOCK = threading.Lock()


def refs_from_store(root: str, group: str, token: str = "") -> ReferenceArrays:
    """Load (once per process and run token) the cut references the driver saved."""
    k = (root, group, token)
    with _REF_LOCK:
        r = _REF_CACHE.get(k)
    if r is None:
        arrays, attrs = _load_references(root, group, lazy=("dark", "linearity"))
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
            irs2=_irs2_from_store(root, group, attrs),
        )
        with _REF_LOCK:
            _REF_CACHE[k] = r
    return r


_REF_NAMES = ("mask", "saturation", "saturation_dq", "superbias", "superbias_dq", "linearity",
              "linearity_dq", "dark", "dark_dq", "readnoise", "gain")
_PLANE_CHUNKED = {"dark": ("group", "y", "x"), "linearity": ("coefficient", "y", "x")}
"""Reference cubes stored one plane per chunk (full frames: one plane and band of
:data:`CUBE_BAND` columns): read back chunk by chunk, a worker never holds a cube's
compressed and decompressed copies at once (a 20-plane full-frame DARK, 335 MB, read as
one chunk peaked at ~0.9 GB more than the array itself)."""
CUBE_BAND = 256
"""Columns per chunk of full-frame reference cubes (the band of detector1_bands.BAND)."""


LAZY_CUBE_MIN_PIXELS = 2048 * 2048
"""Reference cubes (DARK, LINEARITY) of frames this large stay in the store: a worker
reads the columns of each band when it needs them (:mod:`nirbeam.transforms.
detector1_bands` cuts them with ``cube[..., a:b]``), instead of holding 335 MB (a 20-group
full-frame DARK) per cached exposure. Smaller frames are read whole."""


def _load_references(root: str, group: str, names=_REF_NAMES,
                     lazy: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """The named arrays of ``<group>/references`` (those present) and its attributes;
    those in ``lazy`` stay zarr arrays when they are full-frame cubes stored in chunks."""
    import zarr

    g = zarr.open_group(root, path=f"{group}/references", mode="r", zarr_format=3,
                        use_consolidated=False)
    have = {k for k, _ in g.arrays()}
    out = {}
    for k in names:
        if k not in have:
            continue
        a = g[k]
        big = a.ndim == 3 and a.shape[1] * a.shape[2] >= LAZY_CUBE_MIN_PIXELS
        out[k] = a if (k in lazy and big and a.chunks[-1] < a.shape[-1]) else a[...]
    return out, dict(g.attrs)


def save_refs_to_store(
    root: str, group: str, refs: ReferenceArrays, provenance: dict, scene_mask=None
) -> None:
    """Write the cut references (and where they came from) into the store.

    ``scene_mask``: the 1/f scene mask (bool (ny, nx)), or a :class:`SceneModel` (the
    mask and the static light model of its pixels, stored as ``scene_light``), or None.
    """
    light = None
    if isinstance(scene_mask, SceneModel):
        scene_mask, light = scene_mask.mask, scene_mask.light
    zarr_store.save_arrays(
        root,
        f"{group}/references",
        {
            "mask": refs.mask, "saturation": refs.saturation, "saturation_dq": refs.saturation_dq,
            "superbias": refs.superbias, "superbias_dq": refs.superbias_dq,
            "linearity": None, "linearity_dq": refs.linearity_dq,
            "dark": None, "dark_dq": refs.dark_dq, "readnoise": refs.readnoise,
            "gain": refs.gain,
            "scene_mask": None if scene_mask is None else scene_mask.astype(np.uint8),
            "scene_light": None if light is None else np.asarray(light, np.float32),
        },
        attrs={"sources": refs.sources, "provenance": provenance,
               "irs2_refpix": refs.irs2 is not None},
    )
    _save_cubes(root, group, {"dark": refs.dark, "linearity": refs.linearity})
    _save_picture_frame(root, group, provenance)
    _save_irs2(root, group, refs.irs2)
    forget_group(root, group)


def _save_cubes(root: str, group: str, cubes: dict) -> None:
    """Write the reference cubes with one plane per chunk (:data:`_PLANE_CHUNKED`);
    a cube that is None removes an old one."""
    g = zarr_store.open_root(root)[f"{group}/references"]
    for name, value in cubes.items():
        if value is None:
            if name in g:
                del g[name]
            continue
        value = np.ascontiguousarray(value)
        big = value.shape[1] * value.shape[2] >= LAZY_CUBE_MIN_PIXELS
        g.create_array(name, data=value,
                       chunks=(1, value.shape[1], CUBE_BAND if big else value.shape[2]),
                       compressors=zarr_store.CUBE_CODEC(value.dtype),
                       dimension_names=_PLANE_CHUNKED[name],
                       attributes=zarr_store.cf_attrs(name, {}), overwrite=True)


def _save_picture_frame(root: str, group: str, provenance: dict) -> None:
    """The PICTUREFRAME template the references chose (provenance ``PICTUREFRAME``), as
    the array ``pictureframe`` of the references group (removed when none applies)."""
    g = zarr_store.open_root(root)[f"{group}/references"]
    pf = (provenance or {}).get("PICTUREFRAME") or {}
    if not pf.get("path"):
        if "pictureframe" in g:
            del g["pictureframe"]
        return
    from nirbeam.stream.refs import read_picture_frame

    zarr_store.save_arrays(root, f"{group}/references",
                           {"pictureframe": read_picture_frame(pf["path"])},
                           array_attrs={"pictureframe": {
                               "units": "DN/s", "description": "PICTUREFRAME reference "
                               f"{pf.get('file', '')} (picture-frame template)"}})


_PF_CACHE: dict[tuple[str, str, str], np.ndarray | None] = {}


def picture_frame_from_store(root: str, group: str, token: str = "") -> np.ndarray | None:
    """The PICTUREFRAME template the driver saved (None when no file applied)."""
    k = (root, group, token)
    if k not in _PF_CACHE:
        arrays, _ = _load_references(root, group, ("pictureframe",))
        _PF_CACHE[k] = arrays.get("pictureframe")
    return _PF_CACHE[k]


IRS2_GROUP = "references/irs2"
"""Subgroup (of an exposure's group) holding the REFPIX coefficients of an IRS2 exposure."""


def _save_irs2(root: str, group: str, ref) -> None:
    """Store an IRS2 exposure's REFPIX coefficients in the store (self-contained: workers
    never need the driver's reference folder); remove a stale copy for other readouts."""
    g = zarr_store.open_root(root)[f"{group}/references"]
    if ref is None:
        if "irs2" in g:
            del g["irs2"]
        return
    flat = {  # complex64 -> float32 pairs (real, imaginary), as the file's columns hold them
        name: np.ascontiguousarray(getattr(ref, name)).view(np.float32)
        for name in ("alpha", "beta")
    }
    zarr_store.save_arrays(
        root, f"{group}/{IRS2_GROUP}",
        {**flat, "dq_output": ref.dq_output, "dq_odd_even": ref.dq_odd_even,
         "dq_mask": ref.dq_mask},
        attrs={"source": ref.source, "path": ref.path},
        dims={"alpha": ("output", "coefficient_re_im"), "beta": ("output", "coefficient_re_im"),
              "dq_output": ("dq_row",), "dq_odd_even": ("dq_row",), "dq_mask": ("dq_row",)},
        array_attrs={"alpha": {"description": "REFPIX alpha (reference output), complex as "
                               "float32 (real, imaginary) pairs, per science output"},
                     "beta": {"description": "REFPIX beta (interleaved references), complex as "
                              "float32 (real, imaginary) pairs, per science output"}},
    )


def _irs2_from_store(root: str, group: str, attrs: dict):
    """The IRS2 REFPIX coefficients the driver saved; None when the exposure has none
    (then :func:`nirbeam.transforms.irs2.correct_ramp` refuses an exposure whose
    references name a REFPIX file, rather than dropping its reference samples)."""
    from nirbeam.transforms.irs2 import IRS2Reference

    if not attrs.get("irs2_refpix"):
        return None
    arrays, at = zarr_store.load_arrays(root, f"{group}/{IRS2_GROUP}")
    return IRS2Reference(
        arrays["alpha"].view(np.complex64), arrays["beta"].view(np.complex64),
        arrays["dq_output"].astype(np.int16), arrays["dq_odd_even"].astype(np.int16),
        arrays["dq_mask"].astype(np.uint32), str(at.get("source", "")), str(at.get("path", "")))


_MASK_CACHE: dict[tuple[str, str, str], np.ndarray | None] = {}


def forget_group(root: str, group: str) -> None:
    """Drop this process's cached references and scene mask of one group."""
    with _REF_LOCK:
        for cache in (_REF_CACHE, _MASK_CACHE, _PF_CACHE, _LIGHT_CACHE):
            for k in [k for k in cache if k[:2] == (root, group)]:
                cache.pop(k, None)


def scene_mask_from_store(root: str, group: str, token: str = "") -> np.ndarray | None:
    """The 1/f scene mask the driver saved (None when group-level cleaning is off)."""
    k = (root, group, token)
    if k not in _MASK_CACHE:
        arrays, _ = _load_references(root, group, ("scene_mask",))  # not the references
        m = arrays.get("scene_mask")
        _MASK_CACHE[k] = None if m is None else m.astype(bool)
    return _MASK_CACHE[k]


_LIGHT_CACHE: dict[tuple[str, str, str], np.ndarray | None] = {}


def scene_light_from_store(root: str, group: str, token: str = "") -> np.ndarray | None:
    """The static light model (DN/s) of the scene-mask pixels the driver saved (None:
    none stored, e.g. an older store or cleaning off)."""
    k = (root, group, token)
    with _REF_LOCK:
        if k in _LIGHT_CACHE:
            return _LIGHT_CACHE[k]
    arrays, _ = _load_references(root, group, ("scene_light",))
    v = arrays.get("scene_light")
    v = None if v is None else np.asarray(v, np.float64)
    with _REF_LOCK:
        _LIGHT_CACHE[k] = v
    return v


_HOOK_CACHE: dict[tuple, tuple] = {}


def group_hook_from_store(root: str, group: str, token: str, params, tgroup: float = 1.0):
    """The group-level 1/f hook of one exposure (:func:`nirbeam.transforms.flicker.
    make_group_hook` on the stored scene mask, with the stored light model of its pixels
    times ``tgroup`` (s: DN per group) when ``params.light_model`` and there is one),
    made once per process and exposure: what the hook derives from the fixed mask (its
    column layout) is not re-derived per integration. Rebuilt when the mask was re-read
    (``forget_group``) or ``params`` differ (NRS1/NRS2). Without a stored mask nothing
    is kept."""
    from nirbeam.transforms.flicker import make_group_hook

    mask = scene_mask_from_store(root, group, token)
    if mask is None:  # each integration derives its own mask: nothing to keep
        return make_group_hook(params, None)
    k = (root, group, token, params, float(tgroup))
    with _REF_LOCK:
        hit = _HOOK_CACHE.get(k)
    if hit is not None and hit[0] is mask:
        return hit[1]
    light = scene_light_from_store(root, group, token) if params.light_model else None
    hook = make_group_hook(params, mask,
                           None if light is None else np.where(mask, light, 0.0) * tgroup)
    with _REF_LOCK:
        for old in [o for o in _HOOK_CACHE if o[:2] == (root, group) and o != k]:
            if _HOOK_CACHE[old][0] is not mask:
                _HOOK_CACHE.pop(old, None)
        _HOOK_CACHE[k] = (mask, hook)
    return hook


@dataclass(frozen=True)
class Calibrate:
    """detector1 on one record (1/f cleaning of group differences as its group hook)."""

    root: str
    settings: Any
    token: str = ""  # this run's id: worker caches of references key on it

    def __call__(self, rec: IntegrationRecord) -> IntegrationRecord:
        return self.owned([rec])

    def owned(self, holder: list) -> IntegrationRecord:
        """As calling it on ``holder[0]``, the record handed over (the list is emptied): an
        IRS2 record's raw ramp is then freed as soon as its reference step has run."""
        from nirbeam.transforms.detector1 import calibrate_record

        rec = holder.pop()
        refs = refs_from_store(self.root, rec.key.group, self.token)
        fl = self.settings.flicker.for_detector(rec.meta.detector)  # NRS2 readout direction
        hook = None
        if fl.enabled and fl.level == "group":
            hook = group_hook_from_store(self.root, rec.key.group, self.token, fl,
                                         float(rec.meta.tgroup))
        pf = self.settings.detector1.picture_frame
        full = tuple(rec.meta.image_shape) == (2048, 2048)
        if pf.enabled and full:
            hook = self._with_picture_frame(rec, hook, pf)
        bad_time = any(step == BAD_TIME_STEP for step, _ in rec.provenance)
        if is_irs2(rec.meta):
            holder.append(rec)
            del rec  # the record (and its raw ramp) lives on in the holder only
            out = calibrate_irs2_record(holder, refs, self.settings.detector1, hook)
        else:
            out = calibrate_record(rec, refs, self.settings.detector1, hook)
        if pf.enabled and full:
            out = out.with_step("picture_frame", f"n_sigma={pf.n_sigma}")
        if fl.enabled and fl.level == "group":
            out = out.with_step("flicker", f"level=group method={fl.method} n_sigma={fl.n_sigma}")
        if bad_time:
            # its time is not known: the rates are kept, every pixel says do not use
            from nirbeam import dqflags

            out = out.replace(dq=out.dq | np.uint32(dqflags.DO_NOT_USE))
        return out


    def _with_picture_frame(self, rec, hook, pf):
        """The picture-frame hook (PICTUREFRAME template from the store) before the 1/f
        hook; at the 1/f hook's place (before jump by default; jwst runs picture_frame
        after jump, before clean_flicker_noise)."""
        from nirbeam.transforms.picture_frame import PictureFrameHook

        template = picture_frame_from_store(self.root, rec.key.group, self.token)
        if template is None:
            raise StepFailed(f"{rec.key.group}: detector1.picture_frame.enabled but no "
                             "PICTUREFRAME reference applies (REFTYPE PICTUREFRAME, full "
                             "frame, this DETECTOR and USEAFTER) in the reference folder")
        bg = scene_mask_from_store(self.root, rec.key.group, self.token)
        first = PictureFrameHook(template, None if bg is None else ~bg, pf.n_sigma)
        return first if hook is None else _HookChain(first, hook)


@dataclass(frozen=True, eq=False)
class _HookChain:
    """Two detector1 group hooks in a row, at the second one's place."""

    first: Any
    second: Any

    @property
    def before_jump(self) -> bool:
        return bool(getattr(self.second, "before_jump", True))

    def __call__(self, groups, groupdq, pixeldq):
        return self.second(self.first(groups, groupdq, pixeldq), groupdq, pixeldq)


def calibrate_irs2_record(rec, refs: ReferenceArrays, params,
                          group_hook=None) -> IntegrationRecord:
    """detector1 on an IRS2 full-frame record within a worker's memory (issue 15).

    The IRS2 reference step (:func:`nirbeam.transforms.irs2.correct_ramp`, unless the ramp
    is already in the normal layout), then detector1 in column bands
    (:func:`nirbeam.transforms.detector1_bands.run_detector1_bands`, the corrected cube
    handed over and overwritten by the calibrated groups); results, record and provenance
    as :func:`nirbeam.transforms.detector1.calibrate_record` gives them (tested equal).
    ``rec`` may be a one-element list holding the record (emptied: the raw ramp is then
    freed once the reference step has run, before detector1).
    """
    from nirbeam.transforms import irs2
    from nirbeam.transforms.detector1 import RampTiming, default_parallel
    from nirbeam.transforms.detector1_bands import run_detector1_bands

    rec = rec.pop() if isinstance(rec, list) else rec
    if rec.stage != "ramp" or rec.ramp is None:
        raise ValueError(f"detector1: {rec.key} has stage {rec.stage!r} / no ramp; expected "
                         "stage 'ramp'")
    own = irs2.needs_correction(rec.meta, rec.ramp)
    holder = [irs2.correct_ramp(rec.ramp, refs if params.refpix.enabled else None, rec.meta)
              if own else rec.ramp]
    rec = rec.replace(ramp=None)  # the raw ramp's last reference when the record was handed over
    res = run_detector1_bands(holder, refs, RampTiming.from_meta(rec.meta), params, group_hook,
                              overwrite_input=own, parallel=default_parallel())
    prov = f"{params.describe()}; jumps={res.n_jumps}"
    if res.jump_skipped:
        prov += "; jump skipped (fewer than minimum_groups usable groups)"
    out = rec.replace(stage="rateints", ramp=None, groupdq=None, pixeldq=None, rate=res.rate,
                      err=res.err, dq=res.dq, var_poisson=res.var_poisson,
                      var_rnoise=res.var_rnoise)
    return out.with_step("detector1", prov)


def draft_nints(meta, settings, trace_mask=None, n: int = 3,
                first_segment_end: int | None = None) -> int:
    """How many of the first integrations :func:`draft_scene_mask` reads: ``n`` for the
    scene mask, more for the light model of its pixels where it applies
    (:func:`~nirbeam.transforms.flicker_light.light_nints`), but not beyond the first
    segment (``first_segment_end``: its last integration), so that the stream, which
    prepares an exposure once these have arrived, needs no more than its first file (as
    before the light model) and makes the draft batch makes."""
    from nirbeam.transforms.flicker_light import light_applies, light_nints

    if settings.flicker.light_model and light_applies((meta.subsize2, meta.subsize1),
                                                      trace_mask):
        k = light_nints(meta.ngroups, n)
        if first_segment_end is not None:
            k = max(n, min(k, int(first_segment_end)))
        return k
    return n


def draft_scene_mask(plan: ExposurePlan, refs: ReferenceArrays, settings, n: int = 3,
                     trace_mask: np.ndarray | None = None) -> SceneModel:
    """1/f scene mask from the median draft rate of the first few integrations
    (``trace_mask``: pixels a mode knows are scene, e.g. every slit; excluded too), and
    with ``settings.flicker.light_model`` the light model of its pixels
    (:func:`nirbeam.transforms.flicker_light.scene_light` of the first
    :func:`~nirbeam.transforms.flicker_light.light_nints` integrations' uncleaned rates)."""
    from nirbeam.transforms import irs2
    from nirbeam.transforms.detector1 import RampTiming, run_detector1
    from nirbeam.transforms.detector1_bands import run_detector1_bands
    from nirbeam.transforms.flicker import scene_mask
    from nirbeam.transforms.flicker_light import light_applies, scene_light
    from nirbeam.transforms.refpix import SubarrayGeometry

    meta = plan.meta
    fl = settings.flicker
    with_light = fl.light_model and light_applies((meta.subsize2, meta.subsize1), trace_mask)
    try:
        first_end = plan.segment_of(1).intend
    except KeyError:  # integration 1 absent: no first segment to stay within
        first_end = None
    nl = draft_nints(meta, settings, trace_mask, n, first_end)
    rates, dqs = [], []
    for i in plan.present[:nl]:
        ramp = read_ramp(plan.segment_of(i), i)
        timing = RampTiming.from_meta(meta)
        if irs2.needs_correction(meta, ramp):  # IRS2: its reference step first (as detector1)
            ramp = [irs2.correct_ramp(ramp, refs if settings.detector1.refpix.enabled else None,
                                      meta)]  # handed over: freed as soon as it is used
            res = run_detector1_bands(ramp, refs, timing, settings.detector1,
                                      overwrite_input=True)
        else:
            res = run_detector1(ramp, refs, timing, settings.detector1,
                                SubarrayGeometry.from_meta(meta))
        del ramp
        rates.append(res.rate)
        dqs.append(res.dq)
    rate = np.median(np.stack(rates[:n]), axis=0)
    dq = np.bitwise_and.reduce(np.stack(dqs[:n]), axis=0)
    mask = scene_mask(rate, dq=dq, trace_mask=trace_mask, **fl.mask_kwargs())
    light = None
    if with_light:
        light, c, se = scene_light(rates, dqs, mask)
        log.info("%s: scene light model from %d integrations, common offset %.3f +- %.3f "
                 "DN/s %s", meta.group_name, len(rates), c, se,
                 "taken off" if c else "left in")
    return SceneModel(mask, light)


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
        if not isinstance(exc, StepFailed):  # exc_info=exc: also after the except block
            log.warning("%s failed on %s: %s", step, item.key, reason, exc_info=exc)
        self.m[f"{step}.deadletters"].inc()
        return DeadLetter(item.key, step, reason, item.segment.path)

    def _read_calibrate(self, item: ReadItem):
        """``(failed step or None, record or exception, read s, detector1 s)`` of one
        integration; touches no metrics (it may run on a :func:`detector1_pool` thread)."""
        t0 = time.perf_counter()
        try:
            rec = read_record(item)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a dead letter
            return "read", exc, 0.0, 0.0
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            holder, rec = [rec], None  # handed over: the raw ramp is freed once used
            rec = self.calibrate.owned(holder)
        except Exception as exc:  # noqa: BLE001
            return "detector1", exc, t_read, 0.0
        return None, rec, t_read, time.perf_counter() - t0

    def _results(self, items):
        """``(item, its :meth:`_read_calibrate`)`` in item order: on the DoFn thread, or
        on the :func:`detector1_pool` threads (at most one more integration in flight than
        threads, so a block never holds all its records at once)."""
        threads, pool = detector1_pool(items)
        if pool is None:
            for item in items:
                yield item, self._read_calibrate(item)
            return
        if not getattr(self, "_warm", False):  # this DoFn's first integration on its own:
            self._warm = True  # the references, scene mask and hook cached once, not per thread
            yield items[0], self._read_calibrate(items[0])
            items = items[1:]
        window: deque = deque()
        for item in items:
            window.append((item, pool.submit(self._read_calibrate, item)))
            if len(window) > threads:
                item0, fut = window.popleft()
                yield item0, fut.result()
        while window:
            item0, fut = window.popleft()
            yield item0, fut.result()

    def process(self, block: RateBlock):
        """Yield the block's dead letters (if any)."""
        n = block.stop - block.start + 1
        root, g = self.root, block.group
        fill = zarr_store.fill_values(root, g, RATEINTS, RATE_ARRAYS)
        buf: dict[str, np.ndarray] | None = None
        ok = np.zeros(n, bool)
        dead = []
        computed = []
        # metrics, dead letters and the block's arrays on this (the DoFn's) thread, in order
        for item, (failed, rec, t_read, t_d1) in self._results(block.items):
            if failed == "read":
                dead.append(self._dead(item, "read", rec))
                continue
            self.m["read.records"].inc()
            self.ms["read"].update(int(t_read * 1000))
            if failed == "detector1":
                dead.append(self._dead(item, "detector1", rec))
                continue
            self.m["detector1.records"].inc()
            self.ms["detector1"].update(int(t_d1 * 1000))
            values = {"sci": rec.rate, "err": rec.err, "dq": rec.dq,
                      "var_poisson": rec.var_poisson, "var_rnoise": rec.var_rnoise}
            rec = None
            if buf is None:
                buf = self._buffers(n, values)
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
        for j in np.flatnonzero(~ok):  # neither calibrated nor stored: the fill values
            for k in RATE_ARRAYS:
                buf[k][j] = fill[k]
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
        self._pending = (block, computed, buf, fut)

    def _buffers(self, n: int, values: dict) -> dict[str, np.ndarray]:
        """The block's five arrays, (n, ny, nx) each, contents undefined: the spare set
        (the block written before the one in flight, drained) when its shapes fit, else
        new ones. Reusing them saves each block a fresh ~5 x n x 64 KiB (PRISM) of pages
        and their fill; at most two sets exist (one in flight, one being filled), as
        without reuse."""
        spare, self._spare = getattr(self, "_spare", None), None
        want = {k: ((n, *np.shape(v)), np.dtype(RATE_ARRAYS[k])) for k, v in values.items()}
        if spare is not None and spare.keys() == want.keys() and all(
                (a.shape, a.dtype) == want[k] for k, a in spare.items()):
            return spare
        return {k: np.empty(shape, dt) for k, (shape, dt) in want.items()}

    def start_bundle(self):
        """No block write in flight."""
        self._pending = None
        self._spare = None

    def finish_bundle(self):
        """Wait for the last block write; emit its dead letters (if any)."""
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.timestamp import MIN_TIMESTAMP
        from apache_beam.utils.windowed_value import WindowedValue

        for dl in self._drain():
            yield WindowedValue(dl, MIN_TIMESTAMP, [GlobalWindow()])
        self._spare = None  # nothing more to fill: the spare arrays are released

    def _drain(self) -> list[DeadLetter]:
        """Wait for the block write in flight; when it failed, write its integrations one
        by one and return the dead letters of those that could not be written."""
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is None:
            return []
        block, computed, buf, fut = pending
        g = block.group
        dead = []
        try:
            # the write's own time on the writer thread (not until this drain: that span
            # is the next block's calibration, the write overlapped with it)
            self.block_ms.update(int(fut.result() * 1000))
            self.m["write_rateints.records"].inc(len(computed))
        except Exception as exc:  # noqa: BLE001 - fall back to one write per integration
            t0 = time.perf_counter()
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
        self._spare = buf  # written (or given up): the next block may fill these arrays
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
