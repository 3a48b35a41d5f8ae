"""A dataset's label setup as nnU-Net trains it (plain labels, BraTS-style regions, an ignore label), checked before
anything is trained, with one clear line per problem.

nnU-Net itself handles regions and ignore labels everywhere SCNAS trains, predicts or evaluates: its loss (Dice +
BCE on sigmoid heads for regions, the ignore label masked), its pseudo Dice and its evaluation (per region, ignored
voxels left out). What it checks with assertions (a traceback) or not at all is checked here.
"""
from pathlib import Path

from batchgenerators.utilities.file_and_folder_operations import load_pickle
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunet_scnas.errors import UserError


def checked_label_manager(dataset_json: dict, dataset_name: str) -> LabelManager:
    """nnU-Net's LabelManager of `dataset_json`, its region order checked (`check_regions_class_order`).

    Args:
        dataset_json: the dataset.json nnU-Net planned with (its `labels`, `regions_class_order`).
        dataset_name: DatasetXXX_Name, for the messages.
    """
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict):
        raise UserError(f"{dataset_name}: dataset.json has no labels (see nnU-Net's dataset_format.md)")
    try:
        label_manager = LabelManager(labels, dataset_json.get("regions_class_order"))
    except (AssertionError, RuntimeError) as error:  # nnU-Net's asserts: regions_class_order, ignore label, background
        raise UserError(f"{dataset_name}: dataset.json's labels are not usable by nnU-Net "
                        f"({' '.join(str(error).split())}); fix them and rerun nnUNetv2_plan_and_preprocess "
                        f"with --verify_dataset_integrity") from None
    check_regions_class_order(label_manager, dataset_name)
    return label_manager


def check_regions_class_order(label_manager: LabelManager, dataset_name: str) -> None:
    """`regions_class_order` must turn the predicted regions back into the labels they came from.

    nnU-Net paints region i's voxels with `regions_class_order[i]`, later regions over earlier ones; a voxel of
    label l lies in every region holding l, so the last of those must paint l (BraTS: whole tumour {1,2,3} -> 1,
    core {2,3} -> 2, enhancing {3} -> 3). nnU-Net checks only the number of entries.
    """
    if not label_manager.has_regions:
        return
    order = list(label_manager.regions_class_order)
    for label in label_manager.foreground_labels:
        painted = 0
        for region, value in zip(label_manager.foreground_regions, order):
            if label in _as_tuple(region):
                painted = value
        if painted != label:
            raise UserError(f"{dataset_name}: regions_class_order {order} does not match the regions "
                            f"{[list(_as_tuple(r)) for r in label_manager.foreground_regions]}: a voxel of label "
                            f"{label} would be predicted as {painted}; give each region, in the order of "
                            f"dataset.json's labels, the label that only it and the regions after it hold "
                            f"(BraTS: [1, 2, 3])")


def check_every_head_annotated(label_manager: LabelManager, dataset_json: dict, preprocessed_folder: str | Path,
                               dataset_name: str) -> None:
    """Every label or region the network predicts must occur in some preprocessed case: a head nothing annotates
    is a dataset.json that does not match its label images (e.g. a region of labels no image holds).

    Reads the cases' `class_locations` (nnU-Net's preprocessing writes them per label or region) until every head
    is found: on a sound dataset the first case or few. A folder without preprocessed cases is left to nnU-Net.
    """
    heads = label_manager.foreground_regions if label_manager.has_regions else label_manager.foreground_labels
    unseen = dict(zip(heads, head_names(label_manager, dataset_json)))
    for properties_file in sorted(Path(preprocessed_folder).glob("*.pkl")):
        locations = load_pickle(str(properties_file)).get("class_locations", {})
        for head in [h for h in unseen if len(locations.get(h, ())) > 0]:
            del unseen[head]
        if not unseen:
            return
    if unseen and any(Path(preprocessed_folder).glob("*.pkl")):
        missing = ", ".join(f"{name} (label{'s' if len(_as_tuple(head)) > 1 else ''} "
                            f"{', '.join(map(str, _as_tuple(head)))})" for head, name in unseen.items())
        raise UserError(f"{dataset_name}: no preprocessed case holds {missing}: dataset.json's labels do not match "
                        f"labelsTr; fix one of them and rerun nnUNetv2_plan_and_preprocess")


def head_names(label_manager: LabelManager, dataset_json: dict) -> list[str]:
    """The names dataset.json gives the network's output heads, in their order (regions or foreground labels)."""
    names = {_as_tuple(value): name for name, value in dataset_json["labels"].items() if name != "ignore"}
    heads = label_manager.foreground_regions if label_manager.has_regions else label_manager.foreground_labels
    return [names.get(_as_tuple(head), str(head)) for head in heads]


def describe_heads(label_manager: LabelManager, dataset_json: dict) -> str:
    """One line for a training log: what the heads are, in the order nnU-Net prints its pseudo Dice."""
    kind = "regions, sigmoid" if label_manager.has_regions else "labels, softmax"
    ignore = (f"; ignore label {label_manager.ignore_label} masked out of the loss and the pseudo Dice"
              if label_manager.has_ignore_label else "")
    return f"output heads ({kind}): {', '.join(head_names(label_manager, dataset_json))}{ignore}"


def _as_tuple(value) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)
