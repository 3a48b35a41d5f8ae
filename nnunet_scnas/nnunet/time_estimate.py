"""`nnunet-scnas estimate --time`: seconds per iteration at a dataset's plan on the device at hand, and the hours
of the default schedules (the search trainer's epochs x iterations; nnU-Net's 1000 x 250 per retraining fold).

Each network is timed as it would train here (`step_timing.py`): the search with the checkpointing its trainer
would choose on this GPU (channels-last on the CPU, as the trainer), the others as nnUNetTrainer runs them but
uncompiled (nnU-Net compiles on CUDA, which takes minutes and then runs faster). Without a GPU the CPU is timed, and the output says so; a network whose step would not fit the free
RAM is skipped with a line instead of being killed by the system.
"""
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from nnunet_scnas.errors import UserError
from nnunet_scnas.memory import GiB
from nnunet_scnas.nnunet.memory_estimate import (PlanEstimate, PlanSetting, advice, choose_memory_mode,
                                                 derived_network)
from nnunet_scnas.nnunet.plans import plans_network
from nnunet_scnas.nnunet.step_timing import (TIMED, WARMUP, TrainingStep, nnunet_step, search_step,
                                             seconds_per_iteration, timing_device)
from nnunet_scnas.nnunet.training.cpu_layout import channels_last_on_cpu
from nnunet_scnas.supernet import SCNASSupernet

RETRAINING_EPOCHS, RETRAINING_ITERATIONS = 1000, 250  # nnUNetTrainer's default schedule
FOLDS = 5
RAM_FRACTION = 0.8  # of the free RAM a CPU step may use


def _available_ram() -> int:
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def header(device: torch.device) -> str:
    runs = f"{WARMUP} warm-up + {TIMED} timed iterations each, random data, data loading left out"
    if device.type == "cuda":
        return f"time on {torch.cuda.get_device_name(device)} (torch {torch.__version__}; {runs})"
    return (f"time on the CPU: no GPU found, so these are CPU figures ({torch.get_num_threads()} threads, torch "
            f"{torch.__version__}; {runs}); run `nnunet-scnas estimate --time` on the GPU machine for GPU figures")


def _hours(seconds: float, iterations: int) -> str:
    return f"{seconds * iterations / 3600:.1f} h"


def _retraining(seconds: float) -> str:
    fold = RETRAINING_EPOCHS * RETRAINING_ITERATIONS
    return (f"one fold {RETRAINING_EPOCHS} x {RETRAINING_ITERATIONS} = {_hours(seconds, fold)}, {FOLDS} folds "
            f"{_hours(seconds, FOLDS * fold)}")


def time_plan(plan: PlanSetting, estimate: PlanEstimate, device: torch.device | None = None) -> Iterator[str]:
    """Lines for `estimate --time`, each as soon as it is known (a CPU step takes minutes at a real plan): the
    header, then per network its seconds per iteration and schedule hours.

    Args:
        plan: from `resolve_plan`.
        estimate: `estimate_plan`'s memory estimates of the same plan (the search's checkpointing choice; the RAM
            check on the CPU).
        device: default `timing_device()`.
    """
    device = device or timing_device()
    trainer, search = plan.search_trainer, estimate.search
    batch_shape, num_classes, channels = plan.batch_shape, plan.plans.num_classes, plan.batch_shape[1]
    yield header(device)

    # the search, in the memory mode its trainer would choose here
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        try:
            mode, _ = choose_memory_mode(trainer.memory_mode, search, free, advice(batch_shape[0], plan.stem_width))
        except UserError:
            mode = None
    else:
        mode = "plain" if trainer.memory_mode == "auto" else trainer.memory_mode
    name = f"search ({plan.trainer_name}, stem {plan.stem_width}"
    if mode is None:
        yield f"{name}): does not fit this GPU even with checkpointed cells (see the memory rows): not timed"
    else:
        def build_search():
            supernet = SCNASSupernet(channels, num_classes, plan.stem_width, plan.strides)
            supernet.memory_mode = mode
            channels_last_on_cpu(supernet, device)  # as the search trainer does
            return search_step(supernet, batch_shape, num_classes, device, trainer)
        epochs, per_epoch = trainer.search_epochs, trainer.search_iterations_per_epoch
        yield _timed(f"{name}, memory mode {mode})", build_search, search.typical[mode].total, estimate.autocast, device,
                     lambda seconds: f"{epochs} epochs x {per_epoch} = {_hours(seconds, epochs * per_epoch)}")

    plain = [row for row in estimate.rows if "checkpointed" not in row.detail and ", lean" not in row.detail]
    if plan.exported:
        yield _timed(f"derived ({plan.configuration}, not compiled)",
                     lambda: nnunet_step(derived_network(plan.plans, plan.configuration, channels, device),
                                         batch_shape, num_classes, device),
                     plain[-1].estimate.total, estimate.autocast, device, _retraining)
    stock_class = plan.stock.network_arch_class_name.rsplit(".", 1)[-1]
    yield _timed(f"stock nnU-Net ({plan.stock_name}, {stock_class}, not compiled)",
                 lambda: nnunet_step(plans_network(plan.stock, channels, num_classes, True, device),
                                     batch_shape, num_classes, device),
                 plain[0].estimate.total, estimate.autocast, device, _retraining)


def _timed(label: str, build: Callable[[], TrainingStep], estimate: int, autocast_estimate: bool,
           device: torch.device, schedule: Callable[[float], str]) -> str:
    """`label`: seconds per iteration of the step `build()` makes, and `schedule(seconds)`."""
    if device.type == "cpu":
        needed = estimate * (2 if autocast_estimate else 1)  # float32 at most doubles the float16 tensors
        if needed > RAM_FRACTION * _available_ram():
            return (f"{label}: needs about {needed / GiB:.1f} GiB in float32, more than this machine's free RAM "
                    f"({_available_ram() / GiB:.1f} GiB): not timed")
    torch.manual_seed(0)
    step = build()
    seconds = seconds_per_iteration(step.run, device)
    del step
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return f"{label}: {seconds:.3g} s/iteration; {schedule(seconds)}"  # 3 figures: hours stay consistent
