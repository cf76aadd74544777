"""STFPM: the loss and map of the paper, a frozen teacher and a training student."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ad_core.training import TrainingPlan
from ad_kd.distillation import fuse_maps, normalized_distance
from ad_kd.stfpm import Stfpm, pyramid_loss


PLAN = TrainingPlan(total_steps=20, steps_per_epoch=20, num_epochs=1, max_steps=None)
SIZE = 64


@pytest.fixture(scope="module")
def model() -> Stfpm:
    torch.manual_seed(0)
    return Stfpm(pretrained=False)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def test_loss_matches_the_authors_formulation(model, images) -> None:
    with torch.no_grad():
        teacher, student = model.networks(images)
    mse = torch.nn.MSELoss(reduction="sum")
    expected = sum(0.5 / (t.shape[-1] * t.shape[-2]) * mse(F.normalize(t), F.normalize(s))
                   for t, s in zip(teacher, student))
    got = pyramid_loss(teacher, student)
    assert got > 0
    torch.testing.assert_close(got, expected)


def test_loss_and_map_vanish_when_the_student_is_the_teacher(images, as_batch) -> None:
    torch.manual_seed(0)
    twin = Stfpm(pretrained=False)
    twin.networks.student.load_state_dict(twin.networks.teacher.model.state_dict())
    twin.eval()
    with torch.no_grad():
        assert float(twin.training_step(as_batch(images), None)) < 1e-10
        twin.mark_fitted()
        assert float(twin.predict(images).anomaly_map.abs().max()) < 1e-10


def test_map_is_the_product_of_upsampled_layer_maps_and_score_its_max(model, images) -> None:
    model.mark_fitted()
    pred = model.predict(images)
    model.eval()  # the student's BatchNorm uses its running statistics, as in predict
    with torch.no_grad():
        teacher, student = model.networks(images)
    expected = torch.ones(len(images), SIZE, SIZE)
    for t, s in zip(teacher, student):
        layer = 0.5 * ((F.normalize(t) - F.normalize(s)) ** 2).sum(1, keepdim=True)
        expected = expected * F.interpolate(layer, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(pred.anomaly_map, expected)
    torch.testing.assert_close(pred.score, expected.flatten(1).max(1).values)
    summed = fuse_maps([normalized_distance(t, s) for t, s in zip(teacher, student)], (SIZE, SIZE), "sum")
    assert not torch.allclose(summed, expected)


def test_training_moves_the_student_only(images, train_steps) -> None:
    torch.manual_seed(0)
    model = Stfpm(pretrained=False)
    teacher_before = {k: v.clone() for k, v in model.networks.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in model.networks.student.state_dict().items()}
    optimizer = model.configure_optimizers(PLAN)
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["lr"] == 0.4 and optimizer.defaults["momentum"] == 0.9
    assert optimizer.defaults["weight_decay"] == 1e-4
    model.train()
    assert not model.networks.teacher.training and model.networks.student.training
    losses = train_steps(model, optimizer, images, 3)
    assert losses[-1] < losses[0]
    for key, value in model.networks.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    assert not any(p.requires_grad for p in model.networks.teacher.parameters())
    changed = [k for k, v in model.networks.student.state_dict().items() if not torch.equal(v, student_before[k])]
    assert any("running_mean" in k for k in changed) and any("conv" in k and "weight" in k for k in changed)


def test_unknown_fusion_is_refused() -> None:
    with pytest.raises(ValueError, match="fusion"):
        Stfpm(pretrained=False, fusion="max")
