"""`build_ensemble(members)`: normalise trained detectors on normal images, evaluate every fusion rule,
keep the best one (or the one asked for) and save the ensemble; `build_ensembles(dir)` does it for the top
models of each (dataset, category) of a benchmark directory."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from ad_core.api import (
    Calibration,
    Detector,
    calibrate,
    describe_validation,
    evaluate_detector,
    get_dataset,
    load_model,
    make_loader,
    members_validation_split,
    normal_subset,
    resolve_device,
    settings,
)
from ad_core.ensemble.calibration import NormalImages, fit_normal_stats, member_outputs_on
from ad_core.ensemble.cells import DEFAULT_RANK_BY, RESULTS_NAME, UNIFIED_SUFFIX, on_validation, select_top
from ad_core.ensemble.fusion import FUSION_RULES, check_rule
from ad_core.ensemble.model import EnsembleModel
from ad_core.ensemble.report import write_ensemble_report
from ad_core.ensemble.storage import is_ensemble, save_ensemble


NAMED_BY_USER = "named by the user"  # how members passed to `build_ensemble` directly were chosen


@dataclass
class EnsembleResult:
    """What building one ensemble produced: per-rule results, the best rule and the one saved."""

    dataset: str
    category: str
    output_dir: Path
    members: list[dict[str, Any]]
    rules: dict[str, dict[str, Any]]
    best_fusion: str
    fusion: str
    detector: Detector | None = field(default=None, repr=False)  # the saved ensemble, ready to predict
    members_selected_on: str = NAMED_BY_USER

    @property
    def results(self) -> dict[str, Any]:
        """The results of the saved rule."""
        return self.rules[self.fusion]


def _metric(results: dict[str, Any], section: str, key: str) -> float:
    value = (results.get(section) or {}).get(key)
    return float("nan") if value is None else float(value)


def best_rule(validation: dict[str, Calibration]) -> str:
    """Highest image AUROC on the validation source, then highest pixel AUROC there; on a tie the earlier rule
    of `FUSION_RULES`. The test split never takes part."""
    def key(rule: str) -> tuple[float, float]:
        image, pixel = validation[rule].image_auroc, validation[rule].pixel_auroc
        return (-math.inf if math.isnan(image) else image, -math.inf if math.isnan(pixel) else pixel)

    return max(validation, key=key)


def _unified_categories(meta: dict[str, Any]) -> list[str] | None:
    """The categories of a unified member (one model for several categories); None for a per-category one."""
    return (meta.get("unified") or {}).get("categories")


def _member_validation(meta: dict[str, Any], category: str) -> dict[str, Any] | None:
    """The member's validation record for `category`: a unified member keeps one per category."""
    if _unified_categories(meta) is None:
        return meta.get("validation")
    return ((meta.get("validation") or {}).get("categories") or {}).get(category)


def _member_summary(path: Path, detector: Detector, category: str) -> dict[str, Any]:
    """The member's name and the figures of its own evaluation on `category` (at its own image size), when
    present: a unified member's are in its category folder."""
    unified = _unified_categories(detector.meta) is not None
    summary: dict[str, Any] = {"name": detector.meta["model"] + (UNIFIED_SUFFIX if unified else ""),
                               "path": str(path), "image_size": detector.meta["image_size"]}
    results_path = (path / category if unified else path) / RESULTS_NAME
    if results_path.is_file():
        results = json.loads(results_path.read_text())
        summary.update({"validation_image_auroc": _metric(results, "validation", "image_auroc"),
                        "image_auroc": _metric(results, "image", "auroc"),
                        "pixel_auroc": _metric(results, "pixel", "auroc"),
                        "pixel_aupro": _metric(results, "pixel", "aupro"),
                        "f1_max": _metric(results, "image", "f1_max")})
    return summary


PLURAL = {"dataset": "datasets", "category": "categories"}


def _trained_on(metas: list[dict[str, Any]], key: str) -> set[Any]:
    return {(m.get("trained_on") or {}).get(key) for m in metas}


def _data_source(metas: list[dict[str, Any]], dataset: str | None, category: str | None,
                 root: str | Path | None) -> tuple[str, str, str | Path | None]:
    """Where the members were trained; they must agree, or the caller names the data. A unified member is fused
    for one of its categories, named by the caller."""
    for meta in metas:
        categories = _unified_categories(meta)
        if categories is not None and category not in categories:
            given = "" if category is None else f"category {category!r} is not one of them; "
            raise ValueError(f"member {meta['model']!r} is one unified model of the categories "
                             f"{', '.join(categories)}: {given}pass category= with one of them (the category the "
                             "ensemble is built and evaluated for)")
    chosen = {"dataset": dataset, "category": category}
    for key, given in chosen.items():
        if given is not None:
            continue
        found = _trained_on(metas, key)
        if len(found) != 1 or None in found:
            raise ValueError(
                f"members {[m['model'] for m in metas]} were trained on different or unrecorded {PLURAL[key]} {found}: "
                f"an ensemble fuses models of one dataset and category (pass {key}= to choose)"
            )
        chosen[key] = found.pop()
    if root is None:
        roots = _trained_on(metas, "root") - {None}
        root = roots.pop() if len(roots) == 1 else None
    return chosen["dataset"], chosen["category"], root


def _largest(sizes: list[Any]) -> Any:
    from ad_core.api import to_size

    return max(sizes, key=lambda s: to_size(s)[0] * to_size(s)[1])


def build_ensemble(members: Sequence[str | Path], output_dir: str | Path | None = None, *,
                   fusion: str | None = None, dataset: str | None = None, category: str | None = None,
                   root: str | Path | None = None, image_size: int | None = None, device: str | None = None,
                   threshold_method: str = "normal_fpr", k_sigma: float = 3.0, write_maps: bool = True,
                   normal_dir: str | Path | None = None, batch_size: int = 16,
                   name: str = "ensemble", members_selected_on: str = NAMED_BY_USER) -> EnsembleResult:
    """Fuse trained checkpoint folders into one detector, evaluate it per fusion rule and save it.

    The members are normalised on the normal training images of the dataset and category they were trained
    on (`model.json` records it; `dataset`, `category`, `root` override), or on the images of `normal_dir`:
    normal images the members never saw, which avoids the low bias of scores on training images. Each rule's
    evaluation goes to `<output_dir>/fusion-<rule>/`; the ensemble saved in `output_dir` uses the best rule on the
    members' validation source (image AUROC, then pixel AUROC; never the test split) unless `fusion` names one. Default `output_dir`: `outputs/<dataset>/<category>/<name>`.
    `members_selected_on` says how the members were chosen (recorded in `ensemble.json` and the report).
    """
    if fusion is not None:
        check_rule(fusion)
    paths = [Path(m) for m in members]
    if len(paths) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(paths)}")
    if len({p.resolve() for p in paths}) != len(paths):
        raise ValueError(f"the same member is listed twice: {[str(p) for p in paths]}")
    nested = [str(p) for p in paths if is_ensemble(p)]
    if nested:
        raise ValueError(f"{nested} are ensembles: build an ensemble from trained models only")
    dev = resolve_device(device)
    detectors = [load_model(p, device=dev) for p in paths]
    metas = [d.meta for d in detectors]
    dataset, category, root = _data_source(metas, dataset, category, root)
    size = image_size or _largest([m["image_size"] for m in metas])
    out = Path(output_dir) if output_dir else Path(settings.output_dir) / dataset / category / name
    out.mkdir(parents=True, exist_ok=True)

    model = EnsembleModel(detectors, [m["image_size"] for m in metas]).to(dev).eval()
    train_set = get_dataset(dataset, category, "train", image_size=size, root=root)
    held_out_normals = None if normal_dir is None else NormalImages(normal_dir, size)
    split = members_validation_split([_member_validation(m, category) for m in metas], train_set,
                                     get_dataset(dataset, category, "test", image_size=size, root=root),
                                     held_out_normals)
    normal_set = normal_subset(split.train if held_out_normals is None else held_out_normals)
    normal = member_outputs_on(model, make_loader(normal_set, batch_size, False, 0), dev)
    fit_normal_stats(model, normal)
    detector = Detector(model, normalize=False).to(dev).eval()
    test_loader = make_loader(split.test, batch_size, False, 0)
    val_loader = make_loader(split.validation, batch_size, False, 0)

    member_rows = [_member_summary(p, d, category) for p, d in zip(paths, detectors)]
    rules: dict[str, dict[str, Any]] = {}
    validation: dict[str, Calibration] = {}
    with model.reusing_member_outputs():
        for rule in FUSION_RULES:
            model.fusion = rule
            validation[rule] = calibrate(detector, val_loader, dev, describe_validation(split.info), info=split.info)
            validation[rule].apply_pixels(detector)
            header = {"dataset": dataset, "category": category, "model": f"{name} ({rule})", "fusion": rule,
                      "members": [m["name"] for m in member_rows], "image_size": size, "device": str(dev),
                      "normal_images": len(normal[0].score)}
            if "test_note" in split.info:
                header["test_split"] = split.info["test_note"]
            if rules:
                header["note"] = (f"member outputs reused from the fusion-{FUSION_RULES[0]} pass: "
                                  "test time here is the fusion's only")
            (out / f"fusion-{rule}").mkdir(exist_ok=True)
            rules[rule] = evaluate_detector(detector, test_loader, out / f"fusion-{rule}", header, dev,
                                            threshold_method=threshold_method, k_sigma=k_sigma,
                                            write_maps=write_maps, calibration=validation[rule])
            rules[rule]["run"] = header
    best = best_rule(validation)
    chosen = fusion or best
    model.fusion = chosen
    results = rules[chosen]
    validation[chosen].apply_pixels(detector)
    validation[chosen].apply_image(detector, results["threshold"]["value"])
    detector.meta = save_ensemble(detector, out, paths, {
        "image_size": size,
        "best_fusion": best,
        "members_selected_on": members_selected_on,
        "fusion_selected_on": describe_validation(split.info),
        "fusion_results": {r: {"validation_image_auroc": validation[r].image_auroc,
                               "validation_pixel_auroc": validation[r].pixel_auroc,
                               "image_auroc": _metric(v, "image", "auroc"), "pixel_auroc": _metric(v, "pixel", "auroc")}
                           for r, v in rules.items()},
        "trained_on": {"dataset": dataset, "category": category,
                       "root": None if root is None else str(Path(root).resolve())},
        "normal_images": {"source": "training split" if normal_dir is None else str(Path(normal_dir).resolve()),
                          "count": len(normal[0].score)},
        "validation": results["validation"],
        "decisions": results["decisions"],
        "thresholds": results["thresholds"],
        "threshold": results["threshold"],
    })
    result = EnsembleResult(dataset, category, out, member_rows, rules, best, chosen, detector, members_selected_on)
    write_ensemble_report(result)
    return result


def build_ensembles(benchmark_dir: str | Path, top: int = 3, by: str = DEFAULT_RANK_BY, *,
                    dataset: str | None = None, category: str | None = None, output_dir: str | Path | None = None,
                    **options: Any) -> list[EnsembleResult]:
    """One ensemble of the `top` best models (by `by`) per (dataset, category) of a benchmark directory.

    By default the members are the best on their validation source (held-out normal images with synthetic
    defects, or the labelled validation folder), never on the test split; ranking `by` a test metric
    (`image_auroc`, ...) is model selection on test data, done only when named, warned about and recorded.

    Each goes to `<output_dir or benchmark_dir>/<dataset>/<category>/ensemble-top<k>/`; a group with fewer than
    two usable models is skipped (named in the returned list's absence and in a warning).
    """
    import warnings

    chosen = select_top(benchmark_dir, top, by, dataset, category)
    if on_validation(by):
        selected_on = f"top {top} by {by} (validation source; the test split played no part)"
    else:
        selected_on = f"top {top} by test-split {by}, asked for by name: model selection on test data"
        warnings.warn(f"members chosen by the test split's {by}: the ensemble's test figures are optimistic "
                      f"(rank by {DEFAULT_RANK_BY} to keep the test split out of the choice)", stacklevel=2)
    if options.get("normal_dir") is not None and len(chosen) > 1:
        raise ValueError(f"normal_dir holds the normal images of one category, but {len(chosen)} (dataset, "
                         "category) pairs were found: name the dataset and category")
    base = Path(output_dir) if output_dir else Path(benchmark_dir)
    results = []
    for (ds, cat), cells in chosen.items():
        if len(cells) < 2:
            message = f"{ds}/{cat}: only {len(cells)} usable model(s), no ensemble built"
            if dataset is not None and category is not None:
                raise ValueError(message)
            warnings.warn(message, stacklevel=2)
            continue
        results.append(build_ensemble([c.path for c in cells], base / ds / cat / f"ensemble-top{top}",
                                      dataset=ds, category=cat, members_selected_on=selected_on, **options))
    return results
