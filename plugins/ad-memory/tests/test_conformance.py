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
    """DFKDE scores whole images from globally pooled layer-4 features. With a random-weight backbone those
    are close to global colour statistics, so only defects that change a good share of the image move them:
    the ranking check runs on the object category whose defects (holes, missing pieces) do that."""

    model_name = "dfkde"
    overrides = TINY
    category = "plate"
