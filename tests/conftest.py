"""Fixtures shared by the test files."""
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

NNUNET_PATH_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


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


BIN = Path(sys.executable).parent
# the smallest --size for which nnU-Net plans three downsamplings of both sets (docs/datasets.md)
SMALL_SIZE = 40


@dataclass
class PlannedDataset:
    dataset_id: int
    name: str
    env: dict  # nnU-Net's three folders and a light worker setting, for subprocesses
    raw: Path
    preprocessed: Path
    pristine_plans: bytes  # the planner's plans file, before any export

    def env_with_results(self, results: Path, **extra) -> dict:
        """The same data, a private results folder: tests that train do not see each other's folds."""
        results.mkdir(parents=True, exist_ok=True)
        return {**self.env, "nnUNet_results": str(results), **extra}


def run_command(command, env, timeout=900, check=True):
    result = subprocess.run([str(c) for c in command], env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def plan_dataset(root: Path, name: str, dataset_id: int, cases: int, test_cases: int,
                 size: int = SMALL_SIZE) -> PlannedDataset:
    """Generate an embedded dataset and run nnU-Net's planning and preprocessing (3d_fullres) on it."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(root)), "LANG": "C.UTF-8",
           # one worker everywhere: 2 cores. (nnUNet_n_proc_DA=0 would crash the planner in nnU-Net 2.8.1.)
           "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "1", "OMP_NUM_THREADS": "1"}
    for variable in NNUNET_PATH_VARIABLES:
        (root / variable).mkdir(parents=True)
        env[variable] = str(root / variable)
    run_command([BIN / "nnunet-scnas", "make-dataset", name, "--cases", cases, "--test-cases", test_cases,
                 "--size", size, "--id", dataset_id], env)
    run_command([BIN / "nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c", "3d_fullres", "-np", "1",
                 "-npfp", "1", "--no_pbar"], env)
    raw = next((root / "nnUNet_raw").glob(f"Dataset{dataset_id:03d}_*"))
    preprocessed = root / "nnUNet_preprocessed" / raw.name
    return PlannedDataset(dataset_id, raw.name, env, raw, preprocessed,
                          (preprocessed / "nnUNetPlans.json").read_bytes())


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
