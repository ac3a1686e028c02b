"""Order statistics for numba kernels (one implementation for every step).

Kernels only: numpy/numba, no Beam.
"""

from __future__ import annotations

from numba import njit

__all__ = ["select_kth"]


@njit(cache=True, error_model="numpy")
def select_kth(a, n, k):
    """k-th smallest of ``a[:n]`` (Wirth's selection; ties handled in O(n)).

    Partitions ``a[:n]`` in place: on return ``a[:k] <= a[k] <= a[k + 1:n]``, so the
    largest of ``a[:k]`` is the (k-1)-th smallest. Values must not be NaN.

    Parameters
    ----------
    a : float array, (>= n,)
    n : int
        Number of values used, ``a[:n]``.
    k : int
        0-based rank, ``0 <= k < n``.
    """
    lo = 0
    hi = n - 1
    while lo < hi:
        x = a[k]
        i = lo
        j = hi
        while True:
            while a[i] < x:
                i += 1
            while x < a[j]:
                j -= 1
            if i <= j:
                t = a[i]
                a[i] = a[j]
                a[j] = t
                i += 1
                j -= 1
            if i > j:
                break
        if j < k:
            lo = i
        if k < i:
            hi = j
    return a[k]
