"""What a trained nnU-Net configuration left in `$nnUNet_results`, read as nnU-Net wrote it.

Layout (nnU-Net's `get_output_folder`): `DatasetXXX_Name/<trainer>__<plans>__<configuration>/` holds the
`plans.json` and `dataset.json` the training used, and one `fold_N/` per trained fold with
`validation/summary.json` (nnU-Net's own evaluation of the fold's validation cases) and
`training_log_*.txt` (one per start or resume of the training).
"""
import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from nnunetv2.paths import nnUNet_results
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.file_path_utilities import convert_trainer_plans_config_to_identifier
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_scnas.errors import UserError
from nnunet_scnas.nnunet.export.plans_export import stock_network_size

# a line that nnUNetTrainer.on_epoch_end writes: "<timestamp>: Epoch time: 12.34 s"
EPOCH_TIME = re.compile(r"Epoch time: ([0-9.]+) s")
# stock nnU-Net logs no memory; a trainer that wants it in the comparison logs "Peak memory: 1234.5 MB"
PEAK_MEMORY = re.compile(r"peak (?:gpu )?memory: ([0-9.]+) ?MB", re.IGNORECASE)
# what nnU-Net's compute_metrics_on_folder writes and the comparison reads
SUMMARY_KEYS = ("metric_per_case", "mean", "foreground_mean")


FOLD_FIELD = "{fold}"


@dataclass(frozen=True)
class Method:
    """One side of a comparison: a display name and the nnU-Net trainer/configuration/plans it was trained as.

    A configuration holding `{fold}` has one configuration per fold, e.g. `3d_fullres_scnas_fold{fold}`: each
    fold's own searched architecture, found without that fold's validation cases.
    """

    name: str
    trainer: str
    configuration: str
    plans: str = "nnUNetPlans"

    @property
    def folder_name(self) -> str:
        """The trainer folder's name (with `{fold}` left in it for per-fold configurations)."""
        return convert_trainer_plans_config_to_identifier(self.trainer, self.plans, self.configuration)

    def fold_configuration(self, fold: int) -> str:
        return self.configuration.replace(FOLD_FIELD, str(fold))

    def fold_folder_name(self, fold: int) -> str:
        return convert_trainer_plans_config_to_identifier(self.trainer, self.plans, self.fold_configuration(fold))

    @classmethod
    def parse(cls, text: str) -> "Method":
        """`NAME=TRAINER:CONFIGURATION[:PLANS]`, e.g. `SCNAS=nnUNetTrainer:3d_fullres_scnas`."""
        name, equals, spec = text.partition("=")
        parts = spec.split(":")
        if not equals or not name.strip() or len(parts) not in (2, 3) or not all(p.strip() for p in parts):
            raise UserError(f"bad method {text!r}: expected NAME=TRAINER:CONFIGURATION[:PLANS], "
                            f"e.g. SCNAS=nnUNetTrainer:3d_fullres_scnas")
        return cls(name.strip(), *(p.strip() for p in parts))


@dataclass(frozen=True)
class NetworkCost:
    """FLOPs and parameters of the network in the plans, at the configuration's patch size, batch 1, and the
    estimated peak GPU memory of training it at the configuration's batch (CUDA autocast)."""

    flops: int | None = None
    parameters: int | None = None
    patch_size: tuple[int, ...] | None = None
    training_memory: int | None = None
    why_missing: str | None = None
    memory_mode: str = "plain"  # the mode the network trains in (an SCNAS configuration records it)


@dataclass(frozen=True)
class FoldResult:
    fold: int
    summary: dict  # nnU-Net's validation/summary.json, as it wrote it (label keys are strings: "1", "(1, 2)")
    epoch_seconds: tuple[float, ...]
    peak_memory_mb: float | None


@dataclass
class TrainedMethod:
    method: Method
    folder: Path
    folds: dict[int, FoldResult]
    missing_folds: dict[int, str]  # fold -> why it is missing
    dataset_json: dict
    cost: NetworkCost = field(default_factory=NetworkCost)

    @property
    def seconds_per_epoch(self) -> float | None:
        """Median epoch time over every epoch of every found fold."""
        seconds = [s for fold in self.folds.values() for s in fold.epoch_seconds]
        return statistics.median(seconds) if seconds else None

    @property
    def missing_text(self) -> str:
        """The missing folds grouped by why, e.g. "folds 3, 4: no fold folder"."""
        by_reason: dict[str, list[int]] = {}
        for fold, why in sorted(self.missing_folds.items()):
            by_reason.setdefault(why, []).append(fold)
        return "; ".join(f"fold{'s' if len(folds) > 1 else ''} {', '.join(map(str, folds))}: {why}"
                         for why, folds in by_reason.items())

    @property
    def peak_memory_mb(self) -> float | None:
        peaks = [fold.peak_memory_mb for fold in self.folds.values() if fold.peak_memory_mb is not None]
        return max(peaks) if peaks else None


def dataset_results_folder(dataset: str | int) -> Path:
    """`$nnUNet_results/DatasetXXX_Name` for a dataset id or name; UserError if it has no results."""
    if not nnUNet_results.is_set():
        raise UserError("nnUNet_results is not set: export nnUNet_results=/path/to/nnUNet_results")
    results = Path(nnUNet_results.get())
    with_results = sorted(p.name for p in results.glob("Dataset*") if p.is_dir()) if results.is_dir() else []
    try:
        name = maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError):  # nnU-Net's messages span many lines; ours says what to do in one
        name = None
    if name is None or name not in with_results:
        raise UserError(f"no results for dataset {dataset!r} in {results}; datasets with results: "
                        f"{', '.join(with_results) or 'none'}")
    return results / name


def read_trained_method(dataset_folder: Path, method: Method, folds) -> TrainedMethod:
    """Everything the comparison needs about one method; UserError if none of its trainer folders exists."""
    folders = {fold: dataset_folder / method.fold_folder_name(fold) for fold in folds}
    existing = sorted({folder for folder in folders.values() if folder.is_dir()})
    if not existing:
        raise UserError(_no_results_message(dataset_folder, method))
    found, missing = {}, {}
    for fold in folds:
        fold_folder = folders[fold] / f"fold_{fold}"
        summary_file = fold_folder / "validation" / "summary.json"
        if not fold_folder.is_dir():
            missing[fold] = "no fold folder"
        elif not summary_file.is_file():
            missing[fold] = "no validation/summary.json (training unfinished or validation not run)"
        else:
            try:
                summary = read_summary(summary_file)
            except ValueError as error:
                missing[fold] = f"unreadable validation/summary.json ({error})"
                continue
            found[fold] = FoldResult(fold, summary, *read_training_logs(fold_folder))
    dataset_json_file = existing[0] / "dataset.json"
    dataset_json = json.loads(dataset_json_file.read_text()) if dataset_json_file.is_file() else {}
    if FOLD_FIELD not in method.configuration:
        cost = network_cost(existing[0], method.configuration)
    else:  # one network per fold, each matched to the same stock cost: report their mean
        cost = mean_cost([network_cost(folders[fold], method.fold_configuration(fold)) for fold in sorted(found)])
    return TrainedMethod(method, dataset_folder / method.folder_name, found, missing, dataset_json, cost)


def read_summary(summary_file: Path) -> dict:
    """nnU-Net's summary.json as plain JSON; ValueError if it is not one (e.g. cut short)."""
    summary = json.loads(summary_file.read_text())  # json.JSONDecodeError is a ValueError
    absent = [key for key in SUMMARY_KEYS if not isinstance(summary, dict) or key not in summary]
    if absent:
        raise ValueError(f"no {', '.join(absent)}")
    return summary


def read_training_logs(fold_folder: Path) -> tuple[tuple[float, ...], float | None]:
    """Epoch times (s) and the peak memory (MB, None if never logged) in all of a fold's training logs."""
    text = "\n".join(log.read_text(errors="replace") for log in sorted(fold_folder.glob("training_log_*.txt")))
    peaks = [float(m) for m in PEAK_MEMORY.findall(text)]
    return tuple(float(s) for s in EPOCH_TIME.findall(text)), (max(peaks) if peaks else None)


def network_cost(trainer_folder: Path, configuration: str) -> NetworkCost:
    """Count the network that nnU-Net builds from the plans.json and dataset.json the training copied."""
    plans_file, dataset_file = trainer_folder / "plans.json", trainer_folder / "dataset.json"
    for required in (plans_file, dataset_file):
        if not required.is_file():
            return NetworkCost(why_missing=f"no {required.name} in {trainer_folder.name}")
    try:
        plans_manager = PlansManager(str(plans_file))
        configuration_manager = plans_manager.get_configuration(configuration)
        dataset_json = json.loads(dataset_file.read_text())
        input_channels = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
        num_classes = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
        # any architecture of the plans (stock or derived), built as nnU-Net builds it
        size = stock_network_size(configuration_manager, input_channels, num_classes)
        return NetworkCost(size.flops, size.parameters, tuple(int(s) for s in configuration_manager.patch_size),
                           size.training_memory, memory_mode=size.memory_mode)
    except Exception as error:  # any plans may name any class; a table without FLOPs beats no table
        return NetworkCost(why_missing=f"cannot build the network of {trainer_folder.name} "
                                       f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})")


def mean_cost(costs: list[NetworkCost]) -> NetworkCost:
    """The mean FLOPs, parameters and memory of per-fold networks (of one patch size); why_missing if any lacks them."""
    missing = [cost.why_missing for cost in costs if cost.why_missing]
    if missing or not costs:
        return NetworkCost(why_missing=missing[0] if missing else "no fold with results")
    return NetworkCost(*(round(statistics.fmean(getattr(cost, name) for cost in costs))
                         for name in ("flops", "parameters")), costs[0].patch_size,
                       round(statistics.fmean(cost.training_memory for cost in costs)),
                       memory_mode=costs[0].memory_mode)


def _no_results_message(dataset_folder: Path, method: Method) -> str:
    trained = sorted(p.name for p in dataset_folder.iterdir() if p.is_dir() and p.name.count("__") == 2)
    trainers = sorted({name.split("__")[0] for name in trained})
    if method.trainer not in trainers:
        return (f"{method.name}: unknown trainer {method.trainer!r}, no results of it in {dataset_folder}; "
                f"trainers with results there: {', '.join(trainers) or 'none'}")
    return (f"{method.name}: no results for {method.folder_name} in {dataset_folder}; "
            f"trained there: {', '.join(trained)}")
