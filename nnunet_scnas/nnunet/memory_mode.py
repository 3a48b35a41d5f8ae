"""The memory mode "auto" of an exported configuration, decided where nnU-Net builds the network.

`export-plans` records, beside `"memory_mode": "auto"`, each mode's estimated training memory at the plan's batch
(`memory_estimates`, bytes). When nnU-Net builds the network (`nnUNetv2_train`, `nnUNetv2_predict`, and this
package's own estimates), the adapter turns "auto" into a mode: on a CUDA device, the fastest mode (plain, then
lean, then cells) whose estimate fits the memory the device has free, with the margin the search uses; without
CUDA, plain (the CPU has the memory, and time is what it lacks). A prediction never recomputes anything, whatever
the mode. Each DDP rank decides from its own device, for the global batch: a conservative choice.
"""
import torch

from nnunet_scnas.macro import MEMORY_MODES
from nnunet_scnas.memory import GiB

AUTO = "auto"
# what a fit may use of the GPU memory that is free (the search's decision and "auto" alike): the estimate tracks
# what torch allocates (about 2 % over a measured peak), while the caching allocator reserves more than it hands out
USABLE_FRACTION = 0.9


def choose_memory_mode(estimates: dict[str, int], available: int) -> tuple[str, str]:
    """(mode, a line saying why): the fastest of `MEMORY_MODES` whose estimate fits `USABLE_FRACTION` of
    `available` bytes, or "cells" with a warning when none does."""
    usable = USABLE_FRACTION * available
    figures = ", ".join(f"{mode} {estimates[mode] / GiB:.1f}" for mode in MEMORY_MODES)
    for mode in MEMORY_MODES:
        if estimates[mode] <= usable:
            return mode, (f"memory mode auto: {mode} (estimated GiB: {figures}; {available / GiB:.1f} GiB free on "
                          f"the GPU)")
    return "cells", (f"memory mode auto: cells, and it may not fit (estimated GiB: {figures}; {available / GiB:.1f} "
                     f"GiB free on the GPU): train with a smaller batch_size in the plans, or on a larger GPU")


def resolve_memory_mode(arch_kwargs: dict, announce=print) -> dict:
    """The derived network's constructor arguments with a concrete `memory_mode` and no `memory_estimates`.

    "auto" needs the estimates `export-plans` records; `announce` receives the line of an "auto" decision on CUDA.
    """
    kwargs = dict(arch_kwargs)
    estimates = kwargs.pop("memory_estimates", None)
    if kwargs.get("memory_mode") != AUTO:
        return kwargs
    if not isinstance(estimates, dict) or set(estimates) != set(MEMORY_MODES):
        raise ValueError(f"memory_mode 'auto' needs memory_estimates for {', '.join(MEMORY_MODES)} (export-plans "
                         f"writes them)")
    if not torch.cuda.is_available():
        kwargs["memory_mode"] = "plain"
        return kwargs
    free, _ = torch.cuda.mem_get_info()
    kwargs["memory_mode"], line = choose_memory_mode(estimates, free)
    announce(line)
    return kwargs
