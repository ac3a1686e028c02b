"""CRDS-format reference files: find, select, cut to the subarray, translate DQ.

A folder (a user's CRDS cache works as it is: files are found recursively) is indexed by
the PRIMARY keywords REFTYPE, INSTRUME, DETECTOR, READPATT, SUBARRAY, SUBSTRT1/2,
SUBSIZE1/2 and USEAFTER. For each reference type the best file for an exposure is chosen:
same instrument and detector, a read pattern that matches (or ANY/N/A) for every type, a
region that covers the science subarray (exact subarray first, then the smallest cover),
the newest USEAFTER not after the exposure start (EXPSTART). Two different files that tie
on all of these are refused, naming both. Arrays are read as sections (a
full-frame DARK is never loaded whole), cut with SUBSTRT/SUBSIZE, and DQ values are
translated to the standard JWST bits through each file's DQ_DEF table.

Every file chosen is checked against what its REFTYPE promises (extension, dimensions,
DATAMODL, COEFFS >= 2, plausible values, finite positive gain and read noise on most
pixels); a chosen file that cannot be read, or that is cut short, is refused. Other
instruments' files in a CRDS cache are only indexed (headers); FITS files that cannot be
opened at all are named when a type turns out to be missing.

A type with no applicable file is an error unless stand-ins are allowed
(``--allow-standins``); :func:`standin_references` derives what can soundly be derived from
the data, and each substitution is recorded with what it costs (:data:`STANDIN_COST`).

The index and the choice of files are in :mod:`nirbeam.stream.ref_index`; this module
reads, cuts and checks the chosen files, and makes stand-ins.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from astropy.io import fits

from nirbeam import dqflags
from nirbeam.stream.records import ExposureMeta
from nirbeam.stream.ref_index import (
    FULL,
    REFTYPE_CONTENT,
    REFTYPES,
    STANDIN_COST,
    RefFile,
    RefIndex,
    file_sha256,
    index_references,
    select_reference,
    verify_reference,
)
from nirbeam.stream.uncal import BadInputError
from nirbeam.transforms import irs2 as _irs2
from nirbeam.transforms.reference import ReferenceArrays

_IRS2_WIDTH = _irs2.IRS2Layout().width  # 3200: IRS2-layout references

__all__ = [
    "RefFile",
    "RefIndex",
    "index_references",
    "verify_reference",
    "select_reference",
    "load_references",
    "standin_references",
    "REFTYPES",
    "STANDIN_COST",
    "load_irs2_reference",
    "read_irs2_reference",
    "load_picture_frame_reference",
    "read_picture_frame",
]



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


def _window(shape, ref: RefFile, meta: ExposureMeta, ext: str) -> tuple[slice, slice]:
    """The (y, x) slices of the science subarray in a reference array of ``shape``."""
    x0 = meta.substrt1 - ref.substrt1
    y0 = meta.substrt2 - ref.substrt2
    ny, nx = shape[-2:]
    if (ny, nx) != (ref.subsize2, ref.subsize1):
        raise BadInputError(
            ref.path,
            f"{ext} is {nx}x{ny} but SUBSIZE1/2 say {ref.subsize1}x{ref.subsize2}",
            ext,
            "SUBSIZE1",
        )
    return slice(y0, y0 + meta.subsize2), slice(x0, x0 + meta.subsize1)


def _cut(arr: np.ndarray, ref: RefFile, meta: ExposureMeta, ext: str) -> np.ndarray:
    ys, xs = _window(arr.shape, ref, meta, ext)
    return np.ascontiguousarray(arr[..., ys, xs])


def _section(hdu, ref: RefFile, meta: ExposureMeta, ext: str, planes: int | None = None):
    """Read only the science subarray (and the first ``planes`` planes) of an image HDU.

    Through ``hdu.section``, which reads only the bytes of the window from the file (also
    for scaled integer images, which astropy cannot memory-map): a full-frame cube is
    never loaded whole (a real full-frame DARK is GB-scale).
    """
    shape = tuple(hdu.shape)
    if shape[-2:] == (_IRS2_WIDTH, FULL):  # IRS2 layout: keep the normal samples
        lead = tuple(slice(0, planes if planes is not None and k == 0 else n)
                     for k, n in enumerate(shape[:-2]))
        return np.ascontiguousarray(
            _irs2.to_normal(hdu.section[(*lead, slice(None), slice(None))], meta.detector))
    ys, xs = _window(shape, ref, meta, ext)
    lead = tuple(slice(0, planes if planes is not None and k == 0 else n)
                 for k, n in enumerate(shape[:-2]))
    return np.ascontiguousarray(hdu.section[(*lead, ys, xs)])


def _ext(hdul, name, path):
    for h in hdul:
        if h.name == name:
            return h
    raise BadInputError(path, f"reference file has no {name} extension", name)


def _read_ref(ref: RefFile, meta: ExposureMeta, ext: str, with_dq: bool = True,
              planes: int | None = None, dtype=np.float32):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(ref.path, memmap=False) as hd:
                data = _section(_ext(hd, ext, ref.path), ref, meta, ext, planes).astype(dtype)
                dq = None
                if with_dq and any(h.name == "DQ" for h in hd):
                    raw = _section(_ext(hd, "DQ", ref.path), ref, meta, "DQ")
                    if raw.ndim == 3:  # some files carry DQ per plane
                        raw = np.bitwise_or.reduce(raw.astype(np.uint32), axis=0)
                    dq = _translate_dq(hd, raw, ref.path)
                header = hd[0].header.copy()
    except BadInputError:
        raise
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise BadInputError(ref.path, f"cannot read {ext} ({exc})", ext) from None
    return data, dq, header


def _check_values(arr: np.ndarray, ref: RefFile, ext: str, plane: int | None = None) -> None:
    """Refuse a reference whose values cannot be of its REFTYPE, or are mostly unusable."""
    a = arr if plane is None else arr[plane]
    t = ref.reftype
    good = np.isfinite(a)
    if t in ("GAIN", "READNOISE"):
        good &= a > 0
    if good.mean() < 0.5:
        raise BadInputError(ref.path, f"{t}: {100 * (1 - good.mean()):.0f}% of the pixels of the "
                            f"science subarray are {'not finite and positive' if t in ('GAIN', 'READNOISE') else 'not finite'}"
                            "; refusing a reference that is mostly unusable", ext)
    lim = REFTYPE_CONTENT[t][3]
    med = float(np.median(a[good]))
    if t == "LINEARITY":
        if not 0.5 <= med <= 2.0:
            raise BadInputError(ref.path, f"LINEARITY: median linear coefficient {med:.4g}; a "
                                "linearity correction has a linear term near 1", ext, "COEFFS")
        return
    if lim is not None and not lim[0] <= med <= lim[1]:
        raise BadInputError(ref.path, f"{t}: median {med:.4g} {lim[2]} is not a plausible NIRSpec "
                            f"{t.lower()} (expected {lim[0]:g}..{lim[1]:g}): is this file really "
                            f"a {t} reference?", ext, "REFTYPE")


def _missing_message(folder, index, reftype, meta) -> str:
    others = sorted({f"{r.detector or 'ANY'}/{r.subarray or '?'}/{r.readpatt or 'ANY'}"
                     for r in index if r.reftype == reftype})
    found = f"; {reftype} files found for {', '.join(others)}" if others else ""
    bad = getattr(index, "unreadable", [])
    if bad:
        found += (f"; {len(bad)} FITS file(s) could not be read: "
                  + ", ".join(f"{p} ({why})" for p, why in bad[:3]))
    return (f"no {reftype} reference applies to {meta.instrume} {meta.detector} {meta.subarray} "
            f"READPATT={meta.readpatt}{found}. Add one, or pass --allow-standins to use a "
            f"stand-in ({STANDIN_COST[reftype]})")


def load_references(
    folder: str,
    meta: ExposureMeta,
    index: list[RefFile] | None = None,
    first_ramp: np.ndarray | None = None,
    allow_standins: bool = False,
):
    """Load, check and cut the references for one exposure/detector.

    A type with no applicable file in the folder is an error unless ``allow_standins``;
    then it gets the stand-in of :func:`standin_references` (superbias and read noise from
    ``first_ramp``, the first integration's ramp) and the substitution is recorded with its
    cost. So is a DARK with fewer frames than the exposure needs (jwst's dark_current skips
    the step for such a dark; here that needs the same opt-in).

    Returns
    -------
    refs : ReferenceArrays
    provenance : dict
        REFTYPE -> {"file", "sha256"} or {"standin": description, "cost": ...}.

    Raises
    ------
    BadInputError
        A missing type (without ``allow_standins``), a file whose content does not fit
        its REFTYPE, a file that cannot be read, two files that tie.
    """
    index = index if index is not None else index_references(folder)
    ny, nx = meta.image_shape
    if first_ramp is not None and first_ramp.shape[-2:] != (ny, nx) and _irs2.is_irs2(meta):
        first_ramp = _irs2.to_normal(first_ramp, meta.detector, _irs2.layout_for(meta))
    irs2_ref = _irs2_reference_or_standin(folder, meta, allow_standins, index)
    chosen = {t: select_reference(index, t, meta) for t in REFTYPES}
    missing = [t for t in REFTYPES if chosen[t] is None]
    if missing and not allow_standins:
        raise BadInputError(folder, _missing_message(folder, index, missing[0], meta)
                            + (f" (also missing: {', '.join(missing[1:])})" if missing[1:] else ""),
                            None, "REFTYPE")
    prov: dict[str, dict] = {}
    z = np.zeros((ny, nx), np.uint32)
    sources = {}

    def note(t, ref):
        prov.setdefault(t, {}).update(
            {"file": os.path.basename(ref.path), "path": ref.path, "sha256": file_sha256(ref.path),
             "useafter": ref.useafter}
        )
        sources[t] = os.path.basename(ref.path)

    def standin(t, what):
        prov[t] = {"standin": what, "cost": STANDIN_COST[t]}

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
        raw, _, _ = _read_ref(ref, meta, "DQ", with_dq=False, dtype=np.uint32)
        with fits.open(ref.path, memmap=False) as hd:
            mask = _translate_dq(hd, raw, ref.path)
        note("MASK", ref)
    else:
        standin("MASK", "no MASK reference: no pixels flagged a priori")

    if chosen["SATURATION"]:
        ref = chosen["SATURATION"]
        sat, sat_dq, _ = _read_ref(ref, meta, "SCI")
        _check_values(sat, ref, "SCI")
        sat_dq = sat_dq if sat_dq is not None else z.copy()
        sat, sat_dq = bad_nan(sat, sat_dq, dqflags.NO_SAT_CHECK, 65535.0, "SATURATION", ref)
        note("SATURATION", ref)
    else:
        sat, sat_dq = np.full((ny, nx), 65535.0, np.float32), z.copy()
        standin("SATURATION", "no SATURATION reference: 65535 DN (the A/D limit)")

    sb, sb_dq = None, z.copy()
    if chosen["SUPERBIAS"]:
        ref = chosen["SUPERBIAS"]
        sb, d, _ = _read_ref(ref, meta, "SCI")
        _check_values(sb, ref, "SCI")
        sb_dq = d if d is not None else z.copy()
        sb, sb_dq = bad_nan(sb, sb_dq, dqflags.UNRELIABLE_BIAS | dqflags.DO_NOT_USE, 0.0, "SUPERBIAS", ref)
        note("SUPERBIAS", ref)

    lin, lin_dq = None, z.copy()
    if chosen["LINEARITY"]:
        ref = chosen["LINEARITY"]
        lin, d, _ = _read_ref(ref, meta, "COEFFS")
        _check_values(lin, ref, "COEFFS", plane=1)
        lin_dq = d if d is not None else z.copy()
        badlin = ~np.all(np.isfinite(lin), axis=0)
        if badlin.any():
            lin[:, badlin] = 0.0
            lin[1, badlin] = 1.0
            lin_dq[badlin] |= np.uint32(dqflags.NO_LIN_CORR)
            prov.setdefault("LINEARITY", {})["nan_pixels"] = int(badlin.sum())
        note("LINEARITY", ref)
    else:
        standin("LINEARITY", "no LINEARITY reference: no correction")

    dark, dark_dq = None, z.copy()
    if chosen["DARK"]:
        ref = chosen["DARK"]
        hdr = fits.getheader(ref.path)
        frames, d, hdr = _read_ref(ref, meta, "SCI", planes=_dark_planes(hdr, meta))
        _check_values(frames, ref, "SCI")
        try:
            dark = _dark_per_group(frames, hdr, meta, ref.path)
        except BadInputError as exc:
            if not allow_standins:
                raise BadInputError(
                    ref.path, f"{str(exc).split(': ', 1)[-1]}. jwst's dark_current step skips "
                    "the dark for the whole exposure in this case; give a dark that covers the "
                    "exposure, or pass --allow-standins to do the same as jwst", exc.extension,
                    exc.keyword) from None
            # as jwst's dark_current step: a dark that cannot cover the exposure is not
            # applied (the step is skipped), and the run says so
            dark = None
            standin("DARK", f"dark not subtracted: {exc}")
            prov["DARK"]["file"] = os.path.basename(ref.path)
        if dark is not None:
            dark_dq = d if d is not None else z.copy()
            badd = ~np.all(np.isfinite(dark), axis=0)
            if badd.any():
                dark[:, badd] = 0.0
                dark_dq[badd] |= np.uint32(dqflags.UNRELIABLE_DARK)
                prov.setdefault("DARK", {})["nan_pixels"] = int(badd.sum())
            note("DARK", ref)
    else:
        standin("DARK", "no DARK reference: dark not subtracted")

    if chosen["READNOISE"]:
        ref = chosen["READNOISE"]
        rn, _, _ = _read_ref(ref, meta, "SCI", with_dq=False)
        _check_values(rn, ref, "SCI")
        good = np.isfinite(rn) & (rn > 0)
        if not good.all():
            fill = float(np.median(rn[good]))
            mask[~good] |= np.uint32(dqflags.DO_NOT_USE | dqflags.UNRELIABLE_ERROR)
            rn[~good] = fill
            prov.setdefault("READNOISE", {})["bad_pixels"] = int((~good).sum())
        note("READNOISE", ref)
    else:
        rn = None
    if chosen["GAIN"]:
        ref = chosen["GAIN"]
        gain, _, _ = _read_ref(ref, meta, "SCI", with_dq=False)
        _check_values(gain, ref, "SCI")
        good = np.isfinite(gain) & (gain > 0)
        if not good.all():
            mask[~good] |= np.uint32(dqflags.NO_GAIN_VALUE | dqflags.DO_NOT_USE)
            gain[~good] = 1.0
            prov.setdefault("GAIN", {})["bad_pixels"] = int((~good).sum())
        note("GAIN", ref)
    else:
        gain = np.ones((ny, nx), np.float32)
        standin("GAIN", "no GAIN reference: 1.0 e-/DN")
    if sb is None or rn is None:
        if first_ramp is None:
            missing = [t for t, a in (("SUPERBIAS", sb), ("READNOISE", rn)) if a is None]
            raise BadInputError(
                folder, f"no {'/'.join(missing)} reference for {meta.detector} {meta.subarray} "
                "and no ramp to derive a stand-in from", None, "REFTYPE",
            )
        standin_refs, sprov = standin_references(meta, first_ramp)
        if sb is None:
            sb = standin_refs.superbias
            prov["SUPERBIAS"] = sprov["SUPERBIAS"]
        if rn is None:
            rn = standin_refs.readnoise
            prov["READNOISE"] = sprov["READNOISE"]
    for t, v in prov.items():
        if "standin" in v:
            sources[t] = v["standin"]
    refs = ReferenceArrays(
        mask=mask, saturation=sat, saturation_dq=sat_dq, superbias=sb, superbias_dq=sb_dq,
        linearity=lin, linearity_dq=lin_dq, dark=dark, dark_dq=dark_dq,
        readnoise=rn,
        gain=gain, sources=sources, irs2=irs2_ref,
    )
    if (ny, nx) == (FULL, FULL):  # picture frame (optional: used when the step is on)
        pf = select_reference(index, "PICTUREFRAME", meta)
        if pf is not None:
            prov["PICTUREFRAME"] = {"file": os.path.basename(pf.path), "path": pf.path,
                                    "sha256": file_sha256(pf.path), "useafter": pf.useafter}
    if _irs2.is_irs2(meta):
        if irs2_ref is None:
            prov["REFPIX"] = {"standin": "none: reference samples dropped unused",
                              "cost": STANDIN_COST["REFPIX"]}
            sources["REFPIX"] = prov["REFPIX"]["standin"]
        else:
            p = irs2_ref.path
            prov["REFPIX"] = {"file": os.path.basename(p), "path": p, "sha256": file_sha256(p)}
            sources["REFPIX"] = irs2_ref.source
    return refs, prov


def _irs2_reference_or_standin(folder, meta, allow_standins, index=None):
    """The REFPIX reference of an IRS2 exposure; None for other readouts, or (with
    ``allow_standins``) when the folder has none."""
    if not _irs2.is_irs2(meta):
        return None
    ref = load_irs2_reference(folder, meta, index)
    if ref is None and not allow_standins:
        raise BadInputError(folder, f"no REFPIX reference applies to {meta.detector} "
                            f"READPATT={meta.readpatt} (IRS2 needs one, CRDS selects it by "
                            "DETECTOR and READPATT). Add one, or pass --allow-standins "
                            f"({STANDIN_COST['REFPIX']})", None, "REFTYPE")
    return ref


def _dark_planes(hdr, meta: ExposureMeta) -> int:
    """How many leading planes of a dark cube the exposure needs (the rest is not read)."""
    if (int(hdr.get("NFRAMES", 1)), int(hdr.get("GROUPGAP", 0))) == (meta.nframes, meta.groupgap):
        return meta.ngroups
    step = meta.nframes + meta.groupgap
    return (meta.ngroups - 1) * step + meta.nframes


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
    for t, v in prov.items():
        v["cost"] = STANDIN_COST[t]
    return refs, prov


def load_irs2_reference(folder: str, meta: ExposureMeta, index: list[RefFile] | None = None):
    """The REFPIX reference of an IRS2 exposure, chosen from the folder's index as the
    other types are (:func:`~nirbeam.stream.ref_index.select_reference`: DETECTOR,
    READPATT, the latest USEAFTER not after EXPSTART, equal ties refused), read into an
    :class:`~nirbeam.transforms.irs2.IRS2Reference`; None when none applies.

    Raises
    ------
    BadInputError
        A REFPIX file without its IRS2 table, with another number of rows than
        2 x 712 x 2048, or two equally applicable files that differ.
    """
    ref = _select_optional(folder, meta, "REFPIX", index)
    return None if ref is None else read_irs2_reference(ref.path)


def _select_optional(folder, meta, reftype, index):
    if index is None:
        if not folder or not os.path.isdir(folder):
            return None
        index = index_references(folder)
    return select_reference(index, reftype, meta)


def load_picture_frame_reference(folder: str, meta: ExposureMeta,
                                 index: list[RefFile] | None = None):
    """The PICTUREFRAME reference (jwst 3.0 ``picture_frame``: a rate image of the thermal
    picture-frame pattern, SCI float32 2048 x 2048, CRDS selects it by DETECTOR and
    USEAFTER), as (template float32 (2048, 2048) in the DMS frame, provenance dict with
    file, path, sha256, useafter); None when none applies.

    Raises
    ------
    BadInputError
        Not a full frame (the correction's regions are full-frame ones), or the exposure
        is not a full frame.
    """
    ref = _select_optional(folder, meta, "PICTUREFRAME", index)
    if ref is None:
        return None
    if tuple(meta.image_shape) != (FULL, FULL):
        raise BadInputError(ref.path, f"PICTUREFRAME applies to full frames only; the "
                            f"exposure is {meta.subarray} {tuple(meta.image_shape)}",
                            "PRIMARY", "SUBARRAY")
    return read_picture_frame(ref.path), {"file": os.path.basename(ref.path), "path": ref.path,
                                          "sha256": file_sha256(ref.path),
                                          "useafter": ref.useafter}


def read_picture_frame(path: str) -> np.ndarray:
    """The SCI image of a PICTUREFRAME file (stdatamodels ``PictureFrameModel``: float32
    2048 x 2048, DMS frame), checked for its shape."""
    with fits.open(path, memmap=False) as hd:
        data = np.asarray(_ext(hd, "SCI", path).data, np.float32)
    if data.shape != (FULL, FULL):
        raise BadInputError(path, f"PICTUREFRAME SCI is {data.shape}; expected "
                            f"({FULL}, {FULL})", "SCI", "NAXIS1")
    return data


def read_irs2_reference(p: str):
    """Read one REFPIX (IRS2) reference file into an
    :class:`~nirbeam.transforms.irs2.IRS2Reference` (checked: IRS2 table, its 8 columns
    and 2 x 712 x 2048 rows)."""
    with fits.open(p, memmap=False) as hd:
        names = [h.name for h in hd]
        if "IRS2" not in names:
            raise BadInputError(p, f"REFTYPE=REFPIX but no IRS2 table (extensions {names})",
                                "IRS2")
        t = hd["IRS2"].data
        cols = {c.lower(): np.asarray(t[c], np.float32) for c in t.names}
        need = [f"{a}_{k}" for a in ("alpha", "beta") for k in range(4)]
        lack = [c for c in need if c not in cols]
        if lack:
            raise BadInputError(p, f"IRS2 table lacks columns {lack}", "IRS2", lack[0].upper())
        if len(t) != 2 * _irs2.NALPHA:
            raise BadInputError(p, f"IRS2 table has {len(t)} rows; expected 2 x 712 x 2048 = "
                                f"{2 * _irs2.NALPHA}", "IRS2", "NAXIS2")
        dq = None
        if "DQ" in names and hd["DQ"].data is not None and len(hd["DQ"].data):
            d = hd["DQ"].data
            dq = {k: np.asarray(d[k.upper()]) for k in ("output", "odd_even", "mask")}
    return _irs2.IRS2Reference.from_columns(
        cols, dq, f"{os.path.basename(p)} sha256:{file_sha256(p)[:16]}", os.path.abspath(p))
