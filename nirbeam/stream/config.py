"""Run configuration: a TOML (or JSON) file mapped onto the steps' frozen parameter classes.

Each top-level table names a step section; its keys are the fields of that section's
dataclass. Unknown sections or keys, and values of the wrong type, are refused with a
message naming the file, the key, what was given and what is allowed. Nothing read from a
config is evaluated or unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from dataclasses import dataclass
from typing import Any

__all__ = ["ConfigError", "build_dataclass", "load_config_file", "to_jsonable"]


class ConfigError(ValueError):
    """A configuration value that cannot be used."""


def load_config_file(path: str | None) -> dict[str, Any]:
    """Read a TOML or JSON config file into a plain dict (empty dict for None)."""
    if path is None:
        return {}
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: config file does not exist")
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        if path.lower().endswith(".json"):
            data = json.loads(raw)
        else:
            data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'TOML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a table of sections")
    return data


def _check_scalar(value, typ, where):
    origin = typing.get_origin(typ)
    if typ is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for t in typing.get_args(typ):
            if t is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_scalar(value, t, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} matches none of {typ}")
    if origin is typing.Literal:
        allowed = typing.get_args(typ)
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {list(allowed)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(typ)
        inner = args[0] if args else Any
        return tuple(_check_scalar(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(typ):
        return build_dataclass(typ, value, where)
    return value


def build_dataclass(cls, values: dict | None, where: str):
    """Build a (frozen) dataclass from a dict, validating keys and types.

    Nested dataclass fields take nested tables. A dataclass may define
    ``validate(self)`` raising ValueError for range checks.
    """
    if values is None:
        values = {}
    if dataclasses.is_dataclass(values):
        return values
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a table, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}"
        )
    kwargs = {k: _check_scalar(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    for name in fields:
        t = hints[name]
        if name not in kwargs and dataclasses.is_dataclass(t):
            kwargs[name] = build_dataclass(t, {}, f"{where}.{name}")
    try:
        obj = cls(**kwargs)
        check = getattr(obj, "validate", None)
        if callable(check):
            check()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return obj


def to_jsonable(obj):
    """Dataclasses/tuples/numpy scalars to JSON-friendly values."""
    import numpy as np

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


@dataclass(frozen=True)
class ProductsConfig:
    """Which optional products a run writes."""

    rateints_fits: bool = False
    x1dints_fits: bool = True
    plots: bool = True
    parquet: bool = True
    fit: bool = True
