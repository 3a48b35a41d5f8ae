"""What several test files need: genotype builders and nnU-Net-planned embedded datasets.

Fixtures that share these across a session live in `conftest.py`.
"""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from nnunet_scnas.genotype import CELL_TYPES, EDGE_ENDPOINTS, EDGES, Genotype, derive_genotype
from nnunet_scnas.ops import OPS

NNUNET_PATH_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def random_logits(seed: int) -> dict[str, torch.Tensor]:
    """Standard-normal architecture logits `[14, 8]` per cell type, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return {cell_type: torch.randn(len(EDGES), len(OPS), generator=g) for cell_type in CELL_TYPES}


def random_genotype(seed: int) -> Genotype:
    """The genotype derived from `random_logits(seed)` (valid by `derive_genotype`'s rule)."""
    return derive_genotype(random_logits(seed))


def reading_only(source: int) -> tuple[str, ...]:
    """A cell type whose ops all read input `source` (0: two cells back, 1: previous cell) or other nodes."""
    return tuple("zero" if s != source else "conv_3x3x3" for s, _ in EDGE_ENDPOINTS)


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
                 size: int = SMALL_SIZE, options=(), edit_raw=None) -> PlannedDataset:
    """Generate an embedded dataset and run nnU-Net's planning and preprocessing (3d_fullres) on it.

    Args:
        options: more make-dataset arguments (e.g. `--regions`).
        edit_raw: called with the raw dataset folder before planning (e.g. to add an ignore label).
    """
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(root)), "LANG": "C.UTF-8",
           # one worker everywhere: 2 cores. (nnUNet_n_proc_DA=0 would crash the planner in nnU-Net 2.8.1.)
           "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "1", "OMP_NUM_THREADS": "1"}
    for variable in NNUNET_PATH_VARIABLES:
        (root / variable).mkdir(parents=True)
        env[variable] = str(root / variable)
    run_command([BIN / "nnunet-scnas", "make-dataset", name, "--cases", cases, "--test-cases", test_cases,
                 "--size", size, "--id", dataset_id, *options], env)
    raw = next((root / "nnUNet_raw").glob(f"Dataset{dataset_id:03d}_*"))
    if edit_raw is not None:
        edit_raw(raw)
    verify = ["--verify_dataset_integrity"] if options or edit_raw else []  # what a user runs on a rewritten set
    run_command([BIN / "nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c", "3d_fullres", "-np", "1",
                 "-npfp", "1", "--no_pbar", *verify], env)
    preprocessed = root / "nnUNet_preprocessed" / raw.name
    return PlannedDataset(dataset_id, raw.name, env, raw, preprocessed,
                          (preprocessed / "nnUNetPlans.json").read_bytes())


# ---------------------------------------------------------------- faults: kills at chosen moments

PAUSE_WRITE = Path(__file__).with_name("pause_write.py")


def start_command(command, env, output: Path, cwd=None) -> subprocess.Popen:
    """`command` in its own process group (so that a kill takes its children too), output into `output`."""
    with output.open("w") as log:
        return subprocess.Popen([str(c) for c in command], env={**env, "PYTHONUNBUFFERED": "1"}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)


def epochs_started(output: str) -> list[int]:
    """The epochs an nnU-Net training printed ("...: Epoch 3"), in order."""
    return [int(m) for m in re.findall(r": Epoch (\d+)$", output, flags=re.MULTILINE)]


def wait_until(condition, process: subprocess.Popen, timeout: float = 600, what: str = "") -> None:
    """Poll `condition()` until true; fail if `process` ends first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the process ended (exit code {process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def kill(process: subprocess.Popen) -> None:
    """SIGKILL to the process group: nothing gets to clean up, as when a machine is preempted."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def kill_at_a_random_moment_of_epoch(command, env, output, epoch: int, rng: random.Random) -> list[int]:
    """Start `command`, kill it at a random moment of epoch `epoch`; the epochs it started.

    The moment is drawn from the first 40 % of the previous epoch's time (nnU-Net logs it; in epoch 0 from the
    first 2 s), at most 2 s: the quick retraining's epochs take well under a second, a search's several, and a
    kill after the epoch's end would test another fault."""
    process = start_command(command, env, output)
    wait_until(lambda: epoch in epochs_started(output.read_text()), process, what=f"epoch {epoch}")
    epoch_times = [float(t) for t in re.findall(r"Epoch time: ([0-9.]+) s", output.read_text())]
    time.sleep(rng.uniform(0, min(2.0, 0.4 * epoch_times[-1]) if epoch_times else 2.0))
    kill(process)
    return epochs_started(output.read_text())


def with_paused_write(command, name: str, occurrence: int, marker: Path) -> list:
    """`command` (a console script of this environment) with the `occurrence`-th write of `name` paused half-way
    (see pause_write.py); `marker` appears when it pauses."""
    return [sys.executable, PAUSE_WRITE, name, occurrence, marker, *command]


# ---------------------------------------------------------------- an exported network, retrained

@dataclass
class Retraining:
    env: dict  # the brain set's folders with a private results folder
    configuration: str
    trainer: str
    folder: Path  # the fold folder
    killed: list[int]  # the epochs the killed run started
    latest_epoch: int  # current_epoch of checkpoint_latest.pth, as the kill left it
    resumed: list[int]  # the epochs the run with --c started
    seed: int  # of the kill moment


# ---------------------------------------------------------------- the quick search

SEARCH_TRAINER = "nnUNetTrainerSCNASSearch_cpuQuick"


def fold_folder(results: Path, dataset: PlannedDataset, trainer: str = SEARCH_TRAINER,
                configuration: str = "3d_fullres", fold: int = 0) -> Path:
    return results / dataset.name / f"{trainer}__nnUNetPlans__{configuration}" / f"fold_{fold}"


def search_command(dataset: PlannedDataset, resume: bool = False) -> list:
    return [BIN / "nnUNetv2_train", dataset.dataset_id, "3d_fullres", 0, "-tr", SEARCH_TRAINER, "-device", "cpu",
            *(["--c"] if resume else [])]


def search_epochs(folder: Path) -> list[dict]:
    return json.loads((folder / "alpha_history.json").read_text())["epochs"]


def assert_same_search(expected: Path, found: Path) -> None:
    """Two searches' fold folders hold the same result: the logits of every epoch (to 1e-5, the rounding of
    resumed floating point), tau, losses, and the very same genotype.json."""
    import numpy as np
    import pytest

    assert [h["epoch"] for h in search_epochs(found)] == [h["epoch"] for h in search_epochs(expected)]
    for a, b in zip(search_epochs(expected), search_epochs(found)):
        for cell_type in CELL_TYPES:
            np.testing.assert_allclose(a["alphas"][cell_type], b["alphas"][cell_type], rtol=0, atol=1e-5)
        assert a["tau"] == b["tau"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
    assert (expected / "genotype.json").read_text() == (found / "genotype.json").read_text()
