"""Thresholds a model sets by itself (`fixed_thresholds()`) join the data-driven ones and can be chosen."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tiny_plugin import TinyAE

from ad_core import train
from ad_core.hookspecs import hookimpl
from ad_core.metrics import DefaultScorer, evaluate
from ad_core.reports.text import format_results_txt
from ad_core.specs import ModelSpec


class SelfThresholdedAE(TinyAE):
    """The tiny autoencoder with a threshold of its own, as U-Flow has its NFA threshold."""

    def fixed_thresholds(self) -> dict[str, float]:
        return {"own": 0.25}


class SelfThresholdedPlugin:
    @staticmethod
    @hookimpl
    def adcore_register_models(register) -> None:
        register(ModelSpec(name="tiny-own-threshold", paradigm="test", factory="test_fixed_thresholds:SelfThresholdedAE",
                           trainer="gradient", paper="test-only model",
                           defaults={"width": 8, "num_epochs": 1, "batch_size": 8, "image_size": 32,
                                     "threshold_method": "own"}))
        register(ModelSpec(name="tiny-without-own-threshold", paradigm="test", factory="tiny_plugin:TinyAE",
                           trainer="gradient", paper="test-only model",
                           defaults={"width": 8, "num_epochs": 1, "batch_size": 8, "image_size": 32,
                                     "threshold_method": "own"}))


@pytest.fixture
def own_threshold_plugin():
    from ad_core.plugins import register_plugin

    unregister = register_plugin(SelfThresholdedPlugin(), "own-threshold-plugin")
    yield
    unregister()


SCORES = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
LABELS = np.array([0, 0, 0, 1, 1, 1])


def test_fixed_threshold_is_listed_and_selectable() -> None:
    results = evaluate(SCORES, LABELS, fixed_thresholds={"own": 0.25}, threshold_method="own")
    own = {"value": 0.25, "fixed": True, "selected_on": "the model itself (no data)"}
    assert results["thresholds"]["own"] == own
    assert {"f1_percentile", "roc_youden", "percentile_95"} <= set(results["oracle_thresholds"])
    assert results["threshold"] == {"method": "own", "value": 0.25, "selected_on": own["selected_on"]}
    assert results["confusion"]["fp"] == 1 and results["confusion"]["tp"] == 3  # 0.3 >= 0.25 is a false alarm
    assert "own (set by the model): 0.250" in format_results_txt(results)


def test_without_fixed_thresholds_nothing_changes() -> None:
    results = evaluate(SCORES, LABELS)
    assert not any(t.get("fixed") for t in results["thresholds"].values())


def test_unknown_method_names_the_fixed_ones_too() -> None:
    with pytest.raises(ValueError, match="valid ones: .*own"):
        evaluate(SCORES, LABELS, fixed_thresholds={"own": 0.25}, threshold_method="nfa")
    with pytest.raises(ValueError, match="unknown threshold_method 'own'"):
        evaluate(SCORES, LABELS, threshold_method="own")
    with pytest.raises(ValueError, match="unknown threshold_method"):
        DefaultScorer(threshold_method="own")


def test_run_writes_the_models_threshold(own_threshold_plugin, outputs) -> None:
    (run,) = train("demo", "weave", "tiny-own-threshold", verbose=False)  # the spec's default method
    results = json.loads((run.output_dir / "results.json").read_text())
    assert results["thresholds"]["own"]["value"] == 0.25 and results["thresholds"]["own"]["fixed"]
    assert results["threshold"]["method"] == "own" and results["threshold"]["value"] == 0.25
    assert "own (set by the model): 0.250" in (run.output_dir / "results.txt").read_text()
    meta = json.loads((run.output_dir / "model.json").read_text())
    assert meta["threshold"]["value"] == 0.25


def test_an_override_wins_over_the_specs_method(own_threshold_plugin, outputs) -> None:
    (run,) = train("demo", "weave", "tiny-own-threshold", verbose=False, threshold_method="roc_youden")
    results = json.loads((run.output_dir / "results.json").read_text())
    assert results["threshold"]["method"] == "roc_youden"  # a test-label threshold, because it was named
    assert results["threshold"]["value"] == results["oracle_thresholds"]["roc_youden"]["value"]
    assert "oracle" in results["threshold"]["selected_on"]
    meta = json.loads((run.output_dir / "model.json").read_text())
    assert meta["threshold"]["value"] == results["threshold"]["value"]


def test_an_unknown_method_fails_before_training(own_threshold_plugin, outputs, monkeypatch) -> None:
    from ad_core.training import gradient

    def no_fit(*args, **kwargs):
        raise AssertionError("training started despite a bad threshold_method")

    monkeypatch.setattr(gradient.GradientTrainer, "fit", no_fit)
    with pytest.raises(ValueError, match="unknown threshold_method 'nfaa'.*own"):
        train("demo", "weave", "tiny-own-threshold", verbose=False, threshold_method="nfaa")


def test_a_spec_default_that_does_not_apply_falls_back_with_a_warning(own_threshold_plugin, outputs) -> None:
    with pytest.warns(UserWarning, match="default threshold_method 'own' is not available"):
        (run,) = train("demo", "weave", "tiny-without-own-threshold", verbose=False)
    results = json.loads((run.output_dir / "results.json").read_text())
    assert results["threshold"]["method"] == "normal_fpr"
    assert any("not available" in w for w in results["run"]["warnings"])
