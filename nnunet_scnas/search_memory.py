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
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext

import torch
from torch import nn

from .memory import ForwardTrace, MemoryEstimate, trace_forward, training_memory


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


def _traces(network: nn.Module, batch_shape, autocast: bool, checkpointed: Sequence[bool],
            before_each: Callable[[], None] = lambda: None) -> dict[bool, tuple[ForwardTrace, int]]:
    """{checkpointed cells?: (trace, bytes the backward recomputes)} for each setting in `checkpointed`.

    The plain trace is always made: its largest cell is what checkpointing brings back in the backward, so
    the two settings cost two traces, not three. `before_each` runs before every trace (e.g. to replay a sample).
    """
    previous = getattr(network, "checkpoint_cells", None)
    try:
        if previous is not None:
            network.checkpoint_cells = False
        before_each()
        plain = _trace(network, batch_shape, autocast)
        traces = {False: (plain, 0)}
        if True in checkpointed:
            network.checkpoint_cells = True
            before_each()
            traces[True] = (_trace(network, batch_shape, autocast), plain.largest_region)
    finally:
        if previous is not None:
            network.checkpoint_cells = previous
    return {flag: traces[flag] for flag in checkpointed}


def network_memories(network: nn.Module, batch_shape: Sequence[int], autocast: bool = False,
                     checkpointed: Sequence[bool] = (False, True)) -> dict[bool, MemoryEstimate]:
    """{checkpointed cells?: the estimate} of a training step of `network` (built on meta) with every parameter
    trained by Adam; `batch_shape` is `[N, C, X, Y, Z]`. Checkpointing needs an SCNAS network."""
    parameters = list(network.parameters())
    return {flag: training_memory(trace, parameters, parameters, recomputed=recomputed)
            for flag, (trace, recomputed) in _traces(network, batch_shape, autocast, checkpointed).items()}


def network_memory(network: nn.Module, batch_shape: Sequence[int], autocast: bool = False) -> MemoryEstimate:
    """`network_memories` for the network's own `checkpoint_cells` (False for networks without one)."""
    flag = getattr(network, "checkpoint_cells", False)
    return network_memories(network, batch_shape, autocast, (flag,))[flag]


def _cpu_logits(supernet: nn.Module) -> None:
    # the sampler draws on the CPU from real logits; near-uniform ones (as at the start of a search) make the
    # sample a function of the generator alone
    for cell_type, alpha in list(supernet.alphas.items()):
        if alpha.device.type == "meta":
            supernet.alphas[cell_type] = nn.Parameter(torch.zeros(alpha.shape))


def _fixed_sample(supernet: nn.Module, masks: Mapping[str, torch.Tensor]) -> Callable[[], dict]:
    """`architecture_weights` for a given sample: per cell type, the ops of a bool mask `[14, 8]`, weighted as the
    sampler weights a pair (a softmax of their logits, with the graph to the logits when `arch_grad`)."""
    def weights():
        return {cell_type: torch.softmax((alpha if supernet.arch_grad else alpha.detach()).masked_fill(
            ~masks[cell_type], -math.inf), dim=-1) for cell_type, alpha in supernet.alphas.items()}
    return weights


def search_memories(supernet: nn.Module, batch_shape: Sequence[int],
                    generators: Sequence[torch.Generator | Mapping[str, torch.Tensor]], tau: float, autocast: bool = False, savers: bool = True,
                    checkpointed: Sequence[bool] = (False, True)) -> dict[bool, MemoryEstimate]:
    """{checkpointed cells?: the peak of a search iteration}: the larger of its two steps, over the two-op samples
    of `generators`.

    Args:
        supernet: an `SCNASSupernet` built on meta (its logits are replaced by CPU zeros, see `_cpu_logits`).
        batch_shape: `[N, C, X, Y, Z]` per GPU.
        generators: one per sample to trace (e.g. the first iterations' weight- and architecture-step
            generators); the two-op sample changes the memory by a few percent. A mapping instead of a
            generator is a given sample: cell type -> bool `[14, 8]`, the ops each edge runs (e.g. the worst case).
        tau: the temperature (the first epoch's is the one at which samples are most spread).
        savers: False traces the straightforward formulation (see the module docstring).
        checkpointed: the settings of `checkpoint_cells` to estimate.
    """
    _cpu_logits(supernet)
    weights, logits = supernet.weight_parameters(), supernet.arch_parameters()
    parameters = weights + logits
    for cell in cells_of(supernet):
        cell.share_activation = savers
    supernet.mode, supernet.tau = "two_op", tau
    estimates = {flag: [] for flag in checkpointed}
    try:
        for generator in generators:
            given = not isinstance(generator, torch.Generator)
            if given:  # an instance attribute: the class's sampler is back after the `finally`
                supernet.architecture_weights = _fixed_sample(supernet, generator)
            else:
                state = generator.get_state()
                supernet.generator = generator
            for step in ("weights", "architecture"):
                supernet.arch_grad = step == "architecture" or not savers
                trained = parameters if not savers else weights if step == "weights" else logits
                with supernet.frozen_weights() if savers and step == "architecture" else nullcontext():
                    traces = _traces(supernet, batch_shape, autocast, checkpointed,
                                     before_each=lambda: given or generator.set_state(state))  # the same sample
                for flag, (trace, recomputed) in traces.items():
                    estimates[flag].append(training_memory(trace, parameters, trained, optimized=parameters,
                                                           recomputed=recomputed))
    finally:
        supernet.arch_grad = True
        supernet.__dict__.pop("architecture_weights", None)
        for cell in cells_of(supernet):
            cell.share_activation = True
    return {flag: max(found, key=lambda e: e.total) for flag, found in estimates.items()}


def search_memory(supernet: nn.Module, batch_shape: Sequence[int], generators: Sequence[torch.Generator],
                  tau: float, autocast: bool = False, savers: bool = True) -> MemoryEstimate:
    """`search_memories` for the supernet's own `checkpoint_cells`."""
    flag = getattr(supernet, "checkpoint_cells", False)
    return search_memories(supernet, batch_shape, generators, tau, autocast, savers, (flag,))[flag]
