"""DRAEM's predict path, ours against anomalib 2.7's network, at 64 px, widths 32/16, batch 16, one thread: the
same computation should cost the same (run once with each side's python:
`python benchmarks/draem_forward_speed.py ours`, `ANOMALIB_PY benchmarks/draem_forward_speed.py anomalib`)."""

import sys, time, torch
torch.set_num_threads(1)
side = sys.argv[1]
x = torch.rand(16, 3, 64, 64)
if side == "ours":
    from ad_core.building import build_model
    m, _ = build_model("draem", reconstructive_width=32, discriminative_width=16, image_size=64, pretrained=False)
    m.mark_fitted(); m.eval()
    f = lambda: m.predict(x)
else:
    from anomalib.models.image.draem.torch_model import DraemModel
    m = DraemModel().eval()
    # widths: anomalib builds 128/64 by default; shrink to 32/16 like the benchmark
    from anomalib.models.image.draem.torch_model import ReconstructiveSubNetwork, DiscriminativeSubNetwork
    m.reconstructive_subnetwork = ReconstructiveSubNetwork(base_width=32)
    m.discriminative_subnetwork = DiscriminativeSubNetwork(in_channels=6, out_channels=2, base_width=16)
    m.eval()
    f = lambda: m(x)
with torch.inference_mode():
    f()
    t = time.perf_counter()
    for _ in range(5):
        f()
    print(side, "img/s", round(80 / (time.perf_counter() - t), 1))
