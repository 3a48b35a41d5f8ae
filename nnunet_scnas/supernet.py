"""The search network: every edge of every cell holds all candidate ops (paper §2.2, Algorithm 1)."""
from contextlib import contextmanager

import torch
from torch import nn

from .cell import Cell, EdgeWeights
from .genotype import CELL_TYPES, EDGES, Genotype, derive_genotype
from .macro import UNetMacro
from .ops import OPS
from .sampler import TAU_START, sample_two_ops_each, softmax_weights

MODES = ("two_op", "all_ops", "argmax")


class SCNASSupernet(UNetMacro):
    """The supernet over the SCNAS search space, with one `[14, 8]` logits tensor per cell type.

    Cells of width W have 4 nodes of W/4 channels and output their concat (see `cell.py`). Each forward draws
    fresh edge weights from the logits according to `mode`, once, before any cell runs: "two_op" (the paper's
    sampler, `sample_two_ops(alpha, tau, generator)`), "all_ops" (DARTS softmax mixture, for ablation and the
    cost benchmark) or "argmax" (the current architecture: exactly the ops of `genotype()`, weight 1). Inside
    `evaluating(genotype)` every forward runs a given genotype's ops instead, whatever the mode: "argmax" is the
    case of the supernet's own genotype (one code path, `_genotype_weights`). Only ops with a non-zero weight are
    computed. The weights used are kept, detached, in `last_weights`.

    Args:
        input_channels: image channels.
        num_classes: output channels.
        stem_width: C, a multiple of 4; level l has C * 2**l channels (paper: 48 while searching).
        strides: `[[1,1,1], s1, s2, s3]` from an nnU-Net plan (see `macro.py` for the cell sequence).
        deep_supervision: list of 3 outputs (full, /s1, /(s1*s2)) instead of one tensor;
            `decoder.deep_supervision` switches it later.

    Shapes: input `[N, input_channels, X, Y, Z]`, output `[N, num_classes, X, Y, Z]` (or the list).
    Attributes set by the search loop: `mode`, `tau` (float), `generator` (a CPU `torch.Generator` or None),
    `arch_grad` (default True: the edge weights carry the gradient path to the logits; the weight step sets
    it False, so the weights enter as constants and no graph to the logits is kept: same weight gradients,
    less memory) and `memory_mode` (see `UNetMacro`).
    """

    def __init__(self, input_channels: int, num_classes: int, stem_width: int, strides, deep_supervision: bool = True):
        all_ops = {edge: OPS for edge in EDGES}
        super().__init__(input_channels, num_classes, stem_width, strides, deep_supervision,
                         make_cell=lambda cell_type, in_channels, channels, stride:
                         Cell(cell_type, all_ops, in_channels, channels, stride))
        # small random logits (as DARTS): near-uniform sampling, but no exact ties for the first argmax
        self.alphas = nn.ParameterDict({
            cell_type: nn.Parameter(1e-3 * torch.randn(len(EDGES), len(OPS))) for cell_type in CELL_TYPES})
        self.mode = "two_op"
        self.tau = TAU_START
        self.generator: torch.Generator | None = None
        self.arch_grad = True
        self.last_weights: dict[str, torch.Tensor] = {}
        self.evaluated_genotype: Genotype | None = None  # set by `evaluating`

    def architecture_weights(self) -> dict[str, EdgeWeights]:
        """Edge weights `[14, 8]` per cell type for the current `mode` (a fresh sample in "two_op"), with the ops to
        run on the host: one host round trip in all, none in the cells (none at all inside `evaluating`).

        With `arch_grad` False the weights are drawn from detached logits: the same values, no graph.
        """
        if self.evaluated_genotype is not None:
            return self._genotype_weights(self.evaluated_genotype)
        alphas = [self.alphas[ct] if self.arch_grad else self.alphas[ct].detach() for ct in CELL_TYPES]
        if self.mode == "two_op":
            sampled = sample_two_ops_each(alphas, self.tau, self.generator)
            return {ct: EdgeWeights(values, _rows(mask)) for ct, (values, mask) in zip(CELL_TYPES, sampled)}
        if self.mode == "all_ops":
            weights = [softmax_weights(alpha) for alpha in alphas]
            nonzero = torch.stack([w.detach() != 0 for w in weights]).cpu()  # a weight may underflow to 0
            return {ct: EdgeWeights(w, _rows(mask)) for ct, w, mask in zip(CELL_TYPES, weights, nonzero)}
        if self.mode == "argmax":
            # the derived genotype's ops, repaired nodes included, rather than a raw argmax per edge
            host = torch.stack([alpha.detach() for alpha in alphas]).cpu()
            return self._genotype_weights(derive_genotype(dict(zip(CELL_TYPES, host))))
        raise ValueError(f"unknown mode {self.mode!r}; valid: {', '.join(MODES)}")

    def _genotype_weights(self, genotype: Genotype) -> dict[str, EdgeWeights]:
        """Weight 1 on `genotype`'s op of every edge, 0 elsewhere, on the logits' device; the ops to run are read
        from the genotype on the host."""
        like = self.alphas[CELL_TYPES[0]]
        hot = {ct: _one_hot(genotype, ct) for ct in CELL_TYPES}
        return {ct: EdgeWeights(one_hot.to(like), _rows(one_hot != 0)) for ct, one_hot in hot.items()}

    @contextmanager
    def evaluating(self, genotype: Genotype):
        """Every forward inside the block runs `genotype`'s ops, weight 1, one op per edge, with the supernet's
        trained weights: the sub-network `genotype` picks out of the supernet (the search's ranking check, which
        evaluates random genotypes in it). The previous setting is restored after the block, also on errors."""
        if not isinstance(genotype, Genotype):
            raise TypeError(f"evaluating needs a Genotype, got {type(genotype).__name__}")
        previous, self.evaluated_genotype = self.evaluated_genotype, genotype
        try:
            yield self
        finally:
            self.evaluated_genotype = previous

    def forward(self, x: torch.Tensor):
        weights = self.architecture_weights()  # drawn once per forward: checkpointed cells recompute with these
        self.last_weights = {cell_type: w.values.detach() for cell_type, w in weights.items()}
        return self._forward(x, weights)

    def weight_parameters(self) -> list[nn.Parameter]:
        """The ops' parameters (first optimizer)."""
        arch = {id(p) for p in self.alphas.values()}
        return [p for p in self.parameters() if id(p) not in arch]

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture logits, in `CELL_TYPES` order (second optimizer)."""
        return [self.alphas[cell_type] for cell_type in CELL_TYPES]

    @contextmanager
    def frozen_weights(self):
        """The ops' parameters without `requires_grad` inside the block (restored after it, also on errors): an
        architecture step's forward then keeps nothing for their gradients."""
        parameters = self.weight_parameters()
        flags = [p.requires_grad for p in parameters]
        for p in parameters:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, flag in zip(parameters, flags):
                p.requires_grad_(flag)

    def genotype(self) -> Genotype:
        """The architecture the current logits stand for (see `derive_genotype` for the rule)."""
        return derive_genotype({cell_type: self.alphas[cell_type] for cell_type in CELL_TYPES})


def _rows(mask: torch.Tensor) -> tuple[tuple[bool, ...], ...]:
    return tuple(map(tuple, mask.tolist()))  # a CPU mask: no device involved


def _one_hot(genotype: Genotype, cell_type: str) -> torch.Tensor:
    """`[14, 8]`: 1 at the genotype's op of every edge of `cell_type`, 0 elsewhere."""
    chosen = torch.tensor([OPS.index(op) for op in getattr(genotype, cell_type)])
    return nn.functional.one_hot(chosen, len(OPS))
