"""`nnunet-scnas demo --quick`: the README's main command, end to end, checked against nnU-Net's own files."""
import csv
import json

import pytest

from helpers import BIN, run_command

TRAINER = "nnUNetTrainerCPUBudget_quick"


@pytest.fixture(scope="module")
def demo(tmp_path_factory, nnunet_env_base):
    workdir = tmp_path_factory.mktemp("demo") / "run"
    result = run_command([BIN / "nnunet-scnas", "demo", "--quick", "--workdir", workdir], nnunet_env_base,
                         timeout=1800)
    return workdir, result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["Dataset901_SimBrainTumour", "Dataset902_SimLungNodule"])
def test_demo_table_matches_nnunet_summaries(demo, dataset):
    workdir, _ = demo
    rows = list(csv.DictReader((workdir / "comparison" / dataset.split("_")[0] / "comparison.csv").open()))
    assert {row["method"] for row in rows} == {"nnU-Net", "SCNAS"}
    for method, configuration in (("nnU-Net", "3d_fullres"), ("SCNAS", "3d_fullres_scnas")):
        summary_file = (workdir / "nnUNet_results" / dataset / f"{TRAINER}__nnUNetPlans__{configuration}" /
                        "fold_0" / "validation" / "summary.json")
        summary = json.loads(summary_file.read_text())
        for row in (r for r in rows if r["method"] == method):
            expected = summary["foreground_mean"]["Dice"] if row["label_key"] == "average" \
                else summary["mean"][row["label_key"]]["Dice"]
            assert float(row["dice_mean"]) == pytest.approx(expected, abs=1e-6), (method, row["label"])
    markdown = (workdir / "comparison" / dataset.split("_")[0] / "comparison.md").read_text()
    assert "| nnU-Net |" in markdown and "| SCNAS |" in markdown
    assert (workdir / "comparison" / dataset.split("_")[0] / "comparison.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_demo_leaves_search_outputs_and_says_where(demo):
    workdir, stdout = demo
    search = (workdir / "nnUNet_results" / "Dataset901_SimBrainTumour" /
              "nnUNetTrainerSCNASSearch_cpuQuick__nnUNetPlans__3d_fullres" / "fold_0")
    assert (search / "genotype.json").is_file() and len(list((search / "cells").glob("*.png"))) == 4
    assert str(search / "genotype.json") in stdout and "comparison.md" in stdout
    number_of_stages = int(stdout.split("=== [1/", 1)[1].split("]", 1)[0])
    assert stdout.count(": finished in") == number_of_stages  # every stage ran and said how long it took


@pytest.mark.slow
def test_demo_rerun_skips_finished_stages_and_refuses_other_settings(demo, nnunet_env_base):
    workdir, _ = demo
    again = run_command([BIN / "nnunet-scnas", "demo", "--quick", "--workdir", workdir], nnunet_env_base)
    assert "done in an earlier run, skipped" in again.stdout and "$ nnUNetv2_train" not in again.stdout
    other = run_command([BIN / "nnunet-scnas", "demo", "--workdir", workdir], nnunet_env_base, check=False)
    assert other.returncode == 2
    assert other.stderr.strip().count("\n") == 0 and "other settings" in other.stderr
