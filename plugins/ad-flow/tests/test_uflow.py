"""U-Flow (its conformance runs in test_conformance.py): the U-shaped flow's exact log-determinant, the NFA
threshold in a run's results, the MS-CaiT path (with a tiny CaiT), and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from ad_core import train
from ad_core.building import build_model
from ad_flow import uflow
from ad_flow.uflow import UFlow, UShapedFlow


def test_u_shaped_log_determinant_is_exact() -> None:
    torch.manual_seed(0)
    flow = UShapedFlow([4, 8], flow_steps=2, clamp=2.0, subnet_ratio=1.0, soft_permutation=False, seed=0)
    for p in flow.parameters():  # move away from the near-identity start
        p.data.add_(0.3 * torch.randn_like(p))
    features = [torch.randn(1, 4, 4, 4), torch.randn(1, 8, 2, 2)]
    shapes = [f.shape for f in features]

    def run(v: torch.Tensor) -> torch.Tensor:
        parts = [p.view(s) for p, s in zip(v.split([s.numel() for s in shapes]), shapes)]
        return torch.cat([z.flatten() for z in flow(parts)[0]])

    flat = torch.cat([f.flatten() for f in features])
    jacobian = torch.autograd.functional.jacobian(run, flat)
    assert jacobian.shape == (flat.numel(), flat.numel())  # the U-shape keeps every dimension
    latents, log_det = flow(features)
    assert [tuple(z.shape[1:]) for z in latents] == [(5, 4, 4), (4, 2, 2)]
    torch.testing.assert_close(log_det[0].double(), torch.linalg.slogdet(jacobian.double())[1], rtol=1e-4, atol=1e-4)


def test_nfa_threshold_only_with_the_nfa_map() -> None:
    nfa, _ = build_model("uflow-resnet18", pretrained=False)
    likelihood, _ = build_model("uflow-resnet18", pretrained=False, score_map="likelihood")
    assert nfa.fixed_thresholds() == {"nfa": 0.0}
    assert likelihood.fixed_thresholds() == {}
    likelihood.mark_fitted()
    amap = likelihood.predict(torch.rand(2, 3, 64, 64)).anomaly_map
    assert amap.shape == (2, 64, 64) and ((amap >= 0) & (amap <= 1)).all()


def test_saturated_nfa_maps_are_ordered_by_likelihood_and_keep_the_decision() -> None:
    """Latents far from N(0, 1) everywhere saturate every window count: the -log NFA maps of two such images
    are equal, and the likelihood tie-break must still rank the image with larger latents higher, without moving
    any pixel across the NFA threshold."""
    model, _ = build_model("uflow-resnet18", pretrained=False)
    model.mark_fitted()
    mild = [torch.full((1, 5, 8, 8), 3.0), torch.full((1, 4, 4, 4), 3.0)]
    strong = [2 * z for z in mild]
    raw = [-uflow.log_nfa(z, model.nfa_window, model.nfa_probability) for z in (mild, strong)]
    torch.testing.assert_close(raw[0], raw[1])  # saturated: the NFA alone cannot tell them apart

    def scored(latents):
        model.forward = lambda images: (latents, None)
        return model.compute(torch.zeros(1, 3, 64, 64))

    (score_mild, map_mild), (score_strong, map_strong) = scored(mild), scored(strong)
    assert score_strong > score_mild
    for amap, nfa_map in ((map_mild, raw[0]), (map_strong, raw[1])):
        assert ((amap >= 0) == (nfa_map >= 0)).all() and (amap - nfa_map).abs().max() <= uflow.NFA_TIE_BREAK + 1e-5


@pytest.fixture
def run_outputs(tmp_path, monkeypatch):
    from ad_core.settings import settings

    monkeypatch.setattr(settings, "output_dir", tmp_path / "outputs")


def test_run_reports_the_nfa_threshold(run_outputs) -> None:
    """The NFA threshold is U-Flow's default decision rule: no labelled defects are needed to set it."""
    (run,) = train("demo", "weave", "uflow-resnet18", verbose=False, pretrained=False, image_size=64,
                   num_epochs=1, write_maps=False)
    results = json.loads((run.output_dir / "results.json").read_text())
    nfa = {"value": 0.0, "fixed": True, "selected_on": "the model itself (no data)"}
    assert results["thresholds"]["nfa"] == nfa
    assert results["threshold"] == {"method": "nfa", "value": 0.0, "selected_on": nfa["selected_on"]}
    assert {"normal_fpr", "mean_ksigma"} <= set(results["thresholds"])
    assert "f1_percentile" in results["oracle_thresholds"]
    assert "nfa (set by the model): 0.000" in (run.output_dir / "results.txt").read_text()


def test_mcait_extractor_with_a_tiny_cait(monkeypatch) -> None:
    monkeypatch.setattr(uflow, "MCAIT_PARTS", (("cait_xxs24_224", 64, 1), ("cait_xxs24_224", 64, 0)))
    with pytest.raises(ValueError, match="twice the next one"):
        model = UFlow(pretrained=False, flow_steps=1)
        model.mark_fitted()
        model.predict(torch.rand(1, 3, 64, 64))
    monkeypatch.setattr(uflow, "MCAIT_PARTS", (("cait_xxs24_224", 64, 1), ("cait_xxs24_224", 32, 0)))
    model = UFlow(pretrained=False, flow_steps=1)
    assert model.extractor.channels == [192, 192]
    model.mark_fitted()
    pred = model.predict(torch.rand(2, 3, 64, 64))
    assert pred.anomaly_map.shape == (2, 64, 64) and torch.isfinite(pred.score).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"score_map": "max"}, "score_map"), ({"flow_steps": 0}, "flow_steps"),
     ({"backbone": "mcait", "weights_file": "x.pth"}, "backbone_dir")],
)
def test_bad_settings_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UFlow(**{"backbone": "resnet18", "pretrained": False, **kwargs})


def test_image_size_must_halve_between_scales() -> None:
    model, _ = build_model("uflow-resnet18", pretrained=False)
    model.mark_fitted()
    with pytest.raises(ValueError, match="multiple of the coarsest stride"):
        model.predict(torch.rand(1, 3, 72, 72))
