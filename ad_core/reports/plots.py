"""Score histogram and ROC curve PNGs for a run (DESIGN §6).

Figures are built on `matplotlib.figure.Figure` with an Agg canvas, never through pyplot, so
writing plots neither picks a global backend nor accumulates open figures across many runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ad_core.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
FIGSIZE = (6.4, 4.0)  # inches: 640 x 400 pixels at DPI
NORMAL_COLOR = "tab:blue"
ANOMALOUS_COLOR = "tab:red"


def _array(values: Any) -> np.ndarray:
    """Accept numpy arrays, lists and torch tensors (on any device) alike."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _scores_labels(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s, y = _array(scores), _array(labels)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores for {y.size} labels")
    keep = np.isfinite(s)
    return s[keep], (y[keep] > 0.5).astype(np.int8)


def _new_figure() -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported on first plot: keeps runs lean
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    """Write atomically and drop the figure's artists, so nothing large outlives the call."""
    path = Path(path)
    try:
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        fig.clear()
    return path


def plot_histogram(scores: Any, labels: Any, threshold: float, path: str | Path, title: str = "") -> Path:
    """Normal vs anomalous score histograms on shared bins, with the decision threshold marked.

    Shows at a glance how well the classes separate and where the threshold cuts; works with a
    single class (e.g. a test set without anomalies) too.
    """
    s, y = _scores_labels(scores, labels)
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    if s.size:
        lo, hi = float(s.min()), float(s.max())
        if np.isfinite(threshold):
            lo, hi = min(lo, float(threshold)), max(hi, float(threshold))
        bins = np.histogram_bin_edges(s, bins=min(50, max(10, s.size // 4)), range=(lo, hi) if hi > lo else None)
        for cls, name, color in ((0, "normal", NORMAL_COLOR), (1, "anomalous", ANOMALOUS_COLOR)):
            part = s[y == cls]
            if part.size:
                ax.hist(part, bins=bins, alpha=0.6, color=color, label=f"{name} (n={part.size})")
    else:
        ax.text(0.5, 0.5, "no finite scores", ha="center", va="center", transform=ax.transAxes)
    if np.isfinite(threshold):
        ax.axvline(float(threshold), color="black", linestyle="--", linewidth=1.5,
                   label=f"threshold = {float(threshold):.4g}")
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("number of images")
    ax.set_title(title or "Anomaly score distribution")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best")
    return _save(fig, path)


def _roc(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """ROC points over every distinct score (ties move together) and the trapezoidal AUROC."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tp = np.cumsum(y)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    tpr = np.r_[0.0, tp / max(int(y.sum()), 1)]
    fpr = np.r_[0.0, fp / max(int(y.size - y.sum()), 1)]
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    return fpr, tpr, area


def plot_roc(scores: Any, labels: Any, path: str | Path, title: str = "") -> Path:
    """Image-level ROC curve with its AUROC and the chance diagonal.

    With only one class the ROC is undefined; the figure says so instead of drawing a misleading curve.
    """
    s, y = _scores_labels(scores, labels)
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    if 0 < int(y.sum()) < y.size:
        fpr, tpr, area = _roc(s, y)
        ax.plot(fpr, tpr, color=ANOMALOUS_COLOR, linewidth=2, label=f"ROC (AUROC = {area:.3f})")
    else:
        ax.text(0.5, 0.5, "ROC undefined: one class only", ha="center", va="center",
                transform=ax.transAxes, fontsize=12, bbox={"facecolor": "white", "edgecolor": "grey"})
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "Image-level ROC")
    ax.legend(loc="lower right")
    return _save(fig, path)
