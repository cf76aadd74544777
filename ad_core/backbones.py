"""timm feature extractors with offline-first weight resolution (DESIGN §5).

Order: an explicit file; `backbone_dir/<timm name>.{safetensors,pth,bin}`; timm's cache/hub only when
downloads are allowed; otherwise `MissingWeightsError` naming the file expected. Importing this module
changes no process state: the hub's offline flag is set only around the calls that may download.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ad_core.settings import settings

import timm
import torch
from torch import nn

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".bin")


class MissingWeightsError(FileNotFoundError):
    """No pretrained weights could be found offline for a backbone."""


class WeightsMismatchError(ValueError):
    """A weights file does not fit the backbone it was given for."""


def weight_candidates(name: str, backbone_dir: Path) -> list[Path]:
    """Files looked for, in order: the full timm name, then the name without its pretrained tag."""
    stems = [name] + ([name.split(".")[0]] if "." in name else [])
    return [backbone_dir / f"{stem}{suffix}" for stem in stems for suffix in WEIGHT_SUFFIXES]


def find_weights(name: str, weights_file: str | Path | None = None, backbone_dir: str | Path | None = None) -> Path | None:
    """The local weights file for `name`, or None when there is none."""
    if weights_file is not None:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise MissingWeightsError(f"weights file {path} does not exist")
        return path
    directory = Path(backbone_dir if backbone_dir is not None else settings.backbone_dir).expanduser()
    for path in weight_candidates(name, directory):
        if path.is_file():
            return path
    return None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load tensors without unpickling arbitrary objects."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged, or a pickle holding more than tensors: never retried unsafely
        raise WeightsMismatchError(
            f"backbone weights file {path} cannot be read safely ({type(exc).__name__}): it is damaged, or a pickle "
            "holding code or objects besides tensors, which is never loaded. Replace it with the original weights "
            "(a .safetensors file is safest)."
        ) from None
        for key in ("state_dict", "model", "module"):  # common wrappers of training checkpoints
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsMismatchError(f"{path} does not hold a flat dict of tensors")
    return state


def _file_key(model_key: str, file_keys: set[str]) -> str | None:
    """Map a features-only model key back to the full model's key (timm flattens `stages.0` to `stages_0`)."""
    if model_key in file_keys:
        return model_key
    unflat = re.sub(r"^([A-Za-z]+)_(\d+)\.", r"\1.\2.", model_key)
    return unflat if unflat in file_keys else None


def layer_indices(name: str, layers: Sequence[str | int]) -> list[int]:
    """Translate layer names (e.g. 'layer2') into timm `out_indices`."""
    if all(isinstance(layer, int) for layer in layers):
        return [int(layer) for layer in layers]
    with torch.device("meta"):
        probe = timm.create_model(name, pretrained=False, features_only=True)
    names = probe.feature_info.module_name()
    out = []
    for layer in layers:
        if isinstance(layer, int):
            out.append(layer)
        elif layer in names:
            out.append(names.index(layer))
        else:
            raise ValueError(f"backbone {name!r} has no feature layer {layer!r}; available: {names}")
    return out


PLAIN_MODULES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.LayerNorm, nn.GroupNorm)


def _lean_build(name: str, indices: list[int]) -> nn.Module | None:
    """The features-only model with memory for the layers it keeps only (not the head or unused stages).

    timm builds the whole network before cutting it; building on the meta device and materialising the
    cut model saves e.g. ~180 MB for wide_resnet50_2 up to layer3. Returns None for models whose state is
    not all in plain layers (they are built the ordinary way).
    """
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, features_only=True, out_indices=indices)
    persistent = set(model.state_dict())
    for module_name, module in model.named_modules():
        own = [n for n, _ in module.named_parameters(recurse=False)] + [n for n, _ in module.named_buffers(recurse=False)]
        if own and not isinstance(module, PLAIN_MODULES):
            return None
        prefix = f"{module_name}." if module_name else ""
        if any(f"{prefix}{n}" not in persistent for n, _ in module.named_buffers(recurse=False)):
            return None
    return model.to_empty(device="cpu")


def _init_random(model: nn.Module) -> None:
    """timm's own CNN initialisation: He-normal convolutions, unit BatchNorm, and the last BatchNorm of
    each residual block zeroed (`zero_init_last`), so random-weight runs match a full timm build."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, PLAIN_MODULES):
            module.reset_parameters()
    for module in model.modules():
        if hasattr(module, "zero_init_last"):
            module.zero_init_last()


def _load_file(model: nn.Module, path: Path) -> None:
    """Copy every tensor of the extractor from the file, key by key, or say exactly what does not fit."""
    state = read_state_dict(path)
    file_keys = set(state)
    own = model.state_dict()
    mapped, missing, wrong = {}, [], []
    for key, tensor in own.items():
        file_key = _file_key(key, file_keys)
        if file_key is None:
            if key.endswith("num_batches_tracked"):
                mapped[key] = torch.zeros_like(tensor, device="cpu")
                continue
            missing.append(key)
        elif state[file_key].shape != tensor.shape:
            wrong.append(f"{key} {tuple(state[file_key].shape)} != {tuple(tensor.shape)}")
        else:
            mapped[key] = state[file_key].to(tensor.dtype)
    if missing or wrong:
        raise WeightsMismatchError(
            f"{path} does not match backbone: {len(missing)} tensors missing from the file (e.g. {missing[:3]}), "
            f"{len(wrong)} with another shape (e.g. {wrong[:2]}). File keys look like {sorted(file_keys)[:3]}; "
            f"expected keys like {list(own)[:3]}."
        )
    model.load_state_dict(mapped, strict=True)


@contextmanager
def hub_access(allow_download: bool) -> Iterator[None]:
    """Hugging Face hub online exactly when downloads are allowed, for the duration of one timm call.

    The hub reads `HF_HUB_OFFLINE` into `huggingface_hub.constants` when first imported, so both the
    variable and the constant are set, and both are restored afterwards.
    """
    previous_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "0" if allow_download else "1"
    constants = sys.modules.get("huggingface_hub.constants")
    previous_constant = getattr(constants, "HF_HUB_OFFLINE", None) if constants is not None else None
    if constants is not None:
        constants.HF_HUB_OFFLINE = not allow_download
    try:
        yield
    finally:
        if previous_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous_env
        if constants is not None:
            constants.HF_HUB_OFFLINE = previous_constant


def _weights_source(
    name: str,
    pretrained: bool,
    weights_file: str | Path | None,
    backbone_dir: str | Path | None,
    allow_download: bool | None,
) -> Path | str | None:
    """Where the weights come from: a local file, "download" (timm's hub), or None (random weights).

    Raises `MissingWeightsError` when pretrained weights are wanted but none can be had offline.
    """
    if not pretrained:
        return None
    path = find_weights(name, weights_file, backbone_dir)
    if path is not None:
        return path
    if settings.allow_download if allow_download is None else allow_download:
        return "download"
    directory = Path(backbone_dir if backbone_dir is not None else settings.backbone_dir).expanduser()
    expected = weight_candidates(name, directory)[0]
    raise MissingWeightsError(
        f"no pretrained weights for backbone {name!r}: put them at {expected} "
        f"(or .pth/.bin), pass weights_file=..., set backbone_dir, allow downloads with "
        f"ADCORE_ALLOW_DOWNLOAD=1, or use pretrained=False (random weights, much lower accuracy)."
    )


def create_feature_extractor(
    name: str,
    layers: Sequence[str | int],
    pretrained: bool = True,
    weights_file: str | Path | None = None,
    backbone_dir: str | Path | None = None,
    allow_download: bool | None = None,
) -> nn.Module:
    """A timm `features_only` model returning the requested layers, its weights found offline."""
    indices = layer_indices(name, layers)
    kwargs = {"features_only": True, "out_indices": indices}
    source = _weights_source(name, pretrained, weights_file, backbone_dir, allow_download)
    if source == "download":
        with hub_access(True):
            return timm.create_model(name, pretrained=True, **kwargs)
    model = _lean_build(name, indices)
    if model is None:
        model = timm.create_model(name, pretrained=False, **kwargs)
    elif source is None:
        _init_random(model)
    if source is not None:
        _load_file(model, source)
    return model


def create_vit(
    name: str,
    last_block: int,
    pretrained: bool = True,
    weights_file: str | Path | None = None,
    backbone_dir: str | Path | None = None,
    allow_download: bool | None = None,
    img_size: int | None = None,
    **timm_kwargs: object,
) -> nn.Module:
    """A timm vision transformer (ViT, DeiT, CaiT ...) cut after block `last_block`, its weights found offline.

    Transformers have no `features_only` form: read their token maps with
    `model.forward_intermediates(x, indices=[...], norm=True, intermediates_only=True)` (NCHW, prefix
    tokens dropped). Blocks after `last_block` and the head are removed, so they cost neither memory nor
    time. `img_size` builds the position embedding for another input size (random weights only: a weights
    file must match it). `timm_kwargs` go to `timm.create_model` (e.g. `dynamic_img_size=True`, which
    interpolates the position embedding to each input's size).
    """
    kwargs = {**timm_kwargs, **({} if img_size is None else {"img_size": img_size})}
    source = _weights_source(name, pretrained, weights_file, backbone_dir, allow_download)
    with hub_access(source == "download"):
        model = timm.create_model(name, pretrained=source == "download", **kwargs)
    if not hasattr(model, "forward_intermediates") or not hasattr(model, "blocks"):
        raise ValueError(f"{name!r} is not a timm transformer with blocks and forward_intermediates")
    if not 0 <= last_block < len(model.blocks):
        raise ValueError(f"{name!r} has blocks 0..{len(model.blocks) - 1}, got last_block={last_block}")
    model.prune_intermediate_layers([last_block], prune_norm=False, prune_head=True)
    if isinstance(source, Path):
        _load_file(model, source)
    return model


def create_model(
    name: str,
    pretrained: bool = True,
    weights_file: str | Path | None = None,
    backbone_dir: str | Path | None = None,
    allow_download: bool | None = None,
    **timm_kwargs: object,
) -> nn.Module:
    """A whole timm model (not features-only), its weights found offline as for `create_feature_extractor`.

    For models that cut a CNN where `features_only` cannot, e.g. after a stage that is not a feature level;
    the file must hold every tensor of the model (a head may be extra).
    """
    source = _weights_source(name, pretrained, weights_file, backbone_dir, allow_download)
    with hub_access(source == "download"):
        model = timm.create_model(name, pretrained=source == "download", **timm_kwargs)
    if isinstance(source, Path):
        _load_file(model, source)
    return model
