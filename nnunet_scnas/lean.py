"""The lean memory mode: recompute what is cheap, keep what is dear (torch's selective activation checkpointing).

Most ops of a cell are cheap in FLOPs but full size in memory: a LeakyReLU, an instance norm, a pool or a depthwise
conv each keep a tensor for the backward pass (a max pool even its int64 indices), and a cell runs many of them.
A region run by `recompute_cheap` keeps its inputs and the outputs of its dense convolutions (3x3x3 and transposed
convs, `keeps_output`), and nothing else: in the backward pass the region runs its forward again, taking the kept
convolutions from the cache instead of computing them, so what it recomputes is pointwise work, pooling, depthwise
and 1x1x1 convs. The regions are small (one op of an edge, a cell's preprocessing, the stem's halves, a head), so
what one recomputation brings back is small too. The outputs and gradients are those of the plain network
(`tests/test_core_lean.py`, float64), and `torch.compile` honours the policy (its partitioner recomputes the
same ops).
"""
from collections.abc import Callable
from functools import partial

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

_CONVOLUTION = torch.ops.aten.convolution.default


def keeps_output(op, *args) -> bool:
    """Whether the lean mode keeps the output of aten op `op`: a dense convolution, i.e. one whose recomputation
    would cost as much as the op: groups 1 and a kernel larger than 1x1x1, or a transposed convolution (the
    upsampling). Depthwise convs (and the pools written as depthwise convs) and 1x1x1 convs are recomputed."""
    if op is not _CONVOLUTION:
        return False
    _, weight, _, _, _, _, transposed, _, groups = args[:9]
    return groups == 1 and (transposed or weight.shape[2:].numel() > 1)


def _policy(context, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if keeps_output(op, *args) else CheckpointPolicy.PREFER_RECOMPUTE


def recompute_cheap(function: Callable, *args):
    """`function(*args)`, keeping for the backward pass only `args` and the outputs of its dense convolutions.

    Outside autograd (inference, or no input needing a gradient) it is a plain call.
    """
    if not torch.is_grad_enabled():
        return function(*args)
    return checkpoint(function, *args, use_reentrant=False,
                      context_fn=partial(create_selective_checkpoint_contexts, _policy))
