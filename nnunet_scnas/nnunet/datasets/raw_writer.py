"""Write nnU-Net's raw dataset format: imagesTr/labelsTr (and imagesTs/labelsTs) NIfTI files and dataset.json.

See nnU-Net's documentation/dataset_format.md: one file per channel, `{case}_{channel:04d}.nii.gz`, and the
label map as `{case}.nii.gz`, all with the same geometry.
"""
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

FILE_ENDING = ".nii.gz"
SPLIT_FOLDERS = {"train": ("imagesTr", "labelsTr"), "test": ("imagesTs", "labelsTs")}


def write_image(array: np.ndarray, spacing_zyx, path: Path) -> None:
    """Save a numpy (z, y, x) array as NIfTI with the given voxel size, centred on the scanner origin."""
    image = sitk.GetImageFromArray(array)
    # SimpleITK speaks (x, y, z); numpy arrays from GetImageFromArray are (z, y, x)
    spacing_xyz = [float(s) for s in reversed(spacing_zyx)]
    image.SetSpacing(spacing_xyz)
    image.SetOrigin([-(n - 1) / 2.0 * s for n, s in zip(image.GetSize(), spacing_xyz)])
    sitk.WriteImage(image, str(path), True)


def write_case(dataset_folder: Path, split: str, case_id: str, case) -> None:
    """Write one SyntheticCase's channels and label map into the split's folders."""
    images_folder, labels_folder = (Path(dataset_folder) / name for name in SPLIT_FOLDERS[split])
    images_folder.mkdir(exist_ok=True)
    labels_folder.mkdir(exist_ok=True)
    for channel, array in enumerate(case.images):
        write_image(array, case.spacing, images_folder / f"{case_id}_{channel:04d}{FILE_ENDING}")
    write_image(case.label, case.spacing, labels_folder / f"{case_id}{FILE_ENDING}")


def write_dataset_json(dataset_folder: Path, *, name: str, description: str, channel_names: dict,
                       labels: dict, num_training: int, provenance: dict, regions_class_order=None) -> None:
    """dataset.json as nnU-Net v2 reads it, plus a `nnunet_scnas` entry saying how the data was made.
    `regions_class_order`: for region-based labels (nnU-Net's region-based training), else None."""
    content = {
        "name": name,
        "description": description,
        "reference": "synthetic data, no patient involved",
        "licence": "CC0-1.0",
        "channel_names": channel_names,
        "labels": labels,
        **({"regions_class_order": regions_class_order} if regions_class_order else {}),
        "numTraining": num_training,
        "file_ending": FILE_ENDING,
        "nnunet_scnas": provenance,
    }
    (Path(dataset_folder) / "dataset.json").write_text(json.dumps(content, indent=4) + "\n")


def read_image(path: Path):
    """The (z, y, x) array and the (z, y, x) spacing of a NIfTI file."""
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), tuple(reversed(image.GetSpacing()))
