"""Random architectures of the search space: the baseline a search has to beat (Li and Talwalkar 2019, "Random
search and reproducibility for NAS"; Yu et al. 2020, "Evaluating the search phase of NAS").

Every edge draws its op uniformly from `OPS`, independently, from a generator seeded with `seed` alone, so a
seed names one architecture on every machine. A node whose draws are all `zero` is repaired by the rule that
derivation applies to a searched architecture: the draw is `derive_genotype` of i.i.d. uniform logits, whose
argmax per edge is uniform over the ops.
"""
import torch

from .genotype import CELL_TYPES, EDGES, Genotype, derive_genotype
from .ops import OPS


def random_genotype(seed: int) -> Genotype:
    """The random architecture number `seed` (any integer >= 0)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"a random genotype's seed must be an integer >= 0, got {seed!r}")
    generator = torch.Generator().manual_seed(seed)
    logits = {cell_type: torch.rand(len(EDGES), len(OPS), generator=generator) for cell_type in CELL_TYPES}
    return derive_genotype(logits)
