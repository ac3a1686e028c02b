"""The live sink's table writer (:class:`nirbeam.stream.live.LiveWriter`): its files are
what astropy / pandas write for the whole table, while each update formats only the rows
that changed (the update cost does not grow with the exposure), the live speclc Parquet
is a folder of integration blocks read back by pandas in order, and the live state
pickles its bins packed."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from nirbeam.stream import live
from nirbeam.stream.live import PARQUET_BLOCK, LivePoint, LiveState, LiveWriter
from nirbeam.stream.product_tables import lightcurve_edges
from nirbeam.stream.records import ExposureMeta
from nirbeam.stream.settings import Settings

EXP = "jw01366004001_04101_00001"
DETS = ("NRS1", "NRS2")


def _info(settings, det):
    meta = ExposureMeta(EXP, det, "NIRSPEC", "NRS_BRIGHTOBJ", "NRSRAPID", "SUB2048", 1, 1, 2048,
                        32, 300, 5, 1, 0, 0.9, 0.9, 5.0, "F290LP", "G395H", 1, True, "WASP-39")
    wl = np.linspace(2.9, 3.7, 200) if det == "NRS1" else np.linspace(3.8, 5.1, 200)
    edges = np.asarray(lightcurve_edges(settings.lightcurve, wl, "wavelength_map"), float)
    return {"meta": meta, "edges": edges, "wl": wl, "wl_source": "wavelength_map"}


def _point(rng, det, i, status, nbin):
    t = 60000.0 + i * 5.0 / 86400
    flux = float(rng.normal(1e5, 10.0)) if rng.random() > 0.05 else float("nan")
    p = LivePoint(EXP, det, i, t, t - 8e-4, flux, float(rng.uniform(5, 6)),
                  0 if np.isfinite(flux) else 1, status)
    bf = rng.normal(1e3, 1.0, nbin)
    bf[rng.random(nbin) < 0.05] = np.nan
    return p, (bf, rng.uniform(1, 2, nbin), np.where(np.isfinite(bf), 0, 1).astype(np.uint32))


def _stream(rng, st, writer, settings, first, last, window=5):
    """Integrations first..last arrive (provisional), each flagging the one window back."""
    for i in range(first, last + 1):
        for det in DETS:
            nb = st.groups[f"{EXP}_{det.lower()}"]["edges"].size - 1
            st.add(*_point(rng, det, i, "provisional", nb))
            if i - window >= 1:
                st.add(*_point(rng, det, i - window, "flagged", nb))
        writer.flush(st)


def _state(settings):
    st = LiveState()
    for det in DETS:
        st.groups[f"{EXP}_{det.lower()}"] = _info(settings, det)
    return st


def _astropy_rewrite(path) -> str:
    """What astropy writes for the table it reads from ``path``."""
    buf = io.StringIO()
    Table.read(path).write(buf, format="ascii.ecsv")
    return buf.getvalue()


def _expected(st, det=None):
    keys = sorted((k for k in st.points if det is None or k[0] == f"{EXP}_{det.lower()}"),
                  key=lambda k: (st.points[k].detector, k[1]))
    return keys, [st.points[k] for k in keys]


@pytest.mark.parametrize("seed", [1, 2])
def test_live_tables_are_astropys_files_of_the_whole_table(tmp_path, seed):
    """After every update: each live ECSV is byte for byte what astropy writes for the table
    it holds, and that table is the state's (every row, its latest status and numbers,
    the meta with this write's time); the speclc Parquet folder reads back (pandas) as the
    long table of every integration in order."""
    rng = np.random.default_rng(seed)
    settings = Settings.from_dict({})
    st = _state(settings)
    w = LiveWriter(str(tmp_path), settings, plot_every=0.0)
    d = tmp_path / "live"
    for first, last in ((1, 3), (4, 9), (10, 2 * PARQUET_BLOCK + 3)):
        _stream(rng, st, w, settings, first, last)
        f = d / "whitelight.ecsv"
        assert f.read_text() == _astropy_rewrite(f)
        t = Table.read(f)
        keys, pts = _expected(st)
        assert len(t) == len(keys)
        np.testing.assert_array_equal(t["integration_number"], [p.integration for p in pts])
        np.testing.assert_array_equal(t["flux"], [p.flux for p in pts])
        assert list(t["status"]) == [p.status for p in pts]
        assert list(t["detector"]) == [p.detector for p in pts]
        assert t.meta["written"] != live._WRITTEN and t.meta["written"].startswith("20")
        for det in DETS:
            g = f"{EXP}_{det.lower()}"
            f = d / f"speclc_{g}.ecsv"
            assert f.read_text() == _astropy_rewrite(f)
            t = Table.read(f)
            keys, pts = _expected(st, det)
            np.testing.assert_array_equal(t["integration_number"], [k[1] for k in keys])
            np.testing.assert_array_equal(np.asarray(t["flux"]), np.stack([st.bins[k][0] for k in keys]))
            np.testing.assert_array_equal(np.asarray(t["dq"]), np.stack([st.bins[k][2] for k in keys]))
            assert list(t["status"]) == [p.status for p in pts]
            np.testing.assert_array_equal(t.meta["bin_edges_um"], st.groups[g]["edges"])
            assert t.meta["detector"] == det and t.meta["written"] != live._WRITTEN
            df = pd.read_parquet(d / f"speclc_{g}.parquet")
            nb = st.groups[g]["edges"].size - 1
            np.testing.assert_array_equal(df["integration_number"], np.repeat([k[1] for k in keys], nb))
            np.testing.assert_array_equal(df["flux"], np.concatenate([st.bins[k][0] for k in keys]))
            assert list(df["status"]) == list(np.repeat([p.status for p in pts], nb))
            assert df.attrs["meta"]["detector"] == det
    wl = pd.read_parquet(d / "whitelight.parquet")
    assert len(wl) == len(st.points)


def test_each_update_formats_only_the_changed_rows(tmp_path, monkeypatch):
    """The update cost is flat in the number of integrations: an update formats (astropy)
    the rows it changed -- here 1 provisional + 1 flagged per detector -- whatever the table
    size, and rewrites only the Parquet blocks holding them."""
    rng = np.random.default_rng(3)
    settings = Settings.from_dict({})
    st = _state(settings)
    w = LiveWriter(str(tmp_path), settings, plot_every=0.0)
    _stream(rng, st, w, settings, 1, 3 * PARQUET_BLOCK)
    formatted, blocks = [], []
    real_rows = live.ecsv_rows

    def spy_rows(spec):
        formatted.append(len(spec.columns["integration_number"]))
        return real_rows(spec)

    from nirbeam.sinks import tables

    real_write = tables.write_table

    def spy_write(stem, **kw):
        blocks.append(os.path.basename(stem))
        return real_write(stem, **kw)

    monkeypatch.setattr(live, "ecsv_rows", spy_rows)
    monkeypatch.setattr(tables, "write_table", spy_write)
    for i in (3 * PARQUET_BLOCK + 1, 3 * PARQUET_BLOCK + 2):
        formatted.clear()
        blocks.clear()
        _stream(rng, st, w, settings, i, i)
        # white light: 2 detectors x (new + flagged) rows; each speclc: its 2 rows
        assert max(formatted) == 4 and sorted(formatted).count(2) == 2, formatted
        assert sorted(b for b in blocks if b.startswith("ints-")) == sorted(
            [f"ints-{3 * PARQUET_BLOCK + 1:05d}-{4 * PARQUET_BLOCK:05d}",
             f"ints-{2 * PARQUET_BLOCK + 1:05d}-{3 * PARQUET_BLOCK:05d}"] * 2), blocks


def test_a_new_state_drops_another_runs_parquet_blocks(tmp_path):
    """A rerun into the same OUTDIR with fewer integrations: the live Parquet folder holds
    this run's blocks only (another run's later block is removed), an older single-file
    live Parquet is replaced by the folder, and another exposure's live files are gone."""
    settings = Settings.from_dict({})
    rng = np.random.default_rng(4)
    w = LiveWriter(str(tmp_path), settings, plot_every=0.0)
    st = _state(settings)
    _stream(rng, st, w, settings, 1, PARQUET_BLOCK + 5)
    g1, g2 = (f"{EXP}_{det.lower()}" for det in DETS)
    folder = tmp_path / "live" / f"speclc_{g1}.parquet"
    assert len(os.listdir(folder)) == 2
    # an older nirbeam's single file in place of the other group's folder
    old = tmp_path / "live" / f"speclc_{g2}.parquet"
    for n in os.listdir(old):
        os.remove(old / n)
    old.rmdir()
    pd.DataFrame({"x": [1]}).to_parquet(old)
    stale = [tmp_path / "live" / n for n in ("speclc_jw99999001001_01101_00001_nrs1.ecsv",
                                              "fit_jw99999001001_01101_00001_nrs1.json")]
    for f in stale:  # another exposure's live products from an earlier run
        f.write_text("x")
    w2 = LiveWriter(str(tmp_path), settings, plot_every=0.0)
    st2 = _state(settings)
    _stream(rng, st2, w2, settings, 1, 7)
    assert not any(f.exists() for f in stale)
    for g in (g1, g2):
        df = pd.read_parquet(tmp_path / "live" / f"speclc_{g}.parquet")
        assert sorted(set(df["integration_number"])) == list(range(1, 8))


def test_live_state_pickles_its_bins_packed():
    """Beam encodes the live state on every write: the bins go as one array per group and
    column (not one per integration), and come back equal."""
    settings = Settings.from_dict({})
    rng = np.random.default_rng(5)
    st = _state(settings)
    for i in range(1, 40):
        for det in DETS:
            st.add(*_point(rng, det, i, "provisional", 30))
    st.bins[("odd", 1)] = (np.zeros(3), np.zeros(3), np.zeros(3, np.uint32))
    st.bins[("odd", 2)] = (np.zeros(4), np.zeros(4), np.zeros(4, np.uint32))  # unequal shapes
    back = pickle.loads(pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL))
    assert back.bins.keys() == st.bins.keys()
    assert repr(back.points) == repr(st.points)  # (NaN fluxes: repr, not ==)
    for k, v in st.bins.items():
        for a, b in zip(v, back.bins[k], strict=True):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype
    packed = st.__getstate__()["bins"]["packed"]
    assert set(packed) == {f"{EXP}_nrs1", f"{EXP}_nrs2"}
    assert packed[f"{EXP}_nrs1"][1].shape == (39, 30)
    assert back.uid == st.uid


def test_no_live_points_when_the_live_model_cannot_be_built(tmp_path, monkeypatch):
    """The live model of this run could not be built (e.g. no trace): no live point is
    computed -- not with another run's live model left in the process (or the store)."""
    from nirbeam.core.records import IntegrationKey, IntegrationRecord, IntTimes
    from nirbeam.stream import stream_steps
    from nirbeam.stream.stream_steps import LiveExtractDoFn

    root = str(tmp_path / "cubes.zarr")
    group = f"{EXP}_nrs1"
    monkeypatch.setitem(live._LIVE_MODELS, (root, group), object())  # an earlier run's
    monkeypatch.setattr(stream_steps, "build_live_model", lambda *a, **k: "no trace found")
    computed = []
    monkeypatch.setattr(stream_steps, "live_point_and_bins",
                        lambda *a, **k: computed.append(a) or (None, None))

    class _State:
        v = None

        def read(self):
            return self.v

        def write(self, v):
            self.v = v

    from dataclasses import replace

    meta = replace(_info(Settings.from_dict({}), "NRS1")["meta"], nints=3)
    fn = LiveExtractDoFn(root, Settings.from_dict({}), live_model_nints=2)
    fn.setup()
    state = _State()
    out = []
    for i in (1, 2, 3):
        rec = IntegrationRecord(IntegrationKey(EXP, "NRS1", i), meta, IntTimes(*[6e4] * 6),
                                "rateints", "", rate=np.ones((4, 6), np.float32),
                                err=np.ones((4, 6), np.float32), dq=np.zeros((4, 6), np.uint32))
        out += list(fn.process((group, rec), state=state))
    assert state.v.model == "no trace found"
    assert not computed and not [e for e in out if e[0] == "point"]
