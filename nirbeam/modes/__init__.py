"""Observing modes as plans: each module defines one :class:`~nirbeam.core.geometry.ModePlan`.

``MODES`` lists them; :func:`mode_for` picks the plan of an exposure. BOTS
(:mod:`nirbeam.modes.bots`) is the first; FS, MOS and IFU plug in the same way
(docs/ARCHITECTURE.md, "Adding a mode").

``DISPATCH`` is the one table that says which inputs each mode takes and which batch
command runs them: a :class:`ModeEntry` per (mode, input level), naming its command by
``"module:function"`` (resolved only by the CLI, so this package imports no pipeline).
:func:`classify_inputs` reads the inputs' primary headers once and returns the one entry
that takes them all, or raises :class:`ModeInputError` naming each file, its EXP_TYPE and
the mode it would go to (mixed inputs), or the file no entry takes (unknown inputs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from nirbeam.core.geometry import ModePlan
from nirbeam.modes.bots import BOTS
from nirbeam.modes.fs import FS
from nirbeam.modes.ifu import IFU
from nirbeam.modes.mos import MOS
from nirbeam.stream.uncal import BadInputError

__all__ = ["MODES", "mode_for", "ModeError", "ModeEntry", "DISPATCH", "InputFile",
           "ModeInputError", "Classified", "classify", "classify_inputs", "read_inputs",
           "UNCAL", "LEVEL2"]

MODES: tuple[ModePlan, ...] = (BOTS, FS, MOS, IFU)

UNCAL = "uncal"
"""Input level of raw ramps (``*_uncal.fits``): nirbeam runs stage 1."""
LEVEL2 = "level2"
"""Input level of jwst level-2 slit files (DATAMODL SlitModel/MultiSlitModel)."""


class ModeError(ValueError):
    """No mode handles an exposure."""


class ModeInputError(BadInputError):
    """``nirbeam run``'s inputs are of several modes, or of none (exit code 2)."""


@dataclass(frozen=True)
class ModeEntry:
    """One row of the dispatch table: a mode, the input level it takes, its batch command.

    Attributes
    ----------
    plan : ModePlan
        Its EXP_TYPEs (``plan.exp_types``) recognise the inputs.
    level : str
        ``"uncal"`` (:data:`UNCAL`) or ``"level2"`` (:data:`LEVEL2`).
    command : str
        ``"module:function"`` of the batch command, called as ``function(args,
        beam_args) -> exit code`` (the CLI resolves it; see
        :mod:`nirbeam.stream.run_commands`).
    tso_visit : bool
        Also takes NIRSpec exposures of any EXP_TYPE with TSOVISIT=T (BOTS).
    """

    plan: ModePlan
    level: str
    command: str
    tso_visit: bool = False

    @property
    def name(self) -> str:
        """``plan.name``, with ``-level2`` for level-2 inputs (``mos-level2``)."""
        return self.plan.name if self.level == UNCAL else f"{self.plan.name}-{self.level}"

    def takes(self, f: InputFile) -> bool:
        """Whether this entry takes input file ``f`` (level, then EXP_TYPE or a TSO visit)."""
        if f.level != self.level:
            return False
        if f.exp_type in self.plan.exp_types:
            return True
        return self.tso_visit and f.tsovisit and f.instrume == "NIRSPEC"


DISPATCH: tuple[ModeEntry, ...] = (
    ModeEntry(MOS, LEVEL2, "nirbeam.stream.run_commands:run_mos"),
    ModeEntry(MOS, UNCAL, "nirbeam.stream.run_commands:run_mos"),
    ModeEntry(IFU, UNCAL, "nirbeam.stream.run_commands:run_ifu"),
    ModeEntry(FS, UNCAL, "nirbeam.stream.run_commands:run_fs"),
    ModeEntry(BOTS, UNCAL, "nirbeam.stream.run_commands:run_bots", tso_visit=True),
)
"""The modes ``nirbeam run`` dispatches, each with its inputs and batch command. EXP_TYPEs
are matched before a TSO visit, so an FS exposure of a TSO visit is FS (as ``mode_for``)."""


def mode_for(meta) -> ModePlan:
    """The plan that handles ``meta`` (by EXP_TYPE; a TSO visit of NIRSpec is BOTS).

    Raises
    ------
    ModeError
        Naming the EXP_TYPE and the modes there are.
    """
    for m in MODES:
        if m.handles(meta):
            return m
    if getattr(meta, "tsovisit", False) and str(getattr(meta, "instrume", "")).upper() == "NIRSPEC":
        return BOTS
    raise ModeError(
        f"{getattr(meta, 'exposure', '?')} {getattr(meta, 'detector', '?')}: EXP_TYPE="
        f"{getattr(meta, 'exp_type', '')!r} is handled by no mode (modes: "
        f"{[(m.name, m.exp_types) for m in MODES]})")


@dataclass(frozen=True)
class InputFile:
    """What dispatch reads of one input file: its level and primary keywords."""

    path: str
    level: str
    exp_type: str
    tsovisit: bool = False
    instrume: str = "NIRSPEC"


@dataclass(frozen=True)
class Classified:
    """The entry that takes every input file, and the files."""

    entry: ModeEntry
    files: tuple[InputFile, ...]

    @property
    def mode(self) -> str:
        return self.entry.plan.name


def _entry_of(f: InputFile, table: Sequence[ModeEntry]) -> ModeEntry | None:
    for e in table:  # EXP_TYPE first: a TSO visit only where no EXP_TYPE matched
        if e.level == f.level and f.exp_type in e.plan.exp_types:
            return e
    for e in table:
        if e.takes(f):
            return e
    return None


def _describe(f: InputFile) -> str:
    return f"{f.path} (EXP_TYPE={f.exp_type!r}{', TSOVISIT=T' if f.tsovisit else ''})"


def classify(files: Sequence[InputFile], table: Sequence[ModeEntry] = DISPATCH) -> Classified:
    """The one entry of ``table`` that takes every file.

    Raises
    ------
    ModeInputError
        A file no entry takes (naming it, its EXP_TYPE and what each mode takes), or
        files of several modes (naming each file, its EXP_TYPE and its mode).
    """
    if not files:
        raise ModeInputError("(no inputs)", "no input files to classify")
    by_entry: dict[ModeEntry, list[InputFile]] = {}
    for f in files:
        e = _entry_of(f, table)
        if e is None:
            takes = "; ".join(f"{e.name}: {e.level} of EXP_TYPE {'/'.join(e.plan.exp_types)}"
                              + (" or TSOVISIT=T" if e.tso_visit else "") for e in table)
            tso = ("not a time-series exposure (expected EXP_TYPE='NRS_BRIGHTOBJ' or "
                   "TSOVISIT=T) and " if f.level == UNCAL else "")
            raise ModeInputError(f.path, f"EXP_TYPE={f.exp_type!r} and TSOVISIT="
                                 f"{f.tsovisit!r} ({f.level} file): {tso}handled by no mode "
                                 f"({takes})", "PRIMARY", "EXP_TYPE")
        by_entry.setdefault(e, []).append(f)
    if len(by_entry) > 1:
        parts = "; ".join(f"{e.name}: " + ", ".join(_describe(f) for f in fs)
                          for e, fs in by_entry.items())
        raise ModeInputError(", ".join(f.path for f in files),
                             f"inputs of {len(by_entry)} modes in one run ({parts}); run each "
                             "mode's inputs on their own")
    (entry,) = by_entry
    return Classified(entry, tuple(files))


def _fits_in(inputs: Sequence[str]) -> list[str]:
    paths = []
    for p in map(str, inputs):
        if os.path.isdir(p):
            paths += [os.path.join(p, n) for n in sorted(os.listdir(p)) if n.lower().endswith(".fits")]
        elif os.path.isfile(p) and p.lower().endswith(".fits"):
            paths.append(p)
    return paths


def read_inputs(inputs: Sequence[str]) -> list[InputFile] | None:
    """The input files of ``nirbeam run`` with their level and primary keywords.

    Level-2 when every FITS file of the inputs (files, or the ``*.fits`` of folders) is a
    jwst level-2 slit file; otherwise the uncal files (files, or the ``*_uncal.fits`` of
    folders), scanned as the batch driver scans them. None when the uncal inputs cannot be
    read (missing, not FITS, truncated, ...): the default driver (BOTS) then reports them
    with its own errors, as it always did.
    """
    from astropy.io import fits

    from nirbeam.sources.level2 import is_level2_slit_file
    from nirbeam.stream.uncal import find_uncal_files, scan_segment

    cand = _fits_in(inputs)
    if cand and all(is_level2_slit_file(p) for p in cand):
        out = []
        for p in cand:
            h = fits.getheader(p)
            out.append(InputFile(p, LEVEL2, str(h.get("EXP_TYPE", "")).strip().upper(),
                                 bool(h.get("TSOVISIT", False)),
                                 str(h.get("INSTRUME", "")).strip().upper()))
        return out
    try:
        segs = [scan_segment(p, require_tso=False) for p in find_uncal_files(list(inputs))]
    except Exception:  # noqa: BLE001 - the BOTS driver reports bad inputs with its own errors
        return None
    return [InputFile(s.path, UNCAL, str(s.meta.exp_type).strip().upper(), bool(s.meta.tsovisit),
                      str(s.meta.instrume).strip().upper()) for s in segs] or None


def classify_inputs(inputs: Sequence[str], table: Sequence[ModeEntry] = DISPATCH) -> Classified:
    """``nirbeam run``'s inputs -> the entry (mode and batch command) that runs them.

    Inputs that cannot be read go to the BOTS entry (its driver names what is wrong with
    them); readable inputs of no mode or of several raise :class:`ModeInputError`.
    """
    files = read_inputs(inputs)
    if files is None:
        bots = next(e for e in table if e.plan is BOTS and e.level == UNCAL)
        return Classified(bots, ())
    return classify(files, table)
