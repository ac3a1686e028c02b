"""Integration keys: frozen, hashable, deterministic, grouped right by Beam runners."""

import pickle

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from nirbeam.stream.records import DeadLetter, IntegrationKey, IntegrationKeyCoder


def test_key_is_frozen_hashable_and_ordered():
    k = IntegrationKey("jw01366004001_04101_00001", "nrs1", 3)
    assert k.detector == "NRS1"
    assert hash(k) == hash(IntegrationKey("jw01366004001_04101_00001", "NRS1", 3))
    with pytest.raises(AttributeError):
        k.integration = 4
    assert sorted([IntegrationKey("a", "NRS2", 1), IntegrationKey("a", "NRS1", 2)])[0].detector == "NRS1"
    assert k.group == "jw01366004001_04101_00001_nrs1"


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3"])
def test_key_refuses_bad_integration_numbers(bad):
    with pytest.raises(ValueError, match="integration number"):
        IntegrationKey("e", "NRS1", bad)


def test_key_pickles_and_encodes_deterministically():
    k = IntegrationKey("jw01366004001_04101_00001", "NRS2", 465)
    assert pickle.dumps(k) == pickle.dumps(IntegrationKey(k.exposure, k.detector, np.int64(465)))
    assert pickle.loads(pickle.dumps(k)) == k
    coder = IntegrationKeyCoder()
    assert coder.is_deterministic()
    assert coder.decode(coder.encode(k)) == k
    assert coder.encode(k) == coder.encode(IntegrationKey(k.exposure, k.detector, 465))
    assert beam.coders.registry.get_coder(IntegrationKey).is_deterministic()


def _group_on(runner):
    keys = [IntegrationKey("expA", det, i) for det in ("NRS1", "NRS2") for i in range(1, 6)]
    # each key appears three times, built separately, so grouping relies on equality
    elements = [(IntegrationKey(k.exposure, k.detector, k.integration), j) for k in keys for j in range(3)]
    with beam.Pipeline(runner=runner) as p:
        out = (
            p
            | beam.Create(elements)
            | beam.WithKeys(lambda kv: kv[0]).with_input_types(tuple).with_output_types(
                beam.typehints.KV[IntegrationKey, tuple])
            | beam.MapTuple(lambda k, kv: (k, kv[1])).with_output_types(
                beam.typehints.KV[IntegrationKey, int])
            | beam.GroupByKey()
            | beam.MapTuple(lambda k, vs: (str(k), sorted(vs)))
        )
        assert_that(out, equal_to([(str(k), [0, 1, 2]) for k in keys]))


@pytest.mark.parametrize("runner", [FnApiRunner, BundleBasedDirectRunner])
def test_keys_group_by_key_on_two_runners(runner):
    _group_on(runner())


def test_dead_letter_json_names_key_step_and_reason():
    d = DeadLetter(IntegrationKey("e", "NRS1", 7), "detector1", "boom", "/x/y.fits").to_json()
    assert d == {"exposure": "e", "detector": "NRS1", "integration": 7, "step": "detector1",
                 "reason": "boom", "source": "/x/y.fits"}
