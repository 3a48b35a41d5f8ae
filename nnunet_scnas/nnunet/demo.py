"""`nnunet-scnas demo`: the whole method on the embedded data, through nnU-Net's own commands.

brain-tumour-like set -> plan/preprocess -> one architecture search per fold, on that fold's training cases
only -> each fold's genotype exported as its own plans configuration (`3d_fullres_scnas_fold<F>`), width
matched to stock nnU-Net (its FLOPs, or its training memory); random architectures exported the same way ->
stock nnU-Net, the searched and the random networks trained with one trainer and budget, fold by fold ->
nnU-Net's validation -> comparison (tables, paired tests, verdicts, report.html); then (the transfer) fold 0's
genotype exported for the CT-like set (`3d_fullres_scnas`), trained and compared there beside stock nnU-Net and a
random architecture.
Profiles: `quick` (tests: minutes, numbers mean nothing), `default` (fold 0, the cost-aware search, one random
architecture, every network at stock nnU-Net's training memory; 24 minutes on 2 cores on 2026-12-07, README;
the transfer only with `--transfer`) and `full` (the benchmark: 5 folds, two random architectures, two search
variants on fold 0; hours).

The working folder holds nnU-Net's three folders and `demo_state.json`: a re-run with the same settings
skips the finished stages (and resumes an interrupted training with `--c`); other settings are refused
(`staged_run.py`).
"""
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from nnunet_scnas import __version__
from nnunet_scnas.atomic import write_text
from nnunet_scnas.errors import UserError
from nnunet_scnas.nnunet.staged_run import Stage, StagedRun

BRAIN_ID, LUNG_ID = 901, 902
DATASET_NAMES = {BRAIN_ID: "Dataset901_SimBrainTumour", LUNG_ID: "Dataset902_SimLungNodule"}
# Bumped whenever the embedded data or a profile's trainer budget changes: the settings would read the same, so
# without it a run folder of the earlier recipe would be continued with the new one and its results mixed.
# 2: nnUNetTrainerCPUBenchmark at 24 epochs (was 16).
RECIPE = 2
VARIANT_FOLD = 0  # the search variants are searched and retrained on this fold only
TRANSFER_FOLD = 0  # whose genotype is transferred to the CT-like set


@dataclass(frozen=True)
class SearchVariant:
    key: str  # in the configuration's name: 3d_fullres_scnas_<key>
    title: str
    trainer: str


@dataclass(frozen=True)
class DemoProfile:
    search_trainer: str
    train_trainer: str  # every method of every comparison trains with this one
    folds: tuple[int, ...]
    brain_cases: int
    lung_cases: int
    brain_size: int | None  # make-dataset --size (None: the dataset's default)
    lung_size: int | None
    width: str  # export-plans --width: "auto" matches stock nnU-Net's `match`
    match: str = "flops"  # export-plans --match: "flops" or "memory" (training memory, in the mode it trains in)
    random_seeds: tuple[int, ...] = ()  # random architectures (random:SEED), the baseline a search must beat
    search_variants: tuple[SearchVariant, ...] = ()
    transfer: bool = True  # the CT-like half runs; False: only with `demo --transfer`


PROFILE_FLAGS = {"default": "", "quick": " --quick", "full": " --full"}
PROFILES = {
    # fewer, longer trainings (288 iterations: at 72 stock nnU-Net learned the smaller tumour labels in some runs
    # only, at 192 it missed one in fold 0), each network at stock nnU-Net's training memory (cheaper per step than
    # at its FLOPs), the transfer separate
    "default": DemoProfile("nnUNetTrainerSCNASSearch_cpuCost", "nnUNetTrainerCPUBenchmark", (0,), 20, 10, None, None,
                           "auto", match="memory", random_seeds=(0,), transfer=False),
    # the whole chain with the least work: 7 cases (5 to train on in fold 0, the search's minimum), the
    # smallest volumes that take three downsamplings, and a narrow derived network
    "quick": DemoProfile("nnUNetTrainerSCNASSearch_cpuQuick", "nnUNetTrainerCPUBudget_quick", (0,), 7, 5, 40, 40, "8",
                         random_seeds=(0,)),
    # 5 folds x (stock, searched, 2 random) + 2 variants + the transfer, 44 nnU-Net runs: hours on 2 cores, in
    # pieces (docs/benchmark_cost.md); both sets at their default size: at 40 voxels across stock nnU-Net never
    # learns the enhancing tumour (0 Dice after 384 iterations), at 48 it does within 72
    "full": DemoProfile(
        "nnUNetTrainerSCNASSearch_cpuBenchmark", "nnUNetTrainerCPUBenchmark", (0, 1, 2, 3, 4), 20, 10, None, None,
        "auto",
        random_seeds=(0, 1),
        search_variants=(SearchVariant("betas09", "weight betas (0.9, 0.999)",
                                       "nnUNetTrainerSCNASSearch_cpuBenchmarkBetas09"),
                         SearchVariant("jaccard", "Jaccard loss in the search",
                                       "nnUNetTrainerSCNASSearch_cpuBenchmarkJaccard"))),
}


# The adapter's stages are imported when they run: nnU-Net reads its folder variables when first imported, and
# `Demo.run` sets them first.
def _make_dataset(name: str, raw: Path, cases: int, size: int | None, dataset_id: int) -> None:
    from nnunet_scnas.nnunet.datasets import make_dataset

    folder = make_dataset(name, raw, cases=cases, size=size, dataset_id=dataset_id, force=True,
                          progress=lambda line: print(line, flush=True))
    print(f"wrote {folder}", flush=True)


def _export_plans(dataset_id: int, genotype: str, target: str, profile: DemoProfile, device: str) -> None:
    from nnunet_scnas.nnunet.export.plans_export import AUTO, export_plans

    width = profile.width if profile.width == "auto" else int(profile.width)
    # at equal memory, the mode the network trains in: the CPU trains in plain (lean saves memory on a GPU only)
    memory_mode = "plain" if profile.match == "memory" and device == "cpu" else AUTO
    print(export_plans(str(dataset_id), genotype, target=target, width=width, force=True, match=profile.match,
                       memory_mode=memory_mode).summary(), flush=True)


def check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda, but torch sees no CUDA device: use --device cpu (the default)")


def random_name(seed: int) -> str:
    return f"random-{seed}"


class Demo(StagedRun):
    kind = "demo"

    def __init__(self, workdir, profile: str, device: str, force: bool = False, transfer: bool = False):
        if profile not in PROFILES:
            raise UserError(f"unknown demo profile {profile!r}; valid: {', '.join(PROFILES)}")
        self.profile_name, self.profile = profile, PROFILES[profile]
        check_device(device)
        self.device = device
        self.transfer = transfer or self.profile.transfer
        settings = {"profile": profile, "device": device, "nnunet_scnas": __version__, "recipe": RECIPE,
                    **json.loads(json.dumps(asdict(self.profile)))}  # tuples as lists: as the state file has them
        # the transfer only adds stages after the others: `demo --transfer` continues a finished demo's folder
        del settings["transfer"]
        super().__init__(workdir, settings, force)

    # ---------------------------------------------------------------------------------------------- where

    def datasets(self) -> tuple[int, ...]:
        return (BRAIN_ID, LUNG_ID) if self.transfer else (BRAIN_ID,)

    def search_folder(self, fold: int, trainer: str | None = None) -> Path:
        trainer = trainer or self.profile.search_trainer
        return (self.workdir / "nnUNet_results" / DATASET_NAMES[BRAIN_ID] / f"{trainer}__nnUNetPlans__3d_fullres" /
                f"fold_{fold}")

    def results_folder(self, dataset_id: int) -> Path:
        return self.workdir / "comparison" / f"Dataset{dataset_id}"

    # --------------------------------------------------------------------------------------------- what

    def methods(self, dataset_id: int) -> list:
        """The compared methods on a dataset, stock nnU-Net first: name -> configuration."""
        from nnunet_scnas.nnunet.compare.results import Method

        trainer, seeds = self.profile.train_trainer, self.profile.random_seeds
        searched = "3d_fullres_scnas_fold{fold}" if dataset_id == BRAIN_ID else "3d_fullres_scnas"
        randoms = seeds if dataset_id == BRAIN_ID else seeds[:1]
        return [Method("nnU-Net", trainer, "3d_fullres"), Method("SCNAS", trainer, searched),
                *(Method(random_name(seed), trainer, f"3d_fullres_random{seed}") for seed in randoms)]

    def _train(self, dataset_id: int, configuration: str, fold: int, trainer: str) -> None:
        self.run_nnunet("nnUNetv2_train", dataset_id, configuration, fold, "-tr", trainer, "-device", self.device, "--c")

    def stages(self) -> list[Stage]:
        p = self.profile
        raw = self.workdir / "nnUNet_raw"
        stages = [
            Stage("make brain-tumour-like dataset",
                  lambda: _make_dataset("braintumour", raw, p.brain_cases, p.brain_size, BRAIN_ID), data=True),
            self._plan_stage("plan and preprocess (nnU-Net)", BRAIN_ID),
        ]
        for fold in p.folds:
            stages += [
                Stage(f"architecture search on fold {fold} ({p.search_trainer})",
                      lambda f=fold: self._train(BRAIN_ID, "3d_fullres", f, p.search_trainer)),
                Stage(f"export fold {fold}'s genotype as configuration 3d_fullres_scnas_fold{fold} ({self._width})",
                      lambda f=fold: self._export(BRAIN_ID, str(self.search_folder(f) / "genotype.json"),
                                                  f"3d_fullres_scnas_fold{f}"), data=True)]
        for seed in p.random_seeds:
            stages.append(Stage(f"export the random architecture random:{seed} as configuration "
                                f"3d_fullres_random{seed}",
                                lambda s=seed: self._export(BRAIN_ID, f"random:{s}", f"3d_fullres_random{s}"),
                                data=True))
        for variant in p.search_variants:
            stages += [
                Stage(f"search variant '{variant.title}' on fold {VARIANT_FOLD} ({variant.trainer})",
                      lambda v=variant: self._train(BRAIN_ID, "3d_fullres", VARIANT_FOLD, v.trainer)),
                Stage(f"export its genotype as configuration 3d_fullres_scnas_{variant.key}",
                      lambda v=variant: self._export(BRAIN_ID, str(self.search_folder(VARIANT_FOLD, v.trainer) /
                                                                   "genotype.json"), f"3d_fullres_scnas_{v.key}"),
                      data=True)]
        stages += self._train_stages(BRAIN_ID, "brain-tumour-like", p.folds)
        for variant in p.search_variants:
            stages.append(Stage(f"train the network of search variant '{variant.title}', fold {VARIANT_FOLD}",
                                lambda v=variant: self._train(BRAIN_ID, f"3d_fullres_scnas_{v.key}", VARIANT_FOLD,
                                                              p.train_trainer)))
        stages.append(Stage("compare on the brain-tumour-like set", lambda: self._compare(BRAIN_ID)))
        return stages + (self._transfer_stages() if self.transfer else [])

    def _transfer_stages(self) -> list[Stage]:
        p, raw = self.profile, self.workdir / "nnUNet_raw"
        transfer_genotype = str(self.search_folder(TRANSFER_FOLD) / "genotype.json")
        stages = [
            Stage("make CT-like dataset (transfer target)",
                  lambda: _make_dataset("lungnodule", raw, p.lung_cases, p.lung_size, LUNG_ID), data=True),
            self._plan_stage("plan and preprocess the CT-like dataset (nnU-Net)", LUNG_ID),
            Stage(f"transfer: export fold {TRANSFER_FOLD}'s brain-tumour genotype to the CT-like dataset",
                  lambda: self._export(LUNG_ID, transfer_genotype, "3d_fullres_scnas"), data=True),
        ]
        for seed in p.random_seeds[:1]:
            stages.append(Stage(f"export random:{seed} to the CT-like dataset",
                                lambda s=seed: self._export(LUNG_ID, f"random:{s}", f"3d_fullres_random{s}"),
                                data=True))
        stages += self._train_stages(LUNG_ID, "CT-like", p.folds)
        stages.append(Stage("compare on the CT-like set", lambda: self._compare(LUNG_ID)))
        return stages

    @property
    def _width(self) -> str:
        p = self.profile
        # "(width auto)" alone: FLOPs, as stage titles (the state file's keys) have always read
        return f"width {p.width}" + (f", matched by {p.match}" if p.match != "flops" else "")

    def _export(self, dataset_id: int, genotype: str, target: str) -> None:
        _export_plans(dataset_id, genotype, target, self.profile, self.device)

    def _plan_stage(self, title: str, dataset_id: int) -> Stage:
        # two processes for every step: nnU-Net's default of 8 for the fingerprint costs ~15 s of process start-up
        # on 2 cores, more than the embedded sets take to analyse
        command = ("nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c", "3d_fullres", "-np", 2, "-npfp", 2,
                   "--verify_dataset_integrity")
        return Stage(title, lambda: self.run_nnunet(*command), data=True)

    def _train_stages(self, dataset_id: int, label: str, folds) -> list[Stage]:
        """Fold by fold, every method: a run stopped half-way leaves whole folds to compare."""
        stages = []
        for fold in folds:
            for method in self.methods(dataset_id):
                configuration = method.fold_configuration(fold)
                stages.append(Stage(f"train {method.name} ({configuration}) on the {label} set, fold {fold}",
                                    lambda c=configuration, f=fold: self._train(dataset_id, c, f,
                                                                                self.profile.train_trainer)))
        return stages

    def contrasts(self, dataset_id: int) -> list:
        """The search against the best of the random architectures (every method against stock nnU-Net is implied)."""
        from nnunet_scnas.nnunet.compare.comparison import Contrast

        randoms = tuple(m.name for m in self.methods(dataset_id)[2:])  # after stock nnU-Net and the search
        return [Contrast("SCNAS", randoms)] if randoms else []

    def _compare(self, dataset_id: int) -> None:
        from nnunet_scnas.nnunet.compare.comparison import compare
        from nnunet_scnas.nnunet.compare.report import terminal_summary

        output = self.results_folder(dataset_id)
        sections = []
        if dataset_id == BRAIN_ID:
            sections += self._search_sections(output)
        sections += [self._cells_section(dataset_id), self._provenance_section()]
        comparison = compare(dataset_id, self.methods(dataset_id), self.profile.folds, output,
                             self.contrasts(dataset_id), sections)
        print(terminal_summary(comparison), flush=True)
        self._screenshot(comparison.files["html"])

    def _search_sections(self, output: Path) -> list:
        """The searches' summary and plots, and the search variants' retrained Dice on their fold."""
        from nnunet_scnas.nnunet.compare.comparison import compare
        from nnunet_scnas.nnunet.compare.html_report import Image, Paragraph, Section, Table
        from nnunet_scnas.nnunet.compare.report import dice_rows, markdown_table, terminal_summary
        from nnunet_scnas.nnunet.compare.results import Method
        from nnunet_scnas.nnunet.search.ranking import RANKING_PLOT
        from nnunet_scnas.nnunet.search.summary import read_search_summary, summary_table

        summaries = [read_search_summary(folder, name) for name, folder in self.searches()]
        table = summary_table(summaries)
        write_text(output / "search_summary.md", "# Did the searches decide?\n\n" + markdown_table(*table) + "\n")
        for s in summaries:
            print(f"search {s.name}: mean entropy {s.entropy_start:.3f} -> {s.entropy_end:.3f}, "
                  f"{s.edges_changed_at_end} edges changed in the last epochs, {s.parameter_free_edges} "
                  f"parameter-free, ranking check (random genotypes beaten): {s.ranking}", flush=True)
        sections = [Section("Did the searches decide?", [
            Paragraph("Per search: the mean entropy of softmax(alpha) over the 56 edges (ln 8 = 2.079: undecided), "
                      "how many edges changed their op over the last two epochs, how many of the final genotype's "
                      "edges are parameter-free (identity, pools, zero), how many random genotypes of the space "
                      "the found one beats on the search's own proxy (its loss on the architecture set, every genotype "
                      "run in the trained supernet; FAILED: not most of them) and the final op histogram."),
            Table(*table),
            *(Image(folder / "search_progress.png", f"search {name}") for name, folder in self.searches()),
            *(Image(folder / RANKING_PLOT, f"search {name}: ranking check") for name, folder in self.searches()
              if (folder / RANKING_PLOT).is_file())])]
        if self.profile.search_variants:
            trainer = self.profile.train_trainer
            variants = [Method("nnU-Net", trainer, "3d_fullres"),
                        Method("SCNAS", trainer, f"3d_fullres_scnas_fold{VARIANT_FOLD}"),
                        *(Method(f"SCNAS, {v.title}", trainer, f"3d_fullres_scnas_{v.key}")
                          for v in self.profile.search_variants)]
            comparison = compare(BRAIN_ID, variants, (VARIANT_FOLD,), output / "search_variants")
            print(terminal_summary(comparison), flush=True)
            sections.append(Section(f"Search variants, fold {VARIANT_FOLD}", [
                Paragraph(f"The same search budget with one change each, the genotype retrained like the others; "
                          f"Dice (%) on fold {VARIANT_FOLD}'s validation cases (one fold: a hint, not a test)."),
                Table(*dice_rows(comparison))]))
        return sections

    def _cells_section(self, dataset_id: int):
        from nnunet_scnas.genotype import CELL_TYPES
        from nnunet_scnas.nnunet.compare.html_report import Image, Paragraph, Section

        cells = self.search_folder(TRANSFER_FOLD) / "cells"
        where = "transferred from the brain-tumour-like set" if dataset_id == LUNG_ID else "its own search"
        return Section(f"The cells of fold {TRANSFER_FOLD}'s genotype ({where})", [
            Paragraph(f"Genotype: `{self.search_folder(TRANSFER_FOLD) / 'genotype.json'}`; the other folds' genotypes "
                      f"are beside it in their fold folders."),
            *(Image(cells / f"{cell_type}.png", cell_type) for cell_type in CELL_TYPES)])

    def _provenance_section(self):
        from nnunet_scnas.nnunet.compare.html_report import Preformatted, Section, Table
        from nnunet_scnas.nnunet.provenance import machine, versions

        command = f"nnunet-scnas demo{PROFILE_FLAGS[self.profile_name]} --workdir {self.workdir} --device {self.device}"
        stages = [[title, f"{self.stage_seconds[title]:.0f}"] for title in self.done if title in self.stage_seconds]
        commands = [line for title in self.done for line in self.stage_commands.get(title, [])]
        return Section("How this was made", [
            Preformatted(command), Table(["stage", "wall time (s)"], stages),
            Preformatted("\n".join(commands) or "(no nnU-Net command recorded)"),
            Table(["machine", ""], [[k, v] for k, v in machine().items()]),
            Table(["package", "version"], [[k, v] for k, v in versions().items()])])

    def _screenshot(self, html: Path) -> None:
        from nnunet_scnas.nnunet.compare.browser import INSTALL_HINT, find_chromium, screenshot

        if find_chromium() is None:
            print(f"no screenshot of {html.name}: chromium is not installed ({INSTALL_HINT})", flush=True)
            return
        print(f"screenshot: {screenshot(html, html.with_suffix('.png'))}", flush=True)

    def searches(self) -> list[tuple[str, Path]]:
        """(name, fold folder) of every search of the profile."""
        searches = [(f"fold {fold}", self.search_folder(fold)) for fold in self.profile.folds]
        searches += [(f"fold {VARIANT_FOLD}, {v.title}", self.search_folder(VARIANT_FOLD, v.trainer))
                     for v in self.profile.search_variants]
        return searches

    # ---------------------------------------------------------------------------------------------- run

    def run(self) -> None:
        self._print_summary(self.run_stages())

    def _print_summary(self, seconds: float) -> None:
        search_folder = self.search_folder(TRANSFER_FOLD)
        print(f"\nDemo finished in {seconds / 60:.1f} min ({self.profile_name} profile, device {self.device}).")
        for dataset_id in self.datasets():
            folder = self.results_folder(dataset_id)
            print(f"  Dataset{dataset_id}: table {folder / 'comparison.md'}, plot {folder / 'comparison.png'}, "
                  f"all on one page {folder / 'report.html'}")
        print(f"  genotype (fold {TRANSFER_FOLD}): {search_folder / 'genotype.json'}")
        print(f"  search plots: {search_folder / 'search_progress.png'}")
        print(f"  cell drawings: {search_folder / 'cells'}")
        if not self.transfer:
            print(f"  the transfer to the CT-like set: nnunet-scnas demo{PROFILE_FLAGS[self.profile_name]} --transfer "
                  f"--workdir {self.workdir} (continues this folder)")
        print("\n" + "\n".join(self.closing_lines()), flush=True)

    def closing_lines(self) -> list[str]:
        """What the run showed: each network's cost, the search's own ranking check, a reading of the tables."""
        from nnunet_scnas.nnunet.compare.comparison import read_comparison
        from nnunet_scnas.nnunet.compare.reading import cost_lines, reading
        from nnunet_scnas.nnunet.search.ranking import passed
        from nnunet_scnas.nnunet.search.summary import read_search_summary

        lines = []
        for name, folder in self.searches():
            s = read_search_summary(folder, name)
            rank = "no ranking check" if s.random_genotypes is None else (
                f"better than {s.better_than} of {s.random_genotypes} random genotypes of the space inside its own "
                f"supernet (ranking check {'passed' if passed(s.better_than, s.random_genotypes) else 'FAILED'})")
            lines.append(f"Search {name}: {rank}; mean entropy {s.entropy_start:.3f} -> {s.entropy_end:.3f}, "
                         f"{s.edges_changed_at_end} of 56 edges changed in its last epochs.")
        for dataset_id in self.datasets():
            comparison = read_comparison(dataset_id, self.methods(dataset_id), self.profile.folds,
                                         self.contrasts(dataset_id))
            folds = ", ".join(map(str, self.profile.folds))
            lines += [f"{DATASET_NAMES[dataset_id]}, fold{'s' if len(self.profile.folds) > 1 else ''} {folds}: "
                      f"cost of training each network (seconds measured here; memory: the estimate for a GPU "
                      f"step at the plan's batch):", *(f"  {line}" for line in cost_lines(comparison)),
                      f"  Reading: {reading(comparison)}"]
        return lines
