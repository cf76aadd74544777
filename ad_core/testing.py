"""The conformance suite every model of every plugin passes (DESIGN §7).

Use it by subclassing in a plugin's tests:

    from ad_core.testing import ModelConformance

    class TestPatchCore(ModelConformance):
        model_name = "patchcore"
        overrides = {"backbone": "resnet18"}   # tiny config; pretrained=False is always added

Each check is a separate test; the model is fitted once per class on the synthetic demo set.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ad_core.building import build_model
from ad_core.checkpoint import load_model, save_checkpoint
from ad_core.data import DemoDataset
from ad_core.detector import Detector
from ad_core.metrics import auroc
from ad_core.preprocessing import PreProcessor
from ad_core.runner import preprocessed
from ad_core.training import TrainerOptions, seed_everything, trainer_class
from ad_core.types import collate


class NetworkAccessError(OSError):
    """Raised by `no_network()` when code tries to open a connection."""


@contextlib.contextmanager
def no_network() -> Iterator[list[str]]:
    """Make every socket connection and DNS look-up fail; yields the list of attempts."""
    attempts: list[str] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(f"connect {address!r}")
            raise NetworkAccessError(f"network access attempted: connect({address!r})")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        attempts.append(f"getaddrinfo {host!r}")
        raise NetworkAccessError(f"network access attempted: getaddrinfo({host!r})")

    socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
    try:
        yield attempts
    finally:
        socket.socket.connect, socket.getaddrinfo = real_connect, real_getaddrinfo


def fit_tiny(model_name: str, overrides: dict[str, Any], image_size: int, category: str, n_train: int,
             seed: int) -> Detector:
    """Build with pretrained=False and fit on the demo set's normal images, offline, on the CPU."""
    seed_everything(seed)
    model, config = build_model(model_name, **{**overrides, "pretrained": False})
    detector = Detector(model, pre=PreProcessor.from_run({**config.run, "image_size": image_size}))
    train = DemoDataset(category=category, split="train", image_size=image_size, n_train=n_train, seed=seed)
    loader = DataLoader(train, batch_size=int(config.run.get("batch_size", 8)), shuffle=False, collate_fn=collate)
    trainer = trainer_class(config.spec.trainer)(TrainerOptions.from_run(
        {k: v for k, v in config.run.items() if k != "resume"}, device="cpu", progress=False))
    trainer.fit(model, preprocessed(loader, detector))
    return detector.eval()


class ModelConformance:
    """Subclass with `model_name` (and `overrides` for a tiny config) to run every check."""

    model_name: str = ""
    overrides: dict[str, Any] = {}
    image_size: int = 64
    category: str = "weave"
    n_train: int = 16
    n_test: int = 8  # per class
    min_auroc: float = 0.75
    defect_scale: float = 2.5  # large, unmistakable defects: any working detector ranks them first
    seed: int = 0

    @pytest.fixture(scope="class")
    def network_attempts(self) -> list[str]:
        return []

    @pytest.fixture(scope="class")
    def fitted(self, network_attempts: list[str]) -> Detector:
        with no_network() as attempts:
            detector = fit_tiny(self.model_name, self.overrides, self.image_size, self.category, self.n_train,
                                self.seed)
        network_attempts.extend(attempts)
        return detector

    @pytest.fixture(scope="class")
    def test_data(self) -> tuple[torch.Tensor, np.ndarray]:
        data = DemoDataset(category=self.category, split="test", image_size=self.image_size, seed=self.seed + 1,
                           n_test_normal=self.n_test, n_test_anomalous=self.n_test, defect_scale=self.defect_scale)
        batch = collate([data[i] for i in range(len(data))])
        return batch.image, batch.label.numpy()

    # -- the checks ------------------------------------------------------------------------------
    def test_builds_from_defaults(self) -> None:
        model, config = build_model(self.model_name, pretrained=False)
        assert isinstance(model, torch.nn.Module)
        assert config.spec.trainer

    def test_predict_before_fit_raises(self) -> None:
        model, _ = build_model(self.model_name, **{**self.overrides, "pretrained": False})
        with pytest.raises(RuntimeError, match="(?i)fit|train"):
            model.predict(torch.rand(2, 3, self.image_size, self.image_size))

    def test_prediction_shapes_and_dtypes(self, fitted: Detector, test_data) -> None:
        images, _ = test_data
        pred = fitted.predict(images[:3])
        assert pred.score.shape == (3,) and pred.score.dtype == torch.float32
        assert torch.isfinite(pred.score).all()
        if pred.anomaly_map is not None:
            assert pred.anomaly_map.shape == (3, self.image_size, self.image_size)
            assert pred.anomaly_map.dtype == torch.float32
            assert torch.isfinite(pred.anomaly_map).all()

    def test_batch_equals_per_item(self, fitted: Detector, test_data) -> None:
        images, _ = test_data
        batch = fitted.predict(images[:4])
        single = [fitted.predict(images[i : i + 1]) for i in range(4)]
        torch.testing.assert_close(batch.score, torch.cat([p.score for p in single]), rtol=1e-4, atol=1e-5)
        if batch.anomaly_map is not None:
            torch.testing.assert_close(batch.anomaly_map, torch.cat([p.anomaly_map for p in single]),
                                       rtol=1e-4, atol=1e-5)

    def test_seeded_determinism(self, fitted: Detector, test_data) -> None:
        images, _ = test_data
        again = fit_tiny(self.model_name, self.overrides, self.image_size, self.category, self.n_train, self.seed)
        torch.testing.assert_close(again.predict(images).score, fitted.predict(images).score, rtol=1e-5, atol=1e-6)

    def test_checkpoint_round_trip(self, fitted: Detector, test_data, tmp_path) -> None:
        images, _ = test_data
        _, config = build_model(self.model_name, **{**self.overrides, "pretrained": False})
        save_checkpoint(fitted, tmp_path, {"model": config.name, "hyperparameters": config.hyperparameters,
                                           "normalize": bool(config.run.get("normalize", True))})
        loaded = load_model(tmp_path)
        before, after = fitted.predict(images), loaded.predict(images)
        assert torch.equal(before.score, after.score)
        if before.anomaly_map is not None:
            assert torch.equal(before.anomaly_map, after.anomaly_map)

    def test_ranks_defects_above_normal(self, fitted: Detector, test_data) -> None:
        images, labels = test_data
        scores = fitted.predict(images).score.numpy()
        assert auroc(scores, labels) >= self.min_auroc

    def test_no_network_access(self, fitted: Detector, network_attempts: list[str]) -> None:
        assert network_attempts == []
