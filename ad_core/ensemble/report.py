"""What an ensemble's folder says about it: the saved rule's results, and how every rule and member compare."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ad_core.api import format_results_txt, format_table, write_results, write_text

if TYPE_CHECKING:
    from ad_core.ensemble.build import EnsembleResult


def _figures(results: dict[str, Any]) -> dict[str, Any]:
    image, pixel = results.get("image") or {}, results.get("pixel") or {}
    return {"image AUROC": image.get("auroc"), "pixel AUROC": pixel.get("auroc"),
            "pixel AUPRO": pixel.get("aupro"), "F1-max": image.get("f1_max")}


def ensemble_table(result: EnsembleResult) -> str:
    """Members (their own evaluation) and the ensemble under each fusion rule, with the best and saved rule."""
    rows = [{"model": m["name"], "validation AUROC": m.get("validation_image_auroc"), "image AUROC": m.get("image_auroc"), "pixel AUROC": m.get("pixel_auroc"),
             "pixel AUPRO": m.get("pixel_aupro"), "F1-max": m.get("f1_max")} for m in result.members]
    for rule, results in result.rules.items():
        marks = [w for w, on in (("best", rule == result.best_fusion), ("saved", rule == result.fusion)) if on]
        label = f"ensemble {rule}" + (f" ({', '.join(marks)})" if marks else "")
        validation = results.get("validation") or {}
        rows.append({"model": label, "validation AUROC": validation.get("image_auroc"), **_figures(results)})
    columns = ["model", "validation AUROC", "image AUROC", "pixel AUROC", "pixel AUPRO", "F1-max"]
    return (f"{result.dataset} / {result.category}: {len(result.members)} members ({result.members_selected_on}), "
            f"best fusion rule: {result.best_fusion} (by validation image AUROC, then validation pixel AUROC; "
            f"the test figures play no part); saved: {result.fusion}\n" + format_table(rows, columns))


def write_ensemble_report(result: EnsembleResult) -> None:
    """`results.json`/`results.txt` of the saved rule (the layout of a run's) and `ensemble.txt`."""
    header = {**result.results.get("run", {}), "model": "ensemble", "fusion": result.fusion,
              "best_fusion": result.best_fusion,
              "fusion_rules": {rule: _figures(r) for rule, r in result.rules.items()},
              "member_results": result.members}
    results = {k: v for k, v in result.results.items() if k != "run"}
    write_results(result.output_dir, results, header)
    table = ensemble_table(result)
    # results.txt is read by people: the nested figures go in as the table, not as JSON lines
    readable = {k: v for k, v in header.items() if not _nested(v)}
    write_text(result.output_dir / "results.txt", f"{format_results_txt(results, readable)}\n"
                                                   f"=== Fusion rules and members ===\n{table}\n")
    write_text(result.output_dir / "ensemble.txt", table + "\n")


def _nested(value: Any) -> bool:
    """A dict, or a list holding dicts: what a `key: value` line could only show as JSON."""
    return isinstance(value, dict) or (isinstance(value, (list, tuple)) and any(isinstance(v, dict) for v in value))
