"""Kills at any moment, through the real entry points: nothing finished is lost, nothing half-written is read,
and `--c` (or running the command again) ends where an uninterrupted run ends.

Every run is a subprocess killed with SIGKILL, so nothing gets to clean up. Augmentation runs in the training
process (nnUNet_n_proc_DA=0): a resumed search is then the uninterrupted one exactly. The random kill moments
come from a seed that a failure prints.
"""
import json
import os
import random

import pytest
import torch

from helpers import (BIN, NNUNET_PATH_VARIABLES, assert_same_search, epochs_started, fold_folder, kill,
                     kill_at_a_random_moment_of_epoch, run_command, search_command, search_epochs, start_command,
                     wait_until, with_paused_write)
from nnunet_scnas.genotype import Genotype

PNG_END = b"IEND\xaeB`\x82"  # the last chunk of every complete PNG


def search_env(dataset, results):
    return dataset.env_with_results(results, nnUNet_n_proc_DA="0")


REPORT_FILES = ("genotype.json", "alpha_history.json", "search_progress.png")
PAUSED_WRITES = (*REPORT_FILES, "checkpoint_final.pth")  # killed half-way through, in this order


@pytest.fixture(scope="module")
def killed_search(planned_braintumour, tmp_path_factory):
    """One search killed again and again, each time continued with `--c` as a user would, then run to its end.

    Killed: at a random moment of epoch 0 of a fresh run (before any checkpoint exists: --c then starts afresh);
    half-way through writing epoch 1's genotype.json, alpha_history.json, search_progress.png; half-way through
    writing checkpoint_final.pth; at a random moment of epoch 1. Returns the epochs each run started (`outputs`),
    what each kill mid-write left on disk (`left`), the fold folder and the seed of the random moments.
    """
    seed = random.randrange(2**32)
    rng, root = random.Random(seed), tmp_path_factory.mktemp("killed_search")
    env, folder = search_env(planned_braintumour, root / "results"), fold_folder(root / "results", planned_braintumour)
    outputs, left = {}, {}
    outputs["random, epoch 0"] = kill_at_a_random_moment_of_epoch(search_command(planned_braintumour), env,
                                                                  root / "random_0.txt", 0, rng)
    for name in PAUSED_WRITES:
        # epoch 1's report is the first a run resuming at epoch 1 writes, the second of a run starting afresh
        occurrence = 1 if name.endswith(".pth") or (folder / "checkpoint_latest.pth").exists() else 2
        temporary_before = temporary_files(folder, name)
        marker, output = root / f"paused_{name}", root / f"killed_{name}.txt"
        command = with_paused_write(search_command(planned_braintumour, resume=True), name, occurrence, marker)
        process = start_command(command, env, output)
        wait_until(marker.exists, process, what=f"the write of {name}")
        kill(process)
        outputs[name] = epochs_started(output.read_text())
        left[name] = {"new_temporary": temporary_files(folder, name) - temporary_before,
                      "final": (folder / "checkpoint_final.pth").exists(),
                      "latest_epoch": torch.load(folder / "checkpoint_latest.pth", map_location="cpu",
                                                 weights_only=False)["current_epoch"],  # as nnU-Net reads it
                      **{report: (folder / report).read_bytes() for report in REPORT_FILES}}
    outputs["random, epoch 1"] = kill_at_a_random_moment_of_epoch(search_command(planned_braintumour, resume=True),
                                                                  env, root / "random_1.txt", 1, rng)
    outputs["finished"] = epochs_started(run_command(search_command(planned_braintumour, resume=True), env).stdout)
    return outputs, left, folder, seed


def temporary_files(folder, name: str) -> set:
    """Where a write of `name` goes first: `.NAME.*.tmp` (the plugin's writes), `NAME.partial` (checkpoints)."""
    return set(folder.glob(f".{name}.*.tmp")) | set(folder.glob(f"{name}.partial"))


def the_run_after(name: str) -> str:
    runs = ["random, epoch 0", *PAUSED_WRITES, "random, epoch 1", "finished"]
    return runs[runs.index(name) + 1]


@pytest.mark.slow
def test_search_killed_at_random_moments_resumes_to_the_uninterrupted_result(killed_search, uninterrupted_search):
    outputs, _, folder, seed = killed_search
    # at most the interrupted epoch is redone (none, if the kill came after its checkpoint)
    for killed in ("random, epoch 0", "random, epoch 1"):
        resumed = outputs[the_run_after(killed)]
        assert not resumed or resumed[0] >= outputs[killed][-1], f"seed {seed}"
    assert_same_search(uninterrupted_search, folder)
    assert (folder / "checkpoint_final.pth").is_file() and not (folder / "checkpoint_latest.pth").exists()
    # the logits moved at all: the equality above is not that of two untouched initialisations
    first, last = search_epochs(folder)[0]["alphas"], search_epochs(folder)[-1]["alphas"]
    assert any(first[cell] != last[cell] for cell in first), f"seed {seed}"


@pytest.mark.slow
def test_search_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(killed_search,
                                                                                uninterrupted_search):
    outputs, left, folder, _ = killed_search
    killed = left["checkpoint_final.pth"]
    assert killed["new_temporary"] and not killed["final"]  # half of it lies under a name --c never reads
    assert killed["latest_epoch"] == 1
    assert outputs[the_run_after("checkpoint_final.pth")] == [1]  # the last epoch again, from the latest checkpoint
    assert_same_search(uninterrupted_search, folder)


@pytest.mark.slow
@pytest.mark.parametrize("name", REPORT_FILES)
def test_search_killed_while_writing_its_report_leaves_the_previous_version_whole(killed_search,
                                                                                  uninterrupted_search, name):
    outputs, left, folder, _ = killed_search
    killed = left[name]
    assert killed["new_temporary"], "the kill did not come mid-write"
    # every file a reader may open is whole
    history = json.loads(killed["alpha_history.json"])["epochs"]
    genotype = Genotype.from_dict(json.loads(killed["genotype.json"]))
    assert killed["search_progress.png"].endswith(PNG_END)
    if name == "alpha_history.json":
        assert [h["epoch"] for h in history] == [0]
    if name == "genotype.json":
        assert genotype == Genotype.from_dict(history[0]["genotype"])
    # --c redoes the epoch it was killed in, from the checkpoint written after epoch 0, and the search ends as it
    # would have
    assert killed["latest_epoch"] == 1 and outputs[the_run_after(name)][0] == 1
    assert_same_search(uninterrupted_search, folder)


@pytest.mark.slow
def test_export_killed_mid_write_leaves_the_old_plans_and_a_rerun_writes_the_new(private_plans, planned_braintumour,
                                                                                 tmp_path):
    env = {**planned_braintumour.env, **{variable: os.environ[variable] for variable in NNUNET_PATH_VARIABLES}}
    old, marker = private_plans.read_bytes(), tmp_path / "paused"
    export = [BIN / "nnunet-scnas", "export-plans", "-d", planned_braintumour.dataset_id, "-g", "plain_unet",
              "--width", "8"]
    process = start_command(with_paused_write(export, private_plans.name, 1, marker), env, tmp_path / "killed.txt")
    wait_until(marker.exists, process, what="the plans' write")
    kill(process)
    assert private_plans.read_bytes() == old
    assert [b.read_bytes() for b in private_plans.parent.glob("nnUNetPlans.json.bak-*")] == [old]

    run_command(export, env)
    new = json.loads(private_plans.read_text())["configurations"]
    assert new.pop("3d_fullres_scnas")["architecture"]["arch_kwargs"]["stem_width"] == 8
    assert new == json.loads(old)["configurations"]


@pytest.mark.slow
def test_retraining_killed_and_resumed_finishes_validates_and_round_trips_the_network(retrained_after_a_kill,
                                                                                    planned_braintumour, monkeypatch):
    from nnunetv2.run.run_training import get_trainer_from_args

    run = retrained_after_a_kill
    assert run.latest_epoch == 1  # written after every epoch, so --c goes on from the last one
    assert run.resumed[0] >= run.killed[-1] == 1, f"seed {run.seed}"
    assert "mean" in json.loads((run.folder / "validation" / "summary.json").read_text())
    # the network nnU-Net builds from the plans takes the checkpoint's state exactly (what predict does too)
    for variable, value in run.env.items():  # nnU-Net reads its folders when its trainer is built
        monkeypatch.setenv(variable, value)
    built = get_trainer_from_args(str(planned_braintumour.dataset_id), run.configuration, 0, run.trainer,
                                  device=torch.device("cpu"))
    built.load_checkpoint(str(run.folder / "checkpoint_final.pth"))
    saved = torch.load(run.folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    state = built.network.state_dict()
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
