"""Same weights, same outputs as anomalib: `benchmarks/equivalence_anomalib.py` as tests.

Run with `pytest -m anomalib` in an environment where anomalib is importable; skipped elsewhere. The script runs
in a subprocess because it makes timm build random weights for the whole process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.anomalib
pytest.importorskip("anomalib", reason="anomalib is not importable: the equivalence checks need it")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "equivalence_anomalib.py"
MODELS = ("stfpm", "fastflow", "efficientad", "dfm", "dfm-nll", "cfa", "glass", "ganomaly", "draem")


@pytest.fixture(scope="module")
def record(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("equivalence") / "equivalence.json"
    subprocess.run([sys.executable, str(SCRIPT), "--image-size", "256", "--batch", "2", "--json", str(out),
                    "--models", *MODELS, "supersimplenet"],
                   check=True, capture_output=True, text=True)
    return json.loads(out.read_text())


@pytest.mark.parametrize("model", MODELS)
def test_same_loss_scores_and_maps_as_anomalib(record: dict, model: str) -> None:
    row = record["models"][model]
    if "loss_rel_diff" in row:  # one-pass models (DFM) have no loss
        assert row["loss_rel_diff"] < 1e-5
    assert row["score_max_abs_diff"] < 1e-4
    if "bank_max_abs_diff" in row:  # CFA's memory bank, built from the same images
        assert row["bank_max_abs_diff"] < 1e-5
    if "map_max_abs_diff_to_float64" in row:  # CFA: anomalib's float32 distances cancel; float64 referees
        assert row["map_max_abs_diff_to_float64"] < 1e-5 * max(1.0, row["map_max_abs"])
        assert row["map_max_abs_diff"] < 1e-4 * max(1.0, row["map_max_abs"])
    elif "map_max_abs_diff" in row:  # DFM's NLL is image level
        assert row["map_max_abs_diff"] < 1e-5 * max(1.0, row["map_max_abs"])


def test_supersimplenet_same_training_forward_loss_and_maps_as_anomalib(record: dict) -> None:
    """Same draws on both sides: the training logits and loss agree; the final map differs only by the blur's
    kernel length (3 sigma in anomalib, 4 sigma in ad-core), so the raw map logits are compared exactly."""
    row = record["models"]["supersimplenet"]
    assert row["loss_rel_diff"] < 1e-5
    assert row["train_map_logits_max_abs_diff"] < 1e-5
    assert row["train_score_logits_max_abs_diff"] < 1e-5
    assert row["eval_map_logits_max_abs_diff"] < 1e-5
    assert row["score_max_abs_diff"] < 1e-5
    assert row["map_max_abs_diff"] < 1e-3


@pytest.mark.parametrize("branch", ["manifold", "hypersphere"])
def test_glass_same_three_losses_as_anomalib_in_both_projections(record: dict, branch: str) -> None:
    row = record["models"]["glass"]
    assert row["embedding_max_abs_diff"] < 1e-5
    for key in ("true_loss", "gaus_loss", "focal_loss", "loss"):
        theirs, ours = row[f"{branch}_{key}_anomalib"], row[f"{branch}_{key}_ours"]
        assert abs(theirs - ours) <= 1e-5 * max(1.0, abs(theirs)), (key, theirs, ours)
