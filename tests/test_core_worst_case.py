"""The worst case of the op choices, on which the search decides to checkpoint its cells."""
import random

import torch

from nnunet_scnas.search_memory import search_memories
from nnunet_scnas.search_worst_case import op_sample, random_pairs_sample, worst_case_ops
from nnunet_scnas.supernet import SCNASSupernet

BATCH = [1, 2, 16, 32, 32]
STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]  # anisotropic: strided edges differ from the others


def _supernet():
    with torch.device("meta"):
        return SCNASSupernet(2, 3, 8, STRIDES)


def _peak(supernet, sample) -> int:
    return search_memories(supernet, BATCH, [sample], tau=5.0, modes=("plain",))["plain"].total


def test_the_worst_case_needs_more_than_other_pairs_mixes_and_the_samplers_draws():
    # a few traces only (each takes seconds on meta); benchmarks/worst_case.py compares every pair at 128^3
    supernet = _supernet()
    first, second = worst_case_ops(supernet, BATCH, 5.0, autocast=False)
    worst = _peak(supernet, op_sample([first, second]))
    others = [_peak(supernet, op_sample(pair)) for pair in (["conv_3x3x3", "dil_sep_conv_3x3x3_r4"],
                                                           ["max_pool_3x3x3", "avg_pool_3x3x3"])]
    rng = random.Random(0)
    mixed = [_peak(supernet, random_pairs_sample(rng)) for _ in range(2)]
    generators = [torch.Generator().manual_seed(seed) for seed in range(2)]
    typical = search_memories(supernet, BATCH, generators, tau=5.0, modes=("plain",))["plain"].total
    assert worst > max(others) and worst > max(mixed) and worst > 1.2 * typical
    assert "architecture_weights" not in supernet.__dict__ and supernet.arch_grad  # the sampler is back
