"""A small run through the CLI: progress, log, --set, every plot, plot/report from products."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import zarr

from nirbeam.sim.simulator import simulate
from nirbeam.sinks.diagnostics import CAPTIONS
from nirbeam.stream.cli import EXIT_BAD_INPUT, main

NINTS = 32
KINDS = set(CAPTIONS)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    sim = simulate(d / "sim", preset="prism-sub512", nints=NINTS, seed=4, ints_per_segment=16)
    from nirbeam.stream.cli import write_sim_config

    cfg = write_sim_config(sim)
    out = d / "products"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--config", cfg,
                   "--out", str(out), "--set", "detector1.jump.rejection_threshold=4.5",
                   "--set", "fit.baseline_order=1"])
    assert rc == 0, err.getvalue()
    return {"sim": sim, "out": out, "stderr": err.getvalue(), "group": f"{sim.exposure}_nrs1"}


def test_progress_over_every_stage(run):
    err = run["stderr"]
    assert "[nirbeam] scan: done, 2/2 segments" in err
    assert "[nirbeam] prepare: done, 1/1 exposures" in err
    assert f"[nirbeam] detector1: done, {NINTS}/{NINTS} integrations" in err
    assert f"[nirbeam] spectra: done, {NINTS}/{NINTS} integrations" in err
    assert "[nirbeam] products: done, 1/1 exposures" in err


def test_log_file_and_run_json_show_the_effective_config(run):
    log = (run["out"] / "nirbeam.log").read_text()
    assert "--set overrides: detector1.jump.rejection_threshold=4.5" in log
    assert "effective configuration:" in log and "rejection_threshold = 4.5" in log
    assert "detector1: done" in log  # stage ends go to the log too
    rj = json.loads((run["out"] / "run.json").read_text())
    assert rj["config"]["detector1"]["jump"]["rejection_threshold"] == 4.5
    assert rj["config_input"]["detector1"]["jump"]["rejection_threshold"] == 4.5
    assert rj["config"]["fit"]["per"] > 0  # the config file's values are kept as well
    # the saved parameter file repeats the run's settings exactly
    import tomllib

    from nirbeam.stream.settings import Settings

    saved = tomllib.loads((run["out"] / "effective_config.toml").read_text())
    assert Settings.from_dict(saved) == Settings.from_dict(rj["config_input"])
    assert saved["detector1"]["jump"]["rejection_threshold"] == 4.5


def _check_png(path: Path):
    assert path.exists() and path.stat().st_size > 5000, path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] >= 150 and img.shape[1] >= 300
    assert np.std(img[..., :3]) > 0.02, path


def test_every_plot_renders_from_the_run(run):
    idx = json.loads((run["out"] / "plots" / "index.json").read_text())
    kinds = {e["kind"]: e for e in idx}
    assert set(kinds) == KINDS
    for k, e in kinds.items():
        assert e["file"], (k, e["note"])
        _check_png(run["out"] / e["file"])
    # the white-light residuals are close to white noise on a simulated exposure
    a = kinds["allan"]["extra"]
    assert 0.5 < a["white_rms_over_white_noise_at_largest_bin"] < 2.0
    # the simulated trace does not move: centroid scatter far below a pixel
    assert kinds["trace"]["extra"]["centroid_std_px"] < 0.05


def _digest(out: Path) -> dict:
    skip = {"plots", "nirbeam.log", "report.html"}
    h = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if p.is_file() and rel.parts[0] not in skip:
            h[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return h


def test_plot_from_the_products_alone(run, tmp_path, capsys):
    out = tmp_path / "products"
    shutil.copytree(run["out"], out)
    shutil.rmtree(out / "plots")
    before = _digest(out)
    sim = Path(run["sim"].outdir)
    hidden = sim.with_name("sim-hidden")
    sim.rename(hidden)  # no uncal file anywhere
    try:
        assert main(["plot", str(out)]) == 0
    finally:
        hidden.rename(sim)
    assert _digest(out) == before  # no product rewritten
    assert {p.name.split("_")[0] for p in (out / "plots").glob("*.png")} == KINDS
    assert f"{len(KINDS)} plots in" in capsys.readouterr().out


def test_plot_refuses_a_folder_without_products(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == EXIT_BAD_INPUT
    assert "not a nirbeam output folder" in capsys.readouterr().err


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.imgs, self.text, self.tags = set(), [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a.get("src", ""))

    def handle_data(self, data):
        self.text.append(data)


def _report(run):
    path = run["out"] / "report.html"
    if not path.exists():
        assert main(["report", str(run["out"]), "--no-plots"]) == 0
    return path


def test_report_page_has_every_section_and_plot(run):
    # written by the run itself (finish_run), and again on request
    assert (run["out"] / "report.html").exists()
    assert main(["report", str(run["out"])]) == 0
    html_text = (run["out"] / "report.html").read_text()
    p = _Page()
    p.feed(html_text)
    p.close()
    assert {"summary", "accounting", "fit", "plots", "references", "timings", "config"} <= p.ids
    assert len(p.imgs) == len(KINDS)
    for src in p.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    text = " ".join(p.text)
    assert "processed + deadlettered = NINTS" in text
    assert "Horne" in text and "Fixsen" in text  # literature references
    assert "rejection_threshold = 4.5" in text  # effective configuration
    assert "detector1" in text  # timings table
    assert "<script" not in html_text


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium on this machine")
def test_report_renders_in_headless_chromium(run, tmp_path):
    page = _report(run)
    shot = tmp_path / "report.png"
    base = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}", "--allow-file-access-from-files"]
    env = {**os.environ, "HOME": str(tmp_path)}
    dom = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120, env=env)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Accounting" in dom.stdout and dom.stdout.count("<img") == len(KINDS)
    r = subprocess.run(base + [f"--screenshot={shot}", "--window-size=1100,4000", page.as_uri()],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    img = mpimg.imread(shot)[..., :3]
    assert img.shape[0] >= 3000
    # the embedded plots were decoded and drawn: coloured pixels (viridis, magma, ...)
    sat = img.max(axis=2) - img.min(axis=2)
    assert (sat > 0.3).mean() > 0.01


def test_cf_attributes_and_time_scale(run):
    root = zarr.open_group(str(run["out"] / "cubes.zarr"), mode="r")
    assert root.attrs["Conventions"] == "CF-1.10"
    g = run["group"]
    for stage in ("rateints", "spectra", "lightcurves"):
        grp = root[f"{g}/{stage}"]
        assert grp.attrs["Conventions"] == "CF-1.10", stage
        for name, arr in grp.arrays():
            assert "long_name" in arr.attrs and "units" in arr.attrs, (stage, name)
        t = grp["int_mid_BJD_TDB"]
        assert t.attrs["long_name"] == "integration mid-time, BJD_TDB - 2400000.5"
        assert t.attrs["timescale"] == "TDB" and t.attrs["units"] == "d"
        v = t[:]
        assert np.all((v > 4e4) & (v < 1e5))  # modified BJD, not BJD (2.4e6)
    assert root[f"{g}/rateints/sci"].attrs["units"] == "DN/s"


def test_report_lists_stand_ins_and_escapes_values(tmp_path):
    from nirbeam.sinks.report import render_report

    run = {"nirbeam_version": "0.1.0", "command": "run", "inputs": ["a_uncal.fits"],
           "exposures": [{"exposure": "jw1", "detector": "NRS1", "nints": 3, "processed": 2,
                          "deadlettered": 1, "complete": True, "notes": ["<b>x</b>"],
                          "references": {"MASK": {"standin": "no MASK reference: none"},
                                         "GAIN": {"file": "g.fits", "sha256": "ab12"}}}],
           "timings_s": {"detector1": 1.5}, "config_input": {}}
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "deadletter.jsonl").write_text(json.dumps(
        {"exposure": "jw1", "detector": "NRS1", "integration": 3, "step": "read",
         "reason": "missing segment"}) + "\n")
    page = render_report(str(tmp_path), entries=[])
    p = _Page()
    p.feed(page)
    text = " ".join(p.text)
    assert "no MASK reference: none" in text and "ab12" in text and "g.fits" in text
    assert "missing segment" in text and "Dead letters (1)" in text
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
