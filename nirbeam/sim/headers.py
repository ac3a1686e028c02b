"""Headers and reference files shared by the simulators (BOTS :mod:`nirbeam.sim.simulator`,
FS :mod:`nirbeam.sim.fs`, MOS :mod:`nirbeam.sim.mos`, IFU :mod:`nirbeam.sim.ifu`).

* :func:`reference_common`, :func:`reference_path` and :func:`write_detector_refs`: the
  seven CRDS-format detector references (SUPERBIAS, DARK, LINEARITY, SATURATION,
  READNOISE, GAIN, MASK) with their selection keywords, extensions, DQ_DEF tables and
  BUNITs; each simulator gives the arrays and its DESCRIP/extra keywords.
* :func:`reference_primary`: the PRIMARY HDU of a mode reference (FS geometry, PHOTOM,
  bar shadow, IFU geometry...) from a keyword dict.
* :func:`file_cards`, :func:`readout_cards` and :func:`header_from_cards`: the level-1b
  uncal PRIMARY header's file block (DATE ... SIMULATD) and readout block (READPATT ...
  SLOWAXIS), with the archive's comments.

Moving these here from the simulators changed none of their files: every header card
(keyword, value, comment; DATE aside, a time stamp) and every data array the four
simulators write on their small presets was compared before and after (the one-off
script is described in ``docs/notes/issue-15-sims.md``).
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from astropy.io import fits

from nirbeam.sim.fits_writer import write_reference

__all__ = ["SCA_ID", "FASTSLOW", "DETECTOR_REFTYPES", "reference_common", "reference_path",
           "write_detector_refs", "reference_primary", "file_cards", "readout_cards",
           "header_from_cards"]

#: SCA_ID of each NIRSpec detector
SCA_ID = {"NRS1": 491, "NRS2": 492}
#: (FASTAXIS, SLOWAXIS) of each detector in the DMS frame
FASTSLOW = {"NRS1": (2, 1), "NRS2": (-2, -1)}

#: name -> (REFTYPE, DQ_DEF flag names or None, BUNIT of SCI/ERR or None), in the order
#: the simulators write them
DETECTOR_REFTYPES = {
    "superbias": ("SUPERBIAS", ["DO_NOT_USE", "UNRELIABLE_BIAS"], "DN"),
    "dark": ("DARK", ["DO_NOT_USE", "HOT", "WARM", "UNRELIABLE_DARK"], "DN"),
    "linearity": ("LINEARITY", ["DO_NOT_USE", "NO_LIN_CORR"], None),
    "saturation": ("SATURATION", ["DO_NOT_USE", "NO_SAT_CHECK"], "DN"),
    "readnoise": ("READNOISE", None, "DN"),
    "gain": ("GAIN", None, "electrons/DN"),
    "mask": ("MASK", ["DO_NOT_USE", "DEAD", "HOT", "WARM", "REFERENCE_PIXEL"], None),
}


def reference_common(detector: str, exp_type: str, subarray: str, substrt1: int, substrt2: int,
                     subsize1: int, subsize2: int, *, detector_keys: bool = True,
                     telescop: bool = True) -> dict:
    """PRIMARY keywords shared by a simulator's detector references (CRDS selection:
    DETECTOR, SUBARRAY/SUBSTRT/SUBSIZE, READPATT ANY, EXP_TYPE, USEAFTER...).

    ``detector_keys`` adds SCA_ID and FASTAXIS/SLOWAXIS; ``telescop`` TELESCOP JWST."""
    det = str(detector).upper()
    out = {"INSTRUME": "NIRSPEC", "DETECTOR": det}
    if detector_keys:
        out["SCA_ID"] = SCA_ID[det]
    out.update({"SUBARRAY": subarray, "SUBSTRT1": substrt1, "SUBSTRT2": substrt2,
                "SUBSIZE1": subsize1, "SUBSIZE2": subsize2})
    if detector_keys:
        out["FASTAXIS"], out["SLOWAXIS"] = FASTSLOW[det]
    out.update({"READPATT": "ANY", "EXP_TYPE": exp_type, "USEAFTER": "2015-01-01T00:00:00",
                "PEDIGREE": "DUMMY", "AUTHOR": "nirbeam simulator"})
    if telescop:
        out["TELESCOP"] = "JWST"
    return out


def reference_path(refs_dir: Path, name: str, detector: str, mode: str = "") -> Path:
    """``refs_dir/jwst_nirspec_<name>_nirbeamsim_[<mode>_]<det>.fits``."""
    tag = f"{mode}_" if mode else ""
    return Path(refs_dir) / f"jwst_nirspec_{name}_nirbeamsim_{tag}{str(detector).lower()}.fits"


def write_detector_refs(path_for: Callable[[str], Path], common: dict,
                        refs: dict[str, tuple[dict, dict[str, np.ndarray]]]) -> dict[str, Path]:
    """Write detector references in the CRDS layout.

    Parameters
    ----------
    path_for : callable, name (``"superbias"``...) -> Path
    common : dict
        :func:`reference_common`'s keywords.
    refs : dict
        name (a key of :data:`DETECTOR_REFTYPES`) -> (extra PRIMARY keywords, DESCRIP
        included, in the order wanted; EXTNAME -> array in order). Written in the order
        given.

    Returns
    -------
    dict name -> Path
    """
    out = {}
    for name, (extra, images) in refs.items():
        if name not in DETECTOR_REFTYPES:
            raise ValueError(f"write_detector_refs: {name!r} is not one of {list(DETECTOR_REFTYPES)}")
        reftype, dq_names, bunit = DETECTOR_REFTYPES[name]
        out[name] = write_reference(path_for(name), reftype, {**common, **extra}, images,
                                    dq_names, bunit=bunit)
    return out


def reference_primary(keys: dict) -> fits.PrimaryHDU:
    """The PRIMARY HDU of a mode reference (no data) with ``keys`` in order."""
    hdu = fits.PrimaryHDU()
    for k, v in keys.items():
        hdu.header[k] = v
    return hdu


def header_from_cards(cards: Iterable[tuple]) -> fits.Header:
    """A header from ``(keyword, value, comment)`` cards, in order."""
    h = fits.Header()
    for key, v, c in cards:
        h[key] = (v, c)
    return h


def file_cards(fname: str, module: str) -> list[tuple]:
    """The uncal PRIMARY header's file block: DATE (now), ORIGIN (``simulated by
    <module>``), TIMESYS, FILENAME, FILETYPE, DATAMODL, TELESCOP, SIMULATD."""
    return [
        ("DATE", _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime()), "UTC date file created"),
        ("ORIGIN", "NIRBEAM", f"simulated by {module}"),
        ("TIMESYS", "UTC", "principal time system for time-related keywords"),
        ("FILENAME", fname, "Name of the file"),
        ("FILETYPE", "uncalibrated", "Type of data in the file"),
        ("DATAMODL", "Level1bModel", "Type of data model"),
        ("TELESCOP", "JWST", "Telescope used to acquire the data"),
        ("SIMULATD", True, "nirbeam simulation"),
    ]


def readout_cards(*, readpatt: str, nints: int, int_lo: int, int_hi: int, ngroups: int,
                  nframes: int, groupgap: int, nresets: int, tframe: float, tgroup: float,
                  duration: float, segment: int, nsegments: int, subarray: str,
                  substrt1: int, substrt2: int, subsize1: int, subsize2: int,
                  fastslow: tuple[int, int], dropped_frames: bool = False) -> list[tuple]:
    """The uncal PRIMARY header's readout block, READPATT ... SLOWAXIS (EFFINTTM =
    TGROUP x (NGROUPS - 1), EFFEXPTM that x NINTS). ``dropped_frames`` adds DRPFRMS1,
    DRPFRMS3 (0) and DATAPROB (False), as the BOTS simulator's headers have them."""
    fast, slow = fastslow
    cards = [
        ("READPATT", readpatt, "Readout pattern"),
        ("NINTS", nints, "Number of integrations in exposure"),
        ("INTSTART", int_lo, "Starting integration number in this segment"),
        ("INTEND", int_hi, "Ending integration number in this segment"),
        ("NGROUPS", ngroups, "Number of groups in integration"),
        ("NFRAMES", nframes, "Number of frames per group"),
        ("GROUPGAP", groupgap, "Number of frames dropped between groups"),
        ("NRESETS", nresets, "Number of resets between integrations"),
    ]
    if dropped_frames:
        cards += [("DRPFRMS1", 0, "Frames dropped before first integration"),
                  ("DRPFRMS3", 0, "Frames dropped between integrations")]
    cards += [
        ("NSAMPLES", 1, "Number of A/D samples per pixel"),
        ("TSAMPLE", 10.0, "[us] Time between samples"),
        ("TFRAME", tframe, "[s] Time between frames"),
        ("TGROUP", tgroup, "[s] Time between groups"),
        ("EFFINTTM", tgroup * (ngroups - 1), "[s] Effective integration time"),
        ("EFFEXPTM", tgroup * (ngroups - 1) * nints, "[s] Effective exposure time"),
        ("DURATION", duration, "[s] Total duration of exposure"),
        ("EXSEGNUM", segment, "Segment number"),
        ("EXSEGTOT", nsegments, "Total number of segments"),
        ("ZEROFRAM", False, "T if a zero frame was read separately"),
    ]
    if dropped_frames:
        cards.append(("DATAPROB", False, "Science telemetry indicated a problem"))
    cards += [
        ("SUBARRAY", subarray, "Subarray used"),
        ("SUBSTRT1", substrt1, "Starting pixel in axis 1 direction"),
        ("SUBSTRT2", substrt2, "Starting pixel in axis 2 direction"),
        ("SUBSIZE1", subsize1, "Number of pixels in axis 1 direction"),
        ("SUBSIZE2", subsize2, "Number of pixels in axis 2 direction"),
        ("FASTAXIS", fast, "Fast readout axis direction"),
        ("SLOWAXIS", slow, "Slow readout axis direction"),
    ]
    return cards
