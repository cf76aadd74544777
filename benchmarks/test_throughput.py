"""End-to-end `adcore test` images/s per model, beside its predict path and its bare backbone, on the CPU.

    python benchmarks/test_throughput.py --threads 2 --workers 2
    python benchmarks/test_throughput.py --models uflow --test 16

The demo set's first category is written to disk in the MVTec layout (PNG images and masks, `--train` normal
training images, `--test` test images, half of them anomalous). Every model (default configuration, random
weights, `pretrained=False`) is trained for one step (feature-bank models: one pass over the training images)
with `ad_core.runner.run_one`, only to get a checkpoint folder; then, per model:

- "test": `test_checkpoint` on that folder as `adcore test` runs it (load the checkpoint, read and decode the
  PNGs in `--workers` DataLoader workers, score, compute the metrics, write results, plots and maps), timed
  whole (`test img/s` = test images / wall seconds) and its scoring loop alone as the run records it
  (`loop img/s`: decoding and `Detector.predict`, what `test_images_per_second` in results.json says);
- "predict" and "backbone": `Detector.predict` on one decoded batch of `--batch` test images and the bare
  feature extractor on the same batch (as `predict_overhead.py`), alternately, `--repeats` times after a
  warm-up; the minimum is reported.

U-Flow is not in the default list: its MS-CaiT costs 575 GFLOP per 256 px image, so its share alone (five passes
of a 16-image batch) exceeds the ten minutes the other ten models take on two loaded cores; time it with
`--models uflow`. A JSON record goes under benchmarks/results/ after every model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import torch

from predict_overhead import MODELS, RESULTS, feature_extractor, timed

DEFAULT_MODELS = [name for name in MODELS if name != "uflow"]


def checkpoint_for(name: str, root: Path, category: str, out: Path, size: int, batch: int) -> Path:
    """A one-step (feature bank: one-pass) training run of `name` on the written demo category: its folder."""
    from ad_core.runner import run_one

    result = run_one("mvtec", category, name, root=root, output_dir=out, pretrained=False, image_size=size,
                     batch_size=batch, max_steps=1, write_maps=False)
    return result.output_dir


def measure(name: str, args: argparse.Namespace, root: Path, category: str, work: Path) -> dict:
    from ad_core.checkpoint import load_model
    from ad_core.data import get_dataset
    from ad_core.runner import test_checkpoint
    from ad_core.types import collate

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checkpoint = checkpoint_for(name, root, category, work / "runs", args.size, args.batch)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    result = test_checkpoint(checkpoint, "mvtec", category, root=root, output_dir=work / "test" / name,
                             batch_size=args.batch)
    test_s = time.perf_counter() - start
    n_test = int(result.run["test_images"])

    detector = load_model(checkpoint)
    data = get_dataset("mvtec", category, "test", image_size=args.size, root=root)
    images = collate([data[i] for i in range(min(args.batch, len(data)))]).image
    normalised = detector.pre(images)
    extractor = feature_extractor(name, detector.model)

    def bare() -> None:
        with torch.inference_mode():
            extractor(normalised)

    def whole() -> None:
        detector.predict(images)

    bare(), whole()  # warm-up
    times: dict[str, list[float]] = {"backbone": [], "predict": []}
    for _ in range(args.repeats):
        times["backbone"].append(timed(bare))
        times["predict"].append(timed(whole))
    backbone, predict = min(times["backbone"]), min(times["predict"])
    return {"model": name, "test_images": n_test, "test_s": round(test_s, 2),
            "test_images_per_s": round(n_test / test_s, 2),
            "loop_images_per_s": float(result.run["test_images_per_second"]),
            "predict_images_per_s": round(len(images) / predict, 2),
            "backbone_images_per_s": round(len(images) / backbone, 2),
            "predict_over_backbone": round(predict / backbone, 2), "fit_s": round(fit_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--train", type=int, default=8, help="normal training images written")
    parser.add_argument("--test", type=int, default=16, help="test images written (half anomalous)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding the test images")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: every available CPU)")
    parser.add_argument("--tag", default="", help="suffix of the JSON record's name")
    args = parser.parse_args()
    from ad_core.data.synthetic import DEMO_CATEGORIES, write_demo_dataset
    from ad_core.settings import set_globals
    from ad_core.threads import configure_threads

    configure_threads(args.threads)
    set_globals(num_workers=args.workers, progress=False)
    category = DEMO_CATEGORIES[0]
    record = {"benchmark": "test_throughput", "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "loader_workers": args.workers,
              "image_size": args.size, "batch": args.batch, "train_images": args.train, "test_images": args.test,
              "load_average_at_start": [round(x, 1) for x in os.getloadavg()], "rows": []}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"test_throughput_{args.size}px_b{args.batch}{args.tag}.json"
    print(f"{'model':22s} {'test img/s':>10s} {'loop img/s':>10s} {'predict img/s':>13s} {'backbone img/s':>14s} "
          f"{'ratio':>6s}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = write_demo_dataset(work / "data", category, image_size=args.size, n_train=args.train,
                                  n_test_normal=args.test - args.test // 2, n_test_anomalous=args.test // 2)
        for name in args.models.split(","):
            row = measure(name, args, root, category, work)
            record["rows"].append(row)
            print(f"{name:22s} {row['test_images_per_s']:10.2f} {row['loop_images_per_s']:10.2f} "
                  f"{row['predict_images_per_s']:13.2f} {row['backbone_images_per_s']:14.2f} "
                  f"{row['predict_over_backbone']:6.2f}", flush=True)
            record["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
            out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"record written to {out}")


if __name__ == "__main__":
    main()
