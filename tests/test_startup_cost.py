"""The fixed cost of a ``nirbeam`` process (issue 14, session 9: startup).

Guards what ``bench/startup_cost.py`` measures, without timing anything:

- the ``nirbeam`` command ends without the interpreter's module teardown
  (``cli._exit_now``), yet as ``sys.exit`` would: queued thread-pool work finishes,
  ``atexit`` callbacks run, buffered stdout is written, the exit code is kept;
  ``NIRBEAM_FAST_EXIT=0`` and an in-process ``main(argv)`` keep the normal path;
- every numba kernel of nirbeam is declared ``cache=True`` (a kernel without it is
  compiled again by every run: seconds);
- a progress display that is off polls nothing while a stage runs (the poll read the
  store's markers every second: ~10 ms each on a 1200-integration store);
- ``import nirbeam.stream.cli`` loads none of the heavy packages (``--help``,
  ``--version`` and bad usage answer at once).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# A child that is the nirbeam command (its __main__ has cli.main, argv None), with:
# a thread-pool job still queued, an atexit callback, and an object whose __del__ only
# runs in the interpreter's teardown. It prints a lot without flushing.
CHILD = r"""
import atexit, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from nirbeam.stream.cli import main

d = Path(sys.argv[1])
sys.argv = ["nirbeam"] + sys.argv[2:]

class Teardown:
    def __del__(self):
        (d / "teardown").write_text("ran")

keep = Teardown()
atexit.register(lambda: (d / "atexit").write_text("ran"))
pool = ThreadPoolExecutor(1)
pool.submit(lambda: (time.sleep(0.3), (d / "pool").write_text("ran")))
sys.stdout.write("x" * 100000 + "\nend\n")
main()
"""


def _env(**extra) -> dict:
    env = {**os.environ, **extra}
    env.pop("PYTHONUNBUFFERED", None)  # stdout block-buffered, as a pipe or file has it
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _child(tmp_path, *args, **env):
    p = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), *args], env=_env(**env),
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    ran = {n for n in ("teardown", "atexit", "pool") if (tmp_path / n).exists()}
    return p, ran


def test_command_exits_without_teardown_but_as_sys_exit_would(tmp_path):
    p, ran = _child(tmp_path, "--version")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "x" * 100000 + "\nend\nnirbeam 0.1.0\n", p.stdout[-200:]  # all written
    assert ran == {"atexit", "pool"}  # atexit and queued work ran; the teardown did not


def test_command_exit_code_kept(tmp_path):
    p, ran = _child(tmp_path, "run", str(tmp_path / "missing"), "--out", str(tmp_path / "o"),
                    "--allow-standins")
    assert p.returncode == 2, (p.returncode, p.stderr[-500:])
    assert "no such file" in p.stderr
    assert ran == {"atexit", "pool"}


def test_fast_exit_can_be_turned_off(tmp_path):
    p, ran = _child(tmp_path, "--version", NIRBEAM_FAST_EXIT="0")
    assert p.returncode == 0, p.stderr
    assert ran == {"teardown", "atexit", "pool"}


def test_in_process_main_returns(monkeypatch, capsys):
    from nirbeam.stream import cli

    assert cli.main(["--version"]) == 0  # with argv: returns (tests, scripts)
    monkeypatch.setattr(sys, "argv", ["nirbeam", "--version"])
    assert cli.main() == 0  # argv None, but __main__ is pytest's: returns
    assert not cli._is_entry_point()


def _njit_decorators(tree):
    """(function name, line, decorator) of every numba jit decorator in a module."""
    names = {"njit", "jit", "vectorize", "guvectorize", "stencil", "generated_jit", "cfunc"}
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for dec in node.decorator_list:
            f = dec.func if isinstance(dec, ast.Call) else dec
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name in names:
                yield node.name, node.lineno, dec


def test_every_numba_kernel_is_cached():
    found, bad = 0, []
    for path in sorted((REPO / "nirbeam").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for fn, line, dec in _njit_decorators(tree):
            found += 1
            kw = {k.arg: k.value for k in dec.keywords} if isinstance(dec, ast.Call) else {}
            c = kw.get("cache")
            if not (isinstance(c, ast.Constant) and c.value is True):
                bad.append(f"{path.relative_to(REPO)}:{line} {fn}")
        # njit(...)(f) / njit(f) written as a call, not a decorator
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Call)
                    and getattr(node.func.func, "id", getattr(node.func.func, "attr", None))
                    in ("njit", "jit")):
                found += 1
                if not any(k.arg == "cache" and getattr(k.value, "value", None) is True
                           for k in node.func.keywords):
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno} njit(...)(...)")
    assert found > 50  # the check sees the kernels
    assert not bad, bad


def test_disabled_progress_does_not_poll():
    from nirbeam.stream.progress import Progress

    calls = []

    def poll():
        calls.append(threading.current_thread().name)
        return len(calls) * 10

    bar = Progress(enabled=False, poll_interval=0.01)
    st = bar.stage("detector1", total=100, poll=poll)
    threading.Event().wait(0.2)
    st.close()
    assert calls == [threading.current_thread().name]  # only close()'s count
    assert st.count == 10
    on = Progress(enabled=True, stream=open(os.devnull, "w"), tty=False, poll_interval=0.01)
    calls.clear()
    st = on.stage("detector1", total=100, poll=poll)
    threading.Event().wait(0.2)
    st.close()
    assert len(calls) > 2  # a display that is on still polls


def test_cli_import_is_light():
    code = ("import sys, nirbeam.stream.cli\n"
            "heavy = ('numpy', 'matplotlib', 'apache_beam', 'numba', 'astropy', 'zarr', "
            "'scipy', 'jwst', 'stdatamodels', 'pandas', 'tqdm')\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n")
    p = subprocess.run([sys.executable, "-c", code], env=_env(), cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]", p.stdout
