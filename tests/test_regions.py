"""BraTS as nnU-Net ships it, through the whole chain: the embedded brain set in BraTS-style regions
(`make-dataset --regions`) and sparsely annotated (nnU-Net's ignore label) goes through the quick search,
export-plans, a quick retraining of stock nnU-Net and of the exported network (nnU-Net validates both),
nnUNetv2_predict, compare and estimate.

One dataset carries both setups, so that one chain (a few minutes) runs every part that handles them: nnU-Net's
region loss with its ignore channel in both search steps, the pseudo Dice per region with ignored voxels masked,
one head per region, the evaluation per region without the ignored voxels, the painting back into labels, the
table's columns. Plain labels with an ignore label differ only in nnU-Net's loss (`test_labels.py`).
"""
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import BIN, PlannedDataset, fold_folder, plan_dataset, run_command, search_command, start_command
from nnunet_scnas.nnunet.datasets.raw_writer import read_image, write_image

REGIONS = {"whole tumour": "(1, 2, 3)", "tumour core": "(2, 3)", "enhancing tumour": "(3,)"}  # name -> summary key
IGNORE_LABEL = 4
RETRAINER = "nnUNetTrainerCPUBudget_quick"


def with_ignore_label(raw: Path) -> None:
    """Sparse annotation as nnU-Net takes it: every second slice of each training label map unannotated (the
    ignore label, one above the highest label); the held-out labels stay complete."""
    dataset_json = raw / "dataset.json"
    content = json.loads(dataset_json.read_text())
    content["labels"]["ignore"] = IGNORE_LABEL
    dataset_json.write_text(json.dumps(content, indent=4))
    for label_file in (raw / "labelsTr").glob("*.nii.gz"):
        label, spacing = read_image(label_file)
        label[1::2] = IGNORE_LABEL
        write_image(label, spacing, label_file)


@pytest.fixture(scope="session")
def planned_sparse_regions(tmp_path_factory) -> PlannedDataset:
    """The brain set in BraTS-style regions with an ignore label, planned once: 7 cases (fold 0 trains on 5, the
    search's minimum), one held-out case to predict."""
    return plan_dataset(tmp_path_factory.mktemp("sparse_regions"), "braintumour", 961, cases=7, test_cases=1,
                        options=["--regions"], edit_raw=with_ignore_label)


def train_in_parallel(dataset: PlannedDataset, configurations, env, logs: Path) -> None:
    """nnUNetv2_train of fold 0 for each configuration, all at once (one thread each: the cores are shared)."""
    runs = [(start_command([BIN / "nnUNetv2_train", dataset.dataset_id, configuration, 0, "-tr", RETRAINER,
                            "-device", "cpu"], env, logs / f"{configuration}.txt"), configuration)
            for configuration in configurations]
    for process, configuration in runs:
        assert process.wait(timeout=900) == 0, (logs / f"{configuration}.txt").read_text()[-3000:]


def pseudo_dice_lengths(log: str) -> list[int]:
    """How many values each of nnU-Net's "Pseudo dice [...]" lines holds."""
    return [len(values.split(",")) for values in re.findall(r"Pseudo dice \[(.*)\]", log)]


def output_channels(checkpoint: Path) -> set[int]:
    """The output channels of every deep-supervision head of a trained SCNAS network."""
    weights = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
    return {w.shape[0] for name, w in weights.items() if ".heads." in name and name.endswith("weight")}


@pytest.mark.slow
def test_sparse_brats_style_regions_go_through_search_export_retraining_prediction_and_compare(
        planned_sparse_regions, tmp_path):
    dataset, results = planned_sparse_regions, tmp_path / "results"
    env = dataset.env_with_results(results, nnUNet_n_proc_DA="0")

    # the search trains nnU-Net's region loss (ignored voxels masked) and scores the architecture set per region
    run_command(search_command(dataset), env)
    search = fold_folder(results, dataset)
    log = "".join(p.read_text() for p in search.glob("training_log_*.txt"))
    assert ("output heads (regions, sigmoid): whole tumour, tumour core, enhancing tumour; ignore label "
            f"{IGNORE_LABEL} masked out of the loss and the pseudo Dice") in log
    assert pseudo_dice_lengths(log) == [3, 3]

    # export: one head per region; stock nnU-Net trains both networks and validates them per region
    run_command([BIN / "nnunet-scnas", "export-plans", "-d", dataset.dataset_id, "-g", search / "genotype.json",
                 "--width", "8"], env)
    train_in_parallel(dataset, ["3d_fullres", "3d_fullres_scnas"], env, tmp_path)
    retrained = fold_folder(results, dataset, RETRAINER, "3d_fullres_scnas")
    assert output_channels(retrained / "checkpoint_final.pth") == {3}
    summary = json.loads((retrained / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == set(REGIONS.values())

    # nnUNetv2_predict paints the regions back into labels 1-3 (regions_class_order), never the ignore label
    predicted = tmp_path / "predicted"
    run_command([BIN / "nnUNetv2_predict", "-i", dataset.raw / "imagesTs", "-o", predicted, "-d",
                 dataset.dataset_id, "-c", "3d_fullres_scnas", "-tr", RETRAINER, "-f", "0", "-device", "cpu",
                 "-npp", "1", "-nps", "1", "--disable_tta", "--disable_progress_bar"], env)
    (prediction,) = predicted.glob("*.nii.gz")
    assert set(np.unique(read_image(prediction)[0])) <= {0, 1, 2, 3}

    # compare: a column per region named from dataset.json, both methods, a paired contrast per region
    compared = run_command([BIN / "nnunet-scnas", "compare", "-d", dataset.dataset_id, "-f", "0", "-o",
                            tmp_path / "compare", "--method", f"nnU-Net={RETRAINER}:3d_fullres",
                            "--method", f"SCNAS={RETRAINER}:3d_fullres_scnas"], env).stdout
    print(compared)  # the per-region table, for whoever runs this with -s
    header = next(line for line in compared.splitlines() if line.startswith("| Method"))
    assert [cell.strip() for cell in header.strip("|").split("|")] == ["Method", *REGIONS, "average", "folds"]
    with (tmp_path / "compare" / "comparison.csv").open() as table:
        rows = list(csv.DictReader(table))
    for method in ("nnU-Net", "SCNAS"):
        method_rows = [row for row in rows if row["method"] == method]
        assert [(row["label"], row["label_key"]) for row in method_rows] == [*REGIONS.items(), ("average", "average")]
        assert all(0 <= float(row["dice_mean"]) <= 1 for row in method_rows if row["dice_mean"])
    # paired per case of fold 0's validation (2 cases; a case empty in reference and prediction has no Dice), no
    # p-value from so few pairs
    assert all(1 <= int(row["paired_n"]) <= 2 and row["paired_p_value"] == "" for row in rows
               if row["method"] == "SCNAS")
    report = (tmp_path / "compare" / "report.html").read_text()
    assert all(name in report for name in REGIONS)

    estimated = run_command([BIN / "nnunet-scnas", "estimate", "-d", dataset.dataset_id, "-c", "3d_fullres_scnas",
                             "-tr", "nnUNetTrainerSCNASSearch_cpuQuick", "--fp32"], env).stdout
    assert "derived (3d_fullres_scnas)" in estimated and "search (nnUNetTrainerSCNASSearch_cpuQuick)" in estimated
