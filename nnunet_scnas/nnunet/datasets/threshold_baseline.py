"""How far one global intensity threshold gets on a raw dataset: the baseline that shows a task needs context.

For each foreground label, fit on the training cases: every channel, both directions (`>=` and `<`), and a
grid of thresholds at percentiles of that channel's training intensities; keep the rule with the best mean
Dice. Intensities are first normalised as nnU-Net does by default (z-score per case and channel, except CT,
which stays in Hounsfield units), so that the baseline does not lose to a mere change of scanner gain. Report that rule's mean Dice on the held-out cases (imagesTs/labelsTs), or on the training cases when
there are none. Dice per case follows nnU-Net: undefined (skipped) when both prediction and reference are
empty.

    python -m nnunet_scnas.nnunet.datasets.threshold_baseline nnUNet_raw/Dataset901_SimBrainTumour
"""
import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_scnas.nnunet.datasets.raw_writer import SPLIT_FOLDERS, read_image

# percentiles for candidate thresholds: steps of 0.1, plus finer steps at both tails where small structures live
PERCENTILES = np.unique(np.concatenate([np.linspace(0.1, 99.9, 999), np.geomspace(0.0005, 0.1, 20),
                                        100 - np.geomspace(0.0005, 0.1, 20)]))


@dataclass(frozen=True)
class ThresholdRule:
    """The best single-threshold rule for one label, and how well it does."""
    label_name: str
    label_value: int
    channel_name: str
    channel: int
    direction: str  # ">=" or "<"
    threshold: float
    train_dice: float
    eval_dice: float
    evaluated_on: str  # "test" or "train"

    @property
    def rule(self) -> str:
        return f"{self.channel_name} {self.direction} {self.threshold:.4g}"


def load_cases(dataset_folder: Path, split: str):
    """[(channels array (c, z, y, x), label array (z, y, x))] of a split; empty if the split is absent."""
    dataset_folder = Path(dataset_folder)
    dataset = json.loads((dataset_folder / "dataset.json").read_text())
    ending = dataset["file_ending"]
    images_folder, labels_folder = (dataset_folder / name for name in SPLIT_FOLDERS[split])
    if not labels_folder.is_dir():
        return []
    cases = []
    for label_file in sorted(labels_folder.glob(f"*{ending}")):
        case_id = label_file.name[: -len(ending)]
        channels = [read_image(images_folder / f"{case_id}_{int(c):04d}{ending}")[0] for c in dataset["channel_names"]]
        cases.append((np.stack(channels).astype(np.float32), read_image(label_file)[0]))
    return cases


def threshold_baseline(dataset_folder) -> list:
    """Fit the best threshold rule per foreground label on the training cases; a list of ThresholdRule."""
    dataset_folder = Path(dataset_folder)
    dataset = json.loads((dataset_folder / "dataset.json").read_text())
    channel_names = [dataset["channel_names"][c] for c in sorted(dataset["channel_names"], key=int)]
    train = _normalised(load_cases(dataset_folder, "train"), channel_names)
    test = _normalised(load_cases(dataset_folder, "test"), channel_names)
    evaluation, evaluated_on = (test, "test") if test else (train, "train")

    rules = []
    for label_name, label_value in dataset["labels"].items():
        if label_value == 0 or label_name == "ignore":
            continue
        best = None
        for channel, channel_name in enumerate(channel_names):
            thresholds = np.unique(np.percentile(np.concatenate([img[channel].ravel() for img, _ in train]),
                                                 PERCENTILES))
            dice_above, dice_below = _dice_per_threshold(
                [img[channel] for img, _ in train], [np.isin(lab, label_value) for _, lab in train], thresholds)
            for direction, dice in ((">=", dice_above), ("<", dice_below)):
                mean = _nanmean(dice, axis=0)
                k = int(np.nanargmax(mean)) if np.isfinite(mean).any() else 0
                if best is None or _better(mean[k], best[0]):
                    best = (mean[k], channel, channel_name, direction, float(thresholds[k]))
        train_dice, channel, channel_name, direction, threshold = best
        eval_dice = _nanmean(np.array([
            _dice(_apply(img[channel], direction, threshold), np.isin(lab, label_value)) for img, lab in evaluation]))
        rules.append(ThresholdRule(label_name, label_value, channel_name, channel, direction, threshold,
                                   float(train_dice), float(eval_dice), evaluated_on))
    return rules


def _normalised(cases, channel_names):
    """Z-score every non-CT channel per case, like nnU-Net's ZScoreNormalization without a mask."""
    for images, _ in cases:
        for channel, name in enumerate(channel_names):
            if name.upper() != "CT":
                images[channel] = (images[channel] - images[channel].mean()) / max(images[channel].std(), 1e-8)
    return cases


def _dice_per_threshold(images, references, thresholds):
    """Dice of `image >= t` and of `image < t` for every case (rows) and threshold (columns), in one pass.

    Each voxel is binned by how many thresholds lie at or below it; suffix sums of the bin counts then give,
    for every threshold at once, how many voxels (and reference voxels) are at or above it.
    """
    above, below = [], []
    for image, reference in zip(images, references):
        bins = np.searchsorted(thresholds, image.ravel(), side="right")
        n_bins = len(thresholds) + 1
        at_or_above = np.cumsum(np.bincount(bins, minlength=n_bins)[::-1])[::-1][1:]
        reference_at_or_above = np.cumsum(np.bincount(bins[reference.ravel()], minlength=n_bins)[::-1])[::-1][1:]
        n_reference, n_voxels = int(reference.sum()), image.size
        above.append(_dice_from_counts(reference_at_or_above, at_or_above, n_reference))
        below.append(_dice_from_counts(n_reference - reference_at_or_above, n_voxels - at_or_above, n_reference))
    return np.array(above), np.array(below)


def _dice_from_counts(true_positive, predicted, n_reference):
    denominator = (predicted + n_reference).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2.0 * true_positive / denominator, np.nan)


def _apply(image, direction, threshold):
    return image >= threshold if direction == ">=" else image < threshold


def _dice(prediction, reference):
    return _dice_from_counts(np.sum(prediction & reference), np.sum(prediction), np.sum(reference))


def _nanmean(values, axis=None):
    values = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(values)
    total = np.where(valid, values, 0.0).sum(axis=axis)
    count = valid.sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _better(candidate, incumbent):
    return np.isfinite(candidate) and (not np.isfinite(incumbent) or candidate > incumbent)


def format_table(rules) -> str:
    """A small fixed-width table of the rules."""
    lines = [f"{'label':<22} {'best single-threshold rule':<28} {'train Dice':>10} {'eval Dice':>10}  evaluated on"]
    for r in rules:
        lines.append(f"{r.label_name:<22} {r.rule:<28} {r.train_dice:>10.3f} {r.eval_dice:>10.3f}  {r.evaluated_on}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nnunet_scnas.nnunet.datasets.threshold_baseline",
        description="Dice of the best single global intensity threshold per label (fit on imagesTr, "
                    "evaluated on imagesTs/labelsTs when present).")
    parser.add_argument("dataset_folder", help="a raw nnU-Net dataset folder, e.g. $nnUNet_raw/Dataset901_SimBrainTumour")
    args = parser.parse_args(argv)
    folder = Path(args.dataset_folder)
    if not (folder / "dataset.json").is_file():
        print(f"error: {folder} has no dataset.json: pass a raw nnU-Net dataset folder", file=sys.stderr)
        return 2
    print(format_table(threshold_baseline(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
