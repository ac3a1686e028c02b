"""CRDS-format reference files: the index of a folder and the choice of a file per
reference type for an exposure (see :mod:`nirbeam.stream.refs` for the rules), with the
header checks each chosen file must pass.

Moved from :mod:`nirbeam.stream.refs` (which re-exports every public name).
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import dataclass

from astropy.io import fits

from nirbeam.stream.records import ExposureMeta
from nirbeam.stream.uncal import BadInputError
from nirbeam.transforms.irs2 import IRS2Layout

__all__ = ["REFTYPES", "OPTIONAL_REFTYPES", "FULL", "STANDIN_COST", "REFTYPE_CONTENT",
           "RefFile", "RefIndex",
           "verify_reference", "index_references", "select_reference", "file_sha256"]

REFTYPES = ("MASK", "SATURATION", "SUPERBIAS", "LINEARITY", "DARK", "READNOISE", "GAIN")
OPTIONAL_REFTYPES = ("REFPIX", "PICTUREFRAME")
"""Types indexed and chosen by the same rules (DETECTOR, READPATT, USEAFTER, region) but
needed only by some exposures: REFPIX by IRS2 (full frame; a table, no image, so its region
is the full frame), PICTUREFRAME by the picture-frame step (full frame, off by default as
in jwst 3.0)."""
FULL = 2048
ANY_VALUES = {"", "ANY", "N/A", "NONE", "GENERIC"}
"""Header values that match any detector / read pattern / subarray."""
IRS2_WIDTH = IRS2Layout().width
"""3200: the DMS-y size of IRS2-layout full-frame arrays."""

STANDIN_COST = {
    "MASK": "no pixels flagged a priori: known dead, hot and open pixels enter the spectra "
            "unflagged",
    "SATURATION": "65535 DN (the A/D limit): groups saturated below it are not flagged, so "
                  "bright pixels' slopes and the transit depth are biased low",
    "SUPERBIAS": "bias from 2*group1 - group2 of the first integration: one read's noise in "
                 "every pixel's zero point; linearity and saturation are judged on that",
    "LINEARITY": "no linearity correction: rates biased low by the detector's "
                 "non-linearity (percent level at high signal), depths biased",
    "DARK": "dark current not subtracted: it stays in the rates",
    "READNOISE": "one read-noise value from second differences of the first integration: "
                 "per-pixel weights, errors and jump thresholds approximate",
    "GAIN": "1.0 e-/DN: Poisson variances and errors off by the true gain (NIRSpec ~1-2 "
            "e-/DN), and jump thresholds with them",
    "REFPIX": "IRS2 without its REFPIX reference: the interleaved reference samples and the "
              "reference output are dropped unused, so the correlated (1/f) read noise they "
              "would remove stays in the groups",
}
"""What each stand-in costs (said in run.json and on stderr when it is used)."""

# What each REFTYPE promises: the extension with its data, its dimensions, the
# stdatamodels model name (DATAMODL), and the range of the median a NIRSpec file of the
# type can have (a file of another type relabelled is caught by its values).
REFTYPE_CONTENT = {
    "MASK": ("DQ", (2,), ("MaskModel",), None),
    "SATURATION": ("SCI", (2,), ("SaturationModel",), (1000.0, 70000.0, "DN")),
    "SUPERBIAS": ("SCI", (2,), ("SuperBiasModel",), (0.0, 65535.0, "DN")),
    "LINEARITY": ("COEFFS", (3,), ("LinearityModel",), None),
    "DARK": ("SCI", (2, 3), ("DarkModel", "DarkNirspecModel"), (-1000.0, 1000.0, "DN")),
    "READNOISE": ("SCI", (2,), ("ReadnoiseModel",), (2.0, 100.0, "DN (CDS)")),
    "GAIN": ("SCI", (2,), ("GainModel",), (0.3, 10.0, "e-/DN")),
    "REFPIX": ("IRS2", (2,), ("IRS2Model",), None),
    "PICTUREFRAME": ("SCI", (2,), ("PictureFrameModel",), None),
}


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
    useafter_mjd: float = -math.inf

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
    if (ny, nx) == (IRS2_WIDTH, FULL):  # IRS2 layout (superbias, dark): the full frame
        return (1, 1, FULL, FULL)
    sub = str(h.get("SUBARRAY", "")).strip().upper()
    if "SUBSTRT1" in h and "SUBSIZE1" in h:
        return (int(h["SUBSTRT1"]), int(h.get("SUBSTRT2", 1)), int(h["SUBSIZE1"]), int(h.get("SUBSIZE2", ny)))
    if (ny, nx) == (FULL, FULL) or sub in ("FULL", "GENERIC"):
        return (1, 1, nx, ny)
    return None


def _first_image_shape(hdul):
    if str(hdul[0].header.get("REFTYPE", "")).strip().upper() == "REFPIX":
        return (FULL, FULL)  # IRS2 coefficient tables: for the full frame
    for h in hdul[1:]:
        if h.name in ("SCI", "COEFFS", "DQ") and h.header.get("NAXIS", 0) >= 2:
            return (h.header["NAXIS2"], h.header["NAXIS1"])
    return None


def _useafter_mjd(value: str, path: str) -> float:
    """USEAFTER ('2015-01-01T00:00:00', or CRDS's old 'Jan 01 2015 00:00:00') as MJD."""
    from datetime import datetime

    v = value.strip()
    if not v:
        return -math.inf
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d",
                "%b %d %Y %H:%M:%S"):
        try:
            t = datetime.strptime(v, fmt)
        except ValueError:
            continue
        return (t - datetime(1858, 11, 17)).total_seconds() / 86400.0
    raise BadInputError(path, f"USEAFTER={value!r} is not a date (expected e.g. "
                        "'2015-01-01T00:00:00')", "PRIMARY", "USEAFTER")


def _check_complete(hd, path: str) -> None:
    """Refuse a file whose HDUs need more bytes than it has (cut short)."""
    size = os.path.getsize(path)
    for h in hd:
        info = h.fileinfo()
        end = int(info["datLoc"]) + int(info.get("datSpan") or 0)
        if end > size:
            raise BadInputError(path, f"reference file is truncated: {h.name} needs {end} bytes, "
                                f"the file has {size}", h.name)


def _check_content(hd, path: str, reftype: str) -> None:
    """Refuse a file whose extensions or DATAMODL do not match its REFTYPE."""
    ext, ndims, models, _ = REFTYPE_CONTENT[reftype]
    names = [h.name for h in hd]
    if ext not in names:
        raise BadInputError(path, f"REFTYPE={reftype} but the file has no {ext} extension "
                            f"(it has {names})", "PRIMARY", "REFTYPE")
    nd = hd[ext].header.get("NAXIS", 0)
    if nd not in ndims:
        raise BadInputError(path, f"REFTYPE={reftype} needs a {' or '.join(map(str, ndims))}-D "
                            f"{ext}; it is {nd}-D", ext, "NAXIS")
    model = str(hd[0].header.get("DATAMODL", "")).strip()
    if model and not any(model.lower() == m.lower() for m in models):
        raise BadInputError(path, f"REFTYPE={reftype} but DATAMODL={model!r} (expected "
                            f"{' or '.join(models)}): a file of another type relabelled?",
                            "PRIMARY", "DATAMODL")
    n = os.path.basename(path).lower()
    for t in REFTYPES + OPTIONAL_REFTYPES:
        if t != reftype and n.startswith(f"jwst_nirspec_{t.lower()}_"):
            raise BadInputError(path, f"REFTYPE={reftype} but the file is named as a {t} "
                                "reference: a file of another type relabelled?", "PRIMARY",
                                "REFTYPE")
    if reftype == "LINEARITY":
        nc = hd["COEFFS"].header.get("NAXIS3", 0)
        if nc < 2:
            raise BadInputError(path, f"COEFFS holds {nc} coefficient plane(s); a linearity "
                                "correction needs at least 2 (offset and linear term)",
                                "COEFFS", "NAXIS3")


class RefIndex(list):
    """The reference files of a folder (a list of :class:`RefFile`), and the FITS files
    that could not be read at all (``unreadable``: (path, reason))."""

    unreadable: list[tuple[str, str]]


def verify_reference(ref: RefFile) -> None:
    """Refuse a chosen reference file that is cut short or whose content does not match
    its REFTYPE (extension, dimensions, DATAMODL, file name, COEFFS >= 2)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(ref.path, memmap=False, lazy_load_hdus=False) as hd:
                _check_complete(hd, ref.path)
                _check_content(hd, ref.path, ref.reftype)
    except BadInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - astropy raises several types
        raise BadInputError(ref.path, f"cannot be read as a FITS reference file ({exc})") from None


def index_references(folder: str) -> RefIndex:
    """Index every FITS reference file under a folder (recursively), from headers only.

    A CRDS cache holds every instrument's files: contents are checked only for the
    files chosen (:func:`verify_reference`). Files that cannot be opened are listed in
    ``unreadable`` and named when a type turns out to be missing.
    """
    if not os.path.isdir(folder):
        raise BadInputError(folder, "reference folder does not exist")
    out = RefIndex()
    out.unreadable = []
    for root, _dirs, files in os.walk(folder):
        for n in sorted(files):
            if not n.lower().endswith(".fits"):
                continue
            p = os.path.join(root, n)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with fits.open(p, memmap=False, lazy_load_hdus=False) as hd:
                        h = hd[0].header
                        reftype = str(h.get("REFTYPE", "")).strip().upper()
                        if reftype not in REFTYPES + OPTIONAL_REFTYPES:
                            continue
                        shape = _first_image_shape(hd)
                        region = _region_from_header(h, shape) if shape else None
            except Exception as exc:  # noqa: BLE001 - astropy raises several types
                out.unreadable.append((p, f"{type(exc).__name__}: {exc}"))
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
                    useafter_mjd=_useafter_mjd(str(h.get("USEAFTER", "")), p),
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
        and r.instrume in (meta.instrume, *ANY_VALUES)
        and r.detector in (meta.detector, *ANY_VALUES)
        and r.readpatt in (meta.readpatt.upper(), *ANY_VALUES)
    ]
    if not cands:
        return None
    if meta.expstart > 0:
        usable = [r for r in cands if r.useafter_mjd <= meta.expstart]
        if not usable:
            have = ", ".join(f"{os.path.basename(r.path)} (USEAFTER={r.useafter})" for r in cands)
            raise BadInputError(
                cands[0].path,
                f"every {reftype} reference for {meta.detector} has a USEAFTER later than the "
                f"exposure start EXPSTART={meta.expstart:.5f} (MJD): {have}",
                "PRIMARY", "USEAFTER",
            )
        cands = usable
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
        return (not exact, r.subsize1 * r.subsize2, -r.useafter_mjd)

    ranked = sorted(covering, key=lambda r: (rank(r), r.path))
    best = ranked[0]
    verify_reference(best)
    for other in ranked[1:]:
        if rank(other) != rank(best):
            break
        verify_reference(other)  # a relabelled file is named as such, not as a tie
        if file_sha256(other.path) != file_sha256(best.path):
            raise BadInputError(
                best.path,
                f"two {reftype} references apply equally to {meta.detector} {meta.subarray} "
                f"(same subarray, READPATT and USEAFTER={best.useafter or '(none)'}) and differ: "
                f"{best.path} and {other.path}; remove one (or give them distinct USEAFTER)",
                "PRIMARY", "USEAFTER",
            )
    return best


def file_sha256(path: str) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
