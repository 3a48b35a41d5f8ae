"""FLOPs counting and stem-width matching."""
import pytest
import torch

from nnunet_scnas import CELL_TYPES, EDGES, OPS, SCNASUNet, count_flops, count_parameters, derive_genotype, match_width
from nnunet_scnas.flops import derived_flops

STRIDES = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
PLAN = dict(input_channels=1, num_classes=2, patch_size=(16, 16, 16), strides=STRIDES)


def _genotype():
    g = torch.Generator().manual_seed(0)
    return derive_genotype({ct: torch.randn(len(EDGES), len(OPS), generator=g) for ct in CELL_TYPES})


def test_flops_of_a_single_conv_are_exact():
    conv = torch.nn.Conv3d(2, 3, 3, padding=1, bias=False)
    assert count_flops(conv, (2, 4, 4, 4)) == 2 * (4 * 4 * 4) * 3 * 2 * 27  # 2 per multiply-add
    assert count_parameters(conv) == 3 * 2 * 27


def test_meta_device_counts_the_same_as_a_real_model():
    real = SCNASUNet(input_channels=1, num_classes=2, deep_supervision=False, genotype=_genotype().to_dict(),
                     stem_width=4, strides=STRIDES)
    real.train()
    flops = count_flops(real, (1, 16, 16, 16))
    assert real.training  # the mode is restored
    assert flops > 0 and flops == derived_flops(_genotype(), 4, **PLAN)


def test_flops_grow_about_quadratically_with_width():
    flops = [derived_flops(_genotype(), width, **PLAN) for width in (4, 8, 16)]
    assert 2.0 < flops[1] / flops[0] < 4.0 and 3.0 < flops[2] / flops[1] < 4.0


@pytest.mark.parametrize("width, as_dict", [(5, False), (23, True)])
def test_match_width_finds_the_width_of_a_target(width, as_dict):
    genotype = _genotype().to_dict() if as_dict else _genotype()
    target = int(derived_flops(_genotype(), width, **PLAN) * 1.01)
    assert match_width(genotype, target, **PLAN) == width


def test_match_width_says_the_closest_when_out_of_tolerance():
    smallest = derived_flops(_genotype(), 1, **PLAN)
    with pytest.raises(ValueError, match=r"the closest is width 1"):
        match_width(_genotype(), smallest // 2, **PLAN)
