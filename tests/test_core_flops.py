"""FLOPs counting and stem-width matching."""
import pytest
import torch

from nnunet_scnas import CELL_LAYOUT, SCNASUNet, count_flops, count_parameters, match_width
from nnunet_scnas.flops import derived_flops

from helpers import random_genotype

STRIDES = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
PLAN = dict(input_channels=1, num_classes=2, patch_size=(16, 16, 16), strides=STRIDES)


def test_flops_of_a_single_conv_are_exact():
    conv = torch.nn.Conv3d(2, 3, 3, padding=1, bias=False)
    assert count_flops(conv, (2, 4, 4, 4)) == 2 * (4 * 4 * 4) * 3 * 2 * 27  # 2 per multiply-add
    assert count_parameters(conv) == 3 * 2 * 27


def test_meta_device_counts_the_same_as_a_real_model():
    real = SCNASUNet(input_channels=1, num_classes=2, deep_supervision=False, genotype=random_genotype(0).to_dict(),
                     stem_width=4, strides=STRIDES, cell_layout=CELL_LAYOUT)
    real.train()
    flops = count_flops(real, (1, 16, 16, 16))
    assert real.training  # the mode is restored
    assert flops > 0 and flops == derived_flops(random_genotype(0), 4, **PLAN)


def test_flops_grow_about_quadratically_with_width():
    flops = [derived_flops(random_genotype(0), width, **PLAN) for width in (4, 8, 16)]
    assert 2.0 < flops[1] / flops[0] < 4.0 and 3.0 < flops[2] / flops[1] < 4.0


@pytest.mark.parametrize("width, as_dict", [(4, False), (8, True), (24, False), (68, True)])
def test_match_width_finds_the_width_of_a_target(width, as_dict):
    genotype = random_genotype(0).to_dict() if as_dict else random_genotype(0)
    target = int(derived_flops(random_genotype(0), width, **PLAN) * 1.01)
    assert match_width(genotype, target, **PLAN) == width


def test_match_width_walks_the_multiples_of_4():
    # a target between two multiples of 4 gives the closer one, never the width in between
    below, above = (derived_flops(random_genotype(0), width, **PLAN) for width in (20, 24))
    assert match_width(random_genotype(0), int(0.7 * below + 0.3 * above), tolerance=0.2, **PLAN) == 20
    assert match_width(random_genotype(0), int(0.3 * below + 0.7 * above), tolerance=0.2, **PLAN) == 24


def test_match_width_says_the_closest_when_out_of_tolerance():
    smallest = derived_flops(random_genotype(0), 4, **PLAN)
    with pytest.raises(ValueError, match=r"the closest is width 4 "):
        match_width(random_genotype(0), smallest // 2, **PLAN)
