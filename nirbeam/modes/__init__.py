"""Observing modes as plans: each module defines one :class:`~nirbeam.core.geometry.ModePlan`.

``MODES`` lists them; :func:`mode_for` picks the plan of an exposure. BOTS
(:mod:`nirbeam.modes.bots`) is the first; FS, MOS and IFU plug in the same way
(docs/ARCHITECTURE.md, "Adding a mode").
"""

from __future__ import annotations

from nirbeam.core.geometry import ModePlan
from nirbeam.modes.bots import BOTS
from nirbeam.modes.fs import FS
from nirbeam.modes.ifu import IFU
from nirbeam.modes.mos import MOS

__all__ = ["MODES", "mode_for", "ModeError"]

MODES: tuple[ModePlan, ...] = (BOTS, FS, MOS, IFU)


class ModeError(ValueError):
    """No mode handles an exposure."""


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
