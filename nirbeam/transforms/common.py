"""Beam wiring shared by every step: apply a record function, route failures to dead letters;
the deterministic Beam coder of :class:`~nirbeam.core.records.IntegrationKey`.

Put as little logic as possible here: the science lives in the kernel modules.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

import apache_beam as beam
from apache_beam.metrics import Metrics

from nirbeam.core.records import DeadLetter, IntegrationKey, IntegrationRecord

__all__ = ["DEAD", "IntegrationKeyCoder", "RecordStep", "StepFailed"]

DEAD = "deadletter"
log = logging.getLogger("nirbeam")


class StepFailed(Exception):
    """Raised by a record function for a known, per-integration failure (reason given)."""


class _ApplyDoFn(beam.DoFn):
    def __init__(self, fn, step):
        self.fn = fn
        self.step = step
        self.ok = Metrics.counter("nirbeam", f"{step}.records")
        self.failed = Metrics.counter("nirbeam", f"{step}.deadletters")
        self.ms = Metrics.distribution("nirbeam", f"{step}.ms")

    def setup(self):
        setup = getattr(self.fn, "setup", None)
        if callable(setup):
            setup()

    def process(self, rec):
        import time

        if isinstance(rec, DeadLetter):  # pass dead letters straight through
            yield beam.pvalue.TaggedOutput(DEAD, rec)
            return
        t0 = time.perf_counter()
        try:
            out = self.fn(rec)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a dead letter
            reason = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, StepFailed):
                log.warning("%s failed on %s: %s\n%s", self.step, getattr(rec, "key", rec), reason,
                            traceback.format_exc(limit=3))
            self.failed.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD,
                DeadLetter(getattr(rec, "key", None), self.step, reason, getattr(rec, "source", "")),
            )
            return
        self.ms.update(int((time.perf_counter() - t0) * 1000))
        if out is None:
            return
        if isinstance(out, DeadLetter):
            self.failed.inc()
            yield beam.pvalue.TaggedOutput(DEAD, out)
            return
        self.ok.inc()
        yield out


class RecordStep(beam.PTransform):
    """Apply ``fn(record) -> record`` to each record; failures go to the ``deadletter`` tag.

    The output is a ``DoOutputsTuple``: ``out.records`` the records, ``out.deadletter``
    the :class:`~nirbeam.core.records.DeadLetter` items (including those passed in).
    ``fn`` may have a ``setup()`` method, called once per worker.
    """

    def __init__(
        self, fn: Callable[[IntegrationRecord], IntegrationRecord | DeadLetter | None], step: str
    ):
        super().__init__(label=step)
        self.fn = fn
        self.step = step

    def expand(self, pcoll):
        return pcoll | beam.ParDo(_ApplyDoFn(self.fn, self.step)).with_outputs(DEAD, main="records")


class IntegrationKeyCoder(beam.coders.Coder):
    """Deterministic coder for :class:`~nirbeam.core.records.IntegrationKey`."""

    def encode(self, value):
        return value.encode()

    def decode(self, encoded):
        return IntegrationKey.decode(encoded)

    def is_deterministic(self):
        return True

    def to_type_hint(self):
        return IntegrationKey


beam.coders.registry.register_coder(IntegrationKey, IntegrationKeyCoder)
