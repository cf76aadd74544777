"""`train(dataset, category, model, **overrides)`: fit, evaluate and write a run's outputs (DESIGN §6)."""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ad_core.backbones import MissingWeightsError
from ad_core.building import ModelConfig, build_model
from ad_core.checkpoint import save_checkpoint
from ad_core.data import get_dataset, list_categories
from ad_core.detector import Detector
from ad_core.io import write_json
from ad_core.metrics import PixelMetrics, evaluate
from ad_core.metrics.evaluate import THRESHOLD_METHODS, check_threshold_method
from ad_core.reports import format_table, plot_histogram, plot_roc, save_map_panels, write_results
from ad_core.settings import resolve_device, settings
from ad_core.training import seed_everything, trainer_class
from ad_core.types import Batch, collate

MAX_MAP_PANELS = 12
MAP_PANEL_TILE = 256  # pixels on the short side of each `maps/` panel, enlarged from the model input
SCORES_NAME = "scores.json"  # per test image: path, label, raw score (for histograms and ensembles)
MAX_TRAIN_SCORED = 100  # normal training images scored for the mean + k·sigma threshold


@dataclass
class RunResult:
    """What one (dataset, category, model) run produced."""

    dataset: str
    category: str
    model: str
    output_dir: Path
    results: dict[str, Any]
    run: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def image_auroc(self) -> float:
        return float(self.results["image"]["auroc"])

    @property
    def pixel_auroc(self) -> float:
        pixel = self.results.get("pixel")
        return float(pixel["auroc"]) if pixel else float("nan")


def _as_list(value: str | Iterable[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    """A DataLoader of collated batches with the global worker settings and a seeded shuffle."""
    generator = torch.Generator().manual_seed(seed)
    workers = settings.num_workers
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, collate_fn=collate,
                      generator=generator, pin_memory=settings.pin_memory and torch.cuda.is_available(),
                      persistent_workers=settings.persistent_workers and workers > 0)


def preprocessed(loader: Iterable[Batch], detector: Detector) -> Iterator[Batch]:
    """Batches as the plugin model sees them: normalised by the detector's pre-processor."""

    class _Iter:
        def __iter__(self) -> Iterator[Batch]:
            for batch in loader:
                with torch.no_grad():
                    image = detector.pre(batch.image)
                if batch.image.is_pinned():  # keep the loader's pinning (settings.pin_memory) for the new tensor
                    image = image.pin_memory()
                yield Batch(image, batch.label, batch.mask, batch.path, batch.category, batch.defect_type)

        def __len__(self) -> int:
            return len(loader)  # type: ignore[arg-type]

    return _Iter()


def _build(model_name: str, overrides: dict[str, Any], notes: list[str]) -> tuple[torch.nn.Module, ModelConfig]:
    """Build the model; when weights are missing and the caller allows it, fall back to random weights."""
    on_missing = overrides.get("on_missing_weights", "error")
    try:
        return build_model(model_name, **overrides)
    except MissingWeightsError as exc:
        if on_missing != "warn":
            raise
        message = f"{exc} -- continuing with random backbone weights (pretrained=False)"
        warnings.warn(message, stacklevel=3)
        notes.append(message)
        return build_model(model_name, **{**overrides, "pretrained": False})


def _score(detector: Detector, loader: Iterable[Batch], device: torch.device, keep: int = 0):
    """Scores, labels, image paths, streamed pixel metrics, and up to `keep` examples for map panels.

    What outlives a batch is Python numbers or copies, never views: a view keeps its whole batch alive, and small
    tensors kept between the large maps freed at every batch pin glibc's heap (see `TeacherStatistics` in ad-kd).
    """
    scores, labels, paths, kept = [], [], [], []
    pixel = PixelMetrics()
    for batch in tqdm(loader, desc="scoring", unit="batch", disable=not settings.progress, leave=False):
        pred = detector.predict(batch.image.to(device))
        scores.extend(pred.score.cpu().tolist())
        labels.extend(batch.label.tolist())
        paths.extend(batch.path)
        if pred.anomaly_map is not None and batch.mask is not None:
            pixel.update(pred.anomaly_map.cpu(), batch.mask)
        if keep and pred.anomaly_map is not None:
            for i in range(len(batch)):
                mask = None if batch.mask is None else batch.mask[i].clone()
                kept.append((batch.image[i].clone(), pred.anomaly_map[i].cpu().clone(), mask, batch.path[i],
                             int(batch.label[i])))
            kept = _balanced(kept, keep)
    return np.asarray(scores, dtype=np.float32), np.asarray(labels, dtype=np.int64), paths, pixel, kept


def _balanced(kept: list, keep: int) -> list:
    """Keep up to `keep` examples, anomalous ones first, a few normal ones too."""
    anomalous = [k for k in kept if k[4] == 1][: keep - keep // 3]
    normal = [k for k in kept if k[4] == 0][: keep - len(anomalous)]
    return anomalous + normal


def _peak_rss_mb() -> float:
    import resource  # Unix only: imported here so that ad_core imports on Windows

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def normal_subset(train_set: Dataset) -> Subset:
    """Up to `MAX_TRAIN_SCORED` normal training images, evenly spread: what thresholds and ensembles score."""
    count = min(len(train_set), MAX_TRAIN_SCORED)
    return Subset(train_set, np.linspace(0, len(train_set) - 1, count).astype(int).tolist())


def run_one(dataset: str, category: str, model_name: str, root: str | Path | None = None,
            output_dir: str | Path | None = None, **overrides: Any) -> RunResult:
    """Train one model on one category, evaluate it on the test split, and write every output."""
    notes: list[str] = []
    seed = int(overrides.pop("seed", settings.seed))
    device = resolve_device(overrides.pop("device", None))
    write_maps = bool(overrides.pop("write_maps", True))
    seed_everything(seed)
    model, config = _build(model_name, dict(overrides), notes)
    run = {**config.run}
    # A spec may choose its own threshold (U-Flow's NFA); an override wins, f1_percentile otherwise.
    threshold_method = str(run.get("threshold_method", "f1_percentile"))
    k_sigma = float(run.get("k_sigma", 3.0))
    own = getattr(model, "fixed_thresholds", None)
    own_methods = own() if callable(own) else None
    if "threshold_method" not in overrides and threshold_method not in THRESHOLD_METHODS + tuple(own_methods or ()):
        # The spec's choice does not exist in this configuration (U-Flow's NFA without the NFA map).
        message = (f"{config.name}: its default threshold_method {threshold_method!r} is not available with these "
                   f"options; using 'f1_percentile'")
        warnings.warn(message, stacklevel=2)
        notes.append(message)
        threshold_method = "f1_percentile"
    check_threshold_method(threshold_method, train_scores=(), fixed_thresholds=own_methods)
    image_size, batch_size = run["image_size"], int(run["batch_size"])
    train_set = get_dataset(dataset, category, "train", image_size=image_size, root=root)
    test_set = get_dataset(dataset, category, "test", image_size=image_size, root=root)
    detector = Detector(model, normalize=bool(run.get("normalize", True)))
    out = Path(output_dir or settings.output_dir) / dataset / category / config.name
    out.mkdir(parents=True, exist_ok=True)

    trainer = trainer_class(config.spec.trainer)(
        device=device,
        num_epochs=run.get("num_epochs"),
        max_steps=run.get("max_steps"),
        grad_clip=run.get("grad_clip"),
        early_stopping_patience=run.get("early_stopping_patience"),
        checkpoint_dir=out / "train_state",
        resume=bool(run.get("resume", False)),
        checkpoint_every=run.get("checkpoint_every"),
    )
    train_loader = make_loader(train_set, batch_size, shuffle=config.spec.trainer != "feature_bank", seed=seed)
    eval_batch = int(run.get("eval_batch_size", batch_size))
    test_loader = make_loader(test_set, eval_batch, shuffle=False, seed=seed)
    val = preprocessed(test_loader, detector) if run.get("early_stopping_patience") else None
    report = trainer.fit(model, preprocessed(train_loader, detector), val)
    detector.to(device).eval()

    train_scores, *_ = _score(detector, make_loader(normal_subset(train_set), eval_batch, False, seed), device)
    header = {
        "dataset": dataset,
        "category": category,
        "model": config.name,
        "plugin": config.plugin,
        "image_size": image_size,
        "train_images": len(train_set),
        "fit_seconds": round(report.seconds, 3),
        "device": str(device),
        "seed": seed,
        "epochs": report.epochs,
        "steps": report.steps,
    }
    if notes:
        header["warnings"] = notes
    if report.notes:
        header["notes"] = list(report.notes)
    results = evaluate_detector(detector, test_loader, out, header, device, train_scores=train_scores,
                                threshold_method=threshold_method, k_sigma=k_sigma, write_maps=write_maps)
    detector.post.calibrate(results["threshold"]["value"], results["score_range"]["min"],
                            results["score_range"]["max"])
    save_checkpoint(detector, out, {
        "model": config.name,
        "base_model": config.spec.name,
        "plugin": config.plugin,
        "hyperparameters": config.hyperparameters,
        "run": {k: v for k, v in run.items() if k != "device"},
        "image_size": image_size,
        "normalize": bool(run.get("normalize", True)),
        "thresholds": results["thresholds"],
        "threshold": results["threshold"],
        "score_range": results["score_range"],
        "trained_on": {"dataset": dataset, "category": category, "images": len(train_set),
                       "root": None if root is None else str(Path(root).resolve())},
    })
    return RunResult(dataset, category, config.name, out, results, run=header, warnings=notes)


def evaluate_detector(detector: Detector, test_loader: DataLoader, out: Path, header: dict[str, Any],
                      device: torch.device, train_scores: np.ndarray | None = None,
                      threshold_method: str = "f1_percentile", k_sigma: float = 3.0,
                      write_maps: bool = True) -> dict[str, Any]:
    """Score the test split, compute metrics and thresholds, and write results, per-image scores, plots and maps.

    `header` is completed in place with the test timing and memory figures.
    """
    start = time.perf_counter()
    scores, labels, paths, pixel, kept = _score(detector, test_loader, device,
                                                keep=MAX_MAP_PANELS if write_maps else 0)
    test_seconds = time.perf_counter() - start
    own = getattr(detector.model, "fixed_thresholds", None)  # thresholds the model sets itself (U-Flow's NFA)
    results = evaluate(scores, labels, pixel.compute() if pixel.has_masks else None,
                       train_scores=train_scores, threshold_method=threshold_method, k_sigma=k_sigma,
                       fixed_thresholds=own() if callable(own) else None)
    header.update({
        "test_images": len(scores),
        "test_seconds": round(test_seconds, 3),
        "test_images_per_second": round(len(scores) / max(test_seconds, 1e-9), 3),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    })
    threshold = results["threshold"]["value"]
    title = f"{header.get('model', '')} · {header.get('category', '')}"
    write_results(out, results, header)
    write_json(out / SCORES_NAME, {"paths": paths, "labels": labels, "scores": scores})
    plot_histogram(scores, labels, threshold, out / "histogram.png", title=title)
    plot_roc(scores, labels, out / "roc.png", title=title)
    if kept:
        masks = torch.stack([k[2] for k in kept]) if all(k[2] is not None for k in kept) else None
        save_map_panels(out / "maps", torch.stack([k[0] for k in kept]), torch.stack([k[1] for k in kept]),
                        threshold, [k[3] for k in kept], masks,
                        vmin=results["score_range"]["min"], vmax=results["score_range"]["max"],
                        threshold_name=str(results["threshold"]["method"]), min_tile=MAP_PANEL_TILE)
    return results


def train(dataset_type: str | list[str], category: str | list[str], model_type: str | list[str], *,
          root: str | Path | None = None, output_dir: str | Path | None = None, verbose: bool = True,
          **overrides: Any) -> list[RunResult]:
    """Train and evaluate every (dataset, category, model) combination; `category="all"` expands per dataset.

    The seed's calls work as written, positionally (`train("mvtec", "bottle", "stfpm", num_epochs=50)`) or by
    keyword (`train(dataset_type="mvtec", category="bottle", model_type="stfpm", img_size=512)`), and a list of
    datasets (`train(["dataset_A", "dataset_B"], ["pattern1", "pattern2"], "stfpm")`) trains every category of
    the list in every dataset. With `verbose`, each run prints its table and the folder its outputs went to;
    with progress on (`ADCORE_PROGRESS`, default 1), a line on stderr says which run of how many starts.
    """
    plan = [(ds, cat, name)
            for ds in _as_list(dataset_type)
            for cat in (list_categories(ds, root) if _as_list(category) == ["all"] else _as_list(category))
            for name in _as_list(model_type)]
    runs: list[RunResult] = []
    for i, (ds, cat, name) in enumerate(plan, start=1):
        if settings.progress:
            print(f"[{i}/{len(plan)}] {ds} / {cat} / {name}", file=sys.stderr, flush=True)
        runs.append(run_one(ds, cat, name, root=root, output_dir=output_dir, **overrides))
        if verbose:
            print(summary_table(runs[-1:]))
            print(f"outputs written to {runs[-1].output_dir}")
    if verbose and len(runs) > 1:
        print(summary_table(runs))
    return runs


def train_models(dataset_type: str | list[str], categories: str | list[str], models: str | list[str],
                 **overrides: Any) -> list[RunResult]:
    """The seed's batch entry point: every model on every category, one after another."""
    return train(dataset_type, categories, models, **overrides)


def summary_table(runs: list[RunResult]) -> str:
    rows = [
        {
            "dataset": r.dataset,
            "category": r.category,
            "model": r.model,
            "image AUROC": r.image_auroc,
            "pixel AUROC": r.pixel_auroc,
            "pixel AUPRO": (r.results.get("pixel") or {}).get("aupro", float("nan")),
            "F1-max": r.results["image"]["f1_max"],
            "fit s": r.run.get("fit_seconds", float("nan")),
            "img/s": r.run.get("test_images_per_second", float("nan")),
        }
        for r in runs
    ]
    if len(rows) > 1:
        numeric = [k for k in rows[0] if k not in ("dataset", "category", "model")]
        rows.append({"dataset": "mean", "category": "", "model": "",
                     **{k: float(np.nanmean([row[k] for row in rows])) for k in numeric}})
    return format_table(rows, list(rows[0]) if rows else [])


def test_checkpoint(checkpoint: str | Path, dataset: str, category: str, root: str | Path | None = None,
                    output_dir: str | Path | None = None, device: str | None = None,
                    batch_size: int = 32) -> RunResult:
    """Evaluate a saved detector on a dataset's test split; the checkpoint itself is left untouched."""
    from ad_core.checkpoint import load_model

    dev = resolve_device(device)
    detector = load_model(checkpoint, device=dev)
    meta = detector.meta
    test_set = get_dataset(dataset, category, "test", image_size=meta["image_size"], root=root)
    out = Path(output_dir) if output_dir else Path(checkpoint) / f"test-{dataset}-{category}"
    out.mkdir(parents=True, exist_ok=True)
    header = {"dataset": dataset, "category": category, "model": meta["model"], "checkpoint": str(checkpoint),
              "image_size": meta["image_size"], "device": str(dev)}
    results = evaluate_detector(detector, make_loader(test_set, batch_size, False, 0), out, header, dev,
                                threshold_method=meta.get("threshold", {}).get("method", "f1_percentile"))
    return RunResult(dataset, category, meta["model"], out, results, run=header)
