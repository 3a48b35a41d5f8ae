"""Genotype: JSON round trip, validation messages, and derivation from logits."""
import copy
import json

import pytest
import torch

from nnunet_scnas import CELL_TYPES, EDGES, OPS, Genotype, derive_genotype
from nnunet_scnas.genotype import SCHEMA_VERSION, SEARCH_SPACE_ID, incoming_edges

from helpers import random_logits


def test_edges_are_readable_and_complete():
    assert len(EDGES) == 14 and len(set(EDGES)) == 14
    assert EDGES[:5] == ("2<-0", "2<-1", "3<-0", "3<-1", "3<-2") and EDGES[-1] == "5<-4"
    assert [EDGES[k] for k in incoming_edges(4)] == ["4<-0", "4<-1", "4<-2", "4<-3"]


def test_json_round_trip():
    genotype = derive_genotype(random_logits(0))
    data = json.loads(json.dumps(genotype.to_dict()))
    assert data["schema_version"] == SCHEMA_VERSION and data["search_space"] == SEARCH_SPACE_ID
    assert list(data["cells"]) == list(CELL_TYPES) and list(data["cells"]["reduction"]) == list(EDGES)
    assert Genotype.from_dict(data) == genotype
    assert hash(Genotype.from_dict(data)) == hash(genotype)  # frozen and hashable


def test_genotype_is_immutable():
    genotype = derive_genotype(random_logits(1))
    with pytest.raises(AttributeError):
        genotype.reduction = genotype.expansion


def _valid():
    return derive_genotype(random_logits(2)).to_dict()


def _set(path, value):
    def mutate(d):
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(d):
        target = d
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


def _all_zero_into_node(cell_type, node):
    def mutate(d):
        for k in incoming_edges(node):
            d["cells"][cell_type][EDGES[k]] = "zero"
    return mutate


INVALID = [
    (_set(["cells", "reduction", "3<-1"], "conv_5x5x5"), r"cells\['reduction'\]\['3<-1'\] is 'conv_5x5x5', not an op"),
    (_delete(["cells", "expansion", "5<-4"]), r"cells\['expansion'\] is missing edge\(s\) '5<-4'"),
    (_set(["cells", "expansion", "6<-0"], "identity"), r"cells\['expansion'\] has unknown edge\(s\) '6<-0'"),
    (_delete(["cells", "decoder_normal"]), r"'cells' is missing cell type\(s\) 'decoder_normal'"),
    (_set(["cells", "middle"], {}), r"'cells' has unknown cell type\(s\) 'middle'"),
    (_set(["schema_version"], 2), r"schema_version is 2, this version of nnunet-scnas reads schema_version 1"),
    (_delete(["schema_version"]), r"schema_version is None"),
    (_set(["search_space"], "darts-2d"), r"search_space is 'darts-2d', expected 'scnas-3d-4node-8op-v1'"),
    (_set(["cells", "reduction"], ["identity"] * 14), r"cells\['reduction'\] must be an object"),
    (_set(["cells"], []), r"'cells' must be an object"),
    (_set(["extra"], 1), r"genotype has unknown key\(s\) 'extra'"),
    (_all_zero_into_node("encoder_normal", 3), r"cell 'encoder_normal' node 3 has only 'zero' inputs"),
]


@pytest.mark.parametrize("mutate, message", INVALID)
def test_invalid_genotypes_say_what_is_wrong(mutate, message):
    data = copy.deepcopy(_valid())
    mutate(data)
    with pytest.raises(ValueError, match=message):
        Genotype.from_dict(data)


def test_from_dict_rejects_non_objects():
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        Genotype.from_dict([])


def test_constructor_validates_too():
    ops = ["conv_3x3x3"] * 14
    Genotype(encoder_normal=ops, reduction=ops, decoder_normal=ops, expansion=ops)
    with pytest.raises(ValueError, match="cell 'expansion' has 13 ops"):
        Genotype(encoder_normal=ops, reduction=ops, decoder_normal=ops, expansion=ops[:13])


def test_derivation_takes_the_argmax_per_edge():
    logits = random_logits(3)
    for cell_type in CELL_TYPES:
        logits[cell_type][:, OPS.index("zero")] = -10.0  # zero never wins here, so no repair happens
    genotype = derive_genotype(logits)
    for cell_type in CELL_TYPES:
        expected = [OPS[k] for k in logits[cell_type].argmax(dim=1).tolist()]
        assert list(getattr(genotype, cell_type)) == expected


@pytest.mark.parametrize("zero_logit", [10.0, 1e-3])
def test_derivation_is_valid_when_zero_wins_everywhere(zero_logit):
    logits = random_logits(4)
    for cell_type in CELL_TYPES:
        logits[cell_type][:, OPS.index("zero")] = logits[cell_type].max() + zero_logit
    # rule: each node keeps only its single strongest non-zero (edge, op), by softmax probability
    genotype = derive_genotype(logits)
    for cell_type in CELL_TYPES:
        probs = torch.softmax(logits[cell_type], dim=1)
        ops = genotype.ops(cell_type)
        for node in range(2, 6):
            inputs = incoming_edges(node)
            kept = [EDGES[k] for k in inputs if ops[EDGES[k]] != "zero"]
            assert len(kept) == 1
            nonzero = probs[inputs].clone()
            nonzero[:, OPS.index("zero")] = -1
            best = int(nonzero.argmax())
            assert kept == [EDGES[inputs[best // len(OPS)]]]
            assert ops[kept[0]] == OPS[best % len(OPS)]
    Genotype.from_dict(genotype.to_dict())  # valid


def test_derivation_keeps_zero_where_a_node_has_other_inputs():
    logits = random_logits(5)
    logits["reduction"][EDGES.index("5<-4"), OPS.index("zero")] = 50.0
    logits["reduction"][EDGES.index("5<-0"), OPS.index("zero")] = -50.0
    assert derive_genotype(logits).ops("reduction")["5<-4"] == "zero"


@pytest.mark.parametrize("logits, message", [
    ({cell_type: torch.zeros(14, 8) for cell_type in CELL_TYPES[:3]}, "missing cell type"),
    ({cell_type: torch.zeros(14, 7) for cell_type in CELL_TYPES}, r"must have shape \(14, 8\)"),
])
def test_derivation_rejects_bad_logits(logits, message):
    with pytest.raises(ValueError, match=message):
        derive_genotype(logits)


def test_str_is_readable():
    text = str(derive_genotype(random_logits(6)))
    assert "encoder_normal:" in text and "x5 = " in text and "(x0)" in text
