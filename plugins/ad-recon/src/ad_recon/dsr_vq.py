"""DSR's VQ stage outside a DSR fit: loading its weights from a file, and training it offline on a folder of images.

The paper pretrains the dual-subspace VQ-VAE on ImageNet and keeps it frozen while DSR trains. Here it is either
read from a file (`vq_weights=PATH`: the authors' `vq_model_pretrained_128_4096.pckl`, read with
`torch.load(weights_only=True)`, or a `.safetensors` file in our layout as `adcore dsr-train-vq` writes it), or
trained by that command: image reconstruction MSE + the commitment losses of both codebooks (cost 0.25), the
codebooks moved by exponential moving averages (decay 0.99), Adam (lr 1e-3), as the VQ-VAE code the authors name as
their quantiser's source (zalandoresearch/pytorch-vq-vae); the codebooks start as feature vectors of the first batch
(with N(0, 1) codes an untrained encoder's small features all fall to one code, and the others never move).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ad_core.plugin_api import MissingWeightsError
from ad_core.plugin_api import components as C
from ad_recon.dsr_networks import DualSubspaceVQ, vq_state_from_authors

RANDOM = "random"  # the name that opts into an untrained VQ stage


class VQWeightsError(ValueError):
    """A VQ weights file that cannot be read or does not fit the configured VQ stage."""


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A flat dict of tensors from .safetensors or a torch file, never unpickling objects besides tensors."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged, or a pickle with code in it: refused, never retried unsafely
        raise VQWeightsError(f"VQ weights file {path} cannot be read safely ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VQWeightsError(f"VQ weights file {path} does not hold a flat dict of tensors")
    return state


def load_vq_weights(vq: DualSubspaceVQ, path: str | Path) -> None:
    """Copy a VQ stage's weights from `path` into `vq`, or say exactly what does not fit."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"VQ weights file {path} does not exist. {HOW_TO_GET_WEIGHTS}")
    state = vq_state_from_authors(read_tensors(path))
    own = vq.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise VQWeightsError(f"{path} does not fit this VQ stage: missing {missing[:3]}, unexpected "
                             f"{unexpected[:3]}, other shapes {wrong[:2]} (set embedding_dim, num_embeddings, "
                             "hidden_channels, residual_channels and residual_layers as the file was trained)")
    vq.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


@torch.no_grad()
def codebooks_from_features(vq: DualSubspaceVQ, images: torch.Tensor, generator: torch.Generator) -> None:
    """Set both codebooks of an untrained VQ stage to feature vectors of `images`, drawn at random.

    An untrained encoder's features are far smaller than the N(0, 1) codes the codebooks start with, so every
    feature would quantise to the same code and every image would look alike; drawn from the features, the codes
    at least tell images apart.
    """
    def fill(quantizer, z: torch.Tensor) -> None:
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        picks = torch.randint(flat.shape[0], (quantizer.codes.shape[0],), generator=generator).to(flat.device)
        quantizer.codebook.weight.copy_(flat[picks])
        quantizer.ema_weight.copy_(flat[picks])
        quantizer.ema_cluster_size.fill_(1.0)

    encoded_hi = vq.encoder_hi(images)
    z_lo = vq.pre_vq_lo(vq.encoder_lo(encoded_hi))
    fill(vq.quantizer_lo, z_lo)
    fill(vq.quantizer_hi, vq.hi_features(encoded_hi, vq.quantizer_lo(z_lo).quantized))


HOW_TO_GET_WEIGHTS = (
    "DSR needs its VQ stage pretrained (on ImageNet in the paper). Either pass vq_weights=<file> (the authors' "
    "vq_model_pretrained_128_4096.pckl, or a .safetensors file), or train one offline on a folder of natural "
    "images: `adcore dsr-train-vq --images DIR --out vq.safetensors`, then `--set vq_weights=vq.safetensors`. "
    f"vq_weights=\"{RANDOM}\" trains DSR on an untrained VQ stage whose codebooks are drawn from the training "
    "images' features (for tests only: no useful detector).")


def train_vq(images: str | Path, out: str | Path, *, steps: int = 100_000, batch_size: int = 32,
             image_size: int = 256, lr: float = 1e-3, embedding_dim: int = 128, num_embeddings: int = 4096,
             hidden_channels: int = 128, residual_channels: int = 64, residual_layers: int = 2,
             commitment_cost: float = 0.25, decay: float = 0.99, device: str | None = None, seed: int = 0) -> Path:
    """Train the dual-subspace VQ-VAE on random images of a folder (searched recursively); write .safetensors."""
    from safetensors.torch import save_file

    if image_size % 8 or image_size < 16:
        raise ValueError(f"the VQ stage needs an image size that is a multiple of 8 and at least 16, got {image_size}")
    try:
        source = C.TextureSource(images)
    except C.TextureSourceError as exc:
        raise ValueError(str(exc).replace("anomaly_source_dir", "--images")) from None
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    generator = C.seeded_generator(seed)
    torch.manual_seed(seed)
    vq = DualSubspaceVQ(embedding_dim, num_embeddings, hidden_channels, residual_channels, residual_layers,
                        commitment_cost, decay).to(target)
    optimizer = torch.optim.Adam([p for p in vq.parameters() if p.requires_grad], lr=lr)
    vq.train()
    for step in tqdm(range(steps), desc="VQ stage", unit="step", leave=False):
        batch = torch.stack([source.sample((image_size, image_size), generator) for _ in range(batch_size)])
        if step == 0:  # codes start among the features: N(0, 1) codes would leave all but one unused
            codebooks_from_features(vq, batch.to(target), generator)
        output = vq(batch.to(target))
        loss = (F.mse_loss(output.reconstruction, batch.to(target)) + output.quantized_lo.commitment
                + output.quantized_hi.commitment)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the VQ loss became {loss.item()} at step {step + 1}: lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        vq.quantizer_lo.ema_update(output.z_lo.detach(), output.quantized_lo.indices)
        vq.quantizer_hi.ema_update(output.z_hi.detach(), output.quantized_hi.indices)
    path = Path(out).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in vq.state_dict().items()}, str(path))
    return path
