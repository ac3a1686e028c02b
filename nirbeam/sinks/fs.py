"""Output filesystem layer: OUTDIR is a local path or an fsspec URL (``s3://``, ``gs://``,
``memory://``, ``file://``...), and every sink writes through these calls.

Local paths (and ``file://`` URLs, turned into paths) use ``os`` directly, so nothing
changes for the common case. Other URLs go through :func:`fsspec.core.url_to_fs`; their
credentials and options come from fsspec's usual configuration (environment variables,
``~/.config/fsspec``), see ``deploy/``.

Whole files are written atomically: locally to a temporary name in the same folder,
renamed over the final one; on an object store to a local temporary file uploaded in one
put at the end (object stores make an object visible only when its upload completes).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from contextlib import contextmanager

__all__ = [
    "is_url", "normalize", "join", "basename", "makedirs", "exists", "isfile", "isdir",
    "listdir", "remove", "read_text", "write_text", "atomic_path", "abspath", "filesystem",
]


def normalize(path) -> str:
    """``file://`` URLs become local paths; anything else is returned as a string."""
    p = os.fspath(path)
    if p.startswith("file://"):
        return p[len("file://"):] or "/"
    return p


def is_url(path) -> bool:
    """True for a non-local fsspec URL (``proto://...``, other than ``file://``)."""
    p = normalize(path)
    return "://" in p


def filesystem(path):
    """``(fsspec filesystem, path inside it)`` for a URL."""
    from fsspec.core import url_to_fs

    return url_to_fs(normalize(path))


def join(base, *parts: str) -> str:
    """Join path parts (``/`` for URLs)."""
    b = normalize(base)
    if is_url(b):
        return posixpath.join(b.rstrip("/"), *parts) if parts else b
    return os.path.join(b, *parts)


def basename(path) -> str:
    """Last component of a path or URL."""
    return posixpath.basename(normalize(path).rstrip("/"))


def abspath(path) -> str:
    """Absolute local path, or the URL unchanged."""
    p = normalize(path)
    return p if is_url(p) else os.path.abspath(p)


def makedirs(path) -> None:
    """Create a folder and its parents (a no-op where folders are implicit)."""
    p = normalize(path)
    if is_url(p):
        fs, q = filesystem(p)
        fs.makedirs(q, exist_ok=True)
    else:
        os.makedirs(p, exist_ok=True)


def exists(path) -> bool:
    p = normalize(path)
    if is_url(p):
        fs, q = filesystem(p)
        return fs.exists(q)
    return os.path.exists(p)


def isfile(path) -> bool:
    p = normalize(path)
    if is_url(p):
        fs, q = filesystem(p)
        return fs.isfile(q)
    return os.path.isfile(p)


def isdir(path) -> bool:
    p = normalize(path)
    if is_url(p):
        fs, q = filesystem(p)
        return fs.isdir(q)
    return os.path.isdir(p)


def listdir(path) -> list[str]:
    """Names (not paths) in a folder, sorted; empty when it does not exist."""
    p = normalize(path)
    if is_url(p):
        fs, q = filesystem(p)
        if not fs.isdir(q):
            return []
        return sorted(basename(x) for x in fs.ls(q, detail=False))
    return sorted(os.listdir(p)) if os.path.isdir(p) else []


def remove(path) -> None:
    p = normalize(path)
    if is_url(p):
        fs, q = filesystem(p)
        fs.rm(q)
    else:
        os.remove(p)


def read_text(path) -> str:
    p = normalize(path)
    if is_url(p):
        fs, q = filesystem(p)
        with fs.open(q, "r") as fh:
            return fh.read()
    with open(p) as fh:
        return fh.read()


def write_text(path, text: str) -> str:
    """Write a text file atomically; returns the path."""
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)
    return normalize(path)


@contextmanager
def atomic_path(final):
    """``with atomic_path(final) as tmp:`` write the local file ``tmp``; it becomes ``final``.

    ``tmp`` keeps the final name's extension (some writers choose the format from it). On
    an exception nothing is published and ``tmp`` is removed.
    """
    final = normalize(final)
    base = basename(final)
    url = is_url(final)
    folder = tempfile.gettempdir() if url else os.path.dirname(os.path.abspath(final))
    if not url:
        os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=os.path.splitext(base)[1], dir=folder)
    os.close(fd)
    try:
        yield tmp
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if url:
        try:
            fs, q = filesystem(final)
            parent = posixpath.dirname(q)
            if parent:
                fs.makedirs(parent, exist_ok=True)
            fs.put_file(tmp, q)
        finally:
            os.remove(tmp)
    else:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; products are for everyone
        os.replace(tmp, final)


def rmtree(path) -> None:
    """Remove a folder and everything in it (if present)."""
    p = normalize(path)
    if is_url(p):
        fs, q = filesystem(p)
        if fs.exists(q):
            fs.rm(q, recursive=True)
    elif os.path.isdir(p):
        shutil.rmtree(p)
