"""The training-memory estimate (`memory.py`, `search_memory.py`): what it counts, and that it tracks a real run."""
import contextlib

import pytest
import torch
from torch import nn

from nnunet_scnas import CELL_LAYOUT, SCNASSupernet, SCNASUNet
from nnunet_scnas.memory import measure_peak, trace_forward
from nnunet_scnas.search_memory import _stand_in_loss, cells_of, network_memory, search_memory

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


def test_checkpointed_derived_network_keeps_less_and_recomputes_its_largest_cell():
    genotype = random_genotype(0).to_dict()

    def derived(checkpointed):
        with torch.device("meta"):
            net = SCNASUNet(input_channels=2, num_classes=3, deep_supervision=True, genotype=genotype,
                            stem_width=8, strides=STRIDES, cell_layout=CELL_LAYOUT)
        net.checkpoint_cells = checkpointed
        return net
    plain, checkpointed = (network_memory(derived(c), [2, 2, 32, 32, 32]) for c in (False, True))
    net = derived(False)
    largest_cell = trace_forward(lambda: net(torch.zeros(2, 2, 32, 32, 32, device="meta")),
                                 regions=cells_of(net)).largest_region
    assert checkpointed.activations < plain.activations
    assert checkpointed.backward_working_set - plain.backward_working_set == pytest.approx(largest_cell, rel=0.05)


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


@pytest.mark.parametrize("case", ["derived", "search_weight_step", "search_architecture_step"])
def test_estimate_tracks_the_live_bytes_of_a_real_step(case):
    """The meta-device estimate against a real CPU step (forward, backward, Adam) whose live tensor bytes are
    sampled after every op: within 15 %. (The process's RSS is higher still, by what the CPU allocator caches.)"""
    torch.manual_seed(0)
    batch = [2, 2, 32, 32, 32]
    real, meta = _real_and_meta(case, random_genotype(0).to_dict())
    if case == "derived":
        trained = list(real.parameters())
        estimate = network_memory(meta, batch)
    else:
        architecture = case == "search_architecture_step"
        real.tau, real.arch_grad = 5.0, architecture
        real.generator = torch.Generator().manual_seed(0)
        trained = real.arch_parameters() if architecture else real.weight_parameters()
        estimate = search_memory(meta, batch, [torch.Generator().manual_seed(0)], tau=5.0)
    optimizer = torch.optim.Adam(trained)

    def step():
        x = torch.randn(*batch)
        loss = _stand_in_loss(real(x), x)[0]
        loss.backward(inputs=trained)
        optimizer.step()

    with real.frozen_weights() if case == "search_architecture_step" else contextlib.nullcontext():
        measured = measure_peak(step)
    # the parameters existed before the step; a search estimate is the larger of its two steps (here both
    # measured steps come within 10 % of it)
    expected = estimate.total - estimate.parameters
    assert 0.85 * expected <= measured <= 1.15 * expected, f"measured {measured / MiB:.0f} MiB, estimated " \
                                                           f"{expected / MiB:.0f} MiB"
