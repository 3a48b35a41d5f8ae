"""Run nnU-Net's own console commands (nnUNetv2_*) in a subprocess, as a user would, and find a trainer as they
do."""
import contextlib
import io
import os
import warnings
import shutil
import subprocess
import sys
from pathlib import Path

from nnunet_scnas.errors import UserError

NNUNET_PATH_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def nnunet_paths(root) -> dict[str, str]:
    """nnU-Net's three folders under `root`, created."""
    paths = {}
    for variable in NNUNET_PATH_VARIABLES:
        folder = Path(root) / variable
        folder.mkdir(parents=True, exist_ok=True)
        paths[variable] = str(folder)
    return paths


def command_path(name: str) -> str:
    """The console script of this Python environment (the one nnunet-scnas runs in), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise UserError(f"{name} not found: install nnunetv2 in this environment (pip install nnunetv2)")
    return found


def run_nnunet(name: str, *args, env_overrides: dict | None = None) -> None:
    """Run `name args...` with its output on the terminal; a failure becomes one UserError line."""
    command = [command_path(name), *map(str, args)]
    print("$ " + " ".join([name, *command[1:]]), flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_overrides or {})}
    returncode = subprocess.run(command, env=env).returncode
    if returncode != 0:
        raise UserError(f"{name} failed with exit code {returncode}; its output is above")


def find_trainer_class(name: str):
    """The trainer class `name`, found as `nnUNetv2_train -tr name` finds it (nnU-Net's folder, then
    `nnUNet_extTrainer`), quietly: nnU-Net narrates its lookup, and importing its trainers warns of torch's own
    deprecations. Raises nnU-Net's RuntimeError when there is none."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return recursive_find_trainer_class_by_name(name)
