"""Zarr v3 cube stores: a template first, then one integration region at a time.

Layout of ``OUTDIR/cubes.zarr``::

    <exposure>_<detector>/             group; attrs: exposure metadata, provenance
        references/                    the cut reference arrays the workers use
        rateints/                      stage group
            sci, err, var_poisson, var_rnoise   float32 (integration, y, x)
            dq                                  uint32  (integration, y, x)
            integration_number, int_mid_BJD_TDB, int_mid_MJD_UTC  (integration,)
            done                                uint8   (integration,) completion marker

Chunks along time are aligned with the writers: one integration per chunk where
independent writers write single integrations (the live path), or a block of
integrations per chunk where one writer writes the whole block (batch rateints, spectra,
cleaned: :func:`write_block`), so parallel writers never share a chunk. A region is
written first and its ``done`` markers last: a marker of 1 means the region is complete,
whatever chunks exist. Rewriting a region writes the same bytes, so retries are
idempotent.

Conventions (so that ``xarray.open_zarr(store, group=...)`` gives a labelled Dataset):
every array carries zarr v3 ``dimension_names`` (``integration``, ``y``, ``x``,
``wavelength``...), CF ``long_name`` and ``units`` attributes (and ``description``, the
same text, for older readers); the root and every group carry ``Conventions = "CF-1.10"``; arrays that are coordinates
(``integration_number``, ``int_mid_BJD_TDB``, ``int_mid_MJD_UTC``, ``wavelength``...) are
named in the ``coordinates`` attribute of the data arrays (CF style). Unwritten regions
read as missing in any zarr reader: float arrays have the fill value NaN, ``dq`` arrays
DO_NOT_USE (1), other integer arrays 0; ``done`` (fill 0) says which integrations are
complete.

Consolidated metadata (every group's ``zarr.json`` carries its subtree) is written by
:func:`consolidate` at the end of a run. It can never go stale: any writer that opens the
store through :func:`open_root` first strips it (subgroups first, root last), and region
writes change no metadata.

Size note: over 600 lines on purpose: the one zarr layer (templates, region writes, completion markers, reads); every writer goes through it.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec

__all__ = [
    "CUBE_CODEC",
    "StoreError",
    "open_root",
    "prepare_stage",
    "write_integration",
    "write_block",
    "read_block",
    "time_chunk",
    "fill_values",
    "completed",
    "read_integration",
    "read_stack",
    "save_arrays",
    "load_arrays",
    "set_attrs",
    "save_lightcurves",
    "consolidate",
    "unconsolidate",
    "is_consolidated",
    "COORD_ATTRS",
    "CONVENTIONS",
    "TIME_ATTRS",
    "cf_attrs",
    "LAYOUT",
]

LAYOUT = "nirbeam-cubes/1"
"""Name and version of the store layout (root attribute ``layout``)."""

COORD_ATTRS: dict[str, dict[str, str]] = {
    "integration_number": {"units": "", "description": "1-based integration number (INT_TIMES)"},
    "int_mid_BJD_TDB": {"units": "d", "description": "integration mid-time, BJD_TDB"},
    "int_mid_MJD_UTC": {"units": "d", "description": "integration mid-time, MJD UTC"},
    "wavelength": {"units": "um", "description": "wavelength"},
}
"""Default attributes of the coordinate arrays (explicit ``array_attrs`` win)."""

CONVENTIONS = "CF-1.10"
"""``Conventions`` attribute of the root and of every group nirbeam writes."""

TIME_ATTRS: dict[str, dict[str, str]] = {
    # JWST INT_TIMES columns hold modified Julian dates: int_mid_BJD_TDB is
    # BJD_TDB - 2400000.5, int_mid_MJD_UTC is JD_UTC - 2400000.5 (days)
    "int_mid_BJD_TDB": {"units": "d", "long_name": "integration mid-time, BJD_TDB - 2400000.5",
                        "timescale": "TDB", "reference_position": "solar system barycentre",
                        "zero_point": "JD 2400000.5"},
    "int_mid_MJD_UTC": {"units": "d", "long_name": "integration mid-time, MJD UTC (JD_UTC - 2400000.5)",
                        "timescale": "UTC", "zero_point": "JD 2400000.5"},
}
"""CF attributes of the time coordinates: the scale and zero point of their values."""


def cf_attrs(name: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """CF form of an array's attributes: ``long_name`` (from ``description``) and ``units``.

    ``description`` is kept as well (older readers); the time coordinates get their scale
    and zero point (:data:`TIME_ATTRS`).
    """
    at = dict(attrs)
    if "description" in at and "long_name" not in at:
        at["long_name"] = at["description"]
    at.update(TIME_ATTRS.get(name, {}))
    if "long_name" not in at:
        at["long_name"] = name.replace("_", " ")
    at.setdefault("units", "")
    return at


class StoreError(RuntimeError):
    """The output store cannot hold what is asked (shape clash, bad key...)."""


def CUBE_CODEC(dtype) -> BloscCodec:  # noqa: N802 - a constant-like factory
    """Blosc LZ4 level 5 with byte shuffle.

    Chosen for CPU: float32 rate cubes are noise-dominated and compress only ~1.1-1.5x
    with any codec (``bench/zarr_codecs.py``, bench/results/zarr_codecs.json), so the
    encoder's speed decides. On the whole PRISM 1200 x 8 run
    (bench/results/store_codec_cost_s12.json, ``bench/store_codec_cost.py``) LZ4 takes
    ~6 % less CPU than the former Blosc zstd level 1 for a store ~6 % larger, with every
    array identical (both lossless). Readers need nothing new: numcodecs' Blosc decodes
    both, and arrays written earlier keep the codec they were created with.
    """
    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=np.dtype(dtype).itemsize)


#: "no such node" across zarr 3.1.x (NodeNotFoundError appeared after 3.1.0, the lower bound)
_NOT_FOUND = (FileNotFoundError, KeyError) + tuple(
    getattr(zarr.errors, n) for n in ("NodeNotFoundError", "GroupNotFoundError",
                                      "ArrayNotFoundError") if hasattr(zarr.errors, n))

_LOCK = threading.Lock()
_ARRAYS: dict[tuple[str, str], Any] = {}


class _InlineExecutor(ThreadPoolExecutor):
    """Runs each submitted call at once in the submitting thread (zarr's event-loop
    thread): a finished future, no worker thread (a ThreadPoolExecutor only so that
    asyncio takes it as a loop's default executor; it never starts a thread)."""

    def submit(self, fn, /, *args, **kwargs):
        f: Future = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            f.set_exception(exc)
        return f


#: Whether zarr's codec and local-file calls run inline on its event-loop thread
#: (:func:`_inline_codecs`); ``NIRBEAM_ZARR_POOL=1`` keeps zarr's own thread pool.
INLINE_CODECS = os.environ.get("NIRBEAM_ZARR_POOL", "") != "1"
_INLINE_PID: list[int] = []


def _inline_codecs() -> None:
    """Make zarr's event loop run its ``asyncio.to_thread`` calls (Blosc encode/decode,
    local file reads and writes) in the loop thread itself, once per process.

    zarr hands every chunk's codec call and file access from its loop thread to a pool
    of worker threads and back: a futex hand-off each way per chunk (with two busy cores
    the sys time of a run). Inline, the same calls run one after another on the loop
    thread, which still works beside the caller (the block writer, the driver); the
    bytes written and read are the same.
    """
    if not INLINE_CODECS or _INLINE_PID == [os.getpid()]:
        return
    import asyncio

    from zarr.core.sync import sync

    async def install():
        asyncio.get_running_loop().set_default_executor(_InlineExecutor(max_workers=1))

    if zarr.config.get("threading.max_workers", None) is None:  # else zarr sets its own
        sync(install())
    _INLINE_PID[:] = [os.getpid()]


def open_root(root: str, mode: str = "a") -> zarr.Group:
    """Open (or create) the store's root group; ``root`` is a path or fsspec URL.

    In a writing mode the consolidated metadata is stripped first (see
    :func:`unconsolidate`), so nothing written afterwards can make it stale; the group
    returned never reads through consolidated metadata.
    """
    _inline_codecs()
    if mode == "r":
        return zarr.open_group(root, mode="r", zarr_format=3)
    unconsolidate(root)
    return zarr.open_group(root, mode=mode, zarr_format=3, use_consolidated=False)


def _group_paths(g: zarr.Group, prefix: str = "") -> list[str]:
    """Paths of every group below ``g`` (depth first, parents before children)."""
    out = []
    for name, sub in sorted(g.groups(), key=lambda t: t[0]):
        p = f"{prefix}{name}"
        out.append(p)
        out.extend(_group_paths(sub, p + "/"))
    return out


def is_consolidated(root: str, path: str = "") -> bool:
    """True when the group at ``path`` carries consolidated metadata."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = zarr.open_group(root, path=path or None, mode="r", zarr_format=3)
    except _NOT_FOUND:
        return False
    return g.metadata.consolidated_metadata is not None


def _strip(root: str, path: str) -> None:
    g = zarr.open_group(root, path=path or None, mode="r+", zarr_format=3, use_consolidated=False)
    g.update_attributes({})  # rewrites zarr.json from the parsed (unconsolidated) metadata


def unconsolidate(root: str) -> bool:
    """Remove consolidated metadata from every group (children first, root last).

    Returns True when there was some. The root is checked first: :func:`consolidate`
    writes the root first and this removes it last, so a root without consolidated
    metadata means no group has any (also after either was interrupted).
    """
    if not is_consolidated(root):
        return False
    g = zarr.open_group(root, mode="r", zarr_format=3, use_consolidated=False)
    for p in reversed(_group_paths(g)):
        if is_consolidated(root, p):
            _strip(root, p)
    _strip(root, "")
    return True


def consolidate(root: str, attrs: Mapping[str, Any] | None = None) -> None:
    """Write consolidated metadata into every group (root first), so one read opens any group.

    Call when no other writer is active (end of a run). ``attrs`` update the root's
    attributes first (``layout`` is always set).
    """
    g = open_root(root)  # strips old consolidated metadata
    g.update_attributes({"layout": LAYOUT, "Conventions": CONVENTIONS, **dict(attrs or {})})
    paths = _group_paths(g)
    forget_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not in the v3 spec"
        zarr.consolidate_metadata(root, zarr_format=3)
        for p in paths:
            zarr.consolidate_metadata(root, path=p, zarr_format=3)


def _array(root: str, path: str):
    k = (root, path)
    with _LOCK:
        a = _ARRAYS.get(k)
    if a is None:
        _inline_codecs()
        a = zarr.open_array(root, path=path, mode="r+", zarr_format=3)
        with _LOCK:
            _ARRAYS[k] = a
    return a


def forget_cache() -> None:
    """Drop cached array handles (after a store is recreated)."""
    with _LOCK:
        _ARRAYS.clear()


def fill_value_for(name: str, dtype):
    """What an unwritten region reads as: NaN for floats, DO_NOT_USE (1) for DQ, else 0."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return float("nan")
    if name == "dq" or name.endswith("_dq"):
        return 1  # dqflags.DO_NOT_USE (sinks import nothing of the pipeline)
    return 0


def prepare_stage(
    root: str,
    group: str,
    stage: str,
    nints: int,
    frame_shape: tuple[int, ...],
    arrays: Mapping[str, np.dtype],
    *,
    frame_dims: tuple[str, ...] = ("y", "x"),
    coords: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping[str, Any] | None = None,
    array_attrs: Mapping[str, Mapping[str, Any]] | None = None,
    time_chunk: int = 1,
) -> zarr.Group:
    """Create a stage's arrays once (idempotent); check an existing stage matches.

    ``time_chunk`` integrations share a chunk: 1 (the default) where integrations are
    written by independent workers; a block size for stages written a whole aligned block
    at a time by one writer (:func:`write_block`), which saves many tiny chunk files.

    Parameters
    ----------
    root : str
        Store path or URL.
    group : str
        Exposure/detector group name.
    stage : str
        ``rateints``, ``spectra``...
    nints : int
        NINTS of the exposure (length of the integration axis).
    frame_shape : tuple
        Shape of one integration's array (e.g. (ny, nx) or (nx,)).
    arrays : mapping
        Array name -> dtype.
    coords : mapping
        Coordinate name -> 1-D array of length nints (written now), e.g. times.
    """
    g = open_root(root).require_group(group).require_group(stage)
    shape = (nints, *frame_shape)
    dims = ("integration", *frame_dims)
    coord_names = " ".join(coords or ())
    for name, dtype in arrays.items():
        if name in g:
            a = g[name]
            if a.shape != shape or a.dtype != np.dtype(dtype):
                raise StoreError(
                    f"{root}/{group}/{stage}/{name} holds {a.shape} {a.dtype}; this run needs "
                    f"{shape} {np.dtype(dtype)}: write to a new OUTDIR or remove the old store"
                )
            continue
        at = dict((array_attrs or {}).get(name, {}))
        if coord_names:
            at["coordinates"] = coord_names
        g.create_array(
            name,
            shape=shape,
            dtype=dtype,
            chunks=(time_chunk, *frame_shape),
            compressors=CUBE_CODEC(dtype),
            fill_value=fill_value_for(name, dtype),
            dimension_names=dims,
            attributes=cf_attrs(name, at),
        )
    if "done" not in g:
        g.create_array(
            "done", shape=(nints,), dtype="uint8", chunks=(time_chunk,), fill_value=0,
            dimension_names=("integration",),
            attributes=cf_attrs("done", {"units": "", "description": "1 when the integration's region is completely written"}),
        )
    for name, values in (coords or {}).items():
        values = np.asarray(values)
        if name in g:
            if not np.array_equal(g[name][:], values, equal_nan=values.dtype.kind == "f"):
                raise StoreError(f"{root}/{group}/{stage}/{name} differs from this run's values")
            continue
        g.create_array(
            name, data=values, chunks=(max(len(values), 1),), dimension_names=("integration",),
            attributes=cf_attrs(name, {**COORD_ATTRS.get(name, {}),
                                       **dict((array_attrs or {}).get(name, {}))}),
        )
    g.attrs.update({"Conventions": CONVENTIONS, **dict(attrs or {})})
    return g


def write_integration(
    root: str, group: str, stage: str, integration: int, arrays: Mapping[str, np.ndarray]
) -> None:
    """Write one integration's region of each array, then its completion marker.

    Raises
    ------
    StoreError
        When an array's frame shape does not match the store (names the key).
    """
    i = int(integration) - 1
    writes = []
    for name, value in arrays.items():
        a = _array(root, f"{group}/{stage}/{name}")
        value = np.asarray(value)
        if value.shape != a.shape[1:]:
            raise StoreError(
                f"{group}/{stage}/{name} integration {integration}: shape {value.shape} does "
                f"not match the store's {a.shape[1:]}"
            )
        if not 0 <= i < a.shape[0]:
            raise StoreError(f"{group}/{stage}: integration {integration} outside 1..{a.shape[0]}")
        writes.append((a, value.astype(a.dtype, copy=False)))
    _write_concurrently(writes, i)
    _array(root, f"{group}/{stage}/done")[i] = 1  # only after every region is written


def _write_concurrently(writes, i) -> None:
    """Write several arrays' regions in one event-loop call (zarr's I/O is async: ~30%
    less time per integration than one call per array). ``i``: an integration index or a
    slice of them (a block)."""
    import asyncio

    from zarr.core.sync import sync

    async def go():
        await asyncio.gather(*(a._async_array.setitem(i, v) for a, v in writes))

    sync(go())


def _read_concurrently(arrays, sel) -> list[np.ndarray]:
    """Read the same selection of several arrays in one event-loop call."""
    import asyncio

    from zarr.core.sync import sync

    async def go():
        return await asyncio.gather(*(a._async_array.getitem(sel) for a in arrays))

    return [np.asarray(v) for v in sync(go())]


def write_block(
    root: str, group: str, stage: str, start: int, arrays: Mapping[str, np.ndarray],
    ok: np.ndarray, *, wait: bool = True,
):
    """Write integrations ``start .. start+n-1`` of each array, then their markers.

    The block must cover whole chunks along time (or run to the end of the exposure), so
    one writer owns every chunk it touches. ``ok`` (bool, (n,)) says which integrations are
    complete; the others keep a marker of 0. Every array's region is written in one
    event-loop call (whole chunks: no chunk is read back), the markers after all of them.

    ``wait=False`` checks the block now, then writes it on this process's writer thread
    and returns a :class:`concurrent.futures.Future` (its ``result()`` raises what the
    write raised): the caller computes the next block while this one is compressed and
    written. The arrays must not be changed until the future is done. Its result is the
    write's own duration (s, on the writer thread: not the wait in its queue).

    Raises
    ------
    StoreError
        When an array's block shape does not match the store, or the block is not aligned
        with its chunks (names the group, stage, array and integrations).
    """
    i0 = int(start) - 1
    ok = np.asarray(ok, bool)
    n = ok.size
    writes = []
    for name, value in arrays.items():
        a = _array(root, f"{group}/{stage}/{name}")
        value = np.asarray(value)
        c = a.chunks[0]
        if value.shape != (n, *a.shape[1:]):
            raise StoreError(
                f"{group}/{stage}/{name} integrations {start}..{start + n - 1}: shape "
                f"{value.shape} does not match the store's {(n, *a.shape[1:])}"
            )
        if i0 % c or (n % c and i0 + n != a.shape[0]):
            raise StoreError(
                f"{group}/{stage}/{name}: block {start}..{start + n - 1} is not aligned with "
                f"chunks of {c} integrations (parallel writers would share a chunk)"
            )
        writes.append((a, value.astype(a.dtype, copy=False)))
    done = _array(root, f"{group}/{stage}/done")

    def go():
        t0 = time.perf_counter()
        _write_concurrently(writes, slice(i0, i0 + n))
        done[i0 : i0 + n] = ok.astype(np.uint8)  # only after every region is written
        return time.perf_counter() - t0

    if wait:
        go()
        return None
    return _writer().submit(go)


_WRITER: list = []  # [(pid, ThreadPoolExecutor)]


def _writer():
    """This process's block-writer thread (one: writes leave in the order given)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    with _LOCK:
        if not _WRITER or _WRITER[0][0] != os.getpid():  # none yet, or inherited by a fork
            _WRITER[:] = [(os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="nirbeam-write"))]
        return _WRITER[0][1]


def time_chunk(root: str, group: str, stage: str, name: str = "done") -> int:
    """Integrations per chunk along time of a stage's array (1: one per chunk)."""
    return int(_array(root, f"{group}/{stage}/{name}").chunks[0])


def fill_values(root: str, group: str, stage: str, names: Iterable[str]) -> dict[str, Any]:
    """Each array's fill value (what an unwritten region reads as)."""
    return {n: _array(root, f"{group}/{stage}/{n}").fill_value for n in names}


def read_block(root: str, group: str, stage: str, names: Iterable[str], sel: slice) -> dict:
    """Read the same slice along integrations of several arrays (one event-loop call)."""
    names = list(names)
    arrays = [_array(root, f"{group}/{stage}/{n}") for n in names]
    return dict(zip(names, _read_concurrently(arrays, sel), strict=True))


def count_completed(root: str, group: str, stage: str) -> int:
    """Number of completed integrations, cheaply (for progress reports).

    On a local store this counts the marker chunk files written (markers are only ever
    set to 1 by writers; a chunk of several markers counts as its set markers' chunk);
    elsewhere it reads the markers.
    """
    import os

    d = os.path.join(str(root), group, stage, "done", "c")
    try:
        if os.path.isdir(d):
            a = _array(root, f"{group}/{stage}/done")
            if a.chunks[0] == 1:
                return len(os.listdir(d))
    except OSError:
        pass
    return int(completed(root, group, stage).sum())


def completed(root: str, group: str, stage: str) -> np.ndarray:
    """Boolean (nints,) array: True where the integration's marker says complete."""
    _inline_codecs()
    try:
        a = zarr.open_array(root, path=f"{group}/{stage}/done", mode="r", zarr_format=3)
    except _NOT_FOUND:
        return np.zeros(0, bool)
    return a[:] == 1


def read_integration(root: str, group: str, stage: str, integration: int, names) -> dict:
    """Read one integration's arrays from a stage."""
    return {n: _array(root, f"{group}/{stage}/{n}")[int(integration) - 1] for n in names}


def read_stack(root: str, group: str, stage: str, name: str, sel=slice(None)) -> np.ndarray:
    """Read a slice (along integrations) of one array."""
    _inline_codecs()
    return zarr.open_array(root, path=f"{group}/{stage}/{name}", mode="r", zarr_format=3)[sel]


def _default_dims(name: str, shape: tuple[int, ...], nx: int | None) -> tuple[str, ...]:
    """Dimension names of a small array: trailing (y, x) of images, x for per-column vectors."""
    if len(shape) == 0:
        return ()
    if len(shape) >= 2:
        return (*(f"{name}_axis{k}" for k in range(len(shape) - 2)), "y", "x")
    if nx is not None and shape[0] == nx:
        return ("x",)
    return (f"{name}_axis0",)


def save_arrays(
    root: str,
    path: str,
    arrays: Mapping[str, np.ndarray | None],
    attrs=None,
    *,
    dims: Mapping[str, Sequence[str]] | None = None,
    array_attrs: Mapping[str, Mapping[str, Any]] | None = None,
    coords: Iterable[str] = (),
) -> None:
    """Write small whole arrays (references, traces, light curves), replacing old ones.

    One writer (the driver) owns the whole group, and each array is a single chunk.

    Parameters
    ----------
    dims : mapping, optional
        Array name -> dimension names. Default: the last two axes of a >= 2-D array are
        ``(y, x)`` (leading ones ``<name>_axis<k>``); a 1-D array as long as those images
        are wide is ``(x,)``; any other 1-D array ``(<name>_axis0,)``.
    array_attrs : mapping, optional
        Array name -> attributes (``units``, ``description``...). Known coordinate names get
        :data:`COORD_ATTRS` by default.
    coords : iterable of str
        Names (among ``arrays``) that are coordinates: listed in the ``coordinates``
        attribute of every other array, so xarray sets them as coordinates.
    """
    g = open_root(root).require_group(path)
    present = {k: np.ascontiguousarray(v) for k, v in arrays.items() if v is not None}
    nx = next((v.shape[-1] for v in present.values() if v.ndim >= 2), None)
    coords = [c for c in coords if c in present]
    for name, value in present.items():
        d = tuple((dims or {}).get(name) or _default_dims(name, value.shape, nx))
        if len(d) != value.ndim:
            raise StoreError(f"{root}/{path}/{name}: {value.ndim}-D array given {len(d)} dimension names {d}")
        at = {**COORD_ATTRS.get(name, {}), **dict((array_attrs or {}).get(name, {}))}
        if coords and name not in coords:
            at["coordinates"] = " ".join(coords)
        g.create_array(
            name, data=value, chunks=value.shape or (1,), compressors=CUBE_CODEC(value.dtype),
            dimension_names=d, attributes=cf_attrs(name, at), overwrite=True,
        )
    g.attrs.update({"Conventions": CONVENTIONS, **dict(attrs or {})})


def save_lightcurves(
    root: str,
    path: str,
    *,
    flux: np.ndarray,
    flux_error: np.ndarray,
    dq: np.ndarray,
    bin_edges: np.ndarray,
    integration_number: np.ndarray,
    int_mid_BJD_TDB: np.ndarray,  # noqa: N803 - the INT_TIMES column name
    int_mid_MJD_UTC: np.ndarray,  # noqa: N803
    white_flux: np.ndarray | None = None,
    white_flux_error: np.ndarray | None = None,
    white_dq: np.ndarray | None = None,
    units: str = "DN/s",
    wavelength_units: str = "um",
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write binned (spectroscopic) and white light curves as a labelled group.

    Parameters
    ----------
    flux, flux_error : float, (nints, nbins), ``units``
    dq : uint32, (nints, nbins)
    bin_edges : float, (nbins + 1,), ``wavelength_units``
    integration_number, int_mid_BJD_TDB, int_mid_MJD_UTC : (nints,)
    white_flux, white_flux_error : float, (nints,); white_dq : uint32, (nints,)

    Layout: ``flux``, ``flux_error``, ``dq`` on (integration, wavelength); ``white_*`` on
    (integration,); coordinates ``wavelength`` (bin centres), ``wavelength_low`` and
    ``wavelength_high`` (bin limits) on (wavelength,), ``bin_edges`` on (bin_edge,), and
    the integration numbers and mid-times on (integration,).
    """
    e = np.asarray(bin_edges, np.float64)
    flux = np.asarray(flux)
    if e.ndim != 1 or flux.ndim != 2 or e.size != flux.shape[1] + 1:
        raise StoreError(f"{root}/{path}: bin_edges {e.shape} do not bound flux {flux.shape} bins")
    it = ("integration",)
    lc = ("integration", "wavelength")
    wv = ("wavelength",)
    arrays = {
        "flux": flux, "flux_error": flux_error, "dq": dq,
        "white_flux": white_flux, "white_flux_error": white_flux_error, "white_dq": white_dq,
        "wavelength": 0.5 * (e[:-1] + e[1:]), "wavelength_low": e[:-1], "wavelength_high": e[1:],
        "bin_edges": e, "integration_number": integration_number,
        "int_mid_BJD_TDB": int_mid_BJD_TDB, "int_mid_MJD_UTC": int_mid_MJD_UTC,
    }
    dims = {"flux": lc, "flux_error": lc, "dq": lc, "white_flux": it, "white_flux_error": it,
            "white_dq": it, "wavelength": wv, "wavelength_low": wv, "wavelength_high": wv,
            "bin_edges": ("bin_edge",), "integration_number": it, "int_mid_BJD_TDB": it,
            "int_mid_MJD_UTC": it}
    wu = {"units": wavelength_units}
    array_attrs = {
        "flux": {"units": units, "description": "spectroscopic light curve: flux summed over the bin"},
        "flux_error": {"units": units, "description": "1-sigma error of flux"},
        "dq": {"units": "", "description": "0 good; DQ bits (1 DO_NOT_USE, 16 OUTLIER in white light)"},
        "white_flux": {"units": units, "description": "white-light flux"},
        "white_flux_error": {"units": units, "description": "1-sigma error of white_flux"},
        "white_dq": {"units": "", "description": "0 good; 1 DO_NOT_USE; 16 OUTLIER"},
        "wavelength": {**wu, "description": "bin centre"},
        "wavelength_low": {**wu, "description": "bin lower limit"},
        "wavelength_high": {**wu, "description": "bin upper limit"},
        "bin_edges": {**wu, "description": "bin limits: bin k spans bin_edges[k]..bin_edges[k+1]"},
    }
    save_arrays(
        root, path, arrays, attrs, dims=dims, array_attrs=array_attrs,
        coords=("wavelength", "wavelength_low", "wavelength_high", "bin_edges",
                "integration_number", "int_mid_BJD_TDB", "int_mid_MJD_UTC"),
    )


def load_arrays(root: str, path: str) -> tuple[dict[str, np.ndarray], dict]:
    """Read every array of a group written by :func:`save_arrays`, and its attributes."""
    _inline_codecs()
    g = zarr.open_group(root, path=path, mode="r", zarr_format=3, use_consolidated=False)
    return {k: v[...] for k, v in g.arrays()}, dict(g.attrs)


def set_attrs(root: str, path: str, attrs: Mapping[str, Any]) -> None:
    """Update a group's attributes (JSON values)."""
    open_root(root).require_group(path).attrs.update(dict(attrs))
