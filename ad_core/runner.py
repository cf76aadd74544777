"""`train(dataset, category, model, **overrides)`: fit, evaluate and write a run's outputs (DESIGN §6)."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ad_core.backbones import MissingWeightsError
from ad_core.building import ModelConfig, build_model
from ad_core.checkpoint import save_checkpoint
from ad_core.data import get_dataset, list_categories
from ad_core.detector import Detector
from ad_core.evaluation import SCORES_NAME, calibrate, evaluate_detector, threshold_method_for
from ad_core.metrics.evaluate import check_threshold_method
from ad_core.reports import format_table
from ad_core.preprocessing import PreProcessor
from ad_core.options import check_options
from ad_core.run_folder import open_run_folder, run_folder_scope
from ad_core.run_settings import pop_runner_settings
from ad_core.settings import resolve_device, settings
from ad_core.training import TrainerOptions, seed_everything, trainer_class
from ad_core.training.distributed import ShardedBatchSampler, World
from ad_core.training.fingerprint import fingerprinted_config
from ad_core.types import Batch, collate
from ad_core.validation import describe_validation, validation_split

__all__ = ["SCORES_NAME", "RunResult", "evaluate_detector", "make_loader", "normal_subset", "run_one", "train"]
MAX_TRAIN_SCORED = 100  # normal images scored to normalise an ensemble's members


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


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int,
                num_workers: int | None = None, world: World | None = None) -> DataLoader:
    """A DataLoader of collated batches with a seeded shuffle (`loader.generator`, which the trainer saves with
    its state); `num_workers` defaults to the global setting. Under torchrun (`world`) each process loads its
    share of every batch of the single-process loader (`batch_size` stays the global batch)."""
    generator = torch.Generator().manual_seed(seed)
    workers = settings.num_workers if num_workers is None else int(num_workers)
    batching: dict[str, Any] = {"batch_size": batch_size, "shuffle": shuffle}
    if world is not None:
        batching = {"batch_sampler": ShardedBatchSampler(len(dataset), batch_size, shuffle, generator, world)}
    return DataLoader(dataset, **batching, num_workers=workers, collate_fn=collate,
                      generator=generator, pin_memory=settings.pin_memory and torch.cuda.is_available(),
                      persistent_workers=settings.persistent_workers and workers > 0)


def training_loader(dataset: Dataset, batch_size: int, seed: int, num_workers: int | None = None,
                    world: World | None = None) -> DataLoader:
    """The training images in a seeded random order, for every trainer.

    A gradient model's epochs need it; so does a one-pass model whose bank is chosen as the images stream by
    (PatchCore's groups each get a share of the coreset, which fits only if the groups look alike). A folder sorted
    by file name often does not: on the magnetic-tile set the later files are more varied, and PatchCore fed them
    in name order scored pixel AUROC 0.010 below its one-shot coreset, 0.001 below once shuffled."""
    return make_loader(dataset, batch_size, shuffle=True, seed=seed, num_workers=num_workers, world=world)


def preprocessed(loader: Iterable[Batch], detector: Detector) -> Iterator[Batch]:
    """Batches as the plugin model sees them: normalised by the detector's pre-processor."""

    class _Iter:
        def __iter__(self) -> Iterator[Batch]:
            for batch in loader:
                with torch.no_grad():
                    image = detector.pre(batch.image)
                if batch.image.is_pinned():  # keep the loader's pinning (settings.pin_memory) for the new tensor
                    image = image.pin_memory()
                yield Batch(image, batch.label, batch.mask, batch.path, batch.category, batch.defect_type,
                            batch.mask_known)

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


def normal_subset(train_set: Dataset) -> Subset:
    """Up to `MAX_TRAIN_SCORED` normal training images, evenly spread: what an ensemble normalises its members on."""
    count = min(len(train_set), MAX_TRAIN_SCORED)
    return Subset(train_set, np.linspace(0, len(train_set) - 1, count).astype(int).tolist())


def model_meta(config: ModelConfig, run_id: str, run: dict[str, Any]) -> dict[str, Any]:
    """What every checkpoint's `model.json` says of the model it holds (a run adds its decisions and data)."""
    return {"model": config.name, "run_id": run_id, "base_model": config.spec.name, "plugin": config.plugin,
            "hyperparameters": config.hyperparameters, "run": {k: v for k, v in run.items() if k != "device"},
            "image_size": run["image_size"], "normalize": bool(run.get("normalize", True))}


@run_folder_scope
def run_one(dataset: str, category: str, model_name: str, root: str | Path | None = None,
            output_dir: str | Path | None = None, **overrides: Any) -> RunResult:
    """Train one model on one category, evaluate it on the test split, and write every output."""
    notes: list[str] = []
    overrides = check_options(model_name, overrides)  # types and ranges, before anything is built
    runner = pop_runner_settings(overrides)
    seed, device, write_maps, source = runner.seed, runner.device, runner.write_maps, runner.source
    target_fpr, masks = runner.target_fpr, runner.masks
    world = World.from_env()  # under torchrun: one of several processes; rank 0 writes every output
    if world is not None:
        device = world.device(device)
        world.join(device)
    seed_everything(seed)
    model, config = _build(model_name, dict(overrides), notes)
    run = {**config.run}
    # A spec may choose its own deployable threshold (U-Flow's NFA); a named override wins; normal_fpr otherwise.
    k_sigma = float(run.get("k_sigma", 3.0))
    own_methods = model.fixed_thresholds()
    threshold_method = threshold_method_for(config.name, run, "threshold_method" in overrides, own_methods, notes)
    check_threshold_method(threshold_method, train_scores=(), fixed_thresholds=own_methods)
    image_size, batch_size = run["image_size"], int(run["batch_size"])
    train_full = get_dataset(dataset, category, "train", image_size=image_size, root=root)
    test_full = get_dataset(dataset, category, "test", image_size=image_size, root=root, **masks)
    train_full.check_files()  # fail fast: every header read before any training
    test_full.check_files()
    split = validation_split(train_full, test_full, seed=seed, image_size=image_size, **source)
    train_set, test_set = split.train, split.test
    detector = Detector(model, pre=PreProcessor.from_run(run))
    out = Path(output_dir or settings.output_dir) / dataset / category / config.name
    folder = open_run_folder(out) if world is None or world.is_main else None  # locked; staged, committed below

    options = TrainerOptions.from_run(run, device=device, checkpoint_dir=out / "train_state",
                                      config=fingerprinted_config(config, seed), world=world)
    trainer = trainer_class(config.spec.trainer)(options)
    workers = run.get("num_workers")
    train_loader = training_loader(train_set, batch_size, seed, num_workers=workers, world=world)
    eval_batch = int(run.get("eval_batch_size", batch_size))
    test_loader = make_loader(test_set, eval_batch, shuffle=False, seed=seed, num_workers=workers)
    val_loader = make_loader(split.validation, eval_batch, shuffle=False, seed=seed, num_workers=workers)
    val = preprocessed(val_loader, detector) if run.get("early_stopping_patience") else None  # validation only
    report = trainer.fit(model, preprocessed(train_loader, detector), val, generator=train_loader.generator)
    if folder is None:  # another rank of a torchrun fit: rank 0 evaluates and writes
        return RunResult(dataset, category, config.name, out, {}, run={"rank": world.rank}, warnings=notes)
    detector.to(device).eval()
    calibration = calibrate(detector, val_loader, device, describe_validation(split.info), target_fpr, split.info)
    calibration.apply_pixels(detector)
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
    if "best_epoch" in report.extra:
        header["early_stopping"] = {"best_epoch": report.extra["best_epoch"], "metric": "image AUROC",
                                    "selected_on": calibration.selected_on}
    if "test_note" in split.info:
        header["test_split"] = split.info["test_note"]
    results = evaluate_detector(detector, test_loader, folder.staging, header, device, threshold_method=threshold_method,
                                k_sigma=k_sigma, target_fpr=target_fpr, fixed_thresholds=own_methods,
                                write_maps=write_maps, calibration=calibration)
    calibration.apply_image(detector, results["threshold"]["value"])
    save_checkpoint(detector, folder.staging, {
        **model_meta(config, folder.run_id, run),
        "thresholds": results["thresholds"],
        "threshold": results["threshold"],
        "decisions": results["decisions"],
        "validation": results["validation"],
        "trained_on": {"dataset": dataset, "category": category, "images": len(train_set),
                       "root": None if root is None else str(Path(root).resolve())},
    })
    folder.commit()
    return RunResult(dataset, category, config.name, out, results, run=header, warnings=notes)


def train(dataset_type: str | list[str], category: str | list[str], model_type: str | list[str], *,
          root: str | Path | None = None, output_dir: str | Path | None = None, verbose: bool = True,
          unified: bool = False, **overrides: Any) -> list[RunResult]:
    """Train and evaluate every (dataset, category, model) combination; `category="all"` expands per dataset.

    The seed's calls work as written, positionally (`train("mvtec", "bottle", "stfpm", num_epochs=50)`) or by
    keyword (`train(dataset_type="mvtec", category="bottle", model_type="stfpm", img_size=512)`), and a list of
    datasets (`train(["dataset_A", "dataset_B"], ["pattern1", "pattern2"], "stfpm")`) trains every category of
    the list in every dataset. With `verbose`, each run prints its table and the folder its outputs went to;
    with progress on (`ADCORE_PROGRESS`, default 1), a line on stderr says which run of how many starts.
    With `unified=True`, each (dataset, model) trains ONE model on all the categories together and is evaluated
    per category (`ad_core.unified`); the result has one `RunResult` per category.
    """
    if unified:
        from ad_core.unified import train_unified

        return train_unified(dataset_type, category, model_type, root=root, output_dir=output_dir, verbose=verbose,
                             **overrides)
    plan = [(ds, cat, name)
            for ds in _as_list(dataset_type)
            for cat in (list_categories(ds, root) if _as_list(category) == ["all"] else _as_list(category))
            for name in _as_list(model_type)]
    runs: list[RunResult] = []
    world = World.from_env()
    verbose = verbose and (world is None or world.is_main)  # under torchrun rank 0 speaks for all
    for i, (ds, cat, name) in enumerate(plan, start=1):
        if settings.progress and verbose:
            print(f"[{i}/{len(plan)}] {ds} / {cat} / {name}", file=sys.stderr, flush=True)
        runs.append(run_one(ds, cat, name, root=root, output_dir=output_dir, **overrides))
        if verbose:
            print(summary_table(runs[-1:]))
            print(f"outputs written to {runs[-1].output_dir}")
    if world is not None:
        world.leave()
    if verbose and len(runs) > 1:
        print(summary_table(runs))
    return runs


def train_models(dataset_type: str | list[str], categories: str | list[str], models: str | list[str],
                 **overrides: Any) -> list[RunResult]:
    """The seed's batch entry point: every model on every category, one after another."""
    return train(dataset_type, categories, models, **overrides)


def _fpr(confusion: dict[str, Any]) -> float:
    negatives = confusion["fp"] + confusion["tn"]
    return confusion["fp"] / negatives if negatives else float("nan")


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
            "recall@thr": r.results["confusion"]["recall"],  # at the saved threshold (validation by default)
            "FPR@thr": _fpr(r.results["confusion"]),
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
    from ad_core.unified import apply_category

    dev = resolve_device(device)
    detector = load_model(checkpoint, device=dev)
    meta = detector.meta
    test_set = get_dataset(dataset, category, "test", image_size=meta["image_size"], root=root)
    test_set.check_files()
    out = Path(output_dir) if output_dir else Path(checkpoint) / f"test-{dataset}-{category}"
    out.mkdir(parents=True, exist_ok=True)
    header = {"dataset": dataset, "category": category, "model": meta["model"], "checkpoint": str(checkpoint),
              "image_size": meta["image_size"], "device": str(dev)}
    # The decision is the one saved with the model; the test split only measures it (and the oracle figures).
    saved = meta.get("threshold") or {}
    header["saved_threshold"] = {"method": saved.get("method"), "selected_on": saved.get("selected_on", "unrecorded")}
    if apply_category(detector, category):  # a unified model decides with this category's own thresholds
        header["saved_threshold"] = {**detector.meta["unified"]["decisions"][category]["threshold"],
                                     "category": category}
    results = evaluate_detector(detector, make_loader(test_set, batch_size, False, 0), out, header, dev,
                                threshold_method="saved", fixed_thresholds={"saved": float(detector.post.threshold)})
    return RunResult(dataset, category, meta["model"], out, results, run=header)
