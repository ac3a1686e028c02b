"""A catalogue of bad input and faults, end to end through ``nirbeam``'s command line.

Every kind asserts the exit code, the message (it names the thing and what was expected),
that no traceback is printed, and the accounting: a run that ends says in run.json what
happened to every integration, its summary agrees with deadletter.jsonl, and the exit code
is 3 exactly when the products are incomplete. Exit codes: 0 ok, 2 bad input or usage,
3 incomplete products, 4 operating-system error.

Kept fast: one tiny simulated exposure (4 integrations in 2 segments) shared by every case,
a config without plots or fits, and most kinds refused before any pixel is processed.
"""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zarr
from astropy.io import fits

from nirbeam.sim.simulator import simulate
from nirbeam.stream.cli import main

NINTS = 4
GROUP_SUFFIX = "_nrs1"
FAST = """
[products]
plots = false
fit = false
x1dints_fits = false
parquet = false
"""


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    d = tmp_path_factory.mktemp("catsim")
    res = simulate(d / "sim", preset="prism-sub512", nints=NINTS, seed=5, ints_per_segment=2)
    (d / "fast.toml").write_text(FAST)
    return res


@pytest.fixture(scope="module")
def base_out(sim, tmp_path_factory):
    """A complete run (the reference for resumes)."""
    out = tmp_path_factory.mktemp("catbase") / "out"
    assert main(["run", str(sim.outdir), "--refs", str(sim.refs_dir), "--out", str(out),
                 "--config", str(Path(sim.outdir).parent / "fast.toml"), "--no-progress"]) == 0
    return out


# ---------------------------------------------------------------------------------------
# Helpers


@dataclass
class Ctx:
    """A private copy of the exposure (inputs, refs) and an output folder for one case."""

    root: Path
    sim: object

    @property
    def inputs(self) -> Path:
        return self.root / "in"

    @property
    def refs(self) -> Path:
        return self.root / "in" / "refs"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def config(self) -> Path:
        return self.root / "fast.toml"

    def segs(self) -> list[Path]:
        return sorted(self.inputs.glob("*_uncal.fits"))

    def ref(self, kind: str) -> Path:
        (p,) = self.refs.glob(f"jwst_nirspec_{kind}_*.fits")
        return p

    def run_args(self, *extra, refs=True) -> list[str]:
        a = ["run", str(self.inputs), "--out", str(self.out), "--config", str(self.config),
             "--no-progress"]
        if refs:
            a += ["--refs", str(self.refs)]
        return a + list(extra)


@pytest.fixture
def ctx(sim, tmp_path):
    shutil.copytree(sim.outdir, tmp_path / "in", ignore=shutil.ignore_patterns("*truth*"))
    (tmp_path / "fast.toml").write_text(FAST)
    return Ctx(tmp_path, sim)


def _set_header(path, **cards):
    with fits.open(path, mode="update") as h:
        for k, v in cards.items():
            h[0].header[k] = v


def _int_times(path, fn):
    with fits.open(path, mode="update") as h:
        fn(h["INT_TIMES"].data)


def _config(ctx, text):
    ctx.config.write_text(FAST + text)


def _run_json(ctx) -> dict:
    return json.loads((ctx.out / "run.json").read_text())


def _deadletters(ctx) -> list[dict]:
    return [json.loads(x) for x in (ctx.out / "deadletter.jsonl").read_text().splitlines()]


def _accounting_agrees(ctx, rc) -> dict:
    """run.json, deadletter.jsonl and the exit code tell the same story."""
    rj = _run_json(ctx)
    lines = _deadletters(ctx)
    assert rj["deadletters"] == len(lines)
    assert sum(e["deadlettered"] + e["extract_failed"] for e in rj["exposures"]) == len(lines)
    for e in rj["exposures"]:
        assert e["processed"] + e["deadlettered"] == e["nints"]
    assert rj["exit_code"] == rc == (0 if rj["products_complete"] else 3)
    return rj


def _group(ctx):
    return f"{ctx.sim.exposure}{GROUP_SUFFIX}"


# ---------------------------------------------------------------------------------------
# Case setups: each mutates ctx and returns the argv. They are listed in CATALOGUE below.


def usage_unknown_option(ctx):
    return ctx.run_args("--refz", "x")


def usage_abbreviated_option(ctx):
    return ctx.run_args("--worker", "2")


def usage_config_file_typo(ctx):
    return ctx.run_args("--config-file", "x.toml")


def usage_unknown_beam_option(ctx):
    return [*ctx.run_args(), "--", "--direct_num_wrkers=2"]


def usage_unknown_beam_prefixed(ctx):
    return ctx.run_args("--beam-no_such_option=1")


def usage_beam_options_on_plot(ctx):
    return ["plot", str(ctx.out), "--", "--direct_num_workers=2"]


def usage_simulate_zero_nints(ctx):
    return ["simulate", str(ctx.root / "s"), "--nints", "0"]


def usage_simulate_unknown_preset(ctx):
    return ["simulate", str(ctx.root / "s"), "--preset", "nope"]


def usage_fit_not_a_table(ctx):
    ctx.config.write_text("[fit]\nper = 1.0\n")
    return ["fit", str(ctx.config)]


def usage_fit_missing_table(ctx):
    return ["fit", str(ctx.root / "missing.ecsv")]


def usage_no_refs_without_opt_in(ctx):
    return ctx.run_args(refs=False)


def usage_stream_no_refs_without_opt_in(ctx):
    return ["stream", str(ctx.inputs), "--out", str(ctx.out), "--replay-speed", "inf"]


def config_nan_sigma(ctx):
    _config(ctx, "[outliers]\nn_sigma = nan\n")
    return ctx.run_args()


def config_negative_profile_nints(ctx):
    _config(ctx, "[extract]\nprofile_nints = -3\n")
    return ctx.run_args()


def config_zero_profile_nints(ctx):
    _config(ctx, "[extract]\nprofile_nints = 0\n")
    return ctx.run_args()


def config_wmin_above_wmax(ctx):
    _config(ctx, "[lightcurve]\nwmin = 4.0\nwmax = 2.0\n")
    return ctx.run_args()


def config_descending_edges(ctx):
    _config(ctx, '[lightcurve]\nbinning = "edges"\nedges = [3.0, 2.0, 1.0]\n')
    return ctx.run_args()


def config_missing_wavelength_map(ctx):
    _config(ctx, f'[extract]\nwavelength_map = "{ctx.root / "nope.fits"}"\n')
    return ctx.run_args()


def config_negative_jump_threshold(ctx):
    _config(ctx, "[detector1.jump]\nrejection_threshold = -4.0\n")
    return ctx.run_args()


def config_negative_sigma_clip(ctx):
    _config(ctx, "[extract]\nsigma_clip = -1.0\n")
    return ctx.run_args()


def config_negative_trace_deg(ctx):
    _config(ctx, "[extract]\ntrace_deg = -1\n")
    return ctx.run_args()


def config_infinite_half_width(ctx):
    _config(ctx, "[extract]\nhalf_width = inf\n")
    return ctx.run_args()


def config_unknown_key(ctx):
    _config(ctx, "[extract]\nhalfwidth = 3.0\n")
    return ctx.run_args()


def config_not_toml(ctx):
    ctx.config.write_text("[extract\nhalf_width = ")
    return ctx.run_args()


def config_missing_file(ctx):
    ctx.config.unlink()
    return ctx.run_args()


def input_truncated(ctx):
    p = ctx.segs()[1]
    p.write_bytes(p.read_bytes()[:-20000])
    return ctx.run_args()


def input_not_fits(ctx):
    ctx.segs()[0].write_bytes(b"hello, not a FITS file" * 200)
    return ctx.run_args()


def input_not_tso(ctx):
    for p in ctx.segs():
        _set_header(p, EXP_TYPE="NRS_AUTOWAVE", TSOVISIT=False)  # no mode: NRS_IFU is one now
    return ctx.run_args()


def input_float_sci(ctx):
    p = ctx.segs()[0]
    with fits.open(p) as h:
        h["SCI"].data = h["SCI"].data.astype(np.float32)
        h.writeto(p, overwrite=True)
    return ctx.run_args()


def input_overlapping_segments(ctx):
    a, b = ctx.segs()
    _set_header(b, INTSTART=2, INTEND=3)
    return ctx.run_args()


def input_missing_path(ctx):
    return ["run", str(ctx.root / "nope"), "--refs", str(ctx.refs), "--out", str(ctx.out)]


def input_output_not_writable(ctx):
    (ctx.root / "afile").write_text("x")
    return ["run", str(ctx.inputs), "--refs", str(ctx.refs), "--out", str(ctx.root / "afile" / "o"),
            "--no-progress"]


def int_times_duplicate_number(ctx):
    def dup(t):
        t["integration_number"][1] = t["integration_number"][0]  # rows 1 and 2 both say 1
    _int_times(ctx.segs()[0], dup)
    return ctx.run_args()


def int_times_cadence_vs_tframe(ctx):
    for p in ctx.segs():
        with fits.open(p) as h:
            tf = h[0].header["TFRAME"]
        _set_header(p, TFRAME=tf * 0.5, TGROUP=tf * 0.5)
    return ctx.run_args()


def int_times_nan(ctx):
    def nan(t):
        t["int_mid_BJD_TDB"][1] = np.nan  # integration 2
    _int_times(ctx.segs()[0], nan)
    return ctx.run_args()


def int_times_not_monotonic(ctx):
    def swap(t):  # integrations 3 and 4 trade times
        for c in t.columns.names:
            if c != "integration_number":
                t[c][[2, 3]] = t[c][[3, 2]]
    _int_times(ctx.segs()[1], swap)
    return ctx.run_args()


def int_times_ten_day_jump(ctx):
    def jump(t):
        for c in t.columns.names:
            if c != "integration_number":
                t[c][3] += 10.0  # integration 4
    _int_times(ctx.segs()[1], jump)
    return ctx.run_args()


def ref_linearity_one_coefficient(ctx):
    p = ctx.ref("linearity")
    with fits.open(p) as h:
        h["COEFFS"].data = np.ascontiguousarray(h["COEFFS"].data[:1])
        h.writeto(p, overwrite=True)
    return ctx.run_args()


def ref_linearity_zero_linear_term(ctx):
    p = ctx.ref("linearity")
    with fits.open(p, mode="update") as h:
        h["COEFFS"].data[1] = 0.0
    return ctx.run_args()


def ref_relabelled_readnoise(ctx):
    # a GAIN file relabelled REFTYPE=READNOISE under a neutral name, the real one removed
    g = ctx.ref("gain")
    ctx.ref("readnoise").unlink()
    dst = ctx.refs / "my_reference_0001.fits"
    shutil.copy(g, dst)
    _set_header(dst, REFTYPE="READNOISE")
    return ctx.run_args()


def ref_relabelled_by_name(ctx):
    _set_header(ctx.ref("gain"), REFTYPE="READNOISE")
    return ctx.run_args()


def ref_datamodl_mismatch(ctx):
    _set_header(ctx.ref("gain"), DATAMODL="SuperBiasModel")
    return ctx.run_args()


def ref_two_gain_files(ctx):
    g = ctx.ref("gain")
    dst = ctx.refs / "sub" / "jwst_nirspec_gain_0002.fits"
    dst.parent.mkdir()
    shutil.copy(g, dst)
    with fits.open(dst, mode="update") as h:
        h["SCI"].data *= 1.1
    return ctx.run_args()


def ref_missing_type(ctx):
    ctx.ref("gain").unlink()
    return ctx.run_args()


def ref_missing_detector(ctx):
    _set_header(ctx.ref("superbias"), DETECTOR="NRS2")
    return ctx.run_args()


def ref_truncated(ctx):
    p = ctx.ref("saturation")
    p.write_bytes(p.read_bytes()[:-30000])
    return ctx.run_args()


def ref_nan_gain(ctx):
    with fits.open(ctx.ref("gain"), mode="update") as h:
        h["SCI"].data[:] = np.nan
    return ctx.run_args()


def ref_useafter_after_expstart(ctx):
    for k in ("gain", "readnoise"):
        _set_header(ctx.ref(k), USEAFTER="2099-01-01T00:00:00")
    return ctx.run_args()


def ref_other_readpatt(ctx):
    _set_header(ctx.ref("gain"), READPATT="NRSIRS2")
    return ctx.run_args()


def ref_dark_shorter_than_exposure(ctx):
    p = ctx.ref("dark")
    with fits.open(p) as h:
        for e in ("SCI", "ERR"):
            h[e].data = np.ascontiguousarray(h[e].data[:2])
        h.writeto(p, overwrite=True)
    return ctx.run_args()


def ref_wrong_extension(ctx):
    p = ctx.ref("linearity")
    with fits.open(p) as h:
        fits.HDUList([h[0].copy(), fits.ImageHDU(h["COEFFS"].data[1], name="SCI")]).writeto(
            p, overwrite=True)
    return ctx.run_args()


def ref_folder_missing(ctx):
    shutil.rmtree(ctx.refs)
    return ctx.run_args()


def fault_all_saturated(ctx):
    for p in ctx.segs():
        with fits.open(p, mode="update") as h:
            h["SCI"].data[:] = 65535
    return ctx.run_args()


def fault_missing_segment(ctx):
    ctx.segs()[1].unlink()
    return ctx.run_args()


@dataclass(frozen=True)
class Case:
    setup: Callable
    rc: int
    message: str  # a substring of stderr (case-sensitive)
    check: Callable | None = None


def _no_run_json(ctx):
    assert not (ctx.out / "run.json").exists()


def _flagged(*ints):
    def check(ctx):
        rj = _accounting_agrees(ctx, 0)
        (e,) = rj["exposures"]
        assert sorted(int(i) for i in e["bad_int_times"]) == sorted(ints)
        dq = zarr.open_group(str(ctx.out / "cubes.zarr"), mode="r")[_group(ctx)]["rateints"]["dq"][:]
        for i in range(1, NINTS + 1):
            assert bool(np.all(dq[i - 1] & 1)) == (i in ints), i
        t = np.asarray(zarr.open_group(str(ctx.out / "cubes.zarr"), mode="r")[_group(ctx)]
                       ["rateints"]["int_mid_BJD_TDB"][:])
        assert np.all(np.isfinite(t)) and np.all(np.diff(t) > 0)  # interpolated, in order
    return check


def _incomplete(n_dead=None, n_extract=None):
    def check(ctx):
        rj = _accounting_agrees(ctx, 3)
        (e,) = rj["exposures"]
        if n_dead is not None:
            assert e["deadlettered"] == n_dead
        if n_extract is not None:
            assert e["extract_failed"] == n_extract
        assert not e["products_complete"]
    return check


CATALOGUE = {
    "unknown option": Case(usage_unknown_option, 2, "did you mean --refs?"),
    "abbreviated option": Case(usage_abbreviated_option, 2, "did you mean --workers?"),
    "config-file typo": Case(usage_config_file_typo, 2, "did you mean --config?"),
    "unknown Beam option": Case(usage_unknown_beam_option, 2, "did you mean --direct_num_workers?"),
    "unknown --beam- option": Case(usage_unknown_beam_prefixed, 2, "unknown Beam option '--no_such_option'"),
    "Beam options on plot": Case(usage_beam_options_on_plot, 2, "takes no Beam options"),
    "simulate --nints 0": Case(usage_simulate_zero_nints, 2, "--nints 0: expected >= 1"),
    "simulate unknown preset": Case(usage_simulate_unknown_preset, 2, "--preset 'nope'"),
    "fit a config file": Case(usage_fit_not_a_table, 2, "not a light-curve table"),
    "fit a missing table": Case(usage_fit_missing_table, 2, "no such light-curve table"),
    "run without refs": Case(usage_no_refs_without_opt_in, 2, "--allow-standins", _no_run_json),
    "stream without refs": Case(usage_stream_no_refs_without_opt_in, 2, "--allow-standins"),
    "config n_sigma nan": Case(config_nan_sigma, 2, "outliers.n_sigma = nan: expected a finite number", _no_run_json),
    "config profile_nints -3": Case(config_negative_profile_nints, 2, "extract.profile_nints = -3"),
    "config profile_nints 0": Case(config_zero_profile_nints, 2, "extract.profile_nints = 0"),
    "config wmin > wmax": Case(config_wmin_above_wmax, 2, "lightcurve.wmax = 2.0: expected > lightcurve.wmin"),
    "config descending edges": Case(config_descending_edges, 2, "strictly increasing bin edges"),
    "config missing wavelength_map": Case(config_missing_wavelength_map, 2, "extract.wavelength_map"),
    "config negative jump threshold": Case(config_negative_jump_threshold, 2, "detector1.jump.rejection_threshold = -4.0"),
    "config negative sigma_clip": Case(config_negative_sigma_clip, 2, "extract.sigma_clip = -1.0"),
    "config trace_deg -1": Case(config_negative_trace_deg, 2, "extract.trace_deg = -1"),
    "config half_width inf": Case(config_infinite_half_width, 2, "extract.half_width = inf"),
    "config unknown key": Case(config_unknown_key, 2, "unknown key(s) ['halfwidth']"),
    "config not TOML": Case(config_not_toml, 2, "not valid TOML"),
    "config missing": Case(config_missing_file, 2, "config file does not exist"),
    "input truncated": Case(input_truncated, 2, "truncated", _no_run_json),
    "input not FITS": Case(input_not_fits, 2, "not a FITS file"),
    "input not TSO": Case(input_not_tso, 2, "not a time-series"),
    "input float SCI": Case(input_float_sci, 2, "expected uint16"),
    "input overlapping segments": Case(input_overlapping_segments, 2, "overlap"),
    "input missing path": Case(input_missing_path, 2, "no such file or folder"),
    "output not writable": Case(input_output_not_writable, 2, "output folder is not writable"),
    "INT_TIMES duplicated number": Case(int_times_duplicate_number, 2, "integration_number 1 appears twice"),
    "INT_TIMES vs TFRAME": Case(int_times_cadence_vs_tframe, 2, "give an integration cycle of"),
    "INT_TIMES NaN": Case(int_times_nan, 0, "bad INT_TIMES row flagged DO_NOT_USE", _flagged(2)),
    "INT_TIMES not monotonic": Case(int_times_not_monotonic, 0, "bad INT_TIMES row", _flagged(3, 4)),
    "INT_TIMES 10-day jump": Case(int_times_ten_day_jump, 0, "bad INT_TIMES row", _flagged(4)),
    "LINEARITY one coefficient": Case(ref_linearity_one_coefficient, 2, "needs at least 2", _no_run_json),
    "LINEARITY zero linear term": Case(ref_linearity_zero_linear_term, 2, "median linear coefficient 0"),
    "GAIN relabelled READNOISE": Case(ref_relabelled_readnoise, 2, "is not a plausible NIRSpec readnoise"),
    "REFTYPE against file name": Case(ref_relabelled_by_name, 2, "named as a GAIN reference"),
    "DATAMODL mismatch": Case(ref_datamodl_mismatch, 2, "DATAMODL='SuperBiasModel'"),
    "two GAIN files": Case(ref_two_gain_files, 2, "two GAIN references apply equally"),
    "missing GAIN with --refs": Case(ref_missing_type, 2, "no GAIN reference applies"),
    "missing detector": Case(ref_missing_detector, 2, "no SUPERBIAS reference applies to NIRSPEC NRS1"),
    "reference truncated": Case(ref_truncated, 2, "reference file is truncated"),
    "NaN gain": Case(ref_nan_gain, 2, "mostly unusable", _no_run_json),
    "USEAFTER after EXPSTART": Case(ref_useafter_after_expstart, 2, "USEAFTER later than the exposure start"),
    "GAIN of another READPATT": Case(ref_other_readpatt, 2, "no GAIN reference applies"),
    "DARK shorter than exposure": Case(ref_dark_shorter_than_exposure, 2, "dark_current step skips"),
    "REFTYPE without its extension": Case(ref_wrong_extension, 2, "has no COEFFS extension"),
    "reference folder missing": Case(ref_folder_missing, 2, "reference folder does not exist"),
    "all integrations saturated": Case(fault_all_saturated, 3, "products are incomplete (exit code 3)",
                                       _incomplete(n_dead=0, n_extract=NINTS)),
    "missing segment": Case(fault_missing_segment, 3, "dead-lettered", _incomplete(n_dead=2)),
}


@pytest.mark.parametrize("kind", list(CATALOGUE))
def test_catalogue(kind, ctx, capsys):
    case = CATALOGUE[kind]
    argv = case.setup(ctx)
    rc = main(argv)
    cap = capsys.readouterr()
    err = cap.err
    assert "Traceback" not in err, err
    assert rc == case.rc, (rc, err)
    assert case.message in err + cap.out, err + cap.out
    if case.check:
        case.check(ctx)


# ---------------------------------------------------------------------------------------
# Kinds that need an earlier run or an injected fault


def _copy_base(base_out, ctx):
    shutil.copytree(base_out, ctx.out)


def test_resume_refused_when_references_change(base_out, ctx, capsys):
    """Issue 20.1: rates made with files are not reused for a stand-in run, and back."""
    _copy_base(base_out, ctx)
    before = (ctx.out / "run.json").read_text()
    rc = main(ctx.run_args("--allow-standins", refs=False))
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "reference GAIN: sha256" in err and "stand-in" in err and "--overwrite" in err
    assert (ctx.out / "run.json").read_text() == before  # provenance not rewritten
    g = zarr.open_group(str(ctx.out / "cubes.zarr"), mode="r")[_group(ctx)]
    assert "sha256" in g.attrs["references"]["GAIN"]


def test_resume_refused_when_input_content_changes(base_out, ctx, capsys):
    """Issue 20.2: same file names, other content."""
    _copy_base(base_out, ctx)
    with fits.open(ctx.segs()[1], mode="update") as h:
        h["SCI"].data[0, :, 10:20, 100:200] += 50
    rc = main(ctx.run_args())
    err = capsys.readouterr().err
    assert rc == 2 and "content changed" in err and ctx.segs()[1].name in err


def test_resume_refused_when_rate_settings_change(base_out, ctx, capsys):
    _copy_base(base_out, ctx)
    _config(ctx, "[detector1.jump]\nrejection_threshold = 5.0\n")
    rc = main(ctx.run_args())
    err = capsys.readouterr().err
    assert rc == 2 and "setting detector1.jump.rejection_threshold: 4.0 -> 5.0" in err


def test_resume_refused_when_version_changes(base_out, ctx, capsys, monkeypatch):
    import nirbeam.stream.resume as pl  # the resume key's module (pipeline re-exports it)

    _copy_base(base_out, ctx)
    monkeypatch.setattr(pl, "__version__", "999.0")
    rc = main(ctx.run_args())
    err = capsys.readouterr().err
    assert rc == 2 and "nirbeam version" in err and "-> 999.0" in err


def test_overwrite_recomputes_and_identical_rerun_resumes(base_out, ctx, capsys):
    _copy_base(base_out, ctx)
    assert main(ctx.run_args()) == 0  # same everything: all skipped, exit 0
    rj = _accounting_agrees(ctx, 0)
    assert rj["exposures"][0]["skipped_complete"] == NINTS
    rc = main(ctx.run_args("--allow-standins", "--overwrite", refs=False))
    assert rc == 0, capsys.readouterr().err
    rj = _accounting_agrees(ctx, 0)
    e = rj["exposures"][0]
    assert e["recomputed"] and e["skipped_complete"] == 0 and "GAIN" in e["standins"]
    g = zarr.open_group(str(ctx.out / "cubes.zarr"), mode="r")[_group(ctx)]
    assert "standin" in g.attrs["references"]["GAIN"]
    assert "stand-ins used for" in capsys.readouterr().err


def test_dead_letter_exits_3_and_gaps_read_as_missing(ctx, capsys, monkeypatch):
    """Issue 20.7 and 20.9: a dead letter makes exit code 3; its region reads NaN / DO_NOT_USE
    through plain zarr; a rerun without the fault completes with exit 0."""
    import nirbeam.transforms.detector1 as d1

    real = d1.calibrate_record

    def flaky(rec, *a, **k):
        if rec.key.integration == 2:
            raise RuntimeError("injected failure")
        return real(rec, *a, **k)

    monkeypatch.setattr(d1, "calibrate_record", flaky)
    assert main(ctx.run_args()) == 3
    out = capsys.readouterr()
    assert "1 dead letters in deadletter.jsonl" in out.out
    _incomplete(n_dead=1)(ctx)
    g = zarr.open_group(str(ctx.out / "cubes.zarr"), mode="r")[_group(ctx)]
    assert np.all(np.isnan(g["rateints"]["sci"][1])) and np.all(g["rateints"]["dq"][1] == 1)
    assert np.all(np.isfinite(g["rateints"]["sci"][0][g["rateints"]["dq"][0] & 1 == 0]))
    assert np.all(np.isnan(g["spectra"]["flux"][1])) and np.all(g["spectra"]["dq"][1] & 1)
    monkeypatch.setattr(d1, "calibrate_record", real)
    assert main(ctx.run_args()) == 0
    _accounting_agrees(ctx, 0)


@pytest.mark.parametrize("where", ["driver: tables.write_table", "Beam stage: zarr_store.write_block"])
def test_full_disk_exits_4_and_rerun_resumes(where, ctx, capsys, monkeypatch):
    """Issue 20.8: ENOSPC while the driver writes products, or inside a Beam stage (the
    spectra blocks): a clean message, exit 4, no traceback; the rerun completes."""
    import nirbeam.sinks.tables as tables
    import nirbeam.sinks.zarr_store as zs

    mod, name = (tables, "write_table") if where.startswith("driver") else (zs, "write_block")
    real = getattr(mod, name)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(ctx.out))

    monkeypatch.setattr(mod, name, full)
    rc = main(ctx.run_args())
    err = capsys.readouterr().err
    assert rc == 4 and "Traceback" not in err, err
    assert "No space left on device" in err and "rerun the same command" in err
    monkeypatch.setattr(mod, name, real)
    assert main(ctx.run_args()) == 0
    rj = _accounting_agrees(ctx, 0)
    assert rj["exposures"][0]["skipped_complete"] == NINTS
