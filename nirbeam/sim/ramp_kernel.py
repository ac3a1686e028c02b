"""The simulator's ramp assembly in one numba pass (one integration, one detector).

:func:`nirbeam.sim.physics.simulate_integration` draws every random array with numpy, in
the order and with the calls it always made (the streams are the data's definition:
``bench/science_regression.py`` re-draws the Poisson increments), then this kernel does
what the numpy expressions after the draws did, element by element, in the same
floating-point operations and order, so the uint16 ramp is bit-identical to the numpy
version (``physics._simulate_integration_reference``; tests/test_sim_ramp_kernel.py):

    S_g = cumsum_k<=g (inc_k [+ cosmic rays]) / gain     (float64, sequential sum)
    S  -= (beta * S) * S                                  (classical non-linearity)
    raw = S + (bias + offset) + kTC + drift_g + even/odd_g,y + N_g,y,x * rn/sqrt(2)
          + (hi_g[x * nline + y] + low_g,x)               (1/f, readout order, NRS2 reversed)
    ramp = uint16(clip(rint(min(raw, sat_hard)), 0, 65535))

The numpy version made ~15 full-size float64 temporaries per integration (cumsum, the
float64 copy of the Poisson draw, the transposed 1/f cube, the sums); this pass reads each
input once and writes the uint16 ramp. It releases the GIL (``nogil``), as numpy's random
Generator and FFT do, so the simulator can run integrations on threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["assemble_ramp"]


@njit(cache=True, nogil=True, error_model="numpy")
def _assemble(inc, ovr_idx, ovr_val, gain, beta, bias_i, ktc, drift, eo, nrm, rn_s,
              hi, low, nline, oof, rev, sat, ny, nx, out):  # pragma: no cover - numba
    G = inc.shape[0]
    npix = ny * nx
    acc = np.zeros(npix, np.float64)
    q = 0
    nov = ovr_idx.shape[0]
    for g in range(G):
        base = g * npix
        for y in range(ny):
            yy = ny - 1 - y if rev else y
            for x in range(nx):
                p = y * nx + x
                f = base + p
                if q < nov and ovr_idx[q] == f:
                    v = ovr_val[q]
                    q += 1
                else:
                    v = np.float64(inc[g, p])
                acc[p] += v
                s = acc[p] / gain[p]
                s = s - (np.float64(beta[p]) * s) * s
                r = s + np.float64(bias_i[p])
                r = r + ktc[p]
                r = r + drift[g]
                r = r + eo[g, y]
                r = r + nrm[g, p] * rn_s[p]
                if oof:
                    xx = nx - 1 - x if rev else x
                    r = r + (np.float64(hi[g, xx * nline + yy]) + low[g, xx])
                sh = np.float64(sat[p])
                if sh < r:
                    r = sh
                r = np.rint(r)
                if r < 0.0:
                    r = 0.0
                elif r > 65535.0:
                    r = 65535.0
                out[g, p] = np.uint16(r)


def assemble_ramp(inc, ovr_idx, ovr_val, gain, beta, bias_i, ktc, drift, eo, nrm, rn_s,
                  hi, low, nline: int, fast_reversed: bool, sat) -> np.ndarray:
    """The uint16 ramp of one integration from its draws (module docstring).

    Parameters
    ----------
    inc : int64, (ngroups, ny, nx), e-
        Poisson electrons per group interval.
    ovr_idx, ovr_val : int64 (n,) sorted flat indices into ``inc``, float64 (n,)
        Elements whose increment is not ``inc`` (cosmic rays: the increment plus their
        charge, summed in the order numpy's ``add.at`` sums them).
    gain : float64, (ny, nx), e-/DN;  beta : float32, (ny, nx), 1/DN
    bias_i : float32, (ny, nx), DN: superbias plus this integration's offset.
    ktc : float64, (ny, nx), DN;  drift : float64, (ngroups,), DN
    eo : float64, (ngroups, ny), DN (even/odd);  nrm : float64, (ngroups, ny, nx)
        standard normal read-noise draws;  rn_s : float64, (ny, nx), DN per read.
    hi : float32, (ngroups, >= nx_read * nline) or None: the pixel-scale 1/f series per
        group in readout order (column after column of ``nline`` samples);
    low : float64, (ngroups, nx): the column-scale 1/f offsets (readout order).
    nline : int;  fast_reversed : bool (NRS2: both axes read backwards)
    sat : float32, (ny, nx), raw DN where a pixel stops rising.

    Returns
    -------
    ramp : uint16, (ngroups, ny, nx), DN
    """
    G, ny, nx = inc.shape
    oof = hi is not None
    if not oof:
        hi = np.zeros((G, 1), np.float32)
        low = np.zeros((G, 1), np.float64)
    out = np.empty((G, ny, nx), np.uint16)
    npix = ny * nx
    _assemble(inc.reshape(G, npix), ovr_idx, ovr_val, gain.reshape(npix), beta.reshape(npix),
              bias_i.reshape(npix), ktc.reshape(npix), drift, eo, nrm.reshape(G, npix),
              rn_s.reshape(npix), hi, low, int(nline), oof, bool(fast_reversed),
              sat.reshape(npix), ny, nx, out.reshape(G, npix))
    return out
