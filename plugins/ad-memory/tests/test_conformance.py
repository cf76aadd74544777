"""Every ad-memory model passes the core's conformance suite (tiny configs, random weights, offline)."""

from __future__ import annotations

from ad_core.testing import ModelConformance

TINY = {"backbone": "resnet18", "batch_size": 8}


class TestPadim(ModelConformance):
    model_name = "padim"
    overrides = TINY


class TestPatchCore(ModelConformance):
    model_name = "patchcore"
    overrides = TINY


class TestPatchCoreR18(ModelConformance):
    model_name = "patchcore-r18"
    overrides = {"batch_size": 8}


class TestDfkde(ModelConformance):
    """DFKDE scores whole images from globally pooled features: with a random-weight backbone, only
    defects that change image-level statistics (a part of an object missing or stained) move them, so
    its ranking check runs on the object category at 128 px with more training images."""

    model_name = "dfkde"
    overrides = TINY
    category = "plate"
    image_size = 128
    n_train = 40
