"""The parts of the ``nirbeam`` command line that are not a pipeline: flags, logging, commands.

:mod:`nirbeam.stream.cli` builds the parser and dispatches; this module adds

- global flags: ``--version``, ``--log-level LEVEL``, ``-q/--quiet`` (accepted before or
  after the sub-command);
- ``--set section.key=value`` (repeatable) for ``run`` and ``stream``;
- the ``config`` (``--defaults``, or ``--config FILE --set ...`` to print the effective
  settings) and ``report OUTDIR`` sub-commands, and ``plot OUTDIR`` from the products;
- ``warmup`` (:mod:`nirbeam.stream.warmup`: the default run's numba kernels compiled into
  the cache, in parallel);
- :func:`start`: console logging at the chosen level and ``OUTDIR/nirbeam.log``, always;
- :func:`effective_config`: the config file with the ``--set`` overrides merged, checked,
  and written to the log as TOML.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from nirbeam import __version__
from nirbeam.stream.progress import LEVELS, close_logging, console_level, setup_logging

__all__ = ["add_global_args", "add_set_arg", "add_commands", "start", "stop",
           "effective_config", "dispatch", "plot_command", "finish_run", "exit_on_interrupt",
           "print_summary", "skip_unused_table_io"]

log = logging.getLogger("nirbeam.cli")


def add_global_args(ap: argparse.ArgumentParser, *, sub: bool = False) -> None:
    """``--version`` (top level), ``--log-level`` and ``-q`` (also after a sub-command)."""
    d = {"default": argparse.SUPPRESS} if sub else {}
    if not sub:
        ap.add_argument("--version", action="version", version=f"nirbeam {__version__}")
    ap.add_argument("--log-level", type=str.upper, choices=LEVELS, metavar="LEVEL",
                    help=f"console log level: {', '.join(LEVELS)} (default WARNING; "
                         "OUTDIR/nirbeam.log always gets INFO)", **({"default": None} | d))
    ap.add_argument("-q", "--quiet", action="store_true",
                    help="errors only, no progress display", **({"default": False} | d))
    if sub:
        ap.add_argument("-v", "--verbose", action="store_true", help="log more (INFO)", **d)


def add_set_arg(p: argparse.ArgumentParser) -> None:
    """``--set section.key=value`` (repeatable) on a sub-command that takes a config."""
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE",
                   help="override one setting, e.g. --set detector1.jump.rejection_threshold=5 "
                        "(repeatable; values are TOML: 5, true, \"fft\", [8.0, 15.0]); "
                        "see `nirbeam config --defaults`; jwst's --steps.<step>.<param>=VALUE "
                        "works too (e.g. --steps.jump.rejection_threshold=5)")


def add_commands(sub) -> None:
    """The ``config``, ``report`` and ``warmup`` sub-commands."""
    c = sub.add_parser("config", help="print settings as TOML: the defaults, or the effective "
                                      "settings of --config FILE and --set overrides")
    c.add_argument("--defaults", action="store_true",
                   help="every setting with its default and a comment (the full TOML)")
    c.add_argument("--config", default=None, help="TOML or JSON config file")
    add_set_arg(c)
    add_global_args(c, sub=True)
    r = sub.add_parser("report", help="write OUTDIR/report.html: plots, accounting, "
                                      "references, timings (from the products alone)")
    r.add_argument("outdir")
    r.add_argument("--no-plots", action="store_true",
                   help="use the plots already in OUTDIR/plots (do not redraw)")
    add_global_args(r, sub=True)
    from nirbeam.stream import warmup

    add_global_args(warmup.add_parser(sub), sub=True)


def _outdir(args) -> str | None:
    if args.command in ("run", "stream"):
        return args.out
    if args.command in ("plot", "report"):
        return args.outdir
    return None


def start(args, argv: list[str] | None = None) -> str | None:
    """Set up logging for the parsed ``args`` (of ``argv``); returns the log file (or None)."""
    level = console_level(getattr(args, "log_level", None), getattr(args, "verbose", False),
                          getattr(args, "quiet", False))
    outdir = _outdir(args)
    path = setup_logging(level, outdir)
    if outdir is not None:
        import shlex

        cmd = sys.argv[1:] if argv is None else list(argv)
        log.info("nirbeam %s: nirbeam %s", __version__, shlex.join(cmd))
    return path


def stop() -> None:
    """Flush and detach the log handlers (uploads a URL OUTDIR's log)."""
    close_logging()


def effective_config(args, config: dict) -> dict:
    """``config`` with ``--set`` merged in (checked); logs the effective settings as TOML."""
    from nirbeam.stream.config_cli import apply_overrides, settings_toml
    from nirbeam.stream.settings import Settings

    overrides = list(getattr(args, "overrides", []) or [])
    merged = apply_overrides(config, overrides)
    if overrides:
        log.info("--set overrides: %s", " ".join(overrides))
    try:
        text = settings_toml(Settings.from_dict(merged), with_docs=False)
        log.info("effective configuration:\n%s", text)
    except Exception:  # noqa: BLE001 - the run itself reports a bad config
        pass
    return merged


def dispatch(args) -> int | None:
    """Run ``config``, ``plot``, ``report`` or ``warmup``; None for the other commands."""
    if args.command == "config":
        from nirbeam.stream.config import load_config_file
        from nirbeam.stream.config_cli import defaults_toml, settings_toml
        from nirbeam.stream.settings import Settings

        if args.defaults:
            if args.config or args.overrides:
                from nirbeam.stream.config import ConfigError

                raise ConfigError("config --defaults takes no --config or --set "
                                  "(drop --defaults to print the effective settings)")
            sys.stdout.write(defaults_toml())
            return 0
        cfg = effective_config(args, load_config_file(args.config))
        sys.stdout.write(settings_toml(Settings.from_dict(cfg), header=(
            "effective settings" + (f" of {args.config}" if args.config else "")
            + (f" with --set {' '.join(args.overrides)}" if args.overrides else ""))))
        return 0
    if args.command == "plot":
        return plot_command(args.outdir)
    if args.command == "warmup":
        from nirbeam.stream import warmup

        return warmup.command(args)
    if args.command == "report":
        from nirbeam.sinks.report import write_report

        path = write_report(args.outdir, redraw=not args.no_plots)
        print(f"report: {path}")
        return 0
    return None


def _check_products(outdir: str) -> None:
    from nirbeam.sinks import fs
    from nirbeam.stream.uncal import BadInputError

    if not fs.isdir(fs.join(outdir, "cubes.zarr")):
        raise BadInputError(outdir, "no cubes.zarr: not a nirbeam output folder (expected the "
                                    "OUTDIR of `nirbeam run` or `nirbeam stream`)")


def plot_command(outdir: str) -> int:
    """``nirbeam plot OUTDIR``: every plot from the products alone (no uncal, no rewrite)."""
    from nirbeam.sinks import fs
    from nirbeam.sinks.diagnostics import plot_products

    _check_products(outdir)
    entries = plot_products(outdir)
    drawn = [e for e in entries if e.file]
    for e in entries:
        if not e.file:
            print(f"  {e.kind} ({e.group}): skipped: {e.note}", file=sys.stderr)
    print(f"{len(drawn)} plots in {fs.join(outdir, 'plots')}")
    return 0


CONFIG_NAME = "effective_config.toml"


def write_effective_config(outdir: str) -> str | None:
    """``OUTDIR/effective_config.toml``: the run's settings (file + ``--set``), every key.

    Written from ``run.json``'s ``config_input``; ``--config`` it to repeat the run.
    """
    import json

    from nirbeam.sinks import fs
    from nirbeam.stream.config_cli import settings_toml
    from nirbeam.stream.settings import Settings

    rj = fs.join(outdir, "run.json")
    if not fs.isfile(rj):
        return None
    cfg = json.loads(fs.read_text(rj)).get("config_input", {})
    path = fs.join(outdir, CONFIG_NAME)
    fs.write_text(path, settings_toml(Settings.from_dict(cfg), header=(
        f"effective settings of the run in {fs.abspath(outdir)} (file and --set overrides);\n"
        f"repeat it with: nirbeam run ... --config {CONFIG_NAME}")))
    return path


def finish_run(outdir: str) -> None:
    """After ``run``/``stream``: ``effective_config.toml`` and ``report.html``."""
    from nirbeam.sinks.report import write_report

    try:
        write_effective_config(outdir)
    except Exception as exc:  # noqa: BLE001 - the products are written; this is extra
        log.warning("effective_config.toml failed: %s", exc)
    try:
        path = write_report(outdir, redraw=False)
        log.info("report: %s", path)
        print(f"report: {path}")
    except Exception as exc:  # noqa: BLE001 - the products are written; the page is extra
        log.warning("report page failed: %s", exc)


def skip_unused_table_io() -> None:
    """Keep astropy from registering its ASDF table reader/writer in this process.

    ``import astropy.table`` imports ``asdf_astropy.io.connect`` whenever asdf-astropy is
    installed, and asdf's import scans every installed distribution's entry points
    (~0.3 CPU-s of a run). nirbeam never reads or writes a Table as ASDF (its tables are
    ECSV, FITS and Parquet), so a run command tells astropy that asdf-astropy is absent
    (``astropy.utils.compat.optional_deps.HAS_ASDF_ASTROPY``, read only there) before the
    products' first ``astropy.table`` import. Nothing is done once ``astropy.table`` is
    imported (the registration has happened) or when astropy lacks the flag.
    """
    if "astropy.table" in sys.modules:
        return
    try:
        from astropy.utils.compat import optional_deps
    except ImportError:  # pragma: no cover - astropy is a dependency
        return
    if "HAS_ASDF_ASTROPY" in getattr(optional_deps, "__all__", ()):
        optional_deps.HAS_ASDF_ASTROPY = False


def exit_on_interrupt():
    """Ctrl-C / SIGTERM end a batch run at once, saying how to resume.

    Beam's in-process runner retries a bundle that raised KeyboardInterrupt, so the
    default handler would not stop it. Nothing is lost by stopping hard: every zarr chunk
    is written atomically and an integration counts as done only once its completion
    marker is written, so a rerun of the same command completes the run.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum, _frame):
        name = signal.Signals(signum).name
        print(f"\nnirbeam: {name}: stopped; rerun the same command to resume "
              "(completed integrations are kept)", file=sys.stderr, flush=True)
        os._exit(130 if signum == signal.SIGINT else 128 + signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore():
        for s, h in old.items():
            signal.signal(s, h)

    return restore


def print_summary(summary: dict) -> None:
    """Per exposure/detector: processed, dead letters, stand-ins; where the products are."""
    for e in summary.get("exposures", []):
        print(
            f"{e['exposure']} {e['detector']}: {e['processed']} processed, "
            f"{e['deadlettered']} dead-lettered of NINTS={e['nints']}"
            + (f"; {e['extract_failed']} extraction failures" if e.get("extract_failed") else "")
            + ("" if e.get("whitelight_points", 1) else "; no white-light curve")
            + ("" if e["complete"] else "  (INCOMPLETE: see deadletter.jsonl)")
        )
    used = sorted({t for e in summary.get("exposures", []) for t in e.get("standins", {})})
    if used:
        print(f"nirbeam: stand-ins used for {', '.join(used)} (--allow-standins); what each "
              "costs is in run.json (exposures[].standins)", file=sys.stderr)
    bad = sum(len(e.get("bad_int_times", {})) for e in summary.get("exposures", []))
    if bad:
        print(f"nirbeam: {bad} integration(s) with a bad INT_TIMES row flagged DO_NOT_USE "
              "(run.json exposures[].bad_int_times)", file=sys.stderr)
    n = summary.get("deadletters")
    if n:
        print(f"{n} dead letters in deadletter.jsonl: products are incomplete (exit code 3)")
    print(f"products in {summary.get('outdir')} ({summary.get('wall_s')} s)")
