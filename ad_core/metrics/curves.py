"""Image-level ranking metrics: ROC and precision-recall curves, AUROC, AUPR and F1-max.

Every function takes a 1-D array of scores (higher = more anomalous) and one of labels
(0 normal, 1 anomalous), and is exact: tied scores are treated as one threshold, never split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

NAN_MESSAGE = "{name} contain NaN/Inf: the model diverged or the input was invalid"


def to_numpy(values: Any) -> np.ndarray:
    """A numpy view of an array-like, moving torch tensors (any device) to the CPU first."""
    if hasattr(values, "detach"):
        values = values.detach().cpu()
        if values.is_floating_point() and values.element_size() < 4:
            values = values.float()  # numpy has no bfloat16; half precision gains nothing here
        values = values.numpy()
    return np.asarray(values)


def as_scores(scores: Any, name: str = "scores") -> np.ndarray:
    """Scores as a finite float64 vector; NaN/Inf means a diverged model, so it is an error, not a 0."""
    s = to_numpy(scores).astype(np.float64, copy=False).reshape(-1)
    if s.size == 0:
        raise ValueError(f"{name} is empty: nothing to evaluate")
    if not np.isfinite(s).all():
        raise ValueError(NAN_MESSAGE.format(name=name))
    return s


def as_labels(labels: Any, length: int) -> np.ndarray:
    """Labels as an int64 vector of 0/1 matching the scores in length."""
    y = to_numpy(labels).reshape(-1)
    if y.shape[0] != length:
        raise ValueError(f"scores and labels differ in length ({length} vs {y.shape[0]})")
    values = np.unique(y)
    if not np.isin(values, (0, 1)).all():
        raise ValueError(f"labels must be 0 (normal) or 1 (anomalous); got values {values[:10].tolist()}")
    return y.astype(np.int64)


def scores_and_labels(scores: Any, labels: Any, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated scores and labels for a metric that needs both classes."""
    s = as_scores(scores)
    y = as_labels(labels, s.shape[0])
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.shape[0]:
        present = "anomalous" if n_pos else "normal"
        raise ValueError(
            f"labels hold only one class (all {present}): {metric} needs both normal (0) and anomalous (1) samples"
        )
    return s, y


def _ranked_counts(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) with the true and false positives at `score >= threshold`."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.append(np.flatnonzero(s[1:] != s[:-1]), s.shape[0] - 1)  # end of each run of equal scores
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1) - tps
    return s[last], tps, fps


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, thresholds descending and starting at +inf (0, 0)."""
    s, y = scores_and_labels(scores, labels, "ROC")
    thresholds, tps, fps = _ranked_counts(s, y)
    fpr = np.concatenate([[0.0], fps / fps[-1]])
    tpr = np.concatenate([[0.0], tps / tps[-1]])
    return fpr, tpr, np.concatenate([[np.inf], thresholds])


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve as the Mann-Whitney U statistic: exact, ties count one half."""
    s, y = scores_and_labels(scores, labels, "AUROC")
    ranks = rankdata(s)  # average ranks, so a tie between a normal and an anomalous sample scores 1/2
    n_pos = float(y.sum())
    n_neg = float(y.shape[0]) - n_pos
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pr_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) with thresholds ascending, ending at the point (precision 1, recall 0).

    `precision[i]` and `recall[i]` hold for `score >= thresholds[i]`; the arrays are one longer than
    `thresholds`, as in the usual convention.
    """
    s, y = scores_and_labels(scores, labels, "the precision-recall curve")
    thresholds, tps, fps = _ranked_counts(s, y)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return np.append(precision[::-1], 1.0), np.append(recall[::-1], 0.0), thresholds[::-1]


def aupr(scores: Any, labels: Any) -> float:
    """Average precision: the sum of precision times each step in recall, with no interpolation."""
    s, y = scores_and_labels(scores, labels, "AUPR")
    _, tps, fps = _ranked_counts(s, y)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def f1_max(scores: Any, labels: Any) -> tuple[float, float]:
    """Best F1 over every distinct threshold, and that threshold (`score >= threshold` is anomalous)."""
    s, y = scores_and_labels(scores, labels, "F1-max")
    thresholds, tps, fps = _ranked_counts(s, y)
    f1 = 2.0 * tps / (tps + fps + tps[-1])  # 2TP / (2TP + FP + FN), with TP + FN = all positives
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])
