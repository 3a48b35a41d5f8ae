"""`nnunet-scnas demo`: the whole method on the embedded data, through nnU-Net's own commands.

brain-tumour-like set -> plan/preprocess -> architecture search (fold 0) -> export the genotype as a plans
configuration, width FLOPs-matched to stock nnU-Net -> train stock nnU-Net and the derived network with the
same trainer and budget -> nnU-Net's validation -> comparison table; then the same genotype transferred to
the CT-like set, trained and compared there too.

The working folder holds nnU-Net's three folders and `demo_state.json`: a re-run with the same settings
skips the finished stages (and resumes an interrupted training with `--c`); other settings are refused.
"""
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from nnunet_scnas import __version__
from nnunet_scnas.atomic import write_json
from nnunet_scnas.errors import UserError
from nnunet_scnas.json_input import read_json
from nnunet_scnas.nnunet.commands import nnunet_paths, run_nnunet

BRAIN_ID, LUNG_ID = 901, 902
SEARCH_FOLD = 0


@dataclass(frozen=True)
class DemoProfile:
    search_trainer: str
    train_trainer: str  # both sides of every comparison train with this one
    folds: tuple[int, ...]
    brain_cases: int
    lung_cases: int
    size: int | None  # make-dataset --size (None: the dataset's default)
    width: str  # export-plans --width: "auto" matches stock nnU-Net's FLOPs


PROFILES = {
    "default": DemoProfile("nnUNetTrainerSCNASSearch_cpu", "nnUNetTrainerCPUBudget", (0,), 20, 10, None, "auto"),
    # the whole chain with the least work: 7 cases (5 to train on in fold 0, the search's minimum), the
    # smallest volumes that take three downsamplings, and a narrow derived network
    "quick": DemoProfile("nnUNetTrainerSCNASSearch_cpuQuick", "nnUNetTrainerCPUBudget_quick", (0,), 7, 5, 40, "8"),
}


# The adapter's stages are imported when they run: nnU-Net reads its folder variables when first imported, and
# `Demo.run` sets them first.
def _make_dataset(name: str, raw: Path, cases: int, size: int | None, dataset_id: int) -> None:
    from nnunet_scnas.nnunet.datasets import make_dataset

    folder = make_dataset(name, raw, cases=cases, size=size, dataset_id=dataset_id, force=True,
                          progress=lambda line: print(line, flush=True))
    print(f"wrote {folder}", flush=True)


def _export_plans(dataset_id: int, genotype: Path, width: str) -> None:
    from nnunet_scnas.nnunet.export.plans_export import export_plans

    width = width if width == "auto" else int(width)
    print(export_plans(str(dataset_id), str(genotype), width=width, force=True).summary(), flush=True)


def _compare(dataset_id: int, folds, output_dir: Path, trainer: str) -> None:
    from nnunet_scnas.nnunet.compare.comparison import compare
    from nnunet_scnas.nnunet.compare.report import terminal_summary
    from nnunet_scnas.nnunet.compare.results import Method

    methods = [Method("nnU-Net", trainer, "3d_fullres"), Method("SCNAS", trainer, "3d_fullres_scnas")]
    print(terminal_summary(compare(dataset_id, methods, folds, output_dir)), flush=True)


class Demo:
    def __init__(self, workdir, quick: bool, device: str, force: bool = False):
        self.workdir = Path(workdir).resolve()
        self.profile_name = "quick" if quick else "default"
        self.profile = PROFILES[self.profile_name]
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise UserError("--device cuda, but torch sees no CUDA device: use --device cpu (the default)")
        self.device = device
        self.state_file = self.workdir / "demo_state.json"
        self.settings = {"profile": self.profile_name, "device": device, "nnunet_scnas": __version__,
                         **asdict(self.profile)}
        self.settings["folds"] = list(self.profile.folds)
        self.done = self._load_state(force)

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
                state = read_json(self.state_file, "demo state")
                settings, done = dict(state["settings"]), list(state["done"])
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{self.state_file} is damaged: --force starts the demo over") from None
            if settings != self.settings:
                raise UserError(
                    f"{self.workdir} holds a demo run with other settings ({settings.get('profile')}, "
                    f"device {settings.get('device')}): use another --workdir, or --force to start it over")
            return done
        if self.workdir.exists() and any(self.workdir.iterdir()) and not force:
            if not self.state_file.is_file():
                raise UserError(f"{self.workdir} is not empty and is not a demo folder: choose another --workdir")
        if force and self.workdir.exists():
            import shutil

            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        return []

    def _save_state(self) -> None:
        write_json(self.state_file, {"settings": self.settings, "done": self.done})

    def _train_args(self, dataset_id: int, configuration: str, fold: int, trainer: str) -> list:
        return [dataset_id, configuration, fold, "-tr", trainer, "-device", self.device, "--c"]

    def search_folder(self) -> Path:
        return (self.workdir / "nnUNet_results" / f"Dataset{BRAIN_ID}_SimBrainTumour" /
                f"{self.profile.search_trainer}__nnUNetPlans__3d_fullres" / f"fold_{SEARCH_FOLD}")

    def stages(self):
        p = self.profile
        genotype = self.search_folder() / "genotype.json"
        raw = self.workdir / "nnUNet_raw"
        stages = [
            ("make brain-tumour-like dataset",
             lambda: _make_dataset("braintumour", raw, p.brain_cases, p.size, BRAIN_ID)),
            ("plan and preprocess (nnU-Net)", lambda: run_nnunet("nnUNetv2_plan_and_preprocess", "-d", BRAIN_ID,
                                                                 "-c", "3d_fullres", "-np", 2,
                                                                 "--verify_dataset_integrity")),
            (f"architecture search on fold {SEARCH_FOLD} ({p.search_trainer})",
             lambda: run_nnunet("nnUNetv2_train", *self._train_args(BRAIN_ID, "3d_fullres", SEARCH_FOLD,
                                                                     p.search_trainer))),
            (f"export the genotype as configuration 3d_fullres_scnas (width {p.width})",
             lambda: _export_plans(BRAIN_ID, genotype, p.width)),
        ]
        stages += self._train_and_compare_stages(BRAIN_ID, "brain-tumour-like")
        stages += [
            ("make CT-like dataset (transfer target)",
             lambda: _make_dataset("lungnodule", raw, p.lung_cases, p.size, LUNG_ID)),
            ("plan and preprocess the CT-like dataset (nnU-Net)",
             lambda: run_nnunet("nnUNetv2_plan_and_preprocess", "-d", LUNG_ID, "-c", "3d_fullres", "-np", 2,
                                "--verify_dataset_integrity")),
            ("transfer: export the brain-tumour genotype to the CT-like dataset",
             lambda: _export_plans(LUNG_ID, genotype, p.width)),
        ]
        stages += self._train_and_compare_stages(LUNG_ID, "CT-like")
        return stages

    def _train_and_compare_stages(self, dataset_id: int, label: str):
        p = self.profile
        stages = []
        for fold in p.folds:
            for configuration, who in (("3d_fullres", "stock nnU-Net"), ("3d_fullres_scnas", "SCNAS network")):
                stages.append((f"train {who} ({configuration}) on the {label} set, fold {fold}",
                               lambda c=configuration, f=fold: run_nnunet(
                                   "nnUNetv2_train", *self._train_args(dataset_id, c, f, p.train_trainer))))
        stages.append((f"compare on the {label} set",
                       lambda: _compare(dataset_id, p.folds, self.results_folder(dataset_id), p.train_trainer)))
        return stages

    def results_folder(self, dataset_id: int) -> Path:
        return self.workdir / "comparison" / f"Dataset{dataset_id}"

    def run(self) -> None:
        os.environ.update(nnunet_paths(self.workdir))
        # nnU-Net exports validation predictions with 8 worker processes by default: too many for a laptop
        os.environ.setdefault("nnUNet_def_n_proc", str(min(8, os.cpu_count() or 1)))
        # matplotlib (the plots) keeps its caches here rather than in the home folder: the demo writes in its
        # working folder only
        os.environ.setdefault("MPLCONFIGDIR", str(self.workdir / ".matplotlib"))
        stages = self.stages()
        started = time.time()
        for number, (title, action) in enumerate(stages, start=1):
            header = f"[{number}/{len(stages)}] {title}"
            if title in self.done:
                print(f"\n=== {header}: done in an earlier run, skipped", flush=True)
                continue
            print(f"\n=== {header}", flush=True)
            stage_start = time.time()
            action()
            self.done.append(title)
            self._save_state()
            print(f"=== {header}: finished in {time.time() - stage_start:.0f} s", flush=True)
        self._print_summary(time.time() - started)

    def _print_summary(self, seconds: float) -> None:
        search_folder = self.search_folder()
        print(f"\nDemo finished in {seconds / 60:.1f} min ({self.profile_name} profile, device {self.device}).")
        for dataset_id in (BRAIN_ID, LUNG_ID):
            folder = self.results_folder(dataset_id)
            print(f"  Dataset{dataset_id}: table {folder / 'comparison.md'}, plot {folder / 'comparison.png'}, "
                  f"all on one page {folder / 'report.html'}")
        print(f"  genotype: {search_folder / 'genotype.json'}")
        print(f"  search plots: {search_folder / 'search_progress.png'}")
        print(f"  cell drawings: {search_folder / 'cells'}")
