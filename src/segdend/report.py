"""``segdend report DIR``: one self-contained HTML page and a summary.csv of the experiments.

The report collects every experiment directory under DIR (a folder with ``experiment.json``,
as written by ``segdend reproduce``) and every other ``summary.csv`` found there (e.g. a
``results/`` tree). For each experiment it says what was run (presets, overrides, seeds,
epochs against the paper's, mode, data), the measured result (mean and spread over seeds, and
the spread of repeated tests) next to the published one, and shows the figure, embedded as a
base64 PNG so that the page is one file that opens anywhere.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import time
from pathlib import Path
from typing import Any

from segdend.checkpoint import atomic_write_text
from segdend.errors import SegdendError
from segdend.experiments.registry import list_experiments
from segdend.experiments.summary import SUMMARY_COLUMNS, summary_rows, write_summary_csv

__all__ = ["SUMMARY_COLUMNS", "build_report", "find_experiment_dirs", "load_experiment_dir",
           "summary_rows", "write_report", "write_summary_csv"]

# ---------------------------------------------------------------------------------------------
# Collecting what there is


def find_experiment_dirs(root: Path) -> list[Path]:
    """Folders under ``root`` (itself included) holding an ``experiment.json``."""
    root = Path(root)
    found = sorted({p.parent for p in root.rglob("experiment.json")})
    return found


def load_experiment_dir(path: Path) -> dict[str, Any]:
    """Manifest, analysis results, summary rows and figure of one experiment directory."""
    path = Path(path)
    try:
        manifest = json.loads((path / "experiment.json").read_text())
    except (OSError, ValueError) as err:
        raise SegdendError(f"{path / 'experiment.json'} is unreadable: {err}") from None
    results = None
    if (path / "results.json").is_file():
        try:
            results = json.loads((path / "results.json").read_text())
        except ValueError:
            results = None
    rows = summary_rows(results) if results else []
    figure = path / manifest.get("figure", f"{manifest.get('experiment', '')}.png")
    return {"dir": path, "manifest": manifest, "results": results, "rows": rows,
            "figure": figure if figure.is_file() else None}


def _other_summaries(root: Path, experiment_dirs: list[Path], exclude: Path) -> list[Path]:
    out = []
    for p in sorted(Path(root).rglob("summary.csv")):
        if p.resolve() == exclude.resolve():
            continue
        if any(d == p.parent or d in p.parents for d in experiment_dirs):
            continue
        out.append(p)
    return out


# ---------------------------------------------------------------------------------------------
# HTML

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid
#ccc; padding-bottom: 0.2em; } h3 { font-size: 1.05em; margin-bottom: 0.3em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #b2182b; font-weight: bold; } .claim { font-style: italic; }
.muted { color: #777; } code { font-size: 0.9em; background: #f6f6f6; padding: 0 0.2em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
"""


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _fmt(x: Any, nd: int = 2) -> str:
    if x is None or x == "":
        return "–"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return _e(x)
    return "–" if not math.isfinite(v) else f"{v:.{nd}f}"


def _pm(mean: Any, sd: Any, nd: int = 2) -> str:
    if mean in (None, "") or (isinstance(mean, float) and not math.isfinite(mean)):
        return "–"
    return f"{_fmt(mean, nd)} ± {_fmt(sd, nd)}"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _results_table(rows: list[dict[str, Any]], measure_label: str) -> str:
    measure_is_error = rows and rows[0].get("measure") == "test_error"
    head = ["condition", "seeds", "epochs", "test error % (mean ± sd over seeds)",
            "sd of repeated tests (n)"]
    if not measure_is_error:
        head.append(_e(measure_label) + " (mean ± sd)")
    head.append("published")
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for r in rows:
        cells = [f"<td>{_e(r['condition'])}</td>", f'<td class="num">{_e(r["seeds"])}</td>',
                 f'<td class="num">{_e(r["epochs"])} of {_e(r["paper_epochs"])}</td>',
                 f'<td class="num">{_pm(r["test_error_mean"], r["test_error_sd"])}</td>',
                 f'<td class="num">{_fmt(r["test_error_repeat_sd"])} '
                 f'({_e(r.get("test_repeats", ""))})</td>']
        if not measure_is_error:
            cells.append(f'<td class="num">{_pm(r["value_mean"], r["value_sd"], 3)}</td>')
        cells.append(f'<td class="num">{_fmt(r["published"]) if r["published"] != "" else "–"}'
                     "</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _run_table(manifest: dict[str, Any]) -> str:
    out = ["<table><tr><th>condition</th><th>preset</th><th>overrides</th><th>seeds</th></tr>"]
    for cond, c in manifest.get("conditions", {}).items():
        over = "<br>".join(f"<code>{_e(o)}</code>" for o in c.get("overrides", [])) or "–"
        out.append(f"<tr><td>{_e(cond)}</td><td><code>{_e(c.get('preset'))}</code></td>"
                   f"<td>{over}</td><td>{_e(', '.join(str(s) for s in c.get('seeds', [])))}"
                   "</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _experiment_section(item: dict[str, Any]) -> str:
    m, rows = item["manifest"], item["rows"]
    exp_id = m.get("experiment", item["dir"].name)
    parts = [f'<section id="exp-{_e(exp_id)}">',
             f"<h2>{_e(exp_id)}: {_e(m.get('title', ''))} "
             f"<span class=\"muted\">({_e(m.get('figure_ref', ''))})</span></h2>",
             f'<p class="claim">Published: {_e(m.get("claim", ""))}</p>']
    if m.get("note"):
        parts.append(f'<p class="note">{_e(m["note"])}</p>')
    parts.append(
        f"<p>Run: {_e(m.get('seeds'))} seed(s) per condition, {_e(m.get('epochs'))} of "
        f"{_e(m.get('paper_epochs'))} epochs, {_e(m.get('mode'))} mode, engine "
        f"{_e(', '.join(m.get('engines', [])) or m.get('engine'))}, "
        f"{_e(m.get('train_examples'))} training and {_e(m.get('test_examples'))} test images, "
        f"{_e(m.get('test_repeats'))} repeated test(s); status {_e(m.get('status'))}; "
        f"directory <code>{_e(item['dir'])}</code>.</p>")
    parts.append("<h3>What was run</h3>")
    parts.append(_run_table(m))
    parts.append("<h3>Result</h3>")
    problems = (item["results"] or {}).get("problems", [])
    if problems:
        parts.append('<ul class="note">' + "".join(f"<li>{_e(p)}</li>" for p in problems)
                     + "</ul>")
    if rows:
        parts.append(_results_table(rows, m.get("measure_label", "value")))
    else:
        parts.append('<p class="muted">not analysed yet (no results.json)</p>')
    if item["figure"] is not None:
        pdf = item["figure"].with_suffix(".pdf")
        link = f' <a href="{_e(pdf.name)}">PDF</a>' if pdf.is_file() else ""
        parts.append(f"<figure>{_img(item['figure'], exp_id + ' figure')}"
                     f"<figcaption>{_e(m.get('title', ''))}{link}</figcaption></figure>")
    else:
        parts.append('<p class="muted">no figure yet</p>')
    parts.append("</section>")
    return "\n".join(parts)


def _overview(items: list[dict[str, Any]]) -> str:
    out = ["<table><tr><th>experiment</th><th>condition</th><th>seeds</th><th>epochs</th>"
           "<th>test error %</th><th>measure</th><th>value</th><th>published</th></tr>"]
    for item in items:
        for r in item["rows"]:
            value = ("(test error)" if r["measure"] == "test_error"
                     else _pm(r["value_mean"], r["value_sd"], 3))
            out.append(
                f'<tr><td><a href="#exp-{_e(r["experiment"])}">{_e(r["experiment"])}</a></td>'
                f"<td>{_e(r['condition'])}</td><td class=\"num\">{_e(r['seeds'])}</td>"
                f'<td class="num">{_e(r["epochs"])} / {_e(r["paper_epochs"])}</td>'
                f'<td class="num">{_pm(r["test_error_mean"], r["test_error_sd"])}</td>'
                f"<td>{_e(r['measure'])}</td><td class=\"num\">{value}</td>"
                f'<td class="num">{_fmt(r["published"]) if r["published"] != "" else "–"}</td>'
                "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _csv_section(path: Path, root: Path) -> str:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return ""
    rel = path.relative_to(root) if root in path.parents else path
    out = [f"<h3><code>{_e(rel)}</code></h3><table>",
           "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in rows[0]) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows[1:]]
    out.append("</table>")
    for png in sorted(path.parent.glob("*.png")):
        out.append(f"<figure>{_img(png, png.stem)}<figcaption>{_e(png.name)}</figcaption>"
                   "</figure>")
    return "\n".join(out)


def _paper_order(item: dict[str, Any]) -> tuple[int, str]:
    ids = list(list_experiments())
    exp_id = item["manifest"].get("experiment", "")
    return (ids.index(exp_id) if exp_id in ids else len(ids), str(item["dir"]))


def build_report(root: Path, summary_path: Path | None = None) -> tuple[str, list[dict]]:
    """The HTML text of the report of everything under ``root``, and the summary rows."""
    root = Path(root)
    if not root.is_dir():
        raise SegdendError(f"{root} is not a directory")
    items = sorted((load_experiment_dir(d) for d in find_experiment_dirs(root)),
                   key=_paper_order)
    others = _other_summaries(root, [i["dir"] for i in items],
                              summary_path or root / "summary.csv")
    if not items and not others:
        raise SegdendError(f"no experiment (experiment.json) or summary.csv under {root}; run "
                           "`segdend reproduce ID --out DIR/ID` first")
    rows = [r for i in items for r in i["rows"]]
    body = ["<h1>segdend: reproducing Guerguiev, Lillicrap &amp; Richards (eLife 2017)</h1>",
            f'<p class="muted">Report of <code>{_e(root)}</code>, generated '
            f"{_e(time.strftime('%Y-%m-%d %H:%M'))}. The paper's results are test errors on the "
            "10,000 MNIST test images after online training in spiking mode, means of 20 "
            "repeated tests (spread about ±0.1 percentage point). Runs labelled "
            '<span class="note">shortened</span> used fewer epochs or examples than the '
            "paper and are not comparable with its numbers.</p>"]
    if items:
        body += ["<h2>Overview</h2>", _overview(items)]
        body += [_experiment_section(i) for i in items]
    if others:
        body.append("<h2>Other results</h2>")
        body += [_csv_section(p, root) for p in others]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>segdend report: {_e(root.name)}</title><style>{CSS}</style></head>"
            "<body>\n" + "\n".join(body) + "\n</body></html>\n")
    return page, rows


def write_report(root: Path, out: Path | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` (or ``out``) and ``summary.csv`` into ``root``; returns both."""
    root = Path(root)
    summary = root / "summary.csv"
    page, rows = build_report(root, summary)
    html_path = Path(out) if out is not None else root / "report.html"
    atomic_write_text(html_path, page)
    if rows:
        write_summary_csv(rows, summary)
    return html_path, summary
