"""`adcore benchmark`: isolated cells, crash and timeout records, kill and resume, shards, and the report.

One grid is run once for the module (two tiny models and a deliberately crashing one, 64 px, two demo
categories): the CLI is killed after its first finished cell, the grid is completed in two shards through
the Python API, then a timed-out and a killed cell are added and the report is rebuilt from the directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import ad_core.plugins
from ad_core.benchmarking import Cell, CellOptions, benchmark, make_grid, parse_shard, shard
from ad_core.benchmarking.cells import launch, poll
from ad_core.benchmarking.examples import EXAMPLES_NAME, read_examples
from ad_core.cli import main
from installed_plugin import install_test_plugin

MODELS = ["padim", "patchcore-r18", "crashing"]
CATEGORIES = ["disc", "weave"]
OPTIONS = {"image_size": 64, "pretrained": False}
PER_MODEL = {"patchcore-r18": {"coreset_ratio": 0.05}}

PLUGIN = """
    import os
    import time

    from ad_core.hookspecs import hookimpl
    from ad_core.specs import ModelSpec


    def crashing(pretrained=False):
        raise RuntimeError("deliberate crash while building the model")


    def sleeper(pretrained=False):
        time.sleep(300)


    @hookimpl
    def adcore_register_models(register):
        register(ModelSpec(name="crashing", paradigm="test", factory="bench_test_plugin:crashing",
                           trainer="feature_bank"))
        register(ModelSpec(name="sleeper", paradigm="test", factory="bench_test_plugin:sleeper",
                           trainer="feature_bank"))
"""


def _cells(directory: Path) -> dict[str, dict]:
    return {f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text())
            for p in directory.glob("demo/*/*/cell.json")}


def _run_cli_until_first_cell(directory: Path, env: dict) -> dict[str, dict]:
    """Start the grid with the CLI, SIGKILL it once a cell has finished, and return the cells as left."""
    import psutil

    args = [sys.executable, "-m", "ad_core.cli", "benchmark", "--models", ",".join(MODELS), "--dataset", "demo",
            "--categories", ",".join(CATEGORIES), "--image-size", "64", "--set", "pretrained=false",
            "--set", "patchcore-r18.coreset_ratio=0.05", "--jobs", "2", "--output", str(directory)]
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    try:
        while not any(c.get("status") == "ok" for c in _cells(directory).values()):
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "no cell finished in time"
            time.sleep(0.2)
        children = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGKILL)
        process.wait()
        gone, alive = psutil.wait_procs(children, timeout=60)  # returns as soon as they are gone; slack for load
        assert not alive, f"cells outlived the killed grid: {alive}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    return _cells(directory)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    plugin_dir, directory = root / "plugin", root / "grid"
    install_test_plugin(plugin_dir, "ad-bench-test", "bench_test_plugin", PLUGIN)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(plugin_dir), os.environ.get("PYTHONPATH")])))
        mp.setenv("ADCORE_PROGRESS", "0")
        mp.delenv("ADCORE_LOAD_PLUGINS", raising=False)
        mp.syspath_prepend(str(plugin_dir))
        mp.setattr(ad_core.plugins, "_REGISTRY", None)
        after_kill = _run_cli_until_first_cell(directory, dict(os.environ))
        shards = [benchmark(MODELS, "demo", CATEGORIES, output=directory, jobs=3, shard=f"{i}/2", report=False,
                            verbose=False, model_overrides=PER_MODEL, **OPTIONS) for i in (1, 2)]
        timed_out = benchmark("sleeper", "demo", "weave", output=directory, cell_timeout=1, report=False,
                              verbose=False)
        running = launch(Cell("demo", "disc", "sleeper"), CellOptions(output=directory))
        running.process.send_signal(signal.SIGKILL)  # what the kernel's out-of-memory killer does
        while (killed := poll(running)) is None:
            time.sleep(0.05)
        cli = CliRunner().invoke(main, ["benchmark", "report", str(directory)])
        assert cli.exit_code == 0, cli.output
        sys.modules.pop("bench_test_plugin", None)
    ad_core.plugins._REGISTRY = None
    return SimpleNamespace(directory=directory, after_kill=after_kill, shards=shards, timed_out=timed_out,
                           killed=killed, cells=_cells(directory), cli_output=cli.output)


def test_shards_partition_any_grid() -> None:
    cells = make_grid(["a", "b"], {"a": ["x", "y", "z"], "b": ["x"]}, ["m1", "m2", "m3"])
    assert len(cells) == 12 and len(set(cells)) == 12
    for n in (1, 2, 3, 5, 13):
        parts = [shard(cells, i, n) for i in range(1, n + 1)]
        assert sorted(c for part in parts for c in part) == sorted(cells)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shard(cells, 2, 3) == shard(list(cells), 2, 3)  # deterministic
    assert parse_shard(" 2/4 ") == (2, 4)
    for bad in ("0/2", "3/2", "2", "a/b", "1/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_killed_grid_leaves_no_cell_that_looks_finished_but_is_not(grid) -> None:
    assert any(c["status"] == "ok" for c in grid.after_kill.values())
    for key, record in grid.after_kill.items():
        assert record["status"] in ("ok", "failed", "running"), key
        if record["status"] == "ok":
            folder = grid.directory / "demo" / key
            for name in ("results.json", "model.safetensors", "model.json", "scores.json"):
                assert (folder / name).is_file(), (key, name)


def test_rerun_in_shards_skips_finished_cells_and_completes_the_grid(grid) -> None:
    finished_before = {k for k, c in grid.after_kill.items() if c["status"] == "ok"}
    records = [r for run in grid.shards for r in run.records]
    keys = [f"{r['category']}/{r['model']}" for r in records]
    assert sorted(keys) == sorted(f"{c}/{m}" for c in CATEGORIES for m in MODELS)  # the shards partition the grid
    resumed = {f"{r['category']}/{r['model']}" for r in records if r.get("resumed")}
    assert resumed == finished_before
    for key in finished_before:  # the finished cells were not run again
        assert grid.cells[key]["finished"] == grid.after_kill[key]["finished"]
    for category in CATEGORIES:
        assert grid.cells[f"{category}/padim"]["status"] == "ok"
        assert grid.cells[f"{category}/patchcore-r18"]["status"] == "ok"


def test_cells_record_metrics_timings_memory_and_thresholds(grid) -> None:
    for category in CATEGORIES:
        for model in ("padim", "patchcore-r18"):
            cell = grid.cells[f"{category}/{model}"]
            folder = grid.directory / "demo" / category / model
            assert set(cell["metrics"]) == {"image_auroc", "image_aupr", "image_f1_max", "pixel_auroc", "pixel_aupro",
                                            "pixel_aupimo", "recall", "fpr"}
            assert cell["metrics"]["pixel_aupimo"] is None  # 10 normal images of 64 px cannot resolve FPR 1e-5
            assert all(0.0 <= v <= 1.0 for k, v in cell["metrics"].items() if k != "pixel_aupimo")
            assert set(cell["per_defect"]) == {"scratch", "hole", "stain", "missing"}
            assert all(0.0 <= d["recall"] <= 1.0 and 0.0 <= d["pixel_auroc"] <= 1.0 for d in cell["per_defect"].values())
            assert cell["fit_seconds"] > 0 and cell["test_images_per_second"] > 0 and cell["peak_rss_mb"] > 50
            assert cell["checkpoint_bytes"] == (folder / "model.safetensors").stat().st_size
            assert cell["threshold"]["method"] == "normal_fpr"
            assert cell["threshold"]["value"] == cell["thresholds"]["normal_fpr"]
            scores = json.loads((folder / "scores.json").read_text())
            assert len(scores["scores"]) == len(scores["labels"]) == len(scores["paths"]) == cell["test_images"]
            assert cell["overrides"] == {**OPTIONS, **PER_MODEL.get(model, {})}
    hyper = json.loads((grid.directory / "demo/weave/patchcore-r18/model.json").read_text())["hyperparameters"]
    assert hyper["coreset_ratio"] == 0.05  # `--set patchcore-r18.coreset_ratio=...` reached that model only


def test_every_model_stores_maps_of_the_same_test_images(grid) -> None:
    for category in CATEGORIES:
        stored = [read_examples(grid.directory / "demo" / category / m / EXAMPLES_NAME)
                  for m in ("padim", "patchcore-r18")]
        assert stored[0]["paths"] == stored[1]["paths"] and len(stored[0]["paths"]) == 4
        assert stored[0]["labels"] == [1, 1, 1, 0]
        for examples in stored:
            assert examples["images"].shape == (4, 3, 64, 64) and examples["maps"].shape == (4, 64, 64)
            assert examples["maps"].min() >= 0.0 and examples["maps"].max() <= 1.0


def test_crashing_model_is_recorded_as_failed_and_the_grid_goes_on(grid) -> None:
    for category in CATEGORIES:
        cell = grid.cells[f"{category}/crashing"]
        assert cell["status"] == "failed"
        assert cell["error"] == "RuntimeError: deliberate crash while building the model"
        assert "Traceback" in cell["log_tail"] and "metrics" not in cell
        assert not (grid.directory / "demo" / category / "crashing" / "model.safetensors").exists()


def test_timeout_and_killed_cells_are_recorded(grid) -> None:
    timed_out = grid.cells["weave/sleeper"]
    assert [r["status"] for r in grid.timed_out.records] == ["timeout"]
    assert timed_out["status"] == "timeout" and "timeout of 1 s" in timed_out["error"]
    assert timed_out["returncode"] == -signal.SIGKILL
    killed = grid.cells["disc/sleeper"]
    assert killed == grid.killed
    assert killed["status"] == "failed" and "SIGKILL" in killed["error"] and "out of memory" in killed["error"]


def test_report_merges_every_cell_into_four_files(grid) -> None:
    d = grid.directory
    csv_lines = (d / "leaderboard.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + len(grid.cells) == 1 + 8
    board = json.loads((d / "leaderboard.json").read_text())
    statuses = {(c["category"], c["model"]): c["status"] for c in board["cells"]}
    assert statuses[("weave", "sleeper")] == "timeout" and statuses[("disc", "crashing")] == "failed"
    summary = {e["model"]: e for e in board["summary"]["demo"]}
    assert summary["padim"]["cells_ok"] == 2 and summary["crashing"]["cells_ok"] == 0
    padim_aurocs = [grid.cells[f"{c}/padim"]["metrics"]["image_auroc"] for c in CATEGORIES]
    assert summary["padim"]["image_auroc"]["mean"] == pytest.approx(sum(padim_aurocs) / 2)
    assert [e["rank"] for e in board["summary"]["demo"]] == [1, 2, 3, 4]
    assert {e["model"] for e in board["summary"]["demo"][:2]} == {"padim", "patchcore-r18"}
    md = (d / "leaderboard.md").read_text()
    assert "| padim |" in md and "deliberate crash" in md and "**timeout**" in md
    assert "### Per defect type: image recall at the saved threshold / pixel AUROC" in md
    scratch = grid.cells["weave/padim"]["per_defect"]["scratch"]
    assert f"| weave | scratch | {scratch['recall']:.3f} / {scratch['pixel_auroc']:.3f} |" in md
    page = (d / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "<link" not in page  # nothing external
    assert page.count('src="data:image/png;base64,') >= 5  # heatmap, scatter, histograms, maps x 2 categories
    assert "deliberate crash while building the model" in page
    assert "padim" in grid.cli_output and "report.html" in grid.cli_output


def test_benchmark_cli_reports_user_errors_before_running_anything(tmp_path) -> None:
    runner = CliRunner()
    missing = runner.invoke(main, ["benchmark", "--models", "padim"])
    assert missing.exit_code == 2 and "--dataset" in missing.output
    for args, message in [
        (["--models", "no-such-model"], "unknown model"),
        (["--models", "padim", "--set", "no_such_option=1"], "unknown option"),
        (["--models", "padim", "--set", "patchcore.coreset_ratio=0.1"], "not in the grid"),
        (["--models", "padim", "--shard", "3/2"], "shard"),
    ]:
        result = runner.invoke(main, ["benchmark", "--dataset", "demo", "--categories", "weave",
                                      "-o", str(tmp_path / "b"), *args])
        assert result.exit_code == 1 and message in result.output, result.output
    assert not (tmp_path / "b" / "demo").exists()  # nothing ran
    empty = runner.invoke(main, ["benchmark", "report", str(tmp_path)])
    assert empty.exit_code == 1 and "no benchmark cells" in empty.output


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_renders_and_sorts_in_a_headless_browser(grid) -> None:
    executable = _browser()
    if executable is None:
        pytest.skip("no Chromium installed (apt-get install chromium), so the report cannot be opened in a browser")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto((grid.directory / "report.html").as_uri())
            assert page.locator("#leaderboard-demo tbody tr").count() == 4
            assert page.locator("#cells-demo tbody tr").count() == 8
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            assert len(widths) >= 5 and all(w > 0 for w in widths)
            column = page.locator("#cells-demo thead th").all_inner_texts().index("image AUROC")
            read = f"rows => rows.map(r => r.cells[{column}].getAttribute('data-value'))"
            before = page.eval_on_selector_all("#cells-demo tbody tr", read)
            page.locator("#cells-demo thead th").nth(column).click()
            ascending = page.eval_on_selector_all("#cells-demo tbody tr", read)
            page.locator("#cells-demo thead th").nth(column).click()
            descending = page.eval_on_selector_all("#cells-demo tbody tr", read)
        finally:
            browser.close()
    numbers = sorted(float(v) for v in before if v)
    assert len(numbers) == 4 and len(set(numbers)) > 1
    assert [float(v) for v in ascending[:4]] == numbers and [float(v) for v in descending[:4]] == numbers[::-1]
    assert ascending[4:] == descending[4:] == [""] * 4  # cells without a value sort last either way


def test_summary_means_ranks_and_unfinished_cells() -> None:
    from ad_core.benchmarking.leaderboard import flatten, summarize

    def record(category: str, model: str, auroc: float | None, status: str = "ok") -> dict:
        metrics = None if auroc is None else {"image_auroc": auroc, "pixel_auroc": 0.9}
        return {"dataset": "d", "category": category, "model": model, "status": status, "metrics": metrics,
                "checkpoint_bytes": 2**20, "threshold": {"method": "f1_percentile", "value": 1.5}}

    rows = [flatten(r) for r in [record("a", "m1", 0.8), record("b", "m1", 1.0), record("a", "m2", 0.95),
                                 record("b", "m2", None, "running"), record("a", "m3", None, "failed")]]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "incomplete", "failed"]
    assert rows[0]["checkpoint_mb"] == 1.0 and rows[0]["threshold"] == 1.5
    entries = summarize(rows)["d"]
    assert [(e["model"], e["rank"], e["cells_ok"], e["cells"]) for e in entries] == [
        ("m2", 1, 1, 2), ("m1", 2, 2, 2), ("m3", 3, 0, 1)]
    assert entries[1]["image_auroc"] == {"mean": pytest.approx(0.9), "std": pytest.approx(0.1), "n": 2}
    assert entries[2]["image_auroc"] is None and entries[1]["image_aupr"] is None
