"""Plans export, and the exported network through nnU-Net's own commands: train, predict, evaluate, transfer.

One tiny brain-tumour set is generated and planned once for the whole file. Export tests work on a private
copy of its plans; the slow end-to-end tests train on the shared preprocessed data.
"""
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunetv2.run.run_training import get_trainer_from_args
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_scnas.cli.main import main
from nnunet_scnas.flops import derived_flops
from nnunet_scnas.genotype import CELL_TYPES, SCHEMA_VERSION, Genotype
from nnunet_scnas.locations import plans_dir
from nnunet_scnas.nnunet.export.plans_export import AUTO_WIDTH_TOLERANCE, derived_network_size
from nnunet_scnas.nnunet.training.jaccard_loss import SoftJaccardLoss
from nnunet_scnas.nnunet.training.plateau import TrainingLossPlateau
from nnunet_scnas.random_genotype import random_genotype

from helpers import BIN, PlannedDataset, run_command


def run(command, env, timeout=900):
    return run_command(command, env, timeout=timeout)


@pytest.fixture
def brain(planned_braintumour):
    return planned_braintumour


@pytest.fixture
def plans_file(private_plans):
    return private_plans


def mixed_genotype() -> Genotype:
    """A genotype using every kind of op (as a search would leave it), unlike the conv-only plain_unet."""
    ops = ("conv_3x3x3", "dil_sep_conv_3x3x3_r2", "zero", "max_pool_3x3x3", "identity", "dil_sep_conv_3x3x3_r3",
           "avg_pool_3x3x3", "dil_sep_conv_3x3x3_r4", "zero", "conv_3x3x3", "identity", "zero", "zero",
           "dil_sep_conv_3x3x3_r2")
    return Genotype(**{cell_type: ops[k:] + ops[:k] for k, cell_type in enumerate(CELL_TYPES)})


# ------------------------------------------------------------------------------------------------ export

def test_export_adds_a_configuration_that_nnunet_resolves_onto_the_parent(plans_file, brain, capsys):
    assert main(["export-plans", "-d", "951", "-g", "plain_unet"]) == 0
    out = capsys.readouterr().out
    plans = PlansManager(str(plans_file))
    parent, ours = plans.get_configuration("3d_fullres"), plans.get_configuration("3d_fullres_scnas")
    assert ours.network_arch_class_name == "nnunet_scnas.nnunet.plans.SCNASUNetFromPlans"
    kwargs = ours.network_arch_init_kwargs
    # nothing of PlainConvUNet's leaks; the default memory mode "auto" comes with each mode's estimate
    assert set(kwargs) == {"genotype", "stem_width", "strides", "cell_layout", "memory_mode", "memory_estimates"}
    assert kwargs["memory_mode"] == "auto" and set(kwargs["memory_estimates"]) == {"plain", "lean", "cells"}
    assert kwargs["memory_estimates"]["lean"] < kwargs["memory_estimates"]["plain"]
    shipped = json.loads((plans_dir() / "plain_unet.json").read_text())
    assert Genotype.from_dict(kwargs["genotype"]) == Genotype.from_dict(shipped)
    # our strides drive nnU-Net's deep-supervision scales; data, patch and batch come from the parent
    assert ours.pool_op_kernel_sizes == [[1, 1, 1]] + parent.pool_op_kernel_sizes[1:4]
    assert ours.data_identifier == parent.data_identifier
    assert ours.patch_size == parent.patch_size and ours.batch_size == parent.batch_size
    assert not np.any(np.array(ours.patch_size) % np.prod(ours.pool_op_kernel_sizes, axis=0))

    backups = list(plans_file.parent.glob("nnUNetPlans.json.bak-*"))
    assert [b.read_bytes() for b in backups] == [brain.pristine_plans]

    stock_line, derived_line = (line for line in out.splitlines() if "GFLOPs" in line)
    stock, derived = (1e9 * float(line.split(": ")[1].split(" GFLOPs")[0]) for line in (stock_line, derived_line))
    width = kwargs["stem_width"]
    assert f"stem width {width}" in derived_line and "parameters" in derived_line
    # --width auto: the multiple of 4 whose FLOPs come closest to the stock network's
    assert width % 4 == 0 and abs(derived - stock) <= AUTO_WIDTH_TOLERANCE * stock
    for neighbour in (width - 4, width + 4):
        neighbour_flops = derived_flops(kwargs["genotype"], neighbour, input_channels=4, num_classes=4,
                                        patch_size=ours.patch_size, strides=kwargs["strides"])
        assert abs(neighbour_flops - stock) > abs(derived - stock) - 0.01e9
    assert f"nnUNetv2_train {plans.dataset_name} 3d_fullres_scnas FOLD" in out


def _gib_to_train(line: str, mode: str | None = None) -> float:
    """The GiB an export line gives: `to train at batch B: X GiB`, or in `mode` of `plain X, lean Y, cells Z GiB`."""
    figures = line.split("to train at batch ")[1].split(": ", 1)[1].split(" GiB")[0]
    return float(figures if mode is None else dict(item.split() for item in figures.split(", "))[mode])


def test_width_auto_can_match_the_training_memory_instead(plans_file, brain, capsys):
    """--match memory: the multiple of 4 whose estimated training memory comes closest to the stock network's, in
    the lean mode that the configuration then records (a mode decided later could train in more)."""
    assert main(["export-plans", "-d", "951", "-g", "plain_unet", "--match", "memory"]) == 0
    out = capsys.readouterr().out
    stock_line, derived_line = (line for line in out.splitlines() if "to train at batch" in line)
    stock, derived = _gib_to_train(stock_line), _gib_to_train(derived_line, "lean")
    assert "matched by memory" in derived_line and abs(derived - stock) <= AUTO_WIDTH_TOLERANCE * stock
    kwargs = json.loads(plans_file.read_text())["configurations"]["3d_fullres_scnas"]["architecture"]["arch_kwargs"]
    width = kwargs["stem_width"]
    assert kwargs["memory_mode"] == "lean" and "memory_estimates" not in kwargs
    configuration = PlansManager(str(plans_file)).get_configuration("3d_fullres")
    neighbours = [derived_network_size(Genotype.from_dict(json.loads((plans_dir() / "plain_unet.json").read_text())),
                                       w, [[1, 1, 1]] + configuration.pool_op_kernel_sizes[1:4], 4, 4,
                                       configuration.patch_size, configuration.batch_size, "lean").training_memory
                  for w in (width - 4, width + 4)]
    assert all(abs(n / 2 ** 30 - stock) > abs(derived - stock) - 0.01 for n in neighbours)


def test_match_takes_flops_or_memory_only(plans_file, capsys):
    before = plans_file.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(["export-plans", "-d", "951", "-g", "plain_unet", "--match", "params"])
    assert exit_info.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert plans_file.read_bytes() == before


def test_force_replaces_the_configuration_and_keeps_the_rest(plans_file, brain, tmp_path):
    genotype_json = tmp_path / "genotype.json"  # as a search fold writes it
    genotype_json.write_text(json.dumps(mixed_genotype().to_dict()))
    assert main(["export-plans", "-d", "Dataset951_SimBrainTumour", "-g", "plain_unet", "--width", "8"]) == 0
    assert main(["export-plans", "-d", "951", "-g", str(genotype_json), "--width", "12", "--force"]) == 0
    pristine = json.loads(brain.pristine_plans)["configurations"]
    configurations = json.loads(plans_file.read_text())["configurations"]
    assert list(configurations) == [*pristine, "3d_fullres_scnas"]
    assert all(configurations[name] == pristine[name] for name in pristine)
    kwargs = configurations["3d_fullres_scnas"]["architecture"]["arch_kwargs"]
    assert kwargs["stem_width"] == 12 and Genotype.from_dict(kwargs["genotype"]) == mixed_genotype()
    assert len(list(plans_file.parent.glob("nnUNetPlans.json.bak-*"))) == 2


def test_export_plans_takes_random_seed_and_matches_the_width_like_a_searched_genotype(private_plans, capsys):
    assert main(["export-plans", "-d", "951", "-g", "random:3", "-o", "3d_fullres_random3"]) == 0
    configuration = PlansManager(str(private_plans)).get_configuration("3d_fullres_random3")
    kwargs = configuration.network_arch_init_kwargs
    assert Genotype.from_dict(kwargs["genotype"]) == random_genotype(3)
    stock = PlansManager(str(private_plans)).get_configuration("3d_fullres")
    stock_line = next(line for line in capsys.readouterr().out.splitlines() if "GFLOPs" in line)
    stock_flops = 1e9 * float(stock_line.split(": ")[1].split(" GFLOPs")[0])
    flops = derived_flops(kwargs["genotype"], kwargs["stem_width"], input_channels=4, num_classes=4,
                          patch_size=stock.patch_size, strides=kwargs["strides"])
    assert abs(flops - stock_flops) <= AUTO_WIDTH_TOLERANCE * stock_flops


def test_the_next_command_names_plans_other_than_nnunets_default(private_plans, capsys):
    other = private_plans.with_name("nnUNetResEncUNetMPlans.json")
    other.write_bytes(private_plans.read_bytes())
    assert main(["export-plans", "-d", "951", "-g", "plain_unet", "-p", "nnUNetResEncUNetMPlans", "--width", "8"]) == 0
    next_line = capsys.readouterr().out.splitlines()[-1]
    assert next_line.startswith("next: nnUNetv2_train Dataset951") and next_line.endswith(
        " 3d_fullres_scnas FOLD -p nnUNetResEncUNetMPlans")
    assert main(["export-plans", "-d", "951", "-g", "plain_unet", "--width", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].endswith(" 3d_fullres_scnas FOLD")


@pytest.mark.parametrize("name", ["random:", "random:x", "random:-2"])
def test_a_bad_random_name_is_one_line_and_leaves_the_plans_unchanged(name, private_plans, capsys):
    before = private_plans.read_bytes()
    assert main(["export-plans", "-d", "951", "-g", name]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "random:SEED" in error
    assert private_plans.read_bytes() == before
    assert json.loads(before) == json.loads(private_plans.read_bytes())


@pytest.mark.parametrize("shipped", sorted(plans_dir().glob("*.json")), ids=lambda path: path.stem)
def test_shipped_genotypes_are_valid(shipped):
    Genotype.from_dict(json.loads(shipped.read_text()))


def _genotype_variant(change):
    data = json.loads((plans_dir() / "plain_unet.json").read_text())
    change(data)
    return json.dumps(data)


BAD_GENOTYPES = [  # (file content or None for a missing file, what the one-line error must say)
    (None, "not found"),
    ("{not json", "is not JSON"),
    (_genotype_variant(lambda d: d["cells"].pop("reduction")), "missing cell type(s) 'reduction'"),
    (_genotype_variant(lambda d: d["cells"]["expansion"].update({"2<-1": "conv_9x9x9"})), "not an op"),
    (_genotype_variant(lambda d: d["cells"]["expansion"].update({"2<-1": "zero"})), "only 'zero' inputs"),
    (_genotype_variant(lambda d: d.update(schema_version=SCHEMA_VERSION + 1)), "schema_version"),
    (_genotype_variant(lambda d: d.update(search_space="darts-2d-cifar")), "search_space"),
    (_genotype_variant(lambda d: d["cells"]["reduction"].update({"3<-1": 4})), "is 4, not an op"),
    (_genotype_variant(lambda d: d["cells"]["reduction"].update({"3<-1": ["conv_3x3x3"]})), "not an op"),
    (_genotype_variant(lambda d: d["cells"].update(reduction=["conv_3x3x3"] * 13)), "must be an object of edge -> op"),
    (_genotype_variant(lambda d: d.update(notes="hand-edited")), "unknown key(s) 'notes'"),
    (_genotype_variant(lambda d: d["cells"]["expansion"].update({"6<-0": "zero"})), "unknown edge(s) '6<-0'"),
    # JSON bombs: refused at once, without parsing (too large) or without recursing (too deep)
    ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ('{"cells": "' + "x" * 2**21 + '"}', "more than such a file can be"),
]


def _expect_one_line_error(argv, capsys, expected: str, plans_file: Path):
    before, backups = plans_file.read_bytes(), set(plans_file.parent.glob("*.bak-*"))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err and expected in err, err
    assert plans_file.read_bytes() == before and set(plans_file.parent.glob("*.bak-*")) == backups


@pytest.mark.parametrize("content, expected", BAD_GENOTYPES, ids=lambda value: str(value)[:40])
def test_bad_genotype_is_one_line_and_leaves_plans_unchanged(content, expected, plans_file, tmp_path, capsys):
    genotype_json = tmp_path / "genotype.json"
    if content is not None:
        genotype_json.write_text(content)
    started = time.monotonic()
    _expect_one_line_error(["export-plans", "-d", "951", "-g", str(genotype_json)], capsys, expected, plans_file)
    assert time.monotonic() - started < 10  # no hostile file holds it up


@pytest.mark.parametrize("arguments, expected", [
    (["-d", "951", "-c", "3d_lowres"], "no configuration '3d_lowres'"),
    (["-d", "951", "-o", "3d_fullres", "--force"], "other than its source"),
    (["-d", "960"], "does not exist: plan and preprocess"),  # in nnUNet_raw only
    (["-d", "999"], "dataset '999' not found"),
    (["-d", "951", "-g", "no_such_shipped_genotype"], "plain_unet"),  # the error lists the shipped ones
])
def test_bad_dataset_or_configuration_is_one_line_and_leaves_plans_unchanged(arguments, expected, plans_file, capsys):
    (Path(os.environ["nnUNet_raw"]) / "Dataset960_NotPreprocessed").mkdir()
    argv = ["export-plans", *arguments] + ([] if "-g" in arguments else ["-g", "plain_unet"])
    _expect_one_line_error(argv, capsys, expected, plans_file)


def test_existing_configuration_is_kept_without_force(exported_plans, capsys):
    _expect_one_line_error(["export-plans", "-d", "951", "-g", "plain_unet", "--width", "12"], capsys,
                           "already has a configuration '3d_fullres_scnas'", exported_plans)


@pytest.mark.parametrize("width", ["0", "-4", "2.5", "wide", "6", "2"])
def test_width_must_be_auto_or_a_positive_multiple_of_4(width, plans_file, capsys):
    before = plans_file.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(["export-plans", "-d", "951", "-g", "plain_unet", "--width", width])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "positive multiple of 4" in err
    assert plans_file.read_bytes() == before


# A fresh interpreter, as nnUNetv2_predict is: nothing of ours imported but the trainer-registration hook, and the
# network built the way nnU-Net builds it (pydoc.locate on the class name in the plans).
FRESH_PROCESS = """
import json, sys
import torch
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

site_hook = ("nnunet_scnas._site", "nnunet_scnas.locations")
imported = [m for m in sys.modules if m.startswith("nnunet_scnas.") and not m.startswith(site_hook)]
assert not imported, imported
plans_file, configuration, channels, classes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
manager = PlansManager(plans_file).get_configuration(configuration)
network = get_network_from_plans(manager.network_arch_class_name, manager.network_arch_init_kwargs,
                                 manager.network_arch_init_kwargs_req_import, channels, classes, deep_supervision=True)
with torch.no_grad():
    outputs = network(torch.zeros(1, channels, *manager.patch_size))
print(json.dumps({"class": f"{type(network).__module__}.{type(network).__name__}",
                  "outputs": [list(o.shape) for o in outputs], "strides": manager.pool_op_kernel_sizes,
                  "patch_size": manager.patch_size}))
"""


def test_exported_plans_build_in_a_fresh_process_with_nnunets_deep_supervision_scales(plans_file, brain):
    assert main(["export-plans", "-d", "951", "-g", "plain_unet", "--width", "4"]) == 0
    env = dict(brain.env, nnUNet_preprocessed=os.environ["nnUNet_preprocessed"])
    result = run([sys.executable, "-c", FRESH_PROCESS, plans_file, "3d_fullres_scnas", 4, 4], env)
    built = json.loads(result.stdout.strip().splitlines()[-1])
    assert built["class"] == "nnunet_scnas.nnunet.plans.SCNASUNetFromPlans"
    # nnU-Net's deep-supervision scales: 1 / cumprod(strides), the last one dropped
    scales = (1 / np.cumprod(np.array(built["strides"]), axis=0))[:-1]
    assert built["outputs"] == [[1, 4, *(np.array(built["patch_size"]) * s).astype(int).tolist()] for s in scales]


# ------------------------------------------------------------------------------- the paper's recipe, unit

def one_hot_logits(labels: torch.Tensor, classes: int, confidence: float = 20.0) -> torch.Tensor:
    return confidence * torch.nn.functional.one_hot(labels, classes).movedim(-1, 1).float()


@pytest.mark.parametrize("batch_iou", [False, True])
def test_jaccard_loss_is_zero_for_a_perfect_prediction_and_one_for_a_disjoint_one(batch_iou):
    labels = torch.randint(0, 3, (2, 6, 6, 6))
    loss = SoftJaccardLoss(batch_iou=batch_iou)
    assert loss(one_hot_logits(labels, 3), labels[:, None]) < 1e-3
    assert loss(one_hot_logits((labels + 1) % 3, 3), labels[:, None]) > 0.99


def test_jaccard_loss_matches_a_hand_computed_iou_and_ignores_the_ignore_label():
    labels = torch.zeros(1, 1, 4, 1, 1, dtype=torch.long)
    labels[0, 0, :2] = 1  # voxels 0, 1 are class 1
    logits = one_hot_logits(torch.tensor([[[[1]], [[0]], [[1]], [[0]]]]), 2)  # predicts voxels 0 and 2
    assert SoftJaccardLoss()(logits, labels).item() == pytest.approx(1 - 1 / 3, abs=1e-3)  # |A∩B| 1, |A∪B| 3
    labels[0, 0, 2] = 7  # the wrong voxel becomes "ignore": intersection 1, union 2
    assert SoftJaccardLoss(ignore_label=7)(logits, labels).item() == pytest.approx(1 - 1 / 2, abs=1e-3)


def test_jaccard_loss_on_regions_uses_sigmoids_and_gives_gradients():
    target = torch.randint(0, 2, (2, 3, 5, 5, 5)).float()
    perfect = 20 * (2 * target - 1)
    loss = SoftJaccardLoss(regions=True)
    assert loss(perfect, target) < 1e-3
    logits = torch.zeros_like(target, requires_grad=True)
    loss(logits, target).backward()
    assert logits.grad.abs().sum() > 0


def test_training_loss_plateau_divides_the_lr_after_patience_and_resumes_from_logged_losses():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    schedule = TrainingLossPlateau(optimizer, patience=2, factor=0.2)
    losses = [1.0, 0.9, 0.95, 0.91, 0.92]  # no improvement after 0.9 for 2, then 1 more epoch
    schedule.step(0)  # nnU-Net's call at every epoch start changes nothing
    reduced = [schedule.observe(loss) for loss in losses]
    assert reduced == [False, False, False, True, False]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-4 * 0.2)

    resumed = TrainingLossPlateau(optimizer, patience=2, factor=0.2)
    resumed.resume(losses)
    assert resumed.state_dict() == schedule.state_dict()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-4 * 0.2)  # the replay left the LR alone


def nnunet_trainer(name: str, configuration: str = "3d_fullres_scnas"):
    """A trainer found and built by nnUNetv2_train's own code, initialized (network, optimizer, loss)."""
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = get_trainer_from_args("951", configuration, 0, name, device=torch.device("cpu"))
        trainer.initialize()
    return trainer


def test_paper_trainer_uses_adam_the_plateau_rule_and_jaccard_under_nnunets_deep_supervision(plans_file, brain):
    assert main(["export-plans", "-d", "951", "-g", "plain_unet", "--width", "4"]) == 0
    data = json.loads(brain.pristine_plans)["configurations"]["3d_fullres"]["data_identifier"]
    (plans_file.parent / data).symlink_to(brain.preprocessed / data)  # the trainer looks at the data, read only
    paper, stock = nnunet_trainer("nnUNetTrainerSCNASPaper"), nnunet_trainer("nnUNetTrainer")
    assert paper.num_epochs == 500
    assert type(paper.optimizer) is torch.optim.Adam
    assert paper.optimizer.param_groups[0]["lr"] == 3e-4 and paper.optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    assert isinstance(paper.lr_scheduler, TrainingLossPlateau)
    assert (paper.lr_scheduler.patience, paper.lr_scheduler.factor) == (30, 0.2)
    assert isinstance(paper.loss, DeepSupervisionWrapper) and isinstance(paper.loss.loss, SoftJaccardLoss)
    assert len(paper.loss.weight_factors) == 3 and paper.loss.weight_factors == stock.loss.weight_factors


def test_search_variants_change_only_the_weight_betas_or_the_loss(plans_file, brain):
    """The benchmark's two search variants against its search, as nnUNetv2_train builds them."""
    data = json.loads(brain.pristine_plans)["configurations"]["3d_fullres"]["data_identifier"]
    (plans_file.parent / data).symlink_to(brain.preprocessed / data)
    search, betas, jaccard = (nnunet_trainer(f"nnUNetTrainerSCNASSearch_cpuBenchmark{suffix}", "3d_fullres")
                              for suffix in ("", "Betas09", "Jaccard"))
    weights = [t.optimizer.weights.param_groups[0]["betas"] for t in (search, betas, jaccard)]
    assert weights == [(0.1, 0.001), (0.9, 0.999), (0.1, 0.001)]
    assert type(search.loss.loss).__name__ == type(betas.loss.loss).__name__ == "DC_and_CE_loss"
    assert isinstance(jaccard.loss, DeepSupervisionWrapper) and isinstance(jaccard.loss.loss, SoftJaccardLoss)
    assert jaccard.loss.weight_factors == search.loss.weight_factors
    assert search.num_epochs == betas.num_epochs == jaccard.num_epochs


# ----------------------------------------------------------------------------- nnU-Net's commands, slow

def results_folder(env: dict, dataset: PlannedDataset, trainer: str, configuration: str = "3d_fullres_scnas") -> Path:
    return Path(env["nnUNet_results"]) / dataset.name / f"{trainer}__nnUNetPlans__{configuration}"


def predict_test_cases(dataset: PlannedDataset, env: dict, trainer: str, output: Path):
    run([BIN / "nnUNetv2_predict", "-i", dataset.raw / "imagesTs", "-o", output, "-d", dataset.dataset_id,
         "-c", "3d_fullres_scnas", "-tr", trainer, "-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1",
         "--disable_tta", "--disable_progress_bar"], env)
    predicted = sorted(p.name for p in output.glob("*.nii.gz"))
    assert predicted == sorted(p.name for p in (dataset.raw / "labelsTs").glob("*.nii.gz"))


@pytest.mark.slow
def test_stock_nnunet_trains_predicts_evaluates_and_ranks_the_exported_network(retrained_after_a_kill, brain,
                                                                               tmp_path):
    # the exported network trained by nnUNetv2_train (killed once on the way, see test_faults.py)
    trained, env = retrained_after_a_kill, retrained_after_a_kill.env
    trainer = trained.trainer
    assert trained.configuration == "3d_fullres_scnas"  # what nnUNetv2_predict is told below
    assert (trained.folder / "checkpoint_final.pth").is_file()
    assert "mean" in json.loads((trained.folder / "validation" / "summary.json").read_text())

    predicted = tmp_path / "predicted"
    predict_test_cases(brain, env, trainer, predicted)
    run([BIN / "nnUNetv2_evaluate_folder", brain.raw / "labelsTs", predicted, "-djfile", brain.raw / "dataset.json",
         "-pfile", results_folder(env, brain, trainer) / "plans.json", "-np", "1"], env)
    summary = json.loads((predicted / "summary.json").read_text())
    assert len(summary["metric_per_case"]) == 2 and 0 <= summary["foreground_mean"]["Dice"] <= 1

    run([BIN / "nnUNetv2_find_best_configuration", brain.dataset_id, "-c", "3d_fullres_scnas", "-tr", trainer,
         "-f", "0", "--disable_ensembling", "-np", "1"], env)
    instructions = (Path(env["nnUNet_results"]) / brain.name / "inference_instructions.txt").read_text()
    assert "-c 3d_fullres_scnas" in instructions and f"-tr {trainer}" in instructions


@pytest.mark.slow
def test_transfer_onto_the_ct_set_trains_with_the_paper_recipe_and_predicts(planned_lungnodule, tmp_path):
    lung = planned_lungnodule
    env = dict(lung.env, nnUNet_n_proc_DA="0")
    genotype_json = tmp_path / "genotype.json"
    genotype_json.write_text(json.dumps(mixed_genotype().to_dict()))
    run([BIN / "nnunet-scnas", "export-plans", "-d", lung.dataset_id, "-g", genotype_json, "--width", "8"], env)
    trainer = "nnUNetTrainerSCNASPaper_quick"
    run([BIN / "nnUNetv2_train", lung.dataset_id, "3d_fullres_scnas", "0", "-tr", trainer, "-device", "cpu"], env)
    log = next((results_folder(env, lung, trainer) / "fold_0").glob("training_log_*.txt")).read_text()
    assert "Current learning rate: 0.0003" in log and "train_loss" in log
    predict_test_cases(lung, env, trainer, tmp_path / "predicted")
