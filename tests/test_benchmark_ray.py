"""The benchmark grid on Ray: a local Ray instance (2 CPUs, loopback), cells that crash, die and lose their node.

One grid runs once for the module through `benchmark(..., backend="ray")`: PaDiM (tiny), a model that raises while
being built, one whose process is killed by SIGKILL, and one whose first attempt kills the Ray worker running it (a
lost node) and succeeds on Ray's retry. The same PaDiM cell also runs on the local backend for comparison.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from ad_core.benchmarking import benchmark
from ad_core.cli import main
from ad_core.errors import MissingPackageError
from installed_plugin import install_test_plugin

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")

OPTIONS = {"image_size": 64, "pretrained": False, "examples": 1}
PLUGIN = """
    import os
    import signal
    from pathlib import Path

    from ad_core.hookspecs import hookimpl
    from ad_core.specs import ModelSpec


    def crashing(**kwargs):
        raise RuntimeError("deliberate crash while building the model")


    def killed(**kwargs):
        os.kill(os.getpid(), signal.SIGKILL)


    def node_loss(pretrained=True, **kwargs):
        marker = Path(os.environ["ADCORE_RAY_TEST_MARKER"])
        if not marker.exists():  # the first attempt
            marker.write_text(str(os.getppid()))
            os.kill(os.getppid(), signal.SIGKILL)  # the Ray worker running this cell: its node is gone
        from ad_memory.padim import Padim
        return Padim(pretrained=pretrained, **kwargs)


    PADIM = {"backbone": "resnet18", "layers": ["layer1", "layer2", "layer3"], "n_features": 50,
             "image_size": 64, "batch_size": 8}


    @hookimpl
    def adcore_register_models(register):
        for name in ("crashing", "killed", "node_loss"):
            register(ModelSpec(name=name.replace("_", "-"), paradigm="test", factory=f"ray_test_plugin:{name}",
                               trainer="feature_bank", defaults=PADIM))
"""


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    import ad_core.plugins

    root = tmp_path_factory.mktemp("ray")
    plugin_dir = root / "plugin"
    install_test_plugin(plugin_dir, "ad-ray-test", "ray_test_plugin", PLUGIN)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(plugin_dir), os.environ.get("PYTHONPATH")])))
        mp.setenv("ADCORE_RAY_TEST_MARKER", str(root / "node_loss.attempts"))
        mp.delenv("ADCORE_LOAD_PLUGINS", raising=False)
        mp.syspath_prepend(str(plugin_dir))
        mp.setattr(ad_core.plugins, "_REGISTRY", None)
        # Ray binds to loopback only when it believes it is not part of a cluster (read when ray is imported)
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
        try:
            models = "padim,crashing,killed,node-loss"
            on_ray = benchmark(models, "demo", "disc", output=root / "ray", backend="ray", progress=False,
                               verbose=False, **OPTIONS)
            rerun = benchmark(models, "demo", "disc", output=root / "ray", backend="ray", progress=False,
                              verbose=False, **OPTIONS)
            local = benchmark("padim", "demo", "disc", output=root / "local", progress=False, verbose=False,
                              **OPTIONS)
        finally:
            ray.shutdown()
            sys.modules.pop("ray_test_plugin", None)
    ad_core.plugins._REGISTRY = None
    return SimpleNamespace(root=root, ray=on_ray, rerun=rerun, local=local,
                           killed_worker=(root / "node_loss.attempts").read_text())


def _by_model(records: list[dict]) -> dict[str, dict]:
    return {r["model"]: r for r in records}


def test_ray_cells_equal_the_local_backend(grid) -> None:
    ray_cell = _by_model(grid.ray.records)["padim"]
    local_cell = _by_model(grid.local.records)["padim"]
    assert ray_cell["status"] == local_cell["status"] == "ok" and ray_cell["backend"] == "ray"
    assert ray_cell["metrics"] == local_cell["metrics"]
    assert ray_cell["thresholds"] == local_cell["thresholds"]
    cell_dir = grid.root / "ray" / "demo" / "disc" / "padim"
    for name in ("model.safetensors", "results.json", "cell.json", "examples.safetensors"):
        assert (cell_dir / name).is_file(), name  # the packed folder reached the driver
    assert json.loads((cell_dir / "cell.json").read_text())["status"] == "ok"


def test_failures_are_recorded_as_on_one_machine_and_the_grid_goes_on(grid) -> None:
    cells = _by_model(grid.ray.records)
    assert cells["crashing"]["status"] == "failed"
    assert cells["crashing"]["error"] == "RuntimeError: deliberate crash while building the model"
    assert cells["killed"]["status"] == "failed" and "SIGKILL" in cells["killed"]["error"]
    assert "log_tail" in cells["killed"]


def test_a_lost_worker_is_retried_by_ray(grid) -> None:
    assert grid.killed_worker  # the first attempt took its worker down; the cell finished on Ray's retry
    cell = _by_model(grid.ray.records)["node-loss"]
    assert cell["status"] == "ok", cell.get("error")
    assert cell["metrics"]["image_auroc"] is not None


def test_rerun_skips_finished_cells_and_runs_failed_ones_again(grid) -> None:
    rerun = _by_model(grid.rerun.records)
    assert rerun["padim"].get("resumed") and rerun["node-loss"].get("resumed")
    assert not rerun["crashing"].get("resumed") and rerun["crashing"]["status"] == "failed"
    assert rerun["padim"]["finished"] == _by_model(grid.ray.records)["padim"]["finished"]
    assert (grid.root / "ray" / "leaderboard.md").is_file()


def test_without_ray_the_backend_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(MissingPackageError, match=r"pip install 'ad-core\[ray\]'"):
        benchmark("padim", "demo", "disc", output=tmp_path, backend="ray")
    result = CliRunner().invoke(main, ["benchmark", "--models", "padim", "--dataset", "demo", "--categories",
                                       "disc", "-o", str(tmp_path), "--backend", "ray"])
    assert result.exit_code != 0 and "pip install" in result.output and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())  # nothing ran


def test_ray_options_need_the_ray_backend(tmp_path) -> None:
    with pytest.raises(ValueError, match="backend='ray' only"):
        benchmark("padim", "demo", "disc", output=tmp_path, gpus_per_cell=1)
