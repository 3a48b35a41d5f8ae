"""Fixtures shared by the test files."""
import json
import os
import random
import shutil

import pytest
import torch

from nnunet_scnas.cli.main import main

from helpers import (BIN, NNUNET_PATH_VARIABLES, Retraining, epochs_started, fold_folder,
                     kill_at_a_random_moment_of_epoch, plan_dataset, random_genotype, run_command, search_command)


# the longest files (minutes each on 2 cores) start first, so that the two test workers end together
LONGEST_FILES = ("test_demo.py", "test_faults.py", "test_regions.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name not in LONGEST_FILES)  # stable: the rest keep their order


@pytest.fixture
def one_torch_thread():
    """Tiny volumes run as fast on one thread, and one thread does not collapse when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def nnunet_env(tmp_path):
    """An environment for nnU-Net subprocesses: its three folders under tmp_path, plus the basics of a shell."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(tmp_path)), "LANG": "C.UTF-8",
           # keep nnU-Net's worker pools small on a 2-core machine
           "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "1", "OMP_NUM_THREADS": "1"}
    for name in NNUNET_PATH_VARIABLES:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        env[name] = str(folder)
    return env


@pytest.fixture(scope="session")
def planned_braintumour(tmp_path_factory):
    """The brain-tumour-like set, planned and preprocessed once for the whole session (planning costs ~40 s).

    7 cases: fold 0 then trains on 5, the fewest the search's 4:1 weight/architecture split takes; 2 held-out
    cases for nnUNetv2_predict. Tests that train use `env_with_results` so they never share a results folder.
    """
    return plan_dataset(tmp_path_factory.mktemp("braintumour"), "braintumour", 951, cases=7, test_cases=2)


@pytest.fixture(scope="session")
def planned_lungnodule(tmp_path_factory):
    """The CT-like set (the transfer target), planned once for the session."""
    return plan_dataset(tmp_path_factory.mktemp("lungnodule"), "lungnodule", 952, cases=5, test_cases=1)


@pytest.fixture(scope="session")
def nnunet_env_base():
    """A shell's basics and nothing of nnU-Net's: for commands that set up their own folders (the demo)."""
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}


def _private_plans(dataset, root, monkeypatch):
    folder = root / "nnUNet_preprocessed" / dataset.name
    folder.mkdir(parents=True)
    (folder / "nnUNetPlans.json").write_bytes(dataset.pristine_plans)
    shutil.copy(dataset.preprocessed / "dataset.json", folder / "dataset.json")
    for variable in NNUNET_PATH_VARIABLES:
        (root / variable).mkdir(exist_ok=True)
        monkeypatch.setenv(variable, str(root / variable))
    return folder / "nnUNetPlans.json"


@pytest.fixture
def private_plans(planned_braintumour, tmp_path, monkeypatch):
    """A private nnUNet_preprocessed holding the brain set's pristine plans and dataset.json (all that export-plans
    and estimate read), nnU-Net's folder variables pointing there; returns the plans file."""
    return _private_plans(planned_braintumour, tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def plain_unet_exported(planned_braintumour, tmp_path_factory):
    """The bytes of the brain set's plans after `export-plans -g plain_unet --width 8` (configuration
    3d_fullres_scnas), exported once for the session: each export traces the stock and the derived network
    (seconds). For tests that start from some exported plans; test_export_plans.py tests the export itself."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        plans = _private_plans(planned_braintumour, tmp_path_factory.mktemp("plain_unet_exported"), monkeypatch)
        assert main(["export-plans", "-d", "951", "-g", "plain_unet", "--width", "8"]) == 0
    return plans.read_bytes()


@pytest.fixture
def exported_plans(private_plans, plain_unet_exported):
    """`private_plans` holding the plans of `plain_unet_exported` (a private copy: tests may edit it)."""
    private_plans.write_bytes(plain_unet_exported)
    return private_plans


@pytest.fixture(scope="session")
def uninterrupted_search(planned_braintumour, tmp_path_factory):
    """The quick search through nnUNetv2_train, run once without faults: where every interrupted one must end."""
    results = tmp_path_factory.mktemp("uninterrupted_search")
    run_command(search_command(planned_braintumour),
                planned_braintumour.env_with_results(results, nnUNet_n_proc_DA="0"))
    return fold_folder(results, planned_braintumour)


@pytest.fixture(scope="session")
def retrained_after_a_kill(planned_braintumour, tmp_path_factory):
    """A genotype of mixed ops (as a search leaves them) exported into the brain set at width 8, trained by stock
    nnU-Net with the CPU budget trainer, killed at a random moment of epoch 1 and finished with `--c` (which also
    validates): one retraining for the fault test and the predict/evaluate/rank test."""
    root, dataset = tmp_path_factory.mktemp("retraining"), planned_braintumour
    configuration, trainer = "3d_fullres_scnas", "nnUNetTrainerCPUBudget_quick"
    genotype = root / "genotype.json"
    genotype.write_text(json.dumps(random_genotype(15).to_dict()))
    env = dataset.env_with_results(root / "results", nnUNet_n_proc_DA="0")  # augmentation in the training process
    run_command([BIN / "nnunet-scnas", "export-plans", "-d", dataset.dataset_id, "-g", genotype, "-o", configuration,
                 "--width", "8"], env)
    train = [BIN / "nnUNetv2_train", dataset.dataset_id, configuration, 0, "-tr", trainer, "-device", "cpu"]
    seed = random.randrange(2**32)
    killed = kill_at_a_random_moment_of_epoch(train, env, root / "killed.txt", 1, random.Random(seed))
    folder = fold_folder(root / "results", dataset, trainer, configuration)
    latest = torch.load(folder / "checkpoint_latest.pth", map_location="cpu", weights_only=False)["current_epoch"]
    resumed = epochs_started(run_command([*train, "--c"], env).stdout)
    return Retraining(env, configuration, trainer, folder, killed, latest, resumed, seed)
