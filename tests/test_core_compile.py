"""The derived network under `torch.compile`: one graph without breaks (what nnU-Net's default compile on CUDA
needs), and training compiled by inductor on the CPU computes what eager computes."""
import copy

import pytest
import torch
from torch import nn

from helpers import random_genotype
from nnunet_scnas import CELL_LAYOUT, EDGES, SCNASUNet
from nnunet_scnas.memory import compiled_forward_keeps

STRIDES = [[1, 1, 1], [2, 2, 2], [1, 2, 2], [2, 2, 2]]  # anisotropic, as nnU-Net plans often are


def network(genotype: dict, stem_width: int = 4) -> SCNASUNet:
    return SCNASUNet(input_channels=2, num_classes=3, deep_supervision=True, genotype=genotype, stem_width=stem_width,
                     strides=STRIDES, cell_layout=CELL_LAYOUT)


def sparse_genotype() -> dict:
    """One op per node, every op kind in the strided and unstrided forms the cells build: few kernels to compile."""
    chosen = {
        "encoder_normal": {"2<-1": "conv_3x3x3", "3<-0": "identity", "4<-2": "avg_pool_3x3x3",
                           "5<-3": "dil_sep_conv_3x3x3_r2"},
        "reduction": {"2<-0": "max_pool_3x3x3", "3<-1": "identity", "4<-1": "dil_sep_conv_3x3x3_r3",
                      "5<-0": "avg_pool_3x3x3"},
        "decoder_normal": {"2<-1": "dil_sep_conv_3x3x3_r4", "3<-0": "conv_3x3x3", "4<-3": "max_pool_3x3x3",
                           "5<-2": "identity"},
        "expansion": {"2<-0": "avg_pool_3x3x3", "3<-1": "conv_3x3x3", "4<-2": "identity", "5<-3": "max_pool_3x3x3"},
    }
    return {"schema_version": 1, "search_space": "scnas-3d-4node-8op-v1",
            "cells": {cell: {edge: ops.get(edge, "zero") for edge in EDGES} for cell, ops in chosen.items()}}


def deep_supervision_loss(outputs, target):
    return sum(0.5 ** i * nn.functional.cross_entropy(o, target[:, ::s[0], ::s[1], ::s[2]])
               for i, (o, s) in enumerate(zip(outputs, ((1, 1, 1), (2, 2, 2), (2, 4, 4)))))


def test_a_searched_network_is_one_graph_without_breaks():
    # what torch.compile captures does not depend on the device: no break here, none on CUDA
    model = network(random_genotype(3).to_dict()).train()
    explanation = torch._dynamo.explain(model)(torch.randn(2, 2, 8, 16, 16))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons


@pytest.mark.slow
def test_training_compiled_on_the_cpu_equals_eager(one_torch_thread):
    torch.manual_seed(0)
    eager = network(sparse_genotype()).to(memory_format=torch.channels_last_3d)  # the CPU's training layout
    compiled_network = copy.deepcopy(eager)
    compiled = torch.compile(compiled_network, fullgraph=True)
    x = torch.randn(2, 2, 16, 32, 32).contiguous(memory_format=torch.channels_last_3d)
    target = torch.randint(0, 3, (2, 16, 32, 32))
    optimizer = torch.optim.SGD(eager.parameters(), lr=0.1)
    for _ in range(2):  # the second step runs the compiled graph again, on updated weights
        outputs = []
        for model in (eager, compiled):
            model.zero_grad()
            outputs.append(model(x))
            deep_supervision_loss(outputs[-1], target).backward()
        for a, b in zip(*outputs):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
        # float32 sums in another order: the whole gradient within 0.1 % (single parameters are not compared: on a
        # network this small eager float32 itself is up to 0.3 % off float64 for some, as norms over the few voxels
        # of the bottleneck amplify rounding)
        eager_gradient, compiled_gradient = (torch.cat([p.grad.flatten() for p in m.parameters()])
                                             for m in (eager, compiled_network))
        assert torch.linalg.norm(compiled_gradient - eager_gradient) <= 1e-3 * torch.linalg.norm(eager_gradient)
        optimizer.step()
        compiled_network.load_state_dict(eager.state_dict())  # the same weights for the next step


def test_the_lean_mode_is_one_graph_without_breaks():
    model = network(random_genotype(3).to_dict()).train()
    model.memory_mode = "lean"
    explanation = torch._dynamo.explain(model)(torch.randn(2, 2, 8, 16, 16))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons


@pytest.mark.slow
def test_compiled_lean_mode_keeps_its_saving_and_computes_what_eager_computes(one_torch_thread):
    """Selective checkpointing under torch.compile: the partitioner honours the policy (the compiled lean forward
    keeps less than half of the compiled plain one), and the compiled lean step equals the eager one."""
    torch.manual_seed(0)
    x = torch.randn(2, 2, 16, 32, 32)
    target = torch.randint(0, 3, (2, 16, 32, 32))
    eager = network(sparse_genotype(), stem_width=8)
    kept, gradients = {}, {}
    for mode in ("plain", "lean"):
        model = copy.deepcopy(eager)
        model.memory_mode = mode
        outputs, kept[mode] = compiled_forward_keeps(model, x)
        deep_supervision_loss(outputs, target).backward()  # through the compiled backward graph
        gradients[mode] = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert kept["lean"] < 0.5 * kept["plain"]
    reference = deep_supervision_loss(eager(x), target)
    reference.backward()
    eager_gradient = torch.cat([p.grad.flatten() for p in eager.parameters()])
    for mode in ("plain", "lean"):
        assert torch.linalg.norm(gradients[mode] - eager_gradient) <= 1e-4 * torch.linalg.norm(eager_gradient)
