"""The training-memory estimate (`memory.py`, `search_memory.py`): what it counts, and that it tracks a real run."""
import contextlib

import pytest
import torch
from torch import nn

from nnunet_scnas import CELL_LAYOUT, SCNASSupernet, SCNASUNet
from nnunet_scnas.macro import MEMORY_MODES
from nnunet_scnas.memory import measure_peak, trace_forward
from nnunet_scnas.search_memory import _stand_in_loss, network_memories, network_memory, regions_of, search_memory

from helpers import random_genotype

STRIDES = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
MiB = 2 ** 20


def _conv_stack(channels=8):
    return nn.Sequential(*(nn.Sequential(nn.Conv3d(channels, channels, 3, padding=1, bias=False),
                                         nn.InstanceNorm3d(channels, affine=True), nn.LeakyReLU(0.01))
                           for _ in range(3)))


def test_trace_counts_what_autograd_keeps_once():
    with torch.device("meta"):
        net = _conv_stack()
    activation = 2 * 8 * 16 ** 3 * 4  # one [2, 8, 16, 16, 16] float32 tensor

    def step():
        x = torch.zeros(2, 8, 16, 16, 16, device="meta")
        y = net(x)
        return y.mean(), y.view(-1)  # a view of a kept tensor costs nothing more

    trace = trace_forward(step, regions=list(net))
    # per block: the conv's input (the batch, or the previous LeakyReLU's output), its output (read by the norm),
    # the norm's output (read by LeakyReLU); the last LeakyReLU's output is the result; plus the loss and the
    # norms' per-instance statistics (a few hundred bytes)
    statistics = trace.alive - (3 * 3 * activation + activation + 4)
    assert 0 < statistics < 1024
    assert trace.largest_tensor == activation
    assert 3 * activation < trace.largest_region < 3 * activation + 1024


def test_autocast_dtypes_halve_what_convs_produce():
    with torch.device("meta"):
        net = nn.Conv3d(8, 8, 3, padding=1, bias=False)

    def step():
        return net(torch.zeros(1, 8, 16, 16, 16, device="meta")).float().mean()

    full, half = trace_forward(step), trace_forward(step, autocast=True)
    # float32: the input, kept for the weight's gradient; float16: the fp16 copies of the input and of the weight
    # that the conv ran on (the float32 batch itself is then freed); the result is the 4-byte loss
    assert full.alive == 8 * 16 ** 3 * 4 + 4
    assert half.alive == 8 * 16 ** 3 * 2 + net.weight.numel() * 2 + 4


def test_parameters_gradients_and_adam_state_are_counted_from_the_model():
    with torch.device("meta"):
        net = _conv_stack()
    estimate = network_memory(net, [1, 8, 8, 8, 8])
    parameter_bytes = sum(p.numel() * 4 for p in net.parameters())
    assert estimate.parameters == estimate.gradients == parameter_bytes
    assert estimate.optimizer_state == 2 * parameter_bytes


def _supernet(checkpointed=False):
    with torch.device("meta"):
        net = SCNASSupernet(2, 3, 8, STRIDES)
    net.checkpoint_cells = checkpointed
    return net


def test_search_savers_and_checkpointing_each_lower_the_search_peak():
    generators = [torch.Generator().manual_seed(0)]
    batch = [2, 2, 32, 32, 32]
    plain = search_memory(_supernet(), batch, generators, tau=5.0, savers=False)
    saved = search_memory(_supernet(), batch, generators, tau=5.0)
    checkpointed = search_memory(_supernet(checkpointed=True), batch, generators, tau=5.0)
    assert checkpointed.activations < saved.activations < plain.activations
    assert checkpointed.backward_working_set > saved.backward_working_set  # a cell's recomputation comes back
    assert checkpointed.total < saved.total < plain.total
    # both optimizers' states are resident in every step
    assert saved.optimizer_state == 2 * saved.parameters


def test_each_memory_mode_keeps_less_and_recomputes_at_most_one_region_at_a_time():
    genotype = random_genotype(0).to_dict()
    with torch.device("meta"):
        net = SCNASUNet(input_channels=2, num_classes=3, deep_supervision=True, genotype=genotype,
                        stem_width=8, strides=STRIDES, cell_layout=CELL_LAYOUT)
    batch = [2, 2, 32, 32, 32]
    estimates = network_memories(net, batch)
    plain, lean, cells = (estimates[mode] for mode in ("plain", "lean", "cells"))
    assert cells.activations < lean.activations < plain.activations
    assert cells.total < lean.total < plain.total
    assert plain.backward_working_set == 2 * trace_forward(
        lambda: net(torch.zeros(*batch, device="meta"))).largest_tensor
    # a recomputation brings back at most the largest region's plain saved bytes above the forward's end
    for mode, estimate in (("lean", lean), ("cells", cells)):
        largest_region = trace_forward(lambda: net(torch.zeros(*batch, device="meta")),
                                       regions=regions_of(net, mode)).largest_region
        assert 0 < estimate.backward_working_set - plain.backward_working_set <= largest_region


def _real_and_meta(case, genotype):
    """The same network twice: real (CPU, float32) and on meta."""
    def build():
        if case == "derived":
            return SCNASUNet(input_channels=2, num_classes=3, deep_supervision=True, genotype=genotype,
                             stem_width=16, strides=STRIDES, cell_layout=CELL_LAYOUT)
        return SCNASSupernet(2, 3, 8, STRIDES)
    real = build()
    with torch.device("meta"):
        return real, build()


REAL_STEP_CASES = [("derived", "plain"), ("derived", "lean"), ("derived", "cells"),
                   ("search_weight_step", "plain"), ("search_weight_step", "lean"),
                   ("search_architecture_step", "plain"), ("search_architecture_step", "lean")]


@pytest.mark.parametrize("case, mode", REAL_STEP_CASES)
def test_estimate_tracks_the_live_bytes_of_a_real_step(case, mode):
    """The meta-device estimate against a real CPU step (forward, backward, Adam) in a memory mode, its live tensor
    bytes sampled after every op: within 15 %. The step measured is the second, as in training: the parameters and
    the optimizer state exist before it, so both sides leave them out. (The process's RSS is higher still, by
    what the CPU allocator caches.)"""
    torch.manual_seed(0)
    batch = [2, 2, 32, 32, 32]
    real, meta = _real_and_meta(case, random_genotype(0).to_dict())
    real.memory_mode = meta.memory_mode = mode
    if case == "derived":
        trained = list(real.parameters())
        estimate = network_memory(meta, batch)
    else:
        architecture = case == "search_architecture_step"
        real.tau, real.arch_grad = 5.0, architecture
        real.generator = torch.Generator().manual_seed(0)
        trained = real.arch_parameters() if architecture else real.weight_parameters()
        estimate = search_memory(meta, batch, [torch.Generator().manual_seed(0)], tau=5.0,
                                 steps=("architecture" if architecture else "weights",))
    optimizer = torch.optim.Adam(trained)

    def step():
        optimizer.zero_grad(set_to_none=True)
        x = torch.randn(*batch)
        loss = _stand_in_loss(real(x), x)[0]
        loss.backward(inputs=trained)
        optimizer.step()

    with real.frozen_weights() if case == "search_architecture_step" else contextlib.nullcontext():
        step()
        measured = measure_peak(step)
    expected = estimate.total - estimate.parameters - estimate.optimizer_state
    assert 0.85 * expected <= measured <= 1.15 * expected, f"measured {measured / MiB:.0f} MiB, estimated " \
                                                           f"{expected / MiB:.0f} MiB"
