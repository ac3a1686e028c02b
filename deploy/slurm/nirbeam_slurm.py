"""nirbeam on a SLURM cluster through dask-jobqueue (not run here: no SLURM on the build
machine; see deploy/README.md for what was verified).

Run the driver on a login node or inside a small interactive/batch allocation that can
reach the compute nodes:

    python deploy/slurm/nirbeam_slurm.py /shared/jw01366/uncal --out /shared/jw01366/products \
        --refs /shared/crds_cache --jobs 8 --account PROJ --queue compute

Each SLURM job started by dask-jobqueue runs ``--processes`` dask worker processes of one
thread each (one integration per core at a time). The inputs, references and OUTDIR must
be on a file system every node mounts at the same path (Lustre, GPFS, NFS...): the workers
read the uncal segments and write their regions of OUTDIR/cubes.zarr directly.

Needs, in the same Python environment on the login and compute nodes: ``pip install
"nirbeam[dask]" dask-jobqueue`` (same versions everywhere).
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--refs", default=None)
    ap.add_argument("--config", default=None)
    ap.add_argument("--jobs", type=int, default=4, help="SLURM jobs (nodes or node slices)")
    ap.add_argument("--processes", type=int, default=16, help="worker processes per job")
    ap.add_argument("--memory-per-process-gb", type=float, default=2.0,
                    help="a g395h SUB2048 integration needs ~0.3 GB; 2 GB leaves room")
    ap.add_argument("--walltime", default="02:00:00")
    ap.add_argument("--lifetime", default="115m",
                    help="workers retire gracefully after this (keep it a few minutes under "
                         "--walltime, so SLURM never kills a worker mid-write)")
    ap.add_argument("--queue", default=None, help="SLURM partition (#SBATCH -p)")
    ap.add_argument("--account", default=None, help="SLURM account (#SBATCH -A)")
    ap.add_argument("--interface", default=None, help="network interface, e.g. ib0")
    ap.add_argument("--local-directory", default="$TMPDIR",
                    help="node-local scratch for dask spill files")
    args = ap.parse_args(argv)

    from dask_jobqueue import SLURMCluster
    from distributed import Client

    from nirbeam.stream.config import load_config_file
    from nirbeam.stream.pipeline import run
    from nirbeam.stream.runners import RunnerSpec

    cluster = SLURMCluster(
        queue=args.queue,
        account=args.account,
        cores=args.processes,                 # one thread per worker process
        processes=args.processes,
        memory=f"{args.memory_per_process_gb * args.processes:.0f}GB",
        walltime=args.walltime,
        interface=args.interface,
        local_directory=args.local_directory,
        job_script_prologue=[
            # numpy/BLAS must not start extra threads inside each worker process
            "export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NIRBEAM_D1_THREADS=1",
        ],
        job_name="nirbeam-dask",
        # dask-jobqueue's advice for walltime-limited jobs: retire before SLURM kills
        worker_extra_args=["--lifetime", args.lifetime, "--lifetime-stagger", "2m"],
    )
    print(cluster.job_script())
    cluster.scale(jobs=args.jobs)
    try:
        with Client(cluster) as client:
            # wait for at least one job's workers; the others join while the run goes on
            client.wait_for_workers(args.processes, timeout=3600)
        res = run(
            args.inputs, args.out, refs_dir=args.refs, config=load_config_file(args.config),
            runner=RunnerSpec(name="dask", dask_address=cluster.scheduler_address),
        )
    finally:
        cluster.close()
    for e in res.summary["exposures"]:
        print(f"{e['exposure']} {e['detector']}: {e['processed']} processed, "
              f"{e['deadlettered']} dead-lettered of NINTS={e['nints']}")
    return res.exit_code


if __name__ == "__main__":
    sys.exit(main())
