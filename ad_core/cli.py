"""The `adcore` command line. Listing commands import no torch and no plugin code."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

import click

from ad_core import __version__
from ad_core.plugins import get_registry


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)] if rows else [len(h) for h in headers]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths]), *[line(r) for r in rows]])


def _parse_set(values: tuple[str, ...]) -> dict[str, Any]:
    """`--set key=value`: values are read as JSON when they parse (numbers, booleans, lists), else as text."""
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {item!r}", param_hint="--set")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _split(value: str) -> list[str] | str:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    return parts[0] if len(parts) == 1 else parts


class PluginCommandsGroup(click.Group):
    """The `adcore` group: plugins add their commands when a command is looked up, not when the CLI is imported."""

    plugins_loaded = False

    def _load_plugin_commands(self) -> None:
        if not self.plugins_loaded:
            self.plugins_loaded = True
            from ad_core.plugins import add_plugin_commands

            add_plugin_commands(self, get_registry())

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            self._load_plugin_commands()
            command = super().get_command(ctx, cmd_name)
        return command


@click.group(cls=PluginCommandsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="adcore")
@click.option("--debug", is_flag=True, help="Show the full traceback of any error.")
def main(debug: bool) -> None:
    """ad-core: train, compare and deploy visual anomaly detectors."""


LIST_WIDTH = 100  # `adcore list-models` fits a terminal this wide; `--wide` adds the papers


def _wrapped_rows(rows: list[list[str]], headers: list[str], width: int) -> list[list[str]]:
    """Rows whose last cell is wrapped (at ", ") so that the table fits `width` columns."""
    import textwrap

    fixed = [max(len(str(x)) for x in col) for col in zip(headers[:-1], *[r[:-1] for r in rows])]
    room = max(20, width - sum(fixed) - 2 * len(fixed))
    out: list[list[str]] = []
    for row in rows:
        lines = textwrap.wrap(row[-1], room, break_long_words=False, break_on_hyphens=False) or [""]
        out.append([*row[:-1], lines[0]])
        out.extend([*[""] * (len(row) - 1), line] for line in lines[1:])
    return out


@main.command("list-models")
@click.option("--paradigm", help="Only models of this paradigm (memory, flow, kd, ...).")
@click.option("--wide", is_flag=True, help="Add each model's paper (wider than 100 columns).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output, papers and defaults included.")
def list_models(paradigm: str | None, wide: bool, as_json: bool) -> None:
    """Registered models and their variants (`--wide` or `--json`: their papers too)."""
    registry = get_registry()
    entries = [e for e in registry.models.values() if paradigm is None or e.spec.paradigm == paradigm]
    entries.sort(key=lambda e: (e.spec.paradigm, e.spec.name))
    broken = [p for p in registry.plugins.values() if p.broken]
    if as_json:
        _echo_json({
            "models": [{"name": e.spec.name, "paradigm": e.spec.paradigm, "plugin": e.plugin,
                        "variants": sorted(e.spec.variants), "paper": e.spec.paper, "trainer": e.spec.trainer,
                        "defaults": e.spec.defaults, "unified": e.spec.unified,
                        **({"unified_reason": e.spec.unified_reason} if not e.spec.unified else {})}
                       for e in entries],
            "broken_plugins": [{"plugin": p.name, "error": p.error} for p in broken],
            "unavailable_names": [{"name": n, "plugins": ps} for n, ps in sorted(registry.conflicts.items())],
        })
        return
    if wide:
        rows = [[e.spec.name, e.spec.paradigm, e.plugin, ", ".join(sorted(e.spec.variants)) or "-", e.spec.paper]
                for e in entries]
        headers = ["model", "paradigm", "plugin", "variants", "paper"]
    else:
        headers = ["model", "paradigm", "plugin", "variants"]
        rows = _wrapped_rows([[e.spec.name, e.spec.paradigm, e.plugin, ", ".join(sorted(e.spec.variants)) or "-"]
                              for e in entries], headers, LIST_WIDTH)
    click.echo(_table(rows, headers) if rows else "no models registered")
    for p in broken:
        click.secho(f"broken plugin {p.name}: {p.error} (see `adcore plugins`)", fg="red", err=True)
    for name, plugins in sorted(registry.conflicts.items()):
        click.secho(f"model name {name!r} is unavailable: registered by several plugins ({', '.join(plugins)})",
                    fg="red", err=True)


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_cmd(as_json: bool) -> None:
    """Installed plugins, their versions and models; broken ones with their error."""
    registry = get_registry()
    infos = sorted(registry.plugins.values(), key=lambda p: p.name)
    if as_json:
        _echo_json([{"plugin": p.name, "distribution": p.distribution, "version": p.version, "models": p.models,
                     "status": "broken" if p.broken else "ok", "error": p.error} for p in infos])
        return
    rows = [[p.name, p.distribution or "-", p.version or "-", "BROKEN" if p.broken else "ok",
             p.error if p.broken else ", ".join(p.models)] for p in infos]
    click.echo(_table(rows, ["plugin", "distribution", "version", "status", "models / error"]) if rows
               else "no plugins installed (pip install -e plugins/ad-memory)")


@main.command("list-datasets")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_datasets_cmd(as_json: bool) -> None:
    """Built-in dataset formats."""
    from ad_core.data.formats import list_datasets

    rows = list_datasets()
    if as_json:
        _echo_json(rows)
        return
    click.echo(_table([[r["name"], r["description"], ", ".join(r.get("categories") or []) or "(from folders)"]
                       for r in rows], ["dataset", "description", "categories"]))


def _options(*options):
    """Apply click options in the order listed (so `--help` lists them in that order)."""

    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f

    return apply


_ROOT = click.option("--root", type=click.Path(path_type=Path), help="Dataset root (default: dataset_dir/<dataset>).")
_MODEL_OPTIONS = [
    click.option("--backbone-dir", type=click.Path(path_type=Path), help="Folder of offline backbone weights."),
    click.option("--epochs", "num_epochs", type=int, help="Training epochs (gradient models)."),
    click.option("--image-size", type=int, help="Square input size in pixels."),
    click.option("--batch-size", type=int),
    click.option("--device", default=None, help="auto, cpu, cuda, cuda:1 ..."),
    click.option("--seed", type=int),
]
_run_options = _options(
    _ROOT,
    click.option("--output-dir", type=click.Path(path_type=Path), help="Where outputs go (default: outputs/)."),
    *_MODEL_OPTIONS,
    click.option("--set", "extra", multiple=True, metavar="KEY=VALUE", help="Any model option, e.g. backbone=resnet18."),
)


def _overrides(backbone_dir, extra, **options) -> dict[str, Any]:
    from ad_core.settings import set_globals

    if backbone_dir:
        set_globals(backbone_dir=backbone_dir)
    out = {k: v for k, v in options.items() if v is not None}
    out.update(_parse_set(extra))
    return out


def _debug() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().params.get("debug"))


_THREADS = click.option("--threads", type=int, help="CPU threads for torch (default: every available CPU, or "
                                                    "OMP_NUM_THREADS when set).")


def _threads(threads: int | None) -> None:
    from ad_core.threads import configure_threads

    configure_threads(threads)


def _fail(exc: Exception) -> NoReturn:
    """A user error is one red line and exit status 1; a bug (or any error with --debug) keeps its traceback."""
    from ad_core.errors import describe, is_user_error
    from ad_core.preflight import cli_spelling

    if _debug() or not is_user_error(exc):
        raise exc
    click.secho(f"error: {cli_spelling(describe(exc))}", fg="red", err=True)
    sys.exit(1)


@main.command("train")
@click.argument("dataset")
@click.argument("category")
@click.argument("model")
@_run_options
@click.option("--unified", is_flag=True, help="Train ONE model on all the CATEGORIES together (multi-class) and "
                                              "evaluate it per category and on the mean.")
@_THREADS
def train_cmd(dataset: str, category: str, model: str, root, output_dir, backbone_dir, extra, unified: bool,
              threads: int | None, **options) -> None:
    """Train and evaluate MODEL(s) on CATEGORY(ies) of DATASET; comma lists and 'all' work.

    Without pretrained backbone weights this stops and says where to put them (`--set pretrained=false` trains
    with random weights instead; `adcore demo` does that by itself, with a warning).

    Example: adcore train mvtec bottle,wood patchcore --image-size 256
    (unified: adcore train mvtec bottle,wood,screw patchcore --unified; test one category of the unified model
    with adcore test RUN_FOLDER --dataset mvtec --category wood)
    """
    from ad_core.preflight import check_request

    overrides = _overrides(backbone_dir, extra, **options)
    models = _split(model)
    try:
        check_request([models] if isinstance(models, str) else models, overrides)  # before torch is imported
        _threads(threads)
        from ad_core.runner import train

        train(_split(dataset), _split(category), models, root=root, output_dir=output_dir, unified=unified,
              **overrides)
    except Exception as exc:
        _fail(exc)


@main.command("test")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.option("--dataset", required=True)
@click.option("--category", required=True)
@click.option("--root", type=click.Path(path_type=Path))
@click.option("--output-dir", type=click.Path(path_type=Path), help="Default: CHECKPOINT/test-<dataset>-<category>.")
@click.option("--device", default=None)
@_THREADS
def test_cmd(checkpoint: Path, dataset: str, category: str, root, output_dir, device, threads) -> None:
    """Evaluate a trained CHECKPOINT folder on a dataset's test split."""
    from ad_core.runner import summary_table, test_checkpoint

    try:
        _threads(threads)
        result = test_checkpoint(checkpoint, dataset, category, root=root, output_dir=output_dir, device=device)
    except Exception as exc:
        _fail(exc)
    click.echo(summary_table([result]))
    click.echo(f"outputs written to {result.output_dir}")


@main.command("predict")
@click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--output", type=click.Path(path_type=Path), help="Folder for anomaly-map PNGs (none if omitted).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--batch-size", type=int, default=16)
@click.option("--device", default=None)
@click.option("--category", help="A unified run decides with this category's own thresholds (default: those "
                                 "chosen on all its categories).")
@_THREADS
def predict_cmd(checkpoint: Path, inputs: tuple[Path, ...], output, as_json: bool, batch_size: int, device,
                category: str | None, threads) -> None:
    """Score images or folders of images with a trained CHECKPOINT."""
    from ad_core.inference import predict_paths

    try:
        _threads(threads)
        rows = predict_paths(checkpoint, list(inputs), output_dir=output, batch_size=batch_size, device=device,
                             category=category)
    except Exception as exc:
        _fail(exc)
    failed = [r for r in rows if "error" in r]
    rows = [r for r in rows if "error" not in r]
    if as_json:
        _echo_json(rows + failed)
    else:
        table = [[r["path"], f"{r['score']:.4g}", f"{r['normalized_score']:.3f}",
                  "anomalous" if r["label"] else "normal", r.get("map") or "-"] for r in rows]
        click.echo(_table(table, ["image", "score", "score 0-1", "label", "map"]))
        n_bad = sum(r["label"] for r in rows)
        click.echo(f"{n_bad} of {len(rows)} image(s) anomalous at the stored threshold")
    for row in failed:
        click.secho(f"error: {row['error']}", fg="red", err=True)
    if failed:
        click.secho(f"{len(failed)} image(s) could not be read and were not scored", fg="red", err=True)
        sys.exit(1)


@main.command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["onnx", "openvino"]), default="onnx", show_default=True,
              help="openvino adds the OpenVINO IR converted from the ONNX graph (needs the openvino package).")
@click.option("--output", type=click.Path(path_type=Path), help="Export folder (default: RUN_DIR/export-<format>).")
@click.option("--fp16", is_flag=True, help="Store the graph's large constants in half precision (half the size).")
@click.option("--batch", default="1", show_default=True, help="The graph's batch size N, or 'dynamic'.")
@click.option("--json", "as_json", is_flag=True, help="Print the export's model.json.")
def export_cmd(run_dir: Path, fmt: str, output: Path | None, fp16: bool, batch: str, as_json: bool) -> None:
    """Export a trained RUN_DIR (or ensemble folder) to ONNX, parity with torch checked on its test images."""
    try:
        from ad_core.exporting import export

        result = export(run_dir, output, format=fmt, fp16=fp16, batch=batch)
    except Exception as exc:
        _fail(exc)
    if as_json:
        _echo_json(result.metadata)
        return
    parity = result.parity
    click.echo(f"exported to {result.directory} in {result.seconds:.1f} s")
    map_diff = "-" if parity["max_map_diff"] is None else f"{parity['max_map_diff']:.3g}"
    click.echo(f"parity on {parity['images']} {parity['source']}: max score diff {parity['max_score_diff']:.3g}, "
               f"max map diff {map_diff}, label mismatches {parity['label_mismatches']}")


@main.command("ensemble")
@click.option("--from", "from_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Benchmark directory: <dir>/<dataset>/<category>/<model>/ folders of trained models.")
@click.option("--members", help="Comma-separated checkpoint folders to fuse (instead of --from).")
@click.option("--top", type=int, default=3, show_default=True, help="With --from: how many best models to fuse.")
@click.option("--by", default="validation_image_auroc", show_default=True,
              help="With --from: metric to rank by: validation_image_auroc or validation_pixel_auroc (the members' "
                   "validation source), or, as model selection on test data, a test-split metric by name "
                   "(image_auroc, image_aupr, image_f1_max, pixel_auroc, pixel_aupro).")
@click.option("--dataset", help="Only this dataset (with --from), or the data to normalise and test on.")
@click.option("--category", help="Only this category (with --from), or the data to normalise and test on.")
@click.option("--fusion", type=click.Choice(["mean", "max", "rank_mean"]),
              help="Fusion rule to save (default: the best one on the validation source, by image AUROC, "
                   "then pixel AUROC).")
@click.option("--output-dir", type=click.Path(path_type=Path),
              help="Default: <from>/<dataset>/<category>/ensemble-top<k>, or outputs/<dataset>/<category>/ensemble.")
@click.option("--root", type=click.Path(path_type=Path), help="Dataset root (default: the one the members used).")
@click.option("--image-size", type=int, help="Ensemble input size (default: the largest member's).")
@click.option("--threshold-method", default="normal_fpr", show_default=True,
              help="normal_fpr (1% FPR on held-out normal images), mean_ksigma, or a test-label oracle by name.")
@click.option("--normal-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Normal images the members never saw, to normalise on (default: their training images).")
@click.option("--no-maps", is_flag=True, help="Skip the map panels.")
@click.option("--device", default=None)
def ensemble_cmd(from_dir: Path | None, members: str | None, top: int, by: str, dataset, category, fusion,
                 output_dir, root, image_size, threshold_method: str, normal_dir, no_maps: bool, device) -> None:
    """Fuse the top models of a benchmark (or the listed checkpoints) into one evaluated, saved detector.

    Example: adcore ensemble --from outputs --top 3 --dataset mvtec --category bottle
    """
    from ad_core.ensemble import build_ensemble, build_ensembles, ensemble_table

    if (from_dir is None) == (members is None):
        raise click.UsageError("give either --from BENCHMARK_DIR or --members DIR1,DIR2,...")
    options = {"fusion": fusion, "root": root, "image_size": image_size, "device": device,
               "threshold_method": threshold_method, "write_maps": not no_maps, "normal_dir": normal_dir}
    try:
        if from_dir is not None:
            results = build_ensembles(from_dir, top, by, dataset=dataset, category=category, output_dir=output_dir,
                                      **options)
        else:
            paths = [Path(p.strip()) for p in members.split(",") if p.strip()]
            results = [build_ensemble(paths, output_dir, dataset=dataset, category=category, **options)]
    except Exception as exc:
        _fail(exc)
    for result in results:
        click.echo(ensemble_table(result))
        click.echo(f"ensemble saved to {result.output_dir} (predict with: adcore predict {result.output_dir} IMAGES)\n")


@main.command("demo")
@click.option("--model", "model", default="patchcore", show_default=True, help="Model(s), comma-separated.")
@click.option("--categories", default="all", show_default=True, help="Demo categories, comma-separated, or all.")
@click.option("--image-size", type=int, default=128, show_default=True)
@click.option("--output-dir", type=click.Path(path_type=Path), default=Path("outputs"), show_default=True)
@click.option("--backbone-dir", type=click.Path(path_type=Path))
@click.option("--device", default=None)
def demo_cmd(model: str, categories: str, image_size: int, output_dir: Path, backbone_dir, device) -> None:
    """Build the synthetic demo set, train and evaluate a model on every demo category, print a results table.

    Unlike `adcore train`, which stops when pretrained backbone weights are missing, the demo warns before it
    starts and goes on with random weights (far lower accuracy).
    """
    from ad_core.preflight import check_request, missing_backbone_weights
    from ad_core.settings import set_globals

    if backbone_dir:
        set_globals(backbone_dir=backbone_dir)
    models = _split(model)
    models = [models] if isinstance(models, str) else models
    options = {"image_size": image_size, "on_missing_weights": "warn", "device": device}
    try:
        check_request(models, options)
        missing = missing_backbone_weights(models, options)
        if missing:
            click.secho("warning: no pretrained backbone weights on this machine, so the demo trains with random "
                        "weights and accuracy is far below what the models reach:\n  " + "\n  ".join(missing)
                        + "\nPut <timm name>.safetensors files in --backbone-dir (see README, Offline weights).",
                        fg="yellow", err=True)
        from ad_core.runner import summary_table, train

        with warnings.catch_warnings():  # said once, above and below, rather than once per run
            warnings.simplefilter("ignore", UserWarning)
            runs = train("demo", _split(categories), models, output_dir=output_dir, verbose=False, **options)
    except Exception as exc:
        _fail(exc)
    click.echo(summary_table(runs))
    if any(r.warnings for r in runs):
        click.secho("warning: no pretrained backbone weights were found, so random weights were used: the figures "
                    "above are far below what the models reach.", fg="yellow", err=True)
    click.echo(f"outputs written under {output_dir / 'demo'}")


def _split_model_options(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """`--set key=value` applies to every model, `--set model.key=value` to that model only."""
    shared: dict[str, Any] = {}
    per_model: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        model, dot, option = key.partition(".")
        if dot:
            per_model.setdefault(model.strip().lower(), {})[option.strip()] = value
        else:
            shared[key] = value
    return shared, per_model


@main.group("benchmark", invoke_without_command=True)
@_options(
    click.option("--models", help="Models or variants, comma-separated, e.g. padim,patchcore-r18."),
    click.option("--dataset", help="Dataset(s), comma-separated, e.g. mvtec."),
    click.option("--categories", default="all", show_default=True, help="Categories, comma-separated, or all."),
    click.option("-o", "--output", type=click.Path(path_type=Path), help="The benchmark directory (cells + report)."),
    _ROOT,
    *_MODEL_OPTIONS,
    click.option("--set", "extra", multiple=True, metavar="[MODEL.]KEY=VALUE",
                 help="A model option for every model (backbone=resnet18) or one (patchcore.coreset_ratio=0.01)."),
    click.option("--jobs", type=int, default=1, show_default=True, help="Cells run at once."),
    click.option("--shard", metavar="I/N", help="Run only shard I of N of the grid (every N-th cell)."),
    click.option("--cell-timeout", type=float, metavar="SECONDS", help="Kill and record a cell that runs longer."),
    click.option("--threads", type=int, help="Torch threads per cell (default: CPUs / jobs when jobs > 1)."),
    click.option("--examples", type=int, default=4, show_default=True,
                 help="Test images per category whose maps the report shows side by side."),
    click.option("--unified", is_flag=True, help="One model per dataset trained on all the categories together, "
                                                 "evaluated per category (listed as '<model> (unified)')."),
    click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                 help="Where cells run: child processes here, or Ray tasks on a cluster (pip install ray)."),
    click.option("--address", help="Ray cluster to join: auto, or ray://HOST:10001 (default: a local instance)."),
    click.option("--cpus-per-cell", type=float, help="Ray: CPUs each cell asks for (default 1)."),
    click.option("--gpus-per-cell", type=float, default=0, show_default=True, help="Ray: GPUs each cell asks for."),
)
@click.pass_context
def benchmark_cmd(ctx: click.Context, models, dataset, categories, output, root, backbone_dir, extra, jobs, shard,
                  cell_timeout, threads, examples, unified, backend, address, cpus_per_cell, gpus_per_cell,
                  **options) -> None:
    """Compare models: every model on every category, each cell in its own process, then a leaderboard report.

    Cells land in OUTPUT/<dataset>/<category>/<model>/; finished cells are skipped on a re-run, so a killed
    grid resumes. `adcore benchmark report DIR` rebuilds the report from whatever cells DIR holds (e.g.
    shards run on several machines, copied together).

    Example: adcore benchmark --models padim,patchcore --dataset mvtec --categories bottle,wood -o bench
    """
    if ctx.invoked_subcommand is not None:
        return
    if not models or not dataset or output is None:
        raise click.UsageError("--models, --dataset and --output are required (or: adcore benchmark report DIR)")
    from ad_core.benchmarking import benchmark

    try:
        shared, per_model = _split_model_options(_overrides(backbone_dir, extra, **options))
        run = benchmark(models, dataset, categories, output=output, root=root, jobs=jobs, shard=shard,
                        cell_timeout=cell_timeout, threads=threads, examples=examples, model_overrides=per_model,
                        unified=unified, backend=backend, address=address, cpus_per_cell=cpus_per_cell,
                        gpus_per_cell=gpus_per_cell, **shared)
    except Exception as exc:
        _fail(exc)
    _echo_leaderboard(output)
    if run.failed:
        click.secho(f"{len(run.failed)} of {len(run.records)} cells did not finish (see the report)", fg="red",
                    err=True)


def _echo_leaderboard(directory: Path) -> None:
    """The top of leaderboard.md (the per-model tables) and where the report is."""
    path = directory / "leaderboard.md"
    if not path.is_file():  # e.g. an empty shard of an empty directory
        click.echo(f"no cells in {directory} yet")
        return
    text = path.read_text()
    click.echo(text.split("### ", 1)[0].rstrip() if "### " in text else text.rstrip())
    click.echo(f"\nreport: {directory / 'report.html'}")


@benchmark_cmd.command("report")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def benchmark_report_cmd(directory: Path) -> None:
    """Merge the cells DIRECTORY holds into leaderboard.{csv,json,md} and report.html."""
    from ad_core.benchmarking import write_report

    try:
        write_report(directory)
    except Exception as exc:
        _fail(exc)
    _echo_leaderboard(directory)


if __name__ == "__main__":
    main()
