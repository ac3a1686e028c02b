"""Figures in README.md and CHANGELOG.md checked against their records in bench/results/.

A figure taken from a record carries a tag right after it (an HTML comment, invisible
when rendered)::

    **6.75x**<!--fig detector1_vs_stcal.json shapes.0.ratio_nirbeam_over_stcal-->

The tag names the record and a key path (dots; a list index or ``*`` for all elements,
``[k=v]`` to select list elements whose key ``k`` equals ``v``, ``{key.with.dots}`` for a
key that holds dots), then optional operations
applied in order: ``min`` / ``max`` (over the ``*`` values), ``inv`` (1/x), ``*N`` / ``/N``
(scale). The number written just before the tag must equal the value rounded to the
decimals it shows (``6.75`` -> 2 decimals; ``1,144`` -> 0).

    python bench/figures.py            # check every tag; list records whose source changed
    python bench/figures.py --stale    # only the stale-record report

``tests/test_figures.py`` runs the same check, so a figure cannot drift from its record.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys

from _provenance import REPO, RESULTS, source_digest

DOCS = ("README.md", "CHANGELOG.md")
TAG = re.compile(r"<!--fig (\S+?\.json) ([^\s>]+)((?: [^\s>]+)*) ?-->")
#: the number a tag belongs to: the last one before it (a minus sign only where it cannot
#: be a range dash, as in "6.9-14.1x"), followed by at most a short unit
NUMBER = re.compile(r"((?<![\w.])-)?(\d[\d,]*(?:\.\d+)?)[^\d<>]{0,12}$")


def _walk(obj, parts):
    if not parts:
        yield obj
        return
    head, rest = parts[0], parts[1:]
    sel = re.fullmatch(r"\[(\w+)=([^\]]+)\]", head)
    if head == "*":
        items = obj.values() if isinstance(obj, dict) else obj
        for v in items:
            yield from _walk(v, rest)
    elif sel:
        k, want = sel.groups()
        for v in obj:
            if isinstance(v, dict) and str(v.get(k)) == want:
                yield from _walk(v, rest)
    elif isinstance(obj, list):
        yield from _walk(obj[int(head)], rest)
    elif head.startswith("{") and head.endswith("}"):
        yield from _walk(obj[head[1:-1]], rest)
    else:
        yield from _walk(obj[head], rest)


def resolve(record: dict, path: str, ops: list[str]) -> float:
    """Value of ``path`` in ``record`` after ``ops`` (see module doc)."""
    parts = re.findall(r"\{[^}]+\}|\[[^\]]+\]|[^.\[\]{}]+", path)
    vals = [float(v) for v in _walk(record, parts)]
    if not vals:
        raise KeyError(f"no value at {path!r}")
    out = None
    for op in ops:
        if op in ("min", "max"):
            vals = [min(vals) if op == "min" else max(vals)]
        elif op == "inv":
            vals = [1.0 / v for v in vals]
        elif op[0] in "*/":
            f = float(op[1:])
            vals = [v * f if op[0] == "*" else v / f for v in vals]
        else:
            raise ValueError(f"unknown operation {op!r}")
    if len(vals) != 1:
        raise ValueError(f"{path!r} gives {len(vals)} values: add min or max")
    out = vals[0]
    return out


def check_text(text: str, name: str, records: dict | None = None) -> tuple[list[str], int]:
    """(problems, number of tags) for one document."""
    problems, n = [], 0
    cache = records if records is not None else {}
    for m in TAG.finditer(text):
        n += 1
        rec, path, ops = m.group(1), m.group(2), m.group(3).split()
        line = text.count("\n", 0, m.start()) + 1
        where = f"{name}:{line} ({rec} {path})"
        if rec not in cache:
            p = RESULTS / rec
            if not p.is_file():
                problems.append(f"{where}: no record bench/results/{rec}")
                continue
            cache[rec] = json.loads(p.read_text())
        try:
            value = resolve(cache[rec], path, ops)
        except (KeyError, IndexError, ValueError, TypeError) as e:
            problems.append(f"{where}: {e}")
            continue
        before = TAG.sub("", text[max(0, m.start() - 200):m.start()]).replace("**", "")
        num = NUMBER.search(before[-40:])
        if not num:
            problems.append(f"{where}: no number just before the tag")
            continue
        shown = (num.group(1) or "") + num.group(2).replace(",", "")
        dec = len(shown.split(".")[1]) if "." in shown else 0
        if not math.isclose(float(shown), round(value, dec), rel_tol=0, abs_tol=1e-9 + 10**-dec * 1e-6):
            problems.append(f"{where}: text says {shown}, record gives {value:.6g} "
                            f"(= {round(value, dec):.{dec}f} at the decimals shown)")
    return problems, n


def check(docs=DOCS) -> tuple[list[str], int]:
    """Check every tag of ``docs``: (problems, number of tags)."""
    problems, n, records = [], 0, {}
    for d in docs:
        p, k = check_text((REPO / d).read_text(), d, records)
        problems += p
        n += k
    return problems, n


def stale_records() -> list[tuple[str, str, str]]:
    """(record, its source hash, current hash) for records measured on other sources."""
    cur = source_digest()
    out = []
    for p in sorted(RESULTS.glob("*.json")):
        prov = json.loads(p.read_text()).get("provenance", {})
        h = prov.get("source_sha256_16")
        if h != cur:
            out.append((p.name, str(h), cur))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stale", action="store_true", help="only list stale records")
    args = ap.parse_args(argv)
    rc = 0
    if not args.stale:
        problems, n = check()
        for p in problems:
            print(p)
        print(f"{n} tagged figures, {len(problems)} disagree with their records")
        rc = 1 if problems else 0
    for name, h, cur in stale_records():
        print(f"stale: {name} measured on source {h}; the tree is now {cur}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
