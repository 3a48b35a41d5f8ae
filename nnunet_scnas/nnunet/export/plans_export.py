"""Plans export: a genotype becomes an nnU-Net configuration that stock nnU-Net trains, predicts and evaluates.

The new configuration inherits everything from a source configuration (preprocessed data, patch size, batch
size, normalization) and replaces only `architecture`:

    "3d_fullres_scnas": {
        "inherits_from": "3d_fullres",
        "architecture": {"network_class_name": "nnunet_scnas.nnunet.plans.SCNASUNetFromPlans",
                         "arch_kwargs": {"genotype": {...}, "stem_width": 68, "strides": [[1,1,1], s1, s2, s3],
                                         "cell_layout": "concat_of_quarter_nodes", "memory_mode": "auto",
                                         "memory_estimates": {"plain": ..., "lean": ..., "cells": ...}},
                         "_kw_requires_import": []}}

Why this works with nnU-Net 2.8 as it is:
- `PlansManager` resolves `inherits_from` with a shallow `dict.update`, so our `architecture` replaces the
  parent's as a whole, and `data_identifier` (the preprocessed folder) stays the parent's;
- `ConfigurationManager.pool_op_kernel_sizes` reads `arch_kwargs["strides"]`, from which the trainer derives
  its 3 deep-supervision scales (1, 1/s1, 1/(s1*s2)): exactly the 3 outputs of `SCNASUNet`;
- the strides are the plan's first three, so the parent's patch size (divisible by the product of all of
  the plan's strides) is divisible by ours;
- `memory_mode` travels with the architecture, so stock `nnUNetv2_train` trains the network in the recorded mode
  (`macro.py`: "plain", "lean", "cells"; absent in configurations exported before the modes: "plain"), or, for
  "auto", in the mode the adapter decides from `memory_estimates` where nnU-Net builds it (`memory_mode.py`).
"""
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from nnunet_scnas.atomic import atomic_path
from nnunet_scnas.cell import CELL_LAYOUT
from nnunet_scnas.derived import SCNASUNet
from nnunet_scnas.errors import UserError
from nnunet_scnas.flops import closest_width, count_flops, count_parameters, derived_flops
from nnunet_scnas.genotype import Genotype
from nnunet_scnas.json_input import read_json
from nnunet_scnas.locations import plans_dir
from nnunet_scnas.macro import MEMORY_MODES, check_stem_width
from nnunet_scnas.memory import GiB
from nnunet_scnas.random_genotype import random_genotype
from nnunet_scnas.nnunet.plan_strides import scnas_strides
from nnunet_scnas.nnunet.labels import checked_label_manager
from nnunet_scnas.nnunet.memory_mode import AUTO
from nnunet_scnas.nnunet.plans import DERIVED_CLASS_NAME, plans_network_on_meta, read_plans
from nnunet_scnas.search_memory import network_memories

# Stem widths are multiples of 4, and 4 more channels change the FLOPs by about 8/width: at the widths of
# CPU-sized plans (40 to 60) the closest width can be 7-10% off the target, so auto width allows 10%.
AUTO_WIDTH_TOLERANCE = 0.10


MATCH_RULES = ("flops", "memory")
GENOTYPE_MAX_BYTES = 2**20  # a genotype is about 2 KB
RANDOM_PREFIX = "random:"  # -g random:SEED names a random architecture of the search space


@dataclass(frozen=True)
class NetworkSize:
    flops: int  # one forward pass on one patch, a multiply-add counted as 2
    parameters: int
    training_memory: int  # estimated peak bytes of a training step at the plan's batch, CUDA autocast dtypes
    memory_mode: str = "plain"  # the mode `training_memory` is for (the network's own)
    memory_by_mode: tuple[tuple[str, int], ...] = ()  # an SCNAS network's training memory in every mode

    def describe(self, patch_size, batch_size: int) -> str:
        memory = f"{self.training_memory / GiB:.2f} GiB"
        if self.memory_by_mode:  # an SCNAS network: every mode
            memory = ", ".join(f"{mode} {bytes_ / GiB:.2f}" for mode, bytes_ in self.memory_by_mode) + " GiB"
        return (f"{self.flops / 1e9:.2f} GFLOPs per {'x'.join(map(str, patch_size))} patch, "
                f"{self.parameters / 1e6:.2f} M parameters, to train at batch {batch_size}: {memory}")

    def memory_against(self, stock: "NetworkSize") -> str:
        """The training memory relative to `stock`'s, in every mode if known."""
        by_mode = self.memory_by_mode or (("", self.training_memory),)
        return " / ".join(f"{bytes_ / stock.training_memory - 1:+.1%}{' ' + mode if mode else ''}"
                          for mode, bytes_ in by_mode)


@dataclass(frozen=True)
class Export:
    """What `export_plans` did."""
    dataset_name: str
    plans_file: Path
    backup_file: Path
    source: str
    target: str
    patch_size: list
    batch_size: int
    stem_width: int
    match: str | None  # "flops" or "memory" when the width was matched, None when it was given
    memory_mode: str
    stock_class_name: str
    stock: NetworkSize
    derived: NetworkSize
    plans_name: str = "nnUNetPlans"

    def summary(self) -> str:
        """What a user reads after an export: both networks' cost, where the plans went, the next command."""
        size = self.patch_size, self.batch_size
        matched = f", matched by {self.match}" if self.match else ""
        return "\n".join([
            f"stock   {self.source} ({self.stock_class_name.rsplit('.', 1)[-1]}): {self.stock.describe(*size)}",
            f"derived {self.target} (SCNASUNet, stem width {self.stem_width}{matched}): {self.derived.describe(*size)} "
            f"({self.derived.flops / self.stock.flops - 1:+.1%} FLOPs; memory {self.derived.memory_against(self.stock)})",
            "(memory: the estimated peak of a training step on a GPU, CUDA autocast; nnunet-scnas estimate)",
            f"wrote configuration {self.target!r} to {self.plans_file} (previous version: {self.backup_file.name}); "
            f"it trains in memory mode {self.memory_mode!r} (--memory"
            + ("; auto: on a GPU the fastest mode whose estimate fits its free memory, plain elsewhere)"
               if self.memory_mode == AUTO else ")"),
            f"next: nnUNetv2_train {self.dataset_name} {self.target} FOLD{plans_option(self.plans_name)}"])


def plans_option(plans_name: str) -> str:
    """nnU-Net's `-p PLANS` for a command line, empty for its default plans."""
    return "" if plans_name == "nnUNetPlans" else f" -p {plans_name}"


def genotype_file(name_or_path: str) -> Path:
    """A path to a genotype JSON, or the name of one shipped in `plans/` (`plain_unet` or `plain_unet.json`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.name == name_or_path:  # a bare name: look among the shipped genotypes
        for candidate in (plans_dir() / name_or_path, plans_dir() / f"{name_or_path}.json"):
            if candidate.is_file():
                return candidate
    shipped = ", ".join(sorted(p.stem for p in plans_dir().glob("*.json")))
    raise UserError(f"genotype file {name_or_path} not found (give a path, e.g. a search fold's genotype.json, "
                    f"or the name of a shipped genotype: {shipped})")


def load_genotype(name_or_path: str) -> Genotype:
    """A genotype file (see `genotype_file`), or `random:SEED`: the random architecture number SEED
    (`nnunet_scnas.random_genotype`), the baseline of a search."""
    if name_or_path.startswith(RANDOM_PREFIX):
        seed = name_or_path[len(RANDOM_PREFIX):]
        if not seed.isdigit():
            raise UserError(f"bad genotype {name_or_path!r}: a random architecture is named {RANDOM_PREFIX}SEED "
                            f"with SEED an integer >= 0, e.g. {RANDOM_PREFIX}1")
        return random_genotype(int(seed))
    path = genotype_file(name_or_path)
    try:
        data = read_json(path, "genotype file", max_bytes=GENOTYPE_MAX_BYTES)
    except ValueError as error:
        raise UserError(str(error)) from None
    try:
        return Genotype.from_dict(data)
    except ValueError as error:
        raise UserError(f"genotype file {path}: {error}") from None


def scnas_configuration(source: str, genotype: Genotype, stem_width: int, strides: list,
                        memory_mode: str = "plain", memory_estimates: dict[str, int] | None = None) -> dict:
    arch_kwargs = {"genotype": genotype.to_dict(), "stem_width": stem_width, "strides": strides,
                   "cell_layout": CELL_LAYOUT, "memory_mode": memory_mode}
    if memory_mode == AUTO:
        arch_kwargs["memory_estimates"] = memory_estimates
    return {
        "inherits_from": source,
        "architecture": {
            "network_class_name": DERIVED_CLASS_NAME,
            "arch_kwargs": arch_kwargs,
            "_kw_requires_import": [],
        },
    }


def network_size(build, input_channels: int, patch_size, batch_size: int, every_mode: bool = False) -> NetworkSize:
    """FLOPs (one patch) and parameters of `build(deep_supervision=False)`, and the training memory of
    `build(deep_supervision=True)` at `batch_size` in its own memory mode (with `every_mode`, an SCNAS network's in
    every mode too), as nnU-Net trains it; built on meta, nothing is computed."""
    network = build(deep_supervision=False)
    training = build(deep_supervision=True)
    mode = getattr(training, "memory_mode", "plain")
    memories = network_memories(training, [batch_size, input_channels, *patch_size], autocast=True,
                                modes=MEMORY_MODES if every_mode and hasattr(training, "memory_mode") else (mode,))
    return NetworkSize(count_flops(network, (input_channels, *patch_size)), count_parameters(network),
                       memories[mode].total, mode,
                       tuple((m, e.total) for m, e in memories.items()) if len(memories) > 1 else ())


def stock_network_size(configuration_manager, input_channels: int, num_classes: int) -> NetworkSize:
    """The network nnU-Net itself builds from this configuration (stock or derived), at its patch and batch."""
    return network_size(lambda deep_supervision: plans_network_on_meta(configuration_manager, input_channels,
                                                                       num_classes, deep_supervision),
                        input_channels, configuration_manager.patch_size, configuration_manager.batch_size)


def derived_network_size(genotype: Genotype, stem_width: int, strides: list, input_channels: int, num_classes: int,
                         patch_size, batch_size: int, memory_mode: str = "plain",
                         every_mode: bool = False) -> NetworkSize:
    def build(deep_supervision: bool):
        with torch.device("meta"):
            return SCNASUNet(input_channels=input_channels, num_classes=num_classes, deep_supervision=deep_supervision,
                             genotype=genotype.to_dict(), stem_width=stem_width, strides=strides,
                             cell_layout=CELL_LAYOUT, memory_mode=memory_mode)
    return network_size(build, input_channels, patch_size, batch_size, every_mode)


def _check_patch_size(patch_size, strides, source: str) -> None:
    total = np.prod(strides, axis=0)
    if any(p % t for p, t in zip(patch_size, total)):
        raise UserError(f"the patch size {list(patch_size)} of {source} is not divisible by the total stride "
                        f"{total.tolist()} of the SCNAS network (strides {strides})")


def export_plans(dataset: str, genotype: str, source: str = "3d_fullres", target: str = "3d_fullres_scnas",
                 plans_name: str = "nnUNetPlans", width: int | str = "auto", force: bool = False,
                 match: str = "flops", memory_mode: str = AUTO) -> Export:
    """Add configuration `target` (the derived network of `genotype`) to a dataset's plans file.

    Every check runs before the plans file is touched; then it is backed up and replaced in one rename.

    Args:
        dataset: id or DatasetXXX_Name, as nnU-Net takes it.
        genotype: a genotype JSON path, or the name of one shipped in `plans/`.
        width: the stem width, or "auto": the width that matches the source configuration's stock network on
            the measure `match`.
        match: "flops" (the paper's rule) or "memory" (the estimated training memory at the plan's batch: the
            rule of "nnU-Net Revisited", MICCAI 2024, which compares methods at equal GPU memory), the derived
            network's memory in `memory_mode` ("lean" for "auto": equal memory needs a mode that stays).
        memory_mode: what the configuration trains in (`macro.py`: "plain", "lean", "cells"), recorded in it, or
            "auto" (default): decided where nnU-Net builds the network (`memory_mode.py`), from each mode's
            estimate recorded beside it.
    """
    if match not in MATCH_RULES:
        raise UserError(f"--match must be one of {', '.join(MATCH_RULES)}, got {match!r}")
    if memory_mode not in (*MEMORY_MODES, AUTO):
        raise UserError(f"--memory must be one of {', '.join((*MEMORY_MODES, AUTO))}, got {memory_mode!r}")
    if match == "memory" and memory_mode == AUTO:
        memory_mode = "lean"  # a mode decided later could train in more memory than the one matched
    if width != "auto":
        try:
            check_stem_width(width)
        except ValueError as error:
            raise UserError(f"the width must be 'auto' or a stem width: {error}") from None
    genotype = load_genotype(genotype)
    dataset_plans = read_plans(dataset, plans_name)
    checked_label_manager(dataset_plans.dataset_json, dataset_plans.dataset_name)  # regions, ignore label: nnU-Net's
    plans_file, configurations = dataset_plans.plans_file, dataset_plans.plans["configurations"]
    if source not in configurations:
        raise UserError(f"{plans_file} has no configuration {source!r} to export from "
                        f"(it has: {', '.join(configurations)})")
    if target == source:
        raise UserError(f"the new configuration needs a name other than its source {source!r} (-o)")
    if target in configurations and not force:
        raise UserError(f"{plans_file} already has a configuration {target!r}: pass --force to replace it, "
                        f"or -o to choose another name")

    configuration_manager = dataset_plans.configuration(source)
    strides = scnas_strides(configuration_manager, source)
    patch_size = list(configuration_manager.patch_size)
    _check_patch_size(patch_size, strides, source)
    input_channels, num_classes = dataset_plans.input_channels(configuration_manager), dataset_plans.num_classes

    batch_size = configuration_manager.batch_size
    built_mode = "plain" if memory_mode == AUTO else memory_mode  # the mode the sizes are reported in
    stock = stock_network_size(configuration_manager, input_channels, num_classes)
    sizes: dict[int, NetworkSize] = {}

    def size(w: int) -> NetworkSize:  # each width built and traced once, whether matched or reported
        if w not in sizes:
            sizes[w] = derived_network_size(genotype, w, strides, input_channels, num_classes, patch_size, batch_size,
                                            built_mode)
        return sizes[w]

    matched = match if width == "auto" else None
    if matched:
        # FLOPs alone are cheaper to count than a whole size, which also traces the training memory
        measure, target_value, what = {
            "flops": (lambda w: derived_flops(genotype, w, input_channels=input_channels, num_classes=num_classes,
                                              patch_size=patch_size, strides=strides), stock.flops, "FLOPs"),
            "memory": (lambda w: size(w).training_memory, stock.training_memory, "training memory")}[matched]
        try:
            width = closest_width(measure, target_value, AUTO_WIDTH_TOLERANCE, what)
        except ValueError as error:
            raise UserError(f"--width auto --match {matched}: {error}; give a width with --width N") from None
    derived = derived_network_size(genotype, width, strides, input_channels, num_classes, patch_size, batch_size,
                                   built_mode, every_mode=True)  # what the summary reports of every mode

    configurations[target] = scnas_configuration(source, genotype, width, strides, memory_mode,
                                                 dict(derived.memory_by_mode))
    backup_file = plans_file.with_name(f"{plans_file.name}.bak-{datetime.now():%Y%m%d-%H%M%S-%f}")
    with atomic_path(backup_file) as tmp:
        tmp.write_bytes(dataset_plans.original)
    with atomic_path(plans_file) as tmp:
        tmp.write_text(json.dumps(dataset_plans.plans, indent=4) + "\n")  # nnU-Net's layout: indent 4, keys in order

    return Export(dataset_plans.dataset_name, plans_file, backup_file, source, target, patch_size, batch_size, width,
                  matched, memory_mode, configuration_manager.network_arch_class_name, stock, derived, plans_name)
