"""deploy/: every config parses, says what the pinned tools accept, and the scripts behave.

Kubernetes and SLURM are not here: the manifests are checked against what the operator,
dask and Kubernetes expect (commands, limits, failure policy); the sbatch script runs with
stand-in ``dask``/``srun``/``nirbeam`` commands; ``deploy/dask-local.sh`` runs for real.
"""

from __future__ import annotations

import fnmatch
import os
import re
import signal
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"


def _k8s_bytes(q: str) -> float:
    m = re.fullmatch(r"([0-9.]+)\s*([KMGT]i?)?[Bb]?", str(q))
    assert m, f"not a quantity: {q!r}"
    v, unit = float(m.group(1)), m.group(2) or ""
    powers = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
              "Ti": 2**40, "": 1}
    return v * powers[unit]


def test_every_yaml_parses():
    files = sorted(K8S.glob("*.yaml"))
    assert len(files) >= 3
    for f in files:
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d]
        assert docs and all("apiVersion" in d and "kind" in d for d in docs), f


def _containers(pod_spec):
    return {c["name"]: c for c in pod_spec["containers"]}


def test_daskcluster_uses_current_dask_commands_and_memory_below_limit():
    from dask.utils import parse_bytes

    d = yaml.safe_load((K8S / "daskcluster.yaml").read_text())
    w = _containers(d["spec"]["worker"]["spec"])["worker"]
    s = _containers(d["spec"]["scheduler"]["spec"])["scheduler"]
    # distributed 2026.8 installs "dask" with sub-commands, not dask-worker / dask-scheduler
    assert w["args"][:2] == ["dask", "worker"], w["args"]
    assert s["args"][:2] == ["dask", "scheduler"], s["args"]
    args = w["args"]
    mem = parse_bytes(args[args.index("--memory-limit") + 1])
    limit = _k8s_bytes(w["resources"]["limits"]["memory"])
    assert mem < 0.95 * limit, (mem, limit)
    assert args[args.index("--nthreads") + 1] == "1"


def test_dask_worker_accepts_the_manifest_options():
    """The worker's options are ones the installed ``dask worker`` knows."""
    d = yaml.safe_load((K8S / "daskcluster.yaml").read_text())
    w = _containers(d["spec"]["worker"]["spec"])["worker"]
    dask = Path(sys.executable).parent / "dask"
    out = subprocess.run([str(dask), "worker", "--help"], capture_output=True, text=True,
                         timeout=120).stdout
    for opt in (a for a in w["args"] if a.startswith("--")):
        assert opt in out, opt


def test_job_does_not_retry_bad_input():
    d = yaml.safe_load((K8S / "nirbeam-job.yaml").read_text())
    spec = d["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy needs it
    rules = spec["podFailurePolicy"]["rules"]
    fail = [r for r in rules if r["action"] == "FailJob"]
    assert fail and 2 in fail[0]["onExitCodes"]["values"]
    assert fail[0]["onExitCodes"]["operator"] == "In"
    assert fail[0]["onExitCodes"]["containerName"] in _containers(spec["template"]["spec"])
    driver = _containers(spec["template"]["spec"])["driver"]
    assert driver["args"][:2] == ["nirbeam", "run"]


def _dockerignore_excluded(path: str, rules: list[str]) -> bool:
    excluded = False
    for r in rules:
        neg = r.startswith("!")
        pat = r[1:] if neg else r
        if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat.rstrip("/") + "/*") or \
                any(fnmatch.fnmatch("/".join(path.split("/")[:k]), pat.rstrip("/"))
                    for k in range(1, path.count("/") + 1)):
            excluded = not neg
    return excluded


def test_dockerignore_keeps_only_the_wheel():
    rules = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert _dockerignore_excluded(".venv/bin/python", rules)
    assert _dockerignore_excluded(".git/HEAD", rules)
    assert _dockerignore_excluded("demo-out/products/run.json", rules)
    assert _dockerignore_excluded("dist/other.tar.gz", rules)
    assert not _dockerignore_excluded("dist/nirbeam-0.1.0-py3-none-any.whl", rules)
    # what the Dockerfile copies is in the context
    copies = re.findall(r"^COPY\s+(\S+)", (K8S / "Dockerfile").read_text(), re.M)
    assert copies and all(not _dockerignore_excluded(c.replace("*", "0.1.0-py3-none-any"), rules)
                          for c in copies)


def test_beam_pinned_with_a_ceiling_and_the_image_inside_it():
    from packaging.requirements import Requirement

    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    beam = [Requirement(r) for r in proj["dependencies"] if r.startswith("apache-beam")]
    assert beam and any(s.operator in ("<", "<=", "~=", "==") for s in beam[0].specifier)
    pins = re.findall(r"apache-beam\[dask\]==([0-9.]+)", (K8S / "Dockerfile").read_text())
    assert pins and all(beam[0].specifier.contains(p) for p in pins)
    import apache_beam

    assert beam[0].specifier.contains(apache_beam.__version__)  # the tested version


@pytest.mark.parametrize("script", sorted(
    str(p.relative_to(ROOT)) for p in DEPLOY.rglob("*") if p.suffix in (".sh", ".sbatch")))
def test_shell_scripts_parse(script):
    r = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_python_deploy_scripts_compile():
    import py_compile

    for p in DEPLOY.rglob("*.py"):
        py_compile.compile(str(p), doraise=True)


STUB_DASK = """#!/bin/bash
echo "$$ $*" >> "$STUB_LOG"
if [ "$1" = scheduler ]; then
  while [ $# -gt 0 ]; do [ "$1" = --scheduler-file ] && f=$2; shift; done
  echo '{"address": "tcp://127.0.0.1:1"}' > "$f"
fi
exec sleep 300
"""
STUB_SRUN = """#!/bin/bash
while [[ $1 == --* ]]; do shift; done
exec "$@"
"""
STUB_NIRBEAM = """#!/bin/bash
sleep 1  # the background workers start meanwhile
echo "nirbeam $*" >> "$STUB_LOG"
exit "${STUB_RC:-0}"
"""


def _stubs(d: Path) -> Path:
    b = d / "bin"
    b.mkdir()
    for name, text in (("dask", STUB_DASK), ("srun", STUB_SRUN), ("nirbeam", STUB_NIRBEAM)):
        p = b / name
        p.write_text(text)
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return b


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False


@pytest.mark.parametrize("driver_rc", [0, 2])
def test_sbatch_script_exit_code_and_cleanup(tmp_path, driver_rc):
    """The driver's exit code is the job's, and the clean-up runs even when it fails."""
    b = _stubs(tmp_path)
    out = tmp_path / "out"
    log = tmp_path / "stub.log"
    env = {**os.environ, "PATH": f"{b}:{os.environ['PATH']}", "STUB_LOG": str(log),
           "STUB_RC": str(driver_rc), "NIRBEAM_ENV": str(tmp_path / "none"),
           "SLURM_JOB_ID": "42", "WORKER_LIFETIME": "55m"}
    r = subprocess.run(["bash", str(DEPLOY / "slurm" / "nirbeam_scheduler_file.sbatch"),
                        str(tmp_path / "in"), str(out), str(tmp_path / "crds")],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == driver_rc, r.stderr
    lines = log.read_text().splitlines()
    assert any(" worker " in ln and "--lifetime 55m" in ln for ln in lines), lines
    assert any(ln.startswith("nirbeam run") and "--dask-scheduler-file" in ln for ln in lines)
    assert not (out / ".dask-scheduler-42.json").exists()  # removed on every exit
    pids = [int(ln.split()[0]) for ln in lines if not ln.startswith("nirbeam")]
    deadline = time.time() + 10
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    left = [p for p in pids if _alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, "scheduler/worker left running"


@pytest.mark.slow
def test_dask_local_script_runs(tmp_path):
    """deploy/dask-local.sh: a real scheduler and worker, then nirbeam run against them."""
    from nirbeam.sim.simulator import simulate

    sim = simulate(tmp_path / "sim", preset="prism-sub512", nints=4, seed=2)
    out = tmp_path / "products"
    env = {**os.environ, "WORKERS": "1", "PORT": "0",
           "PYTHON_ENV": str(Path(sys.executable).parent.parent)}
    r = subprocess.run(["bash", str(DEPLOY / "dask-local.sh"), str(sim.outdir), "--refs",
                        str(sim.refs_dir), "--out", str(out), "--no-progress"],
                       env=env, capture_output=True, text=True, timeout=540, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    import json

    rj = json.loads((out / "run.json").read_text())
    assert rj["runner"]["name"] == "dask"
    (e,) = rj["exposures"]
    assert e["processed"] == 4 and e["deadlettered"] == 0


@pytest.mark.parametrize("rel", ["kubernetes/Dockerfile", "slurm/nirbeam_slurm.py",
                                 "slurm/nirbeam_scheduler_file.sbatch"])
def test_cluster_workers_calibrate_on_one_thread(rel):
    """A cluster's worker processes are the parallelism (one per core): each must read and
    calibrate on its own thread (``NIRBEAM_D1_THREADS=1``, beside ``OMP_NUM_THREADS=1``),
    not on nirbeam's in-process pool of up to 4 threads."""
    from nirbeam.stream.rate_steps import D1_THREADS_ENV

    text = (DEPLOY / rel).read_text()
    assert re.search(rf"\b{D1_THREADS_ENV}=1\b", text), f"deploy/{rel} does not set {D1_THREADS_ENV}=1"
