"""Metrics against hand-checked examples and exact, independent references."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from ad_core.metrics import (
    THRESHOLD_METHODS,
    DefaultScorer,
    PixelMetrics,
    aupr,
    auroc,
    confusion,
    evaluate,
    f1_max,
    f1_threshold_percentile,
    f1_threshold_uniform,
    mean_ksigma_threshold,
    percentile_threshold,
    pr_curve,
    roc_curve,
    youden_threshold,
)
from ad_core.types import Batch, Prediction

# A small ranking checked by hand: thresholds 0.9 .. 0.4 give F1 = 1/2, 2/5, 2/3, 6/7, 3/4, 2/3.
HAND_SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
HAND_LABELS = np.array([1, 0, 1, 1, 0, 0])


# ---------------------------------------------------------------- image curves


def test_auroc_perfect_inverted_and_random():
    labels = np.array([0] * 50 + [1] * 50)
    scores = np.arange(100, dtype=float)
    assert auroc(scores, labels) == 1.0
    assert auroc(-scores, labels) == 0.0
    rng = np.random.default_rng(0)
    assert auroc(rng.random(20000), rng.integers(0, 2, 20000)) == pytest.approx(0.5, abs=0.02)


def test_auroc_all_ties_is_one_half():
    assert auroc(np.full(10, 0.3), np.array([0, 1] * 5)) == 0.5


def test_auroc_equals_mann_whitney_count_with_ties():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + 0.7 * labels, 1)  # rounding makes many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    expected = wins / (pos.size * neg.size)
    assert auroc(scores, labels) == pytest.approx(expected, abs=1e-12)
    fpr, tpr, _ = roc_curve(scores, labels)
    assert np.trapezoid(tpr, fpr) == pytest.approx(expected, abs=1e-12)


def test_roc_curve_runs_from_origin_to_one_with_descending_thresholds():
    fpr, tpr, thresholds = roc_curve(HAND_SCORES, HAND_LABELS)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.isinf(thresholds[0]) and np.all(np.diff(thresholds) < 0)
    np.testing.assert_allclose(tpr, [0, 1 / 3, 1 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])


def test_aupr_perfect_ranking_and_hand_example():
    labels = np.array([0, 0, 0, 1, 1])
    assert aupr(np.array([0.1, 0.2, 0.3, 0.8, 0.9]), labels) == 1.0
    # recall steps of 1/3 at precisions 1, 2/3 and 3/4
    assert aupr(HAND_SCORES, HAND_LABELS) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)


def test_pr_curve_ends_at_full_precision_zero_recall():
    precision, recall, thresholds = pr_curve(HAND_SCORES, HAND_LABELS)
    assert precision.shape == recall.shape == (thresholds.size + 1,)
    assert (precision[-1], recall[-1]) == (1.0, 0.0)
    assert np.all(np.diff(thresholds) > 0)
    assert (precision[0], recall[0]) == (0.5, 1.0)  # lowest threshold: everything flagged


def test_f1_max_hand_example_matches_confusion_at_its_threshold():
    best, threshold = f1_max(HAND_SCORES, HAND_LABELS)
    assert best == pytest.approx(6 / 7)
    assert threshold == 0.6
    assert confusion(HAND_SCORES, HAND_LABELS, threshold)["f1"] == pytest.approx(best)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_a_clear_error(bad):
    scores = np.array([0.1, bad, 0.3])
    for metric in (auroc, aupr, roc_curve, pr_curve, f1_max):
        with pytest.raises(ValueError, match="NaN/Inf: the model diverged"):
            metric(scores, np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="NaN/Inf"):
        evaluate(scores, np.array([0, 1, 1]))


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError, match="only one class"):
        auroc(np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="differ in length"):
        auroc(np.array([0.1, 0.2, 0.3]), np.array([0, 1]))
    with pytest.raises(ValueError, match="0 \\(normal\\) or 1"):
        auroc(np.array([0.1, 0.2]), np.array([0, 2]))


def test_torch_tensors_are_accepted():
    assert auroc(torch.tensor([0.1, 0.9]), torch.tensor([0, 1])) == 1.0


# ---------------------------------------------------------------- thresholds


def test_f1_thresholds_separate_a_separable_set():
    scores = np.array([0.0, 1.0, 2.0, 3.0, 7.0, 8.0, 9.0, 10.0])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    uniform = f1_threshold_uniform(scores, labels, n=11)  # grid 0, 1, ..., 10
    assert uniform == {"value": 4.0, "f1": 1.0}  # the lowest grid value above every normal score
    percentile = f1_threshold_percentile(scores, labels, n=101)
    assert percentile["f1"] == 1.0 and 3.0 < percentile["value"] <= 7.0


def test_f1_percentile_threshold_on_an_overlapping_set():
    result = f1_threshold_percentile(HAND_SCORES, HAND_LABELS)
    assert result["f1"] == pytest.approx(6 / 7)  # the fine grid finds the exact optimum
    assert 0.5 < result["value"] <= 0.6


def test_youden_threshold_hand_example():
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.5, 0.7, 0.8])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    # at 0.4: TPR 1, FPR 1/4 (J 0.75); at 0.7: TPR 1/2, FPR 0 (J 0.5)
    assert youden_threshold(scores, labels) == {"value": 0.4, "sensitivity": 1.0, "specificity": 0.75}


def test_normal_only_thresholds():
    assert percentile_threshold(np.arange(101.0), q=95) == {"value": 95.0}
    assert mean_ksigma_threshold(np.array([1.0, 3.0]), k=3.0) == {
        "value": 5.0,
        "k": 3.0,
        "mean": 2.0,
        "std": 1.0,
    }
    with pytest.raises(ValueError, match="q must lie"):
        percentile_threshold(np.arange(5.0), q=120)


def test_confusion_counts_and_empty_denominators():
    scores = np.array([0.1, 0.4, 0.6, 0.9, 0.2, 0.8])
    labels = np.array([0, 0, 0, 1, 1, 1])
    c = confusion(scores, labels, 0.5)
    assert (c["tp"], c["fn"], c["tn"], c["fp"]) == (2, 1, 2, 1)
    assert c["accuracy"] == pytest.approx(4 / 6)
    assert c["precision"] == pytest.approx(2 / 3) and c["recall"] == pytest.approx(2 / 3)
    assert c["f1"] == pytest.approx(2 / 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        none_flagged = confusion(scores, labels, 2.0)
        no_anomalies = confusion(scores[:3], labels[:3], 2.0)
    assert none_flagged["precision"] == 0.0 and none_flagged["f1"] == 0.0 and none_flagged["fn"] == 3
    assert no_anomalies["recall"] == 0.0 and no_anomalies["accuracy"] == 1.0
    assert confusion(scores, labels, 0.8)["tp"] == 2  # score >= threshold counts as anomalous


# ---------------------------------------------------------------- pixel metrics


def _blob_masks(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Masks with 1-3 discs on two images out of three; the third stays all normal."""
    masks = np.zeros((n, size, size), dtype=np.float32)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        if i % 3 == 0:
            continue
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.integers(0, size), rng.integers(0, size), rng.integers(2, 9)
            masks[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    return masks


def _random_maps(rng: np.random.Generator, masks: np.ndarray) -> np.ndarray:
    """Smooth noise, raised inside defects by a per-image amount, so the detector is good but imperfect."""
    strength = rng.uniform(0.0, 2.0, size=(masks.shape[0], 1, 1))
    maps = rng.normal(size=masks.shape) + 1.5 * strength * masks
    return ndimage.gaussian_filter(maps, (0, 2, 2)).astype(np.float32)


def _reference_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> float:
    """Brute force: FPR and mean region overlap at every distinct value, trapezoid up to the limit."""
    regions = []
    for image, mask in zip(maps, masks):
        labelled, count = ndimage.label(mask > 0.5, structure=np.ones((3, 3)))
        regions += [np.sort(image[labelled == r]) for r in range(1, count + 1)]
    normal = np.sort(maps[masks < 0.5])
    thresholds = np.unique(maps)[::-1]
    fpr = 1.0 - np.searchsorted(normal, thresholds, side="left") / normal.size
    pro = np.mean([1.0 - np.searchsorted(r, thresholds, side="left") / r.size for r in regions], axis=0)
    x, y = np.r_[0.0, fpr], np.r_[0.0, pro]
    inside = x <= fpr_limit
    x_cut = np.r_[x[inside], fpr_limit]
    y_cut = np.r_[y[inside], np.interp(fpr_limit, x, y)]
    return float(np.trapezoid(y_cut, x_cut) / fpr_limit)


def _streamed(maps: np.ndarray, masks: np.ndarray, batch: int = 8) -> PixelMetrics:
    metrics = PixelMetrics()
    for start in range(0, maps.shape[0], batch):
        metrics.update(
            torch.from_numpy(maps[start : start + batch]), torch.from_numpy(masks[start : start + batch])
        )
    return metrics


@pytest.mark.parametrize("transform", ["plain", "heavy_tailed", "offset", "normal_first", "quantised"])
def test_pixel_metrics_match_exact_references(transform):
    rng = np.random.default_rng(7)
    masks = _blob_masks(rng, 36, 64)
    maps = _random_maps(rng, masks)
    if transform == "heavy_tailed":  # a range many times wider than the bulk of the values
        maps = np.exp(2.5 * maps).astype(np.float32)
    elif transform == "offset":  # a large constant offset with a small spread
        maps = (1000.0 + 0.01 * maps).astype(np.float32)
    elif transform == "normal_first":  # first batch: only good images, so the anomalies come later and higher
        order = np.argsort(masks.reshape(len(masks), -1).max(1), kind="stable")
        maps, masks = maps[order] * (1 + 20 * (np.arange(36) >= 12))[:, None, None], masks[order]
        maps = maps.astype(np.float32)
    elif transform == "quantised":  # few distinct values: many ties between normal and anomalous pixels
        maps = np.round(maps * 3).astype(np.float32)
    result = _streamed(maps, masks).compute(fpr_limit=0.3)
    assert abs(result["pixel_auroc"] - auroc(maps.ravel(), masks.ravel())) < 1e-3
    assert abs(result["pixel_aupro"] - _reference_aupro(maps, masks, 0.3)) < 1e-2


def test_pixel_aupro_at_other_limits_matches_reference():
    rng = np.random.default_rng(3)
    masks = _blob_masks(rng, 24, 48)
    maps = _random_maps(rng, masks)
    metrics = _streamed(maps, masks)
    for limit in (0.05, 1.0):
        assert abs(metrics.compute(limit)["pixel_aupro"] - _reference_aupro(maps, masks, limit)) < 1e-2


def test_pixel_metrics_perfect_and_inverted_detector():
    masks = _blob_masks(np.random.default_rng(0), 9, 32)
    perfect = _streamed(masks.copy(), masks).compute()
    assert perfect == {"pixel_auroc": 1.0, "pixel_aupro": pytest.approx(1.0)}
    inverted = _streamed(-masks, masks).compute()
    assert inverted["pixel_auroc"] == 0.0 and inverted["pixel_aupro"] == 0.0


def test_pixel_metrics_tell_close_values_apart_and_keep_ties_tied():
    spread = np.linspace(0.0, 10.0, 256, dtype=np.float32).reshape(
        1, 16, 16
    )  # first batch sets the anchor at 5
    close = np.full((1, 16, 16), 9.0, dtype=np.float32)
    mask = np.zeros((1, 16, 16), dtype=np.float32)
    mask[0, :4, :4] = 1
    close[mask > 0] = 9.004  # 0.1 % above the normal pixels of that image, 4 away from the anchor
    maps, masks = np.concatenate([spread, close]), np.concatenate([np.zeros_like(mask), mask])
    metrics = PixelMetrics()
    metrics.update(maps[:1], masks[:1])
    metrics.update(maps[1:], masks[1:])
    assert metrics.compute()["pixel_auroc"] == pytest.approx(auroc(maps.ravel(), masks.ravel()), abs=1e-6)
    signed_zeros = np.zeros((1, 8, 8), dtype=np.float32)
    signed_zeros[mask[:, :8, :8] == 0] = -0.0  # equal values whatever their sign bit: a pure tie
    tied = PixelMetrics()
    tied.update(signed_zeros, mask[:, :8, :8])
    assert tied.compute()["pixel_auroc"] == 0.5


def test_pixel_regions_are_8_connected():
    mask = np.zeros((1, 6, 6), dtype=np.float32)
    mask[0, 1, 1] = mask[0, 2, 2] = 1  # touch only at a corner: one region
    mask[0, 4, 4] = mask[0, 4, 5] = 1  # a second region
    metrics = PixelMetrics()
    metrics.update(mask, mask)
    assert metrics.regions == 2


def test_pixel_metrics_without_masks_are_nan():
    metrics = PixelMetrics()
    maps = np.random.default_rng(0).random((4, 16, 16), dtype=np.float32)
    metrics.update(maps, np.zeros_like(maps))
    assert not metrics.has_masks
    assert metrics.normal_pixels == maps.size  # all-zero masks contribute only normal pixels
    result = metrics.compute()
    assert np.isnan(result["pixel_auroc"]) and np.isnan(result["pixel_aupro"])
    metrics.update(maps[:1], (maps[:1] > 0.9).astype(np.float32))
    assert metrics.has_masks


def test_pixel_metrics_reject_nan_maps_and_shape_mismatch():
    metrics = PixelMetrics()
    maps = np.zeros((2, 8, 8), dtype=np.float32)
    maps[1, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN/Inf"):
        metrics.update(maps, np.zeros_like(maps))
    with pytest.raises(ValueError, match="same shape"):
        metrics.update(np.zeros((2, 8, 8)), np.zeros((2, 4, 4)))


def test_pixel_state_does_not_grow_with_images():
    def state_bytes(m: PixelMetrics) -> int:
        return sum(v.nbytes for v in vars(m).values() if isinstance(v, np.ndarray))

    rng = np.random.default_rng(0)
    metrics = PixelMetrics()
    masks = _blob_masks(rng, 16, 128)
    metrics.update(_random_maps(rng, masks), masks)
    before = state_bytes(metrics)
    for _ in range(10):
        metrics.update(_random_maps(rng, masks), masks)
    assert metrics.images == 176
    assert state_bytes(metrics) == before == metrics.nbytes
    assert metrics.nbytes <= 32 * 2**20


# ---------------------------------------------------------------- evaluate and the scorer

TOP_KEYS = {"image", "pixel", "thresholds", "threshold", "confusion", "score_range", "counts"}


def _scores_labels(seed: int = 0, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.array([0] * (n // 2) + [1] * (n - n // 2))
    return rng.normal(size=n) + 1.5 * labels, labels


def test_evaluate_structure_is_exact_and_json_ready():
    scores, labels = _scores_labels()
    train = np.random.default_rng(1).normal(size=40)
    result = evaluate(scores, labels, {"pixel_auroc": 0.9, "pixel_aupro": 0.8}, train_scores=train)
    assert set(result) == TOP_KEYS
    assert set(result["image"]) == {"auroc", "aupr", "f1_max"}
    assert result["pixel"] == {"auroc": 0.9, "aupro": 0.8}
    assert list(result["thresholds"]) == [
        "f1_percentile",
        "f1_uniform",
        "roc_youden",
        "percentile_95",
        "mean_ksigma",
    ]
    assert set(result["thresholds"]["roc_youden"]) == {"value", "sensitivity", "specificity"}
    assert set(result["thresholds"]["mean_ksigma"]) == {"value", "k", "mean", "std"}
    assert result["threshold"] == {
        "method": "f1_percentile",
        "value": result["thresholds"]["f1_percentile"]["value"],
    }
    assert set(result["confusion"]) == {"tp", "fn", "tn", "fp", "accuracy", "precision", "recall", "f1"}
    assert result["counts"] == {"normal": 30, "anomalous": 30}
    assert result["score_range"] == {"min": scores.min(), "max": scores.max()}
    assert result["image"]["auroc"] == auroc(scores, labels)
    assert result["thresholds"]["percentile_95"]["value"] == pytest.approx(np.percentile(scores[:30], 95))
    assert json.loads(json.dumps(result, allow_nan=False)) == result  # plain floats and ints only
    assert all(type(v) is int for k, v in result["confusion"].items() if k in ("tp", "fn", "tn", "fp"))


@pytest.mark.parametrize("method", THRESHOLD_METHODS)
def test_evaluate_uses_the_chosen_threshold_for_the_confusion_matrix(method):
    scores, labels = _scores_labels(2)
    result = evaluate(scores, labels, train_scores=np.zeros(5) + 0.1, threshold_method=method)
    value = result["thresholds"][method]["value"]
    assert result["threshold"] == {"method": method, "value": value}
    assert result["confusion"] == confusion(scores, labels, value)
    assert result["pixel"] is None
    assert "mean_ksigma" in result["thresholds"]


def test_evaluate_rejects_unknown_method_and_missing_train_scores():
    scores, labels = _scores_labels()
    with pytest.raises(ValueError, match="f1_percentile, f1_uniform, roc_youden, percentile_95, mean_ksigma"):
        evaluate(scores, labels, threshold_method="otsu")
    with pytest.raises(ValueError, match="needs train_scores"):
        evaluate(scores, labels, threshold_method="mean_ksigma")
    assert "mean_ksigma" not in evaluate(scores, labels)["thresholds"]


def test_evaluate_only_normal_test_set_falls_back():
    scores = np.arange(21.0)
    labels = np.zeros(21, dtype=int)
    result = evaluate(scores, labels)
    assert all(np.isnan(v) for v in result["image"].values())
    assert set(result["thresholds"]) == {"percentile_95"}
    assert result["threshold"] == {"method": "percentile_95", "value": 19.0, "fallback_from": "f1_percentile"}
    assert result["counts"] == {"normal": 21, "anomalous": 0}
    assert result["confusion"]["fp"] == 2  # 19 and 20
    train = np.array([4.0, 8.0])  # mean 6, std 2
    with_train = evaluate(scores, labels, train_scores=train, threshold_method="roc_youden")
    assert with_train["threshold"] == {"method": "mean_ksigma", "value": 12.0, "fallback_from": "roc_youden"}
    json.dumps(result)


def test_default_scorer_streams_batches_into_evaluate():
    rng = np.random.default_rng(5)
    masks = _blob_masks(rng, 12, 32)
    maps = _random_maps(rng, masks)
    labels = (masks.reshape(12, -1).max(1) > 0).astype(np.int64)
    scores = maps.reshape(12, -1).max(1)
    predictions, targets = [], []
    for s in range(0, 12, 4):
        predictions.append(
            Prediction(
                score=torch.from_numpy(scores[s : s + 4]), anomaly_map=torch.from_numpy(maps[s : s + 4])
            )
        )
        targets.append(
            Batch(
                image=torch.zeros(4, 3, 32, 32),
                label=torch.from_numpy(labels[s : s + 4]),
                mask=torch.from_numpy(masks[s : s + 4]),
                path=[""] * 4,
                category=["c"] * 4,
            )
        )
    result = DefaultScorer(threshold_method="roc_youden")(predictions, targets)
    expected = evaluate(
        scores, labels, _streamed(maps, masks, batch=4).compute(), threshold_method="roc_youden"
    )
    assert result == expected
    assert result["pixel"]["auroc"] == pytest.approx(auroc(maps.ravel(), masks.ravel()), abs=1e-3)
    for t in targets:
        t.mask = None
    assert DefaultScorer()(predictions, targets)["pixel"] is None
    with pytest.raises(ValueError, match="valid ones"):
        DefaultScorer(threshold_method="best")
