"""Scoring images/s with the test images decoded in 0, 1, 2 ... DataLoader workers (an `adcore test`-like loop).

    python benchmarks/loader_workers.py --model padim --root ../shared/data/magnetic_tile --category magnetic_tile \
        --images 64 --workers 0,2,1,0,2

The detector is built as `benchmarks/predict_overhead.py` builds it (random weights); the images come from an
MVTec-layout folder, so each one is read from disk, decoded and resized as in a test run. Also prints the time to
decode and resize one image in the main process. A JSON record goes under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from predict_overhead import RESULTS, fitted_detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="padim")
    parser.add_argument("--root", type=Path, required=True, help="an MVTec-layout dataset root")
    parser.add_argument("--category", required=True)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--images", type=int, default=64, help="test images scored per setting")
    parser.add_argument("--workers", default="0,2,1,0,2", help="worker counts, in the order run")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    from ad_core.data.catalog import get_dataset
    from ad_core.threads import configure_threads
    from ad_core.types import collate

    configure_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        detector = fitted_detector(args.model, args.size, 16, args.batch)
    data = get_dataset("mvtec", args.category, "test", image_size=args.size, root=args.root)
    data = Subset(data, range(min(args.images, len(data))))
    start = time.perf_counter()
    for i in range(min(16, len(data))):
        data[i]
    decode = (time.perf_counter() - start) / min(16, len(data))
    record = {"benchmark": "loader_workers", "model": args.model, "category": args.category, "image_size": args.size,
              "threads": torch.get_num_threads(), "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
              "decode_resize_s_per_image": round(decode, 4), "runs": []}
    print(f"decode + resize: {decode:.4f} s per image", flush=True)
    for workers in (int(w) for w in args.workers.split(",")):
        loader = DataLoader(data, batch_size=args.batch, num_workers=workers, collate_fn=collate)
        start = time.perf_counter()
        for batch in loader:
            detector.predict(batch.image)
        rate = len(data) / (time.perf_counter() - start)
        record["runs"].append({"workers": workers, "images_per_s": round(rate, 2)})
        print(f"workers {workers}: {rate:.2f} images/s", flush=True)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"loader_workers_{args.category}_{args.size}px_{args.model}{args.tag}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"record written to {out}")


if __name__ == "__main__":
    main()
