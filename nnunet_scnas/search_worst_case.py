"""The op choices that make a search step dearest in memory: the sample the checkpointing decision is made on.

A step's memory depends on which two ops each edge draws. Early in a search (tau 5, near-uniform logits) the
samples vary by a few percent; once the logits concentrate, every edge may draw the same dear ops for days. What a
step keeps for its backward is, per edge, what each of its sampled ops saves (disjoint tensors, plus the state's
shared LeakyReLU), summed over the edges. So the dearest sample runs, on every edge, the two ops that save the
most. They are found by tracing: each op alone on every edge (a one-op sample), ranked by the step's peak. On the
BrainTumour plan (128^3) that is `max_pool_3x3x3` (it keeps int64 indices) and a dilated separable conv (the three
dilations tie): about 50 % above the first samples of a search. `benchmarks/worst_case.md` traces every pair of
ops and random per-edge mixes of pairs at that plan; `tests/test_core_worst_case.py` checks a few at a small one.
"""
import random
from collections.abc import Sequence

import torch
from torch import nn

from .genotype import CELL_TYPES, EDGES
from .ops import OPS
from .search_memory import search_memories


def op_sample(ops: Sequence[str]) -> dict[str, torch.Tensor]:
    """A given sample (see `search_memories`): every edge of every cell runs `ops`."""
    mask = torch.zeros(len(EDGES), len(OPS), dtype=torch.bool)
    mask[:, [OPS.index(op) for op in ops]] = True
    return {cell_type: mask for cell_type in CELL_TYPES}


def random_pairs_sample(rng: random.Random) -> dict[str, torch.Tensor]:
    """A given sample with a random pair of ops on every edge of every cell type: a mix to compare the worst case with."""
    sample = {}
    for cell_type in CELL_TYPES:
        mask = torch.zeros(len(EDGES), len(OPS), dtype=torch.bool)
        for edge in range(len(EDGES)):
            mask[edge, rng.sample(range(len(OPS)), 2)] = True
        sample[cell_type] = mask
    return sample


def rank_ops(supernet: nn.Module, batch_shape: Sequence[int], tau: float, autocast: bool) -> list[tuple[str, int]]:
    """(op, peak bytes of a plain search step where every edge runs it alone), dearest first; `zero` (it computes
    and keeps nothing) is left out. Traced at batch 1: activations grow with the batch, the ranking does not."""
    one = [1, *batch_shape[1:]]
    peaks = [(op, search_memories(supernet, one, [op_sample([op])], tau, autocast, modes=("plain",))["plain"].total)
             for op in OPS if op != "zero"]
    return sorted(peaks, key=lambda pair: -pair[1])  # stable: ties keep the registry's order


def worst_case_ops(supernet: nn.Module, batch_shape: Sequence[int], tau: float, autocast: bool) -> tuple[str, str]:
    """The two ops whose sample on every edge makes the dearest search step (see the module docstring)."""
    first, second = (op for op, _ in rank_ops(supernet, batch_shape, tau, autocast)[:2])
    return first, second
