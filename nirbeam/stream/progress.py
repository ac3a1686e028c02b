"""Logging set-up and a progress display over the stages of a run.

- :func:`setup_logging`: console level (``--log-level``, ``-v``, ``-q``) and, always,
  ``OUTDIR/nirbeam.log`` (appended to by every command on that folder, at INFO or the
  console level if lower; a command refused before it created OUTDIR writes nothing).
- :class:`Progress`: one bar per stage (scan, prepare, detector1, spectra, products) with
  counts, rate and ETA. On a terminal it draws a ``tqdm`` bar; otherwise (a log file, a
  batch job, CI) it prints plain lines no more often than every ``interval`` seconds. Each
  stage's start and end also go to the log. A stage's count may be pushed
  (:meth:`Stage.advance`) or polled from a callable (e.g. completion markers in the
  store, which workers on other machines write) by a background thread; a polled stage
  may also learn its total as it goes (``poll`` returns ``(count, total)``: a stream learns
  of exposures as they arrive) and carry a ``detail`` line (``nirbeam stream``: segments,
  dead letters, live points).

Nothing here touches the data; every failure of the display is swallowed (progress is
best effort and must never end a run).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["LEVELS", "setup_logging", "close_logging", "Progress", "Stage", "format_eta"]

log = logging.getLogger("nirbeam.progress")

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_NAME = "nirbeam.log"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_handlers: list[logging.Handler] = []


def console_level(log_level: str | None, verbose: bool = False, quiet: bool = False) -> int:
    """The console logging level from the CLI flags (``-q`` wins, then --log-level, -v)."""
    if quiet:
        return logging.ERROR
    if log_level:
        return getattr(logging, log_level.upper())
    return logging.INFO if verbose else logging.WARNING


def setup_logging(level: int, outdir: str | None = None, stream: TextIO | None = None) -> str | None:
    """Configure the ``nirbeam`` loggers: console at ``level``, ``OUTDIR/nirbeam.log`` always.

    Returns the log file's path (or URL), or None without an OUTDIR. The file appears once
    OUTDIR exists (see :class:`_OutdirLog`); an fsspec URL OUTDIR gets its log uploaded
    by :func:`close_logging` (object stores cannot append).
    """
    close_logging()
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    console = logging.StreamHandler(stream or sys.stderr)
    console.setLevel(level)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    # third-party warnings sent to the root logger at import (Beam's optional GCP clients)
    console.addFilter(lambda r: r.name != "root" or r.levelno >= logging.ERROR)
    # Beam logs a failing bundle with its traceback; nirbeam reports every failure itself
    # (a clean message, a dead letter), so Beam's own records go to the log file only
    # (and to the console at --log-level DEBUG)
    console.addFilter(lambda r: level <= logging.DEBUG or not r.name.startswith("apache_beam"))
    root.addHandler(console)
    _handlers.append(console)
    for noisy in ("apache_beam", "distributed", "numba", "matplotlib", "fsspec",
                  "asyncio", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    path = None
    if outdir is not None:
        from nirbeam.sinks import fs

        path = fs.join(outdir, LOG_NAME)
        fh = _OutdirLog(outdir, path)
        fh.setLevel(min(level, logging.INFO))
        fh.setFormatter(logging.Formatter(_FORMAT))
        fh.addFilter(lambda r: r.name != "root" or r.levelno >= logging.ERROR)
        root.addHandler(fh)
        _handlers.append(fh)
    return path


class _OutdirLog(logging.Handler):
    """``OUTDIR/nirbeam.log``, appended to; records wait in memory until OUTDIR exists.

    A command refused before it created OUTDIR (bad options, bad input) leaves nothing
    behind; once the folder exists (the command made it, or a rerun) the buffered records
    and every later one go to the file, flushed each time (``tail -f`` works). An fsspec
    URL OUTDIR gets its records uploaded (appended) on :meth:`close`.
    """

    def __init__(self, outdir: str, path: str):
        super().__init__()
        self.outdir, self.path = outdir, path
        self.buffer: list[str] = []
        self.file = None
        self.failed = False  # OUTDIR not writable: the command reports it; no log

    def _exists(self) -> bool:
        from nirbeam.sinks import fs

        try:
            return fs.isdir(self.outdir)
        except Exception:  # noqa: BLE001
            return False

    def emit(self, record: logging.LogRecord) -> None:
        if self.failed:
            return
        try:
            msg = self.format(record)
            from nirbeam.sinks import fs

            if self.file is None and not fs.is_url(self.outdir) and self._exists():
                try:
                    self.file = open(fs.normalize(self.path), "a", encoding="utf-8")  # noqa: SIM115
                except OSError:
                    self.failed = True
                    self.buffer.clear()
                    return
                self.file.writelines(m + "\n" for m in self.buffer)
                self.buffer.clear()
            if self.file is not None:
                self.file.write(msg + "\n")
                self.file.flush()
            else:
                self.buffer.append(msg)
        except Exception:  # noqa: BLE001 - the log must not end a run
            self.handleError(record)

    def close(self) -> None:
        try:
            from nirbeam.sinks import fs

            if self.file is not None:
                self.file.close()
                self.file = None
            elif self.buffer and not self.failed and self._exists():
                text = "".join(m + "\n" for m in self.buffer)
                if fs.is_url(self.outdir):
                    old = fs.read_text(self.path) if fs.isfile(self.path) else ""
                    fs.write_text(self.path, old + text)
                else:
                    with open(fs.normalize(self.path), "a", encoding="utf-8") as f:
                        f.write(text)
            self.buffer.clear()
        except Exception:  # noqa: BLE001
            pass
        super().close()


def close_logging() -> None:
    """Remove the handlers :func:`setup_logging` added (uploading a URL OUTDIR's log)."""
    root = logging.getLogger()
    for h in _handlers:
        root.removeHandler(h)
        try:
            h.flush()
            h.close()
        except Exception:  # noqa: BLE001
            pass
    _handlers.clear()


def format_eta(seconds: float | None) -> str:
    """``H:MM:SS`` (``?`` when unknown)."""
    if seconds is None or not seconds >= 0 or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Stage:
    """Progress of one stage: a count out of an optional total.

    Use as a context manager; ``advance(n)`` adds to the count, ``set(n)`` sets it.
    With ``poll``, a thread sets the count from ``poll()`` every ``interval`` seconds
    (``poll()`` may return ``(count, total)``). ``detail()``: a few words appended to each
    line (the bar's postfix on a terminal).
    """

    def __init__(self, owner: Progress, name: str, total: int | None, unit: str,
                 poll: Callable[[], int | tuple[int, int | None]] | None,
                 detail: Callable[[], str] | None = None):
        self.owner, self.name, self.total, self.unit = owner, name, total, unit
        self.count = 0
        self.t0 = time.monotonic()
        self._last_line = 0.0
        self._last_count = -1
        self._bar = None
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()
        self._poll = poll
        self._detail = detail
        log.info("%s: started%s", name, f" ({total} {unit})" if total is not None else "")
        if owner.enabled:
            if owner.tty:
                try:
                    import shutil

                    from tqdm import tqdm

                    # a pseudo-terminal without a size (script, some CI runners) reports
                    # 0 x 0, for which tqdm draws nothing: take 100 x 24 then
                    size = shutil.get_terminal_size((100, 24))
                    self._bar = tqdm(total=total, desc=f"nirbeam {name}", unit=f" {unit}",
                                     file=owner.stream, leave=True, ncols=size.columns,
                                     nrows=max(size.lines, 4))
                except Exception:  # noqa: BLE001 - fall back to plain lines
                    self._bar = None
            if self._bar is None:
                self._line(force=True)
        if poll is not None and owner.enabled:  # disabled: only close()'s count is used
            self._thread = threading.Thread(target=self._run_poll, daemon=True,
                                            name=f"nirbeam-progress-{name}")
            self._thread.start()

    # counts -------------------------------------------------------------------------
    def advance(self, n: int = 1) -> None:
        """Add ``n`` to the count."""
        self.set(self.count + n)

    def set(self, n: int) -> None:
        """Set the count to ``n``."""
        with self._lock:
            self.count = int(n)
            try:
                if self._bar is not None:
                    self._bar.n = self.count
                    if self._detail is not None:
                        self._bar.set_postfix_str(self._detail_text(), refresh=False)
                    self._bar.refresh()
                elif self.owner.enabled:
                    self._line()
            except Exception:  # noqa: BLE001
                pass

    def set_total(self, total: int | None) -> None:
        """Change the total (a stream learns of new exposures as they arrive)."""
        if total == self.total:
            return
        self.total = total
        if self._bar is not None:
            try:
                self._bar.total = total
                self._bar.refresh()
            except Exception:  # noqa: BLE001
                pass

    def rate(self) -> float | None:
        """Items per second so far (None before the first)."""
        dt = time.monotonic() - self.t0
        return self.count / dt if self.count and dt > 0 else None

    def eta(self) -> float | None:
        """Seconds left at the rate so far (None when unknown)."""
        r = self.rate()
        if r is None or self.total is None:
            return None
        return max(0.0, (self.total - self.count) / r)

    def text(self) -> str:
        """One plain line: ``name: count/total unit (pct), rate/s, ETA``."""
        tot = f"/{self.total}" if self.total is not None else ""
        pct = f" ({100 * self.count / self.total:.0f}%)" if self.total else ""
        r = self.rate()
        extra = f", {r:.3g} {self.unit}/s, ETA {format_eta(self.eta())}" if r else ""
        d = self._detail_text()
        extra += f"; {d}" if d else ""
        return f"[nirbeam] {self.name}: {self.count}{tot} {self.unit}{pct}{extra}"

    def _detail_text(self) -> str:
        if self._detail is None:
            return ""
        try:
            return str(self._detail())
        except Exception:  # noqa: BLE001 - progress is best effort
            return ""

    def _poll_once(self) -> None:
        v = self._poll()
        if isinstance(v, tuple):
            n, total = v
            self.set_total(None if total is None else int(total))
        else:
            n = v
        self.set(int(n))

    def _line(self, force: bool = False) -> None:
        # a line when the count changed and ``interval`` passed, else a heartbeat line
        # every 6 intervals, so a log shows the run is alive without filling up
        now = time.monotonic()
        dt = now - self._last_line
        changed = self.count != self._last_count
        if force or (changed and dt >= self.owner.interval) or dt >= 6 * self.owner.interval:
            self._last_line = now
            self._last_count = self.count
            print(self.text(), file=self.owner.stream, flush=True)

    def _run_poll(self) -> None:
        while not self._stop.wait(self.owner.poll_interval):
            try:
                self._poll_once()
            except Exception:  # noqa: BLE001 - progress is best effort
                continue

    # end ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop polling, take a last count and print the stage's end line."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._poll is not None:
            try:
                self._poll_once()
            except Exception:  # noqa: BLE001
                pass
        dt = time.monotonic() - self.t0
        tot = f"/{self.total}" if self.total is not None else ""
        d = self._detail_text()
        msg = f"{self.name}: done, {self.count}{tot} {self.unit} in {dt:.1f} s" + (
            f"; {d}" if d else "")
        log.info(msg)
        try:
            if self._bar is not None:
                self._bar.close()
            elif self.owner.enabled:
                print(f"[nirbeam] {msg}", file=self.owner.stream, flush=True)
        except Exception:  # noqa: BLE001
            pass

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Progress:
    """Factory of :class:`Stage` displays for one run.

    Parameters
    ----------
    enabled : bool
        False: nothing is printed (stage starts and ends still go to the log).
    stream : text stream
        Default ``sys.stderr``.
    tty : bool, optional
        Draw bars; default ``stream.isatty()``.
    interval : float
        Seconds between plain lines (not a terminal).
    poll_interval : float
        Seconds between polls of a stage's ``poll`` callable.
    """

    def __init__(self, enabled: bool = True, stream: TextIO | None = None, *,
                 tty: bool | None = None, interval: float = 10.0, poll_interval: float = 1.0):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        if tty is None:
            try:
                tty = bool(self.stream.isatty())
            except Exception:  # noqa: BLE001
                tty = False
        self.tty = tty
        self.interval = interval
        self.poll_interval = poll_interval

    def stage(self, name: str, total: int | None = None, unit: str = "integrations",
              poll: Callable[[], int | tuple[int, int | None]] | None = None,
              detail: Callable[[], str] | None = None) -> Stage:
        """Start a stage display (close it, or use it as a context manager)."""
        return Stage(self, name, total, unit, poll, detail)
