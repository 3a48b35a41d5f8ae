"""A PNG of one case of a raw dataset: an axial slice of every channel with the labels outlined.

    python -m nnunet_scnas.nnunet.datasets.preview nnUNet_raw/Dataset901_SimBrainTumour docs/x.png [--case 0]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from nnunet_scnas.nnunet.datasets.raw_writer import read_image

LABEL_COLOURS = ["#ffd92f", "#fc4e2a", "#41b6c4", "#a6d854", "#e78ac3"]  # label 1, 2, 3, ...
CT_WINDOW_HU = (-1000, 300)  # lung window: shows parenchyma, vessels and nodules at once


def save_preview(dataset_folder, png_path, case_index: int = 0) -> Path:
    """Draw training case `case_index` at the axial slice showing the most labels (then the most labelled voxels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    dataset_folder = Path(dataset_folder)
    dataset = json.loads((dataset_folder / "dataset.json").read_text())
    ending = dataset["file_ending"]
    label_files = sorted((dataset_folder / "labelsTr").glob(f"*{ending}"))
    case_id = label_files[case_index].name[: -len(ending)]
    label, spacing = read_image(label_files[case_index])
    channels = {name: read_image(dataset_folder / "imagesTr" / f"{case_id}_{int(c):04d}{ending}")[0]
                for c, name in sorted(dataset["channel_names"].items(), key=lambda item: int(item[0]))}

    z = _most_telling_slice(label)
    aspect = spacing[1] / spacing[2]  # rows are y, columns x
    foreground = {name: value for name, value in dataset["labels"].items() if value != 0}
    label_cmap = ListedColormap(["none"] + LABEL_COLOURS[: len(foreground)])

    panels = len(channels) + 1
    figure, axes = plt.subplots(1, panels, figsize=(max(3.0 * panels, 6.5), 3.4))
    for axis, (name, image) in zip(axes, channels.items()):
        low, high = CT_WINDOW_HU if name.upper() == "CT" else np.percentile(image, (1, 99.7))
        axis.imshow(image[z], cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
        for colour, value in zip(LABEL_COLOURS, foreground.values()):
            if (label[z] == value).any():
                axis.contour(label[z] == value, levels=[0.5], colors=[colour], linewidths=0.8)
        axis.set_title(name, fontsize=10)
    axes[-1].imshow(channels[next(iter(channels))][z], cmap="gray", aspect=aspect, alpha=0.5,
                    vmin=CT_WINDOW_HU[0] if "CT" in channels else None,
                    vmax=CT_WINDOW_HU[1] if "CT" in channels else None, interpolation="nearest")
    axes[-1].imshow(np.ma.masked_equal(label[z], 0), cmap=label_cmap, vmin=0, vmax=len(foreground),
                    aspect=aspect, interpolation="nearest")
    axes[-1].set_title("labels", fontsize=10)
    for axis in axes:
        axis.set_axis_off()
    figure.legend(handles=[Patch(color=c, label=f"{v}: {n}") for c, (n, v) in zip(LABEL_COLOURS, foreground.items())],
                  loc="lower center", ncol=len(foreground), fontsize=8, frameon=False)
    shape = "x".join(str(n) for n in label.shape)
    sizes = "x".join(f"{s:.2f}" for s in spacing)
    figure.suptitle(f"{dataset['name']}, {case_id}: axial slice {z} of {shape} voxels (z,y,x) at {sizes} mm",
                    fontsize=9)
    figure.tight_layout(rect=(0, 0.08, 1, 0.95))
    png_path = Path(png_path)
    figure.savefig(png_path, dpi=110)
    plt.close(figure)
    return png_path


def _most_telling_slice(label: np.ndarray) -> int:
    if not label.any():
        return label.shape[0] // 2
    distinct = np.array([len(np.unique(s[s > 0])) for s in label])
    area = (label > 0).sum(axis=(1, 2))
    return int(np.lexsort((area, distinct))[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nnunet_scnas.nnunet.datasets.preview",
                                     description="Save a PNG of one training case of a raw nnU-Net dataset.")
    parser.add_argument("dataset_folder")
    parser.add_argument("png_path")
    parser.add_argument("--case", type=int, default=0, help="index of the training case (default 0)")
    args = parser.parse_args(argv)
    print(save_preview(args.dataset_folder, args.png_path, args.case))
    return 0


if __name__ == "__main__":
    sys.exit(main())
