"""Kills at any moment, through the real entry points: nothing finished is lost, nothing half-written is read,
and `--c` (or running the command again) ends where an uninterrupted run ends.

Every run is a subprocess killed with SIGKILL, so nothing gets to clean up. Augmentation runs in the training
process (nnUNet_n_proc_DA=0): a resumed search is then the uninterrupted one exactly. The random kill moments
come from a seed that a failure prints.
"""
import json
import os
import random
import time

import pytest
import torch

from helpers import (BIN, NNUNET_PATH_VARIABLES, assert_same_search, epochs_started, fold_folder, kill, random_genotype,
                     run_command, search_command, search_epochs, start_command, wait_until, with_paused_write)
from nnunet_scnas.genotype import Genotype

PNG_END = b"IEND\xaeB`\x82"  # the last chunk of every complete PNG


def search_env(dataset, results):
    return dataset.env_with_results(results, nnUNet_n_proc_DA="0")


def kill_at_a_random_moment_of_epoch(command, env, output, epoch: int, rng: random.Random) -> list[int]:
    """Start `command`, kill it within epoch `epoch` (nnU-Net's epochs take ~3 s here); the epochs it started."""
    process = start_command(command, env, output)
    wait_until(lambda: epoch in epochs_started(output.read_text()), process, what=f"epoch {epoch}")
    time.sleep(rng.uniform(0, 2))
    kill(process)
    return epochs_started(output.read_text())


@pytest.mark.slow
def test_search_killed_at_random_moments_resumes_to_the_uninterrupted_result(planned_braintumour,
                                                                             uninterrupted_search, tmp_path):
    seed = random.randrange(2**32)
    rng, results = random.Random(seed), tmp_path / "results"
    env = search_env(planned_braintumour, results)
    # first before any checkpoint exists (--c then starts afresh), then in the last epoch
    for run, epoch in enumerate((0, 1)):
        started = kill_at_a_random_moment_of_epoch(search_command(planned_braintumour, resume=run > 0), env,
                                                   tmp_path / f"killed_{run}.txt", epoch, rng)
    resumed = run_command(search_command(planned_braintumour, resume=True), env).stdout
    # at most the interrupted epoch is redone (none, if the kill came after its checkpoint)
    assert epochs_started(resumed)[0] >= started[-1], f"seed {seed}"
    folder = fold_folder(results, planned_braintumour)
    assert_same_search(uninterrupted_search, folder)
    assert (folder / "checkpoint_final.pth").is_file() and not (folder / "checkpoint_latest.pth").exists()
    # the logits moved at all: the equality above is not that of two untouched initialisations
    first, last = search_epochs(folder)[0]["alphas"], search_epochs(folder)[-1]["alphas"]
    assert any(first[cell] != last[cell] for cell in first), f"seed {seed}"


@pytest.mark.slow
def test_search_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(planned_braintumour,
                                                                                uninterrupted_search, tmp_path):
    results, marker = tmp_path / "results", tmp_path / "paused"
    env = search_env(planned_braintumour, results)
    command = with_paused_write(search_command(planned_braintumour), "checkpoint_final.pth", 1, marker)
    process = start_command(command, env, tmp_path / "killed.txt")
    wait_until(marker.exists, process, what="the final checkpoint's write")
    kill(process)

    folder = fold_folder(results, planned_braintumour)
    assert not (folder / "checkpoint_final.pth").exists()  # half of it lies under a name --c never reads
    previous = torch.load(folder / "checkpoint_latest.pth", map_location="cpu", weights_only=False)  # as nnU-Net does
    assert previous["current_epoch"] == 1
    resumed = run_command(search_command(planned_braintumour, resume=True), env).stdout
    assert epochs_started(resumed) == [1]
    assert_same_search(uninterrupted_search, folder)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["genotype.json", "alpha_history.json", "search_progress.png"])
def test_search_killed_while_writing_its_report_leaves_the_previous_version_whole(planned_braintumour, tmp_path,
                                                                                  name):
    results, marker = tmp_path / "results", tmp_path / "paused"
    # the second write: the one of epoch 1, over epoch 0's
    command = with_paused_write(search_command(planned_braintumour), name, 2, marker)
    process = start_command(command, search_env(planned_braintumour, results), tmp_path / "killed.txt")
    wait_until(marker.exists, process, what=f"the write of {name}")
    kill(process)

    folder = fold_folder(results, planned_braintumour)
    assert list(folder.glob(f".{name}.*.tmp")), "the kill did not come mid-write"
    history = search_epochs(folder)  # every file a reader may open is whole
    genotype = Genotype.from_dict(json.loads((folder / "genotype.json").read_text()))
    assert (folder / "search_progress.png").read_bytes().endswith(PNG_END)
    if name == "alpha_history.json":
        assert [h["epoch"] for h in history] == [0]
    if name == "genotype.json":
        assert genotype == Genotype.from_dict(history[0]["genotype"])


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
def test_retraining_killed_and_resumed_finishes_validates_and_round_trips_the_network(planned_braintumour, tmp_path,
                                                                                    monkeypatch):
    from nnunetv2.run.run_training import get_trainer_from_args

    dataset, configuration, trainer = planned_braintumour, "3d_fullres_scnas_faults", "nnUNetTrainerCPUBudget_quick"
    genotype = tmp_path / "genotype.json"
    genotype.write_text(json.dumps(random_genotype(15).to_dict()))  # mixed ops, as a search leaves them
    env = dataset.env_with_results(tmp_path / "results", nnUNet_n_proc_DA="0")
    run_command([BIN / "nnunet-scnas", "export-plans", "-d", dataset.dataset_id, "-g", genotype, "-o", configuration,
                 "--width", "8"], env)
    train = [BIN / "nnUNetv2_train", dataset.dataset_id, configuration, 0, "-tr", trainer, "-device", "cpu"]
    seed = random.randrange(2**32)
    started = kill_at_a_random_moment_of_epoch(train, env, tmp_path / "killed.txt", 1, random.Random(seed))
    folder = fold_folder(tmp_path / "results", dataset, trainer, configuration)
    latest = torch.load(folder / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    assert latest["current_epoch"] == 1  # written after every epoch, so --c goes on from the last one
    resumed = run_command([*train, "--c"], env).stdout
    assert epochs_started(resumed)[0] >= started[-1] == 1, f"seed {seed}"

    assert "mean" in json.loads((folder / "validation" / "summary.json").read_text())
    # the network nnU-Net builds from the plans takes the checkpoint's state exactly (what predict does too)
    for variable, value in env.items():  # nnU-Net reads its folders when its trainer is built
        monkeypatch.setenv(variable, value)
    built = get_trainer_from_args(str(dataset.dataset_id), configuration, 0, trainer, device=torch.device("cpu"))
    built.load_checkpoint(str(folder / "checkpoint_final.pth"))
    saved = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    state = built.network.state_dict()
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)
