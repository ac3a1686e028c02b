"""``OUTDIR/report.html``: one self-contained page about a run, from its products alone.

Sections: summary (version, command, runner, inputs), accounting per exposure/detector
(processed + dead-lettered = NINTS, extraction), dead letters, the quick-look fit, every
plot of :func:`nirbeam.sinks.diagnostics.plot_products` with its caption (PNG embedded as
data URIs, so the page can be mailed or opened from an object store), the plots skipped
and why, the calibration references used (file, sha256) or their stand-ins, the methods'
literature references, per-stage timings, peak memory and Beam counters, and the
effective configuration as TOML.

Plain HTML and inline CSS, no script; every value read from the products is escaped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging

from nirbeam.sinks import fs

__all__ = ["write_report", "render_report", "LITERATURE"]

log = logging.getLogger(__name__)

#: methods nirbeam implements, and where they come from
LITERATURE = [
    ("Ramp fitting, optimal weighting", "Fixsen, D. J. et al. 2000, PASP 112, 1350"),
    ("Jump detection (two-point difference)", "Anderson, R. E. & Gordon, K. D. 2011, PASP 123, 1237"),
    ("1/f cleaning (NSClean)", "Rauscher, B. J. 2024, PASP 136, 015001"),
    ("Optimal extraction", "Horne, K. 1986, PASP 98, 609"),
    ("Transit model (batman)", "Kreidberg, L. 2015, PASP 127, 1161"),
    ("Time-averaging (RMS vs bin size)", "Pont, F., Zucker, S. & Queloz, D. 2006, MNRAS 373, 231"),
    ("JWST calibration pipeline", "Bushouse, H. et al., jwst (spacetelescope/jwst), Zenodo"),
    ("NIRSpec BOTS", "Birkmann, S. M. et al. 2022, PASP 134, 025002 (and JDox)"),
]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:1.6em}table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0;padding:.5em;border:1px solid #eee}figure img{max-width:100%;height:auto}
figcaption{font-size:.9em;color:#444}.bad{color:#a00;font-weight:600}.ok{color:#070}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}.note{color:#666}
nav a{margin-right:1em}
"""


def _e(v) -> str:
    return html.escape(str(v), quote=True)


def _table(rows: list[dict], cols: list[str] | None = None) -> str:
    if not rows:
        return "<p class='note'>none</p>"
    cols = cols or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cls = " class='num'" if isinstance(v, int | float) and not isinstance(v, bool) else ""
            if isinstance(v, float):
                v = f"{v:.6g}"
            elif isinstance(v, list | dict):
                v = json.dumps(v, default=str)
            cells.append(f"<td{cls}>{_e(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv(d: dict) -> str:
    return _table([{"key": k, "value": v} for k, v in d.items()], ["key", "value"])


def _img(outdir: str, rel: str) -> str:
    path = fs.join(outdir, rel)
    if fs.is_url(path):
        fsys, q = fs.filesystem(path)
        with fsys.open(q, "rb") as fh:
            data = fh.read()
    else:
        with open(fs.normalize(path), "rb") as fh:
            data = fh.read()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _read_json(path):
    try:
        return json.loads(fs.read_text(path)) if fs.isfile(path) else None
    except Exception:  # noqa: BLE001
        return None


def _references(run: dict) -> list[dict]:
    rows = []
    for e in run.get("exposures", []):
        refs = e.get("references") or {}
        for reftype, info in sorted(refs.items()) if isinstance(refs, dict) else []:
            row = {"exposure": e.get("exposure"), "detector": e.get("detector"), "reftype": reftype}
            if isinstance(info, dict):
                row["file"] = info.get("file") or info.get("path") or info.get("source", "")
                row["sha256"] = info.get("sha256", "")
                row["stand-in"] = info.get("standin", "")
            else:
                row["file"] = info
            rows.append(row)
    return rows


def render_report(outdir: str, entries=None) -> str:
    """The report page as a string (see the module docstring).

    Parameters
    ----------
    outdir : str
        A run's output folder.
    entries : list of PlotEntry, optional
        The plots (default: ``plots/index.json``).
    """
    from nirbeam import __version__

    run = _read_json(fs.join(outdir, "run.json")) or {}
    if entries is None:
        idx = _read_json(fs.join(outdir, "plots", "index.json")) or []
        from nirbeam.sinks.diagnostics import PlotEntry

        entries = [PlotEntry(**e) for e in idx]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>nirbeam report: {_e(outdir)}</title><style>{_CSS}</style></head><body>"]
    parts.append(f"<h1>nirbeam report</h1><p class='note'>{_e(fs.abspath(outdir))}; page "
                 f"written {_e(_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC'))} by "
                 f"nirbeam {_e(__version__)}</p>")
    parts.append("<nav><a href='#summary'>Summary</a><a href='#accounting'>Accounting</a>"
                 "<a href='#fit'>Fit</a><a href='#plots'>Plots</a><a href='#references'>"
                 "References</a><a href='#timings'>Timings</a><a href='#config'>Configuration</a></nav>")

    # summary
    runner = run.get("runner", {})
    inputs = run.get("inputs", [])
    summary = {
        "run by nirbeam": run.get("nirbeam_version", "unknown (no run.json)"),
        "command": run.get("command", ""),
        "runner": runner.get("name", "") if isinstance(runner, dict) else runner,
        "inputs": f"{len(inputs)} segment file(s)" if inputs else "",
        "references folder": run.get("refs_dir") or "none (data-derived stand-ins)",
        "wall time [s]": run.get("wall_s", ""),
    }
    parts.append("<h2 id='summary'>Summary</h2>" + _kv(summary))
    if inputs:
        parts.append("<details><summary>input files</summary><pre>"
                     + _e("\n".join(inputs)) + "</pre></details>")

    # accounting
    exps = run.get("exposures", [])
    rows = []
    for e in exps:
        rows.append({k: e.get(k) for k in ("exposure", "detector", "nints", "processed",
                                           "deadlettered", "extracted", "extract_failed",
                                           "skipped_complete", "complete")})
    parts.append("<h2 id='accounting'>Accounting</h2><p>Every integration of every "
                 "exposure/detector is either processed or dead-lettered "
                 "(<code>processed + deadlettered = NINTS</code>).</p>" + _table(rows))
    for e in exps:
        if not e.get("complete", True):
            parts.append(f"<p class='bad'>{_e(e.get('exposure'))} {_e(e.get('detector'))}: "
                         "INCOMPLETE, see deadletter.jsonl</p>")
        for n in e.get("notes", []) or []:
            parts.append(f"<p class='note'>{_e(e.get('exposure'))} {_e(e.get('detector'))}: {_e(n)}</p>")
    dead = []
    if fs.isfile(fs.join(outdir, "deadletter.jsonl")):
        for line in fs.read_text(fs.join(outdir, "deadletter.jsonl")).splitlines():
            if line.strip():
                try:
                    dead.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    parts.append(f"<h3>Dead letters ({len(dead)})</h3>" + _table(dead[:50]))
    if len(dead) > 50:
        parts.append(f"<p class='note'>{len(dead) - 50} more in deadletter.jsonl</p>")

    # fit
    groups = sorted({e.group for e in entries} | {
        f"{x.get('exposure')}_{str(x.get('detector', '')).lower()}" for x in exps})
    frows = []
    for g in groups:
        fit = _read_json(fs.join(outdir, f"fit_{g}.json"))
        if not fit or "params" not in fit:
            continue
        frows.append({"group": g, "Rp/R*": fit["params"].get("rp"),
                      "error": fit.get("errors", {}).get("rp"), "depth [ppm]":
                      1e6 * fit.get("depth", float("nan")),
                      "RMS [ppm]": fit.get("rms_ppm"), "chi2/dof": fit.get("reduced_chi2"),
                      "points": fit.get("n_points"), "converged": fit.get("success")})
    parts.append("<h2 id='fit'>Quick-look fit</h2>" + _table(frows))
    prod = run.get("products", {})
    if isinstance(prod, dict) and isinstance(prod.get("fit"), dict):
        for g, r in sorted(prod["fit"].items()):
            if isinstance(r, dict) and r.get("error"):
                parts.append(f"<p class='bad'>{_e(g)}: {_e(r['error'])}</p>")

    # plots
    parts.append("<h2 id='plots'>Plots</h2>")
    skipped = []
    for g in sorted({e.group for e in entries}):
        parts.append(f"<h3>{_e(g)}</h3>")
        for e in (x for x in entries if x.group == g):
            if not e.file:
                skipped.append({"group": g, "plot": e.kind, "why": e.note})
                continue
            try:
                src = _img(outdir, e.file)
            except Exception as exc:  # noqa: BLE001
                skipped.append({"group": g, "plot": e.kind, "why": f"unreadable: {exc}"})
                continue
            extra = ("; ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}"
                               for k, v in e.extra.items()) if e.extra else "")
            parts.append(f"<figure id='{_e(e.kind)}_{_e(g)}'><img alt='{_e(e.kind)} {_e(g)}' "
                         f"src='{src}'><figcaption><b>{_e(e.kind)}</b> ({_e(e.file)}): "
                         f"{_e(e.caption)}{(' ' + _e(extra)) if extra else ''}</figcaption></figure>")
    if not entries:
        parts.append("<p class='note'>no plots (run <code>nirbeam plot OUTDIR</code>)</p>")
    if skipped:
        parts.append("<h3>Plots not drawn</h3>" + _table(skipped))

    # references
    parts.append("<h2 id='references'>References</h2><h3>Calibration reference files</h3>"
                 + _table(_references(run)))
    parts.append("<h3>Methods</h3><ul>" + "".join(
        f"<li>{_e(a)}: {_e(b)}</li>" for a, b in LITERATURE) + "</ul>")

    # timings
    timings = run.get("timings_s", {})
    peak = run.get("peak_rss_mib_after", {})
    trow = [{"stage": k, "seconds": v, "peak RSS after [MiB]": peak.get(k, "")}
            for k, v in timings.items()]
    parts.append("<h2 id='timings'>Timings</h2>" + _table(trow))
    metrics = run.get("metrics", {})
    if metrics:
        mrow = []
        for k, v in sorted(metrics.items()):
            if isinstance(v, dict):
                mrow.append({"counter": k, **{kk: vv for kk, vv in v.items()}})
            else:
                mrow.append({"counter": k, "value": v})
        parts.append("<h3>Beam counters and distributions</h3>" + _table(mrow))

    # configuration
    # the effective settings as the run saved them (effective_config.toml), else run.json's
    cfg_path = fs.join(outdir, "effective_config.toml")
    if fs.isfile(cfg_path):
        cfg_txt = fs.read_text(cfg_path)
    else:
        cfg_txt = json.dumps(run.get("config", {}), indent=1)
    parts.append("<h2 id='config'>Effective configuration</h2><pre>" + _e(cfg_txt) + "</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(outdir: str, *, redraw: bool = True) -> str:
    """Write ``OUTDIR/report.html`` (drawing the plots first when ``redraw``); returns its path."""
    entries = None
    if redraw:
        from nirbeam.sinks.diagnostics import plot_products

        entries = plot_products(outdir)
    text = render_report(outdir, entries)
    path = fs.join(outdir, "report.html")
    fs.write_text(path, text)
    return path
