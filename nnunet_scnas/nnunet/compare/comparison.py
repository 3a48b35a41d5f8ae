"""SCNAS against stock nnU-Net (or any trained configurations), from nnU-Net's own per-fold validation results.

Nothing is re-evaluated: every Dice is one that nnU-Net wrote in `fold_N/validation/summary.json`.
- Per label and averaged ("average" is nnU-Net's foreground mean): mean ± std over folds of the fold-level
  Dice, as the paper's Table 1 reports per-label averages over the cross-validation.
- Paired, each method against the first (the baseline): per validation case of a fold that both have, the
  Dice difference and a Wilcoxon signed-rank test; a case whose Dice is undefined for a label (NaN: empty in
  both reference and prediction) is left out of that label's pairs, as nnU-Net leaves it out of its means.
- Network FLOPs and parameters, seconds per epoch and peak memory, and which folds each method has: a
  missing fold is named and marks the whole comparison as partial, never dropped without a word.
"""
import math
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from scipy.stats import wilcoxon

from nnunet_scnas.errors import UserError
from nnunet_scnas.nnunet.compare.report import write_report
from nnunet_scnas.nnunet.compare.results import Method, TrainedMethod, dataset_results_folder, read_trained_method

DEFAULT_METHODS = (Method("nnU-Net", "nnUNetTrainer", "3d_fullres"),
                   Method("SCNAS", "nnUNetTrainer", "3d_fullres_scnas"))
DEFAULT_FOLDS = (0, 1, 2, 3, 4)
AVERAGE = "average"  # the label key of the foreground average (summary.json keys are label values: "1", "(1, 2)")
# below this many pairs a signed-rank p-value says little (n = 5 is the smallest that can reach p < 0.1)
MIN_PAIRS = 5
OUTPUT_FOLDER_NAME = "scnas_compare"


@dataclass(frozen=True)
class FoldStatistics:
    """One method's Dice for one label, fold by fold (folds where nnU-Net's mean is NaN are absent)."""

    values: dict[int, float]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values.values()) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation over folds (n - 1); None below two folds."""
        return statistics.stdev(self.values.values()) if len(self.values) > 1 else None


@dataclass(frozen=True)
class PairedDifference:
    """A method minus the baseline on the same validation cases of the same folds."""

    n_pairs: int
    mean_difference: float | None
    p_value: float | None  # Wilcoxon signed-rank, two-sided; None when not meaningful (see `paired_difference`)


@dataclass
class Comparison:
    """All numbers of a comparison; `methods[0]` is the baseline. Keys are (method name, label key)."""

    dataset: str
    folds: tuple[int, ...]
    labels: dict[str, str]  # label key -> display name, in table order, AVERAGE last
    methods: list[TrainedMethod]
    dice: dict[tuple[str, str], FoldStatistics]
    case_dice: dict[tuple[str, str], list[float]]  # every defined per-case Dice, for the plot
    paired: dict[tuple[str, str], PairedDifference]  # for every method but the baseline
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        return any(method.missing_folds for method in self.methods)


def compare(dataset: str | int, methods=DEFAULT_METHODS, folds=DEFAULT_FOLDS, output_dir=None) -> Comparison:
    """Compare `methods` on `dataset`; writes comparison.md/.csv/.png and report.html to `output_dir`
    (default `$nnUNet_results/DatasetXXX_Name/scnas_compare`) and returns the numbers and the file paths.

    Raises UserError when nothing can be compared (no results, an unknown trainer or configuration, a method
    without any of the folds).
    """
    methods, folds = list(methods), tuple(sorted(set(folds)))
    if len(methods) < 2:
        raise UserError(f"compare needs at least two methods, got {len(methods)}")
    names = [method.name for method in methods]
    if len(set(names)) != len(names):
        raise UserError(f"method names must differ, got {', '.join(names)}")
    if not folds:
        raise UserError("no folds given")
    dataset_folder = dataset_results_folder(dataset)
    trained = [read_trained_method(dataset_folder, method, folds) for method in methods]
    for method in trained:
        if not method.folds:
            raise UserError(
                f"nothing to compare: {method.method.name} ({method.folder}) has none of folds "
                f"{', '.join(map(str, folds))} ({method.missing_text})")
    comparison = summarize(dataset_folder.name, folds, trained)
    comparison.files = write_report(comparison, Path(output_dir) if output_dir else dataset_folder / OUTPUT_FOLDER_NAME)
    return comparison


def summarize(dataset: str, folds: tuple[int, ...], methods: list[TrainedMethod]) -> Comparison:
    labels = label_names(methods)
    cases = {method.method.name: per_case_dice(method, labels) for method in methods}
    baseline = methods[0].method.name
    dice, case_values, paired = {}, {}, {}
    for method in methods:
        name = method.method.name
        for label in labels:
            dice[name, label] = FoldStatistics(fold_level_dice(method, label))
            case_values[name, label] = [c[label] for c in cases[name].values() if label in c]
            if name != baseline:
                paired[name, label] = paired_difference(cases[baseline], cases[name], label)
    return Comparison(dataset, folds, labels, methods, dice, case_values, paired)


def label_names(methods: list[TrainedMethod]) -> dict[str, str]:
    """Foreground label keys found in the summaries, named from dataset.json and in its order, then AVERAGE."""
    keys = {key for method in methods for fold in method.folds.values() for key in fold.summary["mean"]}
    keys.discard("0")  # nnU-Net's foreground mean leaves out the background too
    names = {}
    for method in methods:
        for name, value in method.dataset_json.get("labels", {}).items():
            # summary.json writes a label as str(int) and a region as str(tuple)
            names.setdefault(str(tuple(value)) if isinstance(value, list) else str(value), name)
    in_dataset_order = [key for key in names if key in keys]
    rest = sorted(keys - set(in_dataset_order), key=lambda key: (len(key), key))
    return {**{key: names.get(key, f"label {key}") for key in in_dataset_order + rest}, AVERAGE: AVERAGE}


def fold_level_dice(method: TrainedMethod, label: str) -> dict[int, float]:
    """fold -> nnU-Net's mean Dice over the fold's validation cases (its foreground mean for AVERAGE)."""
    values = {}
    for fold, result in sorted(method.folds.items()):
        metrics = result.summary["foreground_mean"] if label == AVERAGE else result.summary["mean"].get(label, {})
        if _is_number(metrics.get("Dice")):
            values[fold] = float(metrics["Dice"])
    return values


def per_case_dice(method: TrainedMethod, labels) -> dict[tuple[int, str], dict[str, float]]:
    """(fold, case file name) -> label key -> Dice, defined values only; AVERAGE is the mean over the case's
    defined labels."""
    cases = {}
    for fold, result in method.folds.items():
        for case in result.summary["metric_per_case"]:
            dice = {label: float(case["metrics"][label]["Dice"]) for label in labels
                    if label in case["metrics"] and _is_number(case["metrics"][label].get("Dice"))}
            if dice:
                dice[AVERAGE] = statistics.fmean(dice.values())
            cases[fold, Path(case["reference_file"]).name] = dice
    return cases


def paired_difference(baseline_cases: dict, other_cases: dict, label: str) -> PairedDifference:
    """Other minus baseline over the cases both have (same fold, same case) where the label is defined in both.

    The average compares each case over the labels defined in both, so that a label one side leaves undefined
    does not tilt it. The p-value is None below MIN_PAIRS pairs or when every difference is 0.
    """
    differences = []
    for key in baseline_cases.keys() & other_cases.keys():
        base, other = baseline_cases[key], other_cases[key]
        if label == AVERAGE:
            common = [k for k in base.keys() & other.keys() if k != AVERAGE]
            if common:
                differences.append(statistics.fmean(other[k] for k in common) - statistics.fmean(base[k] for k in common))
        elif label in base and label in other:
            differences.append(other[label] - base[label])
    if not differences:
        return PairedDifference(0, None, None)
    p_value = None
    if len(differences) >= MIN_PAIRS and any(d != 0 for d in differences):
        with warnings.catch_warnings():  # scipy warns about ties and switches to its normal approximation
            warnings.simplefilter("ignore", RuntimeWarning)
            p_value = float(wilcoxon(differences).pvalue)
    return PairedDifference(len(differences), statistics.fmean(differences), p_value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)
