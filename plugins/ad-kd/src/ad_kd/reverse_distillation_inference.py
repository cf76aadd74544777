"""Reverse Distillation's trainable networks (OCBE and decoder) in the form its predict path runs them.

At predict time the bottleneck and decoder are frozen, so each BatchNorm is a fixed per-channel affine map
that folds into the (transposed) convolution before it: w' = w·γ/σ, b' = (b − μ)·γ/σ + β. The folded network
computes the same function up to float rounding without a pass over every activation per BatchNorm, and it
runs in channels-last layout, which oneDNN's convolutions prefer. Training keeps the unfolded modules.
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

FOLDABLE = (nn.Conv2d, nn.ConvTranspose2d)


def fold_batchnorm(module: nn.Module) -> fx.GraphModule:
    """`module` traced into a graph whose BatchNorm2d layers that directly follow a convolution (its only
    user) are folded into that convolution; the original module and its weights are left untouched."""
    graph_module = fx.symbolic_trace(module)
    modules = dict(graph_module.named_modules())
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if not (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1
                and isinstance(modules[source.target], FOLDABLE)):
            continue
        conv, norm = modules[source.target], modules[node.target]
        folded = fuse_conv_bn_eval(conv, norm, transpose=isinstance(conv, nn.ConvTranspose2d))
        parent, _, name = source.target.rpartition(".")
        setattr(graph_module.get_submodule(parent) if parent else graph_module, name, folded)
        modules[source.target] = folded
        node.replace_all_uses_with(source)
        graph_module.graph.erase_node(node)
    graph_module.graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return graph_module


class FoldedReconstruction(nn.Module):
    """Bottleneck then decoder, BatchNorm folded, in channels-last layout: encoder features to reconstructions."""

    def __init__(self, bottleneck: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.bottleneck = fold_batchnorm(bottleneck)
        self.decoder = fold_batchnorm(decoder)
        self.requires_grad_(False)  # a fixed copy for scoring (an exported graph takes its weights as constants)

    def forward(self, encoded: list[torch.Tensor]) -> list[torch.Tensor]:
        embedding = self.bottleneck([f.contiguous(memory_format=torch.channels_last) for f in encoded])
        return self.decoder(embedding)
