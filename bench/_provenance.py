"""Provenance of benchmark records: which code, which command, when.

Every script in ``bench/`` writes its ``bench/results/*.json`` through
:func:`write_result`, which adds a ``provenance`` entry::

    "provenance": {
      "source_sha256_16": "...",   # sha256 of nirbeam/**/*.py (paths + bytes), 16 hex digits
      "git_commit": "...",         # HEAD when the run started (None outside a git checkout)
      "git_dirty": false,          # uncommitted changes under nirbeam/ at that time
      "command": "bench/x.py --a 1",
      "date_utc": "2026-12-01T15:00:00Z",
      "stale": false
    }

A record is *current* while ``source_sha256_16`` equals :func:`source_digest` of the tree
that reads it; ``python bench/figures.py`` lists the stale ones. Records written before
this module existed carry ``"reconstructed": true``: their hash is the digest of the sources
at the commit that last wrote the file (``git_commit``), the nearest thing to the code that
produced them, and ``command`` is the script's documented invocation.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "nirbeam"
RESULTS = REPO / "bench" / "results"


def source_digest(package: Path = PACKAGE) -> str:
    """sha256 (16 hex digits) of nirbeam's sources: relative paths and bytes of ``*.py``."""
    h = hashlib.sha256()
    for f in sorted(package.rglob("*.py")):
        if "__pycache__" in f.parts:
            continue
        h.update(str(f.relative_to(package)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def digest_at_commit(commit: str, repo: Path = REPO) -> str | None:
    """:func:`source_digest` of ``nirbeam/`` as committed in ``commit`` (None if unknown)."""
    try:
        names = subprocess.run(
            ["git", "-C", str(repo), "ls-tree", "-r", "--name-only", commit, "nirbeam/"],
            capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    h = hashlib.sha256()
    for name in sorted(n for n in names if n.endswith(".py")):
        rel = name[len("nirbeam/"):]
        data = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{name}"],
                              capture_output=True, check=True).stdout
        h.update(rel.encode())
        h.update(data)
    return h.hexdigest()[:16]


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def provenance(argv: list[str] | None = None, script: str | None = None) -> dict:
    """The ``provenance`` entry for a run started now with ``argv`` (default sys.argv)."""
    script = script or sys.argv[0]
    args = list(sys.argv[1:] if argv is None else argv)
    rel = os.path.relpath(os.path.abspath(script), REPO) if script else "?"
    dirty = _git("status", "--porcelain", "--", "nirbeam")
    return {
        "source_sha256_16": source_digest(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if dirty is None else bool(dirty),
        "command": " ".join(["python", rel, *args]),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "stale": False,
    }


def write_result(path, result: dict, argv: list[str] | None = None, *,
                 start: dict | None = None, indent: int = 2) -> Path:
    """Write ``result`` as JSON to ``path`` with its ``provenance`` (see module doc).

    ``start``: the :func:`provenance` taken when the run began; if the sources changed
    during the run, the record says so (``source_changed_during_run``).
    """
    prov = start or provenance(argv)
    end = source_digest()
    if end != prov["source_sha256_16"]:
        prov = {**prov, "source_changed_during_run": end}
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**result, "provenance": prov}, indent=indent) + "\n")
    return out


def load(name: str) -> dict:
    """A record of ``bench/results`` by file name."""
    return json.loads((RESULTS / name).read_text())
