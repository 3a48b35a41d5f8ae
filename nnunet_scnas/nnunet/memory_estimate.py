"""Training memory at a dataset's plan, before anything is trained: `nnunet-scnas estimate`, and the search
trainer's choice of per-cell activation checkpointing.

Networks are built on the "meta" device and traced (`nnunet_scnas/memory.py`), with the dtypes that CUDA autocast
gives (nnU-Net trains with autocast on CUDA): seconds on any machine, for a GPU of any size. Calibration and
error: `benchmarks/search_memory.md`.
"""
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from nnunet_scnas.cell import CELL_LAYOUT
from nnunet_scnas.errors import UserError
from nnunet_scnas.macro import MEMORY_MODES, check_stem_width
from nnunet_scnas.memory import GiB, MemoryEstimate
from nnunet_scnas.nnunet.commands import find_trainer_class
from nnunet_scnas.nnunet.memory_mode import USABLE_FRACTION
from nnunet_scnas.nnunet.plan_strides import scnas_strides
from nnunet_scnas.nnunet.plans import (DERIVED_CLASS_NAMES, DatasetPlans, plans_network, plans_network_on_meta,
                                      read_plans)
from nnunet_scnas.nnunet.search.step import ARCHITECTURE_STEP, WEIGHT_STEP, sample_generator
from nnunet_scnas.search_memory import network_memories, network_memory, search_memories
from nnunet_scnas.search_worst_case import op_sample, worst_case_ops
from nnunet_scnas.supernet import SCNASSupernet

# the first iteration's two samples (weight step, architecture step) are traced: the typical peak at the start
SAMPLED_ITERATIONS = 1


@dataclass(frozen=True)
class SearchEstimates:
    """Peaks of a search iteration, {memory mode: estimate}: at the first iteration's samples (typical of the
    start) and in the worst case of the op choices (every edge runs `worst_ops`, `search_worst_case.py`)."""
    typical: dict[str, MemoryEstimate]
    worst: dict[str, MemoryEstimate]
    worst_ops: tuple[str, str]


MODE_DETAIL = {"plain": "", "lean": ", lean", "cells": ", checkpointed cells"}  # how the estimate rows name a mode


def search_step_estimates(build_supernet: Callable[[], SCNASSupernet], batch_shape, seed: int, tau: float,
                          autocast: bool = True) -> SearchEstimates:
    """Peak of a search iteration in each memory mode, typical and worst case.

    Args:
        build_supernet: builds the trainer's supernet (called under the meta device).
        batch_shape: `[N, C, X, Y, Z]` per GPU.
        seed, tau: the search seed (its first samples are traced) and the first epoch's tau.
    """
    generators = [sample_generator(seed, iteration, step) for iteration in range(SAMPLED_ITERATIONS)
                  for step in (WEIGHT_STEP, ARCHITECTURE_STEP)]
    with torch.device("meta"):
        supernet = build_supernet()
    typical = search_memories(supernet, batch_shape, generators, tau, autocast=autocast)
    worst_ops = worst_case_ops(supernet, batch_shape, tau, autocast)
    worst = search_memories(supernet, batch_shape, [op_sample(worst_ops)], tau, autocast=autocast)
    return SearchEstimates(typical, {mode: max(worst[mode], typical[mode], key=lambda e: e.total) for mode in worst},
                           worst_ops)


SEARCH_MEMORY_SETTINGS = ("auto", *MEMORY_MODES)


def _check_setting(setting) -> None:
    if setting not in SEARCH_MEMORY_SETTINGS:
        raise UserError(f"memory_mode must be one of {', '.join(map(repr, SEARCH_MEMORY_SETTINGS))}, got {setting!r}")


def choose_memory_mode(setting, estimates: SearchEstimates, available: int, what_to_do: str,
                       ranks: int = 1) -> tuple[str, str]:
    """(the search's memory mode, a log line) for `setting` "auto" or a mode, given `available` GPU bytes (the
    least of `ranks` GPUs).

    The decision holds for the whole search, so it is made on the worst case of the op choices: "auto" takes the
    fastest mode (plain, lean, cells) whose worst case fits; when not even the checkpointed cells' worst case
    fits, it raises a UserError that says `what_to_do`. A mode given is obeyed, with a warning in the line when
    its worst case does not fit.
    """
    _check_setting(setting)
    usable = USABLE_FRACTION * available
    worst, typical = estimates.worst, estimates.typical
    where = f"the least of {ranks} GPUs" if ranks > 1 else "this GPU"
    figures = (f"estimated peak of a search step, plain / lean / checkpointed cells: "
               f"{' / '.join(f'{worst[mode].total / GiB:.1f}' for mode in MEMORY_MODES)} GiB, assuming the worst "
               f"case of the op choices (every edge sampling {' and '.join(estimates.worst_ops)}; the first samples "
               f"need {' / '.join(f'{typical[mode].total / GiB:.1f}' for mode in MEMORY_MODES)} GiB); "
               f"{available / GiB:.1f} GiB available on {where}")
    if setting == "auto":
        for mode in MEMORY_MODES:
            if worst[mode].total <= usable:
                return mode, f"{figures}: memory mode {mode}"
        raise UserError(f"the search does not fit {where} even with checkpointed cells ({figures}): {what_to_do}")
    warning = "" if worst[setting].total <= usable else " - WARNING: this may not fit; set memory_mode = 'auto'"
    return setting, f"{figures}: memory_mode = {setting!r}{warning}"


def least_available(available: int, device: torch.device) -> tuple[int, int]:
    """(the smallest of every rank's `available` bytes, the number of ranks): one decision for all ranks of a
    multi-GPU search, made for the GPU with the least free memory. Without a process group: (`available`, 1)."""
    if not (dist.is_available() and dist.is_initialized()):
        return available, 1
    on = device if dist.get_backend() == "nccl" else torch.device("cpu")  # nccl reduces CUDA tensors only
    figure = torch.tensor([available], dtype=torch.int64, device=on)
    dist.all_reduce(figure, op=dist.ReduceOp.MIN)
    return int(figure.item()), dist.get_world_size()


def decide_memory_mode(trainer, setting, available: int | None = None) -> tuple[str, str]:
    """The search trainer's choice (see `choose_memory_mode`), made once its network is built and before any
    data is loaded; every rank of a multi-GPU search makes the same one. Off the GPU, a mode given is obeyed
    and "auto" means plain (the CPU has the memory; time is what it lacks). `available`: this GPU's bytes
    (default: what CUDA reports free, plus what torch already holds there)."""
    _check_setting(setting)
    if trainer.device.type != "cuda":
        mode = "plain" if setting == "auto" else setting
        return mode, f"memory mode {mode} (memory_mode = {setting!r}, not on CUDA)"
    batch_shape = [trainer.batch_size, trainer.num_input_channels, *trainer.configuration_manager.patch_size]
    estimates = search_step_estimates(
        lambda: trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager,
                                                   trainer.num_input_channels,
                                                   trainer.label_manager.num_segmentation_heads,
                                                   trainer.enable_deep_supervision),
        batch_shape, trainer.search_seed, trainer.tau_start)
    if available is None:
        free, _ = torch.cuda.mem_get_info(trainer.device)
        available = free + torch.cuda.memory_allocated(trainer.device)  # the supernet itself is in the estimate
    available, ranks = least_available(available, trainer.device)
    return choose_memory_mode(setting, estimates, available, advice(trainer.batch_size, trainer.stem_width), ranks)


def advice(batch_size: int, stem_width: int) -> str:
    """What to do when a search does not fit one GPU."""
    return (f"run it on several GPUs (-num_gpus N splits the batch of {batch_size}), search with a smaller stem "
            f"width (a trainer variant with stem_width < {stem_width}), or give the search a plans configuration "
            f"with batch_size 1")


@dataclass(frozen=True)
class EstimateRow:
    network: str
    detail: str
    estimate: MemoryEstimate


@dataclass(frozen=True)
class PlanEstimate:
    dataset_name: str
    configuration: str
    patch_size: tuple[int, ...]
    batch_size: int
    autocast: bool
    rows: list[EstimateRow]
    search: SearchEstimates

    def table(self) -> str:
        """One small table in GiB, as `nnunet-scnas estimate` prints it."""
        header = ["network", "", "parameters+grads+Adam", "activations", "backward", "peak (GiB)"]
        lines = [[r.network, r.detail, *(f"{value / GiB:.2f}" for value in (
                  r.estimate.parameters + r.estimate.gradients + r.estimate.optimizer_state, r.estimate.activations,
                  r.estimate.backward_working_set, r.estimate.total))] for r in self.rows]
        widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
        text = [f"{self.dataset_name} {self.configuration}: patch {'x'.join(map(str, self.patch_size))}, batch "
                f"{self.batch_size} per GPU, {'CUDA autocast (float16 convs)' if self.autocast else 'float32'}"]
        text += ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                 for row in [header, *lines]]
        text.append(f"search: first samples = the first iteration's (the first epoch's tau, near-uniform logits); worst case = "
                    f"every edge sampling {' and '.join(self.search.worst_ops)}, the op choices that keep the most "
                    f"for the backward: memory_mode = 'auto' decides on it, as the logits may concentrate there")
        return "\n".join(text)


def find_search_trainer(name: str):
    """The trainer class `name` as nnU-Net finds it; UserError unless it is an SCNAS search trainer."""
    try:
        trainer = find_trainer_class(name)
    except RuntimeError:
        raise UserError(f"trainer {name!r} not found (nnU-Net's trainers and nnUNet_extTrainer were searched); "
                        f"check the name, e.g. nnUNetTrainerSCNASSearch") from None
    if not hasattr(trainer, "stem_width") or not hasattr(trainer, "search_seed"):
        raise UserError(f"{name} is not an SCNAS search trainer: give one with -tr, e.g. nnUNetTrainerSCNASSearch")
    return trainer


def derived_network(plans: DatasetPlans, name: str, input_channels: int, device=torch.device("meta")):
    """The derived network of exported configuration `name`, with deep supervision, on `device`."""
    configuration = plans.configuration(name)
    if configuration.network_arch_init_kwargs.get("cell_layout") != CELL_LAYOUT:
        raise UserError(f"configuration {name!r} was exported for the old cell layout (nodes as wide as the cell): "
                        f"re-export it with nnunet-scnas export-plans -o {name} --force (the genotype stays valid)")
    try:
        return plans_network(configuration, input_channels, plans.num_classes, True, device)
    except (ValueError, TypeError) as error:  # architecture kwargs edited by hand
        raise UserError(f"configuration {name!r} of {plans.plans_file} does not build: {error}; re-export it with "
                        f"nnunet-scnas export-plans -o {name} --force") from None


@dataclass(frozen=True)
class PlanSetting:
    """What `estimate` (memory and time) works on: a dataset's plan, its stock parent and the search's settings."""
    plans: DatasetPlans
    configuration: str  # as requested
    exported: bool  # an exported SCNAS configuration (it adds its derived network)
    stock_name: str  # the stock configuration (the parent of an exported one)
    search_trainer: type
    trainer_name: str
    stem_width: int
    strides: list
    batch_shape: list  # [N, C, X, Y, Z] per GPU

    @property
    def stock(self):
        return self.plans.configuration(self.stock_name)


def resolve_plan(dataset: str, configuration: str = "3d_fullres", trainer: str = "nnUNetTrainerSCNASSearch",
                 batch_size: int | None = None, stem_width: int | None = None,
                 plans_name: str = "nnUNetPlans") -> PlanSetting:
    """Read and check what `estimate` needs (one UserError each); see `estimate_plan` for the arguments."""
    plans = read_plans(dataset, plans_name)
    requested = plans.configuration(configuration)
    exported = requested.network_arch_class_name in DERIVED_CLASS_NAMES
    stock_name = plans.plans["configurations"][configuration].get("inherits_from") if exported else configuration
    stock = plans.configuration(stock_name)
    search_trainer = find_search_trainer(trainer)
    width = search_trainer.stem_width if stem_width is None else stem_width
    try:
        check_stem_width(width)
    except ValueError as error:
        raise UserError(f"--stem-width: {error}") from None
    batch = stock.batch_size if batch_size is None else batch_size
    if batch < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch}")
    try:
        strides = scnas_strides(stock, stock_name)
    except UserError as error:
        raise UserError(f"the search cannot run on this plan: {error}") from None
    return PlanSetting(plans, configuration, exported, stock_name, search_trainer, trainer, width, strides,
                       [batch, plans.input_channels(stock), *stock.patch_size])


def estimate_plan(dataset: str, configuration: str = "3d_fullres", trainer: str = "nnUNetTrainerSCNASSearch",
                  batch_size: int | None = None, stem_width: int | None = None, plans_name: str = "nnUNetPlans",
                  autocast: bool = True) -> PlanEstimate:
    """Stock nnU-Net's network, the search without and with checkpointed cells (at the first samples and in the
    worst case of the op choices), and, if `configuration` is an exported SCNAS one, its derived network (plain
    and checkpointed); the stock rows use its parent."""
    plan = resolve_plan(dataset, configuration, trainer, batch_size, stem_width, plans_name)
    plans, stock, batch_shape, width = plan.plans, plan.stock, plan.batch_shape, plan.stem_width
    input_channels = batch_shape[1]
    # built first (on meta: no cost): a configuration of the old layout or edited by hand is refused before the
    # search's traces, which take a minute on a busy CPU
    derived = derived_network(plans, configuration, input_channels) if plan.exported else None
    rows = [EstimateRow(f"stock nnU-Net ({plan.stock_name})", stock.network_arch_class_name.rsplit(".", 1)[-1],
                        network_memory(plans_network_on_meta(stock, input_channels, plans.num_classes, True),
                                       batch_shape, autocast))]
    search = search_step_estimates(
        lambda: SCNASSupernet(input_channels, plans.num_classes, width, plan.strides), batch_shape,
        plan.search_trainer.search_seed, plan.search_trainer.tau_start, autocast)
    for case, estimates in (("first samples", search.typical), ("worst case", search.worst)):
        rows += [EstimateRow(f"search ({trainer})", f"stem {width}, {case}{MODE_DETAIL[mode]}", estimates[mode])
                 for mode in MEMORY_MODES]
    if derived is not None:
        requested = plans.configuration(configuration)
        recorded = requested.network_arch_init_kwargs.get("memory_mode", "plain")
        for mode, estimate in network_memories(derived, batch_shape, autocast).items():
            detail = (f"stem {requested.network_arch_init_kwargs['stem_width']}{MODE_DETAIL[mode]}"
                      + (" (the configuration's mode)" if mode == recorded else
                         " (auto: the fastest mode that fits the GPU)" if recorded == "auto" and mode == "plain" else ""))
            rows.append(EstimateRow(f"derived ({configuration})", detail, estimate))
    return PlanEstimate(plans.dataset_name, configuration, tuple(stock.patch_size), batch_shape[0], autocast, rows,
                        search)
