"""The report's figures as PNG bytes: AUROC heatmap, accuracy vs speed, score histograms, example maps.

Built on `matplotlib.figure.Figure` with an Agg canvas (never pyplot), like the run plots.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ad_core.benchmarking.examples import EXAMPLES_NAME, read_examples
from ad_core.benchmarking.leaderboard import per_category
from ad_core.api import ANOMALOUS_COLOR, NORMAL_COLOR, SCORES_NAME

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
MAX_HISTOGRAM_CATEGORIES = 6
OVERLAY_ALPHA = 0.55


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        fig.clear()
    return buffer.getvalue()


def heatmap(rows: list[dict[str, Any]], dataset: str) -> bytes:
    """Models x categories, image AUROC, with the value in each cell; failed or missing cells are grey."""
    models, categories, values = per_category(rows, dataset)
    fig = _figure(max(4.0, 1.0 + 0.9 * len(categories)), max(2.0, 0.9 + 0.45 * len(models)))
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(values)
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad="#d9d9d9")
    image = ax.imshow(masked, cmap=cmap, vmin=max(0.0, float(np.nanmin(values)) if np.isfinite(values).any() else 0.0),
                      vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
    ax.set_yticks(range(len(models)), models)
    for i in range(len(models)):
        for j in range(len(categories)):
            text = f"{values[i, j]:.3f}" if np.isfinite(values[i, j]) else "failed"
            dark = np.isfinite(values[i, j]) and image.norm(values[i, j]) < 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    fig.colorbar(image, ax=ax, label="image AUROC")
    ax.set_title(f"{dataset}: image AUROC per category")
    return _png(fig)


def speed_scatter(entries: list[dict[str, Any]], dataset: str) -> bytes | None:
    """Mean image AUROC vs mean test images/s per model; marker area grows with peak RSS."""
    points = [(e["model"], e["image_auroc"]["mean"], e["test_images_per_second"]["mean"],
               (e.get("peak_rss_mb") or {}).get("mean")) for e in entries
              if e.get("image_auroc") and e.get("test_images_per_second")]
    if not points:
        return None
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    memory = np.array([p[3] if p[3] is not None else np.nan for p in points], dtype=float)
    reference = np.nanmax(memory) if np.isfinite(memory).any() else 1.0
    sizes = np.where(np.isfinite(memory), 60 + 600 * np.nan_to_num(memory) / reference, 60)
    ax.scatter([p[2] for p in points], [p[1] for p in points], s=sizes, alpha=0.6, c=range(len(points)),
               cmap="tab10", edgecolors="black")
    for (name, auroc, speed, mem), _ in zip(points, sizes):
        label = name if mem is None else f"{name}\n{mem:.0f} MB"
        ax.annotate(label, (speed, auroc), textcoords="offset points", xytext=(8, 4), fontsize=8)
    speeds = [p[2] for p in points]
    log = min(speeds) > 0 and max(speeds) / min(speeds) > 10
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("test images / s" + (" (log scale)" if log else ""))
    ax.set_ylabel("mean image AUROC")
    ax.set_title(f"{dataset}: accuracy vs speed (marker area ~ peak RSS)")
    ax.grid(alpha=0.3)
    ax.margins(x=0.3, y=0.15)
    return _png(fig)


def _scores(directory: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        data = json.loads((directory / SCORES_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    scores = np.array([np.nan if s is None else s for s in data["scores"]], dtype=float)
    return scores, np.asarray(data["labels"], dtype=int)


def score_histograms(root: Path, rows: list[dict[str, Any]], dataset: str, models: list[str]) -> bytes | None:
    """Normal vs anomalous test scores of the given models (columns) per category (rows), with the threshold."""
    ok = {(r["category"], r["model"]): r for r in rows if r["dataset"] == dataset and r["status"] == "ok"}
    categories = sorted({c for c, m in ok if m in models})[:MAX_HISTOGRAM_CATEGORIES]
    if not categories or not models:
        return None
    fig = _figure(3.0 * len(models), 2.2 * len(categories))
    axes = fig.subplots(len(categories), len(models), squeeze=False)
    for i, category in enumerate(categories):
        for j, model in enumerate(models):
            ax = axes[i][j]
            row = ok.get((category, model))
            loaded = _scores(root / row["directory"]) if row else None
            if loaded is None:
                ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            scores, labels = loaded
            finite = np.isfinite(scores)
            bins = np.histogram_bin_edges(scores[finite], bins=20) if finite.any() else 10
            ax.hist(scores[finite & (labels == 0)], bins=bins, alpha=0.6, color=NORMAL_COLOR, label="normal")
            ax.hist(scores[finite & (labels == 1)], bins=bins, alpha=0.6, color=ANOMALOUS_COLOR, label="anomalous")
            if row.get("threshold") is not None:
                ax.axvline(row["threshold"], color="black", linestyle="--", linewidth=1)
            ax.set_title(f"{model} · {category}", fontsize=9)
            ax.tick_params(labelsize=7)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    return _png(fig)


def _overlay(image: np.ndarray, amap: np.ndarray) -> np.ndarray:
    """Image (uint8 [3,H,W]) blended with the jet colours of a 0–1 map at the image's size."""
    from matplotlib import colormaps
    from PIL import Image

    rgb = image.transpose(1, 2, 0).astype(np.float32) / 255.0
    if amap.shape != rgb.shape[:2]:
        amap = np.asarray(Image.fromarray(amap.astype(np.float32)).resize(rgb.shape[1::-1], Image.BILINEAR))
    colours = colormaps["jet"](np.clip(amap, 0, 1))[..., :3]
    return np.clip(rgb * (1 - OVERLAY_ALPHA) + colours * OVERLAY_ALPHA, 0, 1)


def _short(path: str) -> str:
    parts = str(path).replace("\\", "/").split("/")
    return "/".join(parts[-2:])


def example_maps(root: Path, dataset: str, category: str, folders: dict[str, str]) -> bytes | None:
    """Rows: the category's fixed test images; columns: image, ground truth, then each model's map overlay.

    `folders`: model name -> its outputs for this category, relative to `root` (a leaderboard row's `directory`:
    `<dataset>/<category>/<model>`, or a unified cell's `<dataset>/unified-.../<model>/<category>`), in column
    order. Maps are each model's normalised map (0.5 = its own threshold), so equal colours mean the same for
    every model; models without stored examples are left out.
    """
    stored = {m: read_examples(root / folder / EXAMPLES_NAME) for m, folder in folders.items()}
    stored = {m: e for m, e in stored.items() if e is not None and len(e["paths"])}
    if not stored:
        return None
    reference = next(iter(stored.values()))
    paths = reference["paths"]
    columns = ["image", "ground truth", *stored]
    fig = _figure(1.6 * len(columns), 1.7 * len(paths) + 0.3)
    axes = fig.subplots(len(paths), len(columns), squeeze=False)
    for i, path in enumerate(paths):
        image = reference["images"][i]
        axes[i][0].imshow(image.transpose(1, 2, 0))
        axes[i][1].imshow(reference["masks"][i], cmap="gray", vmin=0, vmax=1)
        axes[i][0].set_ylabel(_short(path), fontsize=7)
        for j, model in enumerate(stored, start=2):
            examples = stored[model]
            if path not in examples["paths"]:
                axes[i][j].text(0.5, 0.5, "not stored", ha="center", va="center", transform=axes[i][j].transAxes)
                continue
            k = examples["paths"].index(path)
            axes[i][j].imshow(_overlay(examples["images"][k], examples["maps"][k]))
            axes[i][j].set_xlabel(f"score {float(examples['scores'][k]):.2f}", fontsize=7, labelpad=1)
        for j, title in enumerate(columns):
            axes[i][j].set_xticks([])
            axes[i][j].set_yticks([])
            if i == 0:
                axes[i][j].set_title(title, fontsize=8)
    fig.suptitle(f"{dataset} · {category}: anomaly maps (0.5 = each model's threshold)", fontsize=9)
    return _png(fig)
