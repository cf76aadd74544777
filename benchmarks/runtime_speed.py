"""What the torch-free runtime costs and delivers: install size, images/s, latency, server requests/s.

Run with the runtime environment's Python (no torch needed), on an export folder:

    .venv-runtime/bin/python benchmarks/runtime_speed.py EXPORT_DIR [--run-dir RUN_DIR] [--torch-python .venv/bin/python]

It measures
- the installed size of the runtime environment and of the torch one: `du` of every site-packages folder each
  interpreter imports from, and the size of the distributions that `ad-runtime` / `ad-core` pull in (their
  requirements, followed transitively, as pip installed them);
- `Detector.predict` on image files (decode, resize, graph): images/s with the graph's batch, and the latency of
  one image (median and 95th percentile of single-image calls, after a warm-up);
- with `--run-dir` (the run the export came from), the same two figures for ad-core's torch path
  (`load_model(RUN).predict_paths`, eager, in the torch interpreter) on the same files;
- `ad-runtime serve` on 127.0.0.1: requests/s and median latency with 1 and with 4 concurrent clients
  (a fixed number of requests each, every request with a timeout).
The record goes to benchmarks/results/runtime_speed-<model>-<UTC time>.json and is printed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
REQUEST_TIMEOUT = 60  # seconds

_SIZE_PROBE = r"""
import importlib.metadata as md, json, re, site, sys
def closure(name):
    seen, todo, total, files = set(), [name], 0, 0
    while todo:
        key = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = md.distribution(key)
        except md.PackageNotFoundError:
            continue
        for f in dist.files or []:
            p = dist.locate_file(f)
            if p.is_file():
                total += p.stat().st_size; files += 1
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0])
    return {"distributions": sorted(seen), "bytes": total, "files": files}
dirs = sorted({p for p in sys.path if p.endswith("site-packages")})
print(json.dumps({"site_packages": dirs, "closure": closure(sys.argv[1]), "python": sys.version.split()[0]}))
"""

_TORCH_TIMING = r"""
import json, statistics, sys, time
import torch
from ad_core import load_model
run_dir, files, batch, repeats = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
detector = load_model(run_dir, device="cpu")
detector.predict_paths(files[:1], batch_size=1)
start = time.perf_counter(); detector.predict_paths(files, batch_size=batch); bulk = time.perf_counter() - start
single = []
for i in range(repeats):
    start = time.perf_counter(); detector.predict_paths([files[i % len(files)]], batch_size=1)
    single.append(time.perf_counter() - start)
print(json.dumps({"images_per_s": len(files) / bulk, "latency_ms_median": 1000 * statistics.median(single),
                  "latency_ms_p95": 1000 * sorted(single)[int(0.95 * (len(single) - 1))],
                  "torch": torch.__version__, "threads": torch.get_num_threads()}))
"""


def install_size(python: str, top: str) -> dict[str, Any]:
    """`du` of the interpreter's site-packages folders and the size of `top`'s requirement closure."""
    probe = json.loads(subprocess.run([python, "-c", _SIZE_PROBE, top], capture_output=True, text=True,
                                      check=True, timeout=600).stdout)
    sizes = {}
    for folder in probe["site_packages"]:
        du = subprocess.run(["du", "-sb", folder], capture_output=True, text=True, timeout=600)
        if du.returncode == 0:
            sizes[folder] = int(du.stdout.split()[0])
    return {"python": python, "site_packages_bytes": sizes, "site_packages_mb": round(sum(sizes.values()) / 1e6, 1),
            f"{top}_closure_mb": round(probe["closure"]["bytes"] / 1e6, 1),
            f"{top}_closure": probe["closure"]["distributions"]}


def make_images(folder: Path, count: int, height: int, width: int) -> list[Path]:
    """`count` PNGs of random texture at 1.5x the export's size (so each is decoded and resized)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, size=(height * 3 // 2, width * 3 // 2, 3), dtype=np.uint8)
        paths.append(folder / f"img{i:03d}.png")
        Image.fromarray(pixels, "RGB").save(paths[-1])
    return paths


def runtime_timing(detector: Any, files: list[Path], repeats: int) -> dict[str, float]:
    detector.predict(files[:1])  # warm-up: onnxruntime allocates on its first run
    start = time.perf_counter()
    detector.predict(files, batch_size=16)
    bulk = time.perf_counter() - start
    single = []
    for i in range(repeats):
        start = time.perf_counter()
        detector.predict([files[i % len(files)]])
        single.append(time.perf_counter() - start)
    return {"images_per_s": len(files) / bulk, "latency_ms_median": 1000 * statistics.median(single),
            "latency_ms_p95": 1000 * sorted(single)[int(0.95 * (len(single) - 1))]}


def server_timing(detector: Any, files: list[Path], clients: int, requests_each: int) -> dict[str, float]:
    """Requests/s and median latency of POST /predict with `clients` concurrent clients on 127.0.0.1."""
    from ad_runtime.server import make_server

    bodies = [path.read_bytes() for path in files]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = make_server(detector, "127.0.0.1", port, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + REQUEST_TIMEOUT
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)

    def client(index: int) -> list[float]:
        times = []
        for k in range(requests_each):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
            start = time.perf_counter()
            connection.request("POST", "/predict", body=bodies[(index + k) % len(bodies)],
                               headers={"Content-Type": "image/png"})
            response = connection.getresponse()
            response.read()
            times.append(time.perf_counter() - start)
            connection.close()
            if response.status != 200:
                raise RuntimeError(f"POST /predict answered {response.status}")
        return times

    try:
        client(0)  # warm-up
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            latencies = [t for batch in pool.map(client, range(clients)) for t in batch]
        elapsed = time.perf_counter() - start
    finally:
        server.should_exit = True
        thread.join(REQUEST_TIMEOUT)
        sock.close()
    return {"clients": clients, "requests": len(latencies), "requests_per_s": len(latencies) / elapsed,
            "latency_ms_median": 1000 * statistics.median(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--run-dir", type=Path, help="the run the export came from: also time adcore's torch path")
    parser.add_argument("--torch-python", default=str(REPO / ".venv" / "bin" / "python"),
                        help="interpreter of the torch environment (default .venv/bin/python)")
    parser.add_argument("--images", type=int, default=32, help="generated images to score (default 32)")
    parser.add_argument("--repeats", type=int, default=20, help="single-image calls for the latency (default 20)")
    parser.add_argument("--requests", type=int, default=10, help="requests per server client (default 10)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all)")
    args = parser.parse_args()

    from ad_runtime import Detector, __version__

    detector = Detector.load(args.export_dir, threads=args.threads)
    record: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "load_average_1m": os.getloadavg()[0], "platform": platform.platform()},
        "export": {"dir": str(args.export_dir), "model": detector.info.model, "input": list(detector.input_size),
                   "batch": detector.backend.batch or "dynamic", "precision": detector.info.raw.get("precision")},
        "versions": {"ad-runtime": __version__, "onnxruntime": _version("onnxruntime")},
        "install": {"runtime": install_size(sys.executable, "ad-runtime")},
    }
    if Path(args.torch_python).exists():
        record["install"]["torch"] = install_size(args.torch_python, "ad-core")
    with tempfile.TemporaryDirectory() as tmp:
        files = make_images(Path(tmp), args.images, *detector.input_size)
        record["runtime"] = runtime_timing(detector, files, args.repeats)
        if args.run_dir is not None:
            done = subprocess.run([args.torch_python, "-c", _TORCH_TIMING, str(args.run_dir),
                                   json.dumps([str(f) for f in files]), "16", str(args.repeats)],
                                  capture_output=True, text=True, timeout=1800,
                                  env={**os.environ, "ADCORE_PROGRESS": "0"})
            if done.returncode != 0:
                raise SystemExit(f"timing adcore's torch path failed:\n{done.stderr}")
            record["torch_eager"] = json.loads(done.stdout.strip().splitlines()[-1])
        record["server"] = [server_timing(detector, files, clients, args.requests) for clients in (1, 4)]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = RESULTS / f"runtime_speed-{detector.info.model}-{stamp}.json"
    target.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=2))
    print(f"written to {target}")


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
