"""Export cost and exported-graph speed: `adcore export` time and peak memory, then onnxruntime against torch eager
(the `adcore predict` path) on the same image files, for the default models of ad-memory, ad-flow and ad-kd.

Each model is trained on the demo data (random-weight backbones: speed and memory do not depend on the weights)
and exported; every measurement runs in a fresh subprocess so peak memory is that of the step alone, above the
process's floor after its imports and the model's loading. Both engines get the same thread count. PatchCore's
export is also measured with a memory bank of realistic size (`--bank`, default 16384 patches).

    python benchmarks/export_speed.py [--size 256] [--threads 2] [--models patchcore-r18,fastflow,stfpm]

Writes benchmarks/results/export_speed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "export_speed.json"


class PeakRss:
    """The process's largest resident set size while the block runs, sampled every 5 ms, above its start."""

    def __enter__(self) -> PeakRss:
        import psutil

        self._process = psutil.Process()
        self.floor = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def above_floor_mib(self) -> float:
        return round((self.peak - self.floor) / 2**20, 1)


def _export_step(run_dir: str, output: str, bank: int) -> dict:
    """Export (after loading the model), optionally with PatchCore's bank replaced by `bank` random patches."""
    import torch

    from ad_core.checkpoint import load_model
    from ad_core.components.knn import build_search_index
    from ad_core.exporting import export_detector
    from ad_core.exporting.exporter import parity_images

    detector = load_model(run_dir)
    if bank:
        model = detector.model
        width = model.memory_bank.shape[1]
        model.memory_bank = torch.randn(bank, width, generator=torch.Generator().manual_seed(0))
        model.search_mean, model.search_basis, model.search_coords = build_search_index(model.memory_bank)
    images, source = parity_images(detector.meta, detector.image_size)
    with PeakRss() as rss:
        started = time.perf_counter()
        result = export_detector(detector, output, images=images, source=source, batch="dynamic")
        seconds = time.perf_counter() - started
    onnx_mib = (Path(output) / "model.onnx").stat().st_size / 2**20
    return {"export_seconds": round(seconds, 2), "export_peak_rss_above_floor_mib": rss.above_floor_mib,
            "onnx_mib": round(onnx_mib, 1), "bank": None if not bank else list(detector.model.memory_bank.shape),
            "parity": {k: v for k, v in result.parity.items() if k != "tolerance"}}


def _timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _speed_step(run_dir: str, export_dir: str, images: str, threads: int, engine: str) -> dict:
    """Latency (batch 1) and throughput (batch 16) of one engine on the image files, decode and resize included."""
    import torch

    torch.set_num_threads(threads)
    from ad_core.data import ImageTransform, read_image
    from ad_core.inference import collect_images

    paths = collect_images([images])
    if engine == "torch":
        from ad_core.checkpoint import load_model

        detector = load_model(run_dir)
        detector.predict_paths(paths[:2], batch_size=1)  # warm-up
        with PeakRss() as rss:
            one = _timed(lambda: detector.predict_paths(paths[:1], batch_size=1), 5)
            batch = _timed(lambda: detector.predict_paths(paths, batch_size=len(paths)), 3)
    else:
        import numpy as np
        import onnxruntime

        from ad_core.exporting import read_export_metadata

        meta = read_export_metadata(export_dir)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        transform = ImageTransform((meta["input"]["height"], meta["input"]["width"]))

        def run(chunk: list[Path]) -> None:
            pixels = np.stack([transform(read_image(p)).numpy() for p in chunk])
            session.run(None, {"image": pixels})

        with PeakRss() as rss:
            session = onnxruntime.InferenceSession(str(Path(export_dir) / "model.onnx"), options,
                                                   providers=["CPUExecutionProvider"])
            run(paths[:2])  # warm-up
            one = _timed(lambda: run(paths[:1]), 5)
            batch = _timed(lambda: run(paths), 3)
    return {"latency_ms": round(one * 1000, 1), "images_per_s": round(len(paths) / batch, 2),
            "peak_rss_above_floor_mib": rss.above_floor_mib}


def _typed(args: tuple[str, ...]) -> list[str | int]:
    return [int(a) if a.isdigit() else a for a in args]


def _child(step: str, *args: str) -> dict:
    """Run one step in a fresh interpreter (its own memory floor) and return its JSON."""
    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import export_speed as b; " \
           f"print(json.dumps(b.{step}(*{_typed(args)!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="patchcore-r18,fastflow,stfpm")
    parser.add_argument("--bank", type=int, default=16384)
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()

    import ad_core
    from ad_core.data import DemoDataset

    work = Path(tempfile.mkdtemp(prefix="export-speed-"))
    image_dir = work / "images"
    image_dir.mkdir()
    demo = DemoDataset(category="weave", split="test", image_size=args.size, n_test_normal=args.images // 2,
                       n_test_anomalous=args.images - args.images // 2)
    from PIL import Image

    for i in range(len(demo)):
        pixels = (demo[i].image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        Image.fromarray(pixels).save(image_dir / f"{i:03d}.png")
    record = {"machine": {"platform": platform.platform(), "processor": platform.processor(), "threads": args.threads},
              "image_size": args.size, "images": len(demo), "models": {}}
    for name in args.models.split(","):
        ad_core.train("demo", "weave", name, image_size=args.size, output_dir=work, pretrained=False, verbose=False,
                      write_maps=False, num_epochs=1, max_steps=2, batch_size=8)
        run_dir, export_dir = work / "demo" / "weave" / name, work / f"{name}-export"
        entry = _child("_export_step", str(run_dir), str(export_dir), "0")
        entry["torch"] = _child("_speed_step", str(run_dir), str(export_dir), str(image_dir), str(args.threads), "torch")
        entry["onnxruntime"] = _child("_speed_step", str(run_dir), str(export_dir), str(image_dir), str(args.threads),
                                      "onnxruntime")
        entry["onnxruntime_speedup"] = round(entry["onnxruntime"]["images_per_s"] / entry["torch"]["images_per_s"], 2)
        if name.startswith("patchcore") and args.bank:
            entry["realistic_bank"] = _child("_export_step", str(run_dir), str(work / f"{name}-bank-export"),
                                             str(args.bank))
            entry["realistic_bank"]["onnxruntime"] = _child("_speed_step", str(run_dir), str(work / f"{name}-bank-export"),
                                                            str(image_dir), str(args.threads), "onnxruntime")
        record["models"][name] = entry
        print(name, json.dumps(entry), flush=True)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(record, indent=2) + "\n")  # after each model: a long run keeps what it has
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
