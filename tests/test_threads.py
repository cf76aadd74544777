"""Torch's CPU threads: every available CPU by default, OMP_NUM_THREADS or --threads when given."""

from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner

from ad_core import threads as thread_settings
from ad_core.cli import main


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_default_is_every_cpu_of_the_affinity_set(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    assert thread_settings.default_threads() == 3


def test_omp_num_threads_takes_precedence(monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert thread_settings.default_threads() == 1


def test_configure_sets_torch_threads(monkeypatch, restore_threads) -> None:
    assert thread_settings.configure_threads(1) == 1
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert thread_settings.configure_threads(None) == 2
    assert torch.get_num_threads() == 2


def test_negative_threads_are_refused() -> None:
    with pytest.raises(ValueError, match="threads must be"):
        thread_settings.configure_threads(-1)


@pytest.mark.parametrize("command", ["predict", "test"])
def test_cli_commands_configure_threads(command: str, tmp_path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(thread_settings, "configure_threads", calls.append)
    (tmp_path / "image.png").write_bytes(b"")
    extra = [str(tmp_path / "image.png")] if command == "predict" else ["--dataset", "demo", "--category", "x"]
    result = CliRunner().invoke(main, [command, str(tmp_path), *extra, "--threads", "3"])
    assert calls == [3]
    assert result.exit_code == 1  # not a checkpoint folder: a user error after the threads were set


def test_cli_refuses_negative_threads(tmp_path) -> None:
    (tmp_path / "image.png").write_bytes(b"")
    result = CliRunner().invoke(main, ["predict", str(tmp_path), str(tmp_path / "image.png"), "--threads", "-2"])
    assert result.exit_code == 1
    assert "threads must be" in result.output


def test_train_configures_threads_before_training(monkeypatch) -> None:
    import ad_core.runner

    calls = []
    monkeypatch.setattr(thread_settings, "configure_threads", lambda threads: calls.append(("threads", threads)))
    monkeypatch.setattr(ad_core.runner, "train", lambda *args, **kwargs: calls.append(("train", args[2])))
    result = CliRunner().invoke(main, ["train", "demo", "weave", "padim", "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert calls == [("threads", 2), ("train", "padim")]
