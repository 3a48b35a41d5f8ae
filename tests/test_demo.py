"""`nnunet-scnas demo --quick`: the README's main command, end to end, checked against nnU-Net's own files.

The demo runs as a user's would after a crash: killed (SIGKILL, with nnU-Net's processes) at a random moment
of its search, then run again; with the home folder and the current folder read-only (and, as root can write
there anyway, checked to be left empty).
"""
import csv
import hashlib
import json
import math
import random
import shutil
import stat
import time

import pytest

from helpers import BIN, epochs_started, kill, run_command, start_command, wait_until

TRAINER = "nnUNetTrainerCPUBudget_quick"
SEARCH = "nnUNetTrainerSCNASSearch_cpuQuick__nnUNetPlans__3d_fullres"


@pytest.fixture(scope="module")
def demo(tmp_path_factory, nnunet_env_base):
    root = tmp_path_factory.mktemp("demo")
    home, cwd, workdir = root / "home", root / "cwd", root / "run"
    for folder in (home, cwd):
        folder.mkdir()
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    env = {**nnunet_env_base, "HOME": str(home)}
    command = [BIN / "nnunet-scnas", "demo", "--quick", "--workdir", workdir]
    killed = root / "killed.txt"
    process = start_command(command, env, killed, cwd=cwd)
    seed = random.randrange(2**32)
    wait_until(lambda: "architecture search" in killed.read_text() and 1 in epochs_started(killed.read_text()),
               process, timeout=1200, what="the search's second epoch")
    time.sleep(random.Random(seed).uniform(0, 2))
    kill(process)
    rerun = root / "rerun.txt"
    process = start_command(command, env, rerun, cwd=cwd)
    assert process.wait(timeout=1800) == 0, rerun.read_text()[-3000:]
    return workdir, killed.read_text(), rerun.read_text(), (home, cwd), seed


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["Dataset901_SimBrainTumour", "Dataset902_SimLungNodule"])
def test_demo_table_matches_nnunet_summaries(demo, dataset):
    workdir, *_ = demo
    rows = list(csv.DictReader((workdir / "comparison" / dataset.split("_")[0] / "comparison.csv").open()))
    assert {row["method"] for row in rows} == {"nnU-Net", "SCNAS", "random-0"}
    # on the brain set fold 0's own search, on the CT-like set the transferred genotype of that search
    searched = "3d_fullres_scnas_fold0" if dataset == "Dataset901_SimBrainTumour" else "3d_fullres_scnas"
    for method, configuration in (("nnU-Net", "3d_fullres"), ("SCNAS", searched), ("random-0", "3d_fullres_random0")):
        summary_file = (workdir / "nnUNet_results" / dataset / f"{TRAINER}__nnUNetPlans__{configuration}" /
                        "fold_0" / "validation" / "summary.json")
        summary = json.loads(summary_file.read_text())
        for row in (r for r in rows if r["method"] == method):
            expected = summary["foreground_mean"]["Dice"] if row["label_key"] == "average" \
                else summary["mean"][row["label_key"]]["Dice"]
            if math.isnan(expected):  # no nodule in the fold's one validation case, and none predicted
                assert row["dice_mean"] == "", (method, row["label"])
            else:
                assert float(row["dice_mean"]) == pytest.approx(expected, abs=1e-6), (method, row["label"])
    folder = workdir / "comparison" / dataset.split("_")[0]
    markdown = (folder / "comparison.md").read_text()
    assert "| nnU-Net |" in markdown and "| SCNAS |" in markdown and "| random-0 |" in markdown
    assert "- SCNAS vs random-0: " in markdown and "- random-0 vs nnU-Net: " in markdown  # the verdicts
    assert (folder / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    page = (folder / "report.html").read_text()
    assert "How this was made" in page and "nnUNetv2_train" in page and "cells of fold 0" in page.lower()


@pytest.mark.slow
def test_demo_leaves_search_outputs_and_says_where(demo):
    workdir, _, stdout, *_ = demo
    search = workdir / "nnUNet_results" / "Dataset901_SimBrainTumour" / SEARCH / "fold_0"
    assert (search / "genotype.json").is_file() and len(list((search / "cells").glob("*.png"))) == 4
    assert str(search / "genotype.json") in stdout and "comparison.md" in stdout


@pytest.mark.slow
def test_demo_killed_mid_stage_continues_and_builds_its_tables_from_one_run(demo):
    workdir, killed, rerun, _, seed = demo
    number_of_stages = int(rerun.split("=== [1/", 1)[1].split("]", 1)[0])
    # every stage finished exactly once over both runs: none finished before the kill was run again
    assert killed.count(": finished in") + rerun.count(": finished in") == number_of_stages, f"seed {seed}"
    assert rerun.count("done in an earlier run, skipped") == killed.count(": finished in")
    # the search went on from its last checkpoint: at most the interrupted epoch was redone
    resumed = epochs_started(rerun.split("=== [4/")[0])
    assert not resumed or resumed[0] >= epochs_started(killed)[-1], f"seed {seed}"
    search = workdir / "nnUNet_results" / "Dataset901_SimBrainTumour" / SEARCH / "fold_0"
    history = json.loads((search / "alpha_history.json").read_text())["epochs"]
    assert [h["epoch"] for h in history] == [0, 1]
    # both datasets' SCNAS networks were trained (and compared) as the final genotype, exported once per dataset
    genotype = json.loads((search / "genotype.json").read_text())
    for dataset, configuration in (("Dataset901_SimBrainTumour", "3d_fullres_scnas_fold0"),
                                   ("Dataset902_SimLungNodule", "3d_fullres_scnas")):
        trained = workdir / "nnUNet_results" / dataset / f"{TRAINER}__nnUNetPlans__{configuration}" / "plans.json"
        planned = workdir / "nnUNet_preprocessed" / dataset / "nnUNetPlans.json"
        for plans in (trained, planned):
            kwargs = json.loads(plans.read_text())["configurations"][configuration]["architecture"]["arch_kwargs"]
            assert kwargs["genotype"] == genotype, plans


@pytest.mark.slow
def test_demo_writes_nothing_in_the_home_or_current_folder(demo):
    *_, (home, cwd), _ = demo
    assert list(home.iterdir()) == [] and list(cwd.iterdir()) == []


@pytest.mark.slow
def test_demo_rerun_skips_finished_stages_and_refuses_other_settings(demo, nnunet_env_base):
    workdir, *_ = demo
    again = run_command([BIN / "nnunet-scnas", "demo", "--quick", "--workdir", workdir], nnunet_env_base)
    assert "done in an earlier run, skipped" in again.stdout and "$ nnUNetv2_train" not in again.stdout
    other = run_command([BIN / "nnunet-scnas", "demo", "--workdir", workdir], nnunet_env_base, check=False)
    assert other.returncode == 2
    assert other.stderr.strip().count("\n") == 0 and "other settings" in other.stderr


def digest(folder) -> dict:
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.slow
def test_demo_record_committed_and_cloned_continues_without_redoing_its_trainings(demo, nnunet_env_base, tmp_path):
    """A run longer than a machine lives: its working folder committed with git (its .gitignore leaves the data
    and checkpoints out), cloned elsewhere and run again rebuilds the same data and trains nothing."""
    workdir, *_ = demo
    env = {**nnunet_env_base, "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}
    repository, clone = tmp_path / "repository", tmp_path / "clone"
    shutil.copytree(workdir, repository)
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "r"]):
        run_command(["git", "-C", repository, *command], env)
    run_command(["git", "clone", "-q", repository, clone], env)
    kept = digest(clone)
    assert kept and not any(name.endswith(".pth") or name.startswith("nnUNet_preprocessed") for name in kept)
    again = run_command([BIN / "nnunet-scnas", "demo", "--quick", "--workdir", clone], env)
    assert "data stages run again" in again.stdout and "$ nnUNetv2_train" not in again.stdout
    for folder in ("nnUNet_raw", "nnUNet_preprocessed"):
        # not data: export-plans' timestamped backups; nnU-Net writes splits_final.json when a training first runs
        rebuilt, original = ({name: sha for name, sha in digest(root / folder).items()
                              if ".json.bak-" not in name and not name.endswith("splits_final.json")}
                             for root in (clone, workdir))
        assert rebuilt.keys() == original.keys()
        # the embedded sets, nnU-Net's plans and splits, the exported configurations: the same files again
        same = [name for name in rebuilt if name.endswith((".json", ".nii.gz"))]
        assert same and all(rebuilt[name] == original[name] for name in same), folder
    results = [name for name in kept if name.startswith(("nnUNet_results/", "comparison/"))]
    after = digest(clone)
    assert results and all(after[name] == kept[name] for name in results)  # the searches and trainings untouched
