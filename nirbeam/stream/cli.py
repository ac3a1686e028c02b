"""``nirbeam`` command line: simulate, run, fit, plot.

Exit codes: 0 success; 2 bad input or bad usage (a file, keyword, config value, option or
output folder that cannot be used — the message names it); 3 the run ended but its
products are incomplete (dead letters, or an exposure without a white-light curve: see
run.json and deadletter.jsonl; a ``stream`` stopped by Ctrl-C exits 0 with run.json saying
what is incomplete); 4 an operating-system error (disk full, permission, I/O:
the message names it; rerun the same command once it is fixed, completed integrations are
kept); 1 an internal error (a bug: please report it with the traceback); 130 interrupted.

Options are strict: an unknown option is an error (with a "did you mean"). Options for
Apache Beam go after ``--`` (``nirbeam run IN --out O -- --direct_num_workers=2``) or carry
a ``--beam-`` prefix (``--beam-direct_num_workers=2``); unknown Beam options are refused too.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from nirbeam.stream.argv import (
    StrictParser,
    UsageError,
    check_beam_args,
    jwst_steps_to_set,
    os_error_in,
    split_beam_args,
    unrecognised,
)

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_INCOMPLETE = 3
EXIT_OS_ERROR = 4


def _workers_arg(v: str):
    """``--workers``: an integer, or ``auto`` (None)."""
    if v.strip() == "auto":
        return None
    try:
        return int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {v!r}") from None


def _add_runner_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runner", default="auto",
                   help="auto (default: in-process for a small exposure, else multiprocess on "
                        "the cores available), direct (in-process), multiprocess, dask or portable")
    p.add_argument("--workers", type=_workers_arg, default=None,
                   help="worker processes: N, or auto (default; $NIRBEAM_WORKERS overrides it): "
                        "1 for a small exposure, else one per 400 M pixel-groups up to the cores "
                        "available; --workers 1 runs in one process")
    p.add_argument("--dask-address", default=None, help="dask.distributed scheduler address")
    p.add_argument("--dask-scheduler-file", default=None, help="dask scheduler file (SLURM/jobqueue)")
    p.add_argument("--job-endpoint", default=None, help="Beam job service HOST:PORT (portable runner)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs)."""
    ap = StrictParser(
        prog="nirbeam",
        description="JWST NIRSpec time series on Apache Beam: uncal ramps to light curves.",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="log more")
    from nirbeam.stream import cli_support

    cli_support.add_global_args(ap)  # --version, --log-level, -q
    sub = ap.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="write a simulated NIRSpec BOTS exposure (uncal + refs + truth)")
    s.add_argument("outdir")
    s.add_argument("--preset", default="prism-sub512")
    s.add_argument("--nints", type=int, default=None)
    s.add_argument("--seed", type=int, default=0)

    r = sub.add_parser("run", help="process uncal files or folders into OUTDIR",
                       epilog="Options for Apache Beam go after '--' or as --beam-NAME=VALUE. "
                              "Exit codes: 0 ok, 2 bad input, 3 incomplete products, 4 OS error.")
    r.add_argument("inputs", nargs="+", help="uncal files or folders of them")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--refs", default=None, help="folder of CRDS-format reference files (e.g. a CRDS cache)")
    r.add_argument("--config", default=None, help="TOML or JSON config file")
    r.add_argument("--no-progress", action="store_true", help="do not print progress")
    r.add_argument("--allow-standins", action="store_true",
                   help="accept data-derived stand-ins for missing reference types (see "
                        "run.json for what each costs); without it a missing type is an error")
    r.add_argument("--overwrite", action="store_true",
                   help="recompute exposures whose earlier results in OUTDIR were made from "
                        "other inputs, references, settings or nirbeam version")
    _add_runner_args(r)
    cli_support.add_set_arg(r)

    f = sub.add_parser("fit", help="quick-look transit fit of a light-curve table")
    f.add_argument("table", help="ECSV, CSV or Parquet light curve")
    f.add_argument("--config", default=None)
    f.add_argument("--out", default=None, help="output folder (default: next to the table)")

    f.add_argument("--joint", action="store_true",
                   help="fit NRS1 and NRS2 together (default: each detector on its own)")

    ex = sub.add_parser("export", help="write a run's products in another tool's format")
    ex.add_argument("format", choices=["eureka"], help="eureka: Stage 3 SpecData.h5 + Stage 4 LCData.h5")
    ex.add_argument("outdir", help="a finished nirbeam run's --out folder")
    ex.add_argument("--to", default=None, help="destination folder (default OUTDIR/eureka)")

    pl = sub.add_parser("plot", help="draw every plot of a run's OUTDIR from its products")
    pl.add_argument("outdir")

    st = sub.add_parser("stream", help="light curves while an exposure arrives in a watched folder")
    st.add_argument("watch_dir", help="folder watched for *_uncal.fits segments (with "
                    "--replay-speed: an existing exposure to replay)")
    st.add_argument("--out", required=True, help="output folder")
    st.add_argument("--refs", default=None, help="folder of CRDS-format reference files")
    st.add_argument("--config", default=None, help="TOML or JSON config file")
    st.add_argument("--allow-standins", action="store_true",
                    help="accept data-derived stand-ins for missing reference types")
    st.add_argument("--until-complete", action="store_true",
                    help="exit once every exposure/detector seen has all NINTS integrations")
    st.add_argument("--poll", type=float, default=1.0, help="seconds between folder polls (1)")
    st.add_argument("--replay-speed", type=float, default=None,
                    help="replay WATCH_DIR's exposure at X times real time (inf: at once)")
    st.add_argument("--live-model-nints", type=int, default=8,
                    help="integrations the live extraction model is built from (8)")
    st.add_argument("--plot-every", type=float, default=30.0, help="seconds between live plots (30)")
    st.add_argument("--runner", default="direct",
                    help="Beam runner of the streaming pipeline: direct (in-process, default) "
                    "or portable (--job-endpoint); dask and multiprocess cannot stream")
    st.add_argument("--job-endpoint", default=None, help="Beam job service HOST:PORT (portable)")
    st.add_argument("--no-progress", action="store_true", help="do not print progress")
    cli_support.add_set_arg(st)
    cli_support.add_commands(sub)  # config, report
    for p in (s, r, f, pl, st):
        cli_support.add_global_args(p, sub=True)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nirbeam`` console script.

    Run as the console script or ``python -m nirbeam.stream.cli`` (``argv`` None), the
    process ends here once the command is done (:func:`_exit_now`): the interpreter's
    teardown of the ~3000 modules a run loads (Beam, numba, astropy, matplotlib) cost
    ~1.2 CPU-s per run and did nothing the run needs. Called with ``argv`` (tests,
    scripts), it returns the exit code as before.
    """
    rc = _main(argv)
    if argv is None and _is_entry_point():
        _exit_now(rc)
    return rc


#: set NIRBEAM_FAST_EXIT=0 to end the process through the interpreter's normal teardown
FAST_EXIT_ENV = "NIRBEAM_FAST_EXIT"


def _is_entry_point() -> bool:
    """True when this process is the ``nirbeam`` command itself: its ``__main__`` is the
    console script (which imported :func:`main`) or this module run with ``-m`` (whose
    ``__main__`` is this module); not under a profiler or tracer (``python -m cProfile``
    writes its output after :func:`main` returns; debuggers may want the teardown), and
    not with ``NIRBEAM_FAST_EXIT=0``."""
    if os.environ.get(FAST_EXIT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return False
    return getattr(sys.modules.get("__main__"), "main", None) is main


def _exit_now(rc: int) -> None:
    """End the process with ``rc`` as ``sys.exit(rc)`` would, without the module teardown.

    The same steps as the interpreter's own exit, in its order: non-daemon threads are
    joined (``threading._shutdown``: thread pools finish their queued work), the
    ``atexit`` callbacks run (logging's shutdown, multiprocessing's children, temporary
    folders, coverage data), standard streams are flushed (a failed flush exits 120, as
    Python does); then ``os._exit``. Everything a command writes is closed before
    :func:`main` returns. Falls back to returning (the normal exit) when this Python has
    no ``threading._shutdown``.
    """
    import atexit
    import threading

    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is None or threading.current_thread() is not threading.main_thread():
        return
    shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # noqa: BLE001 - as Python's exit: a stdout that cannot be written
            rc = rc or 120
    os._exit(int(rc) if isinstance(rc, int) else 1)


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    try:
        ours, beam_args = split_beam_args(argv)
        ours = jwst_steps_to_set(ours)
        args, extras = ap.parse_known_args(ours)
        if extras:
            raise UsageError(unrecognised(ap, getattr(args, "command", None), extras))
        if beam_args and args.command != "run":
            raise UsageError(f"nirbeam {args.command}: takes no Beam options (got {beam_args})")
        check_beam_args(beam_args)
    except UsageError as exc:
        print(f"{exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    from nirbeam.stream import cli_support

    cli_support.start(args, argv)  # console level, OUTDIR/nirbeam.log
    from nirbeam.stream.config import ConfigError
    from nirbeam.stream.uncal import BadInputError

    try:
        return _dispatch(args, beam_args)
    except (BadInputError, ConfigError) as exc:
        logging.getLogger("nirbeam.cli").info("bad input: %s", exc)
        print(f"nirbeam: bad input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("nirbeam: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001
        ose = os_error_in(exc)
        if ose is not None:
            where = f": {ose.filename}" if getattr(ose, "filename", None) else ""
            logging.getLogger("nirbeam.cli").info("operating-system error: %s", ose)
            print(f"nirbeam: operating-system error: {ose.strerror or ose}{where} "
                  f"(errno {ose.errno}). Fix it (free space, permissions) and rerun the same "
                  "command: completed integrations are kept", file=sys.stderr)
            return EXIT_OS_ERROR
        logging.getLogger("nirbeam.cli").exception("internal error")
        traceback.print_exc()
        print("nirbeam: internal error (a bug): please report the traceback above", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        cli_support.stop()


def _dispatch(args, beam_args) -> int:
    from nirbeam.stream import cli_support

    rc = cli_support.dispatch(args)  # config, plot, report
    if rc is not None:
        return rc
    if args.command == "simulate" and args.preset.startswith("fs"):  # FS nod sets (issue 16)
        from nirbeam.sim.fs import main_fs

        return main_fs(args.outdir, args.preset, args.nints, args.seed)
    if args.command == "simulate" and args.preset.startswith("mos"):
        from nirbeam.sim.mos import simulate_mos_cli

        return simulate_mos_cli(args)
    if args.command == "simulate" and args.preset.startswith("ifu"):  # IFU dithers (issue 18)
        from nirbeam.sim.ifu import simulate_ifu

        res = simulate_ifu(args.outdir, preset=args.preset, seed=args.seed)
        print(f"simulated {args.preset} ({len(res.uncal)} dithers, {res.elapsed_s:.1f} s) into "
              f"{os.path.abspath(args.outdir)}; truth: {res.truth}")
        return EXIT_OK
    if args.command == "simulate":
        from nirbeam.sim.simulator import PRESETS, simulate
        from nirbeam.stream.config import ConfigError

        if args.preset not in PRESETS:
            raise ConfigError(f"--preset {args.preset!r}: expected one of {sorted(PRESETS)}")
        if args.nints is not None and args.nints < 1:
            raise ConfigError(f"--nints {args.nints}: expected >= 1")
        res = simulate(args.outdir, preset=args.preset, nints=args.nints, seed=args.seed)
        cfg = write_sim_config(res)
        print(f"simulated {args.preset} ({res.config.nints} integrations, {res.elapsed_s:.1f} s) "
              f"into {os.path.abspath(args.outdir)}")
        print(f"  refs:   {res.refs_dir}")
        for p in res.uncal:
            print(f"  uncal:  {os.path.basename(p)}")
        for det, p in res.truth.items():
            print(f"  truth:  {os.path.basename(p)} ({det})")
        print(f"  config: {cfg} (transit parameters for the quick-look fit)")
        return EXIT_OK
    if args.command == "run":  # one lookup in the modes' dispatch table
        from nirbeam.modes import classify_inputs
        from nirbeam.stream.run_commands import command_of

        return command_of(classify_inputs(args.inputs).entry)(args, beam_args)
    if args.command == "stream":
        from nirbeam.stream.config import ConfigError, load_config_file
        from nirbeam.stream.runners import STREAMING_CAPABLE, RunnerSpec
        from nirbeam.stream.streaming import run_stream

        spec = RunnerSpec(name=args.runner, job_endpoint=args.job_endpoint)
        try:
            spec.validate()
            if spec.name not in STREAMING_CAPABLE:
                raise ValueError(f"--runner {spec.name!r} cannot honour event-time windows in "
                                 f"streaming mode; use one of {list(STREAMING_CAPABLE)}")
            if args.poll <= 0 or (args.replay_speed is not None and not args.replay_speed > 0):
                raise ValueError("--poll and --replay-speed must be > 0")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        config = cli_support.effective_config(args, load_config_file(args.config))
        print(f"nirbeam stream: {'replaying' if args.replay_speed else 'watching'} "
              f"{os.path.abspath(args.watch_dir)} -> {os.path.abspath(args.out)} (Ctrl-C to stop)",
              file=sys.stderr, flush=True)
        res = run_stream(args.watch_dir, args.out, refs_dir=args.refs, config=config,
                         until_complete=args.until_complete, poll=args.poll,
                         replay_speed=args.replay_speed, runner=spec,
                         live_model_nints=args.live_model_nints, plot_every=args.plot_every,
                         allow_standins=args.allow_standins,
                         progress=not (args.no_progress or args.quiet))
        s = res.summary.get("streaming", {})
        if s.get("stopped_by_signal"):
            print("nirbeam stream: stopped; in-flight integration finished, products finalised "
                  "over what arrived (rerun to continue)", file=sys.stderr)
        cli_support.print_summary(res.summary)
        cli_support.finish_run(args.out)
        from nirbeam.stream.pipeline import exit_status

        if s.get("stopped_by_signal"):  # a stop the user asked for: products over what came
            return res.exit_code
        return max(res.exit_code, exit_status(res.summary))
    if args.command == "fit":
        from nirbeam.stream.products import fit_command
        from nirbeam.stream.uncal import BadInputError

        if not os.path.isfile(args.table):
            raise BadInputError(args.table, "no such light-curve table")
        if not args.table.lower().endswith((".ecsv", ".csv", ".parquet", ".pq")):
            raise BadInputError(args.table, "not a light-curve table: expected an .ecsv, .csv "
                                "or .parquet file (e.g. OUTDIR/whitelight.ecsv)")

        return fit_command(args.table, args.config, args.out, joint=args.joint)
    if args.command == "export":
        from nirbeam.stream.export import export_command

        return export_command(args.format, args.outdir, args.to)
    raise AssertionError(args.command)


def write_sim_config(res) -> str:
    """Write ``OUTDIR/nirbeam.toml``: a run config with the simulated transit's parameters.

    Observers start a quick-look fit from literature values; for a simulated exposure the
    equivalent is the simulator's own (period, a/R*, inclination, limb darkening, t0).
    """
    from astropy.io import fits

    h = fits.getheader(res.truth_file)
    path = os.path.join(str(res.outdir), "nirbeam.toml")
    with open(path, "w") as fh:
        fh.write("# nirbeam run config for this simulated exposure (written by nirbeam simulate)\n")
        fh.write("[fit]\n")
        fh.write(f"per = {float(h['PER'])!r}\n")
        fh.write(f"t0 = {float(h['T0'])!r}\n")
        fh.write(f"rp = {float(h['RP'])!r}\n")
        fh.write(f"a = {float(h['A_RS'])!r}\n")
        fh.write(f"inc = {float(h['INC'])!r}\n")
        fh.write(f"u = [{float(h['U1'])!r}, {float(h['U2'])!r}]\n")
        fh.write('free = ["t0", "rp", "a", "inc"]\n')
        maps = getattr(res, "wavelength_maps", {})
        if maps:  # the simulated wavelengths, given as a user gives a wavelength map
            p0 = os.path.abspath(str(next(iter(maps.values()))))
            det0 = next(iter(maps)).lower()
            tmpl = p0[: p0.rfind(det0)] + "{detector}" + p0[p0.rfind(det0) + len(det0):]
            fh.write("[extract]\n")
            fh.write(f"wavelength_map = {tmpl!r}\n".replace("'", '"'))
    return path


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
