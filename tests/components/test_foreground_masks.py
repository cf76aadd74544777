"""Foreground masks read per training image from a folder, resized to the model input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ad_core.components import ForegroundMaskError, ForegroundMasks


def test_the_mask_named_after_the_image_is_read_binarised_and_resized(tmp_path) -> None:
    pixels = np.zeros((8, 4), dtype=np.uint8)
    pixels[:4, 2:] = 255  # foreground: top right quarter
    pixels[7, 0] = 1  # any nonzero value is foreground
    Image.fromarray(pixels).save(tmp_path / "007.png")
    Image.fromarray(255 - pixels).save(tmp_path / "008.png")
    mask = ForegroundMasks(tmp_path).load("/data/train/good/007.jpg", (16, 8))
    expected = torch.zeros(16, 8)
    expected[:8, 4:] = 1
    expected[14:, :2] = 1
    assert torch.equal(mask, expected)
    stripes = np.zeros((8, 8), dtype=np.uint8)
    stripes[1::2] = 255  # odd rows: halving samples the pixel centres 1, 3, 5, 7 (PIL's NEAREST), all foreground
    Image.fromarray(stripes).save(tmp_path / "009.png")
    assert bool(ForegroundMasks(tmp_path).load("009.png", (4, 8)).all())


def test_without_a_folder_there_is_no_mask_and_a_missing_one_is_a_clear_error(tmp_path) -> None:
    assert ForegroundMasks(None).load("a.png", (4, 4)) is None
    with pytest.raises(ForegroundMaskError, match="does not exist"):
        ForegroundMasks(tmp_path / "missing")
    with pytest.raises(ForegroundMaskError, match=r"no foreground mask for training image .*expected 010.png"):
        ForegroundMasks(tmp_path).load("train/good/010.png", (4, 4))
