"""`nnunet-scnas compare` on a results tree that nnU-Net itself planned and evaluated (no training).

The tree: a tiny raw dataset planned by nnU-Net's ExperimentPlanner, an SCNAS configuration added by our plans
export, and for each method the trainer folder as nnU-Net's training leaves it: plans.json, dataset.json, and
per fold a training log and a `validation/summary.json` written by nnU-Net's `compute_metrics_on_folder` from
predictions and references on disk. SCNAS lacks fold 2, so the comparison is partial.
"""
import csv
import re
import json
import shutil
import statistics

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.stats import wilcoxon

from nnunet_scnas.cli.main import main
from nnunet_scnas.errors import UserError
from nnunet_scnas.nnunet.compare.comparison import MIN_PAIRS, compare, paired_difference

DATASET = "Dataset990_CompareTiny"
LABELS = {"background": 0, "edema": 1, "tumour": 2}
SHAPE = (32, 32, 32)  # the smallest that gives the 3 downsamplings the SCNAS network needs
CASES_PER_FOLD = 4
STEM_WIDTH = 8
# method -> (configuration, folds trained, epoch times written to its logs)
METHODS = {"nnU-Net": ("3d_fullres", (0, 1, 2), (3.0, 5.0, 4.0)),
           "SCNAS": ("3d_fullres_scnas", (0, 1), (6.0, 7.0, 9.0)),
           # only in the many-method comparison (the default one reads the two above): two random architectures
           # and a search per fold, each fold's genotype in its own configuration
           "random-0": ("3d_fullres_random0", (0, 1, 2), (5.0,)),
           "random-1": ("3d_fullres_random1", (0, 1, 2), (5.5,)),
           "SCNAS-per-fold": ("3d_fullres_scnas_fold{fold}", (0, 1, 2), (8.0,))}
PER_FOLD_GENOTYPE_SEED = 10  # fold f of SCNAS-per-fold holds the random architecture 10 + f
FOLDS = (0, 1, 2)
NO_TUMOUR_CASE = "case_001.nii.gz"  # empty tumour label in reference and predictions: its tumour Dice is NaN
SCNAS_PEAK_MEMORY_MB = 812.5


def _reference(case: int) -> np.ndarray:
    seg = np.zeros(SHAPE, dtype=np.uint8)
    size = 8 + case % 5
    seg[8:8 + size, 8:8 + size, 6:6 + size] = 1
    if f"case_{case:03d}.nii.gz" != NO_TUMOUR_CASE:
        seg[10:14, 10:14, 8:8 + size // 2] = 2
    return seg


def _prediction(reference: np.ndarray, rng: np.random.Generator, quality: float) -> np.ndarray:
    # a shifted copy of the reference with a few voxels flipped: Dice somewhere between 0.5 and 1
    prediction = np.roll(reference, int(rng.integers(0, 3)), axis=int(rng.integers(0, 3)))
    flips = rng.random(SHAPE) > quality
    prediction[flips & (prediction > 0)] = 0
    return prediction


def _write(array: np.ndarray, path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))


def _plan_tiny_dataset(root) -> None:
    """Raw images and labels, a fingerprint, nnU-Net's planner, then our export of the SCNAS configuration."""
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    from nnunet_scnas.nnunet.export.plans_export import export_plans

    raw, preprocessed = root / "nnUNet_raw" / DATASET, root / "nnUNet_preprocessed" / DATASET
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    preprocessed.mkdir(parents=True)
    rng = np.random.default_rng(0)
    cases = CASES_PER_FOLD * len(FOLDS)
    for case in range(cases):
        reference = _reference(case)
        _write(reference, raw / "labelsTr" / f"case_{case:03d}.nii.gz")
        _write((rng.normal(size=SHAPE) + reference).astype(np.float32), raw / "imagesTr" / f"case_{case:03d}_0000.nii.gz")
    dataset_json = {"channel_names": {"0": "MRI"}, "labels": LABELS, "numTraining": cases, "file_ending": ".nii.gz"}
    (raw / "dataset.json").write_text(json.dumps(dataset_json))
    shutil.copy(raw / "dataset.json", preprocessed / "dataset.json")
    # what nnUNetv2_extract_fingerprint would write for these images (running it costs ~15 s of worker start-up)
    intensities = {"max": 4.0, "mean": 1.0, "median": 1.0, "min": -3.0, "percentile_00_5": -2.0,
                   "percentile_99_5": 3.5, "std": 1.0}
    fingerprint = {"foreground_intensity_properties_per_channel": {"0": intensities},
                   "median_relative_size_after_cropping": 1.0, "shapes_after_crop": [list(SHAPE)] * cases,
                   "spacings": [[1.0, 1.0, 1.0]] * cases}
    (preprocessed / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
    ExperimentPlanner(DATASET).plan_experiment()
    export_plans(DATASET, "plain_unet", width=STEM_WIDTH)
    for seed in (0, 1):
        export_plans(DATASET, f"random:{seed}", target=f"3d_fullres_random{seed}", width=STEM_WIDTH)
    for fold in FOLDS:
        export_plans(DATASET, f"random:{PER_FOLD_GENOTYPE_SEED + fold}", target=f"3d_fullres_scnas_fold{fold}",
                     width=STEM_WIDTH)


def _train_method_folders(root) -> None:
    """What nnU-Net's training and validation leave per method: copied plans, logs, evaluated predictions."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    references = root / "nnUNet_raw" / DATASET / "labelsTr"
    for index, (name, (configuration, folds, epoch_times)) in enumerate(METHODS.items()):
        rng = np.random.default_rng(index + 1)
        for fold in folds:
            folder = _method_folder(root, configuration, fold)
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / "nnUNet_preprocessed" / DATASET / "nnUNetPlans.json", folder / "plans.json")
            shutil.copy(root / "nnUNet_preprocessed" / DATASET / "dataset.json", folder / "dataset.json")
            validation = folder / f"fold_{fold}" / "validation"
            validation.mkdir(parents=True)
            for case in range(fold * CASES_PER_FOLD, (fold + 1) * CASES_PER_FOLD):
                reference = sitk.GetArrayFromImage(sitk.ReadImage(str(references / f"case_{case:03d}.nii.gz")))
                _write(_prediction(reference, rng, quality=0.9 - 0.1 * index), validation / f"case_{case:03d}.nii.gz")
            compute_metrics_on_folder(str(references), str(validation), str(validation / "summary.json"),
                                      SimpleITKIO(), ".nii.gz", [1, 2], num_processes=1)
            log = [f"2025-01-01 00:00:0{i}.000000: Epoch time: {seconds} s" for i, seconds in enumerate(epoch_times)]
            if name == "SCNAS" and fold == 0:
                log.append(f"2025-01-01 00:00:09.000000: Peak memory: {SCNAS_PEAK_MEMORY_MB} MB")
            (folder / f"fold_{fold}" / "training_log_2025_1_1_00_00_00.txt").write_text("\n".join(log) + "\n")


def _method_folder(root, configuration: str, fold: int):
    return root / "nnUNet_results" / DATASET / f"nnUNetTrainer__nnUNetPlans__{configuration.format(fold=fold)}"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The nnU-Net folders (environment set for the whole module) with two trained methods."""
    root = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as env:
        for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            (root / variable).mkdir()
            env.setenv(variable, str(root / variable))
        _plan_tiny_dataset(root)
        _train_method_folders(root)
        yield root


@pytest.fixture(scope="module")
def comparison(results, tmp_path_factory):
    return compare(DATASET, folds=FOLDS, output_dir=tmp_path_factory.mktemp("report"))


def _summaries(results, name):
    configuration, folds, _ = METHODS[name]
    return {fold: json.loads((_method_folder(results, configuration, fold) / f"fold_{fold}" / "validation" /
                              "summary.json").read_text()) for fold in folds}


def _case_dice(results, name, key):
    return {(fold, case["reference_file"].rsplit("/", 1)[-1]): case["metrics"][key]["Dice"]
            for fold, summary in _summaries(results, name).items() for case in summary["metric_per_case"]}


def _csv_rows(comparison):
    with open(comparison.files["csv"], newline="") as file:
        return {(row["method"], row["label"]): row for row in csv.DictReader(file)}


def _markdown_row(comparison, method):
    # the first table's row of `method` (the cost table's rows come later and have other cells)
    return next(line for line in comparison.files["markdown"].read_text().splitlines()
                if line.startswith(f"| {method} |"))


@pytest.mark.parametrize("method", list(METHODS)[:2])
@pytest.mark.parametrize("label, key", [("edema", "1"), ("tumour", "2"), ("average", None)])
def test_dice_table_is_mean_and_std_over_folds_of_nnunet_summaries(comparison, results, method, label, key):
    summaries = _summaries(results, method)
    per_fold = [s["foreground_mean"]["Dice"] if key is None else s["mean"][key]["Dice"] for s in summaries.values()]
    mean, std = float(np.mean(per_fold)), float(np.std(per_fold, ddof=1))

    row = _csv_rows(comparison)[method, label]
    assert float(row["dice_mean"]) == pytest.approx(mean, abs=1e-12)
    assert float(row["dice_std"]) == pytest.approx(std, abs=1e-12)
    assert int(row["n_folds"]) == len(summaries)
    assert f" {100 * mean:.2f} ± {100 * std:.2f} " in _markdown_row(comparison, method)


@pytest.mark.parametrize("label, key, n_pairs", [
    ("1", "1", 2 * CASES_PER_FOLD),
    ("2", "2", 2 * CASES_PER_FOLD - 1),  # the no-tumour case has NaN Dice on both sides: not a pair
])
def test_paired_test_uses_the_same_cases_of_the_folds_both_have(comparison, results, label, key, n_pairs):
    baseline, scnas = _case_dice(results, "nnU-Net", key), _case_dice(results, "SCNAS", key)
    differences = [scnas[case] - baseline[case] for case in scnas
                   if not np.isnan(scnas[case]) and not np.isnan(baseline[case])]
    paired = comparison.paired["SCNAS", "nnU-Net", label]
    assert paired.n_pairs == len(differences) == n_pairs  # nnU-Net's fold 2 has no partner
    assert paired.mean_difference == pytest.approx(statistics.fmean(differences), abs=1e-12)
    assert paired.p_value == pytest.approx(wilcoxon(differences).pvalue)
    assert f"(p = {paired.p_value:.3g}, n = {n_pairs})" in comparison.files["markdown"].read_text()


@pytest.mark.parametrize("differences, has_p_value", [
    ([0.1, -0.02, 0.03, 0.05], False),  # fewer than MIN_PAIRS
    ([0.0] * 8, False),  # no difference at all
    ([0.1, -0.02, 0.03, 0.05, 0.01], True),
])
def test_p_value_only_when_meaningful(differences, has_p_value):
    assert len(differences) >= MIN_PAIRS or not has_p_value
    baseline = {(0, f"c{i}"): {"1": 0.5} for i in range(len(differences))}
    other = {case: {"1": 0.5 + d} for case, d in zip(baseline, differences)}
    paired = paired_difference(baseline, other, "1")
    assert paired.n_pairs == len(differences)
    assert (paired.p_value is not None) == has_p_value


def test_missing_fold_is_named_and_marks_the_comparison_partial(comparison):
    assert comparison.partial
    markdown = comparison.files["markdown"].read_text()
    assert "**PARTIAL COMPARISON**: SCNAS lacks fold 2: no fold folder" in markdown
    assert _markdown_row(comparison, "SCNAS").endswith("| 2 of 3 |")
    assert _markdown_row(comparison, "nnU-Net").endswith("| 3 of 3 |")
    rows = _csv_rows(comparison)
    assert (rows["SCNAS", "edema"]["folds"], rows["SCNAS", "edema"]["missing_folds"]) == ("0 1", "2")
    assert (rows["nnU-Net", "edema"]["folds"], rows["nnU-Net", "edema"]["missing_folds"]) == ("0 1 2", "")


def test_network_cost_and_training_time(comparison, results):
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_scnas.flops import count_flops, count_parameters, derived_flops
    from nnunet_scnas.nnunet.export.plans_export import load_genotype
    from nnunet_scnas.search_memory import network_memory

    plans = PlansManager(str(results / "nnUNet_preprocessed" / DATASET / "nnUNetPlans.json"))
    stock, scnas = plans.get_configuration("3d_fullres"), plans.get_configuration("3d_fullres_scnas")
    with torch.device("meta"):
        network = get_network_from_plans(stock.network_arch_class_name, stock.network_arch_init_kwargs,
                                         stock.network_arch_init_kwargs_req_import, 1, 3, allow_init=False,
                                         deep_supervision=False)
    costs = {m.method.name: m.cost for m in comparison.methods}
    assert costs["nnU-Net"].flops == count_flops(network, (1, *stock.patch_size))
    assert costs["nnU-Net"].parameters == count_parameters(network)
    # the derived network, counted by the core from the genotype alone
    assert costs["SCNAS"].flops == derived_flops(load_genotype("plain_unet"), STEM_WIDTH, input_channels=1,
                                                 num_classes=3, patch_size=scnas.patch_size,
                                                 strides=scnas.network_arch_init_kwargs["strides"])
    assert costs["SCNAS"].patch_size == tuple(SHAPE)

    by_name = {m.method.name: m for m in comparison.methods}
    for name in by_name:
        epoch_times = METHODS[name][2]
        assert by_name[name].seconds_per_epoch == statistics.median(epoch_times)  # the same times in every fold
    assert by_name["nnU-Net"].peak_memory_mb is None
    assert by_name["SCNAS"].peak_memory_mb == SCNAS_PEAK_MEMORY_MB
    cost_row = next(line for line in comparison.files["markdown"].read_text().splitlines()
                    if line.startswith("| nnU-Net | `nnUNetTrainer__"))
    # s/epoch, the estimated training memory (the same as export-plans and estimate print), the logged peak
    with torch.device("meta"):
        with_deep_supervision = get_network_from_plans(
            stock.network_arch_class_name, stock.network_arch_init_kwargs, stock.network_arch_init_kwargs_req_import, 1,
            3, allow_init=False, deep_supervision=True)
    estimated = network_memory(with_deep_supervision, [stock.batch_size, 1, *stock.patch_size], autocast=True)
    assert costs["nnU-Net"].training_memory == estimated.total
    assert f"| {statistics.median(METHODS['nnU-Net'][2]):.1f} | {estimated.total / 2 ** 30:.2f} GiB | n/a |" in cost_row


def test_cli_prints_the_table_and_writes_the_three_files(results, capsys):
    assert main(["compare", "-d", DATASET, "-f", *map(str, FOLDS)]) == 0
    out = capsys.readouterr().out
    assert "| Method | edema | tumour | average | folds |" in out
    assert "PARTIAL COMPARISON: SCNAS lacks fold 2" in out
    output_dir = results / "nnUNet_results" / DATASET / "scnas_compare"  # the default
    with open(output_dir / "comparison.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert {(row["method"], row["label"]) for row in rows} == {
        (method, label) for method in ("nnU-Net", "SCNAS") for label in ("edema", "tumour", "average")}
    png = (output_dir / "comparison.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert str(output_dir / "comparison.md") in out


@pytest.mark.parametrize("argv, message", [
    (["-d", "991"], "no results for dataset '991'.*datasets with results: Dataset990_CompareTiny$"),
    (["--method", "A=nnUNetTrainer:3d_fullres", "--method", "B=nnUNetTrainerNoSuch:3d_fullres"],
     "unknown trainer 'nnUNetTrainerNoSuch'.*trainers with results there: nnUNetTrainer$"),
    (["--method", "A=nnUNetTrainer:3d_fullres", "--method", "B=nnUNetTrainer:3d_lowres"],
     "no results for nnUNetTrainer__nnUNetPlans__3d_lowres.*trained there: nnUNetTrainer__nnUNetPlans__3d_fullres, "
     "nnUNetTrainer__nnUNetPlans__3d_fullres_random0, .*nnUNetTrainer__nnUNetPlans__3d_fullres_scnas_fold2$"),
    (["--versus", "SCNAS"], "bad contrast 'SCNAS': expected NAME:REFERENCE"),
    (["--versus", "SCNAS:random-9"], "contrast SCNAS vs random-9: no method named random-9 "
                                     r"\(methods: nnU-Net, SCNAS\)$"),
    (["-f", "2", "3"], r"nothing to compare: SCNAS .* has none of folds 2, 3 \(folds 2, 3: no fold folder\)$"),
    (["--method", "SCNAS"], "bad method 'SCNAS': expected NAME=TRAINER:CONFIGURATION"),
    (["--method", "A=nnUNetTrainer:3d_fullres"], "at least two methods"),
])
def test_bad_input_is_one_line_and_exit_2(results, capsys, argv, message):
    if "-d" not in argv:
        argv = ["-d", DATASET, *argv]
    assert main(["compare", *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("nnunet-scnas compare: error: ")
    assert re.search(message, err.strip())


def test_a_cut_short_summary_counts_as_a_missing_fold(results, tmp_path, monkeypatch):
    copy = tmp_path / "nnUNet_results"
    shutil.copytree(results / "nnUNet_results", copy)
    monkeypatch.setenv("nnUNet_results", str(copy))
    summary = copy / DATASET / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_1" / "validation" / "summary.json"
    summary.write_text(summary.read_text()[:100])
    result = compare(DATASET, folds=FOLDS, output_dir=tmp_path / "report")
    baseline = result.methods[0]
    assert sorted(baseline.folds) == [0, 2]
    assert baseline.missing_folds[1].startswith("unreadable validation/summary.json")
    assert "nnU-Net lacks fold 1: unreadable" in result.files["markdown"].read_text()


def test_nnunet_results_not_set(monkeypatch):
    monkeypatch.delenv("nnUNet_results", raising=False)
    with pytest.raises(UserError, match="nnUNet_results is not set"):
        compare(DATASET)


# ------------------------------------------------------------------------------------- many methods

@pytest.fixture(scope="module")
def many(results, tmp_path_factory):
    """Every method of METHODS, stock nnU-Net first, and the per-fold search against the best random one."""
    from nnunet_scnas.nnunet.compare.comparison import Contrast
    from nnunet_scnas.nnunet.compare.results import Method

    methods = [Method(name, "nnUNetTrainer", configuration) for name, (configuration, _, _) in METHODS.items()]
    return compare(DATASET, methods, FOLDS, tmp_path_factory.mktemp("many"),
                   contrasts=[Contrast("SCNAS-per-fold", ("random-0", "random-1"))])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("label, key", [("edema", "1"), ("tumour", "2"), ("average", None)])
def test_many_methods_table_is_mean_and_std_over_folds_of_each_methods_summaries(many, results, method, label, key):
    per_fold = [s["foreground_mean"]["Dice"] if key is None else s["mean"][key]["Dice"]
                for s in _summaries(results, method).values()]
    mean, std = float(np.mean(per_fold)), float(np.std(per_fold, ddof=1))
    assert f"| {method} | " in _markdown_row(many, method)
    column = ["edema", "tumour", "average"].index(label) + 1
    assert _markdown_row(many, method).split(" | ")[column].startswith(f"{100 * mean:.2f} ± {100 * std:.2f}")
    lines = many.files["markdown"].read_text().splitlines()
    header = lines.index("| Method | edema | tumour | average | folds |")
    table = lines[header + 2:lines.index("", header)]
    assert [row.split(" | ")[0][2:] for row in table] == list(METHODS)  # rows = methods, in the order given


def test_a_per_fold_configuration_reads_each_folds_own_folder_and_reports_their_mean_cost(many):
    from nnunet_scnas.flops import derived_flops
    from nnunet_scnas.random_genotype import random_genotype

    per_fold = next(m for m in many.methods if m.method.name == "SCNAS-per-fold")
    assert sorted(per_fold.folds) == list(FOLDS) and not per_fold.missing_folds
    assert per_fold.seconds_per_epoch == 8.0
    strides = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    flops = [derived_flops(random_genotype(PER_FOLD_GENOTYPE_SEED + fold), STEM_WIDTH, input_channels=1,
                           num_classes=3, patch_size=SHAPE, strides=strides) for fold in FOLDS]
    assert len(set(flops)) > 1 and per_fold.cost.flops == round(statistics.fmean(flops))


def test_every_method_is_paired_with_stock_and_the_search_with_the_best_random_one(many, results):
    titles = [contrast.title for contrast in many.contrasts]
    assert titles == ["SCNAS vs nnU-Net", "random-0 vs nnU-Net", "random-1 vs nnU-Net", "SCNAS-per-fold vs nnU-Net",
                      "SCNAS-per-fold vs random-0 (best of random-0, random-1)"]
    mean_average = {name: many.dice[name, "average"].mean for name in ("random-0", "random-1")}
    assert mean_average["random-0"] > mean_average["random-1"]  # so random-0 is the reference
    search, best = _case_dice(results, "SCNAS-per-fold", "1"), _case_dice(results, "random-0", "1")
    differences = [search[case] - best[case] for case in search]
    paired = many.paired["SCNAS-per-fold", "random-0", "1"]
    assert paired.n_pairs == len(differences) == CASES_PER_FOLD * len(FOLDS)
    assert paired.p_value == pytest.approx(wilcoxon(differences).pvalue)
    markdown = many.files["markdown"].read_text()
    assert "| SCNAS-per-fold − random-0 (best of 2) |" in markdown
    for line in many.verdicts():
        assert f"- {line}" in markdown


@pytest.mark.parametrize("differences, expected", [
    ([0.1, 0.2, 0.15, 0.12, 0.3, 0.25, 0.11, 0.18], r"^A vs B: A is better \(\+17\.6\d points average Dice, "
                                                    r"p = 0\.0078\d*, n = 8; significant at p < 0\.05\)$"),
    ([-0.1, -0.2, -0.15, -0.12, -0.3, -0.25, -0.11, -0.18], r"^A vs B: B is better \(-17\.6\d points"),
    ([0.1, -0.2, 0.15, -0.12, 0.3, -0.25, 0.11, -0.18], r"^A vs B: no significant difference \(-1\.1\d points "
                                                       r"average Dice, p = 0\.\d+, n = 8\)$"),
    ([0.1, 0.2, 0.3], r"^A vs B: cannot tell \(\+20\.00 points average Dice, no test: n = 3 < 5 pairs\)$"),
    ([0.0] * 6, r"^A vs B: cannot tell \(\+0\.00 points average Dice, no test: all differences 0\)$"),
])
def test_a_verdict_says_what_the_paired_test_supports(differences, expected):
    from nnunet_scnas.nnunet.compare.comparison import AVERAGE, ResolvedContrast, verdict

    baseline = {(0, f"c{i}"): {AVERAGE: 0.5, "1": 0.5} for i in range(len(differences))}
    other = {case: {AVERAGE: 0.5 + d, "1": 0.5 + d} for case, d in zip(baseline, differences)}
    assert re.search(expected, verdict(ResolvedContrast("A", "B"), paired_difference(baseline, other, AVERAGE)))


def test_cli_versus_adds_a_contrast_and_prints_the_verdicts(results, capsys, tmp_path):
    argv = ["compare", "-d", DATASET, "-o", str(tmp_path), "--method", "nnU-Net=nnUNetTrainer:3d_fullres",
            "--method", "search=nnUNetTrainer:3d_fullres_scnas_fold{fold}", "--method", "r0=nnUNetTrainer:3d_fullres_random0",
            "--method", "r1=nnUNetTrainer:3d_fullres_random1", "--versus", "search:r0,r1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "search vs nnU-Net: " in out and "search vs r0 (best of r0, r1): " in out


def test_closing_lines_name_each_networks_cost_and_read_only_what_the_cases_support(comparison, results,
                                                                                    tmp_path):
    import dataclasses

    from nnunet_scnas.nnunet.compare.comparison import AVERAGE, FoldStatistics
    from nnunet_scnas.nnunet.compare.reading import cost_lines, reading

    lines = cost_lines(comparison)
    assert [line.split()[0] for line in lines] == [m.method.name for m in comparison.methods]
    for line, method in zip(lines, comparison.methods):
        assert f"{statistics.median(METHODS[method.method.name][2]):.1f} s/epoch" in line
        assert f"training memory {method.cost.training_memory / 2 ** 30:.2f} GiB" in line
    averages = {m.method.name: comparison.dice[m.method.name, AVERAGE].mean for m in comparison.methods}
    best = max(averages, key=averages.get)
    text = reading(comparison)
    assert text.startswith(f"average Dice (%) {best} {100 * averages[best]:.1f}") and "verdicts" in text  # 12 cases
    one_fold = compare(DATASET, folds=(0,), output_dir=tmp_path)  # 4 cases: nothing can be tested
    assert "with 4 validation cases no difference can be tested: a demonstration that every network learns" \
        in reading(one_fold)
    label, name = next(iter(one_fold.labels.items()))
    missed = dataclasses.replace(one_fold, dice={**one_fold.dice, ("SCNAS", label): FoldStatistics({0: 0.0})})
    assert f"SCNAS found no {name}" in reading(missed) and "every network learns" not in reading(missed)
