"""UniNet's pieces against direct computation: the loss, the feature selection, the weighted decision, the
teacher/student pairing and the two optimisers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from ad_foundation.uninet import (
    DualBranchBlock,
    FeatureSelection,
    UniNet,
    decision_weights,
    pair_loss,
    select_weights,
    uninet_loss,
    weighted_decision,
)

from ad_core.plugin_api import TrainingPlan, gaussian_blur, normal_batch

PLAN = TrainingPlan(total_steps=1, steps_per_epoch=1, num_epochs=1, max_steps=None)


@pytest.fixture(scope="module")
def r18() -> UniNet:
    torch.manual_seed(0)
    return UniNet(backbone="resnet18", pretrained=False).eval()


def _direct_pair_loss(s: torch.Tensor, t: torch.Tensor, temperature: float, lam: float, margin: float) -> float:
    """The loss written out patch by patch, in float64."""
    b, c, h, w = s.shape
    total_cos = total_con = total_margin = 0.0
    for n in range(b):
        sp = [s[n, :, i // w, i % w].double() for i in range(h * w)]
        tp = [t[n, :, i // w, i % w].double() for i in range(h * w)]
        for i in range(h * w):
            cos = [float(sp[i] @ tp[j] / (sp[i].norm() * tp[j].norm())) for j in range(h * w)]
            p_ii = math.exp(cos[i] / temperature) / sum(math.exp(x / temperature) for x in cos)
            total_cos += 1 - cos[i]
            total_con += -math.log(p_ii + 1e-8)
            total_margin += max(margin - p_ii, 0.0)
    count = b * h * w
    return lam * total_cos / count + (1 - lam) * total_con / count + total_margin / count


@pytest.mark.parametrize("temperature", [0.1, 2.0])
def test_pair_loss_matches_the_patchwise_formula(temperature: float) -> None:
    torch.manual_seed(1)
    s, t = torch.randn(2, 5, 3, 2), torch.randn(2, 5, 3, 2)
    got = float(pair_loss(s, t, temperature, 0.7, 1.0))
    assert got == pytest.approx(_direct_pair_loss(s, t, temperature, 0.7, 1.0), rel=1e-5)


def test_temperature_and_lambda_change_the_loss_and_pairs_add_up() -> None:
    torch.manual_seed(2)
    s, t = [torch.randn(1, 4, 2, 2) for _ in range(2)], [torch.randn(1, 4, 2, 2) for _ in range(2)]
    total = uninet_loss(s, t, 2.0, 0.7, 1.0)
    assert float(total) == pytest.approx(float(pair_loss(s[0], t[0], 2.0, 0.7, 1.0) + pair_loss(s[1], t[1], 2.0, 0.7, 1.0)))
    assert float(uninet_loss(s, t, 0.1, 0.7, 1.0)) != pytest.approx(float(total))
    assert float(uninet_loss(s, t, 2.0, 1.0, 0.0)) == pytest.approx(
        sum(float((1 - F.cosine_similarity(a, b, dim=1)).mean()) for a, b in zip(s, t)), rel=1e-6)


def test_select_weights_is_a_spatial_softmax_times_theta_plus_mean() -> None:
    torch.manual_seed(3)
    teacher = torch.randn(2, 3, 4, 5)
    got = select_weights(teacher, 0.75)
    for n in range(2):
        for c in range(3):
            x = teacher[n, c].double()
            expected = torch.exp(x) / torch.exp(x).sum() * (0.75 + x.mean())
            torch.testing.assert_close(got[n, c].double(), expected, rtol=1e-5, atol=1e-7)


def test_feature_selection_uses_one_theta_per_scale_for_both_teachers() -> None:
    selection = FeatureSelection([2, 3])
    students = [torch.ones(1, 2, 2, 2), torch.ones(1, 3, 2, 2), torch.ones(1, 2, 2, 2), torch.ones(1, 3, 2, 2)]
    teachers = [torch.randn(*s.shape) for s in students]
    # At zero, theta = min(sigmoid(0) + 0.5, 1) = 1.
    for out, s, t in zip(selection(students, teachers), students, teachers):
        torch.testing.assert_close(out, s * select_weights(t, 1.0))
    with torch.no_grad():
        selection.thetas[1].fill_(-1e4)  # the second scale's theta falls to its floor, 0.5
    out = selection(students, teachers)
    torch.testing.assert_close(out[3], students[3] * select_weights(teachers[3], 0.5))
    torch.testing.assert_close(out[2], students[2] * select_weights(teachers[2], 1.0))


def test_decision_weights_keep_the_maxima_above_the_mean_softmax() -> None:
    maps = [torch.full((2, 4, 4), v) for v in (0.1, 0.2, 0.9, 1.0)]
    maps[3][1] = 0.1  # second image: maxima 0.1, 0.2, 0.9, 0.1 -> only 0.9 is above the mean softmax
    weights = decision_weights(maps, alpha=0.01, beta=3e-5)
    peaks = [torch.tensor([0.1, 0.2, 0.9, 1.0]), torch.tensor([0.1, 0.2, 0.9, 0.1])]
    for got, p in zip(weights, peaks):
        probs = torch.softmax(p, 0)
        kept = p[probs > probs.mean()]
        assert float(got) == pytest.approx(max(float(kept.mean()) * 0.01, 3e-5))
    tiny = decision_weights([m * 1e-6 for m in maps], alpha=0.01, beta=3e-5)
    assert torch.equal(tiny, torch.full((2,), 3e-5))  # beta is the floor


def test_weighted_decision_scores_the_top_k_of_the_smoothed_summed_map() -> None:
    torch.manual_seed(4)
    maps = [torch.rand(2, 4, 4), torch.rand(2, 2, 2)]
    scores, amap = weighted_decision(maps, (16, 16), alpha=0.5, beta=3e-5, sigma=1.0)
    expected_map = sum(F.interpolate(m[:, None], size=(16, 16), mode="bilinear", align_corners=True)[:, 0]
                       for m in maps)
    torch.testing.assert_close(amap, expected_map)
    smooth = gaussian_blur(expected_map, 1.0).flatten(1)
    for n, w in enumerate(decision_weights(maps, 0.5, 3e-5)):
        k = int(256 * float(w))
        assert 1 < k < 256
        assert float(scores[n]) == pytest.approx(float(smooth[n].sort(descending=True).values[:k].mean()), rel=1e-6)


def test_students_reconstruct_the_other_teacher(r18: UniNet) -> None:
    """The student half decoded from the target teacher's features pairs with the source teacher, and the
    other way round; the teachers are [source layer1-3, target layer1-3]."""
    torch.manual_seed(5)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        r18.target.model.conv1.weight.mul_(1.5)  # the target teacher has drifted
        teachers, students = r18(images)
        source, target = r18.source(images), r18.target(images)
        decoded = r18.student(r18.bottleneck([torch.cat([t, s]) for t, s in zip(target, source)]))
    for got, want in zip(teachers, [*source, *target]):
        torch.testing.assert_close(got, want)
    assert not torch.allclose(source[0], target[0])
    for got, want in zip(students, [d[:2] for d in decoded] + [d[2:] for d in decoded]):
        torch.testing.assert_close(got, want)
    assert [s.shape[1] for s in students] == [64, 128, 256, 64, 128, 256]


def test_two_adamw_optimisers_source_frozen_target_trains(r18: UniNet) -> None:
    model = UniNet(backbone="resnet18", pretrained=False)
    student, target = model.configure_optimizers(PLAN)
    assert isinstance(student, torch.optim.AdamW) and isinstance(target, torch.optim.AdamW)
    assert student.defaults["lr"] == 5e-3 and target.defaults["lr"] == 1e-6
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    assert ids(target.param_groups[0]["params"]) == ids(model.target.parameters())
    assert ids(model.selection.parameters()) <= ids(student.param_groups[0]["params"])
    assert not ids(model.source.parameters()) & (ids(student.param_groups[0]["params"]) | ids(model.target.parameters()))
    model.train()
    assert model.target.training and not model.source.model.training  # the source teacher never trains
    source_before = [p.clone() for p in model.source.parameters()]
    target_before = [p.clone() for p in model.target.parameters()]
    images = torch.rand(2, 3, 32, 32)
    loss = model.training_step(normal_batch(images), None)
    loss.backward()
    student.step()
    target.step()
    assert all(torch.equal(a, b) for a, b in zip(source_before, model.source.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(target_before, model.target.parameters()))


def test_dual_branch_block_second_branch_has_zero_initial_biases() -> None:
    block = DualBranchBlock(8, 4, base_width=64, expansion=2)
    assert block.plain[0].bias is None and block.plain[3].bias is None
    assert torch.equal(block.biased[0].bias, torch.zeros(2)) and torch.equal(block.biased[3].bias, torch.zeros(2))
    assert block(torch.rand(1, 8, 4, 4)).shape == (1, 8, 4, 4)


def test_clear_errors_for_bad_settings_and_image_sides(r18: UniNet) -> None:
    with pytest.raises(ValueError, match="temperature"):
        UniNet(backbone="resnet18", pretrained=False, temperature=0)
    with pytest.raises(ValueError, match="lambda_weight"):
        UniNet(backbone="resnet18", pretrained=False, lambda_weight=1.5)
    with pytest.raises(ValueError, match="multiples of 32"):
        with torch.no_grad():
            r18(torch.rand(1, 3, 48, 48))
