"""The quick-look fit and plots in a forked child process beside the product writers.

:func:`nirbeam.stream.products.finalize_products` draws the fit and the plots (matplotlib,
~2 CPU-s on PRISM) in a child process made by ``os.fork`` while the parent writes the tables
and FITS products that they do not read (:func:`beside`); :func:`plots_in_child` says when
(``NIRBEAM_PLOTS_PROCESS``). The child's log records, warnings and exception are sent back
pickled through a pipe and replayed in the parent, so the serial and the forked paths say
the same things; a child that dies without a result is redrawn in the parent.
"""

from __future__ import annotations

import gc
import logging
import os
import sys

from nirbeam.sinks import fs

log = logging.getLogger("nirbeam")

__all__ = ["PLOTS_PROCESS_ENV", "ahead", "beside", "plots_in_child"]


#: ``NIRBEAM_PLOTS_PROCESS``: ``0`` (or ``off``/``no``/``false``): the quick-look fit and
#: the plots run in this process after the writers, one after the other; ``1``: in a
#: forked child process beside the writers; unset (or ``auto``): in the child where this
#: process may use 2 or more cores (:func:`nirbeam.stream.runners.available_cores`).
PLOTS_PROCESS_ENV = "NIRBEAM_PLOTS_PROCESS"


def plots_in_child(outdir: str, settings=None) -> bool:
    """Whether :func:`finalize_products` draws the fit and plots in a forked child process
    (:data:`PLOTS_PROCESS_ENV`) while it writes the tables and x1dints: only with
    ``os.fork`` and a local output folder (an fsspec one stays serial)."""
    v = os.environ.get(PLOTS_PROCESS_ENV, "auto").strip().lower()
    if v in ("0", "off", "no", "false", "serial"):
        return False
    if not hasattr(os, "fork") or fs.is_url(outdir) or (settings is not None and not (
            settings.products.plots or settings.products.fit)):
        return False
    if v in ("1", "on", "yes", "true", "child"):
        return True
    from nirbeam.stream.runners import available_cores

    return available_cores() > 1


def beside(fn, other):
    """``fn()`` in a forked child process while this process runs ``other()``; returns what
    ``fn`` returned, as the serial path (``other(); fn()``) would.

    What the child logs is replayed here after ``other()`` (each record to the handlers of
    the logger that handled it there), its warnings shown here, an exception it raised
    raised here (pickled; else a RuntimeError naming it). A child that ends without a
    result (killed, crashed) is said by a warning and ``fn`` runs here. ``other()`` raising:
    the child is waited for (KeyboardInterrupt and the like: killed) and reaped, its records
    replayed, and ``other``'s exception raised.
    """
    def here(send):
        send(None)  # at once: the child runs fn() whatever other() does
        other()

    return ahead(lambda: None, lambda _early, _payload: fn(), here, lambda _payload: fn())


class _NoPayload(Exception):
    """The parent ended (or failed) without sending the plot process its payload."""


def ahead(early, late, parent, serial):
    """``late(early(), payload)`` in a forked child process, started now, while this
    process runs ``parent(send)``; returns what ``late`` returned.

    The child runs ``early()`` at once, then waits for the ``payload`` that ``parent``
    hands it with ``send(payload)`` (pickled, written to a pipe by a thread, so ``parent``
    goes on at once), and runs ``late``. So the child can do the part of its work that
    needs nothing ``parent`` computes (e.g. import matplotlib, draw the plots of inputs
    already on disk) while ``parent`` computes the rest. ``serial(payload)``: the child's
    whole work done here, for when there is no child (fork refused) or the child ended
    without a result (said by a warning), or the payload does not pickle. Log records,
    warnings and exceptions of the child as :func:`beside` says; ``parent`` raising
    before ``send``: the child is told so (it ends without running ``late``).
    """
    import signal

    for f in (sys.stdout, sys.stderr):  # no buffered text written twice (the child's copy)
        try:
            f.flush()
        except Exception:  # noqa: BLE001, S110 - a closed stream: nothing to flush
            pass
    r, w = os.pipe()  # child -> parent: the result
    pr, pw = os.pipe()  # parent -> child: the payload
    # the child's collector leaves the objects there before it alone (no pages copied for
    # their gc headers: ~50k -> 35k page faults in the child on PRISM)
    gc.freeze()
    try:
        pid = os.fork()
    except OSError as exc:  # no process to be had: serial
        gc.unfreeze()
        for fd in (r, w, pr, pw):
            os.close(fd)
        log.debug("no plot process (%s): fit and plots after the writers", exc)
        box: list = []
        parent(box.append)
        return serial(box[0] if box else None)
    if pid:
        gc.unfreeze()
    else:  # the child: never returns
        code = 70
        try:
            os.close(r)
            os.close(pw)

            def recv():
                with open(pr, "rb") as f:
                    data = f.read()
                if not data:
                    raise _NoPayload("the products step sent the plot process nothing")
                import pickle

                return pickle.loads(data)

            msg = _child_call(lambda: late(early(), recv()))
            data = _dumps(msg)
            with open(w, "wb") as f:
                f.write(data)
            code = 0
        finally:
            for f in (sys.stdout, sys.stderr):
                try:
                    f.flush()
                except Exception:  # noqa: BLE001, S110
                    pass
            os._exit(code)
    os.close(w)
    os.close(pr)
    sender = _Sender(pw)
    try:
        parent(sender.send)
    except BaseException as exc:
        if not isinstance(exc, Exception):
            os.kill(pid, signal.SIGKILL)
        sender.close()
        try:
            _replay(_collect(pid, r), raise_=False)
        except BaseException:  # noqa: BLE001 - parent's exception is the one to raise
            _kill(pid)
        raise
    try:
        sender.close()
        msg = _collect(pid, r)
    except BaseException:  # interrupted while waiting: no child left behind
        _kill(pid)
        raise
    if not sender.sent:  # nothing (or nothing picklable) sent: the child's part here
        return serial(sender.payload)
    if msg is None:
        log.warning("the plot process ended without a result: fit and plots drawn here")
        return serial(sender.payload)
    return _replay(msg)


class _Sender:
    """``send(payload)`` of :func:`ahead`: the payload pickled and written to the child's
    pipe by a thread (the pipe holds 64 KiB; the child reads it when its early part is
    done); :meth:`close` closes the pipe (nothing sent: the child reads end-of-file) and
    waits for the thread."""

    def __init__(self, fd: int):
        self.fd, self.sent, self.payload, self._thread = fd, False, None, None

    def send(self, payload) -> None:
        import pickle
        import threading

        if self.fd is None:
            raise RuntimeError("the plot process's payload is sent once")
        self.payload = payload
        try:
            data = pickle.dumps(payload)
        except Exception as exc:  # noqa: BLE001 - the child's part then runs here
            log.debug("plot process payload does not pickle (%s): drawn here", exc)
            self.close()
            return
        fd, self.fd, self.sent = self.fd, None, True
        self._thread = threading.Thread(target=_write_all, args=(fd, data),
                                        name="nirbeam-plot-payload", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def _write_all(fd: int, data: bytes) -> None:
    try:
        with open(fd, "wb") as f:
            f.write(data)
    except OSError:  # the child is gone (killed, crashed): said when it is reaped
        pass


def _kill(pid: int) -> None:
    """The child killed and reaped (nothing said if it is gone already)."""
    import signal

    for step in (lambda: os.kill(pid, signal.SIGKILL), lambda: os.waitpid(pid, 0)):
        try:
            step()
        except (ProcessLookupError, ChildProcessError):
            pass


def _child_call(fn) -> tuple:
    """In the child: ``fn()`` with every logger's handlers replaced by one keeping the
    records, and the warnings kept; (status, value, records, warnings)."""
    import traceback
    import warnings

    records: list = []

    class Keep(logging.Handler):
        def __init__(self, name):
            super().__init__()
            self.where = name

        def emit(self, record):
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.msg, record.args, record.exc_info = record.getMessage(), None, None
            records.append((self.where, record))

    loggers = [logging.getLogger()] + [v for v in logging.Logger.manager.loggerDict.values()
                                       if isinstance(v, logging.Logger)]
    for lg in loggers:
        if lg.handlers:
            lg.handlers = [Keep(None if lg is logging.getLogger() else lg.name)]
    with warnings.catch_warnings(record=True) as caught:
        try:
            status, value = "ok", fn()
        except BaseException as exc:  # noqa: BLE001 - raised in the parent
            status, value = "error", (exc, traceback.format_exc())
    shown = [(m.message, m.category, m.filename, m.lineno, m.line) for m in caught]
    return status, value, records, shown


def _dumps(msg) -> bytes:
    """The child's message pickled; an exception or warning that does not pickle (or does
    not unpickle) is replaced by a RuntimeError / UserWarning naming it."""
    import pickle

    status, value, records, shown = msg
    try:
        data = pickle.dumps(msg)
        pickle.loads(data)
        return data
    except Exception:  # noqa: BLE001
        pass
    if status == "error":
        exc, tb = value
        value = (RuntimeError(f"{type(exc).__name__}: {exc}"), tb)
    shown = [(m if _pickles(m) else UserWarning(str(m)), c if _pickles(c) else UserWarning,
              f, n, ln) for m, c, f, n, ln in shown]
    records = [r for r in records if _pickles(r)]
    return pickle.dumps((status, value, records, shown))


def _pickles(x) -> bool:
    import pickle

    try:
        pickle.loads(pickle.dumps(x))
        return True
    except Exception:  # noqa: BLE001
        return False


def _collect(pid: int, fd: int):
    """The child's message (None when it ended without one); the child reaped."""
    import pickle

    with open(fd, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return pickle.loads(data) if data else None


def _replay(msg, raise_: bool = True):
    """The child's records to this process's handlers, its warnings shown; its value
    returned or its exception raised."""
    import warnings

    status, value, records, shown = msg
    for where, record in records:
        lg = logging.getLogger(where) if where else logging.getLogger()
        for h in lg.handlers:
            if record.levelno >= h.level:
                h.handle(record)
    for m, c, f, n, _ln in shown:  # (through this process's filters: the same as there)
        warnings.warn_explicit(m, c, f, n)
    if status == "error":
        if raise_:
            exc, tb = value
            raise exc from _ChildTraceback(tb)
        return None
    return value


class _ChildTraceback(Exception):
    """The traceback of an exception raised in the plot process (its ``__cause__``)."""

    def __str__(self):
        return "in the plot process:\n" + (self.args[0] if self.args else "")
