"""Peak training memory of a search step, of the derived network and of any other network, at a patch size.

Built on the "meta" device and traced by `memory.py`: seconds at 128^3 on a CPU, for a GPU of any size. The
loss is a stand-in for nnU-Net's Dice + cross-entropy with deep supervision: per output, a float32 softmax and
log-softmax (what those losses keep for their backward) and nnU-Net's float32 target at that scale.

A search iteration is two steps, and its peak is the larger one:
- weight step: the sampled edge weights enter as constants (`SCNASSupernet.arch_grad = False`), the ops'
  weights get gradients;
- architecture step: the ops' weights are frozen for the forward (nothing is kept to compute their
  gradients), the logits get gradients.
Both optimizers' Adam states are resident throughout. `savers=False` traces the straightforward formulation
instead (one LeakyReLU per op, edge weights with their graph and every parameter trained in both steps),
which is what the search did before these savers.
"""
from collections.abc import Sequence
from contextlib import nullcontext

import torch
from torch import nn

from .memory import MemoryEstimate, trace_forward, training_memory


def _stand_in_loss(outputs, batch: torch.Tensor):
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    targets = [torch.zeros(o.shape[0], 1, *o.shape[2:], device=o.device) for o in outputs]
    loss = sum(nn.functional.log_softmax(o, 1).mean() + nn.functional.softmax(o, 1).mean() for o in outputs)
    return loss, batch, targets  # all kept alive until the trace has counted them


def cells_of(network: nn.Module) -> list[nn.Module]:
    """The checkpointable regions of an SCNAS network (its 12 cells); none for other networks."""
    encoder, decoder = getattr(network, "encoder", None), getattr(network, "decoder", None)
    return [*getattr(encoder, "cells", ()), *getattr(decoder, "cells", ())]


def _trace(network: nn.Module, batch_shape: Sequence[int], autocast: bool):
    device = next(network.parameters()).device

    def step():
        batch = torch.zeros(*batch_shape, device=device)
        return _stand_in_loss(network(batch), batch)
    return trace_forward(step, regions=cells_of(network), autocast=autocast)


def _recomputed(network: nn.Module, batch_shape, autocast: bool) -> int:
    """What checkpointing the cells brings back in the backward: the largest cell's share of a plain trace."""
    if not getattr(network, "checkpoint_cells", False):
        return 0
    network.checkpoint_cells = False
    try:
        return _trace(network, batch_shape, autocast).largest_region
    finally:
        network.checkpoint_cells = True


def network_memory(network: nn.Module, batch_shape: Sequence[int], autocast: bool = False) -> MemoryEstimate:
    """A training step of `network` (built on meta) with every parameter trained by Adam; `batch_shape` is
    `[N, C, X, Y, Z]`. Honours the network's `checkpoint_cells` when it has one."""
    trace = _trace(network, batch_shape, autocast)
    parameters = list(network.parameters())
    return training_memory(trace, parameters, parameters, recomputed=_recomputed(network, batch_shape, autocast))


def _cpu_logits(supernet: nn.Module) -> None:
    # the sampler draws on the CPU from real logits; near-uniform ones (as at the start of a search) make the
    # sample a function of the generator alone
    for cell_type, alpha in list(supernet.alphas.items()):
        if alpha.device.type == "meta":
            supernet.alphas[cell_type] = nn.Parameter(torch.zeros(alpha.shape))


def search_memory(supernet: nn.Module, batch_shape: Sequence[int], generators: Sequence[torch.Generator],
                  tau: float, autocast: bool = False, savers: bool = True) -> MemoryEstimate:
    """The peak of a search iteration: the larger of its two steps, over the two-op samples of `generators`.

    Args:
        supernet: an `SCNASSupernet` built on meta (its logits are replaced by CPU zeros, see `_cpu_logits`);
            its `checkpoint_cells` is honoured.
        batch_shape: `[N, C, X, Y, Z]` per GPU.
        generators: one per sample to trace (e.g. the first iterations' weight- and architecture-step
            generators); the two-op sample changes the memory by a few percent.
        tau: the temperature (the first epoch's is the one at which samples are most spread).
        savers: False traces the straightforward formulation (see the module docstring).
    """
    _cpu_logits(supernet)
    weights, logits = supernet.weight_parameters(), supernet.arch_parameters()
    parameters = weights + logits
    for cell in cells_of(supernet):
        cell.share_activation = savers
    supernet.mode, supernet.tau = "two_op", tau
    recomputed = 0
    estimates = []
    try:
        for generator in generators:
            state = generator.get_state()
            for step in ("weights", "architecture"):
                generator.set_state(state)
                supernet.generator = generator
                supernet.arch_grad = step == "architecture" or not savers
                trained = parameters if not savers else weights if step == "weights" else logits
                with supernet.frozen_weights() if savers and step == "architecture" else nullcontext():
                    trace = _trace(supernet, batch_shape, autocast)
                    if getattr(supernet, "checkpoint_cells", False):
                        generator.set_state(state)
                        recomputed = _recomputed(supernet, batch_shape, autocast)
                estimates.append(training_memory(trace, parameters, trained, optimized=parameters,
                                                 recomputed=recomputed))
    finally:
        supernet.arch_grad = True
        for cell in cells_of(supernet):
            cell.share_activation = True
    return max(estimates, key=lambda e: e.total)
