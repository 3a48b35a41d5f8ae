"""The derived network: the searched cells with their chosen ops only, retrained from scratch (paper §3)."""
import torch
from torch import nn

from .cell import CELL_LAYOUT, Cell
from .genotype import CELL_TYPES, Genotype
from .macro import UNetMacro, live_cells


class SCNASUNet(UNetMacro):
    """A U-Net of SCNAS cells built from a genotype; usable as an nnU-Net plans architecture.

    nnU-Net builds it as `SCNASUNet(input_channels=..., num_classes=..., deep_supervision=..., **arch_kwargs)`,
    so every other argument is JSON data. Cells of width W have 4 nodes of W/4 channels and output their concat
    (see `cell.py`). Edges whose op is `zero` are not built, nor are cells whose output nothing reads (possible
    when a cell type ignores one of its inputs; see `macro.live_cells`).

    Args:
        input_channels: image channels (the stem adapts, so a genotype transfers across datasets).
        num_classes: output channels (nnU-Net's number of segmentation heads).
        deep_supervision: list of 3 outputs (full, /s1, /(s1*s2)), highest resolution first, instead of one
            tensor; `decoder.deep_supervision` switches it later.
        genotype: the JSON form of a `Genotype` (`Genotype.to_dict()`), validated here.
        stem_width: C, a multiple of 4; level l has C * 2**l channels (paper: 68 for the retrained network).
        strides: `[[1,1,1], s1, s2, s3]`, as in the nnU-Net plan (see `macro.py` for the cell sequence).
        cell_layout: must be `CELL_LAYOUT`; exported configurations record it, so that one written for the old
            cell layout (absent: None), whose parameters differ, is refused with a clear message.
        memory_mode: "plain" (default: configurations exported before the modes train as they did), "lean" or
            "cells": what training keeps for the backward pass and what it recomputes (`macro.py`); the function
            and the parameters are the same in every mode. `export-plans --memory` records it; the attribute
            `memory_mode` changes it later.

    Shapes: input `[N, input_channels, X, Y, Z]`, output `[N, num_classes, X, Y, Z]` (or the list).
    """

    def __init__(self, input_channels: int, num_classes: int, deep_supervision: bool, genotype: dict,
                 stem_width: int, strides: list, cell_layout: str | None = None, memory_mode: str = "plain"):
        if cell_layout is None:
            raise ValueError("this configuration was exported for the old cell layout (nodes as wide as the cell, "
                             "projected concat); re-export it with `nnunet-scnas export-plans` (the genotype stays "
                             "valid)")
        if cell_layout != CELL_LAYOUT:
            raise ValueError(f"unknown cell_layout {cell_layout!r}; this version of nnunet-scnas builds "
                             f"{CELL_LAYOUT!r}")
        parsed = Genotype.from_dict(genotype)
        super().__init__(input_channels, num_classes, stem_width, strides, deep_supervision,
                         make_cell=lambda cell_type, in_channels, channels, stride:
                         Cell(cell_type, {edge: (op,) for edge, op in parsed.ops(cell_type).items()},
                              in_channels, channels, stride),
                         live=live_cells({cell_type: parsed.inputs_read(cell_type) for cell_type in CELL_TYPES}))
        self.genotype = parsed
        self.memory_mode = memory_mode

    def forward(self, x: torch.Tensor):
        return self._forward(x, None)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """He initialisation of convs for LeakyReLU(0.01), the one nnU-Net gives its own networks.

        nnU-Net applies `network.initialize` when it builds a plans architecture (`get_network_from_plans`),
        so the retrained network starts like the stock one it is compared with.
        """
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(module.weight, a=1e-2)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
