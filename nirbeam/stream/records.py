"""The record types, at their old address: they live in :mod:`nirbeam.core.records`.

Importing this module also registers the Beam coder of ``IntegrationKey`` (as it always
did), through :mod:`nirbeam.transforms.common`.
"""

from __future__ import annotations

from nirbeam.core.records import (
    DeadLetter,
    ExposureMeta,
    IntegrationKey,
    IntegrationRecord,
    IntTimes,
)
from nirbeam.transforms.common import IntegrationKeyCoder

__all__ = ["IntegrationKey", "ExposureMeta", "IntTimes", "IntegrationRecord", "DeadLetter",
           "IntegrationKeyCoder"]
