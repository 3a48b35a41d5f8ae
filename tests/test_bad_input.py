"""Bad input a user can hand the plugin: each is one line saying what to do, an exit code != 0, and nothing on disk
changed. (Bad genotypes are in test_export_plans.py, bad search checkpoints and split files in
test_search_trainer.py and test_search_step.py, bad `compare` and `estimate` arguments beside those commands.)
"""
import json
from pathlib import Path

import pytest
import torch

from nnunet_scnas.cli.main import main


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err, err
    return err


def tree(folder: Path) -> dict:
    """Every file under `folder` with its bytes: what "nothing changed" compares."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("workdir, expected", [
    ("a_file", "is a file, not a folder"),
    ("a_file/run", "cannot write in --workdir"),
    ("/proc/scnas_demo", "cannot write in --workdir"),  # a folder nobody may create anything in, root included
])
def test_demo_workdir_that_is_a_file_or_cannot_be_written(workdir, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("the user's own file\n")
    before = tree(tmp_path)
    assert main(["demo", "--quick", "--workdir", workdir]) == 2
    assert expected in one_line_error(capsys)
    assert tree(tmp_path) == before


def _edit_exported_configuration(plans_file: Path, edit) -> None:
    """Hand-edits the configuration `exported_plans` holds (plain_unet, width 8)."""
    plans = json.loads(plans_file.read_text())
    edit(plans["configurations"]["3d_fullres_scnas"]["architecture"]["arch_kwargs"])
    plans_file.write_text(json.dumps(plans, indent=4))


HAND_EDITS = [
    (lambda kwargs: kwargs.update(stem_width=6), "stem_width must be a positive multiple of 4"),
    (lambda kwargs: kwargs.update(stem_width="wide"), "stem_width must be a positive multiple of 4"),
    (lambda kwargs: kwargs["strides"].pop(), "strides must have 4 entries"),
    (lambda kwargs: kwargs["strides"].__setitem__(2, [2, 0, 2]), "strides[2] must be 3 positive integers"),
]


@pytest.mark.parametrize("edit, expected", HAND_EDITS)
def test_hand_edited_architecture_of_an_exported_configuration(edit, expected, exported_plans, capsys):
    _edit_exported_configuration(exported_plans, edit)
    capsys.readouterr()
    before = tree(exported_plans.parent)
    assert main(["estimate", "-d", "951", "-c", "3d_fullres_scnas"]) == 2
    err = one_line_error(capsys)
    assert expected in err and "re-export it" in err
    assert tree(exported_plans.parent) == before


@pytest.mark.parametrize("edit, expected", HAND_EDITS)
def test_hand_edited_architecture_ends_nnunets_own_commands_in_one_line(edit, expected, exported_plans):
    # nnUNetv2_train and nnUNetv2_predict build the network through the trainer's build_network_architecture:
    # what ends the process there is a SystemExit with one line, which Python prints without a traceback
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    _edit_exported_configuration(exported_plans, edit)
    plans = PlansManager(str(exported_plans))
    with pytest.raises(SystemExit) as exit_:
        nnUNetTrainer.build_network_architecture(plans, plans.get_configuration("3d_fullres_scnas"), 4, 4, True)
    message = str(exit_.value.code)
    assert len(message.splitlines()) == 1 and expected in message and "re-export it" in message


REGIONS = {"background": 0, "whole tumour": [1, 2, 3], "tumour core": [2, 3], "enhancing tumour": [3]}


@pytest.mark.parametrize("labels, expected", [
    ({"labels": REGIONS, "regions_class_order": [3, 2, 1]}, "label 1 would be predicted as 3"),
    ({"labels": REGIONS, "regions_class_order": [1, 2]}, "as many entries as there are regions"),
    ({"labels": REGIONS}, "you need to define regions_class_order"),
    ({"labels": {"background": 0, "edema": 1, "ignore": 2, "enhancing": 3}}, "must have the highest label value"),
])
def test_bad_region_order_or_ignore_label_is_one_line_from_search_and_export(labels, expected, private_plans,
                                                                             capsys):
    from nnunetv2.run.run_training import get_trainer_from_args

    dataset_json = private_plans.parent / "dataset.json"
    content = {key: value for key, value in json.loads(dataset_json.read_text()).items()
               if key not in ("labels", "regions_class_order")}
    dataset_json.write_text(json.dumps({**content, **labels}))
    before = tree(private_plans.parent)
    assert main(["export-plans", "-d", "951", "-g", "plain_unet"]) == 2
    assert expected in one_line_error(capsys)
    with pytest.raises(SystemExit) as refusal:  # the search: when nnUNetv2_train builds its trainer
        get_trainer_from_args("951", "3d_fullres", 0, "nnUNetTrainerSCNASSearch_cpuQuick", device=torch.device("cpu"))
    message = str(refusal.value)
    assert message.startswith("nnunet-scnas: error:") and expected in message and "\n" not in message
    assert tree(private_plans.parent) == before


def test_regions_written_over_a_dataset_preprocessed_with_plain_labels_are_refused_by_the_search(
        planned_braintumour, private_plans):
    # the cases' class locations are nnU-Net's per label: no preprocessed case holds a region until it is redone
    from nnunetv2.run.run_training import get_trainer_from_args

    dataset_json = private_plans.parent / "dataset.json"
    dataset_json.write_text(json.dumps({**json.loads(dataset_json.read_text()), "labels": REGIONS,
                                        "regions_class_order": [1, 2, 3]}))
    data_identifier = json.loads(private_plans.read_text())["configurations"]["3d_fullres"]["data_identifier"]
    preprocessed = private_plans.parent / data_identifier
    preprocessed.mkdir()
    for properties in (planned_braintumour.preprocessed / data_identifier).glob("*.pkl"):
        (preprocessed / properties.name).write_bytes(properties.read_bytes())
    with pytest.raises(SystemExit) as refusal:
        get_trainer_from_args("951", "3d_fullres", 0, "nnUNetTrainerSCNASSearch_cpuQuick", device=torch.device("cpu"))
    message = str(refusal.value)
    assert "\n" not in message and "no preprocessed case holds whole tumour (labels 1, 2, 3), tumour core " \
                                   "(labels 2, 3), enhancing tumour (label 3)" in message
    assert "rerun nnUNetv2_plan_and_preprocess" in message
