"""The plugin as a user meets it: the CLI, nnU-Net finding our trainers, and `doctor`."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_scnas.cli.main import main

BIN = Path(sys.executable).parent


def documented_env(tmp_path, **extra):
    """Only what the README tells a user to set: nnU-Net's three folders (and the basics of a shell)."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(tmp_path)), "LANG": "C.UTF-8"}
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        env[name] = str(folder)
    env.update(extra)
    return env


def run(command, env, **kwargs):
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, **kwargs)


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("env", "doctor", "make-dataset"):
        assert name in out


@pytest.mark.parametrize("argv", [["no-such-command"], ["env", "--no-such-flag"], ["make-dataset"]])
def test_bad_command_line_is_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err


def test_nnunet_train_finds_our_trainer_with_only_the_documented_environment(tmp_path):
    # Dataset 999 does not exist: the run must get past nnU-Net's trainer lookup and stop at the data.
    env = documented_env(tmp_path)
    result = run([str(BIN / "nnUNetv2_train"), "999", "3d_fullres", "0", "-tr", "nnUNetTrainerCPUBudget",
                  "-device", "cpu"], env)
    output = result.stdout + result.stderr
    assert "Could not find requested nnunet trainer" not in output
    assert "Using trainer 'nnUNetTrainerCPUBudget'" in output
    assert result.returncode != 0


def test_unknown_trainer_is_still_reported_by_nnunet(tmp_path):
    env = documented_env(tmp_path)
    result = run([str(BIN / "nnUNetv2_train"), "999", "3d_fullres", "0", "-tr", "nnUNetTrainerNoSuchThing"], env)
    assert result.returncode != 0
    assert "Could not find requested nnunet trainer" in result.stdout + result.stderr


def test_eval_of_env_line_registers_the_trainer_folder(tmp_path):
    # What a user of a source checkout does: eval the printed line in a shell, then ask nnU-Net's lookup.
    env = documented_env(tmp_path)
    script = (
        f'eval "$({BIN / "nnunet-scnas"} env)" && '
        f'{sys.executable} -S -c "import os; print(os.environ[\'nnUNet_extTrainer\'])"'
    )
    result = run(["bash", "-c", script], env)
    assert result.returncode == 0, result.stderr
    from nnunet_scnas.locations import trainers_dir
    assert str(trainers_dir()) in result.stdout.split(os.pathsep)[-1]


def test_env_keeps_a_users_own_trainer_folders(tmp_path):
    env = documented_env(tmp_path, nnUNet_extTrainer=str(tmp_path / "mine"))
    result = run([str(BIN / "nnunet-scnas"), "env"], env)
    assert result.returncode == 0
    assert str(tmp_path / "mine") in result.stdout


def test_doctor_is_green_with_the_documented_environment(tmp_path):
    result = run([str(BIN / "nnunet-scnas"), "doctor"], documented_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert "nnU-Net finds our trainers" in result.stdout


def test_doctor_fails_with_a_fix_when_a_path_is_unset(tmp_path):
    env = documented_env(tmp_path)
    del env["nnUNet_results"]
    result = run([str(BIN / "nnunet-scnas"), "doctor"], env)
    assert result.returncode == 1
    failing = [line for line in result.stdout.splitlines() if line.startswith("[FAIL]")]
    assert len(failing) == 1 and "nnUNet_results" in failing[0] and "fix:" in failing[0]
