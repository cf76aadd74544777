"""Each model's whole predict path against its bare feature extractor, on the CPU, side by side in one run.

    python benchmarks/predict_overhead.py --size 256 --batch 16 --models all
    python benchmarks/predict_overhead.py --models patchcore,fastflow --repeats 5

For every model of ad-memory, ad-flow and ad-kd (default configuration, random weights, `pretrained=False`):
"backbone" is one forward pass of the frozen feature extractor the model is built on (the first
`FrozenBackbone`; CS-Flow's EfficientNet stage at its three input scales; U-Flow's extractor; EfficientAD's
teacher PDN), "predict"
is `Detector.predict` on [0, 1] images (normalisation, the model's own work: kNN search, flows, students and
decoders, map upsampling and blur, then the post-processor). Both are timed on the same batch, alternately,
`--repeats` times after one warm-up each; the minimum is reported (the machine may be shared: the minimum is
the least disturbed run). Feature-bank models are fitted on `--train` demo images first (their bank size sets
the kNN cost); gradient models are built and marked fitted without training (weights do not change the cost).
The "GFLOP ratio" counts both paths' multiply-adds (convolutions and matrix products) on one image: what the
model's own work costs independently of the machine's load (`--flops-only` prints only that, without timing).
Threads: every available CPU unless `--threads` (as `adcore` commands). One run of all eleven models re-measures
the plugin READMEs' "predict path against the bare backbone" tables:

    python benchmarks/predict_overhead.py --repeats 1 --tag _idle

U-Flow's MS-CaiT is 575 GFLOP per 256 px image (its flow and NFA map add 3 %): one pass of 16 images takes
minutes idle and over twenty on two loaded cores, so the passes above (two warm-ups, two timed) did not finish
under load. Time it alone with one timed pass of each path and no warm-up (a first-call cost is noise
beside a pass of minutes):

    python benchmarks/predict_overhead.py --models uflow --repeats 1 --warmup 0 --no-flops --tag _uflow
With `--test-run`, the end-to-end `adcore test`-like scoring throughput (images/s, including decoding the
demo images in `--workers` loader workers) is measured for the same models beside it; `test_throughput.py`
measures the real `adcore test` path (checkpoint folders, PNG files on disk) beside predict and backbone.
A JSON record goes under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

MODELS = ["padim", "patchcore", "dfkde", "fastflow", "cflow", "csflow", "uflow", "stfpm", "fre",
          "reverse_distillation", "efficientad"]
RESULTS = Path(__file__).resolve().parent / "results"


def feature_extractor(name: str, model: torch.nn.Module) -> Callable[[torch.Tensor], object]:
    """The bare feature extraction the model is built on, as a function of normalised images."""
    from ad_core.components.backbone import FrozenBackbone

    if name == "csflow":
        return model.features
    if name == "efficientad":
        return model.teacher
    if name == "uflow":  # the paper's MS-CaiT (two transformers at their own sizes) or a CNN's stages
        return model.extractor
    for module in model.modules():  # the first one: STFPM's teacher sits inside its teacher-student pair
        if isinstance(module, FrozenBackbone):
            return module
    raise SystemExit(f"{name}: no frozen backbone found")


def fitted_detector(name: str, size: int, n_train: int, batch: int):
    """Feature-bank models fitted on `n_train` demo images (their bank sets the search cost); gradient models as
    built, only marked fitted: their weights do not change what a prediction costs."""
    from ad_core.building import build_model, resolve_config
    from ad_core.data.synthetic import DEMO_CATEGORIES
    from ad_core.detector import Detector
    from ad_core.preprocessing import PreProcessor
    from ad_core.testing import fit_tiny
    from ad_core.training import seed_everything

    if resolve_config(name).spec.trainer == "feature_bank":
        return fit_tiny(name, {"image_size": size, "batch_size": batch}, size, DEMO_CATEGORIES[0], n_train, seed=0)
    seed_everything(0)
    model, config = build_model(name, image_size=size, pretrained=False)
    model.mark_fitted()
    return Detector(model, pre=PreProcessor.from_run({**config.run, "image_size": size})).eval()


def gflops(fn: Callable[[], object]) -> float:
    """Multiply-add work of one call (convolutions and matrix products, 2 FLOPs per multiply-add), in GFLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(name: str, args: argparse.Namespace) -> dict:
    from ad_core.data.synthetic import DEMO_CATEGORIES, DemoDataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        detector = fitted_detector(name, args.size, args.train, args.batch)
    data = DemoDataset(category=DEMO_CATEGORIES[0], split="test", image_size=args.size)
    images = torch.stack([data[i].image for i in range(args.batch)])
    normalised = detector.pre(images)
    extractor = feature_extractor(name, detector.model)

    def bare_on(x: torch.Tensor) -> None:
        with torch.inference_mode():
            extractor(x)

    def bare() -> None:
        bare_on(normalised)

    def whole() -> None:
        detector.predict(images)

    one = images[:1]
    flops = {}
    if not args.no_flops:
        work = {"backbone": gflops(lambda: bare_on(detector.pre(one))),
                "predict": gflops(lambda: detector.predict(one))}
        flops = {"backbone_gflops_per_image": round(work["backbone"], 2),
                 "predict_gflops_per_image": round(work["predict"], 2),
                 "flops_ratio": round(work["predict"] / work["backbone"], 2)}
    if args.flops_only:
        return {"model": name, **flops}
    for _ in range(args.warmup):
        bare(), whole()
    times = {"backbone": [], "predict": []}
    for _ in range(args.repeats):
        times["backbone"].append(timed(bare))
        times["predict"].append(timed(whole))
    backbone, predict = min(times["backbone"]), min(times["predict"])
    return {"model": name, "backbone_s": round(backbone, 3), "predict_s": round(predict, 3),
            "ratio": round(predict / backbone, 2), "predict_images_per_s": round(args.batch / predict, 2), **flops}


def test_run(name: str, args: argparse.Namespace) -> float:
    """Images/s of scoring the demo test split through a DataLoader whose workers decode the images."""
    from torch.utils.data import DataLoader

    from ad_core.types import collate
    from ad_core.data.synthetic import DEMO_CATEGORIES, DemoDataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        detector = fitted_detector(name, args.size, args.train, args.batch)
    data = DemoDataset(category=DEMO_CATEGORIES[0], split="test", image_size=args.size)
    loader = DataLoader(data, batch_size=args.batch, num_workers=args.workers, collate_fn=collate)
    start = time.perf_counter()
    for batch in loader:
        detector.predict(batch.image)
    return round(len(data) / (time.perf_counter() - start), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="all")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--train", type=int, default=32, help="training images of the feature-bank models")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes of each path first (0 for models whose "
                                                                "one pass takes minutes: U-Flow)")
    parser.add_argument("--no-flops", action="store_true", help="skip counting the multiply-adds (two more passes of "
                                                                "one image)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: every available CPU, as "
                                                                "adcore's commands use)")
    parser.add_argument("--test-run", action="store_true", help="also measure end-to-end scoring images/s")
    parser.add_argument("--workers", type=int, default=2, help="loader workers of --test-run")
    parser.add_argument("--flops-only", action="store_true",
                        help="only count each path's multiply-add work on one image (no timing)")
    parser.add_argument("--tag", default="", help="suffix of the JSON record's name")
    args = parser.parse_args()
    from ad_core.threads import configure_threads

    configure_threads(args.threads)
    names = MODELS if args.models == "all" else args.models.split(",")
    record = {"benchmark": "predict_overhead", "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "image_size": args.size,
              "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
              "batch": args.batch, "rows": []}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"predict_overhead_{args.size}px_b{args.batch}{'_flops' if args.flops_only else ''}{args.tag}.json"
    print(f"{'model':22s} {'backbone s':>10s} {'predict s':>10s} {'ratio':>6s} {'img/s':>7s} {'GFLOP ratio':>11s}"
          + ("  test img/s" if args.test_run else ""), flush=True)
    for name in names:
        row = measure(name, args)
        if args.flops_only:
            record["rows"].append(row)
            print(f"{name:22s} {'':10s} {'':10s} {'':6s} {'':7s} {row['flops_ratio']:11.2f}  "
                  f"({row['backbone_gflops_per_image']} -> {row['predict_gflops_per_image']} GFLOP/image)", flush=True)
            out.write_text(json.dumps(record, indent=1) + "\n")
            continue
        if args.test_run:
            row["test_images_per_s"] = test_run(name, args)
        record["rows"].append(row)
        print(f"{name:22s} {row['backbone_s']:10.3f} {row['predict_s']:10.3f} {row['ratio']:6.2f} "
              f"{row['predict_images_per_s']:7.2f} {row.get('flops_ratio', float('nan')):11.2f}"
              + (f"  {row['test_images_per_s']:10.2f}" if args.test_run else ""),
              flush=True)
        out.write_text(json.dumps(record, indent=1) + "\n")  # after every model: a long run stopped keeps its rows
    print(f"record written to {out}")


if __name__ == "__main__":
    main()
