"""The U-Net macro-architecture shared by the supernet and the derived network (paper §2.1, Fig. 1).

Cell sequence (levels 0..3 = full resolution, /s1, /s1*s2, /s1*s2*s3; widths C, 2C, 4C, 8C):

    stem(L0, C) -> R(L1) E(L1) R(L2) E(L2) R(L3) I(L3) -> X(L2) D(L2) X(L1) D(L1) X(L0) D(L0) -> out cell

R = reduction, E = encoder-normal, I = inter-cell (an encoder-normal cell: same structure and logits),
X = expansion, D = decoder-normal; the stem is a fixed block of two 3x3x3 convs. A cell of width W has 4 nodes
of W/4 channels and outputs their concat (`cell.py`), so C must be a multiple of 4. Why this reading: the
paper has 12 searched cells, three downsamplings and three upsamplings, normal and resizing cells alternating,
and an inter-cell between encoder and decoder; pairing each resizing cell with one normal cell at its new
level gives exactly R E R E R I + X D X D X D, so every level of the decoder has the same number of cells as
the encoder side.

Wiring:
- every cell reads the states of the previous two cells (s0 = two back, s1 = previous); the first
  reduction cell reads the stem output twice;
- U-Net skip: the state of a decoder cell at level l < 3 is its output plus the encoder output of level l
  (the stem for level 0, the encoder-normal cell of levels 1 and 2); later cells read that sum (paper
  footnote 1). The bottleneck (level 3) has no skip: the first expansion cell reads R and I as they are;
- deep supervision heads (LeakyReLU -> 1x1x1 conv, the "out cell") read the decoder-normal states of
  levels 0, 1, 2, which are nnU-Net's deep-supervision scales 1, 1/s1, 1/(s1*s2) for strides
  [[1,1,1], s1, s2, s3]: the outputs come as a list, highest resolution first, without softmax.

Memory modes (`memory_mode`, the same function and gradients in each; only what is kept for the backward differs):
- "plain": autograd keeps what every op saves;
- "lean": the stem, each cell's preprocessings and ops, and the heads are regions that keep only their inputs and
  their dense convolutions' outputs and recompute the cheap rest in the backward pass (`lean.py`);
- "cells": each cell's whole forward is recomputed in the backward pass (non-reentrant `torch.utils.checkpoint`),
  the stem and heads as in "lean": the least memory, the most recomputation.
A recomputation runs the same ops: a cell draws nothing random, and the supernet draws its edge weights once per
forward, outside the cells.

A derived cell may ignore one of its inputs, so a cell's output can end up read by nothing (`live_cells`);
the derived network does not build such a cell (`UnreadCell`): its parameters would never get a gradient,
and stock DDP (`nnUNetv2_train -num_gpus N`) refuses parameters without one.
"""
from collections.abc import Callable, Collection, Mapping, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .cell import Cell, EdgeWeights
from .genotype import NUM_NODES
from .lean import recompute_cheap
from .ops import PointwiseConv, Stride, activation, instance_norm

ENCODER_CELLS = ("reduction", "encoder_normal") * 3  # the last encoder_normal is the inter-cell
DECODER_CELLS = ("expansion", "decoder_normal") * 3
NUM_LEVELS = 4
# the level of each decoder cell (X D X D X D), and the encoder state each level's skip comes from
# (state 0 = stem, state k = output of encoder cell k, counted from 1): the stem, then the encoder-normal
# cells of levels 1 and 2 (the third encoder-normal cell is the inter-cell, at the bottleneck)
DECODER_LEVELS = tuple(NUM_LEVELS - 2 - k // 2 for k in range(len(DECODER_CELLS)))
SKIP_STATES = (0, *(k + 1 for k, cell_type in enumerate(ENCODER_CELLS)
                    if cell_type == "encoder_normal"))[:NUM_LEVELS - 1]

# (cell_type, in_channels (two back, previous), channels, stride) -> Cell
CellFactory = Callable[[str, tuple[int, int], int, Stride], Cell]


def check_stem_width(stem_width) -> int:
    """C, the width of level 0: a positive multiple of 4, as the 4 nodes of a cell are C/4 wide."""
    if (not isinstance(stem_width, int) or isinstance(stem_width, bool) or stem_width < NUM_NODES
            or stem_width % NUM_NODES):
        raise ValueError(f"stem_width must be a positive multiple of {NUM_NODES} (the {NUM_NODES} nodes of a cell "
                         f"are C/{NUM_NODES} wide), got {stem_width!r}")
    return stem_width


def check_strides(strides: Sequence[Sequence[int]]) -> list[Stride]:
    """nnU-Net-style strides `[[1,1,1], s1, s2, s3]`: the stem's, then one per reduction cell."""
    if not isinstance(strides, Sequence) or len(strides) != NUM_LEVELS:
        raise ValueError(f"strides must have {NUM_LEVELS} entries, [[1, 1, 1], s1, s2, s3] (the stem's, then one per "
                         f"reduction cell), got {strides!r}")
    checked = []
    for level, stride in enumerate(strides):
        if (not isinstance(stride, Sequence) or len(stride) != 3
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in stride)):
            raise ValueError(f"strides[{level}] must be 3 positive integers, got {stride!r}")
        checked.append(tuple(stride))
    if checked[0] != (1, 1, 1):
        raise ValueError(f"strides[0] is the stem's and must be [1, 1, 1], got {list(strides[0])}")
    return checked


def live_cells(reads: Mapping[str, Collection[int]]) -> list[bool]:
    """Which of the 12 cells (encoder then decoder order) feed the network's outputs.

    Args:
        reads: cell type -> the inputs its cells read (0: two cells back, 1: the previous cell).

    A cell is live when a live cell reads it, when it is a skip source of a live decoder cell, or when a
    head reads it (the decoder-normal cells of levels 0, 1, 2: deep supervision counts, so the network's
    structure, and its state dict, do not change when nnU-Net switches deep supervision off to predict).
    """
    cell_types = ENCODER_CELLS + DECODER_CELLS
    # states: 0 = stem, k = output of cell k (1..12); cell k reads states k-2 and k-1 (the first reads the stem twice)
    live_states = {k + 1 for k, cell_type in enumerate(cell_types) if cell_type == "decoder_normal"}
    for k in range(len(cell_types), 0, -1):
        if k not in live_states:
            continue
        sources = (max(k - 2, 0), k - 1)
        live_states.update(sources[i] for i in reads[cell_types[k - 1]])
        if k > len(ENCODER_CELLS):  # a decoder state is the cell's output plus its level's skip
            live_states.add(SKIP_STATES[DECODER_LEVELS[k - 1 - len(ENCODER_CELLS)]])
    return [k in live_states for k in range(1, len(cell_types) + 1)]


class UnreadCell(nn.Module):
    """Stands in for a derived cell whose output nothing reads (see `live_cells`): nothing to compute."""

    def __init__(self, cell_type: str):
        super().__init__()
        self.cell_type = cell_type

    def forward(self, s0, s1, weights=None, lean: bool = False) -> None:
        return None


MEMORY_MODES = ("plain", "lean", "cells")


def check_memory_mode(mode) -> str:
    if mode not in MEMORY_MODES:
        raise ValueError(f"memory mode must be one of {', '.join(MEMORY_MODES)}, got {mode!r}")
    return mode


def run_cell(cell: nn.Module, s0, s1, weights: EdgeWeights | None, mode: str):
    """`cell(s0, s1, weights)` in memory mode `mode` (see the module docstring)."""
    if mode == "cells" and isinstance(cell, Cell):  # an UnreadCell computes nothing and returns None
        return checkpoint(cell, s0, s1, weights, use_reentrant=False)
    return cell(s0, s1, weights, lean=mode == "lean")


def run_lean(module: nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """A block outside the cells (stem, head): lean in the "lean" and "cells" modes."""
    return module(x) if mode == "plain" else recompute_cheap(module, x)


class Stem(nn.Sequential):
    """The fixed first block at full resolution: (3x3x3 conv -> InstanceNorm) twice, LeakyReLU between."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__(
            nn.Conv3d(in_channels, channels, 3, padding=1, bias=False), instance_norm(channels), activation(),
            nn.Conv3d(channels, channels, 3, padding=1, bias=False), instance_norm(channels),
        )


class Head(nn.Sequential):
    """The out cell: LeakyReLU -> 1x1x1 conv to class logits."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__(activation(), PointwiseConv(channels, num_classes, bias=True))


class Encoder(nn.Module):
    """Stem + R E R E R I. Returns the last two states and the skip features of levels 0, 1, 2."""

    def __init__(self, input_channels: int, widths: list[int], strides: list[Stride], make_cell: CellFactory,
                 live: Sequence[bool]):
        super().__init__()
        self.stem = Stem(input_channels, widths[0])
        cells, in_channels = [], (widths[0], widths[0])
        for k, cell_type in enumerate(ENCODER_CELLS):
            level = k // 2 + 1
            cells.append(make_cell(cell_type, in_channels, widths[level], strides[level]) if live[k]
                         else UnreadCell(cell_type))
            in_channels = (in_channels[1], widths[level])
        self.cells = nn.ModuleList(cells)

    def forward(self, x, weights: Mapping[str, EdgeWeights] | None, mode: str = "plain"):
        s0 = s1 = run_lean(self.stem, x, mode)
        skips = [s1]
        for state, cell in enumerate(self.cells, start=1):
            s0, s1 = s1, run_cell(cell, s0, s1, None if weights is None else weights[cell.cell_type], mode)
            if state in SKIP_STATES:
                skips.append(s1)
        return s0, s1, skips


class Decoder(nn.Module):
    """X D X D X D + out cells. `deep_supervision` may be switched at any time (nnU-Net does)."""

    def __init__(self, widths: list[int], strides: list[Stride], num_classes: int, make_cell: CellFactory,
                 deep_supervision: bool, live: Sequence[bool]):
        super().__init__()
        self.deep_supervision = deep_supervision
        cells, in_channels = [], (widths[-1], widths[-1])
        for k, (cell_type, level) in enumerate(zip(DECODER_CELLS, DECODER_LEVELS)):
            cells.append(make_cell(cell_type, in_channels, widths[level], strides[level + 1]) if live[k]
                         else UnreadCell(cell_type))
            in_channels = (in_channels[1], widths[level])
        self.cells = nn.ModuleList(cells)
        # heads[l] reads the decoder-normal state of level l
        self.heads = nn.ModuleList(Head(widths[level], num_classes) for level in range(NUM_LEVELS - 1))

    def forward(self, s0, s1, skips: list[torch.Tensor], weights: Mapping[str, EdgeWeights] | None,
                mode: str = "plain"):
        outputs = {}
        for cell, level in zip(self.cells, DECODER_LEVELS):
            out = run_cell(cell, s0, s1, None if weights is None else weights[cell.cell_type], mode)
            s0, s1 = s1, None if out is None else out + skips[level]
            if cell.cell_type == "decoder_normal" and (self.deep_supervision or level == 0):
                outputs[level] = run_lean(self.heads[level], s1, mode)
        if not self.deep_supervision:
            return outputs[0]
        return [outputs[level] for level in range(NUM_LEVELS - 1)]


class UNetMacro(nn.Module):
    """Encoder + decoder built from a cell factory; the supernet and the derived network differ only there.

    Args:
        input_channels: image channels.
        num_classes: output channels (nnU-Net's segmentation heads).
        stem_width: C, the width of level 0, a multiple of 4; level l has C * 2**l channels (cells of width W
            have 4 nodes of W/4 channels, their output is the nodes' concat).
        strides: `[[1,1,1], s1, s2, s3]` as in an nnU-Net plan (3 entries per stride, may be anisotropic).
        deep_supervision: return the 3 highest-resolution outputs (list) instead of one tensor.
        make_cell: builds each of the 12 cells.
        live: which of the 12 cells to build (`live_cells`); the others are `UnreadCell`s. Default: all.

    Shapes: input `[N, input_channels, X, Y, Z]` with X, Y, Z divisible by the product of the strides
    along that axis; output `[N, num_classes, X, Y, Z]`, or with deep supervision the list of that,
    `/s1` and `/(s1*s2)`.

    Attribute `memory_mode` (default "plain"): "plain", "lean" or "cells", what the backward pass keeps and what
    it recomputes (see the module docstring); only while training with grad enabled. `checkpoint_cells` (True
    for "cells") is its older boolean form.
    """

    def __init__(self, input_channels: int, num_classes: int, stem_width: int, strides, deep_supervision: bool,
                 make_cell: CellFactory, live: Sequence[bool] | None = None):
        super().__init__()
        self.strides = check_strides(strides)
        check_stem_width(stem_width)
        widths = [stem_width * 2 ** level for level in range(NUM_LEVELS)]
        live = [True] * len(ENCODER_CELLS + DECODER_CELLS) if live is None else list(live)
        self.encoder = Encoder(input_channels, widths, self.strides, make_cell, live[:len(ENCODER_CELLS)])
        self.decoder = Decoder(widths, self.strides, num_classes, make_cell, deep_supervision,
                               live[len(ENCODER_CELLS):])
        self.memory_mode = "plain"

    @property
    def memory_mode(self) -> str:
        return self._memory_mode

    @memory_mode.setter
    def memory_mode(self, mode: str) -> None:
        self._memory_mode = check_memory_mode(mode)

    @property
    def checkpoint_cells(self) -> bool:
        return self.memory_mode == "cells"

    @checkpoint_cells.setter
    def checkpoint_cells(self, checkpointed: bool) -> None:
        self.memory_mode = "cells" if checkpointed else "plain"

    def _forward(self, x: torch.Tensor, weights: Mapping[str, EdgeWeights] | None):
        total = [1, 1, 1]
        for stride in self.strides:
            total = [t * s for t, s in zip(total, stride)]
        if x.dim() != 5 or any(n % t for n, t in zip(x.shape[2:], total)):
            raise ValueError(f"input must be [N, C, X, Y, Z] with X, Y, Z divisible by the total stride "
                             f"{tuple(total)}, got shape {tuple(x.shape)}")
        mode = self.memory_mode if self.training and torch.is_grad_enabled() else "plain"
        return self.decoder(*self.encoder(x, weights, mode), weights, mode)
