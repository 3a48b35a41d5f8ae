"""FLOPs and parameter counts, and the stem width that matches a budget (FLOPs as in the paper §3: 48 -> 68
channels; or another measure that grows with the width, e.g. training memory).

FLOPs are counted by torch's `FlopCounterMode` (convolutions and matmuls, a multiply-add counted as 2),
not by hand; like torch's pooling, the constant-kernel convs of our pooling ops (`ops.Pooling`) are left out.
A model built on the "meta" device is counted without computing anything, which keeps width matching at real
patch sizes instant on a CPU.
"""
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .cell import CELL_LAYOUT
from .derived import SCNASUNet
from .genotype import NUM_NODES, Genotype
from .ops import Pooling


def count_flops(model: nn.Module, input_shape) -> int:
    """FLOPs of one forward pass of `model` (eval mode, no grad) on a batch of 1.

    Args:
        model: any module; on the "meta" device nothing is computed.
        input_shape: `(channels, *spatial)` of one input, without the batch dimension.
    """
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    x = torch.zeros(1, *input_shape, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    per_module = counter.get_flop_counts()  # keyed "<root class>" and "<root class>.<module path>"
    root = type(model).__name__
    pooling = sum(sum(per_module.get(f"{root}.{name}" if name else root, {}).values())
                  for name, module in model.named_modules() if isinstance(module, Pooling))
    return int(counter.get_total_flops()) - pooling


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def derived_flops(genotype: Genotype | dict, stem_width: int, *, input_channels: int, num_classes: int,
                  patch_size, strides) -> int:
    """FLOPs of the derived network `SCNASUNet` at `patch_size` (built on the meta device)."""
    genotype = genotype.to_dict() if isinstance(genotype, Genotype) else genotype
    with torch.device("meta"):
        model = SCNASUNet(input_channels=input_channels, num_classes=num_classes, deep_supervision=False,
                          genotype=genotype, stem_width=stem_width, strides=[list(s) for s in strides],
                          cell_layout=CELL_LAYOUT)
    return count_flops(model, (input_channels, *patch_size))


def match_width(genotype: Genotype | dict, target_flops: int, *, input_channels: int, num_classes: int, patch_size,
                strides, tolerance: float = 0.05) -> int:
    """The stem width (a multiple of 4) whose derived network's FLOPs at `patch_size` are closest to `target_flops`.

    Every conv costs c_in * c_out (or c, depthwise) per voxel and all widths are multiples of the stem width C,
    so FLOPs = a * C**2 + b * C (see `closest_width`). Neighbouring widths differ by about 8/C in FLOPs, so the
    closest may be ~4/C off. Raises ValueError if the closest is further than `tolerance` (relative) from the
    target, naming it.
    """
    return closest_width(lambda width: derived_flops(genotype, width, input_channels=input_channels,
                                                     num_classes=num_classes, patch_size=patch_size, strides=strides),
                         target_flops, tolerance, "FLOPs")


def closest_width(measure: Callable[[int], float], target: float, tolerance: float, what: str) -> int:
    """The stem width (a multiple of 4: the 4 nodes of a cell are C/4 wide) whose `measure` is closest to `target`.

    `measure(C)` must grow with C, about as a * C**2 + b * C (FLOPs, parameters, training memory): its values at
    C = 4 and 8 give a first guess, then a walk over the multiples of 4 finds the two widths around the target.
    Raises ValueError naming the closest width if it is further than `tolerance` (relative) from the target.
    """
    if target <= 0:
        raise ValueError(f"the target {what} must be > 0, got {target}")
    cache: dict[int, float] = {}

    def value(width: int) -> float:
        if width not in cache:
            cache[width] = measure(width)
        return cache[width]

    step = NUM_NODES
    # f(s) = a s^2 + b s and f(2s) = 4 a s^2 + 2 b s, at s = step
    a = (value(2 * step) - 2 * value(step)) / (2 * step ** 2)
    b = (value(step) - a * step ** 2) / step
    guess = (-b + math.sqrt(b * b + 4 * a * target)) / (2 * a) if a > 0 else target / max(b, 1e-30)
    width = step * max(1, round(guess / step))
    while value(width) < target:
        width += step
    while width > step and value(width - step) >= target:
        width -= step
    # now value(width - step) < target <= value(width), or width == step
    best = min({max(width - step, step), width}, key=lambda w: abs(value(w) - target))
    error = abs(value(best) - target) / target
    if error > tolerance:
        raise ValueError(f"no stem width gives {what} within {tolerance:.0%} of {target:.4g}: the closest is "
                         f"width {best} with {value(best):.4g} ({error:.1%} off)")
    return best
