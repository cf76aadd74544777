"""FastFlow and CFlow pass the core's conformance suite (tiny configs, random weights, offline)."""

from __future__ import annotations

from ad_core.testing import ModelConformance


class TestFastFlow(ModelConformance):
    model_name = "fastflow"
    overrides = {"backbone": "resnet18", "image_size": 64, "flow_steps": 2, "batch_size": 8, "num_epochs": 3,
                 "early_stopping_patience": None}


class TestCFlow(ModelConformance):
    model_name = "cflow-resnet18"
    overrides = {"image_size": 64, "coupling_blocks": 2, "fiber_batch_size": 32, "batch_size": 8, "num_epochs": 2,
                 "soft_permutation": False}
