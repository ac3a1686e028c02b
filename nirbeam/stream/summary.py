"""The run summary from the store (``run.json``'s ``exposures``, ``deadletter.jsonl``), the
exit status, and the small driver utilities batch and stream share (output-folder check,
atomic JSON, peak memory).

Moved from :mod:`nirbeam.stream.pipeline` (which re-exports every public name).
"""

from __future__ import annotations

import json

import numpy as np

from nirbeam.sinks import fs, zarr_store
from nirbeam.stream.rate_steps import RATEINTS
from nirbeam.stream.uncal import BadInputError

__all__ = ["EXIT_INCOMPLETE", "exit_status", "account", "run_summary", "whitelight_points", "check_outdir",
           "write_json_atomic", "peak_rss_mib"]


EXIT_INCOMPLETE = 3
"""Exit code of a run that ended with incomplete products (documented in the CLI)."""


def exit_status(summary: dict) -> int:
    """0, or :data:`EXIT_INCOMPLETE` when any exposure's products are incomplete."""
    exps = summary.get("exposures", [])
    if any(not e.get("products_complete", e.get("complete", True)) for e in exps):
        return EXIT_INCOMPLETE
    return 0


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def check_outdir(outdir: str) -> None:
    try:
        fs.makedirs(outdir)
        probe = fs.join(outdir, ".nirbeam-write-test")
        fs.write_text(probe, "ok")
        fs.remove(probe)
    except OSError as exc:
        raise BadInputError(outdir, f"output folder is not writable ({exc.strerror})") from None


_STAGE_OF_STEP = {"read": RATEINTS, "detector1": RATEINTS, "write_rateints": RATEINTS,
                  "extract": "spectra"}


def account(outdir, root, plans, per_group, dead_dir) -> dict:
    """:func:`run_summary`, and its dead letters written to ``OUTDIR/deadletter.jsonl``."""
    summary, lines = run_summary(root, plans, per_group, dead_dir)
    fs.write_text(fs.join(outdir, "deadletter.jsonl"), "".join(json.dumps(d) + "\n" for d in lines))
    return summary


def run_summary(root, plans, per_group, dead_dir) -> tuple[dict, list[dict]]:
    """Every input integration: processed or dead-lettered (from the store's completion
    markers and ``_deadletters``); returns the summary and its dead letters, sorted.

    ``processed`` counts integrations with a complete rateints region; ``deadlettered``
    those without one (each has a line in deadletter.jsonl saying where and why);
    ``processed + deadlettered == nints``. Of the processed, ``extracted`` have a spectrum
    and ``extract_failed`` a dead letter of the extract step.
    """
    dead: list[dict] = []
    for n in fs.listdir(dead_dir):
        if n.endswith(".json") and not n.startswith("."):  # ".name.*.json": a temporary
            dead.append(json.loads(fs.read_text(fs.join(dead_dir, n))))
    exposures = []
    lines = []
    for plan in plans:
        g = plan.meta.group_name
        n = plan.meta.nints
        done = {RATEINTS: zarr_store.completed(root, g, RATEINTS),
                "spectra": zarr_store.completed(root, g, "spectra")}
        if done["spectra"].size == 0:
            done["spectra"] = np.zeros(n, bool)
        key = (plan.meta.exposure, plan.meta.detector)
        here = {}
        for d in dead:
            if (d["exposure"], d["detector"]) != key or not d.get("integration"):
                continue
            stage = _STAGE_OF_STEP.get(d["step"], RATEINTS)
            if done[stage][d["integration"] - 1]:
                continue  # failed in an earlier run, complete now
            here[(d["integration"], d["step"])] = d
        for i in plan.missing:
            here.setdefault((i, "read"), {
                "exposure": key[0], "detector": key[1], "integration": i, "step": "read",
                "reason": "integration is in no input segment (missing segment)", "source": "",
            })
        rate_dead = {i for (i, step) in here if _STAGE_OF_STEP.get(step, RATEINTS) == RATEINTS}
        ext_dead = {i for (i, step) in here if step == "extract"}
        processed = int(done[RATEINTS].sum())
        extracted = int(done["spectra"].sum())
        info = dict(per_group[g])
        wl_good = whitelight_points(root, g)
        info.update({
            "processed": processed,
            "deadlettered": len(rate_dead),
            "extracted": extracted,
            "extract_failed": len(ext_dead),
            "accounted": processed + len(rate_dead),
            "complete": processed + len(rate_dead) == n and extracted + len(ext_dead) == processed,
            "whitelight_points": wl_good,
            # what the exit status says: every integration calibrated and extracted, and a
            # white-light curve with at least one good point
            "products_complete": not here and processed == n and extracted == n and wl_good > 0,
        })
        exposures.append(info)
        lines.extend(here.values())
    lines = sorted(lines, key=lambda d: (d["exposure"], d["detector"], d["integration"], d["step"]))
    return {"exposures": exposures, "deadletters": len(lines),
            "products_complete": all(e["products_complete"] for e in exposures)}, lines


def whitelight_points(root: str, group: str) -> int:
    """Good (DQ 0) white-light points of an exposure's light curves (0 when none)."""
    try:
        wdq = zarr_store.read_stack(root, group, "lightcurves", "white_dq")
    except Exception:  # noqa: BLE001 - no light curves written
        return 0
    return int(np.sum(np.asarray(wdq) == 0))


def write_json_atomic(path: str, obj) -> None:
    fs.write_text(path, json.dumps(obj, indent=2, default=str))
