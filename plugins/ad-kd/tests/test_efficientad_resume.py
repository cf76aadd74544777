"""EfficientAD's checkpoint and resume on the core trainer: a run killed mid-training continues to the weights and map quantiles of
an uninterrupted run; nothing saved starts fresh; a state of another run is refused with advice."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from ad_core.building import build_model
from ad_core.data.synthetic import write_demo_dataset
from ad_core.runner import run_one
from ad_core.training import GradientTrainer, TrainingStateError, seed_everything
from ad_core.training import gradient as trainer_module
from ad_core.training.state import save_training_state, state_files
from ad_core.types import Batch

SIZE = 64
TINY = {"image_size": SIZE, "out_channels": 32}  # PDN-S with a narrow output: the paper's layers, less work
STEPS = 5  # 5 single-image batches, 1 held out: 4 steps per epoch, so the crash at step 3 is mid-epoch
CRASH_AT = 3


def batches(paths: list[str] | None = None) -> list[Batch]:
    """Unshuffled single-image batches: the order of a straight and a resumed run is the same."""
    paths = paths or [f"img{i}.png" for i in range(5)]
    g = torch.Generator().manual_seed(0)
    return [Batch(torch.rand(1, 3, SIZE, SIZE, generator=g), torch.zeros(1, dtype=torch.long), None, [p], ["c"])
            for p in paths]


def fresh(name: str = "efficientad"):
    seed_everything(0)
    model, _ = build_model(name, pretrained=False, **TINY)
    return model


def fit(model, data, **kw):
    kw.setdefault("max_steps", STEPS)
    kw.setdefault("config", {"size": model.size})  # the run's configuration, as `run_one` passes it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the penalty substitute's warning
        return GradientTrainer(device="cpu", progress=False, **kw).fit(model, data)


class Killed(RuntimeError):
    pass


def killed_after(model, steps: int):
    """The model's losses raise on step `steps + 1`, as if the process died there."""
    losses, calls = model.losses, []

    def dying(*args):
        calls.append(1)
        if len(calls) > steps:
            raise Killed
        return losses(*args)

    model.losses = dying
    return model


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run; with resume=True on an empty folder, so it also shows that this starts fresh."""
    folder = tmp_path_factory.mktemp("straight")
    model = fresh()
    report = fit(model, batches(), checkpoint_dir=folder, resume=True)
    return model, report, folder


def test_resume_after_a_crash_gives_the_straight_runs_weights_and_quantiles(straight, tmp_path, monkeypatch) -> None:
    with pytest.raises(Killed):
        fit(killed_after(fresh(), CRASH_AT), batches(), checkpoint_dir=tmp_path, checkpoint_every=CRASH_AT)
    assert json.loads(state_files(tmp_path)[1].read_text())["step"] == CRASH_AT

    bars, bar = [], trainer_module.tqdm
    monkeypatch.setattr(trainer_module, "tqdm", lambda **kw: bars.append(kw) or bar(**kw))
    resumed = fresh()
    report = fit(resumed, batches(), checkpoint_dir=tmp_path, resume=True)

    model, full, _ = straight
    assert bars[0]["initial"] == CRASH_AT and bars[0]["total"] == STEPS
    assert report.steps == STEPS and report.extra["resumed_from_step"] == CRASH_AT
    assert any(f"resumed from step {CRASH_AT} of {STEPS}" in note for note in report.notes)
    assert report.history == full.history  # the interrupted epoch's record includes its steps before the crash
    own, other = model.state_dict(), resumed.state_dict()
    assert own.keys() == other.keys()
    for key in own:
        assert torch.equal(own[key], other[key]), key
    assert torch.equal(model.st_quantiles, resumed.st_quantiles)
    assert torch.equal(model.ae_quantiles, resumed.ae_quantiles)
    assert json.loads(state_files(tmp_path)[1].read_text())["step"] == STEPS  # saved again at the end


def test_resume_with_nothing_saved_starts_fresh(straight) -> None:
    model, report, folder = straight
    assert report.steps == STEPS and [h["step"] for h in report.history] == [4, STEPS]
    assert "resumed_from_step" not in report.extra and not any("resumed" in note for note in report.notes)
    weights, info = state_files(folder)
    assert json.loads(info.read_text())["step"] == STEPS
    saved = load_file(str(weights))
    assert torch.equal(saved["model.teacher_mean"], model.teacher_mean)  # the teacher statistics are saved
    assert not torch.equal(model.teacher_mean, torch.zeros_like(model.teacher_mean))


@pytest.mark.parametrize(("name", "data", "settings", "message"), [
    ("efficientad", batches(), {"max_steps": 8}, f"plan.max_steps: saved {STEPS}, this run 8"),
    ("efficientad-medium", batches(), {}, "config.size: saved 'small', this run 'medium'"),
    ("efficientad", batches([f"other{i}.png" for i in range(5)]), {}, "model.held_out: saved"),
    ("efficientad", batches([f"img{i}.png" for i in range(6)]), {}, "model.training_images: saved 5, this run 6"),
])
def test_a_mismatching_state_is_refused_with_advice(straight, name, data, settings, message) -> None:
    folder = straight[2]
    with pytest.raises(TrainingStateError, match=message) as error:
        fit(fresh(name), data, checkpoint_dir=folder, resume=True, **settings)
    assert f"or delete {folder} to start over" in str(error.value)


def test_a_state_of_another_trainer_is_refused(tmp_path) -> None:
    model = torch.nn.Linear(2, 2)
    save_training_state(tmp_path, model, torch.optim.SGD(model.parameters(), lr=0.1), None, {"epoch": 1, "step": 4})
    with pytest.raises(TrainingStateError, match="not written by the gradient trainer"):
        fit(fresh(), batches(), checkpoint_dir=tmp_path, resume=True)


def test_checkpoint_every_must_be_a_positive_step_count() -> None:
    with pytest.raises(ValueError, match="checkpoint_every must be a positive"):
        GradientTrainer(checkpoint_every=0)


def test_run_one_saves_the_state_in_the_run_folder_and_resumes_it(tmp_path) -> None:
    root = write_demo_dataset(tmp_path / "data", "weave", image_size=SIZE, n_train=5, n_test_normal=2,
                              n_test_anomalous=2)
    settings = {"root": root, "output_dir": tmp_path / "out", "pretrained": False, **TINY, "max_steps": 1,
                "write_maps": False, "device": "cpu", "resume": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        first = run_one("mvtec", "weave", "efficientad", **settings)
        weights, info = state_files(first.output_dir / "train_state")
        assert weights.is_file() and json.loads(info.read_text())["step"] == 1
        trained = load_file(str(first.output_dir / "model.safetensors"))
        again = run_one("mvtec", "weave", "efficientad", **settings)  # the saved state is complete: no step taken
    run = json.loads((again.output_dir / "results.json").read_text())["run"]
    assert any("resumed from step 1 of 1" in note for note in run["notes"])
    reloaded = load_file(str(again.output_dir / "model.safetensors"))
    for key, value in trained.items():
        assert torch.equal(reloaded[key], value), key
