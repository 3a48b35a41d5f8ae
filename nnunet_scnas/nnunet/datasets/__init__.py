"""The embedded synthetic datasets: a registry and `make_dataset`, which writes one in nnU-Net's raw format.

This module stays light (no numpy at import) because the CLI lists the datasets in its --help; a
generator module is imported when a dataset is made.
"""
import importlib
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from nnunet_scnas import __version__
from nnunet_scnas.errors import UserError


@dataclass(frozen=True)
class DatasetSpec:
    """One embedded dataset.

    Args:
        name: what the user types (`nnunet-scnas make-dataset NAME`).
        dataset_id: nnU-Net dataset id used unless the user picks another.
        title: the part of the folder name after the id (`Dataset901_SimBrainTumour`).
        description: one line for --help.
        default_cases: training cases (imagesTr).
        default_test_cases: held-out cases (imagesTs/labelsTs).
        default_size: voxels along the longest axis of a median case, roughly.
        min_size: the smallest size for which nnU-Net still plans three downsamplings in 3d_fullres.
        module: the module of this package that defines generate_case(rng, size), CHANNEL_NAMES, LABELS.
        case_prefix: start of each case's file names.
        regions_dataset_id: the id of its region-based form (`--regions`: the module's REGION_LABELS and
            REGIONS_CLASS_ORDER over the same label images), None if it has none.
    """
    name: str
    dataset_id: int
    title: str
    description: str
    default_cases: int
    default_test_cases: int
    default_size: int
    min_size: int
    module: str
    case_prefix: str
    regions_dataset_id: Optional[int] = None

    def default_id(self, regions: bool = False) -> int:
        return self.regions_dataset_id if regions else self.dataset_id

    def folder_name(self, dataset_id: Optional[int] = None, regions: bool = False) -> str:
        title = f"{self.title}Regions" if regions else self.title
        return f"Dataset{self.default_id(regions) if dataset_id is None else dataset_id:03d}_{title}"

    @property
    def generator_module(self):
        return importlib.import_module(f"{__name__}.{self.module}")

    @property
    def generate_case(self):
        """The generator function: (numpy Generator, size) -> SyntheticCase."""
        return self.generator_module.generate_case


# beyond this a brain case needs GBs of memory and about a minute to draw
MAX_SIZE = 256

DATASETS = {
    spec.name: spec for spec in (
        DatasetSpec(
            name="braintumour", dataset_id=901, title="SimBrainTumour",
            description="brain-tumour-like MRI (FLAIR, T1w, T1gd, T2w); edema, non-enhancing, enhancing tumour",
            default_cases=20, default_test_cases=4, default_size=48, min_size=40,
            module="brain_tumour", case_prefix="simbrain", regions_dataset_id=911,
        ),
        DatasetSpec(
            name="lungnodule", dataset_id=902, title="SimLungNodule",
            description="small chest CT with lung nodules of about a centimetre (one channel, one class), for transfer",
            default_cases=10, default_test_cases=4, default_size=48, min_size=40,
            module="lung_nodule", case_prefix="simlung",
        ),
    )
}


def make_dataset(name: str, out_dir, cases: Optional[int] = None, seed: int = 0, size: Optional[int] = None,
                 test_cases: Optional[int] = None, dataset_id: Optional[int] = None, force: bool = False,
                 progress: Optional[Callable[[str], None]] = None, regions: bool = False) -> Path:
    """Generate an embedded dataset and write it to `out_dir/DatasetXXX_Title`; returns that folder.

    The same (name, seed, size) gives byte-identical arrays: case i draws from a generator seeded with
    (seed, split, i) only. The dataset is written into a temporary folder beside the target and renamed
    into place at the end, so the target never holds half a dataset; an existing non-empty target is
    refused unless `force`, which replaces it. `progress` receives one line per case. `regions`: the
    region-based form (BraTS-style labels in dataset.json, the same images and label images).
    """
    spec = _checked_spec(name)
    if regions and spec.regions_dataset_id is None:
        with_regions = [s.name for s in DATASETS.values() if s.regions_dataset_id is not None]
        raise UserError(f"{name} has no region-based form: --regions is for {', '.join(with_regions)}")
    cases = spec.default_cases if cases is None else cases
    test_cases = spec.default_test_cases if test_cases is None else test_cases
    size = spec.default_size if size is None else size
    dataset_id = spec.default_id(regions) if dataset_id is None else dataset_id
    _check_numbers(spec, cases, test_cases, size, dataset_id)
    if out_dir is None or str(out_dir) == "":
        raise UserError("no output folder: pass --out DIR or export nnUNet_raw=/path/to/nnUNet_raw")
    out_dir = Path(out_dir).absolute()
    target = out_dir / spec.folder_name(dataset_id, regions)
    _check_target(target, dataset_id, force)
    out_dir.mkdir(parents=True, exist_ok=True)

    from nnunet_scnas.nnunet.datasets import raw_writer
    from nnunet_scnas.nnunet.datasets.phantom import case_rng

    generator = spec.generator_module
    # a hidden sibling of the target: same file system, so the final rename is atomic
    partial = out_dir / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
    partial.mkdir()
    try:
        jobs = [("train", i) for i in range(cases)] + [("test", i) for i in range(test_cases)]
        for done, (split, index) in enumerate(jobs, start=1):
            case_id = f"{spec.case_prefix}_{index:03d}" if split == "train" else f"{spec.case_prefix}_test_{index:03d}"
            start = time.perf_counter()
            case = generator.generate_case(case_rng(seed, split, index), size)
            raw_writer.write_case(partial, split, case_id, case)
            if progress is not None:
                shape = "x".join(str(n) for n in case.label.shape)
                spacing = "x".join(f"{s:.2f}" for s in case.spacing)
                progress(f"[{done}/{len(jobs)}] {split:5s} {case_id}  {shape} voxels (z,y,x) at {spacing} mm"
                         f"  {time.perf_counter() - start:.2f} s")
        raw_writer.write_dataset_json(
            partial, name=target.name.split("_", 1)[1],
            description=(f"Synthetic {spec.description}. Generated by nnunet-scnas {__version__} "
                         f"(make-dataset {spec.name} --seed {seed} --size {size}{' --regions' * regions}); "
                         f"not patient data."),
            channel_names=generator.CHANNEL_NAMES, labels=generator.REGION_LABELS if regions else generator.LABELS,
            regions_class_order=generator.REGIONS_CLASS_ORDER if regions else None, num_training=cases,
            provenance={"dataset": spec.name, "version": __version__, "seed": seed, "size": size,
                        "cases": cases, "test_cases": test_cases, **({"regions": True} if regions else {})},
        )
        _move_into_place(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _checked_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def _check_numbers(spec, cases, test_cases, size, dataset_id):
    if cases <= 0:
        raise UserError(f"--cases must be at least 1 (got {cases})")
    if test_cases < 0:
        raise UserError(f"--test-cases must be 0 or more (got {test_cases})")
    if size < spec.min_size:
        raise UserError(f"--size {size} is too small for {spec.name}: use at least {spec.min_size}, "
                        f"so that nnU-Net plans three downsamplings")
    if size > MAX_SIZE:
        raise UserError(f"--size {size} is too large: use at most {MAX_SIZE} (memory and time grow with size cubed)")
    if not 1 <= dataset_id <= 999:
        raise UserError(f"--id must be between 1 and 999, as nnU-Net dataset ids are (got {dataset_id})")


def _check_target(target: Path, dataset_id: int, force: bool) -> None:
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} exists and is not a folder: remove it or choose another --out")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise UserError(f"{target} exists and is not empty: pass --force to replace it, or choose another --id")
    # nnU-Net resolves an id to a folder name, so two folders with one id would make `-d ID` ambiguous
    if target.parent.is_dir():
        clashes = [p.name for p in target.parent.glob(f"Dataset{dataset_id:03d}_*") if p.name != target.name]
        if clashes:
            raise UserError(f"dataset id {dataset_id} is already used by {clashes[0]} in {target.parent}: "
                            f"choose another --id")


def _move_into_place(partial: Path, target: Path) -> None:
    """Rename the finished folder onto the target; an old target is moved aside first, then deleted.

    Between the two renames the target is briefly absent, but it never holds a mix of old and new files.
    """
    if not target.exists():
        os.rename(partial, target)
        return
    old = target.with_name(f".{target.name}.{os.getpid()}.replaced")
    os.rename(target, old)
    try:
        os.rename(partial, target)
    except OSError:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
