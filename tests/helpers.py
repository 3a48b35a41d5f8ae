"""What several test files need: genotype builders and nnU-Net-planned embedded datasets.

Fixtures that share these across a session live in `conftest.py`.
"""
import os
import subprocess
import sys
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
