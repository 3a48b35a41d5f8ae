"""nnUNetTrainerSCNASSearch: the search through nnU-Net's own entry point, exact resume, and bad input."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import BIN, SEARCH_TRAINER, fold_folder, run_command
from nnunet_scnas.errors import UserError
from nnunet_scnas.genotype import CELL_TYPES, Genotype
from nnunet_scnas.nnunet.search.split import split_weight_and_architecture
from nnunet_scnas.nnunet.training.cpu_layout import channels_last_on_cpu
from nnunet_scnas.nnunet.search.state import PlateauSchedule
from nnunet_scnas.supernet import SCNASSupernet

# ---------------------------------------------------------------- pieces, no nnU-Net run

def _trainer_class(name):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    return recursive_find_trainer_class_by_name(name)


def test_a_variant_with_a_stem_width_no_multiple_of_4_is_refused_in_one_line(capsys):
    variant = type("nnUNetTrainerSCNASSearch_stem6", (_trainer_class(SEARCH_TRAINER),), {"stem_width": 6})
    plan = SimpleNamespace(patch_size=[16, 32, 32], pool_op_kernel_sizes=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
    with pytest.raises(SystemExit) as exit_info:
        variant.build_network_architecture(None, plan, 1, 2, True)
    message = str(exit_info.value)
    assert len(message.splitlines()) == 1 and "stem_width must be a positive multiple of 4" in message
    assert "nnUNetTrainerSCNASSearch_stem6" in message


def test_checkpointed_cells_reach_the_network_inside_nnunets_wrappers():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    from nnunet_scnas.nnunet.training.checkpointing import checkpoint_cells_of
    network = SCNASSupernet(1, 2, 4, [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
    compiled = SimpleNamespace(_orig_mod=network)  # what torch.compile and DDP wrap, as attributes
    checkpoint_cells_of(SimpleNamespace(module=compiled))
    assert network.checkpoint_cells is True
    stock = PlainConvUNet(1, 4, [8, 16, 32, 64], torch.nn.Conv3d, 3, [1, 2, 2, 2], 2, 2, 2)
    with pytest.raises(UserError, match="need an SCNAS network.*PlainConvUNet"):
        checkpoint_cells_of(stock)


@pytest.mark.parametrize("device, channels_last", [("cpu", True), ("cuda", False)])
def test_cpu_training_stores_conv_weights_channels_last(device, channels_last):
    network = SCNASSupernet(1, 2, 4, [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]])
    optimizer = torch.optim.Adam(network.parameters())
    channels_last_on_cpu(network, torch.device(device))  # only the device's type is read: no GPU needed
    convs = [m.weight for m in network.modules() if isinstance(m, torch.nn.Conv3d)]
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    assert convs and all(w.is_contiguous(memory_format=layout) for w in convs)
    assert any(not w.is_contiguous() for w in convs) == channels_last  # (1x1x1 kernels are both layouts at once)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in network.parameters()}  # converted in place: the optimizer still holds them
    if channels_last:  # and the network still trains: one step moves the weights
        before = convs[0].detach().clone()
        sum(o.square().mean() for o in network(torch.randn(1, 1, 16, 16, 16))).backward()
        optimizer.step()
        assert not torch.equal(before, convs[0])


@pytest.mark.parametrize("num_cases", [5, 8, 13, 40])
def test_bilevel_split_is_4_to_1_disjoint_and_seeded(num_cases):
    cases = [f"case_{i:03d}" for i in range(num_cases)]
    weight, architecture = split_weight_and_architecture(cases, seed=3)
    assert sorted(weight + architecture) == cases and not set(weight) & set(architecture)
    assert len(architecture) == max(1, round(0.2 * num_cases))
    assert (weight, architecture) == split_weight_and_architecture(list(reversed(cases)), seed=3)
    assert (weight, architecture) != split_weight_and_architecture(cases, seed=4) or num_cases == 5


def test_bilevel_split_needs_five_cases():
    with pytest.raises(UserError, match="at least 5"):
        split_weight_and_architecture(["a", "b", "c", "d"], seed=0)


def test_projected_end_extrapolates_the_last_epoch():
    from datetime import datetime
    from types import SimpleNamespace

    from nnunet_scnas.nnunet.search.progress import projected_end

    timestamps = {"epoch_start_timestamps": 1000.0, "epoch_end_timestamps": 1000.0 + 1800}  # a 30-minute epoch
    logger = SimpleNamespace(get_value=lambda key, step: timestamps[key])
    line = projected_end(logger, 199, now=datetime(2026, 1, 1, 0, 0))
    assert "2026-01-05 03:30" in line and "99.5 h from now" in line and "199 more epochs of 30.0 min" in line


def test_plateau_schedule_reduces_lr_after_patience_epochs_without_improvement():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    plateau = PlateauSchedule(optimizer, patience=3, factor=0.1)
    reduced = [plateau.observe(loss) for loss in [5, 4, 4.5, 4.2, 4.1, 3.9, 4, 4, 4]]
    assert reduced == [False, False, False, False, True, False, False, False, True]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    restored = PlateauSchedule(optimizer, patience=3, factor=0.1)
    restored.load_state_dict(plateau.state_dict())
    assert restored.state_dict() == plateau.state_dict()


# ---------------------------------------------------------------- the real entry point

@pytest.mark.slow
def test_search_runs_through_nnunetv2_train(planned_braintumour, uninterrupted_search):
    # the quick search through nnUNetv2_train (augmentation in the training process; the demo's search uses workers)
    folder = uninterrupted_search

    genotype = Genotype.from_dict(json.loads((folder / "genotype.json").read_text()))
    history = json.loads((folder / "alpha_history.json").read_text())["epochs"]
    assert [h["epoch"] for h in history] == [0, 1]
    assert Genotype.from_dict(history[-1]["genotype"]) == genotype
    assert all(np.array(history[-1]["alphas"][c]).shape == (14, 8) for c in CELL_TYPES)
    assert history[0]["tau"] > history[1]["tau"]
    for picture in ["search_progress.png", *(f"cells/{c}.png" for c in CELL_TYPES)]:
        assert (folder / picture).read_bytes()[:4] == b"\x89PNG", picture

    # the search never saw the fold's validation cases
    split = json.loads((folder / "bilevel_split.json").read_text())
    nnunet_split = json.loads((planned_braintumour.preprocessed / "splits_final.json").read_text())[0]
    assert sorted(split["weight"] + split["architecture"]) == sorted(nnunet_split["train"])
    assert not set(split["weight"] + split["architecture"]) & set(nnunet_split["val"])

    # nnU-Net's run finished cleanly and said what it did about validation
    assert (folder / "checkpoint_final.pth").is_file()
    log = "".join(p.read_text() for p in folder.glob("training_log_*.txt"))
    assert "architecture entropy" in log and "Validation skipped for the search" in log
    assert "projected end of the search" in log and "1 more epochs" in log  # after the first of 2 epochs

    # the search ranked its genotype against 20 random ones in the trained supernet, and said where it stands
    ranking = json.loads((folder / "ranking.json").read_text())
    assert [g["name"] for g in ranking["genotypes"]] == ["found", *(f"random:{seed}" for seed in range(20))]
    assert all(np.isfinite(g["loss"]) for g in ranking["genotypes"])
    assert ranking["random_genotypes"] == 20 and 0 <= ranking["better_than"] <= 20
    assert ranking["passed"] == (ranking["better_than"] > 10)
    assert set(ranking["cases"]) <= set(split["architecture"])
    assert (folder / "ranking.png").read_bytes()[:4] == b"\x89PNG"
    assert f"better than {ranking['better_than']} of 20 random genotypes" in log and ranking["verdict"] in log
    assert log.index("Training done.") < log.index("Ranking check:")  # after nnU-Net wrote checkpoint_final.pth


# ---------------------------------------------------------------- bad input: one clear line, before training

def _refusal(dataset, tmp_path, monkeypatch, configuration="3d_fullres", plans="nnUNetPlans", resume=False,
             results=None):
    """What nnUNetv2_train does up to the first epoch, in this process; returns the refusal message."""
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    env = dataset.env_with_results(results or tmp_path / "results", nnUNet_n_proc_DA="0")
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as refusal:
        trainer = get_trainer_from_args(str(dataset.dataset_id), configuration, 0, SEARCH_TRAINER, plans,
                                        device=torch.device("cpu"))
        maybe_load_checkpoint(trainer, resume, False)
        trainer.on_train_start()  # builds the data loaders: the last step before the first epoch
    message = str(refusal.value)
    assert message.startswith("nnunet-scnas: error:") and "\n" not in message
    return message


@pytest.mark.slow
def test_refusal_through_the_entry_point_is_one_line(planned_braintumour, tmp_path):
    env = planned_braintumour.env_with_results(tmp_path / "results")
    result = run_command([BIN / "nnUNetv2_train", planned_braintumour.dataset_id, "2d", 0, "-tr", SEARCH_TRAINER,
                          "-device", "cpu"], env, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("nnunet-scnas: error: SCNAS searches 3D networks")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_2d_configuration_is_refused(planned_braintumour, tmp_path, monkeypatch):
    assert "3D" in _refusal(planned_braintumour, tmp_path, monkeypatch, configuration="2d")


@pytest.mark.slow
def test_plan_without_three_downsamplings_is_refused(planned_braintumour, tmp_path, monkeypatch):
    plans = json.loads(planned_braintumour.pristine_plans)
    architecture = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    architecture["strides"] = architecture["strides"][:3]
    architecture["n_stages"] = 3
    (planned_braintumour.preprocessed / "shallowPlans.json").write_text(json.dumps(plans))
    message = _refusal(planned_braintumour, tmp_path, monkeypatch, plans="shallowPlans")
    assert "3 downsamplings" in message and "has 2" in message


@pytest.mark.slow
def test_fold_with_fewer_than_five_training_cases_is_refused(planned_braintumour, tmp_path, monkeypatch):
    cases = sorted(p.name.removesuffix(".nii.gz") for p in (planned_braintumour.raw / "labelsTr").iterdir())
    split_file = planned_braintumour.preprocessed / "splits_final.json"
    original = split_file.read_bytes() if split_file.is_file() else None
    try:  # a split file of the user's whose fold 0 trains on 4 cases
        split_file.write_text(json.dumps([{"train": cases[:4], "val": cases[4:]}]))
        message = _refusal(planned_braintumour, tmp_path, monkeypatch)
    finally:
        split_file.write_bytes(original) if original is not None else split_file.unlink()
    assert "at least 5" in message and "has 4" in message


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["garbage", "other_search_space", "old_cell_layout", "other_supernet"])
def test_damaged_or_mismatched_checkpoint_is_refused_on_continue(planned_braintumour, tmp_path, monkeypatch, damage):
    results = tmp_path / "results"
    folder = fold_folder(results, planned_braintumour)
    folder.mkdir(parents=True)
    if damage == "garbage":
        (folder / "checkpoint_latest.pth").write_bytes(b"not a checkpoint, half written")
    else:
        from nnunet_scnas.cell import CELL_LAYOUT
        from nnunet_scnas.supernet import SCNASSupernet

        width = 4 if damage == "other_search_space" else 8
        network = SCNASSupernet(4, 4, width, [[1, 1, 1], [2, 2, 2], [2, 2, 2], [1, 2, 2]])
        torch.save({"network_weights": network.state_dict(), "trainer_name": SEARCH_TRAINER,
                    "optimizer_state": {"search_space": "another-space" if damage == "other_search_space"
                                        else "scnas-3d-4node-8op-v1", "architecture": {},
                                        **({} if damage == "old_cell_layout" else {"cell_layout": CELL_LAYOUT})}},
                   folder / "checkpoint_latest.pth")
    message = _refusal(planned_braintumour, tmp_path, monkeypatch, resume=True, results=results)
    expected = {"garbage": "damaged", "other_search_space": "another-space", "old_cell_layout": "old cell layout",
                "other_supernet": "different supernet"}
    assert expected[damage] in message and "checkpoint_" in message


@pytest.mark.slow
def test_search_split_edited_to_hold_validation_cases_is_refused_on_continue(planned_braintumour, tmp_path,
                                                                              monkeypatch):
    results = tmp_path / "results"
    folder = fold_folder(results, planned_braintumour)
    folder.mkdir(parents=True)
    from nnunetv2.run.run_training import get_trainer_from_args

    for variable, value in planned_braintumour.env_with_results(results).items():
        monkeypatch.setenv(variable, value)
    train, val = get_trainer_from_args(str(planned_braintumour.dataset_id), "3d_fullres", 0, SEARCH_TRAINER,
                                       device=torch.device("cpu")).do_split()  # nnU-Net's fold 0
    edited = {"seed": 0, "weight": sorted(train)[1:], "architecture": [val[0]]}  # one case swapped
    (folder / "bilevel_split.json").write_text(json.dumps(edited))
    before = (folder / "bilevel_split.json").read_bytes()
    message = _refusal(planned_braintumour, tmp_path, monkeypatch, resume=True, results=results)
    assert "1 of the fold's validation cases" in message and val[0] in message and "never see" in message
    assert (folder / "bilevel_split.json").read_bytes() == before


@pytest.mark.slow
def test_cost_aware_search_runs_through_nnunetv2_train(planned_braintumour, tmp_path):
    """The quick cost-aware variant: the table measured at start and cached, a weights-only first epoch, the expected
    cost recorded per epoch (what `--c` does with the cached table: `test_search_cost.py`)."""
    trainer = "nnUNetTrainerSCNASSearch_cpuQuickCost"
    env = planned_braintumour.env_with_results(tmp_path / "results", nnUNet_n_proc_DA="0")
    command = [BIN / "nnUNetv2_train", planned_braintumour.dataset_id, "3d_fullres", 0, "-tr", trainer, "-device",
               "cpu"]
    run_command(command, env)
    folder = fold_folder(tmp_path / "results", planned_braintumour, trainer)
    table = json.loads((folder / "cost_table.json").read_text())
    assert table["key"]["memory_mode"] == "plain" and table["key"]["device"].startswith("CPU")
    history = json.loads((folder / "alpha_history.json").read_text())["epochs"]
    assert history[0]["architecture_loss"] is None and history[1]["architecture_loss"] is not None
    assert [h["cost"]["weight"] for h in history] == [0.0, 1.0] and history[0]["tau"] == history[1]["tau"]
    assert all(h["cost"]["expected"]["memory"] > 0 and h["cost"]["budget"]["memory"] == 2.5 for h in history)
    log = "".join(p.read_text() for p in folder.glob("training_log_*.txt"))
    assert "cost table: measured in" in log and "weights-only warm-up, epoch 1 of 1" in log
    assert "expected cost of the architecture distribution" in log
