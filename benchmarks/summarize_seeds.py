"""Mean ± std over seeds of side-by-side records: `adcore_*.json` (benchmarks/run.py) and `anomalib_*.json` (the
anomalib harness), grouped by library and model.

    python benchmarks/summarize_seeds.py benchmarks/results/seed_sweeps
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

# (our key, the harness's key) per column
COLUMNS = {"image AUROC": ("image_auroc", "image_AUROC"), "pixel AUROC": ("pixel_auroc", "pixel_AUROC"),
           "fit s": ("fit_s", "fit_s"), "test img/s": ("test_img_s", "test_img_s"),
           "peak RSS MB": ("peak_rss_mb", "peak_rss_MiB")}


def collect(directory: Path) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for path in sorted(directory.glob("*.json")):
        library = path.name.split("_", 1)[0]
        if library not in ("adcore", "anomalib"):
            continue
        for row in json.loads(path.read_text()).get("rows", []):
            if row.get("status") == "ok":
                groups[(row["model"], library)].append(row)
    return groups


def summarize(groups: dict[tuple[str, str], list[dict]]) -> str:
    lines = ["| model | library | runs | " + " | ".join(COLUMNS) + " |", "|---" * (3 + len(COLUMNS)) + "|"]
    for (model, library), rows in sorted(groups.items()):
        cells = []
        for ours, theirs in COLUMNS.values():
            values = [row[ours if library == "adcore" else theirs] for row in rows]
            values = [float(v) for v in values if v is not None]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}" if values else "n/a")
        lines.append(f"| {model} | {library} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    print(summarize(collect(parser.parse_args().directory)))


if __name__ == "__main__":
    main()
