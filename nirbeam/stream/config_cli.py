"""Settings on the command line: ``nirbeam config --defaults`` and ``--set section.key=value``.

- :func:`defaults_toml` writes every section and key of
  :class:`nirbeam.stream.settings.Settings` as a commented TOML file (the comment of a key
  is the ``Attributes`` entry of its class's numpydoc docstring). Keys whose default is
  unset (``None``) are written commented out. The file loads back to the defaults.
- :func:`settings_toml` writes the same for any settings (the effective configuration of
  a run, for the log).
- :func:`apply_overrides` merges ``--set detector1.jump.rejection_threshold=5`` style
  overrides into a config dict; values are TOML values (``5``, ``true``, ``"fft"``,
  ``[8.0, 15.0]``), a bare word is taken as a string. Keys are checked by
  :meth:`Settings.from_dict` as for a config file, the message naming ``--set``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math
import re
import tomllib
import typing
from typing import Any

from nirbeam.stream.config import ConfigError

__all__ = ["defaults_toml", "settings_toml", "parse_override", "apply_overrides"]


def _field_docs(cls) -> dict[str, str]:
    """``{name: description}`` from a numpydoc ``Attributes`` section of ``cls``."""
    doc = inspect.getdoc(cls) or ""
    m = re.search(r"^Attributes\n-+\n(.*?)(?:\n\S[^\n]*\n-+\n|\Z)", doc, re.S | re.M)
    out: dict[str, str] = {}
    if not m:
        return out
    current: list[str] = []
    body: list[str] = []

    def flush():
        for n in current:
            out[n] = " ".join(body).strip()

    for line in m.group(1).splitlines():
        if line and not line.startswith(" "):
            flush()
            head = line.split(":", 1)
            names = [n.strip() for n in head[0].split(",")]
            current, body = names, ([head[1].strip()] if len(head) > 1 and head[1].strip() else [])
            if body:
                body = [f"({body[0]})"]
        elif line.strip():
            body.append(line.strip())
    flush()
    return out


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {v!r}")


def _type_name(t) -> str:
    s = str(t).replace("typing.", "")
    return getattr(t, "__name__", s) if not typing.get_args(t) else s


def _section(obj, name: str, lines: list[str], with_docs: bool) -> None:
    cls = type(obj)
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls) if with_docs else {}
    scalars, nested = [], []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        v = getattr(obj, f.name)
        (nested if dataclasses.is_dataclass(v) else scalars).append((f, v))
    if scalars or not nested:
        lines.append("")
        summary = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
        if with_docs and summary:
            lines.append(f"# {summary}")
        lines.append(f"[{name}]")
        for f, v in scalars:
            if with_docs:
                text = docs.get(f.name) or f"({_type_name(hints[f.name])})"
                for chunk in _wrap(text):
                    lines.append(f"# {chunk}")
            if v is None:
                lines.append(f"# {f.name} = (unset: {_type_name(hints[f.name])})")
            else:
                from nirbeam.stream.config import to_jsonable

                lines.append(f"{f.name} = {_toml_value(to_jsonable(v))}")
    for f, v in nested:
        _section(v, f"{name}.{f.name}", lines, with_docs)


def _wrap(text: str, width: int = 86) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def settings_toml(settings, *, with_docs: bool = True, header: str | None = None) -> str:
    """TOML text of ``settings`` (a :class:`Settings`), every section and key."""
    lines: list[str] = []
    if header:
        lines.extend(f"# {h}" if h else "#" for h in header.splitlines())
    for f in dataclasses.fields(settings):
        _section(getattr(settings, f.name), f.name, lines, with_docs)
    return "\n".join(lines).lstrip("\n") + "\n"


def defaults_toml() -> str:
    """``nirbeam config --defaults``: the default settings as a commented TOML file."""
    from nirbeam import __version__
    from nirbeam.stream.settings import Settings

    return settings_toml(Settings(), header=(
        f"nirbeam {__version__}: every setting with its default (nirbeam config --defaults).\n"
        "Use as `nirbeam run ... --config FILE` after editing; every key is optional.\n"
        "One key from the command line: --set section.key=value (e.g. --set\n"
        "detector1.jump.rejection_threshold=5). Commented-out keys are unset by default."))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> (``["a", "b", "c"]``, parsed value).

    The value is read as a TOML value; if it is not one, as a plain string.
    """
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    path = [p.strip() for p in key.strip().split(".")]
    if len(path) < 2 or not all(path):
        raise ConfigError(f"--set {text!r}: the key must be section.key (e.g. "
                          f"detector1.jump.rejection_threshold), got {key!r}")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return path, value


def apply_overrides(config: dict | None, overrides: list[str] | None) -> dict:
    """A copy of ``config`` with each ``--set`` override merged in, then checked.

    Raises
    ------
    ConfigError
        A malformed override, or one naming an unknown section/key or a wrong type.
    """
    from nirbeam.stream.settings import Settings

    out = copy.deepcopy(config or {})
    for text in overrides or []:
        path, value = parse_override(text)
        d = out
        for p in path[:-1]:
            nxt = d.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {text!r}: {p!r} is a value, not a section")
            d = nxt
        d[path[-1]] = value
    if overrides:
        Settings.from_dict(out, where="config (with --set)")
    return out
