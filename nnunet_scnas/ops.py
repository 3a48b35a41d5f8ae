"""The 8 candidate operations of an edge (paper §3, "Implementation Details"), as one registry.

Every op maps `[N, C, X, Y, Z]` to `[N, C, X/sx, Y/sy, Z/sz]` for a stride `(sx, sy, sz)`: channels are kept,
stride 1 keeps the shape, stride s gives exactly size/s along every axis (nnU-Net patch sizes are divisible
by the product of the strides; an axis whose strides are all 1 may have any size, odd ones included).
Conv ops are LeakyReLU -> Conv -> InstanceNorm, as in the paper, with the LeakyReLU taken out of the op: an op
marked `PreActivated` (the conv ops and the strided identity) expects LeakyReLU(state), not the state, and a cell
computes that activation once per state and shares it between all the ops that read it (one activated copy per
state in memory instead of one per op; the math is the same). The other ops (identity, pools, zero) read the state
as it is. Applied on its own, an op is `op(activation()(x)) if reads_activation(op) else op(x)`.

`OPS` is the registry's key order, which is also the column order of the architecture logits. Op names are
saved in genotypes: never rename or reorder them.
"""
from typing import Callable

import torch
from torch import nn

Stride = tuple[int, int, int]

NEGATIVE_SLOPE = 0.01  # nnU-Net's LeakyReLU slope


def as_stride(stride) -> Stride:
    stride = tuple(int(s) for s in stride)
    if len(stride) != 3 or min(stride) < 1:
        raise ValueError(f"stride must be 3 positive integers, got {stride}")
    return stride


def activation() -> nn.Module:
    # never inplace: an edge's input is shared by the other ops and edges that read the same state
    return nn.LeakyReLU(NEGATIVE_SLOPE)


def is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 5 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d)


class InstanceNorm(nn.InstanceNorm3d):
    """nn.InstanceNorm3d (same parameters and state dict) that returns a channels-last input channels-last.

    torch's instance norm returns a contiguous tensor for a channels-last input, and on the CPU, where networks
    train channels-last (`channels_last_on_cpu`), every op after it would then run in the slow layout or convert
    back. The norm itself is fastest in the default layout (5x faster than group norm on channels-last input):
    it runs there, and its output is converted back once.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_channels_last(x):
            return super().forward(x.contiguous()).contiguous(memory_format=torch.channels_last_3d)
        return super().forward(x)


def instance_norm(channels: int) -> nn.Module:
    return InstanceNorm(channels, eps=1e-5, affine=True)


class PointwiseConv(nn.Conv3d):
    """A 1x1x1 conv (an nn.Conv3d: same parameters and state dict) that keeps a channels-last input channels-last.

    On the CPU torch runs a 1x1x1 conv of a channels-last input through its slow fallback and returns a
    contiguous tensor. Channels-last, the conv is a matrix product over the last (channel) axis: one GEMM,
    and its output is channels-last without a copy.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_channels_last(x):
            return super().forward(x)
        weight = self.weight.reshape(self.out_channels, self.in_channels)
        return nn.functional.linear(x.permute(0, 2, 3, 4, 1), weight, self.bias).permute(0, 4, 1, 2, 3)


class PreActivated:
    """Marker of an op that reads LeakyReLU(state): the caller applies the activation (see the module docstring)."""


def reads_activation(op: nn.Module) -> bool:
    """Whether `op` expects LeakyReLU(x) rather than x."""
    return isinstance(op, PreActivated)


class Zero(nn.Module):
    """No connection: zeros of the (strided) output shape. A cell never calls it, it skips the edge instead."""

    def __init__(self, stride: Stride):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = [-(-n // s) for n, s in zip(x.shape[2:], self.stride)]
        return x.new_zeros(*x.shape[:2], *spatial)


class Pooling(nn.Module):
    """An op that averages over a window with a constant kernel, written as a depthwise conv for speed.

    FLOPs counts leave these convs out (`flops.count_flops`), as they leave out torch's own pooling: they are
    not learned arithmetic of the architecture, and counting them would move every FLOPs-matched width.
    """

    def __init__(self, stride: Stride):
        super().__init__()
        self.stride = stride


def _window_sum(x: torch.Tensor, kernel_size, stride: Stride, padding: int) -> torch.Tensor:
    """Per-channel sums over windows of `kernel_size`, zero padding: a depthwise conv with a kernel of ones."""
    ones = x.new_ones(x.shape[1], 1, *kernel_size)
    return nn.functional.conv3d(x, ones, stride=stride, padding=padding, groups=x.shape[1])


class AvgPool(Pooling):
    """3x3x3 average over the neighbours inside the volume (padding not counted), any stride.

    Window sums divided by the number of neighbours inside (the same sums over a volume of ones): torch's CPU
    avg_pool3d refuses inputs smaller than the kernel even when padded (a bottleneck only 2 voxels deep along
    an axis is common), and on the CPU its backward is 4x slower than the conv's and it drops the channels-last
    layout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inside = _window_sum(x.new_ones(1, 1, *x.shape[2:]), (3, 3, 3), self.stride, padding=1)
        return _window_sum(x, (3, 3, 3), self.stride, padding=1) / inside


class BlockMean(Pooling):
    """The mean of each non-overlapping block of `stride` voxels (average pooling with kernel = stride).

    On the CPU torch's avg_pool3d returns a channels-last input contiguous, and every op after it would pay for
    the conversion; the conv keeps the layout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _window_sum(x, self.stride, self.stride, padding=0) / (self.stride[0] * self.stride[1] * self.stride[2])


class ConvNorm(nn.Sequential, PreActivated):
    """(LeakyReLU, applied by the caller ->) 3x3x3 conv -> InstanceNorm."""

    def __init__(self, channels: int, stride: Stride):
        super().__init__(
            nn.Conv3d(channels, channels, 3, stride=stride, padding=1, bias=False),
            instance_norm(channels),
        )


class DilatedSeparableConvNorm(nn.Sequential, PreActivated):
    """(LeakyReLU, applied by the caller ->) depthwise dilated 3x3x3 conv -> pointwise 1x1x1 conv -> InstanceNorm."""

    def __init__(self, channels: int, stride: Stride, dilation: int):
        super().__init__(
            # padding = dilation keeps the shape: the dilated kernel spans 2 * dilation + 1 voxels
            nn.Conv3d(channels, channels, 3, stride=stride, padding=dilation, dilation=dilation,
                      groups=channels, bias=False),
            PointwiseConv(channels, channels),
            instance_norm(channels),
        )


class Downsample(nn.Sequential, PreActivated):
    """(LeakyReLU, applied by the caller ->) average pooling with kernel = stride -> 1x1x1 conv -> InstanceNorm.

    The strided `identity` (and, behind its own LeakyReLU, a cell's resampling of its older input). A plain
    strided 1x1x1 conv would drop all voxels but one per stride block and DARTS' two-offset factorized reduction
    assumes stride 2 on every axis; pooling with kernel = stride reads every voxel and works for anisotropic
    strides like (1, 2, 2).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: Stride):
        super().__init__(
            BlockMean(stride),
            PointwiseConv(in_channels, out_channels),
            instance_norm(out_channels),
        )


def _identity(channels: int, stride: Stride) -> nn.Module:
    return nn.Identity() if stride == (1, 1, 1) else Downsample(channels, channels, stride)


def _dil_sep_conv(dilation: int) -> Callable[[int, Stride], nn.Module]:
    return lambda channels, stride: DilatedSeparableConvNorm(channels, stride, dilation)


# name -> factory(channels, stride). The key order is the column order of the architecture logits.
_REGISTRY: dict[str, Callable[[int, Stride], nn.Module]] = {
    "zero": lambda channels, stride: Zero(stride),
    "identity": _identity,
    "max_pool_3x3x3": lambda channels, stride: nn.MaxPool3d(3, stride=stride, padding=1),
    "avg_pool_3x3x3": lambda channels, stride: AvgPool(stride),
    "conv_3x3x3": ConvNorm,
    "dil_sep_conv_3x3x3_r2": _dil_sep_conv(2),
    "dil_sep_conv_3x3x3_r3": _dil_sep_conv(3),
    "dil_sep_conv_3x3x3_r4": _dil_sep_conv(4),
}

OPS: tuple[str, ...] = tuple(_REGISTRY)


def build_op(name: str, channels: int, stride=(1, 1, 1)) -> nn.Module:
    """Build the candidate op `name` for `channels` channels and a 3-tuple `stride` (may be anisotropic).

    Feed it LeakyReLU(x) if `reads_activation(op)`, else x (see the module docstring).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown op {name!r}; valid ops: {', '.join(OPS)}")
    return _REGISTRY[name](channels, as_stride(stride))
