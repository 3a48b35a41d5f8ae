"""The op registry: names, order, errors and the shape contract for every op and stride."""
import pytest
import torch

from nnunet_scnas import OPS, build_op
from nnunet_scnas.ops import reads_activation

PAPER_OPS = ("zero", "identity", "max_pool_3x3x3", "avg_pool_3x3x3", "conv_3x3x3",
             "dil_sep_conv_3x3x3_r2", "dil_sep_conv_3x3x3_r3", "dil_sep_conv_3x3x3_r4")


def test_op_names_and_order_are_frozen():
    # the order is the column order of saved logits; the names are saved in genotypes
    assert OPS == PAPER_OPS


def test_unknown_op_lists_valid_names():
    with pytest.raises(ValueError, match="unknown op 'conv_5x5x5'.*conv_3x3x3.*dil_sep_conv_3x3x3_r4"):
        build_op("conv_5x5x5", 4, (1, 1, 1))


@pytest.mark.parametrize("stride", [(0, 1, 1), (1, 2), (1, 1, 1, 1)])
def test_bad_stride_is_rejected(stride):
    with pytest.raises(ValueError, match="stride"):
        build_op("conv_3x3x3", 4, stride)


# (input shape, stride): isotropic, anisotropic, odd sizes along stride-1 axes, a 2-voxel bottleneck
SHAPE_CASES = [
    ((2, 4, 8, 8, 8), (1, 1, 1)),
    ((2, 4, 8, 8, 8), (2, 2, 2)),
    ((1, 3, 5, 8, 6), (1, 1, 1)),
    ((1, 3, 5, 8, 6), (1, 2, 2)),
    ((1, 3, 2, 2, 2), (1, 1, 1)),
    ((1, 3, 4, 2, 2), (2, 1, 1)),
]


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("shape, stride", SHAPE_CASES)
def test_op_keeps_channels_and_divides_size_by_stride(name, shape, stride):
    op = build_op(name, shape[1], stride)
    y = op(torch.randn(*shape))
    assert tuple(y.shape) == (*shape[:2], *(n // s for n, s in zip(shape[2:], stride)))


@pytest.mark.parametrize("stride", [(1, 1, 1), (1, 2, 2)])
def test_zero_is_zero_and_identity_is_identity(stride):
    x = torch.randn(1, 2, 4, 4, 4)
    assert torch.count_nonzero(build_op("zero", 2, stride)(x)) == 0
    if stride == (1, 1, 1):
        assert torch.equal(build_op("identity", 2, stride)(x), x)
    else:  # strided identity is a learned reduction (pool + 1x1x1 conv + norm), not a no-op
        assert sum(p.numel() for p in build_op("identity", 2, stride).parameters()) > 0


def test_avg_pool_ignores_padding():
    # a constant volume stays constant up to the border: only voxels inside the volume are averaged
    y = build_op("avg_pool_3x3x3", 1, (1, 1, 1))(torch.full((1, 1, 3, 2, 5), 7.0))
    assert torch.allclose(y, torch.full_like(y, 7.0))


@pytest.mark.parametrize("name, parametric", [
    ("zero", False), ("identity", False), ("max_pool_3x3x3", False), ("avg_pool_3x3x3", False),
    ("conv_3x3x3", True), ("dil_sep_conv_3x3x3_r2", True), ("dil_sep_conv_3x3x3_r3", True),
    ("dil_sep_conv_3x3x3_r4", True)])
def test_which_ops_have_parameters(name, parametric):
    assert (sum(p.numel() for p in build_op(name, 4, (1, 1, 1)).parameters()) > 0) == parametric


@pytest.mark.parametrize("name, stride, activated", [
    ("conv_3x3x3", (1, 1, 1), True), ("dil_sep_conv_3x3x3_r2", (1, 2, 2), True),
    ("dil_sep_conv_3x3x3_r4", (1, 1, 1), True),
    ("identity", (1, 1, 1), False), ("identity", (2, 2, 2), True),  # the strided identity is LeakyReLU -> pool -> conv
    ("max_pool_3x3x3", (2, 2, 2), False), ("avg_pool_3x3x3", (1, 1, 1), False), ("zero", (1, 1, 1), False)])
def test_which_ops_read_the_shared_activation(name, stride, activated):
    # the paper's LeakyReLU -> conv -> norm: the LeakyReLU is applied once per state by the cell, not by the op
    op = build_op(name, 4, stride)
    assert reads_activation(op) == activated
    assert not any(isinstance(m, torch.nn.LeakyReLU) for m in op.modules())
