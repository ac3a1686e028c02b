"""1/f ("flicker") noise cleaning kernels for NIRSpec subarray time series.

NIRSpec 1/f noise shows as vertical stripes in DMS orientation: arrays are ``(ny, nx)``
(``ny = 32`` for BOTS subarrays), ``y`` is the fast-read direction, so every column
is read in one burst of ``ny`` pixel times and carries its own offset, plus weak
low-frequency structure along the column. The stripes change from read to read, so
they are removed per group difference (before ramp fitting) or per rate image.

Three algorithms, all fitted to background pixels only (``mask`` True):

``clean_median``
    Per column, the median (or sigma-clipped mean) of the masked background pixels
    (after removing an optional smooth background) is the stripe offset. After
    Willott's ``image1overf`` / jwst ``clean_flicker_noise fit_method='median'``.
``clean_fft``
    NSClean style (Rauscher 2024): the correlated noise along each column's readout
    is a low-pass Fourier (cosine) series in readout time, fitted by weighted least
    squares to the masked pixels of the column. The constant term is the stripe
    offset, higher terms capture structure along the column. See the notes of
    :func:`clean_fft` for how this differs from jwst's subarray variant.
``clean_nsclean``
    jwst's subarray NSClean layout (``fft_clean_subarray``): one apodized Fourier
    series in readout time (line overhead included) over overlapping sections of
    ~512 usable pixels, blended. Smooths offsets over ~2 columns, so it does not
    remove arbitrary per-column offsets exactly; ~50x slower than the others.

Group level: :func:`clean_groups` cleans each group difference and re-integrates the
ramp (first group kept); :func:`make_group_hook` adapts it to detector1's group hook.
Rate level: :func:`clean_rate`. The scene mask comes from :func:`scene_mask`.

numpy/scipy, numba for the group-level kernels; no Beam imports.

This module is the public face; the code lives in ``flicker_params`` (parameters, DQ
bits, shared helpers), ``flicker_mask`` (scene mask), ``flicker_image`` (one image),
``flicker_sort`` and ``flicker_kernels`` (numba building blocks and ramp kernels) and
``flicker_groups`` (group level and the detector1 hook).
"""

from __future__ import annotations

from nirbeam.transforms.flicker_groups import (
    clean_groups,
    clean_groups_fast,
    clean_groups_from_first,
    clean_groups_from_first_reference,
    clean_groups_reference,
    correction_variance,
    correction_variance_reference,
    make_group_hook,
)
from nirbeam.transforms.flicker_image import (
    NSCLEAN_FC,
    clean_fft,
    clean_median,
    clean_nsclean,
    clean_rate,
    cosine_basis,
    make_apodizer,
    make_cleaner,
)
from nirbeam.transforms.flicker_mask import draft_mask_from_groups, scene_mask
from nirbeam.transforms.flicker_params import (
    GROUP_BAD_BITS,
    MASK_BAD_BITS,
    FlickerParams,
    fill_columns,
    masked_column_median,
)
from nirbeam.transforms.flicker_sort import (
    BLOCK,
    order_pair,
    sort_columns,
    sorted_median,
    sorting_network,
)

__all__ = [
    "FlickerParams",
    "GROUP_BAD_BITS",
    "MASK_BAD_BITS",
    "NSCLEAN_FC",
    "clean_fft",
    "clean_groups",
    "clean_groups_from_first",
    "clean_median",
    "clean_nsclean",
    "clean_rate",
    "correction_variance",
    "cosine_basis",
    "draft_mask_from_groups",
    "make_group_hook",
    "scene_mask",
]

# private names other modules and the tests reach through this module
_PRIVATE = (BLOCK, make_apodizer, clean_groups_fast, clean_groups_from_first_reference,
            clean_groups_reference, correction_variance_reference, make_cleaner,
            fill_columns, masked_column_median, sorted_median, order_pair, sort_columns,
            sorting_network)

# Old private names, kept for tests and benches written against them.
_BLOCK = BLOCK
_apodizer = make_apodizer
_clean_groups_from_first_reference = clean_groups_from_first_reference
_clean_groups_reference = clean_groups_reference
_correction_variance_reference = correction_variance_reference
_median = sorted_median
_sort_columns = sort_columns
_sorting_network = sorting_network
