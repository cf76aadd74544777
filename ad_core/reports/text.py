"""The plain-text and JSON results a run writes (DESIGN §6), and the CLI's summary table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ad_core.io import write_json, write_text

NA = "n/a"
NAN_VALUE = float("nan")

# The chosen threshold named in words, for the confusion-matrix header.
_METHOD_WORDS = {
    "normal_fpr": "Normal-FPR Threshold",
    "f1_percentile": "F1 Threshold",
    "f1_uniform": "F1 Uniform Threshold",
    "roc_youden": "ROC Youden J Threshold",
    "percentile_95": "95th Percentile Threshold",
    "mean_ksigma": "Mean + k Sigma Threshold",
}
ORACLE_TITLE = "=== Oracle Thresholds (tuned on the test labels: optimistic, for reference only) ==="


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


def _threshold_line(name: str, t: dict[str, Any]) -> str | None:
    """One threshold in words, or None for a name without a known layout (the caller shows it generically)."""
    if name == "normal_fpr":
        return (f"Normal FPR {_num(100 * t.get('target_fpr', NAN_VALUE), 1)}% (validation): {_num(t['value'])} | "
                f"FPR on {t.get('normal_count', NA)} validation normals: {_num(t.get('fpr'))}")
    if name in ("f1_percentile", "f1_uniform"):
        kind = "Percentile" if name == "f1_percentile" else "Uniform"
        return f"F1 ({kind}): {_num(t['value'])} | F1: {_num(t.get('f1'))}"
    if name == "roc_youden":
        return (f"ROC (Youden J): {_num(t['value'])} | Sensitivity: {_num(t.get('sensitivity'))}, "
                f"Specificity: {_num(t.get('specificity'))}")
    if name == "percentile_95":
        return f"Percentile (95%): {_num(t['value'])}"
    if name == "mean_ksigma":
        return f"Mean + {_k(t.get('k', 3.0))} sigma (held-out normals): {_num(t['value'])}"
    if t.get("fixed"):
        return f"{name} (set by the model): {_num(t['value'])}"
    return None


def _threshold_lines(thresholds: dict[str, dict]) -> list[str]:
    lines = [line for name, t in thresholds.items() if (line := _threshold_line(name, t)) is not None]
    return lines or ["none (no held-out normal images and no threshold of the model's own)"]


def _confusion_lines(c: dict[str, Any]) -> list[str]:
    fpr = c["fp"] / (c["fp"] + c["tn"]) if c["fp"] + c["tn"] else 0.0
    return [f"TP={c['tp']}, FN={c['fn']}, TN={c['tn']}, FP={c['fp']}",
            f"Accuracy: {_num(c.get('accuracy'))}, Precision: {_num(c.get('precision'))}, "
            f"Recall: {_num(c.get('recall'))}, FPR: {_num(fpr)}"]


def _method_words(method: str, thresholds: dict[str, dict]) -> str:
    if method == "mean_ksigma" and "mean_ksigma" in thresholds:
        return f"Mean + {_k(thresholds['mean_ksigma'].get('k', 3.0))} Sigma Threshold"
    return _METHOD_WORDS.get(method, f"{method} Threshold")


def _pixel_lines(pixel: dict[str, Any] | None, counts: dict[str, Any]) -> list[str]:
    if pixel is None:
        lines = ["not available (no masks)"]
    else:
        lines = [f"AUROC: {_pct(pixel.get('auroc'))}", f"AUPRO: {_pct(pixel.get('aupro'))}"]
        aupimo = pixel.get("aupimo")
        if aupimo:
            low, high = aupimo.get("fpr_bounds", (NAN_VALUE, NAN_VALUE))
            line = f"AUPIMO (FPR {low:g}..{high:g} on normal images): {_pct(aupimo.get('mean'))}"
            if aupimo.get("reason"):
                line += f" ({aupimo['reason']})"
            lines.append(line + f" over {aupimo.get('images', 0)} anomalous image(s)")
    unknown = counts.get("anomalous_without_mask")
    if unknown:
        lines.append(f"Left out: {unknown} anomalous image(s) without a mask (unknown pixels, not normal ones)")
    return lines


def _per_defect_lines(results: dict[str, Any]) -> list[str]:
    recall = results.get("per_defect") or {}
    pixel = (results.get("pixel") or {}).get("per_defect_pixel_auroc") or {}
    if not recall and not pixel:
        return []
    lines = ["=== Per Defect Type (image recall at the saved threshold, pixel AUROC) ==="]
    for kind in sorted(set(recall) | set(pixel)):
        r = recall.get(kind, {})
        lines.append(f"{kind}: images {r.get('images', NA)}, recall {_num(r.get('recall'))}, "
                     f"pixel AUROC {_num(pixel.get(kind))}")
    return lines + [""]


def _validation_lines(results: dict[str, Any]) -> list[str]:
    validation, decisions = results.get("validation"), results.get("decisions") or {}
    if not validation:
        return []
    lines = ["=== Validation (every saved decision is tuned here, never on the test split) ===",
             f"Source: {validation.get('source')}, {validation.get('normal_images')} normal + "
             f"{validation.get('anomalous_images')} anomalous ({validation.get('defects')})",
             f"Image AUROC on validation: {_pct(validation.get('image_auroc'))}"]
    if "score_range" in decisions:
        r = decisions["score_range"]
        lines.append(f"Score range (for normalized_score): {_num(r['min'], 4)} .. {_num(r['max'], 4)}")
    if "pixel_threshold" in decisions:
        t, r = decisions["pixel_threshold"], decisions["map_range"]
        lines.append(f"Pixel threshold (normal FPR {_num(100 * t.get('target_fpr', NAN_VALUE), 1)}%): "
                     f"{_num(t['value'], 4)} | map range {_num(r['min'], 4)} .. {_num(r['max'], 4)}")
    return lines + [""]


def format_results_txt(results: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """The human-readable `results.txt`: each section says what its figures were tuned on."""
    lines: list[str] = []
    if header:
        lines.append("=== Run ===")
        lines += [f"{key}: {_header_value(value)}" for key, value in header.items()]
        lines.append("")

    image = results.get("image") or {}
    counts = results.get("counts") or {}
    lines += [
        "=== Image-level Results ===",
        f"AUROC: {_pct(image.get('auroc'))}",
        f"AUPR: {_pct(image.get('aupr'))}",
        f"F1-max: {_num(image.get('f1_max'))}",
        "",
        "=== Pixel-level Results ===",
        *_pixel_lines(results.get("pixel"), counts),
        "",
    ]
    lines += _validation_lines(results)

    thresholds = results.get("thresholds") or {}
    oracle = results.get("oracle_thresholds") or {}
    chosen = results.get("threshold") or {}
    method = str(chosen.get("method", "unknown"))
    lines.append("=== Thresholds (deployable: set without test labels) ===")
    lines += _threshold_lines(thresholds)
    chosen_line = f"Chosen: {method} = {_num(chosen.get('value'))}"
    if chosen.get("fallback_from"):
        chosen_line += f" (fallback from {chosen['fallback_from']}: the data cannot support it)"
    if chosen.get("selected_on"):
        chosen_line += f" | selected on: {chosen['selected_on']}"
    lines += [chosen_line, ""]

    c = results.get("confusion")
    if c:
        lines += [f"=== Confusion Matrix ({_method_words(method, thresholds)}) ===", *_confusion_lines(c), ""]
    lines += _per_defect_lines(results)

    if oracle:
        lines.append(ORACLE_TITLE)
        for name, t in oracle.items():
            lines.append(_threshold_line(name, t) or f"{name}: {_num(t['value'])}")
            if t.get("confusion"):
                lines += ["  " + line for line in _confusion_lines(t["confusion"])]
        lines.append("")

    score_range = results.get("score_range")
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
