"""Invertible building blocks shared by the flow models: an all-in-one affine coupling block and a
sequential container.

`AffineCouplingBlock` computes what FrEIA 0.2's `AllInOneBlock` computes (soft-clamped affine coupling,
an ActNorm-style per-channel global affine, a fixed random hard or soft channel permutation), so models
keep the behaviour of their reference implementations. It is written here rather than imported because
FrEIA's block modifies the subnet output in place (breaking the backward pass of subnets ending in an
operation that saves its output, such as Tanh), keeps lambdas that cannot be pickled, draws its
permutation from NumPy's global random state and stores it in a way safetensors refuses.

For an input x of C channels split into x1 (the first C - C//2) and x2 (the rest), a block computes

    a      = 0.1 * subnet(cat(x1, condition))            # [s, t], each C//2 channels
    s      = clamp * tanh(a_s)
    u      = cat(x1, x2 * exp(s) + a_t)
    y      = P (softplus_global(g) * u + b)             # P: permutation over channels
    log|J| = sum(s) + n_positions * sum(log softplus_global(g))

with softplus_global(g) = 0.1 * softplus(g, beta=0.5), initialised to `global_affine_init`.
Inputs are [N, C] vectors or [N, C, *spatial] maps; conditions have the input's shape except for channels.
Without autograd (scoring) a block computes the same map in fewer passes over memory, and `transform` skips
the log-determinant for models whose score reads only z.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ad_core.components.draws import seeded_generator

SubnetConstructor = Callable[[int, int], nn.Module]
"""Called as `constructor(in_channels, out_channels)`; returns the network predicting [s, t]."""


def random_rotation(channels: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-random rotation matrix (orthogonal, determinant +1), like scipy's special_ortho_group."""
    q, r = torch.linalg.qr(torch.randn(channels, channels, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.float().contiguous()


class AffineCouplingBlock(nn.Module):
    """One flow step: affine coupling, global affine and channel permutation (see the module docstring).

    Args:
        channels: channels of the input (dimension 1).
        subnet_constructor: builds the coupling subnet from (C - C//2 + condition_channels) to 2 * (C//2).
        condition_channels: channels of the condition concatenated to the subnet input (0: unconditional).
        clamp: the soft clamp alpha of the log-scale.
        global_affine_init: initial value of the per-channel global scale.
        soft_permutation: a random rotation instead of a random channel permutation.
        seed: seeds the random permutation, so equal seeds build equal flows.
    """

    def __init__(
        self,
        channels: int,
        subnet_constructor: SubnetConstructor,
        condition_channels: int = 0,
        clamp: float = 2.0,
        global_affine_init: float = 1.0,
        soft_permutation: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"a coupling block needs at least 2 channels, got {channels}")
        self.channels = int(channels)
        self.split = self.channels - self.channels // 2
        self.condition_channels = int(condition_channels)
        self.clamp = float(clamp)
        self.soft_permutation = bool(soft_permutation)
        # Pre-activation so that 0.1 * softplus(., beta=0.5) starts at global_affine_init.
        start = 2.0 * math.log(math.expm1(5.0 * global_affine_init))
        self.global_scale = nn.Parameter(torch.full((1, self.channels), start))
        self.global_offset = nn.Parameter(torch.zeros(1, self.channels))
        generator = seeded_generator(seed)
        if self.soft_permutation:
            self.register_buffer("rotation", random_rotation(self.channels, generator))
        else:
            index = torch.randperm(self.channels, generator=generator)
            self.register_buffer("perm_index", index)
            self.register_buffer("perm_inverse", torch.argsort(index))
        self.subnet = subnet_constructor(self.split + self.condition_channels, 2 * (self.channels - self.split))

    def _channel_view(self, param: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return param.view(1, self.channels, *([1] * (x.ndim - 2)))

    def _permute(self, x: torch.Tensor, reverse: bool) -> torch.Tensor:
        if not self.soft_permutation:
            return x.index_select(1, self.perm_inverse if reverse else self.perm_index)
        weight = self.rotation.t() if reverse else self.rotation
        if x.ndim == 2:
            return F.linear(x, weight)
        return torch.einsum("ij,bj...->bi...", weight, x)

    def _scale(self) -> torch.Tensor:
        return 0.1 * F.softplus(self.global_scale, beta=0.5)

    def _check(self, x: torch.Tensor, condition: torch.Tensor | None) -> None:
        if x.ndim < 2 or x.shape[1] != self.channels:
            raise ValueError(f"expected input [N, {self.channels}, ...], got {tuple(x.shape)}")
        if (condition is None) != (self.condition_channels == 0):
            raise ValueError(f"this block takes a condition of {self.condition_channels} channels"
                             if self.condition_channels else "this block is unconditional: pass no condition")

    def forward(
        self, x: torch.Tensor, condition: torch.Tensor | None = None, reverse: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Map x to y (or y back to x with `reverse=True`); returns (output, log|det J| per sample)."""
        self._check(x, condition)
        if not reverse and self._untracked():
            y, log_det = self._forward_without_grad(x, condition, with_log_det=True)
            return y, log_det
        scale = self._channel_view(self._scale(), x)
        offset = self._channel_view(self.global_offset, x)
        positions = x[0, 0].numel()
        global_log_det = positions * torch.log(self._scale()).sum()
        if reverse:
            x = (self._permute(x, reverse=True) - offset) / scale
        x1, x2 = x[:, : self.split], x[:, self.split :]
        coeffs = self.subnet(x1 if condition is None else torch.cat([x1, condition], 1))
        half = x2.shape[1]
        log_scale = self.clamp * torch.tanh(0.1 * coeffs[:, :half])
        shift = 0.1 * coeffs[:, half:]
        dims = tuple(range(1, x.ndim))
        if reverse:
            x2 = (x2 - shift) * torch.exp(-log_scale)
            return torch.cat([x1, x2], 1), -log_scale.sum(dims) - global_log_det
        # Fused multiply-adds: these maps are large, and every temporary costs an allocation and a pass.
        y = torch.cat([x1, torch.addcmul(shift, x2, torch.exp(log_scale))], 1)
        return self._permute(torch.addcmul(offset, y, scale), reverse=False), log_scale.sum(dims) + global_log_det

    def transform(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """The forward map alone (scoring that reads only the latent): without autograd, the scoring path
        without the log-determinant."""
        if not self._untracked():
            return self(x, condition)[0]
        self._check(x, condition)
        return self._forward_without_grad(x, condition, with_log_det=False)[0]

    @staticmethod
    def _untracked() -> bool:
        """No autograd and no graph capture (an ONNX export traces the differentiable path's plain operations;
        the in-place steps and `out=` writes of the scoring path do not trace into its graph)."""
        return not torch.is_grad_enabled() and not torch.jit.is_tracing()

    def _forward_without_grad(
        self, x: torch.Tensor, condition: torch.Tensor | None, with_log_det: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`forward`'s map where nothing is kept for a backward pass: the element-wise steps run in place on
        the subnet's fresh output and the global affine writes both halves straight into one output (no
        concatenation, no temporaries); the log-determinant is summed only when asked for."""
        x1, x2 = x[:, : self.split], x[:, self.split :]
        coeffs = self.subnet(x1 if condition is None else torch.cat([x1, condition], 1))
        half = x2.shape[1]
        log_scale = coeffs[:, :half].mul_(0.1).tanh_().mul_(self.clamp)
        log_det = None
        if with_log_det:
            positions = x[0, 0].numel()
            log_det = log_scale.sum(tuple(range(1, x.ndim))) + positions * torch.log(self._scale()).sum()
        u2 = log_scale.exp_().mul_(x2).add_(coeffs[:, half:], alpha=0.1)
        scale = self._channel_view(self._scale(), x)
        offset = self._channel_view(self.global_offset, x)
        y = torch.empty_like(x, memory_format=torch.contiguous_format)
        torch.addcmul(offset[:, : self.split], x1, scale[:, : self.split], out=y[:, : self.split])
        torch.addcmul(offset[:, self.split :], u2, scale[:, self.split :], out=y[:, self.split :])
        return self._permute(y, reverse=False), log_det


class SequentialFlow(nn.Module):
    """Invertible blocks applied in order; returns (z, summed log|det J| per sample).

    Every block receives the same condition (None for unconditional flows); `reverse=True` runs the
    blocks backwards, mapping z to x.
    """

    def __init__(self, blocks: Iterable[AffineCouplingBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(
        self, x: torch.Tensor, condition: torch.Tensor | None = None, reverse: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = x.new_zeros(x.shape[0])
        for block in reversed(self.blocks) if reverse else self.blocks:
            x, block_log_det = block(x, condition, reverse=reverse)
            log_det = log_det + block_log_det
        return x, log_det

    def transform(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """z alone, without gradients or log-determinants (scoring that reads only the latent)."""
        for block in self.blocks:
            x = block.transform(x, condition)
        return x
