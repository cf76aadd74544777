"""Training under `torchrun`: one process per device, joined by torch.distributed (gloo on CPU, NCCL on GPU).

Why not `DistributedDataParallel` itself: a model's `training_step` is a hook, not its `forward`, and may step
several optimisers by hand (GANomaly, EfficientAD ...), so the trainer averages the gradients with the same
collective DDP uses (`all_reduce`) right before each optimiser step. Each process takes its share of every global
batch (the batch of the single-process run, split across ranks), so the batch an optimiser step sees, and for
mean-reduced losses its gradient, is the single-process one. Memory-bank models merge their statistics through
their `merge_distributed` hook. Rank 0 writes every output; the other ranks write nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class World:
    """This process's place among the `size` processes `torchrun` started."""

    rank: int
    size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> World | None:
        """The world `torchrun` describes in the environment, or None for a single process."""
        size = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if size <= 1:
            return None
        return cls(rank=int(os.environ["RANK"]), size=size, local_rank=int(os.environ.get("LOCAL_RANK", 0)))

    def device(self, requested: torch.device) -> torch.device:
        """Each process on its own GPU (`LOCAL_RANK`); CPU processes share the CPU."""
        return torch.device("cuda", self.local_rank) if requested.type == "cuda" else requested

    def join(self, device: torch.device) -> None:
        """Join the process group (once): NCCL for GPUs, gloo on the CPU."""
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if dist.get_world_size() != self.size:
            raise RuntimeError(f"the process group has {dist.get_world_size()} processes, WORLD_SIZE says "
                               f"{self.size}")

    def leave(self) -> None:
        """Wait for every rank (rank 0 evaluates and writes after the others are done training), then leave the
        process group, so no process exits with gloo or NCCL still running (that aborts it)."""
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    # -- collectives ------------------------------------------------------------------------------
    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over ranks, in place (and returned)."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's values everywhere, in place (and returned); the tensor must be contiguous."""
        dist.broadcast(tensor, 0)
        return tensor

    def sum_int(self, value: int, device: torch.device) -> int:
        return int(self.sum(torch.tensor([value], dtype=torch.int64, device=device)).item())

    def mean_scalar(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar over ranks (a NaN on any rank gives NaN on every rank)."""
        return self.sum(value.detach().float().reshape(1).clone())[0] / self.size

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers everywhere, so every rank starts from the same weights."""
        with torch.no_grad():
            for tensor in module.state_dict(keep_vars=True).values():
                if isinstance(tensor, torch.Tensor) and tensor.numel():
                    data = tensor.data if tensor.is_contiguous() else tensor.data.contiguous()
                    dist.broadcast(data, 0)
                    if data is not tensor.data:
                        tensor.data.copy_(data)

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Floating buffers (batch-norm running statistics) averaged over ranks at the end of a fit."""
        with torch.no_grad():
            for buffer in module.buffers():
                if buffer.is_floating_point() and buffer.numel():
                    buffer.copy_(self.sum(buffer.detach().clone()) / self.size)

    def average_gradients(self, params: Iterable[torch.nn.Parameter], weight: float) -> None:
        """Each rank's gradient times `weight` (its share of the global batch), summed over ranks."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads]) * weight  # one collective for all of them
        self.sum(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def gather_rows(self, rows: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's [n_r, ...] tensor (n_r may differ), in rank order, on every rank."""
        sizes = [torch.zeros(1, dtype=torch.int64, device=rows.device) for _ in range(self.size)]
        dist.all_gather(sizes, torch.tensor([len(rows)], dtype=torch.int64, device=rows.device))
        largest = int(max(s.item() for s in sizes))
        padded = torch.zeros((largest, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
        padded[:len(rows)] = rows
        parts = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded)
        return [part[:int(size.item())] for part, size in zip(parts, sizes)]


class ShardedBatchSampler(Sampler[list[int]]):
    """Each rank's share of the single-process run's batches: the same order (same generator), every global batch
    split across ranks by position (`batch[rank::size]`). A last batch smaller than the world is dropped on
    every rank, so no rank waits for a collective the others never reach."""

    def __init__(self, length: int, batch_size: int, shuffle: bool, generator: torch.Generator | None,
                 world: World) -> None:
        if batch_size < world.size:
            raise ValueError(f"batch_size {batch_size} is smaller than the {world.size} processes: each needs at "
                             "least one image of every batch (the batch size is the global one)")
        self.length, self.batch_size, self.shuffle = int(length), int(batch_size), bool(shuffle)
        self.generator, self.world = generator, world

    def __iter__(self) -> Iterator[list[int]]:
        order = list(range(self.length))
        if self.shuffle:
            order = torch.randperm(self.length, generator=self.generator).tolist()
            # RandomSampler draws one more permutation when a pass ends: the generator then stands where the
            # single-process loader's would, so later epochs (and a resume) see the same batches.
            torch.randperm(self.length, generator=self.generator)
        for start in range(0, self.length, self.batch_size):
            batch = order[start:start + self.batch_size]
            if len(batch) < self.world.size:
                return
            yield batch[self.world.rank::self.world.size]

    def __len__(self) -> int:
        full, rest = divmod(self.length, self.batch_size)
        return full + (1 if rest >= self.world.size else 0)
