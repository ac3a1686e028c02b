"""x1dints rows packed by numpy (``fits_products.x1dints_row_bytes``) are the bytes astropy
writes for the same table (``x1dints_hdulist``), on seeded tables with NaN payloads,
infinities, the extreme uint32 DQ values, pixel and wavelength axes and one column; and
the products writer falls back to astropy when they are not."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits

from nirbeam.sinks import fits_products as fp


def _table(rng, n, nw, pixel):
    def f(scale=1.0):
        a = rng.normal(0, scale, (n, nw))
        a.flat[rng.integers(0, a.size, max(1, a.size // 20))] = np.nan
        a.view(np.uint64).flat[0] = 0x7FF8000000000123  # a NaN with a payload
        if a.size > 2:
            a.flat[1], a.flat[2] = np.inf, -0.0
        return a
    dq = rng.integers(0, 2**32, (n, nw), dtype=np.uint64).astype(np.uint32)
    dq.flat[:3] = (0, 2**31, 2**32 - 1)[:min(3, dq.size)]
    times = {k: 60000 + np.sort(rng.random(n)) for k in
             ("int_start_MJD_UTC", "int_mid_MJD_UTC", "int_end_MJD_UTC",
              "int_start_BJD_TDB", "int_mid_BJD_TDB", "int_end_BJD_TDB")}
    return fp.X1dTable(
        detector="NRS1", header={"FXD_SLIT": "S1600A1"}, int_num=np.arange(1, n + 1) * 7,
        wavelength=np.linspace(0.6, 5.3, nw), flux=f(100), flux_error=f(), flux_var_poisson=f(),
        flux_var_rnoise=f(), dq=dq, background=f(), npixels=rng.random((n, nw)) * 8,
        times=times, segment=rng.integers(1, 9, n).astype(np.int32),
        wavelength_source="none: no wavelengths" if pixel else "map.fits",
        int_times={"integration_number": np.arange(1, n + 1) * 7, **times})


def _astropy_rows(t) -> bytes:
    bio = io.BytesIO()
    fp.x1dints_hdulist(t).writeto(bio)
    with fits.open(io.BytesIO(bio.getvalue())) as h:
        loc = h.fileinfo(1)["datLoc"]
        nbytes = h[1].header["NAXIS1"] * h[1].header["NAXIS2"]
    return bio.getvalue()[loc:loc + nbytes]


@pytest.mark.parametrize("n,nw,pixel", [(64, 32, True), (5, 512, False), (3, 2, True),
                                        (1, 7, False)])
def test_row_bytes_equal_astropy(n, nw, pixel):
    t = _table(np.random.default_rng(n * 1000 + nw), n, nw, pixel)
    assert fp.x1dints_row_bytes(t) == _astropy_rows(t)


def test_writer_falls_back_to_astropy_when_rows_differ(tmp_path, monkeypatch):
    """A wrong numpy packer is caught on the first block: the file stays astropy's."""
    from types import SimpleNamespace

    from nirbeam.stream import products

    rng = np.random.default_rng(3)
    n, nw = 20, 16
    t = _table(rng, n, nw, True)
    good = tmp_path / "good"
    bad = tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    monkeypatch.setattr(products, "X1D_BLOCK", 6)
    monkeypatch.setattr(products, "x1dints_table",
                        lambda plan, num, *a, **k: (fp.X1dTable(**{
                            **t.__dict__, "int_num": t.int_num[num - 1],
                            "flux": t.flux[num - 1], "flux_error": t.flux_error[num - 1],
                            "flux_var_poisson": t.flux_var_poisson[num - 1],
                            "flux_var_rnoise": t.flux_var_rnoise[num - 1],
                            "dq": t.dq[num - 1], "background": t.background[num - 1],
                            "npixels": t.npixels[num - 1], "segment": t.segment[num - 1],
                            "times": {k_: v[num - 1] for k_, v in t.times.items()}}), "DN/s"))
    plan = SimpleNamespace(meta=SimpleNamespace(group_name="g"))
    num = np.arange(1, n + 1)
    S = {k: np.zeros((n, nw)) for k in products._X1D_SPECTRA}
    z = np.zeros((n, nw))
    products._write_x1dints(str(good), plan, num, None, z, z, z, S, "none")
    whole = tmp_path / "whole.fits"
    fp.write_x1dints(str(whole), t)
    assert (good / "g_x1dints.fits").read_bytes() == whole.read_bytes()
    real = fp.x1dints_row_bytes
    monkeypatch.setattr(fp, "x1dints_row_bytes", lambda tt: real(tt)[:-1] + b"\x01")
    products._write_x1dints(str(bad), plan, num, None, z, z, z, S, "none")
    assert (bad / "g_x1dints.fits").read_bytes() == whole.read_bytes()


def test_sampled_rates_one_read_for_trace_and_flicker(monkeypatch):
    """``_SampledRates.both`` gives :meth:`trace` and :meth:`column_offsets` bit for bit,
    from one pass over the blocks (the second plot reads nothing)."""
    from nirbeam.sinks import diagnostics as D

    rng = np.random.default_rng(5)
    n, ny, nx = 70, 12, 40
    sci = rng.normal(10, 3, (n, ny, nx)).astype(np.float32)
    sci[rng.random(sci.shape) < 0.02] = np.nan
    dq = (rng.random(sci.shape) < 0.05).astype(np.uint32)
    mask = np.zeros((ny, nx), bool)
    mask[4:8] = True
    reads = []

    def blocks(self):
        reads.append(1)
        for i in range(0, n, D._BLOCK):
            yield sci[i:i + D._BLOCK], dq[i:i + D._BLOCK]

    monkeypatch.setattr(D._SampledRates, "blocks", blocks)
    center = np.full(nx, 6.0)
    ref = D._SampledRates("r", "g", np.arange(n))
    c0, w0 = ref.trace(center, 2.0, (3.0, 5.0))
    o0 = ref.column_offsets(mask)
    reads.clear()
    s = D._SampledRates("r", "g", np.arange(n))
    c1, w1 = s.both(center, 2.0, (3.0, 5.0), mask)
    o1 = s.column_offsets(mask)
    assert len(reads) == 1
    for a, b in ((c0, c1), (w0, w1), (o0, o1)):
        assert a.view(np.uint64).tolist() == b.view(np.uint64).tolist()
