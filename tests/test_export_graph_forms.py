"""The fixed graph forms used while exporting equal the eager code they replace."""

from __future__ import annotations

import pytest
import torch

from ad_core.components import knn
from ad_core.ensemble.normalization import count_at_most
from ad_core.exporting.graph import FP16_MIN_ELEMENTS, halve_constants


def test_graph_neighbours_equal_the_pruned_search(monkeypatch) -> None:
    monkeypatch.setattr(knn, "GRAPH_BANK_ROWS", 300)  # several bank blocks, the last one short
    gen = torch.Generator().manual_seed(0)
    bank = torch.randn(knn.PRUNE_MIN_BANK + 100, 24, generator=gen)
    queries = torch.randn(500, 24, generator=gen)
    expected = knn.nearest_neighbours(queries, bank, knn.build_search_index(bank))
    found = knn.graph_neighbours(queries, bank)
    assert torch.equal(found[1], expected[1])
    torch.testing.assert_close(found[0], expected[0])


def test_graph_knn_equals_knn_search(monkeypatch) -> None:
    monkeypatch.setattr(knn, "GRAPH_BANK_ROWS", 64)
    gen = torch.Generator().manual_seed(1)
    bank, queries = torch.randn(200, 8, generator=gen), torch.randn(40, 8, generator=gen)
    expected, found = knn.knn_search(queries, bank, 5), knn.graph_knn(queries, bank, 5)
    torch.testing.assert_close(found[0], expected[0])
    assert torch.equal(found[1], expected[1])


@pytest.mark.parametrize("n", [2, 3, 7, 1024])
def test_count_at_most_is_searchsorted_right(n) -> None:
    gen = torch.Generator().manual_seed(n)
    knots = torch.randn(n, generator=gen).sort().values
    knots[1] = knots[0]  # a tie
    values = torch.cat([torch.randn(300, generator=gen) * 2, knots, knots + 1e-6]).view(-1, 2)
    assert torch.equal(count_at_most(knots, values), torch.searchsorted(knots, values.reshape(-1), right=True).view(-1, 2))


def test_halve_constants_keeps_small_ones_and_the_graph_valid() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    big = numpy_helper.from_array(torch.randn(FP16_MIN_ELEMENTS).numpy(), "big")
    small = numpy_helper.from_array(torch.randn(4).numpy(), "small")
    node = helper.make_node("ReduceSum", ["big"], ["out"], keepdims=0)
    plus = helper.make_node("Add", ["out", "small"], ["y"])
    graph = helper.make_graph([node, plus], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                              initializer=[big, small])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert halve_constants(model) == 1
    kinds = {t.name: t.data_type for t in model.graph.initializer}
    assert kinds == {"big.fp16": TensorProto.FLOAT16, "small": TensorProto.FLOAT}
    onnx.checker.check_model(model)
    assert model.graph.node[0].op_type == "Cast"


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [(5, 7), (19, 13)])
def test_antialiased_resize_exports_as_torch_computes_it(tmp_path, mode, size) -> None:
    """Shrinking (an ensemble's member input) and enlarging (a ViT's position embedding) both match torch."""
    import onnxruntime

    from ad_core.exporting.graph import register_resize_forms

    class Resize(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False)

    x = torch.rand(1, 3, 11, 9)
    register_resize_forms()
    torch.onnx.export(Resize(), (x,), str(tmp_path / "r.onnx"), opset_version=18, dynamo=False,
                      input_names=["x"])
    (got,) = onnxruntime.InferenceSession(str(tmp_path / "r.onnx")).run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), Resize()(x), atol=1e-5, rtol=1e-4)
