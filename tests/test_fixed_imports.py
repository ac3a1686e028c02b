"""Imports a ``nirbeam run`` does not need (issue 14, session 12: fixed).

- a run command tells astropy not to register its ASDF table reader/writer
  (:func:`nirbeam.stream.cli_support.skip_unused_table_io`): ``import astropy.table``
  then loads no ``asdf``/``asdf_astropy`` (~0.3 CPU-s of entry-point scanning), and the
  table formats nirbeam writes (ECSV, FITS, Parquet) still work;
- it does nothing once ``astropy.table`` is imported (the registration has happened);
- every batch run command calls it before its pipeline (checked on ``run`` of an input
  that cannot be read: the flag is set although the driver refuses the input).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _py(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def _has_asdf_astropy() -> bool:
    from importlib.util import find_spec

    return find_spec("asdf_astropy") is not None


@pytest.mark.skipif(not _has_asdf_astropy(), reason="asdf-astropy not installed")
def test_table_import_skips_asdf_and_tables_still_write(tmp_path):
    code = (
        "import sys\n"
        "from nirbeam.stream.cli_support import skip_unused_table_io\n"
        "skip_unused_table_io()\n"
        "from astropy.table import Table\n"
        "t = Table({'a': [1.5, 2.5], 'b': [1, 2]})\n"
        "t.write(sys.argv[1] + '/t.ecsv', format='ascii.ecsv')\n"
        "t.write(sys.argv[1] + '/t.fits', format='fits')\n"
        "u = Table.read(sys.argv[1] + '/t.ecsv', format='ascii.ecsv')\n"
        "assert list(u['a']) == [1.5, 2.5]\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'asdf', 'asdf_astropy'}))\n"
    )
    p = _py(code, str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "[]", p.stdout


@pytest.mark.skipif(not _has_asdf_astropy(), reason="asdf-astropy not installed")
def test_without_the_call_astropy_table_registers_asdf():
    # the cost exists (and the test above measures something): astropy imports asdf
    p = _py("import sys, astropy.table\nprint('asdf' in sys.modules)\n")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "True", p.stdout


def test_no_op_once_astropy_table_is_imported():
    code = (
        "import astropy.table\n"
        "from astropy.utils.compat import optional_deps\n"
        "from nirbeam.stream.cli_support import skip_unused_table_io\n"
        "skip_unused_table_io()\n"
        "print('HAS_ASDF_ASTROPY' in vars(optional_deps))\n"
    )
    p = _py(code)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False", p.stdout


def test_run_command_sets_it_before_the_driver(tmp_path):
    code = (
        "import sys\n"
        "from nirbeam.stream.cli import main\n"
        "rc = main(['run', sys.argv[1] + '/missing_uncal.fits', '--out', sys.argv[1] + '/out',\n"
        "           '--no-progress', '-q'])\n"
        "from astropy.utils.compat import optional_deps\n"
        "print(rc, vars(optional_deps).get('HAS_ASDF_ASTROPY'))\n"
    )
    p = _py(code, str(tmp_path))
    assert p.returncode == 0, p.stderr
    rc, flag = p.stdout.strip().splitlines()[-1].split()
    assert rc != "0" and flag == "False", p.stdout + p.stderr
