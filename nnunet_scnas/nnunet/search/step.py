"""One search iteration (paper Algorithm 1): a weight step, then an architecture step, each on a fresh two-op sample.

The trainer runs it on nnU-Net's batches; the multi-process test runs the very same code under DDP.

Each step trains one kind of parameter and keeps nothing for the other's gradients:
- weight step: the sampled edge weights enter as constants (`SCNASSupernet.arch_grad = False`): the ops' weights
  get their gradients, the logits none, and no graph to the logits is kept;
- architecture step: the ops' weights are frozen (`requires_grad_(False)`) for its forward and backward, so autograd
  keeps nothing to compute their gradients, and only the logits' gradients are computed (`torch.autograd.grad`).
Both give the gradients of the straightforward formulation (every parameter in both graphs), to rounding; the
flags are restored after each step, also when it raises.

Multi-GPU: every rank must train the same sub-network in a step, or DDP would average the gradients of
different architectures. So a step's sample is a pure function of (search seed, iteration, step), not of how
many samples a rank drew before: a forward on one rank only (a plot, a validation) cannot desynchronise the
ranks, and `--c` resumes with the same samples without saving any generator. The weight step is a plain DDP step
(`find_unused_parameters=True`, see `allow_unused_parameters`). The architecture step bypasses DDP's reducer:
its forward runs in `no_sync()` (DDP then neither searches the graph nor expects any gradient), and
`torch.autograd.grad` runs no gradient accumulator, so none of the reducer's hooks fire. (`backward(inputs=...)`
would run them, and even in `no_sync` they mark the logits as used: the next weight step's reducer then fails on
the logits' missing gradients, "Encountered gradient which is undefined, but still allreduced".) We average the
logits' gradients ourselves, in one all-reduce of 4 x 14 x 8 numbers instead of the whole supernet's buckets.
The reducer is left as the weight step's backward finished it, so the next weight step starts clean.

Mixed precision: each step has its own GradScaler (nnU-Net's for the weight step, `SearchOptimizer`'s
architecture scaler for the other), so an overflow in one step never lowers the other's scale.
"""
from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunet_scnas.nnunet.search.state import SearchOptimizer, seed_from
from nnunet_scnas.supernet import SCNASSupernet

WEIGHT_STEP, ARCHITECTURE_STEP = 0, 1


def sample_generator(search_seed: int, iteration: int, step: int) -> torch.Generator:
    """The generator the supernet samples from in one step (`WEIGHT_STEP` or `ARCHITECTURE_STEP`)."""
    return torch.Generator().manual_seed(seed_from(search_seed, iteration, step))


def unwrap(network: torch.nn.Module) -> SCNASSupernet:
    return network.module if isinstance(network, DDP) else network


def allow_unused_parameters(network: DDP) -> DDP:
    """nnU-Net's DDP wrapper, rebuilt with `find_unused_parameters=True`.

    A two-op step runs 2 of the 8 ops per edge (sometimes not all of a cell's inputs), so most supernet
    parameters get no gradient; plain DDP fails on that in the next step. Cost, in the weight step's backward:
    DDP walks the autograd graph to find them, one extra small all-reduce (the used-parameter bitmap), and the
    gradient all-reduce still carries the whole supernet's buckets (the architecture step bypasses DDP, see the
    module docstring). Parameters no rank used keep `grad=None`, so Adam skips them exactly as in one process.
    """
    network._remove_autograd_hooks()  # the replaced wrapper must not take part in later backward passes
    return DDP(network.module, device_ids=network.device_ids, find_unused_parameters=True)


def search_iteration(network: torch.nn.Module, loss, optimizer: SearchOptimizer, weight_batch: dict,
                     architecture_batch: dict | None, search_seed: int, iteration: int, grad_clip: float,
                     grad_scaler=None, architecture_penalty: Callable[[], torch.Tensor] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Weight step on `weight_batch`, then architecture step on `architecture_batch`; returns both losses.

    Args:
        network: the supernet in "two_op" mode, or its DDP wrapper (`allow_unused_parameters`).
        loss: nnU-Net's loss, `loss(output, target)` (deep supervision included).
        optimizer: both optimizers; each step zeroes both, so neither step sees the other's gradients. It also
            owns the architecture step's GradScaler (`SearchOptimizer.architecture_scaler_for`).
        weight_batch, architecture_batch: nnU-Net batches, `{'data': [N, C, X, Y, Z], 'target': tensor or list}`;
            `architecture_batch` None skips the architecture step (a weights-only warm-up): its loss is then NaN.
        search_seed, iteration: with the step, they fix the two-op sample (see the module docstring).
        grad_clip: gradient norm clipping of the stepped parameters (nnU-Net's 12).
        grad_scaler: nnU-Net's GradScaler (the weight step's), or None: then neither step scales.
        architecture_penalty: a term the architecture step adds to its loss (a function of the logits alone, e.g. the
            cost term, `search/cost.py`); None (the default) runs the architecture step exactly as without one.
    """
    supernet = unwrap(network)
    architecture_scaler = None if grad_scaler is None else \
        optimizer.architecture_scaler_for(next(supernet.parameters()).device.type)
    with _edge_weights_as_constants(supernet):
        weight_loss = _step(network, loss, optimizer, weight_batch, optimizer.weights,
                            sample_generator(search_seed, iteration, WEIGHT_STEP), grad_clip, grad_scaler,
                            _backward)
    if architecture_batch is None:
        return weight_loss, np.array(np.nan)
    with supernet.frozen_weights(), network.no_sync() if isinstance(network, DDP) else nullcontext():
        architecture_loss = _step(network, loss, optimizer, architecture_batch, optimizer.architecture,
                                  sample_generator(search_seed, iteration, ARCHITECTURE_STEP), grad_clip,
                                  architecture_scaler, _logit_gradients, architecture_penalty)
    return weight_loss, architecture_loss


@contextmanager
def _edge_weights_as_constants(supernet: SCNASSupernet):
    previous, supernet.arch_grad = supernet.arch_grad, False
    try:
        yield
    finally:
        supernet.arch_grad = previous


def _backward(_network, value: torch.Tensor, _parameters) -> None:
    value.backward()  # under DDP, its reducer averages the used weights' gradients during this backward


def _logit_gradients(network: torch.nn.Module, value: torch.Tensor, logits: list[torch.nn.Parameter]) -> None:
    # autograd.grad instead of backward: no gradient accumulator runs, so no DDP hook fires (module docstring)
    gradients = torch.autograd.grad(value, logits, allow_unused=True)
    if isinstance(network, DDP):
        gradients = _averaged(gradients, network.process_group)
    for p, gradient in zip(logits, gradients):
        p.grad = gradient


def _averaged(gradients: Sequence[torch.Tensor | None], group) -> list[torch.Tensor | None]:
    """The mean over the ranks of each gradient, in one all-reduce. Which ones are None depends on the sample
    alone, so it is the same on every rank and so are the sizes reduced."""
    present = [g for g in gradients if g is not None]
    if not present:
        return list(gradients)
    flat = torch.cat([g.reshape(-1) for g in present])
    dist.all_reduce(flat, group=group)
    flat /= dist.get_world_size(group)
    averaged = iter(flat.split([g.numel() for g in present]))
    return [None if g is None else next(averaged).view_as(g) for g in gradients]


def _step(network, loss, optimizer: SearchOptimizer, batch: dict, step_optimizer: torch.optim.Optimizer,
          generator: torch.Generator, grad_clip: float, scaler,
          set_gradients: Callable[[torch.nn.Module, torch.Tensor, list[torch.nn.Parameter]], None],
          penalty: Callable[[], torch.Tensor] | None = None) -> np.ndarray:
    device = next(network.parameters()).device
    data = batch['data'].to(device, non_blocking=True)
    target = batch['target']
    target = [t.to(device, non_blocking=True) for t in target] if isinstance(target, list) \
        else target.to(device, non_blocking=True)
    unwrap(network).generator = generator
    optimizer.zero_grad(set_to_none=True)
    # autocast on CUDA only, as nnU-Net does (slow on the CPU)
    with torch.autocast(device.type) if device.type == 'cuda' else nullcontext():
        value = loss(network(data), target)
    if penalty is not None:  # in float32, outside autocast: a function of the logits alone
        value = value + penalty()
    params = [p for group in step_optimizer.param_groups for p in group['params']]
    set_gradients(network, value if scaler is None else scaler.scale(value), params)
    if scaler is not None:
        scaler.unscale_(step_optimizer)
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler is not None:
        scaler.step(step_optimizer)  # skipped if this step's gradients overflowed
        scaler.update()
    else:
        step_optimizer.step()
    return value.detach().cpu().numpy()
