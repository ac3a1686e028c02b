"""Sources for the streaming service: a watched folder and a replay of an existing exposure.

Both produce :class:`Arrival` items: a complete, validated segment (its header scanned by
:func:`nirbeam.stream.uncal.scan_segment`) and the integrations of it that have just become
available, with the wall-clock time they became available (for latency accounting).

* :class:`FolderWatcher` polls a folder for ``*_uncal.fits`` files. A file is read only when
  it is complete: its size (and mtime) unchanged over two consecutive polls **and**
  ``scan_segment`` succeeds (it raises :class:`BadInputError` on a truncated file). A file
  seen twice -- the same path again, or another path holding the same exposure, detector
  and INTSTART with byte-identical SCI data -- is used once; a different file claiming the
  same integrations is refused (reported in :attr:`FolderWatcher.notes`, never read).
  All integrations of a segment are emitted together, segments in INTSTART order.
* :class:`ReplaySource` replays segments that already exist: integration ``i`` is released
  when the wall clock reaches ``start + (t_i - t_0) / speed`` (``t`` = int_mid_BJD_TDB,
  ``speed`` = 10 is ten times real time, ``inf`` = as fast as possible).

No Beam here: :mod:`nirbeam.stream.streaming` turns arrivals into records.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

from nirbeam.stream.uncal import (
    BadInputError,
    SegmentInfo,
    _same_bytes,
    find_uncal_files,
    plan_exposures,
    scan_segment,
)

__all__ = ["Arrival", "FolderWatcher", "ReplaySource"]

log = logging.getLogger("nirbeam")

SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class Arrival:
    """Integrations of one segment that have become available.

    Attributes
    ----------
    segment : SegmentInfo
        The complete segment (headers and INT_TIMES scanned).
    integrations : tuple of int
        1-based exposure integration numbers now available, increasing.
    available : float
        Wall-clock time (``time.time()``, s) they became available: for the watcher the
        poll that found the file complete, for a replay the scheduled release time.
    """

    segment: SegmentInfo
    integrations: tuple[int, ...]
    available: float


class FolderWatcher:
    """Poll a folder for complete ``*_uncal.fits`` segments (see module notes).

    Parameters
    ----------
    folder : str
        Folder to watch (created if missing).
    poll : float
        Seconds between polls.
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
        self._last: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) at last poll
        self._used: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) when used
        self._by_start: dict[tuple[str, str, int], SegmentInfo] = {}
        self._bad: dict[str, tuple[int, int]] = {}  # complete-looking but unreadable: retry on change
        self._next_poll = 0.0
        self.notes: list[str] = []
        self.exhausted = False  # a folder may always receive more files

    def _candidates(self) -> list[str]:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(os.path.join(self.folder, n) for n in names
                      if n.lower().endswith("_uncal.fits") and not n.startswith("."))

    def scan_once(self) -> list[Arrival]:
        """One poll: return the segments that became complete since the last one."""
        now = self.clock()
        ready: list[SegmentInfo] = []
        current: dict[str, tuple[int, int]] = {}
        for path in self._candidates():
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue  # renamed away between listdir and stat
            sig = (st.st_size, st.st_mtime_ns)
            current[path] = sig
            if self._used.get(path) == sig or self._bad.get(path) == sig:
                continue  # already used (or already refused) in this exact state
            if self._last.get(path) != sig:
                continue  # new or still changing: wait for a second poll with the same size
            try:
                info = scan_segment(path)
            except BadInputError as exc:
                # still being written in a way that kept its size (rare), or broken: retry
                # when it changes; say so once
                self._bad[path] = sig
                self.notes.append(f"{os.path.basename(path)} not readable yet: {exc}")
                log.warning("watch: %s", exc)
                continue
            self._used[path] = sig
            k = (info.meta.exposure, info.meta.detector, info.intstart)
            prev = self._by_start.get(k)
            if prev is not None and prev.path == info.path:
                self.notes.append(f"{os.path.basename(path)} rewritten after it was read: "
                                  "not read again (its integrations are processed once)")
                continue
            if prev is not None:
                if prev.intend == info.intend and _same_bytes_safe(prev, info):
                    self.notes.append(f"{os.path.basename(path)} duplicates "
                                      f"{os.path.basename(prev.path)} (identical data): used once")
                    continue
                self.notes.append(
                    f"{os.path.basename(path)} claims integrations {info.intstart}-{info.intend} "
                    f"of {info.meta.exposure} {info.meta.detector} already taken from "
                    f"{os.path.basename(prev.path)} with different data: ignored"
                )
                log.warning("watch: %s", self.notes[-1])
                continue
            overl = [s for (e, d, _), s in self._by_start.items()
                     if (e, d) == k[:2] and s.intstart <= info.intend and info.intstart <= s.intend]
            if overl:
                self.notes.append(
                    f"{os.path.basename(path)} (integrations {info.intstart}-{info.intend}) "
                    f"overlaps {os.path.basename(overl[0].path)}: ignored"
                )
                log.warning("watch: %s", self.notes[-1])
                continue
            self._by_start[k] = info
            ready.append(info)
        self._last = current
        ready.sort(key=lambda s: (s.meta.exposure, s.meta.detector, s.intstart))
        return [Arrival(s, tuple(range(s.intstart, s.intend + 1)), now) for s in ready]

    def poll(self, timeout: float) -> list[Arrival]:
        """Wait until the next poll is due (at most ``timeout`` s), then poll if it is."""
        now = time.monotonic()
        if now < self._next_poll:
            time.sleep(min(timeout, self._next_poll - now))
            if time.monotonic() < self._next_poll:
                return []
        self._next_poll = time.monotonic() + self.poll_s
        return self.scan_once()


def _same_bytes_safe(a: SegmentInfo, b: SegmentInfo) -> bool:
    try:
        return _same_bytes(a, b)
    except OSError:
        return False


class ReplaySource:
    """Release the integrations of existing segments at ``speed`` times real time.

    Parameters
    ----------
    inputs : list of str
        uncal files or folders (as ``nirbeam run``).
    speed : float
        Replay speed; ``math.inf`` releases everything at once.
    start : float, optional
        Wall-clock time of the first release (default: now).
    limit : int, optional
        Release only the first ``limit`` integrations of each exposure/detector.
    """

    def __init__(self, inputs, speed: float = 1.0, start: float | None = None,
                 limit: int | None = None, clock=time.time):
        if not speed > 0:
            raise ValueError(f"--replay-speed: expected > 0, got {speed}")
        self.speed = float(speed)
        self.clock = clock
        self.notes: list[str] = []
        plans = plan_exposures([scan_segment(f) for f in find_uncal_files(list(inputs))])
        events = []
        for plan in plans:
            for k, i in enumerate(plan.present):
                if limit is not None and k >= limit:
                    break
                seg = plan.segment_of(i)
                events.append((seg.times[i].int_mid_bjd_tdb, plan.meta.group_name, i, seg))
            self.notes.extend(plan.notes)
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        self._events = events
        self._t0 = events[0][0] if events else 0.0
        self.start = self.clock() if start is None else float(start)
        self._k = 0
        self.total = len(events)

    @property
    def exhausted(self) -> bool:
        """True once every integration was released."""
        return self._k >= len(self._events)

    def release_time(self, k: int) -> float:
        """Wall-clock release time of the k-th event."""
        if math.isinf(self.speed):
            return self.start
        return self.start + (self._events[k][0] - self._t0) * SECONDS_PER_DAY / self.speed

    def poll(self, timeout: float) -> list[Arrival]:
        """Return integrations due now; otherwise sleep until the next one (<= timeout)."""
        if self.exhausted:
            time.sleep(min(timeout, 0.05))
            return []
        now = self.clock()
        due = self.release_time(self._k)
        if due > now:
            time.sleep(min(timeout, due - now))
            now = self.clock()
        out: list[Arrival] = []
        while self._k < len(self._events) and self.release_time(self._k) <= now:
            _, _, i, seg = self._events[self._k]
            out.append(Arrival(seg, (i,), self.release_time(self._k)))
            self._k += 1
        return out
