"""The `adcore` CLI: listing stays light, broken plugins are shown, errors are sentences."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ad_core.cli import main

BROKEN = "raise ImportError('this plugin is broken on purpose')\n"


def run_cli(*args: str, extra_path: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    if extra_path is not None:
        full_env["PYTHONPATH"] = os.pathsep.join([str(extra_path), full_env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "ad_core.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=120)


@pytest.fixture
def broken_dist(tmp_path) -> Path:
    info = tmp_path / "ad_broken-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ad-broken\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text("[adcore]\nad-broken = ad_broken_plugin\n")
    (tmp_path / "ad_broken_plugin.py").write_text(BROKEN)
    return tmp_path


def test_list_models_imports_no_torch_and_no_plugin_code() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from ad_core.cli import main; "
        "r = CliRunner().invoke(main, ['list-models', '--json']); assert r.exit_code == 0, r.output; "
        "heavy = [m for m in ('torch', 'timm', 'ad_memory.patchcore', 'ad_memory.padim') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_broken_plugin_is_reported_and_other_commands_work(broken_dist) -> None:
    plugins = run_cli("plugins", "--json", extra_path=broken_dist)
    assert plugins.returncode == 0, plugins.stderr
    rows = {r["plugin"]: r for r in json.loads(plugins.stdout)}
    assert rows["ad-broken"]["status"] == "broken"
    assert "broken on purpose" in rows["ad-broken"]["error"]
    listing = run_cli("list-models", extra_path=broken_dist)
    assert listing.returncode == 0
    assert "broken plugin ad-broken" in listing.stderr
    datasets = run_cli("list-datasets", extra_path=broken_dist)
    assert datasets.returncode == 0 and "mvtec" in datasets.stdout


def test_a_plugin_calling_sys_exit_on_import_stops_no_command(broken_dist) -> None:
    (broken_dist / "ad_broken_plugin.py").write_text("import sys\nsys.exit(0)\n")
    helped = run_cli("--help", extra_path=broken_dist)
    assert helped.returncode == 0 and "train" in helped.stdout
    listing = run_cli("list-models", extra_path=broken_dist)
    assert listing.returncode == 0 and "broken plugin ad-broken: called sys.exit(0)" in listing.stderr


def test_list_models_json_shows_registered_models(tiny_plugin) -> None:
    result = CliRunner().invoke(main, ["list-models", "--json", "--paradigm", "test"])
    assert result.exit_code == 0
    models = json.loads(result.output)["models"]
    assert [m["name"] for m in models] == ["tiny-ae"]
    assert models[0]["variants"] == ["tiny-ae-pretrained", "tiny-ae-unseeded", "tiny-ae-wide"]


def test_unknown_model_is_a_clear_error(tiny_plugin, outputs) -> None:
    result = CliRunner().invoke(main, ["train", "demo", "weave", "no-such-model"])
    assert result.exit_code == 1
    assert "unknown model 'no-such-model'" in result.output


def test_bad_set_option_is_a_usage_error(tiny_plugin) -> None:
    result = CliRunner().invoke(main, ["train", "demo", "weave", "tiny-ae", "--set", "novalue"])
    assert result.exit_code == 2 and "key=value" in result.output
