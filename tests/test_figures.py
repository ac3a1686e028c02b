"""Figures in README.md / CHANGELOG.md agree with bench/results/, whose records say where
they came from (source hash, command)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
sys.path.insert(0, str(BENCH))

import figures  # noqa: E402
from _provenance import source_digest  # noqa: E402

RECORDS = sorted((BENCH / "results").glob("*.json"))


def test_every_tagged_figure_matches_its_record():
    problems, n = figures.check()
    assert n >= 40, f"only {n} tagged figures in README.md + CHANGELOG.md"
    assert not problems, "\n".join(problems)


def test_check_sees_a_drifted_figure():
    """The check fails when a figure and its record disagree (text or record changed)."""
    rec = json.loads((BENCH / "results" / "detector1_vs_stcal.json").read_text())
    shown = f"{rec['shapes'][0]['ratio_nirbeam_over_stcal']:.2f}"
    text = f"speed-up **{shown}x**<!--fig detector1_vs_stcal.json shapes.0.ratio_nirbeam_over_stcal-->"
    assert figures.check_text(text, "t", {"detector1_vs_stcal.json": rec}) == ([], 1)
    assert figures.check_text(text.replace(shown, f"{float(shown) + 0.01:.2f}"), "t",
                              {"detector1_vs_stcal.json": rec})[0]
    rec["shapes"][0]["ratio_nirbeam_over_stcal"] = float(shown) + 1.0
    assert figures.check_text(text, "t", {"detector1_vs_stcal.json": rec})[0]
    ranged = ("6.9<!--fig c.json a.*.s min-->-14.1x<!--fig c.json a.*.s max-->")
    recs = {"c.json": {"a": [{"s": 14.12}, {"s": 6.9}, {"s": 8.0}]}}
    assert figures.check_text(ranged, "t", recs) == ([], 2)


@pytest.mark.parametrize("section,where", [
    ("README.md", "## Validation and performance"),
    ("CHANGELOG.md", "### Measured"),
])
def test_rows_citing_a_benchmark_are_tagged(section, where):
    """Every table row / bullet that cites a bench/ script carries at least one tag."""
    text = (REPO / section).read_text()
    body = text[text.index(where):]
    nxt = re.search(r"\n## ", body[len(where):])
    body = body[:len(where) + nxt.start()] if nxt else body
    items = re.split(r"\n(?=\| |- )", body)[1:]  # [0]: the heading and its intro
    untagged = [i.splitlines()[0][:80] for i in items
                if re.search(r"bench/\w+\.py", i) and "<!--fig" not in i]
    assert not untagged, untagged


@pytest.mark.parametrize("path", RECORDS, ids=[p.name for p in RECORDS])
def test_every_record_has_provenance(path):
    prov = json.loads(path.read_text()).get("provenance")
    assert prov, f"{path.name}: no provenance (write it with bench/_provenance.write_result)"
    assert re.fullmatch(r"[0-9a-f]{16}", prov["source_sha256_16"] or ""), prov
    assert prov["command"].startswith("python bench/"), prov["command"]
    script = BENCH / prov["command"].split()[1].removeprefix("bench/")
    assert script.is_file(), f"{path.name}: its command names a missing script {script}"
    assert isinstance(prov["stale"], bool)


def test_bench_scripts_write_through_provenance():
    """A bench script that writes a results file does it through write_result."""
    for script in sorted(BENCH.glob("*.py")):
        src = script.read_text()
        if script.name.startswith("_") or script.name == "figures.py":
            continue
        if "results" in src and ("json.dump" in src or ".write_text(json" in src):
            assert "write_result" in src, f"{script.name} writes JSON without its provenance"


def test_source_digest_is_stable_and_sensitive(tmp_path):
    pkg = tmp_path / "nirbeam"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "sub" / "b.py").write_text("y = 2\n")
    d0 = source_digest(pkg)
    assert d0 == source_digest(pkg) and re.fullmatch(r"[0-9a-f]{16}", d0)
    (pkg / "sub" / "b.py").write_text("y = 3\n")
    assert source_digest(pkg) != d0
