"""The paper's teacher pretraining, offline: distil a backbone's patch features into a PDN over a folder of images.

The target (paper, Sec. 3.1 and appendix) is PatchCore's locally aware feature of a WideResNet-101 at layers 2
and 3, pooled to 384 channels, computed at twice the PDN's input size so that the stride-8 layer-2 grid has the
PDN's output size; targets are normalised per channel over the images, and the PDN regresses them with a mean
squared error (Adam, lr 1e-4, weight decay 1e-5, batch size 16, 60,000 iterations in the paper; the image folder
is ImageNet there). Images are turned grayscale with p=0.1 for both networks alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ad_core.components.backbone import BackboneConfig
from ad_core.components.draws import seeded_generator
from ad_core.components.patch_embedding import PatchEmbedder
from ad_core.data.images import IMAGE_SUFFIXES, read_image
from ad_core.io import atomic_path
from ad_core.settings import resolve_device, settings
from ad_core.training import seed_everything
from ad_core.training.gradient import check_finite
from ad_kd.efficientad.augment import grayscale
from ad_kd.efficientad.model import normalize_images
from ad_kd.efficientad.networks import OUT_CHANNELS, build_pdn

PRETRAIN_EMBED_DIM = 1024  # PatchCore's per-layer dimension before the final pooling


class ImageFiles(Dataset):
    """Every image under a folder, as [0,1] tensors at twice the PDN size (for the backbone) and the PDN size."""

    def __init__(self, folder: str | Path, image_size: int) -> None:
        root = Path(folder).expanduser()
        self.files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
        self.size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = read_image(self.files[index])
        big = image.resize((2 * self.size, 2 * self.size))
        small = image.resize((self.size, self.size))
        return tuple(torch.from_numpy(np.asarray(x, dtype=np.float32) / 255.0).permute(2, 0, 1) for x in (big, small))


class DistillationTarget(torch.nn.Module):
    """A frozen backbone's PatchCore features pooled to `channels`, resized to the PDN's grid when they differ."""

    def __init__(self, backbone: BackboneConfig, channels: int) -> None:
        super().__init__()
        self.backbone = backbone.frozen()
        self.embed = PatchEmbedder(self.backbone.channels, 3, PRETRAIN_EMBED_DIM, channels)
        self.channels = channels

    @torch.no_grad()
    def forward(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        flat, (h, w) = self.embed(self.backbone(normalize_images(images)))
        target = flat.view(images.shape[0], h, w, self.channels).permute(0, 3, 1, 2)
        if (h, w) != tuple(size):
            target = F.interpolate(target, size=size, mode="bilinear", align_corners=False)
        return target.contiguous()


def _batches(loader: DataLoader, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches; the same random grayscale (p=0.1) for the backbone's and the PDN's copy of an image."""
    while True:
        for big, small in loader:
            gray = (torch.rand(big.shape[0]) < 0.1).view(-1, 1, 1, 1)
            big = torch.where(gray, grayscale(big).expand_as(big), big)
            small = torch.where(gray, grayscale(small).expand_as(small), small)
            yield big.to(device), small.to(device)


def distill_teacher(
    images: str | Path,
    out: str | Path,
    size: str = "small",
    backbone: str = "wide_resnet101_2",
    layers: Sequence[str | int] = ("layer2", "layer3"),
    steps: int = 60_000,
    batch_size: int = 16,
    image_size: int = 256,
    lr: float = 1e-4,
    weight_decay: float = 1e-5,
    normalization_images: int = 10_000,
    pretrained: bool = True,
    weights_file: str | None = None,
    backbone_dir: str | None = None,
    device: str | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> Path:
    """Train a teacher PDN on a folder of images and write its weights (safetensors) to `out`."""
    from safetensors.torch import save_file

    seed_everything(seed)
    dev = resolve_device(device)
    data = ImageFiles(images, image_size)
    loader = DataLoader(data, batch_size=min(batch_size, len(data)), shuffle=True, drop_last=True,
                        num_workers=settings.num_workers, generator=seeded_generator(seed))
    config = BackboneConfig(backbone, layers, pretrained, weights_file, backbone_dir)
    target_net = DistillationTarget(config, OUT_CHANNELS).to(dev)
    pdn = build_pdn(size, OUT_CHANNELS, padding=True).to(dev)
    show = settings.progress if progress is None else progress
    batches = _batches(loader, dev)

    grid = tuple(pdn(torch.zeros(1, 3, image_size, image_size, device=dev)).shape[-2:])
    total, square, count = 0.0, 0.0, 0
    for big, _ in itertools.islice(batches, max(1, -(-min(normalization_images, len(data)) // loader.batch_size))):
        t = target_net(big, grid).double()
        total = total + t.sum((0, 2, 3))
        square = square + (t * t).sum((0, 2, 3))
        count += t.shape[0] * t.shape[2] * t.shape[3]
    mean = (total / count).float().view(1, -1, 1, 1)
    std = (square / count - (total / count) ** 2).clamp_min(1e-12).sqrt().float().view(1, -1, 1, 1)

    optimizer = torch.optim.Adam(pdn.parameters(), lr=lr, weight_decay=weight_decay)
    pdn.train()
    bar = tqdm(range(steps), desc="distilling teacher", unit="step", disable=not show, leave=False)
    for step in bar:
        big, small = next(batches)
        target = (target_net(big, grid) - mean) / std
        loss = ((pdn(normalize_images(small)) - target) ** 2).mean()
        check_finite(loss, 0, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.4g}")
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in pdn.state_dict().items()}
    meta = {"size": size, "backbone": backbone, "layers": ",".join(map(str, layers)), "steps": str(steps),
            "image_size": str(image_size), "images": str(len(data))}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return out
