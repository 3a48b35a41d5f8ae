"""The derived network's faster kernels compute what torch's own modules compute, in float64, values and gradients,
and keep a channels-last tensor channels-last (the layout the CPU trains in)."""
import copy

import pytest
import torch
from torch import nn

from nnunet_scnas import CELL_LAYOUT, SCNASUNet, build_op, count_flops
from nnunet_scnas.ops import AvgPool, BlockMean, InstanceNorm, PointwiseConv, is_channels_last

from helpers import random_genotype

CHANNELS_LAST = torch.channels_last_3d


def _pair(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same values as a contiguous and as a channels-last leaf tensor."""
    return (x.clone().requires_grad_(), x.contiguous(memory_format=CHANNELS_LAST).requires_grad_())


def _assert_same_values_and_gradients(fast, reference, x: torch.Tensor):
    """`fast` on channels-last and contiguous float64 input equals `reference`, values and input gradients; on a
    channels-last float32 input (the CPU's training layout; float64 convs have no channels-last kernels) its
    output is channels-last."""
    torch.manual_seed(0)
    for inp in _pair(x):
        ref_in = inp.detach().clone().requires_grad_()
        out, ref = fast(inp), reference(ref_in)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        upstream = torch.randn_like(ref)
        out.backward(upstream)
        ref.backward(upstream)
        torch.testing.assert_close(inp.grad, ref_in.grad, rtol=1e-12, atol=1e-12)
    assert is_channels_last(copy.deepcopy(fast).float()(x.float().contiguous(memory_format=CHANNELS_LAST))), "the layout must survive"


# (input shape, stride): isotropic, anisotropic, odd sizes, a 2-voxel bottleneck
POOL_CASES = [((2, 3, 6, 8, 4), (1, 1, 1)), ((2, 3, 6, 8, 4), (2, 2, 2)), ((1, 4, 5, 8, 6), (1, 2, 2)),
              ((1, 2, 2, 2, 2), (1, 1, 1)), ((1, 2, 4, 2, 2), (2, 1, 1)), ((1, 2, 7, 5, 3), (1, 1, 1))]


@pytest.mark.parametrize("shape, stride", POOL_CASES)
def test_avg_pool_is_the_mean_over_the_neighbours_inside_the_volume(shape, stride):
    def reference(x):  # torch's pooling of the zero-padded volume, divided by the share of the window inside
        def windowed_mean(t):
            return nn.functional.avg_pool3d(nn.functional.pad(t, (1,) * 6), 3, stride=stride)
        return windowed_mean(x) / windowed_mean(torch.ones_like(x[:1, :1]))

    _assert_same_values_and_gradients(AvgPool(stride), reference, torch.randn(shape, dtype=torch.float64))


@pytest.mark.parametrize("shape, stride", [((2, 3, 6, 8, 4), (2, 2, 2)), ((1, 4, 4, 8, 6), (1, 2, 2)),
                                           ((1, 2, 4, 2, 3), (2, 1, 1))])
def test_block_mean_is_average_pooling_with_kernel_equal_to_stride(shape, stride):
    _assert_same_values_and_gradients(BlockMean(stride), lambda x: nn.functional.avg_pool3d(x, stride, stride),
                                      torch.randn(shape, dtype=torch.float64))


@pytest.mark.parametrize("bias", [False, True])
def test_pointwise_conv_is_a_1x1x1_conv(bias):
    conv = PointwiseConv(5, 7, bias=bias).double()
    reference = nn.Conv3d(5, 7, 1, bias=bias).double()
    reference.load_state_dict(conv.state_dict())  # same parameters, same state-dict keys
    _assert_same_values_and_gradients(conv, reference, torch.randn(2, 5, 4, 6, 3, dtype=torch.float64))
    # and the weight gradients agree too, from a channels-last input
    x = torch.randn(2, 5, 4, 6, 3, dtype=torch.float64)
    conv(x.contiguous(memory_format=CHANNELS_LAST)).square().sum().backward()
    reference(x).square().sum().backward()
    torch.testing.assert_close(conv.weight.grad, reference.weight.grad, rtol=1e-12, atol=1e-12)


def test_instance_norm_is_torchs_instance_norm():
    norm = InstanceNorm(6, eps=1e-5, affine=True).double()
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    reference = nn.InstanceNorm3d(6, eps=1e-5, affine=True).double()
    reference.load_state_dict(norm.state_dict())
    _assert_same_values_and_gradients(norm, reference, 3 + 2 * torch.randn(2, 6, 4, 5, 3, dtype=torch.float64))


def test_derived_network_computes_the_same_in_both_layouts():
    """The whole network, float64: channels-last (the CPU's training layout) equals nnU-Net's default layout,
    outputs and every parameter's gradient."""
    torch.manual_seed(0)
    kwargs = dict(input_channels=2, num_classes=3, deep_supervision=True, genotype=random_genotype(7).to_dict(),
                  stem_width=4, strides=[[1, 1, 1], [2, 2, 2], [1, 2, 2], [2, 2, 2]], cell_layout=CELL_LAYOUT)
    default, channels_last = SCNASUNet(**kwargs).double(), SCNASUNet(**kwargs).double()
    channels_last.load_state_dict(default.state_dict())
    channels_last.to(memory_format=CHANNELS_LAST)
    x = torch.randn(2, 2, 8, 8, 16, dtype=torch.float64)
    outputs = (default(x), channels_last(x.contiguous(memory_format=CHANNELS_LAST)))
    for a, b in zip(*outputs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    for network, out in zip((default, channels_last), outputs):
        sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in out).backward()
    for (name, a), b in zip(default.named_parameters(), channels_last.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-10, msg=name)


@pytest.mark.parametrize("stride", [(1, 1, 1), (2, 2, 2)])
def test_pooling_counts_no_flops_as_torchs_pooling_counts_none(stride):
    # the constant-kernel convs of the pools are no learned arithmetic: FLOPs-matched widths must not move
    assert count_flops(build_op("avg_pool_3x3x3", 4, stride), (4, 8, 8, 8)) == 0
    assert count_flops(nn.AvgPool3d(3, stride, padding=1), (4, 8, 8, 8)) == 0
    # the strided identity (block mean -> 1x1x1 conv -> norm) counts its conv only: 2 * 4 * 4 per output voxel
    assert count_flops(build_op("identity", 4, (2, 2, 2)), (4, 8, 8, 8)) == 2 * 4 * 4 * 4 ** 3
