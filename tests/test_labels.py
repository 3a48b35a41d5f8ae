"""Label setups as nnU-Net trains them (regions, ignore labels): our checks, and the search's loss built by nnU-Net."""
import json

import numpy as np
import pytest
import torch
from batchgenerators.utilities.file_and_folder_operations import write_pickle
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunet_scnas.errors import UserError
from nnunet_scnas.nnunet.labels import (check_every_head_annotated, check_regions_class_order, describe_heads,
                                        head_names)
from nnunet_scnas.nnunet.training.jaccard_loss import SoftJaccardLoss

BRATS = {"background": 0, "whole tumour": [1, 2, 3], "tumour core": [2, 3], "enhancing tumour": [3]}


@pytest.mark.parametrize("labels, order", [
    (BRATS, [1, 2, 3]),
    # KiTS23 as nnU-Net converts it: kidney and masses, masses, tumour
    ({"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2}, [1, 3, 2]),
    ({"background": 0, "a": 1, "b": 2}, None),
])
def test_region_orders_that_give_the_labels_back_are_accepted(labels, order):
    check_regions_class_order(LabelManager(labels, order), "Dataset001_X")


@pytest.mark.parametrize("order, wrong", [([3, 2, 1], "label 1 would be predicted as 3"),
                                          ([1, 3, 2], "label 2 would be predicted as 3")])
def test_a_region_order_that_mislabels_a_voxel_is_one_line(order, wrong):
    with pytest.raises(UserError, match=wrong) as error:
        check_regions_class_order(LabelManager(BRATS, order), "Dataset001_X")
    assert "\n" not in str(error.value) and "[1, 2, 3]" in str(error.value)


def test_heads_are_named_from_dataset_json_in_nnunets_order():
    regions = {"labels": BRATS, "regions_class_order": [1, 2, 3]}
    assert head_names(LabelManager(BRATS, [1, 2, 3]), regions) == ["whole tumour", "tumour core", "enhancing tumour"]
    sparse = {"labels": {"background": 0, "edema": 1, "tumour": 2, "ignore": 3}}
    line = describe_heads(LabelManager(sparse["labels"], None), sparse)
    assert line == "output heads (labels, softmax): edema, tumour; ignore label 3 masked out of the loss and the " \
                   "pseudo Dice"


def _case(folder, name, found):
    """A preprocessed case's properties file with class locations for the regions in `found`."""
    locations = {region: np.ones((5 if region in found else 0, 4), dtype=np.int64)
                 for region in [(1, 2, 3), (2, 3), (3,)]}
    write_pickle({"class_locations": locations}, str(folder / f"{name}.pkl"))


def test_every_head_must_be_annotated_in_some_case(tmp_path):
    manager, dataset_json = LabelManager(BRATS, [1, 2, 3]), {"labels": BRATS}
    _case(tmp_path, "a", [(1, 2, 3)])
    _case(tmp_path, "b", [(1, 2, 3), (2, 3)])
    with pytest.raises(UserError, match=r"no preprocessed case holds enhancing tumour \(label 3\):"):
        check_every_head_annotated(manager, dataset_json, tmp_path, "Dataset001_X")
    _case(tmp_path, "c", [(3,)])
    (tmp_path / "d.pkl").write_bytes(b"not read: every head was found before it")
    check_every_head_annotated(manager, dataset_json, tmp_path, "Dataset001_X")
    check_every_head_annotated(manager, dataset_json, tmp_path / "not_preprocessed", "Dataset001_X")


@pytest.mark.parametrize("labels, trainer, loss_class", [
    ({"labels": BRATS, "regions_class_order": [1, 2, 3]}, "nnUNetTrainerSCNASSearch_cpuQuick", "DC_and_BCE_loss"),
    ({"labels": BRATS, "regions_class_order": [1, 2, 3]}, "nnUNetTrainerSCNASSearch_cpuBenchmarkJaccard",
     "SoftJaccardLoss"),
    ({"labels": {"background": 0, "edema": 1, "core": 2, "enhancing": 3, "ignore": 4}},
     "nnUNetTrainerSCNASSearch_cpuQuick", "DC_and_CE_loss"),
])
def test_the_search_trains_nnunets_loss_for_regions_and_ignore_labels(labels, trainer, loss_class, private_plans):
    from nnunetv2.run.run_training import get_trainer_from_args

    dataset_json = private_plans.parent / "dataset.json"
    dataset_json.write_text(json.dumps({**json.loads(dataset_json.read_text()), **labels}))
    search = get_trainer_from_args("951", "3d_fullres", 0, trainer, device=torch.device("cpu"))
    loss = search._build_loss()  # nnU-Net's deep-supervision wrapper around what it weighs
    assert type(loss.loss).__name__ == loss_class
    heads, manager = search.label_manager.num_segmentation_heads, search.label_manager
    shapes = [(1, heads, 8 // 2 ** level, 8 // 2 ** level, 8 // 2 ** level) for level in range(3)]
    seg = torch.randint(0, 5 if manager.has_ignore_label else 4, (1, 1, 8, 8, 8))
    targets, outputs = [], []
    for shape in shapes:  # a confident, correct prediction: nnU-Net's loss and ours are near their minimum
        level_seg = seg[..., ::8 // shape[-1], ::8 // shape[-1], ::8 // shape[-1]]
        if manager.has_regions:
            target = torch.cat([torch.isin(level_seg, torch.tensor(region)) for region in manager.foreground_regions],
                               1).float()
            output = 20 * target - 10
        else:
            target = level_seg.float()
            labelled = torch.where(level_seg == manager.ignore_label, 0, level_seg)[:, 0]
            output = 20 * torch.nn.functional.one_hot(labelled, heads).movedim(-1, 1).float() - 10
        targets.append(target)
        outputs.append(output)
    perfect = loss(outputs, targets).item()
    worse = loss([-o for o in outputs], targets).item()
    assert perfect < worse
    if isinstance(loss.loss, SoftJaccardLoss):
        assert loss.loss.regions and perfect == pytest.approx(0, abs=1e-3)
