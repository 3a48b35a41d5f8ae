"""SCNAS against stock nnU-Net (or any trained configurations), from nnU-Net's own per-fold validation results.

Nothing is re-evaluated: every Dice is one that nnU-Net wrote in `fold_N/validation/summary.json`.
- Per label and averaged ("average" is nnU-Net's foreground mean): mean ± std over folds of the fold-level
  Dice, as the paper's Table 1 reports per-label averages over the cross-validation.
- Paired contrasts, by default each method against the first (the baseline), plus any asked for (e.g. the
  search against the best of the random architectures): per validation case of a fold that both have, the
  Dice difference and a Wilcoxon signed-rank test; a case whose Dice is undefined for a label (NaN: empty in
  both reference and prediction) is left out of that label's pairs, as nnU-Net leaves it out of its means.
  Each contrast ends in a one-line verdict on the average Dice that its numbers support.
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


@dataclass(frozen=True)
class Contrast:
    """`method` against the best of `references` by mean average Dice over folds (one name: that method; several,
    e.g. the random architectures: the strongest baseline of that kind)."""

    method: str
    references: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "Contrast":
        """`NAME:REFERENCE[,REFERENCE...]`, e.g. `SCNAS:random-0,random-1`."""
        method, colon, references = text.partition(":")
        names = [name.strip() for name in references.split(",")]
        if not colon or not method.strip() or not all(names):
            raise UserError(f"bad contrast {text!r}: expected NAME:REFERENCE[,REFERENCE...], e.g. "
                            f"SCNAS:random-0,random-1 (against the best of the two)")
        return cls(method.strip(), tuple(names))


@dataclass(frozen=True)
class ResolvedContrast:
    method: str
    reference: str
    best_of: tuple[str, ...] = ()  # the candidates when the reference is the best of several

    @property
    def title(self) -> str:
        best = f" (best of {', '.join(self.best_of)})" if self.best_of else ""
        return f"{self.method} vs {self.reference}{best}"


@dataclass
class Comparison:
    """All numbers of a comparison; `methods[0]` is the baseline. Keys are (method name, label key), and
    (method, reference, label key) for the paired contrasts."""

    dataset: str
    folds: tuple[int, ...]
    labels: dict[str, str]  # label key -> display name, in table order, AVERAGE last
    methods: list[TrainedMethod]
    dice: dict[tuple[str, str], FoldStatistics]
    case_dice: dict[tuple[str, str], list[float]]  # every defined per-case Dice, for the plot
    contrasts: list[ResolvedContrast]
    paired: dict[tuple[str, str, str], PairedDifference]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def partial(self) -> bool:
        return any(method.missing_folds for method in self.methods)

    @property
    def baseline(self) -> str:
        return self.methods[0].method.name

    def paired_against_baseline(self, method: str, label: str) -> PairedDifference | None:
        return self.paired.get((method, self.baseline, label))

    def verdicts(self) -> list[str]:
        return [verdict(contrast, self.paired[contrast.method, contrast.reference, AVERAGE])
                for contrast in self.contrasts]


def compare(dataset: str | int, methods=DEFAULT_METHODS, folds=DEFAULT_FOLDS, output_dir=None,
            contrasts=(), extra_sections=()) -> Comparison:
    """Compare `methods` on `dataset`; writes comparison.md/.csv/.png and report.html to `output_dir`
    (default `$nnUNet_results/DatasetXXX_Name/scnas_compare`) and returns the numbers and the file paths.
    `contrasts` (`Contrast`s) are tested besides every method against the first; `extra_sections`
    (`html_report.Section`s) end report.html.

    Raises UserError when nothing can be compared (see `read_comparison`).
    """
    comparison = read_comparison(dataset, methods, folds, contrasts)
    folder = Path(output_dir) if output_dir else dataset_results_folder(dataset) / OUTPUT_FOLDER_NAME
    comparison.files = write_report(comparison, folder, extra_sections)
    return comparison


def read_comparison(dataset: str | int, methods=DEFAULT_METHODS, folds=DEFAULT_FOLDS, contrasts=()) -> Comparison:
    """The numbers of `compare`, nothing written.

    Raises UserError when nothing can be compared (no results, an unknown trainer or configuration, a method
    without any of the folds, a contrast naming an unknown method).
    """
    methods, folds = list(methods), tuple(sorted(set(folds)))
    if len(methods) < 2:
        raise UserError(f"compare needs at least two methods, got {len(methods)}")
    names = [method.name for method in methods]
    if len(set(names)) != len(names):
        raise UserError(f"method names must differ, got {', '.join(names)}")
    if not folds:
        raise UserError("no folds given")
    for contrast in contrasts:
        unknown = [name for name in (contrast.method, *contrast.references) if name not in names]
        if unknown:
            raise UserError(f"contrast {contrast.method} vs {', '.join(contrast.references)}: no method named "
                            f"{', '.join(unknown)} (methods: {', '.join(names)})")
    dataset_folder = dataset_results_folder(dataset)
    trained = [read_trained_method(dataset_folder, method, folds) for method in methods]
    for method in trained:
        if not method.folds:
            raise UserError(
                f"nothing to compare: {method.method.name} ({method.folder}) has none of folds "
                f"{', '.join(map(str, folds))} ({method.missing_text})")
    return summarize(dataset_folder.name, folds, trained, contrasts)


def summarize(dataset: str, folds: tuple[int, ...], methods: list[TrainedMethod], contrasts=()) -> Comparison:
    labels = label_names(methods)
    cases = {method.method.name: per_case_dice(method, labels) for method in methods}
    dice, case_values = {}, {}
    for method in methods:
        name = method.method.name
        for label in labels:
            dice[name, label] = FoldStatistics(fold_level_dice(method, label))
            case_values[name, label] = [c[label] for c in cases[name].values() if label in c]
    baseline = methods[0].method.name
    resolved = [ResolvedContrast(m.method.name, baseline) for m in methods[1:]]
    for contrast in contrasts:
        resolved.append(resolve(contrast, dice))
    resolved = list(dict.fromkeys(c for c in resolved if c.method != c.reference))  # once each, in order
    paired = {(c.method, c.reference, label): paired_difference(cases[c.reference], cases[c.method], label)
              for c in resolved for label in labels}
    return Comparison(dataset, folds, labels, methods, dice, case_values, resolved, paired)


def resolve(contrast: Contrast, dice: dict[tuple[str, str], FoldStatistics]) -> ResolvedContrast:
    """The contrast with its reference named: the best of its references by mean average Dice (the first on a
    tie; a method without any average Dice counts as worst)."""
    means = {name: dice[name, AVERAGE].mean for name in contrast.references}
    best = max(contrast.references, key=lambda name: -math.inf if means[name] is None else means[name])
    return ResolvedContrast(contrast.method, best, contrast.references if len(contrast.references) > 1 else ())


ALPHA = 0.05  # the significance level of the verdicts (two-sided, each contrast on its own)


def verdict(contrast: ResolvedContrast, paired: PairedDifference) -> str:
    """One line that the paired numbers of the average Dice support, e.g. "SCNAS vs random-1 (best of random-0,
    random-1): no significant difference (-0.84 points, p = 0.41, n = 20)"."""
    if paired.n_pairs == 0:
        return f"{contrast.title}: no common validation cases, nothing to say"
    numbers = f"{100 * paired.mean_difference:+.2f} points average Dice"
    if paired.p_value is None:
        why = "all differences 0" if paired.n_pairs >= MIN_PAIRS else f"n = {paired.n_pairs} < {MIN_PAIRS} pairs"
        return f"{contrast.title}: cannot tell ({numbers}, no test: {why})"
    numbers += f", p = {paired.p_value:.3g}, n = {paired.n_pairs}"
    if paired.p_value >= ALPHA:
        return f"{contrast.title}: no significant difference ({numbers})"
    better = contrast.method if paired.mean_difference > 0 else contrast.reference
    return f"{contrast.title}: {better} is better ({numbers}; significant at p < {ALPHA})"


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
