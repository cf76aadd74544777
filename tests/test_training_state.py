"""The shared training state: a round trip restores model, optimiser, scheduler and the torch, Python and NumPy
generators; the safetensors file is the truth when the readable record is stale; another model's state is a
clear error."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from ad_core.training.state import (
    TrainingStateError,
    load_training_state,
    read_training_meta,
    save_training_state,
    state_files,
)


def trained(seed: int = 0, width: int = 3):
    torch.manual_seed(seed)
    model = torch.nn.Linear(width, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(4, width)).pow(2).mean().backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def test_round_trip_restores_everything(tmp_path) -> None:
    model, optimizer, scheduler = trained()
    save_training_state(tmp_path, model, optimizer, scheduler, {"step": 3, "note": "x"})
    expected_draw = (torch.rand(3), random.random(), np.random.rand())
    other, other_opt, other_sched = trained(seed=1)
    assert load_training_state(tmp_path, other, other_opt, other_sched) == {"step": 3, "note": "x"}
    draw = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(draw[0], expected_draw[0]) and draw[1:] == expected_draw[1:]
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    for slot in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(optimizer.state[model.weight][slot], other_opt.state[other.weight][slot])
    assert other_sched.state_dict() == scheduler.state_dict()


def test_nothing_saved_is_none(tmp_path) -> None:
    model, optimizer, scheduler = trained()
    assert read_training_meta(tmp_path) is None and read_training_meta(None) is None
    assert load_training_state(tmp_path, model, optimizer, scheduler) is None


def test_the_tensors_file_is_the_truth_when_the_record_is_stale(tmp_path) -> None:
    """A run killed between the two writes leaves tensors and record of different steps: the tensors' win."""
    model, optimizer, scheduler = trained()
    save_training_state(tmp_path, model, optimizer, scheduler, {"step": 3})
    _, info = state_files(tmp_path)
    info.write_text(json.dumps({**json.loads(info.read_text()), "step": 99}))
    assert read_training_meta(tmp_path) == {"step": 3}


def test_another_models_state_is_a_clear_error(tmp_path) -> None:
    save_training_state(tmp_path, *trained(), {"step": 3})
    with pytest.raises(TrainingStateError, match=f"another model.*delete {tmp_path} to start over"):
        load_training_state(tmp_path, *trained(width=5))


def test_reserved_meta_keys_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        save_training_state(tmp_path, *trained(), {"schedulers": 1})
