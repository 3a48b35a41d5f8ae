"""Random architectures, the baseline of a search: valid, named by their seed, uniform over the ops (their export
is tested in test_export_plans.py)."""
from collections import Counter

import pytest
from scipy.stats import chisquare

from nnunet_scnas.genotype import CELL_TYPES, EDGES, NUM_INPUTS, NUM_NODES, incoming_edges
from nnunet_scnas.ops import OPS
from nnunet_scnas.random_genotype import random_genotype


@pytest.fixture(scope="module")
def genotypes():
    return [random_genotype(seed) for seed in range(1000)]


def test_the_seed_alone_names_the_architecture():
    assert random_genotype(7) == random_genotype(7)
    assert len({random_genotype(seed) for seed in range(50)}) == 50


def test_every_node_keeps_a_non_zero_input(genotypes):
    for seed, genotype in enumerate(genotypes):  # Genotype validates too; this says what it checks
        for cell_type in CELL_TYPES:
            ops = getattr(genotype, cell_type)
            for node in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES):
                assert any(ops[k] != "zero" for k in incoming_edges(node)), (seed, cell_type, node)


def test_ops_are_drawn_uniformly_and_independently_per_edge(genotypes):
    draws = [op for g in genotypes for cell_type in CELL_TYPES for op in getattr(g, cell_type)]
    counts = Counter(draws)
    # the repair turns about 1.8 % of the nodes' all-zero draws into one non-zero op: far below this test's power
    assert chisquare([counts[op] for op in OPS]).pvalue > 1e-3
    # independence across edges: the op of one edge says nothing of its neighbour's
    pairs = Counter((g.reduction[EDGES.index("3<-1")], g.reduction[EDGES.index("3<-2")]) for g in genotypes)
    assert chisquare([pairs[a, b] for a in OPS for b in OPS]).pvalue > 1e-3


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True])
def test_a_seed_is_a_non_negative_integer(seed):
    with pytest.raises(ValueError, match="integer >= 0"):
        random_genotype(seed)
