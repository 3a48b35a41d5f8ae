"""Plans export: a genotype becomes an nnU-Net configuration that stock nnU-Net trains, predicts and evaluates.

The new configuration inherits everything from a source configuration (preprocessed data, patch size, batch
size, normalization) and replaces only `architecture`:

    "3d_fullres_scnas": {
        "inherits_from": "3d_fullres",
        "architecture": {"network_class_name": "nnunet_scnas.derived.SCNASUNet",
                         "arch_kwargs": {"genotype": {...}, "stem_width": 68, "strides": [[1,1,1], s1, s2, s3],
                                         "cell_layout": "concat_of_quarter_nodes"},
                         "_kw_requires_import": []}}

Why this works with nnU-Net 2.8 as it is:
- `PlansManager` resolves `inherits_from` with a shallow `dict.update`, so our `architecture` replaces the
  parent's as a whole, and `data_identifier` (the preprocessed folder) stays the parent's;
- `ConfigurationManager.pool_op_kernel_sizes` reads `arch_kwargs["strides"]`, from which the trainer derives
  its 3 deep-supervision scales (1, 1/s1, 1/(s1*s2)): exactly the 3 outputs of `SCNASUNet`;
- the strides are the plan's first three, so the parent's patch size (divisible by the product of all of
  the plan's strides) is divisible by ours.
"""
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_scnas.atomic import atomic_path
from nnunet_scnas.cell import CELL_LAYOUT
from nnunet_scnas.derived import SCNASUNet
from nnunet_scnas.errors import UserError
from nnunet_scnas.flops import count_flops, count_parameters, match_width
from nnunet_scnas.genotype import Genotype
from nnunet_scnas.locations import plans_dir
from nnunet_scnas.nnunet.plan_strides import scnas_strides
from nnunet_scnas.nnunet.plans import find_plans_file, parse_plans, plans_network_on_meta

DERIVED_CLASS_NAME = f"{SCNASUNet.__module__}.{SCNASUNet.__qualname__}"
# Stem widths are multiples of 4, and 4 more channels change the FLOPs by about 8/width: at the widths of
# CPU-sized plans (40 to 60) the closest width can be 7-10% off the target, so auto width allows 10%.
AUTO_WIDTH_TOLERANCE = 0.10


@dataclass(frozen=True)
class NetworkSize:
    flops: int  # one forward pass on one patch, a multiply-add counted as 2
    parameters: int

    def describe(self, patch_size) -> str:
        return (f"{self.flops / 1e9:.2f} GFLOPs per {'x'.join(map(str, patch_size))} patch, "
                f"{self.parameters / 1e6:.2f} M parameters")


@dataclass(frozen=True)
class Export:
    """What `export_plans` did."""
    dataset_name: str
    plans_file: Path
    backup_file: Path
    source: str
    target: str
    patch_size: list
    stem_width: int
    stock_class_name: str
    stock: NetworkSize
    derived: NetworkSize

    def summary(self) -> str:
        """What a user reads after an export: both networks' cost, where the plans went, the next command."""
        return "\n".join([
            f"stock   {self.source} ({self.stock_class_name.rsplit('.', 1)[-1]}): {self.stock.describe(self.patch_size)}",
            f"derived {self.target} (SCNASUNet, stem width {self.stem_width}): "
            f"{self.derived.describe(self.patch_size)} ({self.derived.flops / self.stock.flops - 1:+.1%} FLOPs)",
            f"wrote configuration {self.target!r} to {self.plans_file} (previous version: {self.backup_file.name})",
            f"next: nnUNetv2_train {self.dataset_name} {self.target} FOLD"])


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
    path = genotype_file(name_or_path)
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"genotype file {path} is not JSON: {error}") from None
    try:
        return Genotype.from_dict(data)
    except ValueError as error:
        raise UserError(f"genotype file {path}: {error}") from None


def scnas_configuration(source: str, genotype: Genotype, stem_width: int, strides: list) -> dict:
    return {
        "inherits_from": source,
        "architecture": {
            "network_class_name": DERIVED_CLASS_NAME,
            "arch_kwargs": {"genotype": genotype.to_dict(), "stem_width": stem_width, "strides": strides,
                            "cell_layout": CELL_LAYOUT},
            "_kw_requires_import": [],
        },
    }


def stock_network_size(configuration_manager, input_channels: int, num_classes: int) -> NetworkSize:
    """The network nnU-Net itself builds from this configuration, measured without computing anything (meta)."""
    network = plans_network_on_meta(configuration_manager, input_channels, num_classes)
    return NetworkSize(count_flops(network, (input_channels, *configuration_manager.patch_size)),
                       count_parameters(network))


def derived_network_size(genotype: Genotype, stem_width: int, strides: list, input_channels: int, num_classes: int,
                         patch_size) -> NetworkSize:
    with torch.device("meta"):
        network = SCNASUNet(input_channels=input_channels, num_classes=num_classes, deep_supervision=False,
                            genotype=genotype.to_dict(), stem_width=stem_width, strides=strides,
                            cell_layout=CELL_LAYOUT)
    return NetworkSize(count_flops(network, (input_channels, *patch_size)), count_parameters(network))


def _check_patch_size(patch_size, strides, source: str) -> None:
    total = np.prod(strides, axis=0)
    if any(p % t for p, t in zip(patch_size, total)):
        raise UserError(f"the patch size {list(patch_size)} of {source} is not divisible by the total stride "
                        f"{total.tolist()} of the SCNAS network (strides {strides})")


def export_plans(dataset: str, genotype: str, source: str = "3d_fullres", target: str = "3d_fullres_scnas",
                 plans_name: str = "nnUNetPlans", width: int | str = "auto", force: bool = False) -> Export:
    """Add configuration `target` (the derived network of `genotype`) to a dataset's plans file.

    Every check runs before the plans file is touched; then it is backed up and replaced in one rename.

    Args:
        dataset: id or DatasetXXX_Name, as nnU-Net takes it.
        genotype: a genotype JSON path, or the name of one shipped in `plans/`.
        width: the stem width, or "auto": the width whose FLOPs match the source configuration's stock network.
    """
    if width != "auto" and (not isinstance(width, int) or isinstance(width, bool) or width < 4 or width % 4):
        raise UserError(f"the width must be 'auto' or a positive multiple of 4 (the 4 nodes of a cell are width/4 "
                        f"wide), got {width!r}")
    genotype = load_genotype(genotype)
    dataset_name, plans_file = find_plans_file(dataset, plans_name)
    original = plans_file.read_bytes()
    plans = parse_plans(plans_file, original)
    configurations = plans["configurations"]
    if source not in configurations:
        raise UserError(f"{plans_file} has no configuration {source!r} to export from "
                        f"(it has: {', '.join(configurations)})")
    if target == source:
        raise UserError(f"the new configuration needs a name other than its source {source!r} (-o)")
    if target in configurations and not force:
        raise UserError(f"{plans_file} already has a configuration {target!r}: pass --force to replace it, "
                        f"or -o to choose another name")

    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(source)
    strides = scnas_strides(configuration_manager, source)
    patch_size = list(configuration_manager.patch_size)
    _check_patch_size(patch_size, strides, source)
    dataset_json = json.loads((plans_file.parent / "dataset.json").read_text())
    input_channels = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    num_classes = plans_manager.get_label_manager(dataset_json).num_segmentation_heads

    stock = stock_network_size(configuration_manager, input_channels, num_classes)
    if width == "auto":
        try:
            width = match_width(genotype, stock.flops, input_channels=input_channels, num_classes=num_classes,
                                patch_size=patch_size, strides=strides, tolerance=AUTO_WIDTH_TOLERANCE)
        except ValueError as error:
            raise UserError(f"--width auto: {error}; give a width with --width N") from None
    derived = derived_network_size(genotype, width, strides, input_channels, num_classes, patch_size)

    configurations[target] = scnas_configuration(source, genotype, width, strides)
    backup_file = plans_file.with_name(f"{plans_file.name}.bak-{datetime.now():%Y%m%d-%H%M%S-%f}")
    backup_file.write_bytes(original)
    with atomic_path(plans_file) as tmp:
        tmp.write_text(json.dumps(plans, indent=4) + "\n")  # nnU-Net's own layout: indent 4, keys in order

    return Export(dataset_name, plans_file, backup_file, source, target, patch_size, width,
                  configuration_manager.network_arch_class_name, stock, derived)
