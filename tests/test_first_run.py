"""What a new user meets first: fast and torch-free listings, typos caught at once, messages in the interface's
spelling, a trained model used from Python on image files, and the pictures `predict` writes."""

from __future__ import annotations

import inspect
import json
import subprocess
from pathlib import Path
import sys

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ad_core import load_model, train
from ad_core.cli import LIST_WIDTH, main
from ad_core.data import write_demo_dataset
from ad_core.plugins import UnknownModelError, get_registry
from ad_core.preflight import OPTION_ALIASES, check_request, cli_spelling, factory_parameters
from ad_core.specs import OptionError, resolve_ref


@pytest.mark.parametrize("args", [["list-datasets"], ["list-models"], ["plugins"], ["--help"],
                                  ["train", "demo", "weave", "patchcor"],
                                  ["train", "demo", "weave", "padim", "--set", "n_feature=10"]])
def test_commands_that_need_no_torch_do_not_import_it(args: list[str]) -> None:
    code = ("import sys\nfrom ad_core.cli import main\n"
            f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    if args[0] == "train":
        assert "error: unknown" in result.stderr and ("patchcor" in result.stderr or "n_feature" in result.stderr)


def test_list_models_fits_100_columns_and_wide_adds_papers() -> None:
    narrow = CliRunner().invoke(main, ["list-models"]).output
    assert max(len(line) for line in narrow.splitlines()) <= LIST_WIDTH
    assert "fastflow-resnet50" in narrow and "Roth et al." not in narrow
    assert "Roth et al." in CliRunner().invoke(main, ["list-models", "--wide"]).output


def test_factory_parameters_read_from_source_match_the_signatures() -> None:
    for entry in get_registry().models.values():
        read = factory_parameters(entry.spec.factory)
        if read is not None:
            params = set(inspect.signature(resolve_ref(entry.spec.factory)).parameters) - {"self"}
            assert read == params, entry.spec.name


def test_option_aliases_are_those_the_builder_maps() -> None:
    from ad_core.building import ALIASES

    assert set(ALIASES) == OPTION_ALIASES


def test_check_request_accepts_valid_options_and_names_a_typo() -> None:
    check_request(["padim", "patchcore-r18"], {"img_size": 64, "num_epochs": 1, "pretrained": False,
                                                "write_maps": False})
    with pytest.raises(OptionError, match=r"\['coreset_ration'\].*coreset_ratio"):
        check_request(["patchcore"], {"coreset_ration": 0.1})
    with pytest.raises(UnknownModelError, match="dinomaly-smal-224"):
        check_request(["dinomaly-smal-224"], {})


def test_cli_spelling_of_api_messages() -> None:
    message = ("no pretrained weights: pass weights_file=..., set backbone_dir, or use pretrained=False; "
               "or pass root=...")
    assert cli_spelling(message) == ("no pretrained weights: pass --set weights_file=FILE, pass --backbone-dir DIR, "
                                     "or use --set pretrained=false; or pass --root DIR")


def test_missing_weights_message_in_cli_spelling(tmp_path) -> None:
    result = CliRunner().invoke(main, ["train", "demo", "weave", "padim", "--backbone-dir", str(tmp_path),
                                       "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "--set pretrained=false" in result.output and "pretrained=False" not in result.output


@pytest.fixture
def trained(tiny_plugin, tmp_path):
    """tiny-ae trained on an MVTec-layout folder of 48 px images at 32 px."""
    root = write_demo_dataset(tmp_path / "data", "weave", image_size=48, n_train=6, n_test_normal=3,
                              n_test_anomalous=3)
    (run,) = train("mvtec", "weave", "tiny-ae", root=root, output_dir=tmp_path / "out", verbose=False,
                   num_epochs=1, image_size=32, write_maps=False)
    return run, root


def test_predict_paths_scores_files_as_the_evaluation_did(trained) -> None:
    run, root = trained
    detector = load_model(run.output_dir)
    assert detector.image_size == (32, 32) and detector.normalize
    assert detector.mean == pytest.approx((0.485, 0.456, 0.406)) and detector.std == pytest.approx((0.229, 0.224,
                                                                                                    0.225))
    evaluated = json.loads((run.output_dir / "scores.json").read_text())
    results = detector.predict_paths(evaluated["paths"])
    assert [r.score for r in results] == pytest.approx(evaluated["scores"], rel=1e-5, abs=1e-6)
    assert all(r.original_size == (48, 48) and r.anomaly_map.shape == (32, 32) for r in results)
    assert [r.label for r in results] == [int(s >= float(detector.post.threshold)) for s in evaluated["scores"]]
    folder = detector.predict_paths([root / "weave" / "test"])  # folders are searched
    assert len(folder) == len(evaluated["paths"])


def test_images_outside_unit_range_are_an_error(trained) -> None:
    detector = load_model(trained[0].output_dir)
    with pytest.raises(ValueError, match=r"\[0, 1\].*divide 0-255 images by 255"):
        detector.detect(torch.rand(1, 3, 32, 32) * 255)
    with pytest.raises(ValueError, match="float"):
        detector.detect(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_predict_overlays_keep_names_and_folders(trained, tmp_path) -> None:
    run, root = trained
    incoming = tmp_path / "incoming"
    (incoming / "line2").mkdir(parents=True)
    Image.new("RGB", (80, 60), (30, 30, 30)).save(incoming / "part.png")
    Image.new("RGB", (80, 60), (30, 30, 30)).save(incoming / "line2" / "part.jpg")
    result = CliRunner().invoke(main, ["predict", str(run.output_dir), str(incoming), "--json",
                                       "--output", str(tmp_path / "maps")])
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(tmp_path / "maps").as_posix() for p in (tmp_path / "maps").rglob("*.png"))
    assert written == ["line2/part_anomaly.png", "part_anomaly.png"]
    overlay = Image.open(tmp_path / "maps" / "part_anomaly.png")
    assert overlay.width > 80 and overlay.height > 60  # the 80x60 image plus the scale and the score line


def test_all_cells_table_shows_the_error_before_the_figures() -> None:
    """The figures scroll sideways in a narrow window; the error of a failed cell must stay in view."""
    import re

    from ad_core.benchmarking.html import cells_table

    rows = [{"category": "weave", "model": "padim", "status": "failed", "error": "CUDA out of memory",
             "image_auroc": None, "threshold": None, "wall_seconds": 3.0}]
    html = cells_table("demo", rows, [("image_auroc", "image AUROC")])
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", html)
    assert headers.index("error") < headers.index("image AUROC")
    assert html.index("CUDA out of memory") < html.index('data-value="3')


def test_map_panels_are_enlarged_to_see_a_defect(tmp_path) -> None:
    from ad_core.reports.maps import LABEL_HEIGHT, PANEL_GAP, save_map_panels
    from ad_core.evaluation import MAP_PANEL_TILE

    images, maps = torch.rand(1, 3, 64, 96), torch.rand(1, 64, 96)
    (path,) = save_map_panels(tmp_path, images, maps, 0.5, ["x"], None, 0.0, 1.0, threshold_name="f1_percentile",
                              min_tile=MAP_PANEL_TILE)
    assert MAP_PANEL_TILE >= 256
    assert Image.open(path).size == (4 * 96 * 4 + 3 * PANEL_GAP, LABEL_HEIGHT + 64 * 4)  # x4 brings 64 to 256


def _folder_category(base) -> None:
    """A simple-layout category: 5 normal images, one flat abnormal image and one sorted under its kind."""
    for sub in ("normal", "abnormal/scratch", "mask/scratch", "mask"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for i in range(5):
        Image.new("RGB", (16, 16), (i, i, i)).save(base / "normal" / f"n{i}.png")
    Image.new("RGB", (16, 16), (200, 0, 0)).save(base / "abnormal" / "a0.png")
    Image.new("L", (16, 16), 255).save(base / "mask" / "a0_mask.png")
    Image.new("RGB", (16, 16), (0, 200, 0)).save(base / "abnormal" / "scratch" / "a1.png")
    Image.new("L", (16, 16), 255).save(base / "mask" / "scratch" / "a1_mask.png")


def test_folder_dataset_keeps_defect_kinds_of_subfolders_and_can_leave_the_data_untouched(tmp_path) -> None:
    from ad_core.data import FolderDataset

    _folder_category(tmp_path / "parts" / "connector")
    test = FolderDataset(tmp_path / "parts", "connector", "test", image_size=16,
                         metadata_dir=tmp_path / "meta")
    assert not (tmp_path / "parts" / "connector" / "metadata.csv").exists()
    assert (tmp_path / "meta" / "parts" / "connector" / "metadata.csv").is_file()
    kinds = {Path(r.path).name: (r.defect_type, r.mask_path is not None) for r in test.records if r.label == 1}
    assert kinds == {"a0.png": ("abnormal", True), "a1.png": ("scratch", True)}
    assert sum(r.label == 0 for r in test.records) == 1  # round(5 * 0.2) normal images moved to test
    train_split = FolderDataset(tmp_path / "parts", "connector", "train", image_size=16)
    assert len(train_split.records) == 4 and (tmp_path / "parts" / "connector" / "metadata.csv").is_file()


def test_ad_core_imports_without_unix_only_modules() -> None:
    """On Windows there is no `resource` (nor `fcntl`): every module a user imports must still load."""
    code = ("import sys\nsys.modules['resource'] = None\nsys.modules['fcntl'] = None\n"
            "import ad_core.runner, ad_core.cli, ad_core.benchmarking, ad_core.ensemble, ad_core.inference\n"
            "from ad_core import train, load_model, benchmark, build_ensemble\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_missing_backbone_weights_are_known_before_a_run(tmp_path) -> None:
    from ad_core.preflight import missing_backbone_weights

    (line,) = missing_backbone_weights(["padim"], {"backbone_dir": str(tmp_path)})
    assert "padim" in line and "'resnet18'" in line and str(tmp_path) in line
    assert missing_backbone_weights(["padim"], {"backbone_dir": str(tmp_path), "pretrained": False}) == []
    (tmp_path / "resnet18.safetensors").write_bytes(b"")
    assert missing_backbone_weights(["padim"], {"backbone_dir": str(tmp_path)}) == []


def test_demo_warns_before_it_trains(tmp_path) -> None:
    result = CliRunner().invoke(main, ["demo", "--model", "padim", "--categories", "weave", "--image-size", "32",
                                       "--backbone-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert result.output.index("no weights for backbone 'resnet18'") < result.output.index("image AUROC")
    assert f"outputs written under {tmp_path / 'out' / 'demo'}" in result.output
