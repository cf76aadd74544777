"""DFM's scores against direct computations on the same fitted statistics."""

from __future__ import annotations

import pytest
import torch

from ad_adapt.dfm import Dfm
from ad_core.plugin_api import normal_batch


def _fit(model: Dfm, images: torch.Tensor) -> Dfm:
    model.on_fit_start([])
    for chunk in images.split(3):
        model.update(normal_batch(chunk))
    model.finalize()
    return model.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(10, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_fre_is_the_distance_to_the_pca_subspace(images: torch.Tensor) -> None:
    model = _fit(Dfm(backbone="resnet18", pretrained=False, pooling_kernel_size=2), images)
    train = model.features(images).flatten(1).double()
    basis = torch.linalg.svd(train - train.mean(0), full_matrices=False)[2][: model.components.shape[1]].T
    test = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    centred = model.features(test).flatten(1).double() - train.mean(0)
    expected = (centred - centred @ basis @ basis.T).pow(2).sum(1)
    score, amap = model.compute(test)
    torch.testing.assert_close(score.double(), expected, rtol=1e-3, atol=0)
    assert amap.shape == (4, 64, 64)  # the error per position summed over channels, at the image size
    torch.testing.assert_close(amap.mean((1, 2)).double() * 4, expected, rtol=1e-3, atol=0)


def test_variance_ratio_keeps_the_fewest_components_reaching_it(images: torch.Tensor) -> None:
    model = _fit(Dfm(backbone="resnet18", pretrained=False, pooling_kernel_size=2, variance_ratio=0.9), images)
    vectors = model.features(images).flatten(1).double()
    variance = torch.linalg.svdvals(vectors - vectors.mean(0)).pow(2)
    ratio = variance.cumsum(0) / variance.sum()
    k = model.components.shape[1]
    assert ratio[k - 1] >= 0.9 > (ratio[k - 2] if k > 1 else 0)


def test_nll_is_the_gaussian_negative_log_likelihood_of_the_pca_coordinates(images: torch.Tensor) -> None:
    model = _fit(Dfm(backbone="resnet18", pretrained=False, pooling_kernel_size=2, score_type="nll",
                     n_components=5), images)
    train = model.features(images).flatten(1).double()
    coordinates = (train - train.mean(0)) @ model.components.double()
    gaussian = torch.distributions.MultivariateNormal(coordinates.mean(0),
                                                      torch.cov(coordinates.T, correction=0))
    test = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    test_coordinates = (model.features(test).flatten(1).double() - train.mean(0)) @ model.components.double()
    # -2 log p(z) = nll + k log(2 pi)
    expected = -2 * gaussian.log_prob(test_coordinates) - 5 * torch.log(torch.tensor(2 * torch.pi)).double()
    score, amap = model.compute(test)
    assert amap is None
    torch.testing.assert_close(score.double(), expected, rtol=1e-3, atol=1e-2)


def test_predicting_at_another_size_is_a_clear_error(images: torch.Tensor) -> None:
    model = _fit(Dfm(backbone="resnet18", pretrained=False, pooling_kernel_size=2), images)
    with pytest.raises(ValueError, match="training image size"):
        model.predict(torch.rand(1, 3, 96, 96))


def test_one_image_says_how_many_are_needed() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        _fit(Dfm(backbone="resnet18", pretrained=False), torch.rand(1, 3, 64, 64))


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="score_type"):
        Dfm(backbone="resnet18", pretrained=False, score_type="mahalanobis")
    with pytest.raises(ValueError, match="variance_ratio"):
        Dfm(backbone="resnet18", pretrained=False, variance_ratio=1.5)
