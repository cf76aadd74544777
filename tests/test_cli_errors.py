"""What a CLI user sees: a user error is one sentence and exit 1; a bug keeps its traceback; --debug shows all."""

from __future__ import annotations

import errno
import pickle

import pytest
from click.testing import CliRunner
from PIL import Image

from ad_core import train
from ad_core.backbones import WeightsMismatchError, read_state_dict
from ad_core.checkpoint import CheckpointError, load_model, save_checkpoint
from ad_core.cli import main
from ad_core.data import ImageReadError, read_image
from ad_core.detector import Detector
from ad_core.options import OptionError

TRAIN = ["train", "demo", "weave", "tiny-ae", "--epochs", "1", "--image-size", "32"]


def _user_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output


def test_divergence_is_a_user_error(tiny_plugin, outputs) -> None:
    result = CliRunner().invoke(main, [*TRAIN, "--set", "blow_up_at=1"])
    _user_error(result, "error:")


def test_full_disk_is_a_user_error(tiny_plugin, outputs, monkeypatch) -> None:
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "roc.png")

    monkeypatch.setattr("ad_core.evaluation.plot_roc", full)
    _user_error(CliRunner().invoke(main, TRAIN), "no space left on the device while writing roc.png")


def test_a_bug_inside_a_model_keeps_its_traceback(reliability_plugin, outputs) -> None:
    result = CliRunner().invoke(main, ["train", "demo", "weave", "buggy-ae"])
    assert isinstance(result.exception, KeyError)  # not turned into "error: 'loss'"


def test_debug_shows_the_traceback_of_a_user_error(tiny_plugin, outputs) -> None:
    result = CliRunner().invoke(main, ["--debug", *TRAIN[:4], "--epochs", "0"])
    assert isinstance(result.exception, OptionError)


def test_image_over_the_decompression_limit_says_so(tmp_path, monkeypatch) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match="image too large: .*big.png.*limit of 1000.*ADCORE_MAX_IMAGE_PIXELS"):
        read_image(path)


class _Payload:
    def __reduce__(self):
        return (print, ("this code ran",))


def test_a_malicious_backbone_file_is_named_and_never_unpickled(tmp_path, capsys) -> None:
    path = tmp_path / "resnet18.pth"
    path.write_bytes(pickle.dumps({"conv.weight": _Payload()}, protocol=2))
    with pytest.raises(WeightsMismatchError, match="resnet18.pth") as info:
        read_state_dict(path)
    assert "weights_only" not in str(info.value) and info.value.__cause__ is None
    assert "this code ran" not in capsys.readouterr().out


def _foreign_checkpoint(tmp_path, width: int):
    """A checkpoint folder written by `save_checkpoint` alone (no run folder, no manifest)."""
    from tiny_plugin import TinyAE

    detector = Detector(TinyAE(width=8))
    return save_checkpoint(detector, tmp_path / "ckpt", {"model": "tiny-ae", "hyperparameters": {"width": width},
                                                         "image_size": 32})


def test_tensors_that_do_not_fit_name_tensor_and_shapes(tiny_plugin, tmp_path) -> None:
    folder = _foreign_checkpoint(tmp_path, width=16)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'model\.[a-z]+\.0\.[a-z]+' has shape "
                                              r"\(8,?.*\) in the file but \(16,?.*\) in model 'tiny-ae'"):
        load_model(folder)


def test_non_utf8_model_json_is_named(tiny_plugin, tmp_path) -> None:
    folder = _foreign_checkpoint(tmp_path, width=8)
    (folder / "model.json").write_bytes(b'{"model": "\xff\xfe"}')
    result = CliRunner().invoke(main, ["predict", str(folder), str(folder / "model.json")])
    _user_error(result, "model.json is not UTF-8")


def test_predict_scores_the_readable_images_and_reports_the_others(tiny_plugin, outputs, tmp_path) -> None:
    (run,) = train("demo", "weave", "tiny-ae", verbose=False, num_epochs=1, image_size=32)
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.gif", "c.ppm"):
        Image.new("RGB", (32, 32), (10, 20, 30)).save(folder / name)
    (folder / "d.png").write_bytes(b"\x89PNG garbage")
    result = CliRunner().invoke(main, ["predict", str(run.output_dir), str(folder)])
    _user_error(result, "d.png", "1 image(s) could not be read", "a.png", "b.gif", "c.ppm")
    assert "of 3 image(s) anomalous" in result.output


def test_a_model_whose_factory_fails_to_import_is_named(outputs, monkeypatch) -> None:
    from ad_core.plugins import register_plugin
    from ad_core.specs import ModelSpec

    from ad_core.hookspecs import hookimpl

    class Lazy:
        @hookimpl
        def adcore_register_models(self, register) -> None:
            register(ModelSpec(name="lazy-bad", paradigm="test", factory="module_that_is_not_there:Model"))

    unregister = register_plugin(Lazy(), "lazy-plugin")
    try:
        result = CliRunner().invoke(main, ["train", "demo", "weave", "lazy-bad"])
    finally:
        unregister()
    _user_error(result, "'lazy-bad'", "plugin 'lazy-plugin'")
