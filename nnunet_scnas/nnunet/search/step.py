"""One search iteration (paper Algorithm 1): a weight step, then an architecture step, each on a fresh two-op sample.

The trainer runs it on nnU-Net's batches; the multi-process test runs the very same code under DDP.

Multi-GPU: every rank must train the same sub-network in a step, or DDP would average the gradients of
different architectures. So a step's sample is a pure function of (search seed, iteration, step), not of how
many samples a rank drew before: a forward on one rank only (a plot, a validation) cannot desynchronise the
ranks, and `--c` resumes with the same samples without saving any generator.
"""
from contextlib import nullcontext

import numpy as np
import torch
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
    parameters get no gradient; plain DDP fails on that in the next step. Cost: in every backward DDP walks
    the autograd graph to find them, one extra small all-reduce (the used-parameter bitmap), and the gradient
    all-reduce still carries the whole supernet's buffers. Parameters no rank used keep `grad=None`, so Adam
    skips them exactly as in a single process.
    """
    network._remove_autograd_hooks()  # the replaced wrapper must not take part in later backward passes
    return DDP(network.module, device_ids=network.device_ids, find_unused_parameters=True)


def search_iteration(network: torch.nn.Module, loss, optimizer: SearchOptimizer, weight_batch: dict,
                     architecture_batch: dict, search_seed: int, iteration: int, grad_clip: float,
                     grad_scaler=None) -> tuple[np.ndarray, np.ndarray]:
    """Weight step on `weight_batch`, then architecture step on `architecture_batch`; returns both losses.

    Args:
        network: the supernet in "two_op" mode, or its DDP wrapper (the logits are used inside the wrapped
            forward, so DDP averages their gradients like any other parameter's).
        loss: nnU-Net's loss, `loss(output, target)` (deep supervision included).
        optimizer: both optimizers; each step zeroes both, so neither step sees the other's gradients.
        weight_batch, architecture_batch: nnU-Net batches, `{'data': [N, C, X, Y, Z], 'target': tensor or list}`.
        search_seed, iteration: with the step, they fix the two-op sample (see the module docstring).
        grad_clip: gradient norm clipping of the stepped parameters (nnU-Net's 12).
        grad_scaler: nnU-Net's CUDA `GradScaler`, or None.
    """
    return tuple(
        _step(network, loss, optimizer, batch, step_optimizer, sample_generator(search_seed, iteration, step),
              grad_clip, grad_scaler)
        for step, batch, step_optimizer in ((WEIGHT_STEP, weight_batch, optimizer.weights),
                                            (ARCHITECTURE_STEP, architecture_batch, optimizer.architecture)))


def _step(network, loss, optimizer: SearchOptimizer, batch: dict, step_optimizer: torch.optim.Optimizer,
          generator: torch.Generator, grad_clip: float, grad_scaler) -> np.ndarray:
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
    params = [p for group in step_optimizer.param_groups for p in group['params']]
    if grad_scaler is not None:
        grad_scaler.scale(value).backward()
        grad_scaler.unscale_(step_optimizer)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        grad_scaler.step(step_optimizer)
        grad_scaler.update()
    else:
        value.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        step_optimizer.step()
    return value.detach().cpu().numpy()
