"""A long job as a list of named stages in one working folder, resumable: what the demo and the benchmark share.

The working folder holds nnU-Net's three folders and a state file (`<kind>_state.json`): the settings of the run
and the stages finished so far, with their wall times. A re-run with the same settings skips the finished
stages (an interrupted nnU-Net training resumes with `--c`); a run with other settings is refused, so that the
results of two settings never mix; `--force` deletes the folder's earlier run first.

A run may take longer than one machine lives. Its record (the state file, the searches' and trainings' results,
the comparison) is small; its data (nnU-Net's raw and preprocessed folders) and checkpoints are not, and
`.gitignore` in the working folder leaves them out. Copied to a fresh machine, the record continues: the data
stages (deterministic: the embedded sets, nnU-Net's planning, the exported configurations) run again, the
finished searches and trainings are kept.
"""
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

from nnunet_scnas.atomic import write_json, write_text
from nnunet_scnas.errors import UserError
from nnunet_scnas.json_input import read_json
from nnunet_scnas.nnunet.commands import nnunet_paths, run_nnunet


DATA_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed")
# not part of a run's record: the data (rebuilt on a fresh machine), checkpoints and predictions (no later stage
# reads them), nnU-Net's progress plots (the training logs hold their numbers)
RECORD_GITIGNORE = """\
# the record of this run is what git keeps; a re-run on a fresh machine rebuilds the data and continues
/nnUNet_raw/
/nnUNet_preprocessed/
/.matplotlib/
*.pth
*.partial
*.tmp
*.nii.gz
*.npz
*.pkl
progress.png
"""


class Stage(NamedTuple):
    title: str  # the key of the state file
    action: Callable[[], None]
    data: bool = False  # writes only into DATA_FOLDERS, the same on every machine: rebuilt where they are missing


class StagedRun:
    """Subclasses set `kind` ("demo", "benchmark") and implement `stages()`: a list of `Stage`."""

    kind = "run"

    def __init__(self, workdir, settings: dict, force: bool = False):
        self.workdir = Path(workdir).resolve()
        self.settings = settings
        self.state_file = self.workdir / f"{self.kind}_state.json"
        self.stage_seconds: dict[str, float] = {}
        self.stage_commands: dict[str, list[str]] = {}  # the nnU-Net commands each stage ran, for the report
        self._commands: list[str] = []
        self.done = self._load_state(force)

    def stages(self) -> list[Stage]:
        raise NotImplementedError

    def _check_workdir(self) -> None:
        """The working folder is a folder this user can write in (created if missing), before anything else."""
        if self.workdir.exists() and not self.workdir.is_dir():
            raise UserError(f"--workdir {self.workdir} is a file, not a folder: give a folder (it is created if "
                            f"missing)")
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=self.workdir).close()
        except OSError as error:
            raise UserError(f"cannot write in --workdir {self.workdir} ({error.strerror}): give a folder you can "
                            f"write in") from None

    def _load_state(self, force: bool) -> list[str]:
        self._check_workdir()
        if self.state_file.is_file() and not force:
            try:
                state = read_json(self.state_file, f"{self.kind} state")
                settings, done = dict(state["settings"]), list(state["done"])
                self.stage_seconds = {str(k): float(v) for k, v in state.get("stage_seconds", {}).items()}
                self.stage_commands = {str(k): list(map(str, v)) for k, v in state.get("stage_commands", {}).items()}
            except (ValueError, KeyError, TypeError, AttributeError):
                raise UserError(f"{self.state_file} is damaged: --force starts the {self.kind} over") from None
            if settings != self.settings:
                changed = sorted(k for k in {*settings, *self.settings} if settings.get(k) != self.settings.get(k))
                raise UserError(
                    f"{self.workdir} holds a {self.kind} run with other settings ({settings.get('profile')}, "
                    f"device {settings.get('device')}; differing: {', '.join(changed)}): use another --workdir, "
                    f"or --force to start it over")
            return done
        if self.workdir.exists() and any(self.workdir.iterdir()) and not force:
            raise UserError(f"{self.workdir} is not empty and is not a {self.kind} folder: choose another --workdir")
        if force and self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        return []

    def _write_gitignore(self) -> None:
        if not (self.workdir / ".gitignore").exists():
            write_text(self.workdir / ".gitignore", RECORD_GITIGNORE)

    def _rebuild_missing_data(self, stages: list[Stage], missing: list[str]) -> None:
        """A record without its data (copied to a fresh machine): the finished data stages run again."""
        rebuilt = [stage.title for stage in stages if stage.data and stage.title in self.done]
        if missing and rebuilt:
            print(f"{self.workdir} holds a {self.kind} run without its data ({', '.join(missing)} missing): the "
                  f"{len(rebuilt)} data stages run again, the finished searches and trainings are kept", flush=True)
            self.done = [title for title in self.done if title not in rebuilt]

    def _save_state(self) -> None:
        write_json(self.state_file, {"settings": self.settings, "done": self.done,
                                     "stage_seconds": self.stage_seconds, "stage_commands": self.stage_commands})

    def run_nnunet(self, name: str, *args) -> None:
        """`commands.run_nnunet`, with the command recorded for the stage that runs it."""
        self._commands.append(" ".join([name, *map(str, args)]))
        run_nnunet(name, *args)

    def set_environment(self) -> None:
        """nnU-Net's folders inside the working folder, and caches that would otherwise land in the home folder."""
        os.environ.update(nnunet_paths(self.workdir))
        # nnU-Net exports validation predictions with 8 worker processes by default: too many for a laptop
        os.environ.setdefault("nnUNet_def_n_proc", str(min(8, os.cpu_count() or 1)))
        # matplotlib (the plots) keeps its caches here rather than in the home folder
        os.environ.setdefault("MPLCONFIGDIR", str(self.workdir / ".matplotlib"))

    def run_stages(self) -> float:
        """Run the stages not done yet, each with a numbered header and its wall time; returns the seconds taken."""
        missing = [name for name in DATA_FOLDERS if not (self.workdir / name).is_dir()]  # before they are created
        self.set_environment()
        self._write_gitignore()
        stages = self.stages()
        titles = [stage.title for stage in stages]
        if len(set(titles)) != len(titles):
            raise AssertionError("stage titles must differ: they are the keys of the state file")
        self._rebuild_missing_data(stages, missing)
        started = time.time()
        for number, (title, action, _) in enumerate(stages, start=1):
            header = f"[{number}/{len(stages)}] {title}"
            if title in self.done:
                print(f"\n=== {header}: done in an earlier run, skipped", flush=True)
                continue
            print(f"\n=== {header}", flush=True)
            stage_start = time.time()
            self._commands = []
            action()
            self.done.append(title)
            if self._commands:
                self.stage_commands[title] = self._commands
            # a stage resumed after a kill counts only its last part: good enough to size a budget
            self.stage_seconds[title] = round(time.time() - stage_start, 1)
            self._save_state()
            print(f"=== {header}: finished in {time.time() - stage_start:.0f} s", flush=True)
        return time.time() - started
