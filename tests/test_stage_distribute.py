"""Batch stages: the Reshuffle that spreads work items over workers is in the graph only
where there is more than one worker (on the direct runner it only cost a group-by-key
stage), and the stage runs the same either way."""

import apache_beam as beam
import pytest

from nirbeam.stream.graph import RateStage, SpectraStage, one_worker
from nirbeam.stream.runners import RunnerSpec, make_runner


def _pipeline(spec):
    runner, options, _ = make_runner(spec)
    return beam.Pipeline(runner=runner, options=options)


@pytest.mark.parametrize("stage", ["rate", "spectra"])
@pytest.mark.parametrize("spec, reshuffled", [(RunnerSpec(), False),
                                              (RunnerSpec("multiprocess", workers=1), False),
                                              (RunnerSpec("multiprocess", workers=2), True)])
def test_reshuffle_only_with_more_than_one_worker(tmp_path, stage, spec, reshuffled):
    p = _pipeline(spec)
    assert one_worker(p) is not reshuffled
    if stage == "rate":
        _ = p | "S" >> RateStage([], str(tmp_path), None, "", str(tmp_path / "dead"))
    else:
        _ = p | "S" >> SpectraStage([], str(tmp_path), None, str(tmp_path / "dead"))
    labels = p.applied_labels
    assert any("GroupByKey" in lab for lab in labels) is reshuffled, sorted(labels)


def test_one_worker_graph_runs_every_item(tmp_path):
    """Without the Reshuffle, every item still goes through the step once."""
    from nirbeam.stream.graph import _Distribute

    out = tmp_path / "seen"
    out.mkdir()
    p = _pipeline(RunnerSpec())
    _ = (p | beam.Create(list(range(7)), reshuffle=False) | _Distribute()
         | beam.Map(lambda i, d=str(out): open(f"{d}/{i}", "w").close()))
    p.run().wait_until_finish()
    assert sorted(int(f.name) for f in out.iterdir()) == list(range(7))
