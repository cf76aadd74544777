"""The run settings reach the trainer and the loaders: resume with other settings is refused by name, the
loaders use `num_workers`, `allow_download` holds while the model is built, unknown run keys are errors."""

from __future__ import annotations

import json

import pytest

from ad_core import train
from ad_core.building import build_model
from ad_core.runner import make_loader
from ad_core.settings import settings
from ad_core.training import TrainingStateError


@pytest.mark.parametrize(("change", "named"), [
    ({"image_size": 48}, "config.run.image_size: saved 32, this run 48"),
    ({"lr": 0.5}, "config.hyperparameters.lr: saved 0.01, this run 0.5"),
])
def test_a_run_resumed_with_other_settings_is_refused_naming_the_setting(tiny_plugin, outputs, change,
                                                                          named) -> None:
    base = {"verbose": False, "num_epochs": 1, "image_size": 32, "seed": 42, "lr": 0.01, "write_maps": False}
    train("demo", "weave", "tiny-ae", **base)
    with pytest.raises(TrainingStateError, match=named.replace(".", r"\.")):
        train("demo", "weave", "tiny-ae", **{**base, **change, "resume": True})


def test_the_loaders_use_the_runs_num_workers() -> None:
    assert make_loader(list(range(4)), 2, False, 0, num_workers=1).num_workers == 1
    assert make_loader(list(range(4)), 2, False, 0).num_workers == settings.num_workers


def test_allow_download_holds_while_the_model_is_built(tiny_plugin, monkeypatch) -> None:
    import tiny_plugin as module

    seen = []
    original = module.TinyAE

    def recording(**kwargs):
        seen.append(settings.allow_download)
        return original(**kwargs)

    monkeypatch.setattr(module, "TinyAE", recording)
    monkeypatch.setattr(settings, "allow_download", False)
    build_model("tiny-ae", allow_download=True)
    build_model("tiny-ae")
    assert seen == [True, False] and settings.allow_download is False


def test_a_run_key_that_was_dropped_is_an_error(tiny_plugin) -> None:
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['val_metric'\].*'precision'"):
        build_model("tiny-ae", val_metric="auroc")


def test_model_seed_reaches_a_models_own_draws_and_the_runs_seed_does_not(outputs) -> None:
    """`seed` steers the run; `model_seed` a model's own draws (here PaDiM's random channel subset)."""
    def channels(**options):
        model, _ = build_model("padim", pretrained=False, **options)
        return model.channel_index.tolist()

    assert channels(model_seed=3) == channels(model_seed=3, seed=9)
    assert channels(model_seed=3) != channels(model_seed=4)
    (result,) = train("demo", "weave", "padim", verbose=False, image_size=32, pretrained=False, write_maps=False,
                      model_seed=3)
    saved = json.loads((result.output_dir / "model.json").read_text())
    assert saved["hyperparameters"]["seed"] == 3 and saved["run"]["model_seed"] == 3


def test_model_seed_on_a_model_without_draws_of_its_own_is_an_error(tiny_plugin) -> None:
    with pytest.raises(TypeError, match="model_seed does not apply"):
        build_model("tiny-ae", model_seed=1)
