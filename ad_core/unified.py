"""Unified (multi-class) training: ONE model fitted on the union of several categories' normal images, then
evaluated per category and on the mean of the categories, as ADer and the Dinomaly authors report.

Each category keeps its own validation source (its own seeded holdout, or its own share of its test split), so
each category's image and pixel thresholds and score ranges are chosen on that category's held-out images only;
the union of those sources serves what has no category (early stopping, and the checkpoint's default decisions
for images of unknown category). The run folder `<output>/<dataset>/unified-<a>+<b>/<model>/` holds the one
model (it loads like any run), a `results.txt`/`results.json` with the per-category table and the mean, and one
folder per category with exactly the outputs a per-category run writes.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset

from ad_core.checkpoint import save_checkpoint
from ad_core.data import get_dataset
from ad_core.detector import Detector
from ad_core.evaluation import Calibration, calibrate, evaluate_detector, threshold_method_for
from ad_core.io import write_json, write_text
from ad_core.metrics.evaluate import check_threshold_method
from ad_core.metrics.thresholds import mean_ksigma_threshold, normal_fpr_threshold
from ad_core.options import check_options
from ad_core.plugins import get_registry
from ad_core.preprocessing import PreProcessor
from ad_core.reports import format_table
from ad_core.run_folder import open_run_folder, run_folder_scope
from ad_core.run_settings import pop_runner_settings
from ad_core.runner import RunResult, _build, make_loader, model_meta, preprocessed, training_loader
from ad_core.settings import settings
from ad_core.training import TrainerOptions, seed_everything, trainer_class
from ad_core.training.fingerprint import fingerprinted_config
from ad_core.validation import ValidationSplit, describe_validation, validation_split

UNIFIED_MARK = "unified-"  # the run folder's category part starts with this
MAX_LABEL = 80  # characters of `unified-a+b+...` before the label becomes a count and a digest
METRICS = ("image_auroc", "image_aupr", "image_f1_max", "pixel_auroc", "pixel_aupro", "pixel_aupimo", "recall", "fpr")


class UnifiedTrainingError(ValueError):
    """Unified training was asked of a model that cannot do it, or with fewer than two categories."""


class UnknownCategoryError(ValueError):
    """A category was named that the loaded model was not trained and thresholded on."""


def unified_label(categories: Iterable[str]) -> str:
    """The run folder name of a unified run: `unified-bottle+wood`, or `unified-15-<digest>` when that is long."""
    names = list(categories)
    label = UNIFIED_MARK + "+".join(names)
    if len(label) <= MAX_LABEL:
        return label
    return f"{UNIFIED_MARK}{len(names)}-{hashlib.sha1('+'.join(names).encode()).hexdigest()[:8]}"


def check_unified(model: str) -> None:
    """Raise `UnifiedTrainingError` with the spec's reason when `model` cannot be trained on several categories."""
    spec, variant = get_registry().resolve(model)
    if not spec.unified:
        raise UnifiedTrainingError(f"model {variant!r} cannot be trained unified (one model for several "
                                   f"categories): {spec.unified_reason.strip()} Train it per category instead "
                                   "(without --unified).")


def with_unified_defaults(model: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides completed by the spec's `unified_<key>` defaults: `<key>` takes that value unless set."""
    from ad_core.building import ALIASES

    spec, variant = get_registry().resolve(model)
    given = {ALIASES.get(k, k) for k in overrides}
    return {**{k: v for k, v in spec.unified_defaults(variant).items() if k not in given}, **overrides}


def metric_summary(results: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of one evaluation (`results.json`): AUROC, AUPR, F1-max, pixel AUROC/AUPRO/AUPIMO,
    and recall and FPR at the saved threshold."""
    image, pixel, confusion = results.get("image") or {}, results.get("pixel") or {}, results.get("confusion") or {}
    negatives = confusion.get("fp", 0) + confusion.get("tn", 0)
    return {
        "image_auroc": image.get("auroc"), "image_aupr": image.get("aupr"), "image_f1_max": image.get("f1_max"),
        "pixel_auroc": pixel.get("auroc"), "pixel_aupro": pixel.get("aupro"),
        "pixel_aupimo": (pixel.get("aupimo") or {}).get("mean"),
        "recall": confusion.get("recall"),
        "fpr": confusion["fp"] / negatives if negatives else None,
    }


def mean_metrics(per_category: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The mean over categories of each metric (None where no category has it), as the unified papers report."""
    out: dict[str, float | None] = {}
    for key in METRICS:
        values = [float(m[key]) for m in per_category.values() if m.get(key) is not None
                  and np.isfinite(float(m[key]))]
        out[key] = float(np.mean(values)) if values else None
    return out


def _default_threshold(calibration: Calibration, method: str, k_sigma: float, target_fpr: float,
                       own_methods: dict[str, float]) -> dict[str, Any]:
    """The checkpoint's category-free image threshold: the run's rule on the union of the validation normals.

    A test-label (oracle) rule has no union test split to read here, so it falls back to `normal_fpr`.
    """
    if method in own_methods:
        return {"method": method, "value": float(own_methods[method]), "selected_on": "the model itself (no data)"}
    if method == "mean_ksigma":
        value = mean_ksigma_threshold(calibration.normal_scores, k_sigma)["value"]
    else:
        method, value = "normal_fpr", normal_fpr_threshold(calibration.normal_scores, target_fpr)["value"]
    return {"method": method, "value": float(value), "selected_on": calibration.selected_on}


def category_decisions(calibration: Calibration, threshold: dict[str, Any]) -> dict[str, Any]:
    """What `apply_category` needs to make a unified detector decide as it did for one category."""
    return {"threshold": threshold, "score_range": list(calibration.score_range),
            "pixel_threshold": None if calibration.pixel_threshold is None else calibration.pixel_threshold["value"],
            "map_range": None if calibration.map_range is None else list(calibration.map_range)}


def apply_category(detector: Detector, category: str) -> bool:
    """Set a unified detector's thresholds and ranges to those chosen on `category`'s own validation source.

    Returns False (the detector keeps its union decisions) when the checkpoint is not unified or was not
    trained on `category`.
    """
    decisions = ((detector.meta.get("unified") or {}).get("decisions") or {}).get(category)
    if decisions is None:
        return False
    if decisions["pixel_threshold"] is not None and decisions["map_range"] is not None:
        detector.post.calibrate_pixels(decisions["pixel_threshold"], *decisions["map_range"])
    detector.post.calibrate(decisions["threshold"]["value"], *decisions["score_range"])
    return True


def use_category(detector: Detector, category: str) -> None:
    """Make a loaded detector decide as it did for `category`: a unified run's per-category thresholds and ranges;
    a per-category run keeps its own when `category` is the one it was trained on.

    Raises `UnknownCategoryError` naming the categories the run knows, so a misspelt category never falls back
    silently to the thresholds of another category or of the union.
    """
    categories = (detector.meta.get("unified") or {}).get("categories")
    if categories is None:
        trained = (detector.meta.get("trained_on") or {}).get("category")
        if category != trained:
            raise UnknownCategoryError(f"this model was trained and thresholded on category {trained!r} only, not "
                                       f"{category!r}; a category choice needs a unified run (train --unified), "
                                       "or leave it out to use the stored threshold")
        return
    if not apply_category(detector, category):
        raise UnknownCategoryError(f"category {category!r} is not one of this unified run's categories "
                                   f"({', '.join(categories)}); name one of them, or leave the category out to use "
                                   "the threshold chosen on all of them")


def _splits(dataset: str, categories: list[str], image_size: Any, root: str | Path | None, seed: int,
            source: dict[str, Any], masks: dict[str, Any]) -> dict[str, ValidationSplit]:
    """Each category's train / validation / test split, every file checked before anything trains."""
    if source.get("folder") is not None:
        raise UnifiedTrainingError("validation_dir names one folder of held-out images, but a unified run chooses "
                                   "each category's thresholds on that category's own images: use "
                                   "validation='holdout' (the default) or validation='test_split'")
    splits = {}
    for category in categories:
        train_full = get_dataset(dataset, category, "train", image_size=image_size, root=root)
        test_full = get_dataset(dataset, category, "test", image_size=image_size, root=root, **masks)
        train_full.check_files()
        test_full.check_files()
        splits[category] = validation_split(train_full, test_full, seed=seed, image_size=image_size, **source)
    return splits


@run_folder_scope
def run_unified(dataset: str, categories: list[str], model_name: str, root: str | Path | None = None,
                output_dir: str | Path | None = None, **overrides: Any) -> list[RunResult]:
    """Train ONE model on the union of `categories`' normal training images; evaluate it per category.

    Returns one `RunResult` per category (its `output_dir` is the category's folder in the unified run folder,
    its `run["unified_dir"]` the run folder itself, which holds the checkpoint).
    """
    categories = list(dict.fromkeys(categories))
    if len(categories) < 2:
        raise UnifiedTrainingError(f"unified training fits one model on several categories; got {categories}: "
                                   "name two or more (or 'all')")
    check_unified(model_name)
    notes: list[str] = []
    overrides = check_options(model_name, with_unified_defaults(model_name, overrides))
    runner = pop_runner_settings(overrides)
    seed_everything(runner.seed)
    model, config = _build(model_name, dict(overrides), notes)
    run = {**config.run}
    k_sigma = float(run.get("k_sigma", 3.0))
    own_methods = model.fixed_thresholds()
    threshold_method = threshold_method_for(config.name, run, "threshold_method" in overrides, own_methods, notes)
    check_threshold_method(threshold_method, train_scores=(), fixed_thresholds=own_methods)
    image_size, batch_size = run["image_size"], int(run["batch_size"])
    eval_batch, workers = int(run.get("eval_batch_size", batch_size)), run.get("num_workers")
    splits = _splits(dataset, categories, image_size, root, runner.seed, runner.source, runner.masks)
    train_set = ConcatDataset([splits[c].train for c in categories])
    union_validation = ConcatDataset([splits[c].validation for c in categories])
    detector = Detector(model, pre=PreProcessor.from_run(run))
    label = unified_label(categories)
    out = Path(output_dir or settings.output_dir) / dataset / label / config.name
    folder = open_run_folder(out)

    options = TrainerOptions.from_run(run, device=runner.device, checkpoint_dir=out / "train_state",
                                      config=fingerprinted_config(config, runner.seed))
    trainer = trainer_class(config.spec.trainer)(options)
    train_loader = training_loader(train_set, batch_size, runner.seed, num_workers=workers)
    union_loader = make_loader(union_validation, eval_batch, shuffle=False, seed=runner.seed, num_workers=workers)
    val = preprocessed(union_loader, detector) if run.get("early_stopping_patience") else None
    report = trainer.fit(model, preprocessed(train_loader, detector), val, generator=train_loader.generator)
    detector.to(runner.device).eval()

    common = {"dataset": dataset, "model": config.name, "plugin": config.plugin, "image_size": image_size,
              "unified": categories, "train_images": len(train_set),
              "train_images_per_category": {c: len(splits[c].train) for c in categories},
              "fit_seconds": round(report.seconds, 3), "device": str(runner.device), "seed": runner.seed,
              "epochs": report.epochs, "steps": report.steps}
    if notes:
        common["warnings"] = notes
    if report.notes:
        common["notes"] = list(report.notes)
    if "images" in report.extra:
        common["fit_images"] = report.extra["images"]  # images the model saw in its one pass
    if "best_epoch" in report.extra:
        common["early_stopping"] = {"best_epoch": report.extra["best_epoch"], "metric": "image AUROC",
                                    "selected_on": "validation: the union of the categories' validation sources"}

    runs, decisions, validations = [], {}, {}
    for category in categories:
        split = splits[category]
        calibration = calibrate(detector, make_loader(split.validation, eval_batch, False, runner.seed, workers),
                                runner.device, describe_validation(split.info), runner.target_fpr, split.info)
        calibration.apply_pixels(detector)
        header = {**common, "category": category, "unified_dir": str(out)}
        if "test_note" in split.info:
            header["test_split"] = split.info["test_note"]
        results = evaluate_detector(detector, make_loader(split.test, eval_batch, False, runner.seed, workers),
                                    folder.staging / category, header, runner.device,
                                    threshold_method=threshold_method, k_sigma=k_sigma, target_fpr=runner.target_fpr,
                                    fixed_thresholds=own_methods, write_maps=runner.write_maps,
                                    calibration=calibration)
        decisions[category] = category_decisions(calibration, results["threshold"])
        validations[category] = results["validation"]
        runs.append(RunResult(dataset, category, config.name, out / category, results, run=header, warnings=notes))

    union = calibrate(detector, union_loader, runner.device,
                      "validation: the union of the categories' validation sources", runner.target_fpr)
    union.apply_pixels(detector)
    default = _default_threshold(union, threshold_method, k_sigma, runner.target_fpr, own_methods)
    union.apply_image(detector, default["value"])
    summary = write_unified_results(folder.staging, {**common, "category": label}, runs)
    save_checkpoint(detector, folder.staging, {
        **model_meta(config, folder.run_id, run),
        "threshold": default,
        "decisions": union.decisions(default),
        "validation": {"source": "union of the categories' validation sources", "categories": validations},
        "unified": {"categories": categories, "decisions": decisions, "mean": summary["mean"]},
        "trained_on": {"dataset": dataset, "category": label, "categories": categories, "images": len(train_set),
                       "root": None if root is None else str(Path(root).resolve())},
    })
    folder.commit()
    return runs


def write_unified_results(out: Path, header: dict[str, Any], runs: list[RunResult]) -> dict[str, Any]:
    """The run folder's `results.json` and `results.txt`: each category's headline figures and their mean."""
    per_category = {r.category: metric_summary(r.results) for r in runs}
    summary = {"categories": per_category, "mean": mean_metrics(per_category),
               "thresholds": {r.category: r.results["threshold"] for r in runs}}
    write_json(out / "results.json", {"run": header, "unified": summary})
    write_text(out / "results.txt", format_unified_txt(header, summary))
    return summary


def format_unified_txt(header: dict[str, Any], summary: dict[str, Any]) -> str:
    """`results.txt` of a unified run: the run, then one row per category and the mean row."""
    rows = [{"category": name, **metrics} for name, metrics in summary["categories"].items()]
    rows.append({"category": "mean", **summary["mean"]})
    for row, name in zip(rows, [*summary["categories"], None]):
        threshold = summary["thresholds"].get(name) if name else None
        row["threshold"] = None if threshold is None else threshold["value"]
    lines = ["=== Run ===", *[f"{k}: {v}" for k, v in header.items()], "",
             "=== Unified (one model, all categories): per category and mean ===",
             "Each category's threshold and score range were chosen on its own validation source; its folder holds",
             "its full results (results.txt, scores, plots, maps).", "",
             format_table(rows, ["category", *METRICS, "threshold"]), ""]
    return "\n".join(lines)


def train_unified(dataset_type: str | list[str], category: str | list[str], model_type: str | list[str], *,
                  root: str | Path | None = None, output_dir: str | Path | None = None, verbose: bool = True,
                  **overrides: Any) -> list[RunResult]:
    """`train(..., unified=True)`: per dataset and model, one unified run over the categories (`"all"` expands)."""
    from ad_core.data import list_categories
    from ad_core.runner import _as_list, summary_table

    plan = [(ds, list_categories(ds, root) if _as_list(category) == ["all"] else _as_list(category), name)
            for ds in _as_list(dataset_type) for name in _as_list(model_type)]
    for _, _, name in plan:
        check_unified(name)  # every refusal before the first model trains
    runs: list[RunResult] = []
    for i, (ds, cats, name) in enumerate(plan, start=1):
        if settings.progress:
            print(f"[{i}/{len(plan)}] {ds} / {unified_label(cats)} / {name}", file=sys.stderr, flush=True)
        results = run_unified(ds, cats, name, root=root, output_dir=output_dir, **overrides)
        runs += results
        if verbose:
            print(summary_table(results))
            print(f"outputs written to {results[0].run['unified_dir']}")
    return runs
