"""UniNet (Wei et al., "UniNet: A Contrastive Learning-guided Unified Framework with Feature Selection for
Anomaly Detection", CVPR 2025).

Two teachers read layer1-3 of a ResNet: the source teacher is frozen; the target teacher starts as its copy and
trains at a tiny learning rate (1e-6), so it drifts towards the target domain. Both teachers' features, stacked
as one batch, pass through a one-class bottleneck (Reverse Distillation's, with UniNet's two-branch residual
block) and a reverse ResNet decoder (the student). The student's reconstructions of the target-teacher half are
compared with the source teacher's features and those of the source half with the target teacher's: six pairs.

Training: domain-related feature selection re-weights each student feature map per channel by a spatial softmax
of the paired teacher's map times (θ + its spatial mean), θ = min(sigmoid(θ_raw) + 0.5, 1) learnable per scale;
then per pair λ·(1 − cos) + (1 − λ)·contrastive + margin, where the contrastive term is the cross-entropy of each
student patch finding its own teacher patch among all the teacher's patches (cosine similarities / T) and the
margin term pushes that matching probability to `margin`. Two AdamW optimisers: student, bottleneck and
selection at 5e-3; the target teacher at 1e-6.

Inference: six maps 1 − cos(teacher, student) per position, upsampled (bilinear, corners aligned) and summed;
the weighted decision sets each image's score to the mean of the top k pixels of the Gaussian-smoothed (σ = 4)
map, with k = H·W·max(α·mean of the per-map maxima whose softmax is above average, β).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.plugin_api import (
    AnomalyModel,
    BackboneConfig,
    Batch,
    FrozenBackbone,
    StepContext,
    TrainingPlan,
    components,
    gaussian_blur,
)

LAYERS = ("layer1", "layer2", "layer3")


class DualBranchBlock(nn.Module):
    """UniNet's bottleneck residual block: the input's channel halves pass through two conv-BN-ReLU-conv-BN
    branches, are concatenated and expanded by a 1x1 convolution, plus the residual.

    The authors' code declares the second branch with 7x7 convolutions, then at initialisation replaces them with
    3x3 convolutions with a bias (a RepLKNet-style merge called before any training), so what trains, and what
    their checkpoints hold, is a second 3x3 branch with biases; that is built here.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 base_width: int = 64, *, expansion: int) -> None:
        super().__init__()
        width = planes * base_width // 64
        half_in, half = inplanes // 2, width // 2
        self.plain = self._branch(half_in, half, stride, bias=False)
        self.biased = self._branch(half_in, half, stride, bias=True)
        self.expand = nn.Conv2d(width, planes * expansion, 1, bias=False)
        self.bn = nn.BatchNorm2d(planes * expansion)
        self.downsample = downsample

    @staticmethod
    def _branch(cin: int, cout: int, stride: int, bias: bool) -> nn.Sequential:
        first = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)
        second = nn.Conv2d(cout, cout, 3, padding=1, bias=bias)
        for conv in (first, second):
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)  # the merge's bias: BatchNorm's shift of a fresh layer, zero
        return nn.Sequential(first, nn.BatchNorm2d(cout), nn.ReLU(inplace=True), second, nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        out = self.bn(self.expand(torch.cat([self.plain(a), self.biased(b)], dim=1)))
        identity = self.downsample(x) if self.downsample is not None else x
        return F.relu(out + identity)


class TargetTeacher(nn.Module):
    """A trainable copy of the source teacher's feature extractor (BatchNorm statistics follow the data)."""

    def __init__(self, source: FrozenBackbone) -> None:
        super().__init__()
        self.model = copy.deepcopy(source.model).requires_grad_(True)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(images))


class FeatureSelection(nn.Module):
    """Domain-related feature selection: the student's map of each channel, weighted by where the paired
    teacher's channel peaks (spatial softmax) times θ plus the channel's mean; θ learnable per scale."""

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        self.thetas = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1)) for c in channels])

    def forward(self, students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        selected = []
        for i, (student, teacher) in enumerate(zip(students, teachers)):
            theta = torch.clamp(torch.sigmoid(self.thetas[i % len(self.thetas)]) + 0.5, max=1.0)
            selected.append(student * select_weights(teacher, theta))
        return selected


def select_weights(teacher: torch.Tensor, theta: torch.Tensor | float) -> torch.Tensor:
    """softmax over positions of each channel of `teacher` [B,C,H,W], times (θ + the channel's spatial mean)."""
    b, c, h, w = teacher.shape
    flat = teacher.reshape(b, c, h * w)
    weights = torch.softmax(flat - flat.amax(dim=-1, keepdim=True), dim=-1).reshape(b, c, h, w)
    return weights * (theta + teacher.mean(dim=(-2, -1), keepdim=True))


def pair_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, lambda_weight: float,
              margin: float) -> torch.Tensor:
    """One scale's λ·mean(1 − cos) + (1 − λ)·mean(−log p_ii) + mean(relu(margin − p_ii)), where p_ij is the softmax
    over teacher patches j of cos(student patch i, teacher patch j) / T."""
    s = F.normalize(student.flatten(2).transpose(1, 2), dim=2)  # [B, HW, C]
    t = F.normalize(teacher.flatten(2).transpose(1, 2), dim=2)
    cosine = 1 - F.cosine_similarity(s, t, dim=2)
    matching = torch.softmax(s @ t.transpose(1, 2) / temperature, dim=2).diagonal(dim1=1, dim2=2)
    contrastive = -torch.log(matching + 1e-8)
    return (lambda_weight * cosine.mean() + (1 - lambda_weight) * contrastive.mean()
            + F.relu(margin - matching).mean())


def uninet_loss(students: Sequence[torch.Tensor], teachers: Sequence[torch.Tensor], temperature: float,
                lambda_weight: float, margin: float) -> torch.Tensor:
    """The sum of `pair_loss` over the student-teacher pairs."""
    total = students[0].new_zeros(())
    for student, teacher in zip(students, teachers):
        total = total + pair_loss(student, teacher, temperature, lambda_weight, margin)
    return total


def decision_weights(maps: Sequence[torch.Tensor], alpha: float, beta: float) -> torch.Tensor:
    """Each image's top-k fraction: max(α · mean of the map maxima whose softmax exceeds the mean softmax, β)."""
    peaks = torch.stack([m.flatten(1).amax(dim=1) for m in maps], dim=1)  # [B, maps]
    probs = torch.softmax(peaks, dim=1)
    kept = (probs > probs.mean(dim=1, keepdim=True)).to(peaks.dtype)
    mean_kept = (peaks * kept).sum(dim=1) / kept.sum(dim=1).clamp(min=1)  # none kept (all equal): β decides
    return torch.clamp(mean_kept * alpha, min=beta)


def weighted_decision(maps: Sequence[torch.Tensor], size: tuple[int, int], alpha: float, beta: float,
                      sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores [B], map [B,H,W]): the summed upsampled maps, and the mean of each image's top k pixels of that
    map smoothed with a Gaussian of `sigma`, k = H·W·`decision_weights` (at least one pixel)."""
    amap = sum(F.interpolate(m.unsqueeze(1), size=size, mode="bilinear", align_corners=True)[:, 0] for m in maps)
    smooth = gaussian_blur(amap, sigma).flatten(1)
    counts = (decision_weights(maps, alpha, beta) * smooth.shape[1]).long().clamp(min=1)
    scores = torch.stack([row.topk(int(k)).values.mean() for row, k in zip(smooth, counts)])
    return scores, amap


class UniNet(AnomalyModel):
    """Source and target teachers, bottleneck, student and feature selection; the core's gradient trainer fits it."""

    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        pretrained: bool = True,
        weights_file: str | None = None,
        backbone_dir: str | None = None,
        temperature: float = 2.0,
        lambda_weight: float = 0.7,
        margin: float = 1.0,
        feature_selection: bool = True,
        lr: float = 5e-3,
        target_lr: float = 1e-6,
        weight_decay: float = 1e-5,
        alpha: float = 0.01,
        beta: float = 3e-5,
        sigma: float = 4.0,
        bottleneck_base_width: int | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature!r}")
        if not 0.0 <= lambda_weight <= 1.0:
            raise ValueError(f"lambda_weight must be in [0, 1], got {lambda_weight!r}")
        if alpha <= 0 or not 0 < beta <= 1:
            raise ValueError(f"alpha must be positive and beta in (0, 1] (fractions of the map), got {alpha!r}, "
                             f"{beta!r}")
        block, depths, base_width = components.resnet_layout(backbone)
        decoder_block = components.DECODER_BLOCKS[block]
        expansion = decoder_block.expansion
        self.source = BackboneConfig(backbone, LAYERS, pretrained, weights_file, backbone_dir).frozen()
        expected = [64 * expansion, 128 * expansion, 256 * expansion]
        if self.source.channels != expected:
            raise ValueError(f"{backbone}: teacher channels {self.source.channels}, expected {expected}")
        self.target = TargetTeacher(self.source)
        width = base_width if bottleneck_base_width is None else int(bottleneck_base_width)
        self.bottleneck = components.OneClassBottleneck(functools.partial(DualBranchBlock, expansion=expansion),
                                                        expansion, depths[3], width)
        self.student = components.ReverseDecoder(decoder_block, depths[:3], base_width)
        components.init_weights(self.bottleneck)
        components.init_weights(self.student)
        self.selection = FeatureSelection(self.source.channels) if feature_selection else None
        self.temperature, self.lambda_weight, self.margin = float(temperature), float(lambda_weight), float(margin)
        self.lr, self.target_lr, self.weight_decay = float(lr), float(target_lr), float(weight_decay)
        self.alpha, self.beta, self.sigma = float(alpha), float(beta), float(sigma)

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(teachers, students): [source layer1-3, target layer1-3] and the student's reconstructions paired with
        them (from the target-teacher half of the stacked batch for the source, and the other way round)."""
        source = self.source(images)
        target = self.target(images)
        decoded = self.student(self.bottleneck([torch.cat([t, s]) for t, s in zip(target, source)]))
        n = images.shape[0]
        teachers = [*source, *target]
        students = [d[:n] for d in decoded] + [d[n:] for d in decoded]
        if any(t.shape != s.shape for t, s in zip(teachers, students)):
            raise ValueError(f"UniNet needs image sides that are multiples of 32 (the student doubles the "
                             f"bottleneck's grid three times); got {tuple(images.shape[-2:])}")
        return teachers, students

    def training_step(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        teachers, students = self(batch.image)
        if self.selection is not None:
            students = self.selection(students, teachers)
        return uninet_loss(students, teachers, self.temperature, self.lambda_weight, self.margin)

    def configure_optimizers(self, plan: TrainingPlan) -> list[torch.optim.Optimizer]:
        """The authors' two AdamW optimisers: student, bottleneck and selection; the target teacher."""
        learned = [*self.student.parameters(), *self.bottleneck.parameters()]
        if self.selection is not None:
            learned += list(self.selection.parameters())
        return [torch.optim.AdamW(learned, lr=self.lr, betas=(0.9, 0.999), weight_decay=self.weight_decay),
                torch.optim.AdamW(self.target.parameters(), lr=self.target_lr, betas=(0.9, 0.999),
                                  weight_decay=self.weight_decay)]

    def compute(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        teachers, students = self(images)
        maps = [1 - F.cosine_similarity(t, s, dim=1) for t, s in zip(teachers, students)]
        return weighted_decision(maps, tuple(images.shape[-2:]), self.alpha, self.beta, self.sigma)
