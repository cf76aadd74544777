"""Run reports: results text/JSON, score plots and anomaly-map panels."""

from __future__ import annotations

import copy
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ad_core.reports import (
    denormalize,
    format_results_txt,
    format_table,
    panel_size,
    plot_histogram,
    plot_roc,
    sanitize_name,
    save_map_panels,
    save_map_png,
    write_results,
)
from ad_core.reports.maps import LABEL_HEIGHT, PANEL_GAP, _lut
from ad_core.reports.plots import _roc

NAN = float("nan")


@pytest.fixture
def results() -> dict:
    oracle = "test labels (oracle: for reference, not a deployable setting)"
    return {
        "image": {"auroc": 0.987, "aupr": 0.991, "f1_max": 0.95},
        "pixel": {"auroc": 0.971, "aupro": 0.912},
        "thresholds": {
            "normal_fpr": {"value": 0.25, "target_fpr": 0.01, "fpr": 0.0, "normal_count": 20,
                           "selected_on": "validation"},
            "mean_ksigma": {"value": 0.201, "k": 3.0, "mean": 0.11, "std": 0.03, "selected_on": "validation"},
        },
        "oracle_thresholds": {
            "f1_percentile": {"value": 0.234, "f1": 0.915, "selected_on": oracle,
                              "confusion": {"tp": 89, "fn": 5, "tn": 82, "fp": 11, "accuracy": 0.912,
                                            "precision": 0.887, "recall": 0.945, "f1": 0.916}},
            "f1_uniform": {"value": 0.236, "f1": 0.916, "selected_on": oracle},
            "roc_youden": {"value": 0.241, "sensitivity": 0.945, "specificity": 0.898, "selected_on": oracle},
            "percentile_95": {"value": 0.189, "selected_on": oracle},
        },
        "threshold": {"method": "normal_fpr", "value": 0.25, "selected_on": "validation"},
        "confusion": {"tp": 80, "fn": 14, "tn": 90, "fp": 3, "accuracy": 0.909, "precision": 0.964,
                      "recall": 0.851, "f1": 0.904},
        "score_range": {"min": 0.01, "max": 0.93},
        "counts": {"normal": 93, "anomalous": 94},
    }


@pytest.fixture
def one_class_results(results) -> dict:
    r = copy.deepcopy(results)
    r["image"] = {"auroc": NAN, "aupr": NAN, "f1_max": NAN}
    r["pixel"] = None
    r["thresholds"] = {}
    r["oracle_thresholds"] = {"percentile_95": {"value": 0.189, "selected_on": "test labels (oracle)"}}
    r["threshold"] = {"method": "percentile_95", "value": 0.189, "fallback_from": "normal_fpr"}
    r["counts"] = {"normal": 20, "anomalous": 0}
    return r


HEADER = {"dataset": "mvtec", "category": "bottle", "model": "patchcore", "fit_seconds": 12.3}

EXPECTED = """\
=== Image-level Results ===
AUROC: 0.987 (98.7%)
AUPR: 0.991 (99.1%)
F1-max: 0.950

=== Pixel-level Results ===
AUROC: 0.971 (97.1%)
AUPRO: 0.912 (91.2%)

=== Thresholds (deployable: set without test labels) ===
Normal FPR 1.0% (validation): 0.250 | FPR on 20 validation normals: 0.000
Mean + 3.0 sigma (held-out normals): 0.201
Chosen: normal_fpr = 0.250 | selected on: validation

=== Confusion Matrix (Normal-FPR Threshold) ===
TP=80, FN=14, TN=90, FP=3
Accuracy: 0.909, Precision: 0.964, Recall: 0.851, FPR: 0.032

=== Oracle Thresholds (tuned on the test labels: optimistic, for reference only) ===
F1 (Percentile): 0.234 | F1: 0.915
  TP=89, FN=5, TN=82, FP=11
  Accuracy: 0.912, Precision: 0.887, Recall: 0.945, FPR: 0.118
F1 (Uniform): 0.236 | F1: 0.916
ROC (Youden J): 0.241 | Sensitivity: 0.945, Specificity: 0.898
Percentile (95%): 0.189
"""


# ---- text ---------------------------------------------------------------------------------------

def test_results_txt_has_the_known_layout(results):
    text = format_results_txt(results, HEADER)
    assert text.startswith("=== Run ===\ndataset: mvtec\ncategory: bottle\nmodel: patchcore\nfit_seconds: 12.3\n\n")
    assert EXPECTED in text


def test_results_txt_without_header_starts_with_image_section(results):
    assert format_results_txt(results).startswith("=== Image-level Results ===\nAUROC: 0.987 (98.7%)\n")


def test_nan_metrics_no_masks_and_missing_thresholds(one_class_results):
    text = format_results_txt(one_class_results)
    lines = text.splitlines()
    assert "AUROC: n/a" in lines and "AUPR: n/a" in lines and "F1-max: n/a" in lines
    assert "nan" not in text.lower()
    assert "=== Pixel-level Results ===\nnot available (no masks)\n" in text
    assert "Percentile (95%): 0.189" in lines
    assert not any(line.startswith(("F1 (", "ROC (", "Mean +", "Normal FPR")) for line in lines)
    assert "Chosen: percentile_95 = 0.189 (fallback from normal_fpr" in text
    assert "=== Confusion Matrix (95th Percentile Threshold) ===" in lines


@pytest.mark.parametrize(
    ("method", "words"),
    [("f1_uniform", "F1 Uniform Threshold"), ("roc_youden", "ROC Youden J Threshold"),
     ("mean_ksigma", "Mean + 3.0 Sigma Threshold"), ("custom", "custom Threshold")],
)
def test_confusion_header_names_the_chosen_method(results, method, words):
    results["threshold"] = {"method": method, "value": 0.2}
    assert f"=== Confusion Matrix ({words}) ===" in format_results_txt(results).splitlines()


def test_results_txt_says_what_each_figure_is_tuned_on(results):
    results["pixel"]["aupimo"] = {"mean": 0.61, "images": 94, "fpr_bounds": [1e-5, 1e-4]}
    results["pixel"]["per_defect_pixel_auroc"] = {"scratch": 0.9, "hole": 0.8}
    results["per_defect"] = {"scratch": {"images": 50, "recall": 0.9}, "hole": {"images": 44, "recall": 0.75}}
    results["counts"]["anomalous_without_mask"] = 3
    results["validation"] = {"source": "holdout", "normal_images": 20, "anomalous_images": 20,
                             "defects": "synthetic", "image_auroc": 0.97}
    results["decisions"] = {"score_range": {"min": 0.0, "max": 1.0, "selected_on": "validation"},
                            "pixel_threshold": {"value": 0.5, "target_fpr": 0.01, "selected_on": "validation"},
                            "map_range": {"min": 0.0, "max": 2.0, "selected_on": "validation"}}
    lines = format_results_txt(results).splitlines()
    assert "AUPIMO (FPR 1e-05..0.0001 on normal images): 0.610 (61.0%) over 94 anomalous image(s)" in lines
    assert "Left out: 3 anomalous image(s) without a mask (unknown pixels, not normal ones)" in lines
    assert "Source: holdout, 20 normal + 20 anomalous (synthetic)" in lines
    assert "Pixel threshold (normal FPR 1.0%): 0.5000 | map range 0.0000 .. 2.0000" in lines
    assert "hole: images 44, recall 0.750, pixel AUROC 0.800" in lines
    oracle = lines.index("=== Oracle Thresholds (tuned on the test labels: optimistic, for reference only) ===")
    assert lines.index("=== Confusion Matrix (Normal-FPR Threshold) ===") < oracle  # the saved decision first


def test_mean_ksigma_line_shows_k(results):
    results["thresholds"]["mean_ksigma"]["k"] = 2.5
    assert "Mean + 2.5 sigma (held-out normals): 0.201" in format_results_txt(results).splitlines()


def test_write_results_round_trips(tmp_path, results):
    txt, js = write_results(tmp_path / "run", results, HEADER)
    assert txt == tmp_path / "run" / "results.txt" and js == tmp_path / "run" / "results.json"
    assert txt.read_text(encoding="utf-8") == format_results_txt(results, HEADER)
    assert json.loads(js.read_text()) == {"run": HEADER, **results}
    assert sorted(p.name for p in txt.parent.iterdir()) == ["results.json", "results.txt"]


def test_write_results_json_is_strict_with_nan(tmp_path, one_class_results):
    _, js = write_results(tmp_path, one_class_results)
    data = json.loads(js.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert data["image"] == {"auroc": None, "aupr": None, "f1_max": None}
    assert data["pixel"] is None and data["run"] == {}


def test_failed_write_keeps_old_results_and_leaves_no_temp(tmp_path, results, monkeypatch):
    (tmp_path / "results.txt").write_text("old\n")
    real_write_text = pathlib.Path.write_text

    def half_then_fail(self, data, *args, **kwargs):
        real_write_text(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_text", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_results(tmp_path, results, HEADER)
    monkeypatch.undo()
    assert (tmp_path / "results.txt").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]


def test_format_table_aligns_and_prints_nan_as_na():
    rows = [
        {"model": "patchcore", "category": "bottle", "image AUROC": 0.98765, "pixel AUROC": NAN, "fit s": 12.3},
        {"model": "stfpm", "category": "carpet", "image AUROC": 0.9, "pixel AUROC": 0.95, "fit s": None},
    ]
    columns = ["model", "category", "image AUROC", "pixel AUROC", "fit s"]
    lines = format_table(rows, columns).splitlines()
    assert len(lines) == 4
    assert [c.strip() for c in lines[0].split("|")] == columns
    assert [c.strip() for c in lines[2].split("|")] == ["patchcore", "bottle", "0.988", "n/a", "12.300"]
    assert [c.strip() for c in lines[3].split("|")] == ["stfpm", "carpet", "0.900", "0.950", "n/a"]
    bars = {tuple(i for i, ch in enumerate(line) if ch in "|+") for line in lines}
    assert len(bars) == 1  # every separator in the same column
    assert lines[2].index("0.988") + len("0.988") == lines[3].index("0.900") + len("0.900")  # numbers right-aligned


def test_format_table_edge_cases():
    assert format_table([], []) == ""
    assert format_table([], ["a", "b"]).splitlines()[0] == "a | b"
    assert "n/a" in format_table([{"a": 1}], ["a", "b"])


# ---- plots --------------------------------------------------------------------------------------

def _two_class(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(0, 1, n), rng.normal(2, 1, n)]
    return scores, np.r_[np.zeros(n), np.ones(n)]


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


def test_histogram_and_roc_are_valid_pngs(tmp_path):
    scores, labels = _two_class()
    h = plot_histogram(torch.as_tensor(scores), torch.as_tensor(labels), 1.0, tmp_path / "histogram.png", title="t")
    r = plot_roc(scores, labels, tmp_path / "roc.png", title="t")
    assert h == tmp_path / "histogram.png" and r == tmp_path / "roc.png"
    assert _png_size(h) == (640, 400) and _png_size(r) == (640, 400)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["histogram.png", "roc.png"]


def test_plots_handle_one_class_and_odd_scores(tmp_path):
    scores = np.array([0.5, 0.5, 0.5, NAN])
    labels = np.zeros(4)
    assert _png_size(plot_histogram(scores, labels, 0.5, tmp_path / "h.png")) == (640, 400)
    assert _png_size(plot_roc(scores, labels, tmp_path / "r.png")) == (640, 400)
    assert _png_size(plot_histogram(np.array([]), np.array([]), NAN, tmp_path / "empty.png")) == (640, 400)
    with pytest.raises(ValueError):
        plot_roc(np.zeros(3), np.zeros(2), tmp_path / "bad.png")


def test_roc_area_equals_the_rank_statistic_with_ties():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 6, 200).astype(float)  # many ties
    y = (rng.random(200) < 0.4).astype(np.int8)
    fpr, tpr, area = _roc(s, y)
    pos, neg = s[y == 1], s[y == 0]
    expected = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size)
    assert area == pytest.approx(expected, abs=1e-12)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_failed_plot_leaves_no_partial_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def fail(self, fname, **kwargs):
        pathlib.Path(fname).write_bytes(b"\x89PNG partial")
        raise RuntimeError("boom")

    monkeypatch.setattr(Figure, "savefig", fail)
    with pytest.raises(RuntimeError):
        plot_roc(*_two_class(), tmp_path / "roc.png")
    assert list(tmp_path.iterdir()) == []


def test_plots_use_no_pyplot_state(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from ad_core.reports.plots import plot_histogram, plot_roc\n"
        "s = np.r_[np.zeros(5), np.ones(5)]\n"
        f"plot_histogram(s, s, 0.5, r'{tmp_path / 'h.png'}'); plot_roc(s, s, r'{tmp_path / 'r.png'}')\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---- maps ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("demo://weave/test/scratch/003", "weave_test_scratch_003"),
        ("/data/mvtec/bottle/test/broken_large/000.png", "data_mvtec_bottle_test_broken_large_000"),
        ("C:\\imgs\\a b?.JPG", "C_imgs_a_b"),
        ("../../etc/passwd", "etc_passwd"),
        ("", "image"),
        ("x" * 500, "x" * 120),
    ],
)
def test_sanitize_name(name, stem):
    assert sanitize_name(name) == stem


def _panel_inputs(b: int = 3, h: int = 32, w: int = 48):
    images = torch.rand(b, 3, h, w)
    maps = torch.zeros(b, h, w)
    maps[:, : h // 2] = 2.0  # top half above the threshold
    masks = torch.zeros(b, h, w)
    masks[:, :, : w // 2] = 1.0  # left half anomalous
    return images, maps, masks


def _panel(array: np.ndarray, index: int, h: int, w: int) -> np.ndarray:
    x = index * (w + PANEL_GAP)
    return array[LABEL_HEIGHT : LABEL_HEIGHT + h, x : x + w]


def test_map_panels_layout_names_and_content(tmp_path):
    h, w = 32, 48
    images, maps, masks = _panel_inputs(3, h, w)
    names = ["demo://weave/test/scratch/003", "demo://weave/test/good/000", "demo://weave/test/scratch/003"]
    paths = save_map_panels(tmp_path / "maps", images, maps, 1.0, names, masks, vmin=0.0, vmax=2.0)
    assert [p.name for p in paths] == ["weave_test_scratch_003.png", "weave_test_good_000.png",
                                       "weave_test_scratch_003_2.png"]
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == sorted(p.name for p in paths)
    assert panel_size(h, w) == (4 * w + 3 * PANEL_GAP, h + LABEL_HEIGHT)
    assert _png_size(paths[0]) == panel_size(h, w)

    pic = np.asarray(Image.open(paths[0]).convert("RGB")).astype(int)
    expected_image = (images[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(_panel(pic, 0, h, w) - expected_image).max() <= 1
    overlay = _panel(pic, 1, h, w)
    hot = 0.5 * expected_image[0, 0] + 0.5 * _lut()[255]  # map at vmax: jet's top colour blended in
    assert np.abs(overlay[0, 0] - hot).max() <= 1
    predicted = _panel(pic, 2, h, w)
    assert (predicted[: h // 2] == 255).all() and (predicted[h // 2 :] == 0).all()
    truth = _panel(pic, 3, h, w)
    assert (truth[:, : w // 2] == 255).all() and (truth[:, w // 2 :] == 0).all()


def test_map_panels_share_one_colour_scale(tmp_path):
    h, w = 16, 16
    images = torch.full((2, 3, h, w), 0.5)
    maps = torch.full((2, h, w), 1.0)
    maps[1, 0, 0] = 10.0  # an outlier in one map must not rescale the other's colours
    paths = save_map_panels(tmp_path, images, maps, 5.0, ["a", "b"], None, vmin=0.0, vmax=10.0)
    a, b = (np.asarray(Image.open(p).convert("RGB")) for p in paths)
    assert (_panel(a, 1, h, w)[5, 5] == _panel(b, 1, h, w)[5, 5]).all()


def test_map_panels_without_masks_say_so(tmp_path):
    h, w = 64, 64
    images, maps, _ = _panel_inputs(1, h, w)
    (path,) = save_map_panels(tmp_path, images, maps, 1.0, ["x"], None, vmin=0.0, vmax=2.0)
    truth = _panel(np.asarray(Image.open(path).convert("RGB")), 3, h, w)
    grey = truth[h - 1, w - 1]
    assert grey[0] == grey[1] == grey[2] and 0 < grey[0] < 255
    assert (truth != grey).any(axis=-1).any()  # the "no mask" text is drawn on it


def test_map_panels_resize_maps_to_the_image_and_reject_mismatches(tmp_path):
    images = torch.rand(1, 3, 32, 32)
    (path,) = save_map_panels(tmp_path, images, torch.rand(1, 8, 8), 0.5, ["s"], torch.zeros(1, 16, 16), 0.0, 1.0)
    assert _png_size(path) == panel_size(32, 32)
    with pytest.raises(ValueError):
        save_map_panels(tmp_path, images, torch.rand(2, 32, 32), 0.5, ["a", "b"], None, 0.0, 1.0)
    with pytest.raises(ValueError):
        save_map_panels(tmp_path, images, torch.rand(1, 32, 32), 0.5, [], None, 0.0, 1.0)


def test_failed_panel_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "s.png"
    target.write_bytes(b"old")

    def fail(self, fp, *args, **kwargs):
        pathlib.Path(fp).write_bytes(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", fail)
    with pytest.raises(OSError):
        save_map_panels(tmp_path, *_panel_inputs(1)[:2], 1.0, ["s"], None, 0.0, 2.0)
    with pytest.raises(OSError):
        save_map_png(tmp_path / "m.png", np.zeros((4, 4)), 0.0, 1.0)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png"]


def test_save_map_png_colours_and_size(tmp_path):
    amap = np.zeros((20, 30), dtype=np.float32)
    amap[:, 15:] = 1.0
    amap[0, 0] = NAN
    path = save_map_png(tmp_path / "sub" / "m.png", amap, vmin=0.0, vmax=1.0)
    assert _png_size(path) == (30, 20)
    pic = np.asarray(Image.open(path).convert("RGB"))
    assert (pic[5, 0] == _lut()[0]).all() and (pic[5, 29] == _lut()[255]).all()
    assert tuple(_lut()[0]) == (0, 0, 128) and tuple(_lut()[255]) == (128, 0, 0)  # jet: dark blue to dark red
    assert (pic[0, 0] == _lut()[0]).all()  # NaN shows as the lowest score
    assert _png_size(save_map_png(tmp_path / "t.png", torch.ones(5, 7), 1.0, 1.0)) == (7, 5)


def test_denormalize_inverts_imagenet_normalisation():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    images = torch.rand(2, 3, 8, 8)
    normalised = (images - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(denormalize(normalised, mean, std), images, atol=1e-6)
    assert torch.allclose(denormalize(normalised[0], torch.tensor(mean), torch.tensor(std)), images[0], atol=1e-6)
    raw = torch.tensor([[[[-0.5, 0.25, 1.5]]]]).expand(1, 3, 1, 3)
    assert denormalize(raw, None, None).tolist() == torch.tensor([0.0, 0.25, 1.0]).expand(1, 3, 1, 3).tolist()
