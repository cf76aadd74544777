"""`report.html`: one self-contained page (inline CSS and JS, figures as data URIs) that opens offline."""

from __future__ import annotations

import base64
import html
import re
from typing import Any

from ad_core.benchmarking.leaderboard import fmt, fmt_mean_std, shown_metrics, status_counts

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1600px; padding: 0 16px; color: #222; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px; margin-top: 40px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; cursor: pointer; user-select: none; position: sticky; top: 0; }
th:hover { background: #e6e6e6; } th.asc::after { content: " \\25B2"; } th.desc::after { content: " \\25BC"; }
td.text, th.text { text-align: left; } td.error { white-space: normal; min-width: 160px; max-width: 360px; text-align: left; }
tr.failed td, tr.timeout td, tr.incomplete td { background: #fdecea; } tr:nth-child(even) td { background-color: #fafafa; }
tr.failed:nth-child(even) td { background: #fbe3e0; }
.status-ok { color: #1a7f37; } .status-failed, .status-timeout, .status-incomplete { color: #b42318; font-weight: 600; }
img { max-width: 100%; border: 1px solid #eee; margin: 4px 0 12px; }
pre { background: #f6f6f6; padding: 8px; overflow-x: auto; font-size: 12px; }
.note { color: #666; } nav a { margin-right: 12px; } .scroll { overflow-x: auto; }
"""

SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var headers = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(headers, function (th, index) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var ascending = !th.classList.contains("asc");
      Array.prototype.forEach.call(headers, function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(ascending ? "asc" : "desc");
      function key(row) {
        var cell = row.cells[index];
        var value = cell.getAttribute("data-value");
        if (value === null) { return cell.textContent.trim().toLowerCase(); }
        return value === "" ? null : parseFloat(value);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
        var order = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _e(text: Any) -> str:
    return html.escape("" if text is None else str(text))


def _anchor(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "dataset"


def image(png: bytes | None, alt: str) -> str:
    if not png:
        return f'<p class="note">{_e(alt)}: nothing to show.</p>'
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _num_cell(value: Any, shown: str | None = None) -> str:
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    data = "" if number is None or number != number else repr(float(number))
    return f'<td data-value="{data}">{_e(fmt(value) if shown is None else shown)}</td>'


def leaderboard_table(dataset: str, entries: list[dict[str, Any]], metrics: list[tuple[str, str]]) -> str:
    headers = ["rank", "model", "cells ok", *[h for _, h in metrics]]
    head = "".join(f'<th class="text">{_e(h)}</th>' if h == "model" else f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for e in entries:
        cells = [_num_cell(e["rank"], str(e["rank"])), f'<td class="text">{_e(e["model"])}</td>',
                 _num_cell(e["cells_ok"] / max(e["cells"], 1), f"{e['cells_ok']}/{e['cells']}")]
        cells += [_num_cell((e[k] or {}).get("mean"), fmt_mean_std(e[k])) for k, _ in metrics]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="sortable leaderboard" id="leaderboard-{_anchor(dataset)}">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def cells_table(dataset: str, rows: list[dict[str, Any]], metrics: list[tuple[str, str]]) -> str:
    """Every cell; the error comes right after the status, so a narrow window scrolls figures, not errors."""
    text_columns = ["category", "model", "status", "error"]
    numeric = [*metrics, ("threshold", "threshold"), ("wall_seconds", "wall s")]
    head = "".join(f'<th class="text">{c}</th>' for c in text_columns)
    head += "".join(f"<th>{_e(h)}</th>" for _, h in numeric)
    body = []
    for r in rows:
        error = str(r.get("error") or "")
        cells = [f'<td class="text">{_e(r["category"])}</td>', f'<td class="text">{_e(r["model"])}</td>',
                 f'<td class="text status-{_e(r["status"])}">{_e(r["status"])}</td>',
                 f'<td class="error" title="{_e(error)}">{_e(error[:200])}</td>']
        cells += [_num_cell(r.get(k)) for k, _ in numeric]
        body.append(f'<tr class="{_e(r["status"])}">' + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table class="sortable cells" id="cells-{_anchor(dataset)}">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def failures(rows: list[dict[str, Any]], logs: dict[tuple[str, str, str], str]) -> str:
    bad = [r for r in rows if r["status"] != "ok"]
    if not bad:
        return ""
    items = []
    for r in bad:
        tail = logs.get((r["dataset"], r["category"], r["model"]), "")
        detail = f"<details><summary>log tail</summary><pre>{_e(tail)}</pre></details>" if tail else ""
        items.append(f'<li><b>{_e(r["category"])}/{_e(r["model"])}</b> <span class="status-{_e(r["status"])}">'
                     f'{_e(r["status"])}</span>: {_e(r.get("error"))}{detail}</li>')
    return "<h3>Failed cells</h3><ul>" + "".join(items) + "</ul>"


def render(title: str, rows: list[dict[str, Any]], summary: dict[str, list[dict[str, Any]]],
           figures: dict[str, dict[str, Any]], logs: dict[tuple[str, str, str], str], generated: str) -> str:
    """The whole page: per dataset a sortable leaderboard, the figures, every cell, and the failures.

    `figures[dataset]` holds PNG bytes under `heatmap`, `speed`, `histograms` and `examples` ({category: png}).
    """
    counts = ", ".join(f"{n} {status}" for status, n in sorted(status_counts(rows).items()))
    parts = [f"<h1>{_e(title)}</h1>",
             f'<p class="note">{len(rows)} cells ({_e(counts or "none")}); generated {_e(generated)}. '
             "Click a column header to sort. Mean ± std over categories; models ranked by mean image AUROC over "
             "the categories they finished.</p>"]
    if len(summary) > 1:
        parts.append("<nav>" + "".join(f'<a href="#{_anchor(d)}">{_e(d)}</a>' for d in summary) + "</nav>")
    for dataset, entries in summary.items():
        subset = [r for r in rows if r["dataset"] == dataset]
        metrics = shown_metrics(subset)
        figs = figures.get(dataset, {})
        parts += [f'<section id="{_anchor(dataset)}"><h2>{_e(dataset)}</h2>',
                  "<h3>Leaderboard</h3>", leaderboard_table(dataset, entries, metrics),
                  "<h3>Image AUROC per category</h3>", image(figs.get("heatmap"), f"{dataset} AUROC heatmap"),
                  "<h3>Accuracy vs speed</h3>", image(figs.get("speed"), f"{dataset} accuracy vs speed"),
                  "<h3>Score histograms of the best models</h3>",
                  '<p class="note">Test scores, normal vs anomalous; dashed: the chosen threshold.</p>',
                  image(figs.get("histograms"), f"{dataset} score histograms"),
                  "<h3>Anomaly maps side by side</h3>",
                  '<p class="note">The same test images for every model; each map is normalised so that 0.5 '
                  "(green) is the model's own threshold.</p>"]
        parts += [image(png, f"{dataset} {category} anomaly maps")
                  for category, png in sorted((figs.get("examples") or {}).items())]
        parts += ["<h3>All cells</h3>", cells_table(dataset, subset, metrics), failures(subset, logs), "</section>"]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
            f"<body>{''.join(parts)}<script>{SCRIPT}</script></body></html>\n")
