"""``nirbeam run``'s batch commands: one per row of :data:`nirbeam.modes.DISPATCH`.

Each is ``command(args, beam_args) -> exit code`` and runs one mode's batch pipeline with
what it needs from the command line (runner, config, ``--set``), in the order that mode
has always taken them:

- :func:`run_mos`: :func:`nirbeam.pipelines.mos.run_cli` (level-2 or uncal MOS inputs;
  no Beam runner options);
- :func:`run_ifu`: the runner, then :func:`nirbeam.pipelines.ifu.run_command` (before the
  config file: ``--set ifu.*`` are its own);
- :func:`run_fs`: the runner and config, then :func:`nirbeam.pipelines.fs.main_fs`;
- :func:`run_bots`: the runner and config, then :func:`nirbeam.stream.pipeline.run` (the
  time-series driver), its summary, ``effective_config.toml`` and the report page.

The CLI looks the entry up (:func:`nirbeam.modes.classify_inputs`) and calls its command
(:func:`command_of`); nothing here chooses a mode.
"""

from __future__ import annotations

import importlib

from nirbeam.stream import cli_support

__all__ = ["run_mos", "run_ifu", "run_fs", "run_bots", "command_of", "runner_spec", "print_cpu"]


def command_of(entry):
    """The callable a :class:`nirbeam.modes.ModeEntry` names (``"module:function"``)."""
    mod, _, fn = entry.command.partition(":")
    return getattr(importlib.import_module(mod), fn)


def runner_spec(args, beam_args):
    """``--runner`` and its options as a checked :class:`~nirbeam.stream.runners.RunnerSpec`."""
    from nirbeam.stream.config import ConfigError
    from nirbeam.stream.runners import RunnerSpec, available_cores, requested_workers

    try:
        workers = requested_workers(args.workers)  # --workers, else $NIRBEAM_WORKERS
        local = args.runner == "multiprocess" or (
            args.runner == "dask" and not (args.dask_address or args.dask_scheduler_file))
        if workers is None and local:  # local worker processes: one per core
            workers = available_cores()
        spec = RunnerSpec(
            name=args.runner, workers=workers, dask_address=args.dask_address,
            dask_scheduler_file=args.dask_scheduler_file, job_endpoint=args.job_endpoint,
            beam_args=tuple(beam_args),
        )
        spec.validate()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return spec


def _config(args) -> dict:
    from nirbeam.stream.config import load_config_file

    return cli_support.effective_config(args, load_config_file(args.config))


def _sized_elsewhere(args, beam_args):
    """The runner of a mode whose driver does not size ``auto`` (FS, IFU, MOS): ``auto``
    becomes ``direct`` (one process, as before), or ``multiprocess`` with ``--workers N``
    / ``$NIRBEAM_WORKERS`` > 1, before any block size is derived from it."""
    from nirbeam.stream.runners import resolve_auto

    return resolve_auto(runner_spec(args, beam_args), None)[0]


def run_mos(args, beam_args) -> int:
    """MOS inputs (NRS_MSASPEC uncal, or jwst level-2 slit files)."""
    cli_support.skip_unused_table_io()
    from nirbeam.pipelines.mos import run_cli

    if getattr(args, "runner", None) == "auto":  # run_cli builds its own spec from args
        spec = _sized_elsewhere(args, beam_args)
        args.runner, args.workers = spec.name, spec.workers

    return run_cli(args)


def run_ifu(args, beam_args) -> int:
    """NRS_IFU inputs (issue 18)."""
    cli_support.skip_unused_table_io()
    from nirbeam.pipelines.ifu import run_command

    return run_command(args, _sized_elsewhere(args, beam_args))


def run_fs(args, beam_args) -> int:
    """NRS_FIXEDSLIT inputs (issue 16)."""
    cli_support.skip_unused_table_io()
    spec = _sized_elsewhere(args, beam_args)
    from nirbeam.pipelines.fs import main_fs

    return main_fs(args, _config(args), spec)


def run_bots(args, beam_args) -> int:
    """Time-series inputs (NRS_BRIGHTOBJ or TSOVISIT=T), and inputs that cannot be read
    (the driver names what is wrong with them)."""
    cli_support.skip_unused_table_io()
    from nirbeam.stream.pipeline import run

    spec = runner_spec(args, beam_args)
    config = _config(args)
    restore = cli_support.exit_on_interrupt()
    try:
        res = run(args.inputs, args.out, refs_dir=args.refs, config=config, runner=spec,
                  progress=not (args.no_progress or args.quiet),
                  allow_standins=args.allow_standins, overwrite=args.overwrite)
    finally:
        restore()
    cli_support.print_summary(res.summary)
    print_cpu(res.summary)
    cli_support.finish_run(args.out)
    return res.exit_code


def print_cpu(summary: dict) -> None:
    """One line: workers, wall and CPU seconds, throughput whole machine and per core."""
    c = summary.get("cpu")
    if not c:
        return
    r = c.get("mpix_groups_per_s", {})
    print(f"  {c['workers']} worker(s) on {c['cores_available']} core(s): {c['wall_s']} s wall, "
          f"{c['cpu_s']} CPU-s; {r.get('whole_machine')} M pixel-groups/s whole machine, "
          f"{r.get('per_core')} per core")
