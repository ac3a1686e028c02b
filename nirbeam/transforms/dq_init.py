"""dq_init: initialise the pixel DQ from the MASK reference and a zero group DQ.

As jwst ``dq_init``: ``pixeldq = mask`` (standard JWST bits), ``groupdq = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DQInitParams", "dq_init"]


@dataclass(frozen=True)
class DQInitParams:
    """Parameters of dq_init (only the switch)."""

    enabled: bool = True


def dq_init(mask: np.ndarray, ngroups: int, enabled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Initial group and pixel DQ of one integration.

    Parameters
    ----------
    mask : uint32, (ny, nx)
        MASK reference DQ (standard bits).
    ngroups : int
    enabled : bool
        When False the pixel DQ starts at zero.

    Returns
    -------
    groupdq : uint8, (ngroups, ny, nx), all zero
    pixeldq : uint32, (ny, nx), a copy of ``mask`` (zeros when disabled)
    """
    ny, nx = mask.shape
    groupdq = np.zeros((ngroups, ny, nx), np.uint8)
    pixeldq = mask.astype(np.uint32, copy=True) if enabled else np.zeros((ny, nx), np.uint32)
    return groupdq, pixeldq
