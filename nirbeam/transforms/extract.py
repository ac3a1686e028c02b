"""1-D spectral extraction kernels: curved box, straight box, optimal (Horne 1986).

Kernels only (numpy + numba): no Beam imports. Images are (ny, nx) = (spatial,
dispersion), rates in DN/s, variances in (DN/s)^2. Pixel ``j`` spans ``[j - 0.5, j + 0.5]``.

:func:`column_background`, :func:`box_extract` and :func:`optimal_extract` run numba
kernels (one fused pass per integration, per-model geometry cached per trace). The
previous numpy implementations are kept as ``column_background_reference``,
``box_extract_reference`` and ``optimal_extract_reference``: the kernels evaluate the
same float64 expressions in the same order and agree with them to rounding (bit for bit
on the simulator scenes; ``tests/test_extract.py``, ``bench/extract_cost.py``).

Bad pixels (any of ``bad_bits`` in DQ, or non-finite) never enter a sum directly:

* box extraction replaces them by ``profile x flux`` when a profile is given, otherwise
  by the weighted mean of the good aperture pixels of that column scaled by the missing
  weight (a flat-profile assumption), and ORs their DQ into the column flag;
* optimal extraction simply gives them zero weight (the profile accounts for the missing
  light) and ORs their DQ into the column flag.

Columns are flagged, never dropped: ``Spectrum.dq`` holds the OR of the DQ of every
pixel that was masked or rejected in the aperture, less ``DO_NOT_USE`` (the profile or
the rescaling fixed those pixels), plus ``OUTLIER`` for pixels rejected by the
optimal-extraction sigma clip. A column with no usable pixel has flux and error NaN and
``DO_NOT_USE`` (never a 0 that a sum would count as flux).

Layout: this module re-exports the public names (and the numpy references the tests
use) from :mod:`extract_common` (Spectrum, aperture weights, geometry caches),
:mod:`extract_background`, :mod:`extract_box`, :mod:`extract_optimal` and
:mod:`extract_profile`.
"""

from __future__ import annotations

from nirbeam.transforms.extract_background import (  # noqa: F401
    column_background,
    column_background_kernel,
    column_background_reference,
)
from nirbeam.transforms.extract_box import (  # noqa: F401
    box_extract,
    box_extract_reference,
    box_kernel,
    straight_box_extract,
)
from nirbeam.transforms.extract_common import (  # noqa: F401
    Spectrum,
    aperture_weights,
    aperture_weights_fast,
    as_dq,
    as_f64,
    bad_mask,
    trace_center,
)
from nirbeam.transforms.extract_optimal import (  # noqa: F401
    optimal_extract,
    optimal_extract_reference,
    optimal_kernel,
)
from nirbeam.transforms.extract_profile import ProfileAccumulator, build_profile

__all__ = [
    "Spectrum",
    "aperture_weights",
    "column_background",
    "box_extract",
    "straight_box_extract",
    "build_profile",
    "optimal_extract",
    "ProfileAccumulator",
]

# Old private names of the numpy references, kept for benches and tests written against
# them (bench/extract_cost.py).
_box_extract_reference = box_extract_reference
_optimal_extract_reference = optimal_extract_reference
_column_background_reference = column_background_reference
_aperture_weights_fast = aperture_weights_fast
