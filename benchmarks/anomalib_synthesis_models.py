#!/usr/bin/env python3
"""anomalib 2.7's DRAEM, GLASS or SuperSimpleNet on an MVTec-layout folder, measured like `adcore benchmark`.

Run with the python of a venv that has anomalib (not a dependency of this project); random backbone weights,
no downloads. Prints one JSON line: image/pixel AUROC, fit s (`Engine.fit`), test img/s (`Engine.test`, metrics
included), peak RSS and the RSS after imports (the import floor). Example (the demo set written with
`ad_core.data.write_demo_dataset`):

    ANOMALIB_PY benchmarks/anomalib_synthesis_models.py --root DEMO --category weave --model draem \
        --image-size 64 --epochs 10 --batch-size 8 --texture-dir TEXTURES

`--max-steps N` stops after N training batches (our run key `max_steps`) and skips anomalib's validation pass
(without it the post-processor leaves the raw scores, which AUROC ranks the same), so fit s is training alone.
JPEG folders (e.g. magnetic_tile) are read too: anomalib's MVTec reader accepts only .png by default.
`--save-maps FILE.npz` writes the test batches as anomalib's metrics see them: the pre-processed images, the
ground-truth masks, the labels, the raw anomaly maps and the post-processed (normalised) maps its pixel AUROC ranks,
and the image paths, so that they can be scored with another metric (`draem_pipeline_swaps.py score-maps`).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def stop_after_batches(count: int):
    """A Lightning callback that ends the fit after `count` training batches (whatever the optimiser count)."""
    from lightning.pytorch.callbacks import Callback

    class StopAfterBatches(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.fit_loop.total_batch_idx + 1 >= count:
                trainer.should_stop = True

    return StopAfterBatches()


def keep_test_batches(store: list):
    """A Lightning callback that keeps each test batch and a copy of its raw anomaly map; it runs before the
    model's own callbacks, so the post-processor normalises the kept batch in place afterwards."""
    from lightning.pytorch.callbacks import Callback

    class KeepTestBatches(Callback):
        def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
            store.append((outputs, outputs.anomaly_map.detach().clone()))

    return KeepTestBatches()


def save_test_batches(store: list, path: str) -> None:
    import numpy as np

    def stack(values) -> np.ndarray:
        return np.concatenate([v.detach().cpu().numpy() for v in values])

    batches = [b for b, _ in store]
    np.savez_compressed(path, images=stack(b.image for b in batches), masks=stack(b.gt_mask for b in batches),
                        labels=stack(b.gt_label for b in batches), raw_maps=stack(m for _, m in store),
                        maps=stack(b.anomaly_map for b in batches),
                        paths=np.asarray([str(p) for b in batches for p in b.image_path]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--model", choices=["draem", "glass", "supersimplenet"], required=True)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--texture-dir", default=None)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--train-backbone", action="store_true",
                        help="GLASS: anomalib's pre_trained=False, which also trains the backbone; by default the "
                             "(random) backbone stays frozen, as in ours and the paper's runs")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop after this many training batches, without validation (max_epochs stays "
                             "--epochs, so SuperSimpleNet's epoch milestones keep their places)")
    parser.add_argument("--noise-std", type=float, default=None,
                        help="SuperSimpleNet: the feature noise σ (anomalib fixes the paper's 0.015; our noise_std)")
    parser.add_argument("--svd", type=int, default=0, help="GLASS: 1 = hypersphere projection, 0 = manifold")
    parser.add_argument("--save-maps", default=None, metavar="FILE.npz",
                        help="write the test images, masks, labels and anomaly maps (raw and normalised)")
    parser.add_argument("--draem-widths", type=int, nargs=2, default=None, metavar=("RECON", "DISCR"),
                        help="DRAEM's base widths (anomalib hard-codes the paper's 128 and 64)")
    args = parser.parse_args()
    if args.noise_std is not None and args.model != "supersimplenet":
        parser.error("--noise-std is SuperSimpleNet's")

    import torch
    import torchvision  # noqa: F401  (part of the import floor, as on our side)
    import timm
    floor = peak_rss_mb()
    create = timm.create_model  # offline: every timm backbone gets random weights (before anomalib imports timm)
    timm.create_model = lambda *a, **kw: create(*a, **{**kw, "pretrained": False})
    from anomalib.data import MVTecAD
    from anomalib.data.datasets.image import mvtecad
    from anomalib.engine import Engine
    from anomalib.models import Draem, Glass, Supersimplenet
    from lightning.pytorch import seed_everything

    mvtecad.IMG_EXTENSIONS = (".png", ".PNG", ".jpg", ".jpeg", ".JPG")  # read at call time by the dataset
    torch.set_num_threads(args.threads)
    seed_everything(args.seed, workers=True, verbose=False)
    size = (args.image_size, args.image_size)
    if args.model == "draem":
        model = Draem(dtd_dir=args.texture_dir, visualizer=False,
                      pre_processor=Draem.configure_pre_processor(image_size=size))
        if args.draem_widths:
            from anomalib.models.image.draem.torch_model import DiscriminativeSubNetwork, ReconstructiveSubNetwork
            recon, discr = args.draem_widths
            model.model.reconstructive_subnetwork = ReconstructiveSubNetwork(base_width=recon)
            model.model.discriminative_subnetwork = DiscriminativeSubNetwork(in_channels=6, out_channels=2,
                                                                             base_width=discr)
    elif args.model == "supersimplenet":
        model = Supersimplenet(backbone=args.backbone, visualizer=False,
                               pre_processor=Supersimplenet.configure_pre_processor(image_size=size))
        if args.noise_std is not None:
            model.model.anomaly_generator.noise_std = args.noise_std
    else:
        model = Glass(input_shape=size, anomaly_source_path=args.texture_dir, backbone=args.backbone,
                      pre_trained=not args.train_backbone, svd=args.svd, visualizer=False,
                      pre_processor=Glass.configure_pre_processor(image_size=size))
    data = MVTecAD(root=args.root, category=args.category, train_batch_size=args.batch_size,
                   eval_batch_size=args.batch_size, num_workers=0, seed=args.seed)
    kept: list = []
    with tempfile.TemporaryDirectory() as workdir:
        callbacks = [keep_test_batches(kept)] if args.save_maps else []
        bounded = {} if args.max_steps is None else {"limit_val_batches": 0}
        if args.max_steps is not None:
            callbacks.append(stop_after_batches(args.max_steps))
        engine = Engine(logger=False, accelerator="cpu", devices=1, default_root_dir=workdir, max_epochs=args.epochs,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks, **bounded)
        start = time.perf_counter()
        engine.fit(model=model, datamodule=data)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        metrics = engine.test(model=model, datamodule=data, verbose=False)[0]
        test_s = time.perf_counter() - start
        if args.save_maps:
            save_test_batches(kept, args.save_maps)
    print(json.dumps({"model": f"{args.model} (anomalib 2.7)", "image_AUROC": float(metrics["image_AUROC"]),
                      "pixel_AUROC": float(metrics["pixel_AUROC"]), "fit_s": fit_s,
                      "test_img_s": len(data.test_data) / test_s, "peak_rss_MB": peak_rss_mb(),
                      "import_floor_MB": floor, "threads": args.threads, "epochs": args.epochs,
                      "texture_dir": args.texture_dir,
                      "train_backbone": args.train_backbone, "max_steps": args.max_steps,
                      "backbone": args.backbone, "image_size": args.image_size, "batch_size": args.batch_size,
                      "seed": args.seed, "svd": args.svd, "noise_std": args.noise_std,
                      "train_batches": engine.trainer.fit_loop.total_batch_idx + 1}))


if __name__ == "__main__":
    main()
