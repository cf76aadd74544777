"""Every ad-kd model passes the core's conformance suite (tiny configs, random weights, offline)."""

from __future__ import annotations

from ad_core.testing import ModelConformance


class TestStfpm(ModelConformance):
    model_name = "stfpm"
    overrides = {"batch_size": 8, "num_epochs": 3}


class TestFre(ModelConformance):
    """FRE's autoencoder input is the pooled feature tensor of one image size, so the size is a model option."""

    model_name = "fre-r18"
    overrides = {"image_size": 64, "batch_size": 8, "num_epochs": 10}


class TestReverseDistillation(ModelConformance):
    """At 64 px the one-class embedding is a 2x2 grid and layer3 4x4, too coarse to localise anything; 128 px
    (embedding 4x4) is the smallest size at which the decoder has a spatial map to reconstruct."""

    model_name = "reverse_distillation-r18"
    image_size = 128
    overrides = {"batch_size": 8, "num_epochs": 4}
