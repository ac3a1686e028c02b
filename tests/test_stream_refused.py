"""``nirbeam stream --until-complete`` when every input is refused: it ends (it used to
wait forever: nothing was accepted, or the refused exposure never got a store, so the
completion check never passed) with a message naming each refused file and a non-zero
exit code; run.json says the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import write_uncal

TIMEOUT_S = 150  # the fix ends these streams in ~20 s; without it they never end


def _stream(watch, out, *extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nirbeam.stream.cli", "stream", str(watch), "--out", str(out),
         "--allow-standins", "--until-complete", "--poll", "0.2", "--no-progress", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        pytest.fail(f"nirbeam stream --until-complete still waiting after {TIMEOUT_S} s with "
                    f"every input refused; stderr:\n{stderr[-3000:]}")
    return proc.returncode, stderr


def _sci(nints=2):
    rng = np.random.default_rng(0)
    return rng.integers(1000, 2000, (nints, 3, 8, 16)).astype(np.uint16)


def test_until_complete_ends_when_the_watcher_refuses_every_file(tmp_path):
    """A file that is not FITS and one that is not a time series: both refused by the
    watcher; the stream ends, exit 2, the message names both files and why."""
    watch = tmp_path / "watch"
    watch.mkdir()
    bad = watch / "jw01366004001_04101_00001-seg001_nrs1_uncal.fits"
    bad.write_bytes(b"not a fits file at all " * 200)
    not_tso = watch / "jw01366004001_04101_00002-seg001_nrs1_uncal.fits"
    write_uncal(not_tso, _sci(), header={"EXP_TYPE": "NRS_FIXEDSLIT", "TSOVISIT": False})
    out = tmp_path / "out"
    rc, stderr = _stream(watch, out)
    assert rc == 2, stderr
    assert "every input was refused" in stderr
    for f, why in ((bad, "not a FITS file"), (not_tso, "not a time-series")):
        line = next(ln for ln in stderr.splitlines() if f.name in ln)
        assert why in line, stderr
    s = json.loads((out / "run.json").read_text())["streaming"]
    assert s["complete"] is False
    assert sorted(os.path.basename(r["path"]) for r in s["refused"]) == sorted([bad.name, not_tso.name])


def test_until_complete_ends_when_every_exposure_is_refused_by_the_plan(tmp_path):
    """A time series the watcher accepts but the plan cannot take (EXP_TYPE NRS_IFU with
    TSOVISIT, no slice map: the IFU plan raises): every integration is dead-lettered
    without a store; the stream ends with a non-zero exit naming the file and why."""
    watch = tmp_path / "watch"
    watch.mkdir()
    f = watch / "jw01366004001_04101_00003-seg001_nrs1_uncal.fits"
    write_uncal(f, _sci(3), header={"EXP_TYPE": "NRS_IFU", "TSOVISIT": True})
    out = tmp_path / "out"
    rc, stderr = _stream(watch, out)
    assert rc == 2, stderr
    assert "every input was refused" in stderr
    line = next(ln for ln in stderr.splitlines() if f.name in ln and "refused" in ln)
    assert "IFU plan" in line, stderr
    s = json.loads((out / "run.json").read_text())["streaming"]
    assert [os.path.basename(r["path"]) for r in s["refused"]] == [f.name]
