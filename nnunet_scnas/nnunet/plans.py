"""A dataset's nnU-Net plans, found and read with one clear error per problem, and the network a configuration
names, built on the "meta" device (measured without computing anything)."""
from dataclasses import dataclass
from pathlib import Path

import torch
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_scnas.derived import SCNASUNet
from nnunet_scnas.errors import UserError, exit_on_user_error
from nnunet_scnas.nnunet.memory_mode import resolve_memory_mode
from nnunet_scnas.json_input import read_json


class SCNASUNetFromPlans(SCNASUNet):
    """The derived network as the configurations of `export-plans` name it: nnU-Net builds it from the plans'
    architecture entry wherever it needs the network (nnUNetv2_train, nnUNetv2_predict), and an entry edited
    into something invalid ends those commands with one line saying what to do, not a traceback."""

    def __init__(self, *args, **kwargs):
        with exit_on_user_error():
            try:
                super().__init__(*args, **resolve_memory_mode(kwargs))
            except (ValueError, TypeError) as error:
                raise UserError(f"the plans' SCNAS architecture entry is invalid: {error}; re-export it with "
                                f"nnunet-scnas export-plans") from None


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# how plans name the derived network (`architecture.network_class_name`, resolved by nnU-Net with pydoc.locate);
# configurations exported before name the core class, which builds the same network
DERIVED_CLASS_NAME = _class_name(SCNASUNetFromPlans)
DERIVED_CLASS_NAMES = (DERIVED_CLASS_NAME, _class_name(SCNASUNet))


def find_plans_file(dataset: str, plans_name: str) -> tuple[str, Path]:
    """(dataset name, `$nnUNet_preprocessed/<dataset>/<plans_name>.json`), the dataset given as nnU-Net takes it."""
    if not nnUNet_preprocessed.is_set():
        raise UserError("nnUNet_preprocessed is not set (see nnU-Net's setting_up_paths.md)")
    try:
        dataset_name = maybe_convert_to_dataset_name(dataset)
    except (ValueError, RuntimeError):  # nnU-Net's messages span lines and list the environment
        raise UserError(f"dataset {dataset!r} not found: give an id or a DatasetXXX_Name that exists in "
                        f"nnUNet_raw or nnUNet_preprocessed") from None
    plans_file = Path(nnUNet_preprocessed.get()) / dataset_name / f"{plans_name}.json"
    if not plans_file.is_file():
        raise UserError(f"{plans_file} does not exist: plan and preprocess the dataset first "
                        f"(nnUNetv2_plan_and_preprocess -d {dataset})")
    return dataset_name, plans_file


@dataclass(frozen=True)
class DatasetPlans:
    """A dataset's plans and dataset.json, with the numbers every network built from them needs."""
    dataset_name: str
    plans_file: Path
    original: bytes  # the file as read: what a backup before rewriting it must hold
    plans: dict
    dataset_json: dict

    @property
    def manager(self) -> PlansManager:
        return PlansManager(self.plans)

    def configuration(self, name: str) -> ConfigurationManager:
        if name not in self.plans["configurations"]:
            raise UserError(f"{self.plans_file} has no configuration {name!r} "
                            f"(it has: {', '.join(self.plans['configurations'])})")
        return self.manager.get_configuration(name)

    def input_channels(self, configuration: ConfigurationManager) -> int:
        return determine_num_input_channels(self.manager, configuration, self.dataset_json)

    @property
    def num_classes(self) -> int:
        """nnU-Net's number of segmentation heads (regions-aware, ignore label excluded)."""
        return self.manager.get_label_manager(self.dataset_json).num_segmentation_heads


def _read_planner_json(path: Path, what: str) -> dict:
    """A JSON object written by nnU-Net's planner; a UserError saying how to rewrite it otherwise."""
    redo = "rerun nnUNetv2_plan_and_preprocess for this dataset"
    if not path.is_file():
        raise UserError(f"{path} does not exist: {redo}")
    try:
        content = read_json(path, what)
    except ValueError as error:
        raise UserError(f"{error}; {redo}") from None
    if not isinstance(content, dict):
        raise UserError(f"{path} is not an nnU-Net {what}: {redo}")
    return content


def read_plans(dataset: str, plans_name: str = "nnUNetPlans") -> DatasetPlans:
    dataset_name, plans_file = find_plans_file(dataset, plans_name)
    plans = _read_planner_json(plans_file, "plans file")
    if not isinstance(plans.get("configurations"), dict):
        raise UserError(f"{plans_file} is not an nnU-Net plans file (rerun nnUNetv2_plan_experiment)")
    dataset_json = _read_planner_json(plans_file.parent / "dataset.json", "dataset.json")
    return DatasetPlans(dataset_name, plans_file, plans_file.read_bytes(), plans, dataset_json)


def plans_network_on_meta(configuration: ConfigurationManager, input_channels: int, num_classes: int,
                          deep_supervision: bool = False) -> torch.nn.Module:
    """The network nnU-Net builds from `configuration` (stock or derived), on the meta device.

    The derived network is built as the core class: a bad architecture entry raises ValueError, for the caller
    to word, instead of ending the process (what `SCNASUNetFromPlans` does inside nnU-Net's commands)."""
    return plans_network(configuration, input_channels, num_classes, deep_supervision, torch.device("meta"))


def plans_network(configuration: ConfigurationManager, input_channels: int, num_classes: int,
                  deep_supervision: bool, device: torch.device) -> torch.nn.Module:
    """`plans_network_on_meta` on `device`, initialised as nnU-Net initialises it (except on meta)."""
    name, arch_kwargs = configuration.network_arch_class_name, configuration.network_arch_init_kwargs
    if name in DERIVED_CLASS_NAMES:
        name, arch_kwargs = _class_name(SCNASUNet), resolve_memory_mode(arch_kwargs, announce=lambda line: None)
    with torch.device(device):
        return get_network_from_plans(
            name, arch_kwargs,
            configuration.network_arch_init_kwargs_req_import, input_channels, num_classes,
            allow_init=device.type != "meta", deep_supervision=deep_supervision)

