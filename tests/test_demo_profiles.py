"""The demo's profiles as plans of work, without running them (the quick profile runs in test_demo.py)."""
import pytest

from nnunet_scnas.errors import UserError
from nnunet_scnas.nnunet.demo import BRAIN_ID, LUNG_ID, PROFILES, RECIPE, Demo


@pytest.fixture
def full(tmp_path):
    return Demo(tmp_path / "benchmark", "full", "cpu")


def test_the_benchmark_searches_every_fold_and_trains_each_fold_with_that_folds_genotype(full):
    titles = [stage.title for stage in full.stages()]
    methods = {m.name: m for m in full.methods(BRAIN_ID)}
    assert list(methods) == ["nnU-Net", "SCNAS", "random-0", "random-1"]
    for fold in range(5):
        search = titles.index(f"architecture search on fold {fold} (nnUNetTrainerSCNASSearch_cpuBenchmark)")
        export = titles.index(f"export fold {fold}'s genotype as configuration 3d_fullres_scnas_fold{fold} (width auto)")
        train = titles.index(f"train SCNAS ({methods['SCNAS'].fold_configuration(fold)}) on the brain-tumour-like "
                             f"set, fold {fold}")
        assert search < export < train and methods["SCNAS"].fold_configuration(fold) == f"3d_fullres_scnas_fold{fold}"
    assert [full.search_folder(fold).name for fold in range(5)] == [f"fold_{fold}" for fold in range(5)]


def test_every_method_of_a_comparison_trains_with_one_trainer_on_every_fold(full):
    for dataset_id, label in ((BRAIN_ID, "brain-tumour-like"), (LUNG_ID, "CT-like")):
        methods = full.methods(dataset_id)
        assert {m.trainer for m in methods} == {"nnUNetTrainerCPUBenchmark"}
        trained = [t for t, *_ in full.stages() if t.startswith("train ") and f"the {label} set" in t]
        assert len(trained) == 5 * len(methods)
    # the transfer: stock, the fold-0 genotype and one random architecture
    assert [m.configuration for m in full.methods(LUNG_ID)] == ["3d_fullres", "3d_fullres_scnas", "3d_fullres_random0"]


def test_each_profile_is_one_setting_a_workdir_never_mixes(tmp_path):
    quick = Demo(tmp_path / "run", "quick", "cpu")
    quick._save_state()  # as after its first stage
    with pytest.raises(UserError, match="holds a demo run with other settings.*differing: .*folds"):
        Demo(tmp_path / "run", "full", "cpu")
    assert Demo(tmp_path / "run", "full", "cpu", force=True).done == []


def test_a_run_of_an_earlier_recipe_is_refused_not_continued(tmp_path):
    # the same profile and trainer names, but another budget or data: only the recipe tells them apart
    earlier = Demo(tmp_path / "run", "full", "cpu")
    earlier.settings = {**earlier.settings, "recipe": RECIPE - 1}
    earlier.done = ["make brain-tumour-like dataset"]
    earlier._save_state()
    with pytest.raises(UserError, match="differing: recipe"):
        Demo(tmp_path / "run", "full", "cpu")
    assert Demo(tmp_path / "run", "full", "cpu", force=True).done == []


def test_stage_titles_are_unique_in_every_profile(tmp_path):
    for name in PROFILES:
        titles = [stage.title for stage in Demo(tmp_path / name, name, "cpu").stages()]
        assert len(set(titles)) == len(titles), name


def test_the_default_demo_trains_at_equal_memory_and_adds_the_transfer_only_when_asked(tmp_path):
    demo = Demo(tmp_path / "run", "default", "cpu")
    titles = [stage.title for stage in demo.stages()]
    assert "export fold 0's genotype as configuration 3d_fullres_scnas_fold0 (width auto, matched by memory)" in titles
    assert demo.datasets() == (BRAIN_ID,) and not any("CT-like" in title for title in titles)
    demo.done = titles  # a finished demo
    demo._save_state()
    # `demo --transfer` in its folder: the same settings, the transfer's stages after the finished ones
    transfer = Demo(tmp_path / "run", "default", "cpu", transfer=True)
    extended = [stage.title for stage in transfer.stages()]
    assert extended[:len(titles)] == titles and transfer.done == titles
    assert "compare on the CT-like set" in extended[len(titles):] and transfer.datasets() == (BRAIN_ID, LUNG_ID)
    # the quick and full profiles always transfer
    assert all(Demo(tmp_path / name, name, "cpu").datasets() == (BRAIN_ID, LUNG_ID) for name in ("quick", "full"))
