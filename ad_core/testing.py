"""The conformance suite, driven by the registry: every registered model and variant passes it.

A plugin's tests run it in one line (each case uses the spec's `test_overrides` tiny config):

    from ad_core.plugin_api import conformance_suite

    TestConformance = conformance_suite(plugin="ad-memory")

A plugin that is not installed (an example, a notebook) passes its registration module instead:
`conformance_suite(plugin="my-plugin", module=my_plugin.plugin)`.

A case's tiny config is `ModelSpec.tiny_config(variant)`; keys starting with `test_` steer the suite, not the
model: `test_category` (demo category of the ranking check), `test_min_auroc`, `test_no_ranking` (a reason: the
tiny config cannot rank defects, e.g. it needs pretrained auxiliary weights, so the ranking check is skipped with
that reason) and `test_square_only` (a reason: the model is built for one square input size, so the non-square
check is skipped with that reason).
The model is fitted once per case (class-scoped fixtures). A variant whose tiny config equals an earlier case's
(a size-only variant once shrunk, e.g. `patchcore-r18` beside `patchcore` on ResNet-18) is skipped as that case.
The expensive checks (a seeded refit, a refit on
other data, a one-image fit, a non-square fit) run for the base model and for variants that change more than the
network's size (see `SIZE_KEYS`): a variant that only swaps the backbone for a larger one runs the same code.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import os
import socket
import subprocess
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import DataLoader

from ad_core.building import build_model
from ad_core.checkpoint import load_model, save_checkpoint
from ad_core.data import DemoDataset
from ad_core.detector import Detector
from ad_core.metrics import auroc
from ad_core.plugins import ENTRY_POINT_GROUP, get_registry, register_plugin
from ad_core.preprocessing import PreProcessor
from ad_core.runner import preprocessed
from ad_core.specs import UNIFIED_PREFIX, RUN_KEYS, ModelSpec
from ad_core.training import TrainerOptions, seed_everything, trainer_class
from ad_core.types import Batch, collate

# Variant keys that only change the size of the network or its input: such a variant runs the same code as its
# base, so the suite skips its expensive refit checks.
SIZE_KEYS = frozenset({"backbone", "image_size", "center_crop", "n_features", "stats_dtype", "size", "feature_block",
                       "pooling_kernel_size", "hidden_channels", "stage"})
SUITE_KEYS = ("test_category", "test_min_auroc", "test_no_ranking", "test_square_only")
DEFAULT_IMAGE_SIZE = 64


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


def fit_tiny(model_name: str, overrides: dict[str, Any], image_size: int | tuple[int, int], category: str,
             n_train: int, seed: int, detector: Detector | None = None) -> Detector:
    """Build with pretrained=False and fit on the demo set's normal images, offline, on the CPU.

    With `detector`, that already fitted detector is fitted again instead of a fresh one (the refit check).
    The fit starts from the same random state either way.
    """
    seed_everything(seed)
    model, config = build_model(model_name, **{**overrides, "pretrained": False})
    if detector is None:
        detector = Detector(model, pre=PreProcessor.from_run({**config.run, "image_size": image_size}))
    seed_everything(seed)
    train = DemoDataset(category=category, split="train", image_size=image_size, n_train=n_train, seed=seed)
    loader = DataLoader(train, batch_size=int(config.run.get("batch_size", 8)), shuffle=False, collate_fn=collate)
    trainer = trainer_class(config.spec.trainer)(TrainerOptions.from_run(
        {k: v for k, v in config.run.items() if k != "resume"}, device="cpu", progress=False))
    trainer.fit(detector.model, preprocessed(loader, detector))
    return detector.eval()


class Killed(RuntimeError):
    """Raised by a training step that `kill_training_after` doomed: stands for a run killed mid-training."""


def kill_training_after(model: torch.nn.Module, calls: int) -> None:
    """Make `model.training_step` raise `Killed` on call `calls + 1`: a run killed mid-way, for resume tests."""
    step, seen = model.training_step, [0]

    def dying(batch: Batch, ctx: Any) -> Any:
        seen[0] += 1
        if seen[0] > calls:
            raise Killed(f"killed after {calls} training steps")
        return step(batch, ctx)

    model.training_step = dying


def normal_batch(images: torch.Tensor) -> Batch:
    """Images as a training batch of normal samples without masks or paths, for a model's unit tests that call
    `training_step` directly."""
    n = len(images)
    return Batch(images, torch.zeros(n, dtype=torch.long), None, [""] * n, [""] * n)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Exact equality where NaN equals NaN (an uncalibrated threshold is NaN)."""
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan()) if a.is_floating_point() else a == b).all())


@dataclass(frozen=True)
class ConformanceCase:
    """One registered model or variant with its tiny config."""

    name: str
    spec: ModelSpec
    overrides: dict[str, Any] = field(default_factory=dict)  # the model's tiny config (no `test_` keys)
    suite: dict[str, Any] = field(default_factory=dict)  # the `test_` keys
    same_as: str | None = None  # an earlier case this one equals once shrunk (a size-only variant)

    @property
    def effective_config(self) -> dict[str, Any]:
        return {**self.spec.config(self.name), **self.overrides}

    @property
    def image_size(self) -> int:
        return int(self.overrides.get("image_size", DEFAULT_IMAGE_SIZE))

    @property
    def runs_expensive_checks(self) -> bool:
        """False for a variant that differs from its base only in network size (same code, larger numbers)."""
        return self.name == self.spec.name or not set(self.spec.variants[self.name]) <= SIZE_KEYS


def _case(spec: ModelSpec, name: str) -> ConformanceCase:
    tiny = spec.tiny_config(name)
    suite = {k: tiny.pop(k) for k in SUITE_KEYS if k in tiny}
    tiny.setdefault("image_size", DEFAULT_IMAGE_SIZE)
    return ConformanceCase(name=name, spec=spec, overrides=tiny, suite=suite)


def specs_of_module(module: object) -> list[ModelSpec]:
    """The specs a registration module registers, collected without touching the process-wide registry."""
    specs: list[ModelSpec] = []
    module.adcore_register_models(register=specs.append)  # type: ignore[attr-defined]
    return specs


def conformance_cases(plugin: str, module: object | None = None) -> list[ConformanceCase]:
    """Every model and variant a plugin registers, as suite cases (the base model first)."""
    if module is not None:
        specs = specs_of_module(module)
    else:
        registry = get_registry()
        if plugin not in registry.plugins:
            raise LookupError(f"plugin {plugin!r} is not installed; installed: {sorted(registry.plugins)}")
        if registry.plugins[plugin].broken:
            raise LookupError(f"plugin {plugin!r} is broken: {registry.plugins[plugin].error}")
        specs = [e.spec for e in registry.models.values() if e.plugin == plugin]
    cases: list[ConformanceCase] = []
    for spec in specs:
        for name in (spec.name, *spec.variants):
            case = _case(spec, name)
            twin = next((c.name for c in cases if c.spec is spec and c.effective_config == case.effective_config
                         and c.suite == case.suite), None)
            cases.append(replace(case, same_as=twin) if twin else case)
    return cases


def registration_module(plugin: str, module: object | None = None) -> str:
    """The import name of a plugin's registration module (its entry point's target)."""
    if module is not None:
        return module.__name__  # type: ignore[attr-defined]
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == plugin:
            return ep.value.partition(":")[0]
    raise LookupError(f"no {ENTRY_POINT_GROUP!r} entry point named {plugin!r}")


def conformance_suite(plugin: str, module: object | None = None, models: Collection[str] | None = None) -> type:
    """A pytest test class running every check on every model and variant `plugin` registers (with `models`,
    only those models and their variants: a plugin may keep each model's conformance in its own test file)."""
    cases = conformance_cases(plugin, module)
    if models is not None:
        unknown = sorted(set(models) - {c.spec.name for c in cases})
        if unknown:
            raise LookupError(f"plugin {plugin!r} registers no model {unknown}")
        cases = [c for c in cases if c.spec.name in models]
    module_name = registration_module(plugin, module)

    @pytest.fixture(scope="class", autouse=True)
    def registered(self: ModelConformance) -> Iterator[None]:
        if module is None:
            yield
            return
        unregister = register_plugin(module, plugin)
        yield
        unregister()

    @pytest.fixture(scope="class", params=cases, ids=[c.name for c in cases])
    def case(self: ModelConformance, request: pytest.FixtureRequest) -> ConformanceCase:
        if request.param.same_as:
            pytest.skip(f"{request.param.name} shrunk to its tiny config is {request.param.same_as}: same code, "
                        "same numbers, checked there")
        return request.param

    suite = type(f"Conformance_{plugin}", (ModelConformance,),
                 {"registered": registered, "case": case, "module_name": module_name, "plugin_name": plugin})
    suite.__test__ = True
    return suite


class ModelConformance:
    """The checks; `conformance_suite` binds them to a plugin's cases. Not collected on its own."""

    __test__ = False
    module_name: str = ""
    plugin_name: str = ""
    category: str = "weave"
    n_train: int = 16
    n_test: int = 8  # per class
    min_auroc: float = 0.75
    defect_scale: float = 2.5  # large, unmistakable defects: any working detector ranks them first
    seed: int = 0

    # -- shared, fitted once per case --------------------------------------------------------------
    @pytest.fixture(scope="class")
    def network_attempts(self) -> list[str]:
        return []

    @pytest.fixture(scope="class")
    def fitted(self, case: ConformanceCase, network_attempts: list[str]) -> Detector:
        with no_network() as attempts:
            detector = fit_tiny(case.name, case.overrides, case.image_size, self._category(case), self.n_train,
                                self.seed)
        network_attempts.extend(attempts)
        return detector

    @pytest.fixture(scope="class")
    def test_data(self, case: ConformanceCase) -> tuple[torch.Tensor, np.ndarray]:
        data = DemoDataset(category=self._category(case), split="test", image_size=case.image_size,
                           seed=self.seed + 1, n_test_normal=self.n_test, n_test_anomalous=self.n_test,
                           defect_scale=self.defect_scale)
        batch = collate([data[i] for i in range(len(data))])
        return batch.image, batch.label.numpy()

    def _category(self, case: ConformanceCase) -> str:
        return str(case.suite.get("test_category", self.category))

    @staticmethod
    def _expensive(case: ConformanceCase) -> None:
        if not case.runs_expensive_checks:
            pytest.skip(f"{case.name} differs from {case.spec.name} only in network size; its base runs this check")

    # -- the spec ----------------------------------------------------------------------------------
    def test_spec_defaults_accepted_by_factory(self, case: ConformanceCase) -> None:
        params = inspect.signature(case.spec.load_factory()).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        config = {**case.spec.config(case.name), **case.overrides}
        known = set(params) | RUN_KEYS
        # `unified_<key>` is `<key>`'s default in unified runs: `<key>` must be a parameter or a run key
        unknown = sorted(k for k in config if k not in known
                         and not (k.startswith(UNIFIED_PREFIX) and k[len(UNIFIED_PREFIX):] in known))
        assert not unknown, f"{case.name}: {unknown} are neither parameters of {case.spec.factory} nor run keys"

    def test_listed_under_its_paradigm(self, case: ConformanceCase) -> None:
        from ad_core.cli import main  # the CLI is what users list models with; imported here, not at collection

        result = CliRunner().invoke(main, ["list-models", "--paradigm", case.spec.paradigm, "--json"])
        assert result.exit_code == 0, result.output
        listed = {m["name"]: m for m in json.loads(result.output)["models"]}
        assert case.spec.name in listed, f"`adcore list-models --paradigm {case.spec.paradigm}` omits {case.spec.name}"
        entry = listed[case.spec.name]
        assert entry["plugin"] == self.plugin_name
        assert case.name == case.spec.name or case.name in entry["variants"]

    def test_registration_module_imports_no_torch(self) -> None:
        code = (f"import sys, json; import {self.module_name}; "
                "print(json.dumps(sorted(m for m in ('torch', 'numpy', 'timm') if m in sys.modules)))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
        assert json.loads(out.stdout.strip().splitlines()[-1]) == []

    # -- building and fitting ----------------------------------------------------------------------
    def test_predict_before_fit_raises(self, case: ConformanceCase) -> None:
        model, _ = build_model(case.name, **{**case.overrides, "pretrained": False})
        with pytest.raises(RuntimeError, match="(?i)fit|train"):
            model.predict(torch.rand(2, 3, case.image_size, case.image_size))

    def test_empty_training_set_is_a_clear_error(self, case: ConformanceCase) -> None:
        with pytest.raises(ValueError, match="(?i)empty"):
            fit_tiny(case.name, case.overrides, case.image_size, self._category(case), 0, self.seed)

    def test_one_image_training_set_works(self, case: ConformanceCase, test_data) -> None:
        """One normal image fits, or the model says how many it needs (a covariance needs two)."""
        self._expensive(case)
        images, _ = test_data
        try:
            detector = fit_tiny(case.name, case.overrides, case.image_size, self._category(case), 1, self.seed)
        except ValueError as exc:  # a model that cannot estimate its statistics from one image says how many
            assert "at least" in str(exc), f"one training image fails without saying how many are needed: {exc}"
            return
        assert torch.isfinite(detector.predict(images[:2]).score).all()

    def test_non_square_input(self, case: ConformanceCase) -> None:
        self._expensive(case)
        if "test_square_only" in case.suite:
            pytest.skip(str(case.suite["test_square_only"]))
        size = (case.image_size, case.image_size * 2)  # twice as wide: keeps any stride constraint of the square
        detector = fit_tiny(case.name, {**case.overrides, "image_size": list(size)}, size, self._category(case),
                            4, self.seed)
        pred = detector.predict(torch.rand(2, 3, *size))
        assert pred.score.shape == (2,) and torch.isfinite(pred.score).all()
        if pred.anomaly_map is not None:
            assert pred.anomaly_map.shape == (2, *size)

    # -- prediction --------------------------------------------------------------------------------
    def test_prediction_shapes_and_dtypes(self, case: ConformanceCase, fitted: Detector, test_data) -> None:
        images, _ = test_data
        pred = fitted.predict(images[:3])
        assert pred.score.shape == (3,) and pred.score.dtype == torch.float32
        assert torch.isfinite(pred.score).all()
        if pred.anomaly_map is not None:
            assert pred.anomaly_map.shape == (3, case.image_size, case.image_size)
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

    def test_batch_order_invariance(self, fitted: Detector, test_data) -> None:
        images, _ = test_data
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(1))
        straight, shuffled = fitted.predict(images), fitted.predict(images[order])
        torch.testing.assert_close(shuffled.score, straight.score[order], rtol=1e-4, atol=1e-5)
        if straight.anomaly_map is not None:
            torch.testing.assert_close(shuffled.anomaly_map, straight.anomaly_map[order], rtol=1e-4, atol=1e-5)

    def test_predict_leaves_state_and_mode_unchanged(self, fitted: Detector, test_data) -> None:
        images, _ = test_data
        try:
            for mode in (True, False):
                fitted.train(mode)
                modes = [m.training for m in fitted.modules()]
                before = {k: v.clone() for k, v in fitted.state_dict().items()}
                fitted.predict(images[:2])
                assert [m.training for m in fitted.modules()] == modes
                after = fitted.state_dict()
                assert before.keys() == after.keys()
                changed = [k for k in before if not _same(before[k], after[k])]
                assert not changed, f"predict changed {changed}"
        finally:
            fitted.eval()

    def test_nan_input_is_a_clear_error(self, fitted: Detector, test_data) -> None:
        images = test_data[0][:2].clone()
        images[0, 0, 0, 0] = float("nan")
        with pytest.raises(ValueError, match="(?i)nan|finite"):
            fitted.predict(images)

    def test_ranks_defects_above_normal(self, case: ConformanceCase, fitted: Detector, test_data) -> None:
        if "test_no_ranking" in case.suite:
            pytest.skip(str(case.suite["test_no_ranking"]))
        images, labels = test_data
        scores = fitted.predict(images).score.numpy()
        assert auroc(scores, labels) >= float(case.suite.get("test_min_auroc", self.min_auroc))

    # -- refits and persistence --------------------------------------------------------------------
    def test_seeded_determinism(self, case: ConformanceCase, fitted: Detector, test_data) -> None:
        self._expensive(case)
        images, _ = test_data
        again = fit_tiny(case.name, case.overrides, case.image_size, self._category(case), self.n_train, self.seed)
        torch.testing.assert_close(again.predict(images).score, fitted.predict(images).score, rtol=1e-5, atol=1e-6)

    def test_refit_on_other_data_equals_fresh_fit(self, case: ConformanceCase, fitted: Detector, test_data) -> None:
        """Fitting is a function of the data: nothing of an earlier fit (sums, banks, counts) may leak in.

        Gradient models continue from their trained weights by design, so this holds for data-pass models only.
        """
        self._expensive(case)
        if case.spec.trainer != "feature_bank":
            pytest.skip("a gradient model's refit starts from its trained weights by design")
        images, _ = test_data
        other = "plate" if self._category(case) != "plate" else "weave"
        fresh = fit_tiny(case.name, case.overrides, case.image_size, other, self.n_train // 2, self.seed)
        refit = fit_tiny(case.name, case.overrides, case.image_size, other, self.n_train // 2, self.seed,
                         detector=copy.deepcopy(fitted))
        torch.testing.assert_close(refit.predict(images).score, fresh.predict(images).score, rtol=1e-5, atol=1e-6)

    def test_checkpoint_round_trip(self, case: ConformanceCase, fitted: Detector, test_data, tmp_path) -> None:
        images, _ = test_data
        _, config = build_model(case.name, **{**case.overrides, "pretrained": False})
        save_checkpoint(fitted, tmp_path, {"model": config.name, "hyperparameters": config.hyperparameters,
                                           "normalize": bool(config.run.get("normalize", True))})
        loaded = load_model(tmp_path)
        before, after = fitted.predict(images), loaded.predict(images)
        assert torch.equal(before.score, after.score)
        if before.anomaly_map is not None:
            assert torch.equal(before.anomaly_map, after.anomaly_map)

    def test_no_network_access(self, fitted: Detector, network_attempts: list[str]) -> None:
        assert network_attempts == []

    # -- deployment --------------------------------------------------------------------------------
    def test_export_parity(self, case: ConformanceCase, fitted: Detector, test_data, tmp_path) -> None:
        """The model exports to one ONNX graph (batch 2) that agrees with torch within the export's tolerance
        on four images (two runs of the graph), or its spec says why it cannot be exported.

        A variant that only changes the network's size exports the same graph as its base: checked there."""
        self._expensive(case)
        if not case.spec.exportable:
            pytest.skip(f"{case.name} declares it cannot be exported: {case.spec.export_note}")
        pytest.importorskip("onnxruntime")
        from ad_core.exporting import export_detector, read_export_metadata

        images, _ = test_data
        detector = calibrated_copy(fitted, images, {"model": case.name, "base_model": case.spec.name,
                                                    "hyperparameters": case.overrides, "image_size": case.image_size})
        result = export_detector(detector, tmp_path / "export", images=images[::4], source="generated", batch=2)
        meta = read_export_metadata(result.directory)
        assert meta["parity"]["images"] == len(images[::4]) and meta["outputs"][:3] == ["score", "normalized_score",
                                                                                          "label"]
        assert meta["has_map"] == (fitted.predict(images[:1]).anomaly_map is not None)


def calibrated_copy(detector: Detector, images: torch.Tensor, meta: dict[str, Any]) -> Detector:
    """A copy of a fitted detector with thresholds and ranges set from its outputs on `images` (median score and
    pixel as thresholds) and `meta` as its checkpoint metadata: what an export needs from a trained run."""
    detector = copy.deepcopy(detector)
    pred = detector.predict(images)
    scores = pred.score
    detector.post.calibrate(float(scores.median()), float(scores.min()), float(scores.max()))
    if pred.anomaly_map is not None:
        pixels = pred.anomaly_map
        detector.post.calibrate_pixels(float(pixels.median()), float(pixels.min()), float(pixels.max()))
    detector.meta = meta
    return detector
