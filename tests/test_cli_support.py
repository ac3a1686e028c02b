"""CLI plumbing: --version, logging levels, the progress display, config TOML and --set."""

from __future__ import annotations

import io
import logging
import threading
import tomllib

import pytest

from nirbeam import __version__
from nirbeam.stream.cli import EXIT_BAD_INPUT, build_parser, main
from nirbeam.stream.config import ConfigError
from nirbeam.stream.config_cli import apply_overrides, defaults_toml, parse_override
from nirbeam.stream.progress import Progress, console_level, format_eta
from nirbeam.stream.settings import Settings


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"nirbeam {__version__}"


def test_version_in_one_place():
    """pyproject takes the version from nirbeam.__version__ (dynamic), not a second copy."""
    from importlib.metadata import version
    from pathlib import Path

    proj = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert "version" not in proj and "version" in proj["dynamic"]
    assert version("nirbeam") == __version__
    assert proj["license"] == "BSD-3-Clause"
    assert (Path(__file__).parents[1] / "LICENSE").read_text().startswith("BSD 3-Clause License")


def test_log_flags_before_or_after_the_command():
    ap = build_parser()
    for argv in (["--log-level", "debug", "plot", "x"], ["plot", "x", "--log-level", "DEBUG"]):
        a = ap.parse_args(argv)
        assert console_level(a.log_level, a.verbose, a.quiet) == logging.DEBUG
    a = ap.parse_args(["plot", "x", "-q"])
    assert console_level(a.log_level, a.verbose, a.quiet) == logging.ERROR
    a = ap.parse_args(["-v", "plot", "x"])
    assert console_level(a.log_level, a.verbose, a.quiet) == logging.INFO
    a = ap.parse_args(["plot", "x"])
    assert console_level(a.log_level, a.verbose, a.quiet) == logging.WARNING
    from nirbeam.stream.argv import UsageError  # the strict parser: exit 2 through main()

    with pytest.raises(UsageError, match="--log-level"):
        ap.parse_args(["--log-level", "LOUD", "plot", "x"])


def test_plain_progress_lines_have_counts_rate_and_eta():
    buf = io.StringIO()
    p = Progress(stream=buf, tty=False, interval=0.0)
    with p.stage("detector1", total=4) as st:
        for _ in range(4):
            st.advance()
    lines = buf.getvalue().splitlines()
    assert lines[0] == "[nirbeam] detector1: 0/4 integrations (0%)"
    assert "2/4 integrations (50%)" in lines[2] and "integrations/s, ETA 0:00:0" in lines[2]
    assert lines[-1].startswith("[nirbeam] detector1: done, 4/4 integrations in ")


def test_polled_stage_follows_the_callable():
    buf = io.StringIO()
    p = Progress(stream=buf, tty=False, interval=0.0, poll_interval=0.01)
    n = {"v": 0}
    ev = threading.Event()

    def poll():
        n["v"] = min(n["v"] + 1, 5)
        if n["v"] == 5:
            ev.set()
        return n["v"]

    st = p.stage("spectra", total=5, poll=poll)
    assert ev.wait(5)
    st.close()
    out = buf.getvalue()
    assert "5/5 integrations (100%)" in out and "done, 5/5" in out


def test_tty_progress_draws_a_bar():
    buf = io.StringIO()
    with Progress(stream=buf, tty=True).stage("detector1", total=10) as st:
        st.set(10)
    out = buf.getvalue()
    assert "nirbeam detector1" in out and "10/10" in out and "\r" in out


def test_disabled_progress_prints_nothing_but_logs(caplog):
    buf = io.StringIO()
    with caplog.at_level(logging.INFO, logger="nirbeam.progress"):
        with Progress(enabled=False, stream=buf).stage("scan", total=2, unit="segments") as st:
            st.advance(2)
    assert buf.getvalue() == ""
    assert any("scan: done, 2/2 segments" in r.getMessage() for r in caplog.records)


def test_format_eta():
    assert format_eta(3725) == "1:02:05"
    assert format_eta(None) == "?" and format_eta(float("inf")) == "?"


def test_defaults_toml_round_trips_and_covers_every_key():
    text = defaults_toml()
    data = tomllib.loads(text)
    assert Settings.from_dict(data) == Settings()
    # every field of every section appears, set or commented out (unset defaults)
    import dataclasses

    def walk(obj, prefix):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if dataclasses.is_dataclass(v):
                yield from walk(v, f"{prefix}.{f.name}" if prefix else f.name)
            else:
                yield prefix, f.name, v

    for section, key, value in walk(Settings(), ""):
        assert f"[{section}]" in text, section
        if value is None:
            assert f"# {key} = (unset" in text, (section, key)
        else:
            d = data
            for part in section.split("."):
                d = d[part]
            assert key in d, (section, key)
    # comments come from the numpydoc Attributes of the classes
    assert "# ({'median', 'fft', 'nsclean'}) Noise model" in text


def test_config_defaults_command(capsys):
    assert main(["config", "--defaults"]) == 0
    assert Settings.from_dict(tomllib.loads(capsys.readouterr().out)) == Settings()


def test_parse_override_values():
    assert parse_override("detector1.jump.rejection_threshold=5") == (
        ["detector1", "jump", "rejection_threshold"], 5)
    assert parse_override("flicker.method=fft")[1] == "fft"  # bare word: a string
    assert parse_override('flicker.method="fft"')[1] == "fft"
    assert parse_override("extract.background_region=[8.0, 15.0]")[1] == [8.0, 15.0]
    assert parse_override("products.plots=false")[1] is False
    for bad in ("detector1", "=5", "jump=5"):
        with pytest.raises(ConfigError, match="--set"):
            parse_override(bad)


def test_apply_overrides_merges_and_checks():
    cfg = {"detector1": {"jump": {"rejection_threshold": 6.0}}, "fit": {"per": 3.0}}
    out = apply_overrides(cfg, ["detector1.jump.rejection_threshold=5",
                                "detector1.jump.minimum_groups=4", "fit.rp=0.12"])
    s = Settings.from_dict(out)
    assert s.detector1.jump.rejection_threshold == 5.0
    assert s.detector1.jump.minimum_groups == 4
    assert s.fit.per == 3.0 and s.fit.rp == 0.12
    assert cfg["detector1"]["jump"]["rejection_threshold"] == 6.0  # input not modified
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides({}, ["detector1.jump.nope=1"])
    with pytest.raises(ConfigError, match="expected an integer"):
        apply_overrides({}, ["detector1.jump.minimum_groups=many"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({}, ["fit.per=1", "fit.per.x=2"])


def test_bad_set_exits_2(tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["run", str(tmp_path), "--out", str(out), "--set", "detector1.jump.nope=1"]
    assert main(argv) == EXIT_BAD_INPUT
    assert "detector1.jump" in capsys.readouterr().err
    assert not out.exists()  # refused before anything was written: no folder, no log
    out.mkdir()  # an existing OUTDIR (a rerun): the refusal is logged there
    assert main(argv) == EXIT_BAD_INPUT
    log = (out / "nirbeam.log").read_text()
    assert "bad input" in log and "detector1.jump.nope=1" in log


def test_missing_extra_names_it(monkeypatch):
    import sys

    from nirbeam._extras import MissingExtraError, require

    monkeypatch.setitem(sys.modules, "batman", None)  # import batman now raises ImportError
    with pytest.raises(MissingExtraError, match=r'pip install "nirbeam\[fit\]"'):
        require("batman")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from nirbeam.sinks import plots

    with pytest.raises(MissingExtraError, match=r"nirbeam\[plots\]"):
        plots.plot_white_light([1.0, 2.0], [1.0, 1.0], "/nonexistent/x.png")


def test_jwst_steps_options_become_set_overrides(capsys):
    from nirbeam.stream.argv import UsageError, jwst_steps_to_set

    argv = ["run", "in", "--steps.jump.rejection_threshold=5", "--steps.ramp_fit.weighting",
            '"unweighted"', "--steps.clean_flicker_noise.skip=true", "--out", "o"]
    assert jwst_steps_to_set(argv) == [
        "run", "in", "--set", "detector1.jump.rejection_threshold=5",
        "--set", 'detector1.ramp_fit.weighting="unweighted"',
        "--set", "flicker.enabled=false", "--out", "o"]
    with pytest.raises(UsageError, match="no jwst step 'jumps'.*jump"):
        jwst_steps_to_set(["--steps.jumps.rejection_threshold=5"])
    with pytest.raises(UsageError, match="skip takes true or false"):
        jwst_steps_to_set(["--steps.jump.skip=maybe"])
    # through the CLI: the effective setting is what jwst's option says
    assert main(["config", "--steps.jump.rejection_threshold=5.5"]) == 0
    assert "rejection_threshold = 5.5" in capsys.readouterr().out
    assert main(["config", "--steps.jump.nope=1"]) == EXIT_BAD_INPUT
    assert "detector1.jump" in capsys.readouterr().err
