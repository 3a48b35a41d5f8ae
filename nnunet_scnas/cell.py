"""One searched cell (paper §2.1, Fig. 1): 2 inputs + 4 intermediate nodes, 14 edges.

A cell of width C has nodes of C/4 channels and outputs their channel concat (C channels, no projection), as
DARTS' multiplier: each input is preprocessed to C/4 and every op works on C/4 channels (only this reading
reproduces the FLOPs the paper reports; `docs/architecture.md`). The same class serves the supernet (every edge holds all candidate ops,
mixed by per-forward weights) and the derived network (every edge holds its one chosen op; `zero` edges are not
built at all).
"""
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from .genotype import CELL_TYPES, EDGE_ENDPOINTS, EDGES, NUM_INPUTS, NUM_NODES, incoming_edges
from .lean import recompute_cheap
from .ops import OPS, Downsample, PointwiseConv, Stride, activation, as_stride, build_op, instance_norm, reads_activation

# the layout of this cell, recorded in exported configurations: the old layout (nodes as wide as the cell and a
# 1x1x1 projection of their concat) has other parameters, so configurations and checkpoints of it are refused
CELL_LAYOUT = "concat_of_quarter_nodes"


class EdgeWeights(NamedTuple):
    """A cell's edge weights `[14, 8]` (rows `EDGES`, columns `OPS`) and, on the host, which are non-zero: the ops
    to run, known without waiting for the device (the supernet's sampler draws them on the CPU)."""
    values: torch.Tensor
    active: tuple[tuple[bool, ...], ...]

    @classmethod
    def of(cls, values: torch.Tensor) -> "EdgeWeights":
        """From weights alone: one host round trip, to read which are non-zero."""
        return cls(values, tuple(map(tuple, (values.detach() != 0).cpu().tolist())))


class Project(nn.Sequential):
    """LeakyReLU -> 1x1x1 conv -> InstanceNorm: brings an input to the node width."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(activation(), PointwiseConv(in_channels, out_channels), instance_norm(out_channels))


class Upsample(nn.Sequential):
    """LeakyReLU -> transposed conv with kernel = stride -> InstanceNorm: a learned upsampling by `stride`.

    Like nnU-Net's decoder (transposed conv, kernel = stride): exact size * stride, anisotropic strides included.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: Stride):
        super().__init__(
            activation(),
            nn.ConvTranspose3d(in_channels, out_channels, stride, stride=stride, bias=False),
            instance_norm(out_channels),
        )


def _preprocess(cell_type: str, source: int, in_channels: int, node_channels: int, stride: Stride) -> nn.Module:
    """Bring input `source` (0: two cells back, 1: previous cell) to the node width and the cell's input resolution.

    Each preprocessing has its own LeakyReLU: it reads a cell input, not a state the ops share.

    reduction: both inputs are at the cell's input resolution; its ops stride.
    encoder_normal: input 0 is one level finer (the cell before the reduction): downsample it.
    expansion: both inputs are one level coarser: upsample both ("pre-upsampling", paper §3).
    decoder_normal: input 0 is one level coarser (the cell before the expansion): upsample it.
    """
    if cell_type == "expansion" or (cell_type == "decoder_normal" and source == 0):
        return Upsample(in_channels, node_channels, stride)
    if cell_type == "encoder_normal" and source == 0:
        return nn.Sequential(activation(), Downsample(in_channels, node_channels, stride))
    return Project(in_channels, node_channels)


class Cell(nn.Module):
    """A DAG cell: node j = sum over earlier states i of op_(j<-i)(state i); output = channel concat of the
    4 nodes (paper §2.1).

    Nodes have C/4 channels: each input is preprocessed to C/4 and every op is built for C/4 channels. Ops that
    read LeakyReLU(state) (`ops.reads_activation`) share one activation per state, computed on first use; the
    attribute `share_activation = False` gives each of them its own instead (the same numbers, more memory: the
    straightforward formulation, for memory comparisons).

    Args:
        cell_type: one of `CELL_TYPES`.
        candidates: edge name ("j<-i") -> op names built on that edge: all of `OPS` in the supernet, the one
            chosen op in a derived network. `zero` is never built (it contributes nothing); an edge that is
            absent or has only `zero` is not built at all.
        in_channels: channels of the two inputs (two cells back, previous cell).
        channels: C, the width of the output (a multiple of 4); each of the 4 nodes has C/4 channels.
        stride: the resolution step of this cell (3-tuple, may be anisotropic). reduction: stride of the ops
            reading the two inputs; expansion: upsampling factor of both inputs; encoder_normal: downsampling
            of input 0; decoder_normal: upsampling of input 0.

    Shapes: `forward(s0, s1, weights, lean)` with s0 `[N, in_channels[0], ...]` and s1 `[N, in_channels[1], ...]`
    at their own resolutions, `weights` `[14, 8]` (rows `EDGES`, columns `OPS`; as a tensor or as `EdgeWeights`)
    or None for a cell with one op per edge; returns `[N, channels, ...]` at the cell's output resolution. The forward draws nothing random
    and decides which ops to run from `weights` alone, so a checkpointed recomputation runs the same ops.
    `lean=True` runs each preprocessing and each weighted op (its own activation included) as a region that
    keeps only its input and its dense convolutions' outputs (`lean.recompute_cheap`): the same numbers, a
    fraction of the memory, the cheap ops computed again in the backward pass.
    """

    def __init__(self, cell_type: str, candidates: Mapping[str, Sequence[str]], in_channels: tuple[int, int],
                 channels: int, stride: Stride):
        super().__init__()
        if cell_type not in CELL_TYPES:
            raise ValueError(f"unknown cell type {cell_type!r}; valid: {', '.join(CELL_TYPES)}")
        unknown = set(candidates) - set(EDGES)
        if unknown:
            raise ValueError(f"unknown edge(s) {sorted(unknown)}; valid edges: {', '.join(EDGES)}")
        if channels < NUM_NODES or channels % NUM_NODES:
            raise ValueError(f"cell width must be a positive multiple of {NUM_NODES} (its {NUM_NODES} nodes are "
                             f"width/{NUM_NODES} wide), got {channels}")
        self.cell_type = cell_type
        self.channels = channels
        self.node_channels = channels // NUM_NODES
        self.stride = as_stride(stride)

        self.edges = nn.ModuleDict()
        read = set()  # the states some op reads
        for edge, (source, _) in zip(EDGES, EDGE_ENDPOINTS):
            ops = [name for name in candidates.get(edge, ()) if name != "zero"]
            if ops:
                op_stride = self.stride if cell_type == "reduction" and source < NUM_INPUTS else (1, 1, 1)
                self.edges[edge] = nn.ModuleDict(
                    {name: build_op(name, self.node_channels, op_stride) for name in ops})
                read.add(source)
        self.one_op_per_edge = all(len(ops) == 1 for ops in self.edges.values())

        # only inputs that some op reads get a preprocessing (a derived cell may ignore one of its inputs)
        self.preprocess = nn.ModuleDict({
            str(source): _preprocess(cell_type, source, in_channels[source], self.node_channels, self.stride)
            for source in range(NUM_INPUTS) if source in read})
        self.activation = activation()  # shared by the ops that read LeakyReLU(state); no parameters
        self.share_activation = True

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor | EdgeWeights | None = None,
                lean: bool = False) -> torch.Tensor:
        if weights is None and not self.one_op_per_edge:
            raise ValueError("this cell holds several ops per edge (a supernet cell): pass their weights")
        # which (edge, op) to run is decided on the host from `weights` alone, so a checkpointed recomputation runs
        # the same ops; given as `EdgeWeights`, without a host round trip
        if weights is not None and not isinstance(weights, EdgeWeights):
            weights = EdgeWeights.of(weights)
        weights, active = (None, None) if weights is None else weights
        if weights is not None and tuple(weights.shape) != (len(EDGES), len(OPS)):
            raise ValueError(f"weights must have shape ({len(EDGES)}, {len(OPS)}), got {tuple(weights.shape)}")

        inputs = (s0, s1)
        states: dict[int, torch.Tensor] = {}
        activated: dict[int, torch.Tensor] = {}

        def state(i: int) -> torch.Tensor:
            if i not in states:  # inputs are preprocessed on first use only
                preprocess = self.preprocess[str(i)]
                states[i] = recompute_cheap(preprocess, inputs[i]) if lean else preprocess(inputs[i])
            return states[i]

        def term(op: nn.Module, i: int, weight: torch.Tensor | None) -> torch.Tensor:
            if lean:  # the activation is recomputed with the op instead of kept once per state
                return recompute_cheap(self._weighted_op, op, state(i), weight)
            return apply(op, i) if weight is None else weight * apply(op, i)

        def apply(op: nn.Module, i: int) -> torch.Tensor:
            if not reads_activation(op):
                return op(state(i))
            if not self.share_activation:
                return op(self.activation(state(i)))
            if i not in activated:  # one LeakyReLU per state, and only if some op that runs needs it
                activated[i] = self.activation(state(i))
            return op(activated[i])

        for node in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES):
            terms = []
            for k in incoming_edges(node):
                if EDGES[k] not in self.edges:
                    continue
                source = EDGE_ENDPOINTS[k][0]
                for name, op in self.edges[EDGES[k]].items():
                    if weights is None:
                        terms.append(term(op, source, None))
                    elif active[k][OPS.index(name)]:  # ops with weight 0 are not computed at all
                        terms.append(term(op, source, weights[k, OPS.index(name)]))
            states[node] = _sum(terms) if terms else self._zeros(s1)
        return torch.cat([states[node] for node in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES)], 1)

    def _weighted_op(self, op: nn.Module, x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        out = op(self.activation(x)) if reads_activation(op) else op(x)
        return out if weight is None else weight * out

    def _zeros(self, s1: torch.Tensor) -> torch.Tensor:
        # a node none of whose ops has a non-zero weight (weights given by the caller, or a sampled pair whose
        # non-`zero` op got a weight that underflowed to 0)
        spatial = s1.shape[2:]
        if self.cell_type == "reduction":
            spatial = [n // s for n, s in zip(spatial, self.stride)]
        elif self.cell_type == "expansion":
            spatial = [n * s for n, s in zip(spatial, self.stride)]
        return s1.new_zeros(s1.shape[0], self.node_channels, *spatial)


def _sum(terms: list[torch.Tensor]) -> torch.Tensor:
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total
