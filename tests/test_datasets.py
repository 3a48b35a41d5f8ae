"""The embedded synthetic datasets: determinism, nnU-Net's raw format, anatomy promises, bad input, planning."""
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_scnas.cli.main import main
from nnunet_scnas.errors import UserError
from nnunet_scnas.nnunet.datasets import DATASETS, make_dataset, raw_writer
from nnunet_scnas.nnunet.datasets.phantom import SyntheticCase, case_rng
from nnunet_scnas.nnunet.datasets.threshold_baseline import threshold_baseline

from helpers import SMALL_SIZE
NAMES = sorted(DATASETS)


def small(name, out_dir, **overrides):
    """A dataset as small as still plans three downsamplings, with few cases, to keep the suite fast."""
    options = dict(cases=2, test_cases=1, size=DATASETS[name].min_size)
    options.update(overrides)
    return make_dataset(name, out_dir, **options)


def read_arrays(folder: Path) -> dict:
    """Every NIfTI file of a dataset folder, by relative path, as numpy arrays."""
    return {str(p.relative_to(folder)): sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
            for p in sorted(folder.rglob("*.nii.gz"))}


# ---------------------------------------------------------------------------------------------- determinism

@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_byte_identical_arrays(name, tmp_path):
    first = read_arrays(small(name, tmp_path / "a", seed=3))
    second = read_arrays(small(name, tmp_path / "b", seed=3))
    assert first.keys() == second.keys() and len(first) > 0
    for key in first:
        assert first[key].dtype == second[key].dtype
        assert first[key].tobytes() == second[key].tobytes(), key


@pytest.mark.parametrize("name", NAMES)
def test_different_seed_gives_different_images_and_labels(name, tmp_path):
    first = read_arrays(small(name, tmp_path / "a", seed=0, cases=1, test_cases=0))
    second = read_arrays(small(name, tmp_path / "b", seed=1, cases=1, test_cases=0))
    for key in first:
        same_shape = first[key].shape == second[key].shape
        assert not (same_shape and np.array_equal(first[key], second[key])), key


@pytest.mark.parametrize("name", NAMES)
def test_a_case_does_not_depend_on_how_many_cases_are_made(name, tmp_path):
    few = read_arrays(small(name, tmp_path / "few", cases=1, test_cases=1))
    many = read_arrays(small(name, tmp_path / "many", cases=3, test_cases=2))
    assert few.keys() <= many.keys()
    for key in few:
        assert few[key].tobytes() == many[key].tobytes(), key


# ---------------------------------------------------------------------------------------------- raw format

@pytest.mark.parametrize("name", NAMES)
def test_dataset_json_and_files_follow_nnunet_raw_format(name, tmp_path):
    folder = small(name, tmp_path, cases=3, test_cases=2)
    spec, generator = DATASETS[name], DATASETS[name].generator_module
    assert folder.name == spec.folder_name()
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["channel_names"] == generator.CHANNEL_NAMES
    assert dataset["labels"] == generator.LABELS
    assert dataset["file_ending"] == ".nii.gz"
    assert dataset["numTraining"] == 3 == len(list((folder / "labelsTr").iterdir()))
    assert len(list((folder / "labelsTs").iterdir())) == 2
    assert "synthetic" in dataset["description"].lower() and "seed 0" in dataset["description"]
    declared = set(dataset["labels"].values())
    for split, (images, labels) in raw_writer.SPLIT_FOLDERS.items():
        for label_file in (folder / labels).iterdir():
            case_id = label_file.name[: -len(".nii.gz")]
            for channel in dataset["channel_names"]:
                assert (folder / images / f"{case_id}_{int(channel):04d}.nii.gz").is_file()
            assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(label_file))))) <= declared


def test_regions_form_is_the_same_data_with_brats_style_regions_that_nnunet_reads(tmp_path):
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    plain = small("braintumour", tmp_path / "plain", cases=2, test_cases=1)
    regions = small("braintumour", tmp_path / "regions", cases=2, test_cases=1, regions=True)
    assert regions.name == "Dataset911_SimBrainTumourRegions"
    assert read_arrays(regions).keys() == read_arrays(plain).keys()
    assert all(read_arrays(regions)[k].tobytes() == v.tobytes() for k, v in read_arrays(plain).items())
    dataset = json.loads((regions / "dataset.json").read_text())
    # nnU-Net's Dataset137_BraTS2021 conversion: its labels 1, 2, 3 are edema, necrosis/non-enhancing, enhancing
    assert dataset["labels"] == {"background": 0, "whole tumour": [1, 2, 3], "tumour core": [2, 3],
                                 "enhancing tumour": [3]}
    assert dataset["regions_class_order"] == [1, 2, 3] and dataset["nnunet_scnas"]["regions"] is True
    manager = LabelManager(dataset["labels"], dataset["regions_class_order"])
    assert manager.has_regions and manager.num_segmentation_heads == 3
    rules = threshold_baseline(regions)  # a rule per region, fit on the region's voxels
    assert [rule.label_name for rule in rules] == ["whole tumour", "tumour core", "enhancing tumour"]
    assert all(0 <= rule.train_dice <= 1 for rule in rules)


def test_regions_of_a_dataset_without_a_region_form_is_one_line(tmp_path, capsys):
    assert main(["make-dataset", "lungnodule", "--regions", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no region-based form" in err and "braintumour" in err
    assert not list(tmp_path.iterdir())


def test_msd_brain_tumour_semantics():
    generator = DATASETS["braintumour"].generator_module
    assert generator.CHANNEL_NAMES == {"0": "FLAIR", "1": "T1w", "2": "T1gd", "3": "T2w"}
    assert generator.LABELS == {"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3}


@pytest.mark.parametrize("name", NAMES)
def test_spacing_is_written_in_simpleitk_order_and_is_anisotropic(name, tmp_path):
    folder = small(name, tmp_path, cases=4, test_cases=0)
    generator = DATASETS[name].generator_module
    slice_spacings = []
    for label_file in sorted((folder / "labelsTr").iterdir()):
        case_id = label_file.name[: -len(".nii.gz")]
        label = sitk.ReadImage(str(label_file))
        x, y, z = label.GetSpacing()
        assert x == y  # square pixels in-plane
        assert generator.IN_PLANE_SPACING_MM[0] <= x <= generator.IN_PLANE_SPACING_MM[1]
        assert generator.SLICE_SPACING_MM[0] <= z <= generator.SLICE_SPACING_MM[1]
        # numpy's (z, y, x) shape is SimpleITK's size reversed
        assert sitk.GetArrayFromImage(label).shape == tuple(reversed(label.GetSize()))
        for channel in generator.CHANNEL_NAMES:
            image = sitk.ReadImage(str(folder / "imagesTr" / f"{case_id}_{int(channel):04d}.nii.gz"))
            assert image.GetSize() == label.GetSize()
            assert np.allclose(image.GetSpacing(), label.GetSpacing())
            assert np.allclose(image.GetOrigin(), label.GetOrigin())
        slice_spacings.append(z / x)
    assert max(slice_spacings) > 1.2  # thick slices, as in clinical scans
    assert len(set(slice_spacings)) == len(slice_spacings)  # every case draws its own spacing


@pytest.mark.parametrize("name", NAMES)
def test_the_field_of_view_in_mm_does_not_depend_on_the_spacing(name):
    # the voxel grid follows the spacing, so the anatomy keeps a plausible physical size
    extents = []
    for index in range(6):
        case = DATASETS[name].generate_case(case_rng(0, "train", index), 48)
        extents.append(np.array(case.label.shape) * np.array(case.spacing))
    extents = np.array(extents)
    spread = extents.max(axis=0) - extents.min(axis=0)
    assert np.all(spread <= max(DATASETS[name].generator_module.SLICE_SPACING_MM))  # rounding to whole voxels
    assert np.all(extents.min(axis=0) > 20)  # mm


# ---------------------------------------------------------------------------------------------- anatomy

def test_brain_tumour_core_is_surrounded_by_edema():
    cases_with_core = 0
    for index in range(8):
        label = DATASETS["braintumour"].generate_case(case_rng(0, "train", index), 40).label
        assert (label == 1).any(), "every case has a tumour with edema"
        core = label >= 2
        cases_with_core += core.any()
        # no core voxel touches background (6-neighbourhood): edema wraps the core on every side
        assert not (ndimage.binary_dilation(core) & (label == 0)).any()
        # and the core lies inside the hull of the whole tumour, slice by slice
        for z in np.flatnonzero(core.any(axis=(1, 2))):
            filled = ndimage.binary_fill_holes(label[z] > 0)
            assert filled[core[z]].all()
    assert cases_with_core >= 6


def test_tumour_contrasts_follow_mri():
    # ratios within one channel, so that each case's random scanner gain cancels out
    cases_with_enhancing = 0
    for index in range(6):
        case = DATASETS["braintumour"].generate_case(case_rng(0, "train", index), 40)
        flair, t1w, t1gd, t2w = case.images
        edema, enhancing, healthy = case.label == 1, case.label == 3, case.label == 0
        assert np.median(flair[edema]) > np.percentile(flair[healthy], 80)  # edema is bright on FLAIR
        assert np.median(t2w[edema]) > np.percentile(t2w[healthy], 80)  # ... and on T2
        if enhancing.sum() >= 5:
            cases_with_enhancing += 1
            # enhancing tumour lights up after contrast, not before
            assert np.median(t1gd[enhancing]) / np.median(t1gd[edema]) > 1.3
            assert np.median(t1w[enhancing]) / np.median(t1w[edema]) < 1.15
    assert cases_with_enhancing >= 3


def test_lung_nodules_are_small_dense_and_in_the_lungs():
    spec = DATASETS["lungnodule"]
    cases_with_nodule = 0
    for index in range(8):
        case = spec.generate_case(case_rng(0, "train", index), 40)
        ct, label = case.images[0], case.label
        assert ct.dtype == np.int16 and ct.min() >= -1024
        components, count = ndimage.label(label)
        assert count <= 3
        cases_with_nodule += count > 0
        voxel_mm3 = float(np.prod(case.spacing))
        largest = spec.generator_module.NODULE_DIAMETER_MM[1] / 2 * 1.5
        for component in range(1, count + 1):
            nodule = components == component
            assert nodule.sum() * voxel_mm3 < 4 / 3 * np.pi * largest ** 3
            assert np.median(ct[nodule]) > -700  # denser than lung parenchyma
            # mostly surrounded by aerated lung
            shell = ndimage.binary_dilation(nodule, iterations=2) & ~nodule
            assert np.median(ct[shell]) < -300
    assert cases_with_nodule >= 5


# ---------------------------------------------------------------------------------------------- threshold baseline

def test_threshold_baseline_is_perfect_when_a_threshold_suffices(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "Dataset999_Easy"
    folder.mkdir()
    for split, count in (("train", 3), ("test", 2)):
        for index in range(count):
            label = np.zeros((8, 12, 12), np.uint8)
            label[2:6, 3:3 + index + 4, 4:9] = 1
            image = rng.normal(size=label.shape).astype(np.float32) + 10 * label
            case = SyntheticCase(images=[image], label=label, spacing=(2.0, 1.0, 1.0))
            raw_writer.write_case(folder, split, f"easy_{split}_{index}", case)
    raw_writer.write_dataset_json(folder, name="Easy", description="", channel_names={"0": "MR"},
                                  labels={"background": 0, "thing": 1}, num_training=3, provenance={})
    (rule,) = threshold_baseline(folder)
    assert rule.direction == ">=" and rule.evaluated_on == "test"
    # the candidate thresholds are percentiles, so the gap between the classes is found only approximately
    assert rule.train_dice > 0.95 and rule.eval_dice > 0.95


@pytest.mark.parametrize("name", NAMES)
def test_a_single_threshold_does_not_solve_the_embedded_sets(name, tmp_path):
    folder = small(name, tmp_path, cases=4, test_cases=2)
    rules = threshold_baseline(folder)
    assert [r.label_name for r in rules] == [n for n, v in DATASETS[name].generator_module.LABELS.items() if v]
    for rule in rules:
        assert 0 <= rule.eval_dice < 0.75, rule


# ---------------------------------------------------------------------------------------------- bad input

def test_unset_output_folder_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(UserError, match="nnUNet_raw"):
        make_dataset("lungnodule", None)
    assert main(["make-dataset", "lungnodule"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nnUNet_raw" in err


BAD_INPUT = [
    # (make_dataset keywords, CLI flags, a word the message must contain)
    (dict(name="brains"), ["brains"], "braintumour"),
    (dict(cases=0), ["--cases", "0"], "--cases"),
    (dict(cases=-3), ["--cases", "-3"], "--cases"),
    (dict(test_cases=-1), ["--test-cases", "-1"], "--test-cases"),
    (dict(size=12), ["--size", "12"], "--size"),
    (dict(size=100_000), ["--size", "100000"], "--size"),
    (dict(dataset_id=1000), ["--id", "1000"], "--id"),
]


@pytest.mark.parametrize("keywords, flags, hint", BAD_INPUT)
def test_bad_input_is_a_one_line_user_error_with_exit_code_2(keywords, flags, hint, tmp_path, capsys):
    arguments = dict(name="braintumour", out_dir=tmp_path)
    arguments.update(keywords)
    with pytest.raises(UserError, match=hint):
        make_dataset(arguments.pop("name"), arguments.pop("out_dir"), **arguments)
    name = flags[0] if "name" in keywords else "braintumour"
    cli_flags = flags[1:] if "name" in keywords else flags
    assert main(["make-dataset", name, "--out", str(tmp_path), *cli_flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and hint in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_existing_dataset_is_refused_without_force(tmp_path, capsys):
    folder = small("lungnodule", tmp_path, cases=1, test_cases=0)
    before = read_arrays(folder)
    with pytest.raises(UserError, match="--force"):
        small("lungnodule", tmp_path, cases=1, test_cases=0, seed=5)
    assert main(["make-dataset", "lungnodule", "--out", str(tmp_path), "--size", "40"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--force" in err
    assert read_arrays(folder).keys() == before.keys()


def test_a_dataset_id_used_by_another_folder_is_refused(tmp_path):
    (tmp_path / "Dataset902_SomethingElse").mkdir()
    with pytest.raises(UserError, match="--id"):
        small("lungnodule", tmp_path)
    small("lungnodule", tmp_path, dataset_id=903)


# ---------------------------------------------------------------------------------------------- atomic writes

def test_force_replaces_the_dataset_without_ever_showing_half_of_one(tmp_path):
    folder = small("lungnodule", tmp_path, cases=2, test_cases=0, seed=0)
    old = read_arrays(folder)
    seen_during_generation = []
    small("lungnodule", tmp_path, cases=2, test_cases=0, seed=1, force=True,
          progress=lambda line: seen_during_generation.append(read_arrays(folder).keys() == old.keys()))
    assert seen_during_generation == [True, True]  # the old dataset stayed whole until the switch
    new = read_arrays(folder)
    assert new.keys() == old.keys()
    assert any(new[k].tobytes() != old[k].tobytes() for k in new)
    assert json.loads((folder / "dataset.json").read_text())["nnunet_scnas"]["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temporary folder left behind


def test_a_failure_while_writing_leaves_the_old_dataset_and_no_temporary_folder(tmp_path, monkeypatch):
    folder = small("lungnodule", tmp_path, cases=2, test_cases=0, seed=0)
    old = read_arrays(folder)
    calls = []

    def failing_write_case(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return original_write_case(*args, **kwargs)

    original_write_case = raw_writer.write_case
    monkeypatch.setattr(raw_writer, "write_case", failing_write_case)
    with pytest.raises(OSError, match="disk full"):
        small("lungnodule", tmp_path, cases=2, test_cases=0, seed=1, force=True)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]
    now = read_arrays(folder)
    assert all(now[k].tobytes() == old[k].tobytes() for k in old)


def test_cli_writes_the_dataset_and_says_what_to_run_next(tmp_path, capsys):
    assert main(["make-dataset", "lungnodule", "--out", str(tmp_path), "--cases", "2", "--test-cases", "0",
                 "--size", "40", "--id", "912", "--seed", "4"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "Dataset912_SimLungNodule"
    assert (folder / "dataset.json").is_file()
    assert "[1/2]" in out and "[2/2]" in out  # one progress line per case
    assert str(folder) in out
    assert "nnUNetv2_plan_and_preprocess -d 912 -c 3d_fullres --verify_dataset_integrity" in out


def test_cli_help_lists_the_datasets_with_their_descriptions(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["make-dataset", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for spec in DATASETS.values():
        assert spec.name in out and spec.description in out


# ---------------------------------------------------------------------------------------------- nnU-Net planning

@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_nnunet_plans_three_downsamplings_and_preprocesses(name, request):
    # the session's shared datasets: nnUNetv2_plan_and_preprocess ran on each at its smallest size
    dataset = request.getfixturevalue(f"planned_{name}")
    assert DATASETS[name].min_size <= SMALL_SIZE
    fullres = json.loads(dataset.pristine_plans)["configurations"]["3d_fullres"]
    strides = fullres["architecture"]["arch_kwargs"]["strides"]
    assert len(strides) >= 4, f"nnU-Net planned only {len(strides) - 1} downsamplings: {strides}"
    assert all(np.prod(s) > 1 for s in strides[1:4])
    data_folder = dataset.preprocessed / fullres["data_identifier"]
    case_ids = sorted(p.name.removesuffix(".nii.gz") for p in (dataset.raw / "labelsTr").iterdir())
    assert case_ids
    for case_id in case_ids:
        assert list(data_folder.glob(f"{case_id}.*")), f"{case_id} was not preprocessed"
        assert list(data_folder.glob(f"{case_id}_seg.*"))