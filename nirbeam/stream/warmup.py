"""``nirbeam warmup``: compile the numba kernels of a default run into the cache, in parallel.

Every kernel is ``@njit(cache=True)``: compiled on its first call on a machine (per source
version), then loaded from numba's cache. Without a warm-up, a fresh install's first
``nirbeam run`` compiles ~106 kernels inside the run, one after the other (~118 CPU-s on
the PRISM 1200 x 8 x 32 x 512 exposure, 6x a warm run: ``bench/results/cold_compile_s11.json``).
This command compiles the same specialisations ahead of the run, spread over the cores
this process may use (``os.sched_getaffinity``), so the first run only loads them.

numba specialises on argument *types* (dtype, dimensions, layout), never on shapes, so
the specialisations a run needs are a fixed list per source version:
:data:`nirbeam.stream.warmup_signatures.SIGNATURES` (kernel, argument types, compile
seconds measured), recorded from a default PRISM run with ``nirbeam warmup --record
SIM_DIR``. ``tests/test_warmup.py`` fails when a default run calls a kernel with types the
list lacks (the warm-up would miss it).

Design: the entries are grouped per kernel (numba keeps one cache index file per
function: two processes adding signatures of one function at once could lose one entry)
and the groups are dealt to ``N`` spawned processes, largest first, onto the least loaded
process. Each process imports the kernel's module and calls ``dispatcher.compile(types)``
for each entry; numba writes each result to the cache as a lazy first call would (same
cache key: signature, CPU, source). A kernel that another kernel calls is compiled with
its caller (and cached on its own) — two processes compiling the same callee write the
same entry. A last pass in this process loads every entry (a cache hit costs
milliseconds) and compiles any entry a race lost, so the warm-up is complete even if an
index write was lost. Kernels missing from the list are simply compiled by the run as
before: the warm-up only moves work, it never changes what a run computes.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import resource
import sys
import time

__all__ = ["warmup", "plan", "parse_types", "format_types", "record", "top_level_calls",
           "write_signatures", "add_parser", "command"]


def _namespace() -> dict:
    from numba.core import types

    ns = dict(vars(types))
    ns.update({"bool": types.boolean, "none": types.none, "omitted": types.Omitted})
    return ns


def parse_types(text: str) -> tuple:
    """The numba argument types of a ``SIGNATURES`` entry (``repr`` of each type)."""
    return tuple(eval(text, {"__builtins__": {}}, _namespace()))  # noqa: S307 - our own list


def format_types(args) -> str:
    """The inverse of :func:`parse_types`: a tuple of numba types as text."""
    parts = [repr(a) for a in args]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def plan(entries, n: int) -> list[list]:
    """Deal ``entries`` (module, function, types, seconds) to ``n`` processes: grouped per
    function, largest group first onto the least loaded process."""
    groups: dict[tuple, list] = {}
    for e in entries:
        groups.setdefault((e[0], e[1]), []).append(e)
    bins: list[list] = [[] for _ in range(max(1, n))]
    load = [0.0] * len(bins)
    for g in sorted(groups.values(), key=lambda g: -sum(e[3] for e in g)):
        i = load.index(min(load))
        bins[i].extend(g)
        load[i] += sum(e[3] for e in g)
    return [b for b in bins if b]


def _compile(entries) -> dict:
    """Compile (or load) each entry in this process; counts of compiled and loaded ones."""
    compiled = loaded = 0
    missing = []
    for module, name, text, _ in entries:
        try:
            disp = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):  # the list is older than the code
            missing.append(f"{module}.{name}")
            continue
        sig = parse_types(text)
        if sig in disp.overloads:
            continue
        misses = disp.stats.cache_misses.get(sig, 0)
        disp.compile(sig)
        if disp.stats.cache_misses.get(sig, 0) > misses:
            compiled += 1
        else:
            loaded += 1
    return {"compiled": compiled, "loaded": loaded, "missing": missing}


def _cpu_s() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def warmup(jobs: int | None = None, entries=None) -> dict:
    """Compile ``entries`` (default: the default run's :data:`SIGNATURES`) into numba's
    cache with ``jobs`` processes (default: the cores this process may run on)."""
    if entries is None:
        from nirbeam.stream.warmup_signatures import SIGNATURES as entries
    jobs = jobs or len(os.sched_getaffinity(0))
    t0, c0 = time.perf_counter(), _cpu_s()
    parts = plan(entries, jobs)
    done = {"compiled": 0, "loaded": 0, "missing": []}
    if len(parts) > 1:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        with ProcessPoolExecutor(len(parts), mp_context=get_context("spawn")) as pool:
            for r in pool.map(_compile, parts):
                for k in done:
                    done[k] += r[k]
    check = _compile(entries)  # loads each entry; compiles what a lost index write dropped
    if len(parts) == 1:
        done = check
        check = {"compiled": 0, "loaded": 0, "missing": []}
    return {"entries": len(entries), "jobs": len(parts), "compiled": done["compiled"],
            "loaded_from_cache": done["loaded"], "recompiled_in_check": check["compiled"],
            "missing": sorted(set(done["missing"])),
            "wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(_cpu_s() - c0, 2)}


@contextlib.contextmanager
def top_level_calls():
    """Within the block: every specialisation of a nirbeam kernel that Python code asks
    for, as ``{(module, kernel, types text): seconds}`` (seconds: its first compile or
    cache load in this process, inclusive of the callees compiled with it).

    Recorded at :meth:`numba.core.dispatcher.Dispatcher.compile`, the one place a call
    from Python that has no specialisation yet goes through, whether the cache has it or
    not; compiles inside a compile (a kernel's callees, typed with the caller) are not
    top-level and not recorded: the caller's cached code contains them, and a warm run
    never asks for them. Test and record helper: patches numba's class for the block."""
    from numba.core.dispatcher import Dispatcher

    found: dict = {}
    depth = [0]
    original = Dispatcher.compile

    def compile(self, sig):
        depth[0] += 1
        t0 = time.perf_counter()
        try:
            return original(self, sig)
        finally:
            depth[0] -= 1
            mod = self.py_func.__module__
            if depth[0] == 0 and mod.startswith("nirbeam"):
                from numba.core import sigutils

                key = (mod, self.py_func.__name__,
                       format_types(sigutils.normalize_signature(sig)[0]))
                found.setdefault(key, round(time.perf_counter() - t0, 2))

    Dispatcher.compile = compile
    try:
        yield found
    finally:
        Dispatcher.compile = original


_RECORD_CHILD = """
import sys
from nirbeam.stream import cli, warmup
sim, out, path = sys.argv[1:4]
with warmup.top_level_calls() as found:
    rc = cli.main(["run", sim, "--refs", sim + "/refs", "--out", out, "--no-progress"])
warmup.write_signatures(path, found)
sys.exit(rc)
"""


def record(sim: str, path: str) -> int:
    """Run a default ``nirbeam run`` of ``sim`` in a fresh process against an empty numba
    cache, and write the kernels' top-level specialisations it needed (with their compile
    seconds, for :func:`plan`) to ``path`` (a ``warmup_signatures`` module)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="nirbeam-warmup-record-") as tmp:
        env = {**os.environ, "NUMBA_CACHE_DIR": os.path.join(tmp, "cache")}
        return subprocess.run([sys.executable, "-c", _RECORD_CHILD, sim,
                               os.path.join(tmp, "out"), path], env=env).returncode


def write_signatures(path: str, found: dict) -> None:
    """Write ``found`` (:func:`top_level_calls`) as a ``warmup_signatures`` module."""
    with open(path, "w") as f:
        f.write(_HEADER)
        for key in sorted(found):
            f.write(f"    {(*key, found[key])!r},\n")
        f.write(")\n")


_HEADER = '''"""The numba specialisations a default PRISM ``nirbeam run`` uses, for ``nirbeam warmup``.

Written by ``nirbeam warmup --record SIM_DIR`` (a ``nirbeam simulate`` folder); do not edit
by hand. Each entry: (module, kernel, argument types as numba ``repr``s, seconds the
kernel's compilation took in the recording run (an empty cache), inclusive of the callees
it compiled first). Only specialisations called from Python: a kernel's callees are
compiled with it and its cached code contains them.
"""

SIGNATURES = (
'''


def add_parser(sub) -> None:
    """The ``warmup`` sub-command."""
    w = sub.add_parser("warmup", help="compile the numba kernels of a default run into the "
                                      "cache (in parallel), so the first run only loads them")
    w.add_argument("--jobs", type=int, default=None,
                   help="processes (default: the cores this process may use)")
    w.add_argument("--record", metavar="SIM_DIR", default=None,
                   help="instead: run SIM_DIR and rewrite the list of specialisations")
    return w


def command(args) -> int:
    """``nirbeam warmup``."""
    if args.record:
        here = os.path.dirname(os.path.abspath(__file__))
        return record(args.record, os.path.join(here, "warmup_signatures.py"))
    res = warmup(args.jobs)
    print(f"nirbeam warmup: {res['compiled'] + res['recompiled_in_check']} compiled, "
          f"{res['loaded_from_cache']} already cached, of {res['entries']} specialisations, "
          f"{res['jobs']} processes, {res['wall_s']} s wall, {res['cpu_s']} CPU-s")
    if res["missing"]:
        print("nirbeam warmup: not in this version (list out of date): " + ", ".join(res["missing"]))
    return 0
