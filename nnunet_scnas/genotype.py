"""The searched architecture: one op per edge for each of the 4 cell types (paper §2.1, Fig. 2).

A cell has 2 inputs (states 0 and 1, the outputs of the previous two cells) and 4 intermediate nodes
(states 2..5); node j sums one op of every earlier state, so a cell has 14 edges, named "j<-i" (node j
reads state i). A genotype is saved as JSON:

    {"schema_version": 1, "search_space": "scnas-3d-4node-8op-v1",
     "cells": {"encoder_normal": {"2<-0": "conv_3x3x3", "2<-1": "zero", ...}, "reduction": {...}, ...}}
"""
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .ops import OPS

CELL_TYPES = ("encoder_normal", "reduction", "decoder_normal", "expansion")
NUM_INPUTS = 2
NUM_NODES = 4
# (source state, target node) of every edge, in the fixed row order of the architecture logits
EDGE_ENDPOINTS: tuple[tuple[int, int], ...] = tuple(
    (source, target) for target in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES) for source in range(target))
EDGES: tuple[str, ...] = tuple(f"{target}<-{source}" for source, target in EDGE_ENDPOINTS)
SCHEMA_VERSION = 1
SEARCH_SPACE_ID = "scnas-3d-4node-8op-v1"


def incoming_edges(node: int) -> list[int]:
    """Indices (into EDGES) of the edges that feed intermediate node `node` (2..5)."""
    return [k for k, (_, target) in enumerate(EDGE_ENDPOINTS) if target == node]


@dataclass(frozen=True)
class Genotype:
    """One op name per edge (in `EDGES` order) for each cell type; validated on construction.

    Every intermediate node must keep at least one non-`zero` input; then every node is computed from the
    cell's inputs and the cell output (the concat of all 4 nodes) is connected.

    Args:
        encoder_normal, reduction, decoder_normal, expansion: 14 op names from `OPS`, one per edge.
        schema_version: layout version of the JSON form (`SCHEMA_VERSION`).
        search_space: id of the search space the ops and edges belong to (`SEARCH_SPACE_ID`).
    """

    encoder_normal: tuple[str, ...]
    reduction: tuple[str, ...]
    decoder_normal: tuple[str, ...]
    expansion: tuple[str, ...]
    schema_version: int = SCHEMA_VERSION
    search_space: str = SEARCH_SPACE_ID

    def __post_init__(self):
        _check_version(self.schema_version, self.search_space)
        for cell_type in CELL_TYPES:
            ops = tuple(getattr(self, cell_type))
            object.__setattr__(self, cell_type, ops)  # lists become tuples: the genotype stays immutable
            if len(ops) != len(EDGES):
                raise ValueError(f"invalid genotype: cell {cell_type!r} has {len(ops)} ops, "
                                 f"expected one per edge ({len(EDGES)})")
            for edge, op in zip(EDGES, ops):
                if op not in OPS:
                    raise ValueError(f"invalid genotype: cells[{cell_type!r}][{edge!r}] is {reprlib.repr(op)}, "
                                     f"not an op; valid ops: {', '.join(OPS)}")
            for node in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES):
                inputs = incoming_edges(node)
                if all(ops[k] == "zero" for k in inputs):
                    raise ValueError(f"invalid genotype: in cell {cell_type!r} node {node} has only 'zero' inputs "
                                     f"(edges {', '.join(EDGES[k] for k in inputs)}); every node needs at "
                                     f"least one non-zero input")

    def ops(self, cell_type: str) -> dict[str, str]:
        """Edge name -> op name for one cell type."""
        if cell_type not in CELL_TYPES:
            raise ValueError(f"unknown cell type {cell_type!r}; valid: {', '.join(CELL_TYPES)}")
        return dict(zip(EDGES, getattr(self, cell_type)))

    def inputs_read(self, cell_type: str) -> set[int]:
        """The cell inputs (0: two cells back, 1: the previous cell) that some non-`zero` op of `cell_type` reads."""
        ops = self.ops(cell_type).values()
        return {source for (source, _), op in zip(EDGE_ENDPOINTS, ops) if source < NUM_INPUTS and op != "zero"}

    def to_dict(self) -> dict:
        return {"schema_version": self.schema_version, "search_space": self.search_space,
                "cells": {cell_type: self.ops(cell_type) for cell_type in CELL_TYPES}}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Genotype":
        """Read the JSON form written by `to_dict`; raises ValueError saying what is wrong and where."""
        if not isinstance(data, Mapping):
            raise ValueError(f"invalid genotype: expected a JSON object, got {type(data).__name__}")
        # version and search space first: another version may lay out the rest differently
        _check_version(data.get("schema_version"), data.get("search_space"))
        _check_keys(data, required=("schema_version", "search_space", "cells"), where="genotype")
        cells = data["cells"]
        if not isinstance(cells, Mapping):
            raise ValueError(f"invalid genotype: 'cells' must be an object, got {type(cells).__name__}")
        _check_keys(cells, required=CELL_TYPES, where="genotype 'cells'", what="cell type")
        for cell_type in CELL_TYPES:
            if not isinstance(cells[cell_type], Mapping):
                raise ValueError(f"invalid genotype: cells[{cell_type!r}] must be an object of edge -> op, "
                                 f"got {type(cells[cell_type]).__name__}")
            _check_keys(cells[cell_type], required=EDGES, where=f"genotype cells[{cell_type!r}]", what="edge")
        return cls(**{cell_type: tuple(cells[cell_type][edge] for edge in EDGES) for cell_type in CELL_TYPES},
                   schema_version=data["schema_version"], search_space=data["search_space"])

    def __str__(self) -> str:
        lines = [f"Genotype ({self.search_space}, schema {self.schema_version})"]
        for cell_type in CELL_TYPES:
            lines.append(f"  {cell_type}:")
            ops = getattr(self, cell_type)
            for node in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES):
                terms = [f"{ops[k]}(x{EDGE_ENDPOINTS[k][0]})" for k in incoming_edges(node) if ops[k] != "zero"]
                lines.append(f"    x{node} = {' + '.join(terms)}")
        return "\n".join(lines)


def _check_version(schema_version, search_space) -> None:
    if schema_version != SCHEMA_VERSION:
        raise ValueError(f"invalid genotype: schema_version is {schema_version!r}, "
                         f"this version of nnunet-scnas reads schema_version {SCHEMA_VERSION}")
    if search_space != SEARCH_SPACE_ID:
        raise ValueError(f"invalid genotype: search_space is {search_space!r}, expected {SEARCH_SPACE_ID!r}")


def _check_keys(mapping: Mapping, required, where: str, what: str = "key") -> None:
    missing = [key for key in required if key not in mapping]
    unknown = [key for key in mapping if key not in required]
    if missing:
        raise ValueError(f"invalid genotype: {where} is missing {what}(s) {', '.join(map(repr, missing))}")
    if unknown:  # a hostile file may hold millions: name a few
        shown = ", ".join(map(reprlib.repr, unknown[:5])) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise ValueError(f"invalid genotype: {where} has unknown {what}(s) {shown}; valid: {', '.join(required)}")


def derive_genotype(logits: Mapping[str, torch.Tensor]) -> Genotype:
    """The architecture the logits stand for: per edge the op with the largest logit (paper §2.2, DARTS).

    `zero` may win an edge (a disconnection). Rule that keeps the network valid: a node whose incoming edges
    all chose `zero` gets the single strongest non-zero (edge, op) among its incoming edges, strength being
    the op's softmax probability on its edge (probabilities compare across edges, raw logits do not); its
    other edges stay `zero`. Every node then has an input and the cell output (all 4 nodes) stays connected.

    Args:
        logits: cell type -> `[14, 8]` logits (rows in `EDGES` order, columns in `OPS` order).
    """
    _check_keys(logits, required=CELL_TYPES, where="logits", what="cell type")
    zero = OPS.index("zero")
    cells = {}
    for cell_type in CELL_TYPES:
        alpha = torch.as_tensor(logits[cell_type]).detach().float().cpu()
        if alpha.shape != (len(EDGES), len(OPS)):
            raise ValueError(f"logits[{cell_type!r}] must have shape ({len(EDGES)}, {len(OPS)}), "
                             f"got {tuple(alpha.shape)}")
        probs = torch.softmax(alpha, dim=-1)
        choice = probs.argmax(dim=-1).tolist()
        for node in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES):
            inputs = incoming_edges(node)
            if all(choice[k] == zero for k in inputs):
                nonzero = probs[inputs].clone()
                nonzero[:, zero] = -1.0
                best = int(nonzero.argmax())  # flat index into [len(inputs), len(OPS)]
                choice[inputs[best // len(OPS)]] = best % len(OPS)
        cells[cell_type] = tuple(OPS[k] for k in choice)
    return Genotype(**cells)

