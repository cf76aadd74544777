"""The plain-text and JSON results a run writes (DESIGN §6), and the CLI's summary table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ad_core.io import write_json, write_text

NA = "n/a"

# The chosen threshold named in words, for the confusion-matrix header.
_METHOD_WORDS = {
    "f1_percentile": "F1 Threshold",
    "f1_uniform": "F1 Uniform Threshold",
    "roc_youden": "ROC Youden J Threshold",
    "percentile_95": "95th Percentile Threshold",
    "mean_ksigma": "Mean + k Sigma Threshold",
}


def _is_missing(value: Any) -> bool:
    """None and NaN both print as n/a: a metric that cannot be computed is not a number to compare."""
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def _num(value: Any, digits: int = 3) -> str:
    return NA if _is_missing(value) else f"{float(value):.{digits}f}"


def _pct(value: Any) -> str:
    """`0.987 (98.7%)`, the form users compare against papers."""
    return NA if _is_missing(value) else f"{float(value):.3f} ({100 * float(value):.1f}%)"


def _k(value: Any) -> str:
    """k of mean + k sigma: `3.0`, `2.5`, or more digits only when they matter."""
    k = float(value)
    return f"{k:.1f}" if round(k, 1) == k else f"{k:g}"


def _header_value(value: Any) -> str:
    if isinstance(value, float):
        return NA if math.isnan(value) else str(round(value, 6))
    if isinstance(value, (list, tuple)):
        return "; ".join(_header_value(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


def _threshold_lines(thresholds: dict[str, dict]) -> list[str]:
    lines = []
    if "f1_percentile" in thresholds:
        t = thresholds["f1_percentile"]
        lines.append(f"F1 (Percentile): {_num(t['value'])} | F1: {_num(t.get('f1'))}")
    if "f1_uniform" in thresholds:
        t = thresholds["f1_uniform"]
        lines.append(f"F1 (Uniform): {_num(t['value'])} | F1: {_num(t.get('f1'))}")
    if "roc_youden" in thresholds:
        t = thresholds["roc_youden"]
        lines.append(
            f"ROC (Youden J): {_num(t['value'])} | Sensitivity: {_num(t.get('sensitivity'))}, "
            f"Specificity: {_num(t.get('specificity'))}"
        )
    if "percentile_95" in thresholds:
        lines.append(f"Percentile (95%): {_num(thresholds['percentile_95']['value'])}")
    if "mean_ksigma" in thresholds:
        t = thresholds["mean_ksigma"]
        lines.append(f"Mean + {_k(t.get('k', 3.0))} sigma (train): {_num(t['value'])}")
    for name, t in thresholds.items():
        if t.get("fixed"):
            lines.append(f"{name} (set by the model): {_num(t['value'])}")
    return lines or ["none (no normal test images and no training scores)"]


def _method_words(method: str, thresholds: dict[str, dict]) -> str:
    if method == "mean_ksigma" and "mean_ksigma" in thresholds:
        return f"Mean + {_k(thresholds['mean_ksigma'].get('k', 3.0))} Sigma Threshold"
    return _METHOD_WORDS.get(method, f"{method} Threshold")


def format_results_txt(results: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """The human-readable `results.txt`; its layout is the one users already know, so keep it stable."""
    lines: list[str] = []
    if header:
        lines.append("=== Run ===")
        lines += [f"{key}: {_header_value(value)}" for key, value in header.items()]
        lines.append("")

    image = results.get("image") or {}
    lines += [
        "=== Image-level Results ===",
        f"AUROC: {_pct(image.get('auroc'))}",
        f"AUPR: {_pct(image.get('aupr'))}",
        f"F1-max: {_num(image.get('f1_max'))}",
        "",
        "=== Pixel-level Results ===",
    ]
    pixel = results.get("pixel")
    if pixel is None:
        lines.append("not available (no masks)")
    else:
        lines += [f"AUROC: {_pct(pixel.get('auroc'))}", f"AUPRO: {_pct(pixel.get('aupro'))}"]
    lines.append("")

    thresholds = results.get("thresholds") or {}
    chosen = results.get("threshold") or {}
    method = str(chosen.get("method", "unknown"))
    lines.append("=== Thresholds ===")
    lines += _threshold_lines(thresholds)
    chosen_line = f"Chosen: {method} = {_num(chosen.get('value'))}"
    if chosen.get("fallback_from"):
        chosen_line += f" (fallback from {chosen['fallback_from']}: the test set cannot support it)"
    lines += [chosen_line, ""]

    c = results.get("confusion")
    if c:
        lines += [
            f"=== Confusion Matrix ({_method_words(method, thresholds)}) ===",
            f"TP={c['tp']}, FN={c['fn']}, TN={c['tn']}, FP={c['fp']}",
            f"Accuracy: {_num(c.get('accuracy'))}, Precision: {_num(c.get('precision'))}, "
            f"Recall: {_num(c.get('recall'))}",
            "",
        ]

    counts, score_range = results.get("counts"), results.get("score_range")
    if counts or score_range:
        lines.append("=== Test Set ===")
        if counts:
            lines.append(f"Normal: {counts.get('normal')}, Anomalous: {counts.get('anomalous')}")
        if score_range:
            lines.append(f"Score range: {_num(score_range.get('min'), 4)} .. {_num(score_range.get('max'), 4)}")
        lines.append("")
    return "\n".join(lines)


def write_results(
    out_dir: str | Path, results: dict[str, Any], header: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write `results.txt` and `results.json` atomically; the JSON holds the run header under `run`."""
    out_dir = Path(out_dir)
    txt = write_text(out_dir / "results.txt", format_results_txt(results, header))
    js = write_json(out_dir / "results.json", {"run": dict(header or {}), **results})
    return txt, js


def _cell(value: Any) -> str:
    if _is_missing(value):
        return NA
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _is_numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain aligned table for terminals and logs: numbers right-aligned, text left-aligned."""
    if not columns:
        return ""
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
    numeric = [
        bool(rows) and all(_is_numeric(row.get(col)) or _is_missing(row.get(col)) for row in rows)
        for col in columns
    ]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return " | ".join(parts).rstrip()

    out = [line(list(columns)), "-+-".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)
