"""Memory held when detector1 starts on an IRS2 record in ``nirbeam stream``'s record
chain: the stream's chain (the integration read inside the detector1 step and handed over,
:func:`nirbeam.stream.stream_complete.record_functions`) against the chain before it (a
read step emitting the record, then ``Calibrate`` on the element: the runner holds the raw
ramp through detector1).

One 20-group full-frame IRS2 integration (raw layout 20 x 3200 x 2048 uint16 = 262 MB)
through each chain on Beam (in process), with the file read, references and banded
detector1 replaced by stand-ins (``tests/test_stream_irs2_memory.py``'s); the figure is
tracemalloc's traced memory at the moment detector1 is called (numpy arrays included), and
whether the raw ramp is still alive then.

Run: ``PYTHONPATH=. .venv/bin/python bench/stream_irs2_ramp_memory.py [--ngroups 20]``;
writes ``bench/results/stream_irs2_ramp_memory.json`` (key ``traced_mib.<chain>``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import REPO, provenance, write_result  # noqa: E402  (bench/ on sys.path)

sys.path.insert(0, str(REPO))
RESULTS = Path(__file__).resolve().parent / "results" / "stream_irs2_ramp_memory.json"


def before_functions(cfg):
    """The record chain as it was: the read step emits the record (raw ramp included)."""
    from nirbeam.stream.rate_steps import Calibrate
    from nirbeam.stream.stream_complete import ReadOrLoad, unless_rateints

    return (ReadOrLoad(cfg.root), unless_rateints(Calibrate(cfg.root, cfg.settings, cfg.token)),
            None, None)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ngroups", type=int, default=20)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    start = provenance(argv)
    from nirbeam.stream.stream_complete import record_functions
    from tests.test_stream_irs2_memory import run_chain

    res = {}
    for name, fns in (("before", before_functions), ("after", record_functions)):
        mp = pytest.MonkeyPatch()
        try:
            alive, traced, raw = run_chain(Path(tempfile.mkdtemp()), mp, args.ngroups, fns)
        finally:
            mp.undo()
        res[name] = {"raw_ramp_alive_at_detector1": alive, "traced_mib": round(traced / 2**20, 1)}
        print(name, res[name], flush=True)
    result = {
        "what": "tracemalloc traced memory when detector1 starts on one full-frame IRS2 "
                "integration in the stream's record chain (Beam, in process)",
        "ngroups": args.ngroups, "raw_ramp_mib": round(raw / 2**20, 1),
        "traced_mib": {k: v["traced_mib"] for k, v in res.items()},
        "raw_ramp_alive_at_detector1": {k: v["raw_ramp_alive_at_detector1"] for k, v in res.items()},
        "saved_mib": round(res["before"]["traced_mib"] - res["after"]["traced_mib"], 1),
    }
    print(write_result(args.out, result, start=start))


if __name__ == "__main__":
    main()
