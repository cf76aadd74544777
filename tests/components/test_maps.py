"""Map smoothing equals scipy's Gaussian filter; resizing reaches the requested size."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from ad_core.components.maps import gaussian_blur, gaussian_kernel1d, resize_map


def test_gaussian_blur_equals_scipy_mirror_filter() -> None:
    amap = torch.rand(2, 40, 36, generator=torch.Generator().manual_seed(0))
    got = gaussian_blur(amap, sigma=2.0)
    expected = np.stack([gaussian_filter(m.double().numpy(), sigma=2.0, mode="mirror", truncate=4.0) for m in amap])
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(gaussian_blur(amap, 0.0), amap)


def test_kernel_is_normalised_and_spans_four_sigmas() -> None:
    kernel = gaussian_kernel1d(1.5)
    assert kernel.numel() == 2 * 6 + 1 and torch.isclose(kernel.sum(), torch.tensor(1.0))
    assert int(kernel.argmax()) == 6


def test_resize_map_accepts_both_layouts() -> None:
    amap = torch.arange(4.0).view(1, 2, 2)
    assert resize_map(amap, (2, 2)).equal(amap)
    assert resize_map(amap.unsqueeze(1), (6, 4)).shape == (1, 6, 4)
    assert torch.isclose(resize_map(torch.full((1, 3, 3), 2.0), (7, 7)), torch.tensor(2.0)).all()
