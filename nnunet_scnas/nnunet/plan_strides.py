"""Which part of an nnU-Net plan the SCNAS macro-architecture uses, with clear errors when it cannot."""
import numpy as np

from nnunet_scnas.errors import UserError

NUM_DOWNSAMPLINGS = 3  # the paper's U-Net: three reductions, three expansions


def scnas_strides(configuration_manager, configuration_name: str = "") -> list[list[int]]:
    """The stem stride plus the plan's first three downsampling strides, in nnU-Net's `strides` format.

    nnU-Net plans `[[1, 1, 1], s1, s2, ...]` (one entry per resolution stage); SCNAS uses the stem and the
    first three real downsamplings, anisotropic ones included (e.g. `[1, 2, 2]` for thick slices).
    """
    name = configuration_name or "this configuration"
    patch_size = list(configuration_manager.patch_size)
    if len(patch_size) != 3:
        raise UserError(f"SCNAS searches 3D networks, but {name} is {len(patch_size)}D (patch {patch_size}): "
                        f"use a 3D configuration such as 3d_fullres")
    strides = [list(map(int, s)) for s in configuration_manager.pool_op_kernel_sizes]
    downsamplings = [s for s in strides[1:] if any(k > 1 for k in s)]
    if len(downsamplings) < NUM_DOWNSAMPLINGS:
        raise UserError(
            f"SCNAS needs {NUM_DOWNSAMPLINGS} downsamplings, but the plan of {name} has {len(downsamplings)} "
            f"(patch {patch_size}, strides {strides}): use larger images or a larger patch "
            f"(images of at least ~32 voxels along the in-plane axes)")
    return [[1, 1, 1]] + downsamplings[:NUM_DOWNSAMPLINGS]


def deep_supervision_scales(strides: list[list[int]]) -> list[list[float]]:
    """nnU-Net's deep-supervision scales for SCNAS `strides`: 1 / cumprod(strides), the coarsest one dropped.

    The SCNAS networks have 3 resolution stages below the stem whatever the plan's depth, so the trainer's
    scales come from these strides, not from the plan's own.
    """
    return [list(s) for s in 1 / np.cumprod(np.vstack(strides), axis=0)][:-1]
