"""Test-time forward speed of DFM and CFA next to anomalib 2.7's, same weights, same process, same images.

Both models are built as in `equivalence_anomalib.py` (random weights, anomalib's copied into ours), fitted on
16 random images, then each scores the same 32 images at 128 px alternately; the best of 5 runs is kept. Run with
anomalib's Python:

    <anomalib venv>/bin/python benchmarks/adapt_forward_speed.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins/ad-adapt/src")]

import torch  # noqa: E402
import torchvision  # noqa: E402
from anomalib.models.image.cfa import torch_model as cfa_module  # noqa: E402
from anomalib.models.image.dfm.torch_model import DFMModel  # noqa: E402
from torchvision.models.feature_extraction import create_feature_extractor  # noqa: E402

from ad_adapt.cfa import Cfa  # noqa: E402
from ad_adapt.dfm import Dfm  # noqa: E402
from ad_core.types import Batch  # noqa: E402


def main() -> None:
    torch.set_num_threads(2)
    cfa_module.get_feature_extractor = lambda backbone, nodes: create_feature_extractor(
        getattr(torchvision.models, backbone)(weights=None), nodes).eval()
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(16, 3, 128, 128, generator=generator)
    test = torch.randn(32, 3, 128, 128, generator=generator)
    batch = Batch(train, torch.zeros(16, dtype=torch.long), None, [""] * 16, [""] * 16)
    cfa_theirs = cfa_module.CfaModel("resnet18", 1, 1, 3, 3, 1e-5)
    cfa_ours = Cfa(backbone="resnet18", pretrained=False)
    cfa_ours.backbone.load_state_dict({"model." + k: v for k, v in cfa_theirs.feature_extractor.state_dict().items()})
    cfa_ours.descriptor.load_state_dict(cfa_theirs.descriptor.layer.conv2d.state_dict())
    cfa_theirs.initialize_centroid([batch])
    cfa_ours.on_fit_start([batch])
    cfa_ours.finalize()
    dfm_theirs = DFMModel("resnet50", "layer3", pre_trained=False)
    dfm_theirs.train()
    dfm_theirs(train.clone())
    dfm_theirs.fit()
    dfm_ours = Dfm(pretrained=False, n_components=int(dfm_theirs.pca_model.num_components))
    prefix = len("feature_extractor.")
    dfm_ours.backbone.load_state_dict({"model." + k[prefix:]: v for k, v in dfm_theirs.feature_extractor.state_dict().items()})
    dfm_ours.on_fit_start([])
    dfm_ours.update(batch)
    dfm_ours.finalize()
    for model in (cfa_theirs, cfa_ours, dfm_theirs, dfm_ours):
        model.eval()
    pairs = {"cfa-r18": (cfa_theirs, cfa_ours.compute), "dfm (R50)": (lambda x: dfm_theirs(x.clone()), dfm_ours.compute)}
    with torch.inference_mode():
        for name, (theirs, ours) in pairs.items():
            theirs(test[:4])
            ours(test[:4])
            seconds_theirs, seconds_ours = [], []
            for _ in range(5):
                start = time.perf_counter()
                theirs(test)
                seconds_theirs.append(time.perf_counter() - start)
                start = time.perf_counter()
                ours(test)
                seconds_ours.append(time.perf_counter() - start)
            print(f"{name}: anomalib {len(test) / min(seconds_theirs):.1f} img/s, "
                  f"ours {len(test) / min(seconds_ours):.1f} img/s (best of 5, {len(test)} images at 128 px)")


if __name__ == "__main__":
    main()
