"""The resume key of an exposure's rates: what they depend on (inputs' content,
references, rate settings, nirbeam version), how it is compared with the key stored
with earlier results, and the reset of a group whose results are refused.

Moved from :mod:`nirbeam.stream.pipeline` (which re-exports every public name).
"""

from __future__ import annotations

import json
import logging
import os

from nirbeam import __version__
from nirbeam.sinks import fs, zarr_store
from nirbeam.stream.rate_steps import RATEINTS, forget_group
from nirbeam.stream.uncal import BadInputError, ExposurePlan, SegmentInfo

__all__ = ["ResumeMismatch", "RESUME_KEY_VERSION", "rate_settings", "input_fingerprint",
           "resume_key", "resume_differences", "stored_resume_key", "check_resume",
           "reset_group"]

log = logging.getLogger("nirbeam")


def rate_settings(settings) -> dict:
    """The settings that shape the rateints (detector1 and group-level 1/f cleaning)."""
    j = settings.as_json()
    return {"detector1": j["detector1"], "flicker": j["flicker"]}


class ResumeMismatch(BadInputError):
    """OUTDIR holds results made from other inputs, references, settings or version."""


RESUME_KEY_VERSION = 1
_FULL_HASH_BYTES = 64 << 20  # inputs up to this size are hashed whole
_SAMPLE_BLOCKS, _SAMPLE_BYTES = 64, 64 << 10


def input_fingerprint(seg: SegmentInfo) -> dict:
    """Size, mtime and a sha256 of one segment: whole file up to 64 MiB, else every byte
    outside the SCI cube (headers, INT_TIMES...) plus 64 blocks of 64 KiB spread evenly
    over the SCI data (4 MiB read whatever the size)."""
    import hashlib

    st = os.stat(seg.path)
    h = hashlib.sha256()
    with open(seg.path, "rb") as fh:
        if st.st_size <= _FULL_HASH_BYTES:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
            method = "full"
        else:
            sci_end = seg.data_offset + seg.integration_bytes * seg.nints
            h.update(fh.read(seg.data_offset))
            span = sci_end - seg.data_offset
            for k in range(_SAMPLE_BLOCKS):
                fh.seek(seg.data_offset + (span - _SAMPLE_BYTES) * k // (_SAMPLE_BLOCKS - 1))
                h.update(fh.read(_SAMPLE_BYTES))
            fh.seek(sci_end)
            h.update(fh.read(_FULL_HASH_BYTES))
            method = f"headers+tables+{_SAMPLE_BLOCKS}x{_SAMPLE_BYTES >> 10}KiB of SCI"
    return {"size": st.st_size, "mtime": st.st_mtime, "sha256": h.hexdigest(), "method": method}


def resume_key(plan: ExposurePlan, prov: dict, settings) -> dict:
    """Everything an exposure's rates depend on: inputs' content, references' sha256 (or
    the stand-in used), detector1 and group-level 1/f settings, nirbeam version."""
    refs = {t: (v["sha256"] if "sha256" in v else _standin_label(v.get("standin", "?")))
            for t, v in sorted(prov.items())}
    return {
        "version": RESUME_KEY_VERSION,
        "nirbeam_version": __version__,
        "inputs": {os.path.basename(s.path): input_fingerprint(s) for s in plan.segments},
        "references": refs,
        "settings": json.loads(json.dumps(rate_settings(settings))),
    }


def _standin_label(text: str) -> str:
    return text if text.startswith("stand-in") else f"stand-in ({text})"


def _flat(d, prefix=""):
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_differences(old: dict | None, new: dict) -> list[str]:
    """What changed between the key stored with earlier results and this run's."""
    if not old:
        return ["the store has no resume key (written by an older nirbeam or interrupted "
                "before its first integration was prepared)"]
    out = []
    if old.get("nirbeam_version") != new["nirbeam_version"]:
        out.append(f"nirbeam version {old.get('nirbeam_version')} -> {new['nirbeam_version']}")
    for name, f in new["inputs"].items():
        o = (old.get("inputs") or {}).get(name)
        if o is None:
            continue  # a segment added since (e.g. one that was missing): nothing to mix
        if (o.get("size"), o.get("sha256")) != (f["size"], f["sha256"]):
            out.append(f"input {name}: content changed (size {o.get('size')} -> {f['size']}, "
                       f"sha256 {str(o.get('sha256'))[:12]}.. -> {f['sha256'][:12]}..)")
    for t in sorted(set(old.get("references", {})) | set(new["references"])):
        a, b = old.get("references", {}).get(t), new["references"].get(t)
        if a != b:
            out.append(f"reference {t}: {_short(a)} -> {_short(b)}")
    fo, fn = _flat(old.get("settings")), _flat(new["settings"])
    for k in sorted(set(fo) | set(fn)):
        if fo.get(k) != fn.get(k):
            out.append(f"setting {k}: {fo.get(k)!r} -> {fn.get(k)!r}")
    return out


def _short(v) -> str:
    if v is None:
        return "(none)"
    v = str(v)
    return f"sha256 {v[:12]}.." if len(v) == 64 and not v.startswith("stand-in") else v[:80]


def stored_resume_key(root: str, group: str) -> dict | None:
    """The resume key of an exposure's earlier results, or None."""
    try:
        return dict(zarr_store.open_root(root, mode="r")[group].attrs).get("resume_key")
    except (KeyError, FileNotFoundError, Exception):  # noqa: BLE001 - no store or group yet
        return None


def check_resume(root: str, group: str, key: dict, overwrite: bool) -> bool:
    """Refuse (or, under ``overwrite``, allow) reusing results made from something else.

    Returns True when the group's earlier results must be removed before this run.

    Raises
    ------
    ResumeMismatch
        Naming every difference, when results exist, differ and ``overwrite`` is False.
    """
    has = zarr_store.completed(root, group, RATEINTS)
    if not has.any():  # nothing to mix; stale references or dead letters are cleared
        old = stored_resume_key(root, group)
        return old is not None and bool(resume_differences(old, key))
    diffs = resume_differences(stored_resume_key(root, group), key)
    if not diffs:
        return False
    if overwrite:
        log.warning("%s: recomputing (--overwrite): %s", group, "; ".join(diffs))
        return True
    raise ResumeMismatch(
        root,
        f"exposure {group}: this OUTDIR holds {int(has.sum())} integrations' rates made from something "
        f"else; resuming would mix them. Changed: {'; '.join(diffs)}. Rerun with --overwrite "
        "to recompute them, or use a new --out folder.",
    )


def reset_group(root: str, group: str, dead_dir: str | None) -> None:
    """Remove an exposure's earlier results (store group and its dead letters)."""
    g = zarr_store.open_root(root)
    if group in g:
        del g[group]
    zarr_store.forget_cache()
    forget_group(root, group)
    if dead_dir:
        for n in fs.listdir(dead_dir):
            if n.startswith(f"{group}_"):
                fs.remove(fs.join(dead_dir, n))
