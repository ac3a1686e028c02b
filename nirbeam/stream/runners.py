"""Beam runner selection: the same pipeline on the in-process runner, local processes,
Beam on Dask, or a portable job service (Flink, Spark, Dataflow).

No runner here downloads anything: the default is ``FnApiRunner`` (the DirectRunner would
first try to fetch a binary).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from apache_beam.options.pipeline_options import PipelineOptions

__all__ = ["RunnerSpec", "RUNNERS", "make_runner", "STREAMING_CAPABLE"]

RUNNERS = ("direct", "multiprocess", "dask", "portable")
#: Runners that honour event-time windows and triggers in streaming mode.
STREAMING_CAPABLE = ("direct", "portable")


@dataclass(frozen=True)
class RunnerSpec:
    """Which runner, with its deploy-only settings (from the CLI or deploy/ configs)."""

    name: str = "direct"
    workers: int | None = None
    dask_address: str | None = None
    dask_scheduler_file: str | None = None
    job_endpoint: str | None = None
    beam_args: tuple[str, ...] = field(default_factory=tuple)

    def validate(self):
        """Refuse unknown runners and missing settings."""
        if self.name not in RUNNERS:
            raise ValueError(f"--runner {self.name!r}: expected one of {list(RUNNERS)}")
        if self.name == "portable" and not self.job_endpoint:
            raise ValueError("--runner portable needs --job-endpoint HOST:PORT")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {self.workers}")


def make_runner(spec: RunnerSpec, streaming: bool = False):
    """Return ``(runner, PipelineOptions, cleanup)`` for a spec.

    Raises
    ------
    ValueError
        For a streaming pipeline on a runner that cannot honour event-time windows.
    """
    spec.validate()
    if streaming and spec.name not in STREAMING_CAPABLE:
        raise ValueError(
            f"runner {spec.name!r} cannot run a streaming pipeline with event-time windows "
            f"(Beam on Dask silently puts everything in the global window); use one of "
            f"{list(STREAMING_CAPABLE)}"
        )
    args = list(spec.beam_args)
    cleanup = None
    if spec.name == "direct":
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        runner = FnApiRunner()
        args += ["--direct_num_workers=1"]
    elif spec.name == "multiprocess":
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        runner = FnApiRunner()
        args += [
            f"--direct_num_workers={spec.workers or 2}",
            "--direct_running_mode=multi_processing",
        ]
    elif spec.name == "dask":
        from apache_beam.runners.dask.dask_runner import DaskRunner

        runner = DaskRunner()
        if spec.dask_address:
            args += [f"--dask_client_address={spec.dask_address}"]
        elif spec.dask_scheduler_file:
            from distributed import Client

            client = Client(scheduler_file=spec.dask_scheduler_file)
            args += [f"--dask_client_address={client.scheduler.address}"]
            cleanup = client.close
        else:
            from distributed import Client, LocalCluster

            cluster = LocalCluster(
                n_workers=spec.workers or 2, threads_per_worker=1, processes=True,
                dashboard_address=None,
            )
            client = Client(cluster)
            args += [f"--dask_client_address={cluster.scheduler_address}"]

            def cleanup():
                client.close()
                cluster.close()
    else:  # portable
        from apache_beam.runners.portability.portable_runner import PortableRunner

        runner = PortableRunner()
        args += [f"--job_endpoint={spec.job_endpoint}"]
        if not any(a.startswith("--environment_type") for a in args):
            args += ["--environment_type=LOOPBACK"]
    if streaming:
        args += ["--streaming"]
    return runner, PipelineOptions(args), cleanup
