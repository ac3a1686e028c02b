"""CRDS-format reference files: find, select, cut to the subarray, translate DQ.

A folder (a user's CRDS cache works as it is: files are found recursively) is indexed by
the PRIMARY keywords REFTYPE, INSTRUME, DETECTOR, READPATT, SUBARRAY, SUBSTRT1/2,
SUBSIZE1/2 and USEAFTER. For each reference type the best file for an exposure is chosen:
same instrument and detector, a read pattern that matches (or ANY/N/A), a region that
covers the science subarray (exact subarray first, then the smallest cover), newest
USEAFTER not after the exposure start. Arrays are cut with SUBSTRT/SUBSIZE and DQ values
are translated to the standard JWST bits through each file's DQ_DEF table.

With no folder, :func:`standin_references` derives what can soundly be derived from the
data and records every substitution.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from nirbeam import dqflags
from nirbeam.stream.records import ExposureMeta
from nirbeam.stream.uncal import BadInputError
from nirbeam.transforms.reference import ReferenceArrays

__all__ = [
    "RefFile",
    "index_references",
    "select_reference",
    "load_references",
    "standin_references",
    "REFTYPES",
]

REFTYPES = ("MASK", "SATURATION", "SUPERBIAS", "LINEARITY", "DARK", "READNOISE", "GAIN")
FULL = 2048
_ANY = {"", "ANY", "N/A", "NONE", "GENERIC"}


@dataclass(frozen=True)
class RefFile:
    """Header facts of one reference file."""

    path: str
    reftype: str
    instrume: str
    detector: str
    readpatt: str
    subarray: str
    substrt1: int
    substrt2: int
    subsize1: int
    subsize2: int
    useafter: str

    def covers(self, meta: ExposureMeta) -> bool:
        """True when this file's region contains the science subarray."""
        return (
            self.substrt1 <= meta.substrt1
            and self.substrt2 <= meta.substrt2
            and self.substrt1 + self.subsize1 >= meta.substrt1 + meta.subsize1
            and self.substrt2 + self.subsize2 >= meta.substrt2 + meta.subsize2
        )


def _region_from_header(h, shape2d):
    ny, nx = shape2d
    sub = str(h.get("SUBARRAY", "")).strip().upper()
    if "SUBSTRT1" in h and "SUBSIZE1" in h:
        return (int(h["SUBSTRT1"]), int(h.get("SUBSTRT2", 1)), int(h["SUBSIZE1"]), int(h.get("SUBSIZE2", ny)))
    if (ny, nx) == (FULL, FULL) or sub in ("FULL", "GENERIC"):
        return (1, 1, nx, ny)
    return None


def _first_image_shape(hdul):
    for h in hdul[1:]:
        if h.name in ("SCI", "COEFFS", "DQ") and h.header.get("NAXIS", 0) >= 2:
            return (h.header["NAXIS2"], h.header["NAXIS1"])
    return None


def index_references(folder: str) -> list[RefFile]:
    """Index every FITS reference file under a folder (recursively)."""
    if not os.path.isdir(folder):
        raise BadInputError(folder, "reference folder does not exist")
    out = []
    for root, _dirs, files in os.walk(folder):
        for n in sorted(files):
            if not n.lower().endswith(".fits"):
                continue
            p = os.path.join(root, n)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with fits.open(p, memmap=False, lazy_load_hdus=True) as hd:
                        h = hd[0].header
                        reftype = str(h.get("REFTYPE", "")).strip().upper()
                        if reftype not in REFTYPES:
                            continue
                        shape = _first_image_shape(hd)
                        region = _region_from_header(h, shape) if shape else None
            except OSError:
                continue
            if region is None:
                continue
            out.append(
                RefFile(
                    path=p,
                    reftype=reftype,
                    instrume=str(h.get("INSTRUME", "")).strip().upper(),
                    detector=str(h.get("DETECTOR", "")).strip().upper(),
                    readpatt=str(h.get("READPATT", "")).strip().upper(),
                    subarray=str(h.get("SUBARRAY", "")).strip().upper(),
                    substrt1=region[0],
                    substrt2=region[1],
                    subsize1=region[2],
                    subsize2=region[3],
                    useafter=str(h.get("USEAFTER", "")).strip(),
                )
            )
    return out


def select_reference(index: list[RefFile], reftype: str, meta: ExposureMeta) -> RefFile | None:
    """Best reference of a type for an exposure, or None when none applies.

    Raises
    ------
    BadInputError
        When files of the type exist for the detector but none covers the subarray.
    """
    cands = [
        r for r in index
        if r.reftype == reftype
        and r.instrume in (meta.instrume, *_ANY)
        and r.detector in (meta.detector, *_ANY)
    ]
    if reftype == "DARK":
        cands = [r for r in cands if r.readpatt in (meta.readpatt.upper(), *_ANY)]
    if not cands:
        return None
    covering = [r for r in cands if r.covers(meta)]
    if not covering:
        have = ", ".join(
            f"{os.path.basename(r.path)} ({r.subarray or '?'} x{r.substrt1}+{r.subsize1}, y{r.substrt2}+{r.subsize2})"
            for r in cands
        )
        raise BadInputError(
            cands[0].path,
            f"no {reftype} reference covers subarray {meta.subarray} (SUBSTRT1={meta.substrt1}, "
            f"SUBSTRT2={meta.substrt2}, SUBSIZE1={meta.subsize1}, SUBSIZE2={meta.subsize2}) "
            f"of detector {meta.detector}; found: {have}",
            "PRIMARY",
            "SUBSTRT1",
        )

    def rank(r: RefFile):
        exact = r.subarray == meta.subarray.upper() and r.subsize1 == meta.subsize1
        return (not exact, r.subsize1 * r.subsize2, _neg(r.useafter), r.path)

    return sorted(covering, key=rank)[0]


def _neg(s: str) -> tuple:
    # newest USEAFTER first
    return tuple(-ord(c) for c in s)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _translate_dq(hdul, dq: np.ndarray, path: str) -> np.ndarray:
    """Map a reference file's DQ bits to standard JWST bits through DQ_DEF."""
    dq = np.asarray(dq).astype(np.uint32)
    idx = [i for i, h in enumerate(hdul) if h.name == "DQ_DEF"]
    if not idx:
        return dq
    table = hdul[idx[0]].data
    out = np.zeros_like(dq)
    names = {n.lower(): n for n in table.names}
    for row in table:
        value = int(row[names["value"]])
        name = str(row[names["name"]]).strip().upper()
        std = dqflags.FLAGS.get(name)
        if std is None:
            std = dqflags.OTHER_BAD_PIXEL
        if value:
            out[(dq & np.uint32(value)) != 0] |= np.uint32(std)
    return out


def _cut(arr: np.ndarray, ref: RefFile, meta: ExposureMeta, ext: str) -> np.ndarray:
    x0 = meta.substrt1 - ref.substrt1
    y0 = meta.substrt2 - ref.substrt2
    ny, nx = arr.shape[-2:]
    if (ny, nx) != (ref.subsize2, ref.subsize1):
        raise BadInputError(
            ref.path,
            f"{ext} is {nx}x{ny} but SUBSIZE1/2 say {ref.subsize1}x{ref.subsize2}",
            ext,
            "SUBSIZE1",
        )
    out = arr[..., y0 : y0 + meta.subsize2, x0 : x0 + meta.subsize1]
    return np.ascontiguousarray(out)


def _ext(hdul, name, path):
    for h in hdul:
        if h.name == name:
            return h
    raise BadInputError(path, f"reference file has no {name} extension", name)


def _read_ref(ref: RefFile, meta: ExposureMeta, ext: str, with_dq: bool = True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(ref.path, memmap=False) as hd:
            data = _cut(np.asarray(_ext(hd, ext, ref.path).data, dtype=np.float32), ref, meta, ext)
            dq = None
            if with_dq and any(h.name == "DQ" for h in hd):
                raw = np.asarray(_ext(hd, "DQ", ref.path).data)
                if raw.ndim == 3:  # some files carry DQ per plane
                    raw = np.bitwise_or.reduce(raw.astype(np.uint32), axis=0)
                dq = _cut(_translate_dq(hd, raw, ref.path), ref, meta, "DQ")
            header = hd[0].header.copy()
    return data, dq, header


def load_references(
    folder: str,
    meta: ExposureMeta,
    index: list[RefFile] | None = None,
    first_ramp: np.ndarray | None = None,
):
    """Load and cut the references for one exposure/detector.

    Types with no file in the folder get the stand-ins of :func:`standin_references`
    (superbias and read noise from ``first_ramp``, the first integration's ramp) and
    the substitution is recorded.

    Returns
    -------
    refs : ReferenceArrays
    provenance : dict
        REFTYPE -> {"file", "sha256"} or {"standin": description}.
    """
    index = index if index is not None else index_references(folder)
    ny, nx = meta.image_shape
    chosen = {t: select_reference(index, t, meta) for t in REFTYPES}
    prov: dict[str, dict] = {}
    z = np.zeros((ny, nx), np.uint32)
    sources = {}

    def note(t, ref):
        prov.setdefault(t, {}).update(
            {"file": os.path.basename(ref.path), "path": ref.path, "sha256": _sha256(ref.path)}
        )
        sources[t] = os.path.basename(ref.path)

    def bad_nan(arr, dqarr, flag, fill, t, ref):
        bad = ~np.isfinite(arr)
        if bad.any():
            arr[bad] = fill
            dqarr[bad] |= np.uint32(flag)
            prov.setdefault(t, {})["nan_pixels"] = int(bad.sum())
        return arr, dqarr

    mask = z.copy()
    if chosen["MASK"]:
        ref = chosen["MASK"]
        with fits.open(ref.path, memmap=False) as hd:
            mask = _cut(_translate_dq(hd, _ext(hd, "DQ", ref.path).data, ref.path), ref, meta, "DQ")
        note("MASK", ref)
    else:
        prov["MASK"] = {"standin": "no MASK reference: no pixels flagged a priori"}

    if chosen["SATURATION"]:
        ref = chosen["SATURATION"]
        sat, sat_dq, _ = _read_ref(ref, meta, "SCI")
        sat_dq = sat_dq if sat_dq is not None else z.copy()
        sat, sat_dq = bad_nan(sat, sat_dq, dqflags.NO_SAT_CHECK, 65535.0, "SATURATION", ref)
        note("SATURATION", ref)
    else:
        sat, sat_dq = np.full((ny, nx), 65535.0, np.float32), z.copy()
        prov["SATURATION"] = {"standin": "no SATURATION reference: 65535 DN (the A/D limit)"}

    sb, sb_dq = None, z.copy()
    if chosen["SUPERBIAS"]:
        ref = chosen["SUPERBIAS"]
        sb, d, _ = _read_ref(ref, meta, "SCI")
        sb_dq = d if d is not None else z.copy()
        sb, sb_dq = bad_nan(sb, sb_dq, dqflags.UNRELIABLE_BIAS | dqflags.DO_NOT_USE, 0.0, "SUPERBIAS", ref)
        note("SUPERBIAS", ref)

    lin, lin_dq = None, z.copy()
    if chosen["LINEARITY"]:
        ref = chosen["LINEARITY"]
        lin, d, _ = _read_ref(ref, meta, "COEFFS")
        lin_dq = d if d is not None else z.copy()
        badlin = ~np.all(np.isfinite(lin), axis=0)
        if badlin.any():
            lin[:, badlin] = 0.0
            lin[1, badlin] = 1.0
            lin_dq[badlin] |= np.uint32(dqflags.NO_LIN_CORR)
            prov.setdefault("LINEARITY", {})["nan_pixels"] = int(badlin.sum())
        note("LINEARITY", ref)
    else:
        prov["LINEARITY"] = {"standin": "no LINEARITY reference: no correction"}

    dark, dark_dq = None, z.copy()
    if chosen["DARK"]:
        ref = chosen["DARK"]
        frames, d, hdr = _read_ref(ref, meta, "SCI")
        try:
            dark = _dark_per_group(frames, hdr, meta, ref.path)
        except BadInputError as exc:
            # as jwst's dark_current step: a dark that cannot cover the exposure is not
            # applied (the step is skipped), and the run says so
            dark = None
            prov["DARK"] = {"standin": f"dark not subtracted: {exc}", "file": os.path.basename(ref.path)}
        if dark is not None:
            dark_dq = d if d is not None else z.copy()
            badd = ~np.all(np.isfinite(dark), axis=0)
            if badd.any():
                dark[:, badd] = 0.0
                dark_dq[badd] |= np.uint32(dqflags.UNRELIABLE_DARK)
                prov.setdefault("DARK", {})["nan_pixels"] = int(badd.sum())
            note("DARK", ref)
    else:
        prov["DARK"] = {"standin": "no DARK reference: dark not subtracted"}

    if chosen["READNOISE"]:
        ref = chosen["READNOISE"]
        rn, _, _ = _read_ref(ref, meta, "SCI", with_dq=False)
        good = np.isfinite(rn) & (rn > 0)
        if not good.all():
            fill = float(np.median(rn[good])) if good.any() else 14.0
            mask[~good] |= np.uint32(dqflags.DO_NOT_USE | dqflags.UNRELIABLE_ERROR)
            rn[~good] = fill
            prov.setdefault("READNOISE", {})["bad_pixels"] = int((~good).sum())
        note("READNOISE", ref)
    else:
        rn = None
    if chosen["GAIN"]:
        ref = chosen["GAIN"]
        gain, _, _ = _read_ref(ref, meta, "SCI", with_dq=False)
        good = np.isfinite(gain) & (gain > 0)
        if not good.all():
            mask[~good] |= np.uint32(dqflags.NO_GAIN_VALUE | dqflags.DO_NOT_USE)
            gain[~good] = 1.0
            prov.setdefault("GAIN", {})["bad_pixels"] = int((~good).sum())
        note("GAIN", ref)
    else:
        gain = np.ones((ny, nx), np.float32)
        prov["GAIN"] = {"standin": "no GAIN reference: 1.0 e-/DN"}
    if sb is None or rn is None:
        if first_ramp is None:
            missing = [t for t, a in (("SUPERBIAS", sb), ("READNOISE", rn)) if a is None]
            raise BadInputError(
                folder, f"no {'/'.join(missing)} reference for {meta.detector} {meta.subarray} "
                "and no ramp to derive a stand-in from", None, "REFTYPE",
            )
        standin, sprov = standin_references(meta, first_ramp)
        if sb is None:
            sb = standin.superbias
            prov["SUPERBIAS"] = sprov["SUPERBIAS"]
        if rn is None:
            rn = standin.readnoise
            prov["READNOISE"] = sprov["READNOISE"]
    for t, v in prov.items():
        if "standin" in v:
            sources[t] = v["standin"]
    refs = ReferenceArrays(
        mask=mask, saturation=sat, saturation_dq=sat_dq, superbias=sb, superbias_dq=sb_dq,
        linearity=lin, linearity_dq=lin_dq, dark=dark, dark_dq=dark_dq,
        readnoise=rn,
        gain=gain, sources=sources,
    )
    return refs, prov


def _dark_per_group(frames: np.ndarray, hdr, meta: ExposureMeta, path: str) -> np.ndarray:
    """Dark signal per science group from a dark cube (frames or groups), float32."""
    if frames.ndim == 2:
        frames = frames[None]
    d_nframes = int(hdr.get("NFRAMES", 1))
    d_gap = int(hdr.get("GROUPGAP", 0))
    if (d_nframes, d_gap) == (meta.nframes, meta.groupgap):
        if frames.shape[0] < meta.ngroups:
            raise BadInputError(
                path,
                f"dark has {frames.shape[0]} groups but the exposure has NGROUPS={meta.ngroups}",
                "SCI",
                "NGROUPS",
            )
        return np.ascontiguousarray(frames[: meta.ngroups], dtype=np.float32)
    if d_nframes != 1 or d_gap != 0:
        raise BadInputError(
            path,
            f"dark is NFRAMES={d_nframes}, GROUPGAP={d_gap}; the exposure is NFRAMES={meta.nframes}, "
            f"GROUPGAP={meta.groupgap}: need a matching dark or one of single frames",
            "PRIMARY",
            "NFRAMES",
        )
    step = meta.nframes + meta.groupgap
    need = (meta.ngroups - 1) * step + meta.nframes
    if frames.shape[0] < need:
        raise BadInputError(
            path,
            f"dark has {frames.shape[0]} frames; the exposure needs {need}",
            "SCI",
            "NGROUPS",
        )
    out = np.empty((meta.ngroups, *frames.shape[1:]), np.float32)
    for g in range(meta.ngroups):
        out[g] = frames[g * step : g * step + meta.nframes].mean(axis=0)
    return out


def standin_references(meta: ExposureMeta, first_ramp: np.ndarray, second_ramp=None):
    """Data-derived stand-ins when no reference folder is given.

    Superbias from the first group of the first integration, extrapolated back one group
    (``2*g0 - g1``, which removes the signal accumulated by the first read); read noise
    from the scatter of second differences of the ramp (``sqrt(2/3)`` of their robust sigma
    for a CDS convention); gain 1.0; saturation 65535 DN; no linearity, dark or mask.

    Returns
    -------
    refs : ReferenceArrays
    provenance : dict
    """
    ramp = first_ramp.astype(np.float32)
    ng, ny, nx = ramp.shape
    if ng >= 2:
        bias = 2 * ramp[0] - ramp[1]
    else:
        bias = ramp[0] - 0.0
    if ng >= 3:
        d2 = np.diff(ramp, n=2, axis=0)
        mad = np.median(np.abs(d2 - np.median(d2)))
        # second difference of reads a-2b+c has variance 6 s^2 (s: single-read noise);
        # CDS noise is sqrt(2) s.
        s = 1.4826 * mad / np.sqrt(6.0)
        rn = float(np.sqrt(2.0) * s)
    else:
        rn = 14.0
    rn = rn if np.isfinite(rn) and rn > 0 else 14.0
    refs = ReferenceArrays.flat(ny, nx, ng, bias=0.0, saturation=65535.0, readnoise=rn, gain=1.0)
    refs = ReferenceArrays(
        mask=refs.mask, saturation=refs.saturation, saturation_dq=refs.saturation_dq,
        superbias=bias.astype(np.float32), superbias_dq=refs.superbias_dq, linearity=None,
        linearity_dq=refs.linearity_dq, dark=None, dark_dq=refs.dark_dq,
        readnoise=refs.readnoise, gain=refs.gain,
        sources={
            "SUPERBIAS": "stand-in: 2*group1 - group2 of the first integration",
            "READNOISE": f"stand-in: {rn:.2f} DN (CDS) from second differences of the first integration",
            "GAIN": "stand-in: 1.0 e-/DN",
            "SATURATION": "stand-in: 65535 DN",
        },
    )
    prov = {
        "SUPERBIAS": {"standin": refs.sources["SUPERBIAS"]},
        "READNOISE": {"standin": refs.sources["READNOISE"]},
        "GAIN": {"standin": refs.sources["GAIN"]},
        "SATURATION": {"standin": refs.sources["SATURATION"]},
        "LINEARITY": {"standin": "none: no linearity correction"},
        "DARK": {"standin": "none: dark not subtracted"},
        "MASK": {"standin": "none: no pixels flagged a priori"},
    }
    return refs, prov
