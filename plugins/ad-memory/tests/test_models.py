"""Tests of the ad-memory models on tiny images with random-weight backbones (fast, offline)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ad_memory import plugin
from ad_memory.dfkde import Dfkde
from ad_memory.padim import Padim
from ad_memory.patchcore import PatchCore

from ad_core.components.knn import nearest_neighbours
from ad_core.specs import RUN_KEYS, resolve_ref

SIZE = 64
N_TRAIN = 12
TINY = {"backbone": "resnet18", "pretrained": False}
MODELS = {
    "padim": (Padim, {**TINY}),
    "patchcore": (PatchCore, {**TINY}),
    "dfkde": (Dfkde, {**TINY}),
}


# -- data --------------------------------------------------------------------------------------------
def textures(n: int, seed: int, size: int = SIZE) -> torch.Tensor:
    """Smooth random colour textures with a little grain (roughly ImageNet-normalised values)."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.normal(size=(n, 3, 4, 4)).astype(np.float32)) * 0.5
    images = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return images + 0.1 * torch.from_numpy(rng.normal(size=(n, 3, size, size)).astype(np.float32))


def defective(n: int, seed: int, size: int = SIZE) -> torch.Tensor:
    """Textures with a big bright square (even images) or a strong noise patch (odd images)."""
    rng = np.random.default_rng(seed + 7)
    images = textures(n, seed, size)
    side = size // 3
    for i in range(n):
        y, x = rng.integers(0, size - side, size=2)
        if i % 2 == 0:
            images[i, :, y : y + side, x : x + side] = 3.0
        else:
            images[i, :, y : y + side, x : x + side] = torch.from_numpy(
                rng.normal(scale=2.5, size=(3, side, side)).astype(np.float32))
    return images


def auroc(scores: torch.Tensor, labels: np.ndarray) -> float:
    s = scores.numpy()
    pos, neg = s[labels == 1], s[labels == 0]
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg)))


def fit(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 4) -> torch.nn.Module:
    """What the core's feature-bank trainer does: update per batch under no_grad, then finalize."""
    model.eval()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            model.update(images[start : start + batch_size])
        model.finalize()
    return model


@pytest.fixture(scope="module")
def train_images() -> torch.Tensor:
    return textures(N_TRAIN, seed=0)


@pytest.fixture(scope="module")
def test_set() -> tuple[torch.Tensor, np.ndarray]:
    images = torch.cat([textures(10, seed=100), defective(10, seed=200)])
    return images, np.array([0] * 10 + [1] * 10)


_FITTED: dict[str, torch.nn.Module] = {}


def fitted_model(name: str) -> torch.nn.Module:
    """Each model is fitted once on the training textures and shared by the tests (read-only)."""
    if name not in _FITTED:
        cls, kwargs = MODELS[name]
        torch.manual_seed(0)
        _FITTED[name] = fit(cls(**kwargs), textures(N_TRAIN, seed=0))
    return _FITTED[name]


@pytest.fixture(scope="module", params=list(MODELS))
def fitted(request):
    cls, kwargs = MODELS[request.param]
    return request.param, cls, kwargs, fitted_model(request.param)


# -- plugin ------------------------------------------------------------------------------------------
def test_plugin_registers_three_models_with_valid_defaults() -> None:
    specs = []
    plugin.adcore_register_models(specs.append)
    assert {s.name for s in specs} == {"padim", "patchcore", "dfkde"}
    variants = {v for s in specs for v in s.variants}
    assert variants == {"padim-wrn50", "patchcore-r18"}
    for spec in specs:
        spec.validate()
        assert spec.trainer == "feature_bank" and spec.paper
        params = set(inspect.signature(resolve_ref(spec.factory)).parameters)
        for variant in [spec.name, *spec.variants]:
            config = spec.config(variant)
            assert set(config) - RUN_KEYS <= params, f"{variant}: {set(config) - RUN_KEYS - params}"
        assert {"pretrained", "backbone", "layers", "weights_file", "backbone_dir", "seed"} <= params


def test_plugin_module_does_not_import_torch() -> None:
    code = "import sys, ad_memory.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- every model (the generic checks are the core's conformance suite: test_conformance.py) -----------
def test_same_seed_same_model_whatever_the_global_rng(fitted, train_images, test_set) -> None:
    _, cls, kwargs, model = fitted
    torch.manual_seed(0)
    backbone_state = {k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    other = cls(**kwargs)
    other.load_state_dict(backbone_state, strict=False)  # same random backbone, fitted again
    torch.manual_seed(999)  # the models' own draws must not depend on the global generator
    fit(other, train_images)
    images = test_set[0][:4]
    assert torch.equal(other.predict(images).score, model.predict(images).score)


def test_backbone_stays_frozen_in_train_mode(fitted, test_set) -> None:
    _, _, _, model = fitted
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.train()
    try:
        assert not model.backbone.training and not any(m.training for m in model.backbone.modules())
        with torch.no_grad():
            model.backbone(test_set[0][:2] * 5)
        for key, value in model.backbone.state_dict().items():
            assert torch.equal(value, before[key]), key
        assert not any(p.requires_grad for p in model.backbone.parameters())
    finally:
        model.eval()


# -- PatchCore ---------------------------------------------------------------------------------------
def test_patchcore_streaming_pool_stays_within_budget(train_images, test_set) -> None:
    torch.manual_seed(0)
    budget = 100  # 64x64 images give 8x8 = 64 patches each
    # no carry (hence no reserve): each group keeps exactly its own share, which the last assert checks
    model = PatchCore(**TINY, coreset_ratio=0.5, max_pending_patches=budget, carry_patches=0)
    sizes = []
    with torch.no_grad():
        for start in range(0, N_TRAIN, 2):
            model.update(train_images[start : start + 2])
            sizes.append(model.pending_patches)
        model.finalize()
    assert max(sizes) < budget and model.pending_patches == 0
    # groups of 128 patches each keep their half: the bank has coreset_ratio of all patches seen
    assert len(model.memory_bank) == N_TRAIN * 64 // 2
    assert len(torch.unique(model.memory_bank, dim=0)) == len(model.memory_bank)
    images, labels = test_set
    assert auroc(model.predict(images).score, labels) > 0.8
    full = fit(PatchCore(**TINY, coreset_ratio=0.5), train_images)
    assert len(full.memory_bank) == N_TRAIN * 64 // 2
    assert not torch.equal(full.memory_bank, model.memory_bank)  # one group: a different (one-shot) choice
    # each group's share comes from that group: the first two images' patches hold the first 64 items
    with torch.no_grad():
        first, _ = model.embed(train_images[:2])
    dist, _ = nearest_neighbours(model.memory_bank[:64], first)
    assert dist.max() < 1e-2 * first.norm(dim=1).mean()


@pytest.mark.parametrize("seed_groups", [2, 1, 0])
def test_patchcore_seeded_groups_fill_gaps_instead_of_repeating(train_images, seed_groups: int) -> None:
    # the first two images three times: three identical groups of 128 patches, each keeping 32 bank items
    model = PatchCore(**TINY, coreset_ratio=0.25, max_pending_patches=128, seed_groups=seed_groups, carry_patches=0)
    with torch.no_grad():
        for images in (train_images[:2], train_images[:2], train_images[:2]):
            model.update(images)
        model.finalize()
    parts = model.memory_bank.split(32)
    assert len(parts) == 3
    distinct = len(torch.unique(model.memory_bank, dim=0))
    if seed_groups == 2:  # each group continues from both earlier groups' items: all new
        assert distinct == 96
    elif seed_groups == 1:  # the third group only sees the second's items: it repeats some of the first's
        assert 64 <= distinct < 96
        assert len(torch.unique(torch.cat(parts[1:]), dim=0)) == 64
    else:  # reduced on its own, every group repeats the first's choice
        assert torch.equal(parts[0], parts[1]) and torch.equal(parts[0], parts[2])


class FeaturePatchCore(PatchCore):
    """PatchCore whose "images" are [B, patches, D] features: the streamed coreset without a backbone."""

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        return images.reshape(-1, images.shape[-1]), (images.shape[1], 1)


def test_patchcore_carry_and_reserve_bring_the_budget_to_late_new_looking_groups() -> None:
    # six groups of a tight cluster, then two groups of widely spread patches: a fixed share per group spends
    # most of the bank on the cluster; the one-shot greedy spends it on the spread patches
    g = torch.Generator().manual_seed(0)
    dim = 16
    stream = torch.cat([0.2 * torch.randn(24, 50, dim, generator=g), 3.0 * torch.randn(8, 50, dim, generator=g)])

    def covering_radius(**options) -> float:
        model = FeaturePatchCore(**TINY, **{"target_embed_dim": dim, "pretrain_embed_dim": dim, "projection_dim": 0,
                                            "coreset_ratio": 0.1, "max_pending_patches": 200, "carry_patches": 50,
                                            **options})
        with torch.no_grad():
            for images in stream.split(4):
                model.update(images)
            model.finalize()
        assert len(model.memory_bank) == 160  # the reserve is spent: 10 % of the 1600 patches
        return float(nearest_neighbours(stream.reshape(-1, dim), model.memory_bank)[0].max())

    one_shot = covering_radius(max_pending_patches=1 << 20)
    fixed_shares = covering_radius(carry_patches=0)
    streamed = covering_radius()
    assert fixed_shares > 1.18 * one_shot
    assert streamed < 1.15 * one_shot  # 1.12; without the reserve (carry alone) 1.20


def test_patchcore_greedy_pass_holds_the_carry_within_max_pending_patches() -> None:
    # the carried patches count towards the pass: a group closes once it and the carry fill max_pending_patches
    model = FeaturePatchCore(**TINY, target_embed_dim=8, pretrain_embed_dim=8, projection_dim=0,
                             max_pending_patches=200, carry_patches=50)
    stream = torch.randn(12, 50, 8, generator=torch.Generator().manual_seed(0))
    sizes = []
    with torch.no_grad():
        for image in stream.split(1):
            model.update(image)
            sizes.append((model.pending_patches, model.carried_patches))
    assert max(p + c for p, c in sizes) < 200
    assert max(c for _, c in sizes) == 50  # the carry is in use


@pytest.mark.parametrize(("options", "message"), [({"carry_patches": 200, "max_pending_patches": 200}, "carry_patches"),
                                                   ({"carry_patches": -1}, "carry_patches"),
                                                   ({"reserve_ratio": 1.0}, "reserve_ratio")])
def test_patchcore_rejects_a_carry_that_leaves_no_room_and_a_whole_reserve(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PatchCore(**TINY, **options)


def test_patchcore_training_patches_are_in_the_bank(train_images) -> None:
    model = fit(PatchCore(**TINY, coreset_ratio=1.0), train_images[:3])
    with torch.no_grad():
        emb, _ = model.embed(train_images[:3])
    dist, _ = nearest_neighbours(emb, model.memory_bank)
    assert dist.max() < 1e-2 * emb.norm(dim=1).mean()  # float16 pool rounding only


def test_patchcore_reweighted_score_follows_eq7(test_set) -> None:
    model = fitted_model("patchcore")
    images = test_set[0]
    with torch.no_grad():
        emb, (h, w) = model.embed(images)
        dist, index = nearest_neighbours(emb, model.memory_bank)
    b = len(images)
    dist, index = dist.view(b, h * w), index.view(b, h * w)
    score = model.reweighted_score(emb, dist, index)
    raw = dist.max(1).values
    assert (score >= 0).all() and (score <= raw).all()
    # by hand for image 0
    p = int(dist[0].argmax())
    q, m_star = emb[p], model.memory_bank[index[0, p]]
    bank_dist = torch.cdist(m_star[None].double(), model.memory_bank.double())[0]
    support = bank_dist.argsort()[: model.num_neighbors]
    d = torch.linalg.vector_norm(q[None] - model.memory_bank[support], dim=1)
    expected = (1 - torch.exp(d[0]) / torch.exp(d).sum()) * raw[0]
    torch.testing.assert_close(score[0], expected, rtol=1e-4, atol=1e-5)
    # num_neighbors=1: the weight formula is degenerate and the raw max distance is the score
    model.num_neighbors = 1
    try:
        assert torch.equal(model.reweighted_score(emb, dist, index), raw)
    finally:
        model.num_neighbors = 9


# -- PaDiM -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stats_dtype,tol", [("float64", 1e-5), ("float32", 1e-3)])
def test_padim_streaming_statistics_equal_batch_statistics(train_images, stats_dtype: str, tol: float) -> None:
    torch.manual_seed(0)
    model = Padim(**TINY, n_features=20, stats_dtype=stats_dtype)
    with torch.no_grad():
        emb, _ = model.embed(train_images)
    fit(model, train_images, batch_size=5)  # uneven batches
    x = emb.transpose(0, 1).double()  # [P, N, C]
    mean = x.mean(1)
    centred = x - mean[:, None]
    cov = centred.transpose(1, 2) @ centred / (x.shape[1] - 1) + 0.01 * torch.eye(20, dtype=torch.float64)
    torch.testing.assert_close(model.mean.double(), mean, rtol=tol, atol=tol)
    torch.testing.assert_close(model.inv_covariance.double(), torch.linalg.inv(cov), rtol=tol * 10, atol=tol * 10)


def test_padim_channel_subset_is_seeded() -> None:
    a, b, c = Padim(**TINY, seed=0), Padim(**TINY, seed=0), Padim(**TINY, seed=1)
    assert len(a.channel_index) == 100 == len(torch.unique(a.channel_index))
    assert torch.equal(a.channel_index, b.channel_index) and not torch.equal(a.channel_index, c.channel_index)
    assert int(a.channel_index.max()) < 64 + 128 + 256


def test_padim_map_is_lower_on_training_image_than_on_corrupted_one(train_images) -> None:
    model = fitted_model("padim")
    clean = train_images[:2]
    corrupted = clean + 2.0 * torch.from_numpy(np.random.default_rng(3).normal(size=clean.shape).astype(np.float32))
    clean_map, bad_map = model.predict(clean).anomaly_map, model.predict(corrupted).anomaly_map
    assert (clean_map.mean(dim=(1, 2)) < bad_map.mean(dim=(1, 2))).all()
    assert (clean_map.amax(dim=(1, 2)) < bad_map.amax(dim=(1, 2))).all()


# -- DFKDE -------------------------------------------------------------------------------------------
def test_dfkde_density_matches_scipy_gaussian_kde(train_images, test_set) -> None:
    model = fitted_model("dfkde")
    from scipy.stats import gaussian_kde

    with torch.no_grad():
        train = model._reduce(model.embed(train_images)).double().numpy()
        test = model.embed(test_set[0])
        reduced = model._reduce(test).double().numpy()
        ours = model.log_density(test).double().numpy()
    kde = gaussian_kde(train.T)  # Scott's rule
    np.testing.assert_allclose(ours, kde.logpdf(reduced.T), rtol=1e-3, atol=1e-3)


def test_dfkde_pca_subsample_and_scores(train_images, test_set) -> None:
    torch.manual_seed(0)
    model = fit(Dfkde(**TINY, n_pca_components=4, max_training_points=10), train_images)
    assert model.kde_data.shape == (10, 4)
    comps = model.pca_components.double()
    torch.testing.assert_close(comps.T @ comps, torch.eye(4, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        scaled = model._reduce(model.embed(train_images))
    norms = scaled.norm(dim=1)  # scaled by the largest norm among the 10 sampled training features:
    assert torch.isclose(norms, torch.tensor(1.0), atol=1e-4).any() and float(norms.max()) < 1.5
    nll = model.predict(test_set[0]).score
    model.score_type = "probability"
    prob = model.predict(test_set[0]).score
    assert ((prob > 0) & (prob <= 1)).all()
    ordered = prob[torch.argsort(nll)]
    assert (ordered[1:] >= ordered[:-1]).all()  # a monotone map of the same density (it may saturate at 1)
    # fewer images than components: the PCA rank is capped at n - 1
    small = fit(Dfkde(**TINY), train_images[:5])
    assert small.pca_components.shape[1] == 4
    assert torch.isfinite(small.predict(test_set[0][:2]).score).all()


@pytest.mark.parametrize("unified", [False, True])
def test_runner_streams_training_images_to_patchcore_in_a_seeded_random_order(tmp_path, monkeypatch,
                                                                              unified: bool) -> None:
    """PatchCore's streamed groups each take a share of the bank, which fits only if the groups look alike: a folder
    in name order (or a unified run's categories one after another) must reach it shuffled, the same way per seed."""
    from ad_core.data.synthetic import write_demo_dataset
    from ad_core.runner import run_one
    from ad_core.unified import run_unified

    categories = ["weave", "plate"] if unified else ["weave"]
    root = write_demo_dataset(tmp_path / "data", categories, image_size=32, n_train=12, n_test_normal=1,
                              n_test_anomalous=1)
    orders: list[list[str]] = []
    update = PatchCore.update

    def recording_update(self, batch) -> None:
        orders[-1].extend(batch.path)
        update(self, batch)

    monkeypatch.setattr(PatchCore, "update", recording_update)
    for seed in (0, 0, 1):
        orders.append([])
        settings = dict(root=root, output_dir=tmp_path / f"out{len(orders)}", image_size=32, pretrained=False,
                        batch_size=4, write_maps=False, device="cpu", seed=seed, backbone="resnet18")
        if unified:
            run_unified("mvtec", categories, "patchcore", **settings)
        else:
            run_one("mvtec", "weave", "patchcore", **settings)
    assert len(orders[0]) >= 6
    for category in categories:  # a folder is read in name order: each category's images must come shuffled
        seen = [path for path in orders[0] if f"/{category}/" in path]
        assert len(seen) >= 3 and seen != sorted(seen)
    assert orders[0] == orders[1] and orders[0] != orders[2]
