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

Every estimate is for a memory mode of the network (`macro.py`): "plain", "lean" (cheap ops recomputed) or
"cells" (whole cells recomputed); the two that recompute add what one recomputation brings back (`memory.py`).
"""
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext

import torch
from torch import nn

from .cell import Cell, EdgeWeights
from .macro import MEMORY_MODES
from .memory import ForwardTrace, MemoryEstimate, recomputation, trace_forward, training_memory


def _stand_in_loss(outputs, batch: torch.Tensor):
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    targets = [torch.zeros(o.shape[0], 1, *o.shape[2:], device=o.device) for o in outputs]
    loss = sum(nn.functional.log_softmax(o, 1).mean() + nn.functional.softmax(o, 1).mean() for o in outputs)
    return loss, batch, targets  # all kept alive until the trace has counted them


def cells_of(network: nn.Module) -> list[nn.Module]:
    """The 12 cells of an SCNAS network (unread ones included); none for other networks."""
    encoder, decoder = getattr(network, "encoder", None), getattr(network, "decoder", None)
    return [*getattr(encoder, "cells", ()), *getattr(decoder, "cells", ())]


def regions_of(network: nn.Module, mode: str) -> list[nn.Module]:
    """The modules whose forwards memory mode `mode` recomputes in the backward pass, one region each
    (`macro.py`): the stem and heads, and the whole cells ("cells") or each cell's preprocessings and ops ("lean")."""
    if mode == "plain":
        return []
    cells = [cell for cell in cells_of(network) if isinstance(cell, Cell)]
    blocks = [network.encoder.stem, *network.decoder.heads]
    if mode == "cells":
        return blocks + cells
    return blocks + [module for cell in cells for module in (
        *cell.preprocess.values(), *(op for ops in cell.edges.values() for op in ops.values()))]


def _trace(network: nn.Module, batch_shape: Sequence[int], autocast: bool, regions: Sequence[nn.Module]):
    device = next(network.parameters()).device

    def step():
        batch = torch.zeros(*batch_shape, device=device)
        return _stand_in_loss(network(batch), batch)
    return trace_forward(step, regions=regions, autocast=autocast)


def _traces(network: nn.Module, batch_shape, autocast: bool, modes: Sequence[str],
            before_each: Callable[[], None] = lambda: None) -> dict[str, tuple[ForwardTrace, int]]:
    """{memory mode: (trace, bytes the backward's recomputation adds)} for each of `modes`.

    A mode that recomputes costs two traces: its own, and the plain one with the same regions (what each
    recomputation brings back). `before_each` runs before every trace (e.g. to replay a sample).
    """
    previous = getattr(network, "memory_mode", None)
    if previous is None and set(modes) != {"plain"}:
        raise ValueError(f"memory modes other than plain need an SCNAS network, got {type(network).__name__}")
    traces = {}
    try:
        for mode in modes:
            regions = regions_of(network, mode)
            if previous is not None:
                network.memory_mode = mode
            before_each()
            trace = _trace(network, batch_shape, autocast, regions)
            if mode == "plain":
                traces[mode] = (trace, 0)
                continue
            network.memory_mode = "plain"
            before_each()
            traces[mode] = (trace, recomputation(trace, _trace(network, batch_shape, autocast, regions)))
    finally:
        if previous is not None:
            network.memory_mode = previous
    return traces


def network_memories(network: nn.Module, batch_shape: Sequence[int], autocast: bool = False,
                     modes: Sequence[str] = MEMORY_MODES) -> dict[str, MemoryEstimate]:
    """{memory mode: the estimate} of a training step of `network` (built on meta) with every parameter trained by
    Adam; `batch_shape` is `[N, C, X, Y, Z]`. Modes other than "plain" need an SCNAS network."""
    parameters = list(network.parameters())
    return {mode: training_memory(trace, parameters, parameters, recomputed=recomputed)
            for mode, (trace, recomputed) in _traces(network, batch_shape, autocast, modes).items()}


def network_memory(network: nn.Module, batch_shape: Sequence[int], autocast: bool = False) -> MemoryEstimate:
    """`network_memories` for the network's own `memory_mode` ("plain" for networks without one)."""
    mode = getattr(network, "memory_mode", "plain")
    return network_memories(network, batch_shape, autocast, (mode,))[mode]


def _cpu_logits(supernet: nn.Module) -> None:
    # the sampler draws on the CPU from real logits; near-uniform ones (as at the start of a search) make the
    # sample a function of the generator alone
    for cell_type, alpha in list(supernet.alphas.items()):
        if alpha.device.type == "meta":
            supernet.alphas[cell_type] = nn.Parameter(torch.zeros(alpha.shape))


def fixed_sample(supernet: nn.Module, masks: Mapping[str, torch.Tensor]) -> Callable[[], dict]:
    """`architecture_weights` for a given sample: per cell type, the ops of a bool mask `[14, 8]`, weighted as the
    sampler weights a pair (a softmax of their logits, with the graph to the logits when `arch_grad`)."""
    def weights():
        return {cell_type: EdgeWeights(torch.softmax((alpha if supernet.arch_grad else alpha.detach()).masked_fill(
            ~masks[cell_type], -math.inf), dim=-1), tuple(map(tuple, masks[cell_type].tolist())))
            for cell_type, alpha in supernet.alphas.items()}
    return weights


def search_memories(supernet: nn.Module, batch_shape: Sequence[int],
                    generators: Sequence[torch.Generator | Mapping[str, torch.Tensor]], tau: float,
                    autocast: bool = False, savers: bool = True, modes: Sequence[str] = MEMORY_MODES,
                    steps: Sequence[str] = ("weights", "architecture")) -> dict[str, MemoryEstimate]:
    """{memory mode: the peak of a search iteration}: the larger of its two steps, over the two-op samples of
    `generators`.

    Args:
        supernet: an `SCNASSupernet` built on meta (its logits are replaced by CPU zeros, see `_cpu_logits`).
        batch_shape: `[N, C, X, Y, Z]` per GPU.
        generators: one per sample to trace (e.g. the first iterations' weight- and architecture-step
            generators); the two-op sample changes the memory by a few percent. A mapping instead of a
            generator is a given sample: cell type -> bool `[14, 8]`, the ops each edge runs (e.g. the worst case).
        tau: the temperature (the first epoch's is the one at which samples are most spread).
        savers: False traces the straightforward formulation (see the module docstring).
        modes: the memory modes to estimate (`macro.MEMORY_MODES`).
        steps: the steps of an iteration to estimate ("weights", "architecture"): the peak is the largest.
    """
    _cpu_logits(supernet)
    weights, logits = supernet.weight_parameters(), supernet.arch_parameters()
    parameters = weights + logits
    for cell in cells_of(supernet):
        cell.share_activation = savers
    supernet.mode, supernet.tau = "two_op", tau
    estimates = {mode: [] for mode in modes}
    try:
        for generator in generators:
            given = not isinstance(generator, torch.Generator)
            if given:  # an instance attribute: the class's sampler is back after the `finally`
                supernet.architecture_weights = fixed_sample(supernet, generator)
            else:
                state = generator.get_state()
                supernet.generator = generator
            for step in steps:
                supernet.arch_grad = step == "architecture" or not savers
                trained = parameters if not savers else weights if step == "weights" else logits
                with supernet.frozen_weights() if savers and step == "architecture" else nullcontext():
                    traces = _traces(supernet, batch_shape, autocast, modes,
                                     before_each=lambda: given or generator.set_state(state))  # the same sample
                for mode, (trace, recomputed) in traces.items():
                    estimates[mode].append(training_memory(trace, parameters, trained, optimized=parameters,
                                                           recomputed=recomputed))
    finally:
        supernet.arch_grad = True
        supernet.__dict__.pop("architecture_weights", None)
        for cell in cells_of(supernet):
            cell.share_activation = True
    return {mode: max(found, key=lambda e: e.total) for mode, found in estimates.items()}


def search_memory(supernet: nn.Module, batch_shape: Sequence[int], generators: Sequence[torch.Generator],
                  tau: float, autocast: bool = False, savers: bool = True,
                  steps: Sequence[str] = ("weights", "architecture")) -> MemoryEstimate:
    """`search_memories` for the supernet's own `memory_mode`."""
    mode = supernet.memory_mode
    return search_memories(supernet, batch_shape, generators, tau, autocast, savers, (mode,), steps)[mode]
