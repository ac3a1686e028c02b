"""Strict command-line parsing for ``nirbeam``: no abbreviations, no swallowed options.

Unknown options are an error naming the closest known one; Beam's own options go after
``--`` or carry a ``--beam-`` prefix and are checked against Beam's option classes (Beam
itself would drop an unknown one with a warning only).
"""

from __future__ import annotations

import argparse

__all__ = ["JWST_STEPS", "StrictParser", "UsageError", "check_beam_args", "jwst_steps_to_set",
           "os_error_in", "split_beam_args", "unrecognised"]

#: jwst step names (``strun`` / ``--steps.<step>.<param>=``) and the settings section that
#: holds the same step's parameters here (``nirbeam config --defaults``).
JWST_STEPS = {
    "dq_init": "detector1.dq_init",
    "saturation": "detector1.saturation",
    "superbias": "detector1.superbias",
    "refpix": "detector1.refpix",
    "linearity": "detector1.linearity",
    "dark_current": "detector1.dark",
    "jump": "detector1.jump",
    "ramp_fit": "detector1.ramp_fit",
    "clean_flicker_noise": "flicker",
    "extract_1d": "extract",
    "white_light": "lightcurve",
}


class UsageError(Exception):
    """A command line that cannot be used (exit code 2)."""


class StrictParser(argparse.ArgumentParser):
    """argparse without abbreviations, raising :class:`UsageError` instead of exiting."""

    def __init__(self, *a, **k):
        k.setdefault("allow_abbrev", False)
        super().__init__(*a, **k)

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def split_beam_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate Beam's options: everything after ``--``, and ``--beam-NAME[=VALUE]``."""
    argv = list(argv)
    beam: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, beam = argv[:i], argv[i + 1:]
    ours = []
    for a in argv:
        if a.startswith("--beam-"):
            beam.append("--" + a[len("--beam-"):])
        else:
            ours.append(a)
    return ours, beam


def jwst_steps_to_set(argv: list[str]) -> list[str]:
    """jwst's ``--steps.<step>.<param>=<value>`` (or ``... <value>``) as ``--set``.

    ``--steps.jump.rejection_threshold=5`` becomes ``--set
    detector1.jump.rejection_threshold=5``; jwst's ``skip`` becomes ``enabled`` negated
    (``--steps.jump.skip=true`` -> ``--set detector1.jump.enabled=false``). The value is
    checked later with every other ``--set``. An unknown step is a :class:`UsageError`
    naming the steps there are.
    """
    out: list[str] = []
    it = iter(range(len(argv)))
    for i in it:
        a = argv[i]
        if not a.startswith("--steps."):
            out.append(a)
            continue
        key, eq, value = a[len("--steps."):].partition("=")
        if not eq:
            if i + 1 >= len(argv):
                raise UsageError(f"{a}: expected --steps.<step>.<param>=<value>")
            value = argv[i + 1]
            next(it)
        step, dot, param = key.partition(".")
        if not dot or not param or "." in param:
            raise UsageError(f"{a}: expected --steps.<step>.<param>=<value>")
        if step not in JWST_STEPS:
            raise UsageError(f"{a}: no jwst step {step!r} here; steps: {', '.join(JWST_STEPS)}")
        if param == "skip":
            v = value.strip().lower()
            if v not in ("true", "false"):
                raise UsageError(f"{a}: skip takes true or false, got {value!r}")
            param, value = "enabled", "false" if v == "true" else "true"
        out += ["--set", f"{JWST_STEPS[step]}.{param}={value}"]
    return out


def _subparser(ap: argparse.ArgumentParser, name: str | None):
    for act in ap._actions:  # noqa: SLF001 - argparse keeps its subparsers here
        if isinstance(act, argparse._SubParsersAction) and name in act.choices:  # noqa: SLF001
            return act.choices[name]
    return ap


def unrecognised(ap, command, extras) -> str:
    import difflib

    sp = _subparser(ap, command)
    known = [o for p in (ap, sp) for a in p._actions for o in a.option_strings]  # noqa: SLF001
    parts = []
    for x in extras:
        if x.startswith("-"):
            name = x.split("=", 1)[0]
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            parts.append(f"unknown option {name!r}" + (f" (did you mean {close[0]}?)" if close else ""))
        else:
            parts.append(f"unexpected argument {x!r}")
    return (f"{sp.prog}: " + "; ".join(parts)
            + ". Options for Beam go after '--' or as --beam-NAME=VALUE; see "
            f"'{sp.prog} --help'")


def check_beam_args(flags: list[str]) -> None:
    """Refuse Beam options that no PipelineOptions class defines (Beam would drop them)."""
    if not flags:
        return
    import difflib

    try:
        from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

        try:  # options of runners nirbeam can use, defined where they are imported
            import apache_beam.runners.dask.dask_runner  # noqa: F401
        except Exception:  # noqa: BLE001 - dask is optional
            pass
        parser = _BeamArgumentParser(allow_abbrev=False)
        for cls in {str(c): c for c in _all_subclasses(PipelineOptions)}.values():
            cls._add_argparse_args(parser)  # noqa: SLF001
        _, unknown = parser.parse_known_args(flags)
        known = [o for a in parser._actions for o in a.option_strings]  # noqa: SLF001
    except Exception:  # noqa: BLE001 - Beam internals moved: leave the check to Beam
        return
    bad = [u for u in unknown if u.startswith("-")]
    if bad:
        name = bad[0].split("=", 1)[0]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        raise UsageError(f"nirbeam: unknown Beam option {name!r}"
                         + (f" (did you mean {close[0]}?)" if close else "")
                         + "; Beam would ignore it")


def _all_subclasses(cls):
    out = []
    for c in cls.__subclasses__():
        out.append(c)
        out.extend(_all_subclasses(c))
    return out


def os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind an exception (Beam and zarr wrap them), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None
