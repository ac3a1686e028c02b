"""A transit fit's result as JSON (``fit_<group>.json``, ``live/fit_<group>.json``).

Moved from :mod:`nirbeam.transforms.transit` (kernels do no I/O).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_fit_json"]


def write_fit_json(result, path: str | Path) -> Path:
    """Write ``result.to_dict()`` (a :class:`~nirbeam.transforms.transit.FitResult`) as
    indented JSON; returns the path."""
    path = Path(path)
    path.write_text(json.dumps(result.to_dict(), indent=2, default=float))
    return path
