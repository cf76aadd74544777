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
MODELS = ("stfpm", "fastflow", "efficientad", "ganomaly", "draem")


@pytest.fixture(scope="module")
def record(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("equivalence") / "equivalence.json"
    subprocess.run([sys.executable, str(SCRIPT), "--image-size", "64", "--batch", "2", "--json", str(out)],
                   check=True, capture_output=True, text=True)
    return json.loads(out.read_text())


@pytest.mark.parametrize("model", MODELS)
def test_same_loss_scores_and_maps_as_anomalib(record: dict, model: str) -> None:
    row = record["models"][model]
    assert row["loss_rel_diff"] < 1e-5
    assert row["score_max_abs_diff"] < 1e-4
    assert row["map_max_abs_diff"] < 1e-5 * max(1.0, row["map_max_abs"])
