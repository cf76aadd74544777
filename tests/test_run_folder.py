"""Run folders are written as a set and verified at load: deployable alone, tamper-evident, never half-replaced."""

from __future__ import annotations

import errno
import json
import os
import stat

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from ad_core import load_model, train
from ad_core.checkpoint import CheckpointError
from ad_core.cli import main
from ad_core.data import DemoDataset
from ad_core.run_folder import MANIFEST_NAME, LOCK_NAME, FileLock, RunFolderBusyError
from ad_core.settings import settings


def _run(**overrides):
    (result,) = train("demo", "weave", "tiny-ae", verbose=False, num_epochs=1, image_size=32, **overrides)
    return result


def _images():
    data = DemoDataset(category="weave", split="test", image_size=32)
    return torch.stack([data[i].image for i in range(4)])


def test_model_trained_from_pretrained_weights_loads_without_them(reliability_plugin, tiny_plugin, outputs,
                                                                  tmp_path, monkeypatch) -> None:
    backbones = tmp_path / "backbones"
    backbones.mkdir()
    torch.manual_seed(3)
    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, 2, 1))
    tensors = {k: v.contiguous() for k, v in encoder.state_dict().items()}
    save_file(tensors, str(backbones / "pre-ae-backbone.safetensors"))
    monkeypatch.setattr(settings, "backbone_dir", backbones)
    (run,) = train("demo", "weave", "pre-ae", verbose=False, image_size=32)
    assert json.loads((run.output_dir / "model.json").read_text())["pretrained"] is True
    trained = load_model(run.output_dir).predict(_images()).score
    (backbones / "pre-ae-backbone.safetensors").unlink()  # a machine that never saw the backbone file
    assert torch.equal(load_model(run.output_dir).predict(_images()).score, trained)


def test_flipped_weight_bytes_are_refused_naming_the_file(tiny_plugin, outputs) -> None:
    run = _run()
    weights = run.output_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # inside the tensor data: still a valid safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors.*SHA-256"):
        load_model(run.output_dir)


def test_edited_threshold_is_refused(tiny_plugin, outputs) -> None:
    run = _run()
    path = run.output_dir / "model.json"
    meta = json.loads(path.read_text())
    meta["threshold"]["value"] = 1e9
    path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="model.json was modified"):
        load_model(run.output_dir)


def test_files_of_two_runs_are_never_loaded_as_one(tiny_plugin, outputs, tmp_path) -> None:
    first = _run()
    second = _run(output_dir=tmp_path / "other", seed=1)
    (first.output_dir / "model.json").write_bytes((second.output_dir / "model.json").read_bytes())
    with pytest.raises(CheckpointError, match="inconsistent run folder"):
        load_model(first.output_dir)
    (second.output_dir / MANIFEST_NAME).unlink()  # as if killed between moving the files and the manifest
    with pytest.raises(CheckpointError, match="inconsistent run folder"):
        load_model(second.output_dir)


def test_a_failed_run_leaves_the_previous_one_intact_and_no_temporaries(tiny_plugin, outputs, monkeypatch) -> None:
    first = _run()
    before = {p.relative_to(first.output_dir): p.read_bytes() for p in first.output_dir.rglob("*") if p.is_file()}

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("ad_core.evaluation.plot_roc", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _run(seed=7)
    after = {p.relative_to(first.output_dir): p.read_bytes() for p in first.output_dir.rglob("*") if p.is_file()
             and "train_state" not in p.parts}
    assert after == {k: v for k, v in before.items() if "train_state" not in k.parts}
    leftovers = [p for p in outputs.rglob(".*") if ".staging-" in p.name or ".tmp" in p.name or p.name == LOCK_NAME]
    assert leftovers == []
    load_model(first.output_dir)


def test_outputs_follow_the_umask(tiny_plugin, outputs) -> None:
    old = os.umask(0o022)
    try:
        run = _run()
    finally:
        os.umask(old)
    for name in ("model.safetensors", "model.json", "results.json", MANIFEST_NAME):
        assert stat.S_IMODE((run.output_dir / name).stat().st_mode) == 0o644, name
    assert stat.S_IMODE((run.output_dir / "maps").stat().st_mode) == 0o755


def test_a_second_run_into_a_busy_folder_is_refused(tiny_plugin, outputs) -> None:
    folder = outputs / "demo" / "weave" / "tiny-ae"
    with FileLock(folder / LOCK_NAME, str(folder), "`adcore train` run"):
        with pytest.raises(RunFolderBusyError, match="in use by another"):
            _run()
        cli = CliRunner().invoke(main, ["train", "demo", "weave", "tiny-ae", "--epochs", "1", "--image-size", "32"])
        assert cli.exit_code == 1 and f"error: {folder} is in use by another `adcore train` run" in cli.output
    _run()  # released: the folder is usable again


def test_the_next_run_removes_what_a_killed_or_previous_run_left(tiny_plugin, outputs) -> None:
    first = _run()
    stale_staging = first.output_dir.parent / ".tiny-ae.staging-killed"
    (stale_staging / "maps").mkdir(parents=True)
    (stale_staging / "model.safetensors").write_bytes(b"half")
    stale_tmp = first.output_dir / "train_state" / ".train_state.safetensors.x1y2.tmp.safetensors"
    stale_tmp.parent.mkdir(exist_ok=True)
    stale_tmp.write_bytes(b"half")
    assert (first.output_dir / "maps").is_dir()
    _run(seed=5, write_maps=False)
    assert not stale_staging.exists() and not stale_tmp.exists()
    assert not (first.output_dir / "maps").exists()  # the previous run's files this run does not write go
    load_model(first.output_dir)
