"""Sources of arriving segments for ``nirbeam stream``: a watched folder, and a replay
that drops an existing exposure's segments into one at a chosen speed.

No Beam here. :func:`poll_folder` is a pure step over a :class:`WatchState` (the state a
Beam stateful DoFn keeps between polls, :class:`nirbeam.stream.streaming.WatchFolderDoFn`);
:class:`FolderWatcher` is the same step for plain Python callers.

When is a file complete? (issue 20, item 6)
-------------------------------------------
A segment is used only when **all** of these hold:

1. its size is exactly what its headers promise: :func:`nirbeam.stream.uncal.scan_segment`
   walks every HDU and refuses a file whose last HDU is cut short or followed by stray
   bytes;
2. its size and mtime are unchanged over two consecutive polls;
3. a file without ``INT_TIMES`` rows for its integrations (times that would be *derived*
   from EXPSTART, e.g. a writer that has written SCI and GROUP and not yet INT_TIMES) must
   stay unchanged for :data:`SETTLE_POLLS` polls before it is used, so a pause of the
   writer between two extensions does not make the stream derive times the file is about
   to give.

A file that changes after it was used is never silently mixed in: the read step of the
stream checks each integration's file against the signature it was accepted with and
refuses (dead letter, step ``read``) an integration whose file changed; the watcher notes
the change; at the end of the run the accepted files are scanned again and their
INT_TIMES (the only thing that may legitimately be added late) replace those read at
arrival before the products are built. A file seen twice -- the same path written again,
or another path holding the same exposure, detector and INTSTART with byte-identical SCI
data -- is used once; a different file claiming the same integrations is refused.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass, field

from nirbeam.stream.uncal import (
    BadInputError,
    SegmentInfo,
    find_uncal_files,
    plan_exposures,
    same_bytes,
    scan_segment,
)

__all__ = ["Arrival", "WatchState", "poll_folder", "FolderWatcher", "file_signature",
           "replay_schedule", "ReplayDropper", "SETTLE_POLLS"]

log = logging.getLogger("nirbeam")

SECONDS_PER_DAY = 86400.0
#: Polls a file with derived (not INT_TIMES) times must stay unchanged before it is used.
SETTLE_POLLS = 3


@dataclass(frozen=True)
class Arrival:
    """A complete, validated segment that has just become available.

    Attributes
    ----------
    segment : SegmentInfo
        Headers and INT_TIMES scanned.
    integrations : tuple of int
        1-based exposure integration numbers it holds, increasing.
    available : float
        Wall-clock time (``time.time()``, s) of the poll that found it complete.
    signature : (int, int)
        (size in bytes, mtime in ns) of the file when it was accepted.
    """

    segment: SegmentInfo
    integrations: tuple[int, ...]
    available: float
    signature: tuple[int, int] = (0, 0)


def file_signature(path: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file, or None when it is gone."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime_ns)


@dataclass
class WatchState:
    """What a folder watcher remembers between polls (picklable: Beam keyed state)."""

    last: dict = field(default_factory=dict)      # path -> signature at the previous poll
    stable: dict = field(default_factory=dict)    # path -> polls seen with that signature
    used: dict = field(default_factory=dict)      # path -> signature when used
    by_start: dict = field(default_factory=dict)  # (exposure, detector, intstart) -> SegmentInfo
    bad: dict = field(default_factory=dict)       # path -> signature refused (retry on change)
    notes: list = field(default_factory=list)
    refused: dict = field(default_factory=dict)   # path -> why it was refused (while it is)
    all_refused_since: float | None = None        # wall time every file seen became refused

    def every_file_refused(self) -> bool:
        """True when the last poll saw files, all refused in their current state, and no
        segment was ever accepted."""
        return bool(self.last) and not self.by_start and all(
            self.bad.get(p) == sig for p, sig in self.last.items())


def _candidates(folder: str) -> list[str]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(folder, n) for n in names
                  if n.lower().endswith("_uncal.fits") and not n.startswith("."))


def _derived_times(info: SegmentInfo) -> bool:
    return any(t.derived for t in info.times.values())


def poll_folder(state: WatchState, folder: str, now: float) -> list[Arrival]:
    """One poll of ``folder``: the segments that became complete since the last one.

    Updates ``state`` in place (see the module notes for the rules); new notes are
    appended to ``state.notes``.
    """
    ready: list[tuple[SegmentInfo, tuple[int, int]]] = []
    current: dict[str, tuple[int, int]] = {}
    for path in _candidates(folder):
        sig = file_signature(path)
        if sig is None:
            continue  # renamed away between listdir and stat
        current[path] = sig
        polls = state.stable.get(path, 0) + 1 if state.last.get(path) == sig else 1
        state.stable[path] = polls
        if state.used.get(path) == sig or state.bad.get(path) == sig:
            continue  # already used (or already refused) in this exact state
        if polls < 2:
            continue  # new or still changing: wait for a second poll with the same size
        try:
            info = scan_segment(path)
        except BadInputError as exc:
            # still being written in a way that kept its size, or broken: retry on change
            state.bad[path] = sig
            state.refused[path] = str(exc)
            state.notes.append(f"{os.path.basename(path)} refused (retried if it changes): {exc}")
            log.warning("watch: %s", exc)
            continue
        if _derived_times(info) and polls < SETTLE_POLLS:
            continue  # no INT_TIMES rows yet: give the writer time to add them
        prev_sig = state.used.get(path)
        state.used[path] = sig
        state.refused.pop(path, None)
        k = (info.meta.exposure, info.meta.detector, info.intstart)
        prev = state.by_start.get(k)
        if prev is not None and prev.path == info.path:
            state.notes.append(
                f"{os.path.basename(path)} rewritten after it was read (size/mtime "
                f"{prev_sig} -> {sig}): not read again (its integrations are processed once; "
                "one whose ramp had not been read yet is refused at read time)")
            log.warning("watch: %s", state.notes[-1])
            continue
        if prev is not None:
            if prev.intend == info.intend and _same_bytes_safe(prev, info):
                state.notes.append(f"{os.path.basename(path)} duplicates "
                                   f"{os.path.basename(prev.path)} (identical data): used once")
                continue
            state.notes.append(
                f"{os.path.basename(path)} claims integrations {info.intstart}-{info.intend} "
                f"of {info.meta.exposure} {info.meta.detector} already taken from "
                f"{os.path.basename(prev.path)} with different data: ignored")
            log.warning("watch: %s", state.notes[-1])
            continue
        overl = [s for (e, d, _), s in state.by_start.items()
                 if (e, d) == k[:2] and s.intstart <= info.intend and info.intstart <= s.intend]
        if overl:
            state.notes.append(
                f"{os.path.basename(path)} (integrations {info.intstart}-{info.intend}) "
                f"overlaps {os.path.basename(overl[0].path)}: ignored")
            log.warning("watch: %s", state.notes[-1])
            continue
        state.by_start[k] = info
        ready.append((info, sig))
    state.last = current
    state.stable = {p: n for p, n in state.stable.items() if p in current}
    state.refused = {p: why for p, why in state.refused.items() if p in current}
    ready.sort(key=lambda r: (r[0].meta.exposure, r[0].meta.detector, r[0].intstart))
    return [Arrival(s, tuple(range(s.intstart, s.intend + 1)), now, sig) for s, sig in ready]


def _same_bytes_safe(a: SegmentInfo, b: SegmentInfo) -> bool:
    try:
        return same_bytes(a, b)
    except OSError:
        return False


class FolderWatcher:
    """:func:`poll_folder` with its state, for plain Python callers (and tests).

    Parameters
    ----------
    folder : str
        Folder to watch (created if missing).
    poll : float
        Seconds between polls (> 0).
    clock : callable
        Wall clock (tests may pass a fake one).
    """

    def __init__(self, folder: str, poll: float = 1.0, clock=time.time):
        if poll <= 0:
            raise ValueError(f"--poll: expected > 0 seconds, got {poll}")
        self.folder = str(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.poll_s = float(poll)
        self.clock = clock
        self.state = WatchState()

    @property
    def notes(self) -> list[str]:
        """What the watcher noticed (duplicates, refusals, rewrites)."""
        return self.state.notes

    def scan_once(self) -> list[Arrival]:
        """One poll."""
        return poll_folder(self.state, self.folder, self.clock())


# ---------------------------------------------------------------------------------------
# Replay: drop an existing exposure's segments into a folder at X times real time


def replay_schedule(inputs, speed: float) -> list[tuple[float, str]]:
    """When (seconds after the start) each segment would be complete at ``speed``.

    A segment is released once its last integration has ended: ``(t_end - t_0) / speed``
    with ``t`` = INT_TIMES end (BJD_TDB) and ``t_0`` the first integration's start; at
    ``speed = inf`` everything at 0. Returns ``(delay_s, path)`` sorted by delay.
    """
    if not speed > 0:
        raise ValueError(f"--replay-speed: expected > 0, got {speed}")
    plans = plan_exposures([scan_segment(f) for f in find_uncal_files(list(inputs))])
    t0 = min((t.int_start_bjd_tdb for p in plans for s in p.segments for t in s.times.values()),
             default=0.0)
    out = []
    for p in plans:
        for s in p.segments:
            t_end = max(t.int_end_bjd_tdb for t in s.times.values())
            delay = 0.0 if math.isinf(speed) else (t_end - t0) * SECONDS_PER_DAY / speed
            out.append((delay, s.path))
    return sorted(out)


class ReplayDropper:
    """A thread that copies segments into ``folder`` on :func:`replay_schedule`'s times.

    Each copy goes to a hidden temporary name first and is renamed into place, as a
    transfer tool delivers a file. ``dropped`` lists ``(wall time, path)`` of each drop.
    """

    def __init__(self, inputs, folder: str, speed: float, stop: threading.Event | None = None):
        self.schedule = replay_schedule(inputs, speed)
        self.folder = str(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.stop = stop or threading.Event()
        self.dropped: list[tuple[float, str]] = []
        self._t = threading.Thread(target=self._run, daemon=True, name="nirbeam-replay")

    def start(self) -> ReplayDropper:
        """Start dropping (returns self)."""
        self.start_time = time.time()
        self._t.start()
        return self

    @property
    def done(self) -> bool:
        """Every segment dropped."""
        return len(self.dropped) == len(self.schedule)

    def _run(self) -> None:
        for delay, src in self.schedule:
            wait = self.start_time + delay - time.time()
            if wait > 0 and self.stop.wait(wait):
                return
            dst = os.path.join(self.folder, os.path.basename(src))
            tmp = os.path.join(self.folder, ".part-" + os.path.basename(src))
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
            self.dropped.append((time.time(), dst))
