"""Mean ± std over seeds of side-by-side records: `adcore_*.json` (benchmarks/run.py) and `anomalib_*.json` (the
anomalib harness), grouped by library and model.

    python benchmarks/summarize_seeds.py benchmarks/results/seed_sweeps

`--paired REFERENCE` reads one record file instead (`{"configs": {name: {"runs": {seed: {metric: value}}}}}`, as in
benchmarks/results/recon/) and compares every configuration with REFERENCE on the seeds both ran: means with their
standard errors, and the per-seed differences (same seed on both sides) with their mean, standard error, 95 %
t-interval, paired t-test and Wilcoxon signed-rank p-values. A difference whose interval holds 0 is within the noise
of that many seeds.

    python benchmarks/summarize_seeds.py benchmarks/results/recon/demo_weave_64px_draem_side_by_side_12_seeds.json \
        --paired anomalib_2.7
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


def paired(record: dict, reference: str, metrics: tuple[str, ...] = ("image_auroc", "pixel_auroc")) -> dict:
    """Per configuration and metric: mean ± standard error, and the paired differences to `reference`."""
    from scipy import stats

    configs = record["configs"]
    if reference not in configs:
        raise SystemExit(f"no configuration {reference!r} in the record; it has: {', '.join(configs)}")
    base = configs[reference]["runs"]
    out: dict = {}
    for name, config in configs.items():
        runs = config["runs"]
        seeds = sorted((s for s in runs if s in base), key=int)
        row: dict = {"seeds": [int(s) for s in seeds]}
        for metric in metrics:
            # rounded to 6 places: anomalib reports float32 AUROCs (0.8300000429 for 0.83), a tie must stay a tie
            mine = [round(float(runs[s][metric]), 6) for s in seeds]
            theirs = [round(float(base[s][metric]), 6) for s in seeds]
            entry = {"mean": statistics.mean(mine) if mine else None,
                     "se": statistics.stdev(mine) / len(mine) ** 0.5 if len(mine) > 1 else None}
            if name != reference and len(seeds) > 1:
                diffs = [round(a - b, 6) for a, b in zip(mine, theirs)]
                mean, se = statistics.mean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5
                half = float(stats.t.ppf(0.975, len(diffs) - 1)) * se
                entry["difference"] = {"per_seed": [round(d, 4) for d in diffs], "mean": mean, "se": se,
                                       "ci95": [mean - half, mean + half], "wins": sum(d > 0 for d in diffs),
                                       "losses": sum(d < 0 for d in diffs),
                                       "t_test_p": float(stats.ttest_rel(mine, theirs).pvalue),
                                       "wilcoxon_p": float(stats.wilcoxon(diffs).pvalue) if any(diffs) else 1.0}
            row[metric] = entry
        out[name] = row
    return out


def paired_table(summary: dict, reference: str) -> str:
    """Markdown: mean ± SE per configuration, then the paired difference to the reference with its 95 % interval."""
    lines = [f"| configuration | seeds | image AUROC mean ± SE | pixel AUROC mean ± SE | image, paired difference to "
             f"{reference} [95 % CI] (t / Wilcoxon p) | pixel, paired difference [95 % CI] (t / Wilcoxon p) |",
             "|---|---|---|---|---|---|"]
    for name, row in summary.items():
        cells = [f"{row[m]['mean']:.3f} ± {row[m]['se']:.3f}" if row[m]["se"] is not None else "n/a"
                 for m in ("image_auroc", "pixel_auroc")]
        for m in ("image_auroc", "pixel_auroc"):
            d = row[m].get("difference")
            cells.append(f"{d['mean']:+.3f} ± {d['se']:.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] "
                         f"({d['t_test_p']:.2f} / {d['wilcoxon_p']:.2f})" if d else "")
        seeds = row["seeds"]
        lines.append(f"| {name} | {seeds[0]}-{seeds[-1]} ({len(seeds)}) | " + " | ".join(cells) + " |"
                     if seeds else f"| {name} | none | | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a directory of sweep files, or with --paired one record file")
    parser.add_argument("--paired", metavar="REFERENCE", help="compare every configuration of the record with this one")
    args = parser.parse_args()
    if args.paired:
        summary = paired(json.loads(args.path.read_text()), args.paired)
        print(paired_table(summary, args.paired))
        print(json.dumps(summary))
        return
    print(summarize(collect(args.path)))


if __name__ == "__main__":
    main()
