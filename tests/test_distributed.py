"""Training under torchrun: 2 gloo processes on the CPU (loopback) against the single-process run.

One `torchrun --nproc_per_node 2 -m ad_core.cli train` runs PaDiM, PatchCore and a tiny gradient model (no batch
norm, so the same global batch gives the same gradient) on a demo category; the same models are then trained in
this process. PaDiM's statistics and the gradient model's weights must match; PatchCore's bank is the union of the
ranks' coresets, of the single-process size, and covers the single-process bank within a stated factor.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from ad_core.training.distributed import ShardedBatchSampler, World
from installed_plugin import install_test_plugin

TESTS = Path(__file__).parent
# grad_clip: the gradient model clips every step, so clipping must see the averaged (global-batch) gradient
ARGS = ["--image-size", "32", "--set", "pretrained=false", "--set", "write_maps=false", "--set", "grad_clip=0.05"]
MODELS = "padim,patchcore-r18,tiny-ae,tiny-ae-unseeded"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import ad_core.plugins
    from ad_core.cli import main

    root = tmp_path_factory.mktemp("ddp")
    install_test_plugin(root / "plugin", "ad-tiny-test", "tiny_plugin:TinyPlugin")  # tests/ is on PYTHONPATH
    env = {**os.environ, "ADCORE_PROGRESS": "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root / "plugin"), str(TESTS), os.environ.get("PYTHONPATH")]))}
    env.pop("ADCORE_LOAD_PLUGINS", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), "-m", "ad_core.cli", "train", "demo", "disc", MODELS,
               "--output-dir", str(root / "ddp"), *ARGS]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with pytest.MonkeyPatch.context() as mp:
        for key in ("PYTHONPATH", "ADCORE_PROGRESS"):
            mp.setenv(key, env[key])
        mp.syspath_prepend(str(root / "plugin"))
        mp.setattr(ad_core.plugins, "_REGISTRY", None)
        from click.testing import CliRunner

        single = CliRunner().invoke(main, ["train", "demo", "disc", MODELS, "--output-dir", str(root / "one"), *ARGS])
        assert single.exit_code == 0, single.output
    ad_core.plugins._REGISTRY = None
    return SimpleNamespace(root=root, stdout=done.stdout)


def _weights(root: Path, model: str) -> dict[str, torch.Tensor]:
    return load_file(str(root / "demo" / "disc" / model / "model.safetensors"))


def test_rank_0_writes_every_output_and_speaks_once(runs) -> None:
    for model in MODELS.split(","):
        assert (runs.root / "ddp" / "demo" / "disc" / model / "results.json").is_file()
    assert runs.stdout.count("outputs written to") == 4  # rank 1 printed nothing


def test_padim_statistics_equal_the_single_process_ones(runs) -> None:
    ddp, one = _weights(runs.root / "ddp", "padim"), _weights(runs.root / "one", "padim")
    mean_key = next(k for k in one if k.endswith("model.mean"))
    inv_key = next(k for k in one if k.endswith("model.inv_covariance"))
    torch.testing.assert_close(ddp[mean_key], one[mean_key], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ddp[inv_key], one[inv_key], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("model", ["tiny-ae", "tiny-ae-unseeded"])
def test_gradient_model_reaches_the_single_process_weights(runs, model) -> None:
    """`tiny-ae-unseeded` starts from other weights on rank 1: rank 0's, broadcast at the start, must win."""
    ddp, one = _weights(runs.root / "ddp", model), _weights(runs.root / "one", model)
    trained = [k for k in one if ".encoder." in k or ".decoder." in k]
    assert trained
    for key in trained:
        torch.testing.assert_close(ddp[key], one[key], rtol=1e-4, atol=1e-5)


def test_patchcore_bank_is_the_union_of_the_ranks_coresets(runs) -> None:
    ddp, one = _weights(runs.root / "ddp", "patchcore-r18"), _weights(runs.root / "one", "patchcore-r18")
    key = next(k for k in one if k.endswith("memory_bank"))
    assert abs(len(ddp[key]) - len(one[key])) <= 2  # each rank keeps coreset_ratio of its share
    # Bound (docs/architecture.md): every single-process bank item, itself a training patch, lies within the
    # union's covering radius; measured against the single-process bank's own spread it stays small.
    cover = torch.cdist(one[key].float(), ddp[key].float()).amin(1).max()
    spread = torch.cdist(one[key].float(), one[key].float()).fill_diagonal_(float("inf")).amin(1).max()
    assert cover <= 2 * spread


@pytest.mark.parametrize("length,batch_size", [(10, 4), (9, 4), (8, 4)])
def test_sharded_batches_split_the_single_process_batches(length, batch_size) -> None:
    data = list(range(length))
    single = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(3))
    expected = [b.tolist() for epoch in range(2) for b in single]  # two epochs: the generator's state carries
    shards = []
    for rank in range(2):
        generator = torch.Generator().manual_seed(3)
        sampler = ShardedBatchSampler(length, batch_size, True, generator, World(rank, 2, rank))
        loader = DataLoader(data, batch_sampler=sampler, generator=generator)
        shards.append([b.tolist() for epoch in range(2) for b in loader])
        assert len(loader) == len(shards[rank]) // 2
    kept = [b for b in expected if len(b) >= 2]  # a last batch of 1 image cannot feed 2 ranks: dropped
    assert [sorted(a + b) for a, b in zip(*shards)] == [sorted(b) for b in kept]
    assert all(a == b[0::2] and c == b[1::2] for a, c, b in zip(*shards, kept))


def test_a_batch_smaller_than_the_world_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="batch_size 1 is smaller than the 2 processes"):
        ShardedBatchSampler(10, 1, False, None, World(0, 2, 0))


def test_world_from_env(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert World.from_env() is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    world = World.from_env()
    assert world == World(2, 4, 0) and not world.is_main
    assert world.device(torch.device("cuda")) == torch.device("cuda", 0)
