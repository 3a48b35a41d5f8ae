"""The search's ranking check: rank and verdict from known losses, and the evaluation of genotypes in a supernet
through nnU-Net's own validation step, on tiny volumes (no nnU-Net run: the end-to-end check is in
test_search_trainer.py)."""
import json
import math
import random

import numpy as np
import pytest
import torch

from nnunet_scnas.errors import UserError
from nnunet_scnas.nnunet.search.ranking import (RANKING_FILE, RANKING_PLOT, Evaluation, Ranking, better_than,
                                                check_ranking, check_ranking_settings, draw_ranking_batches,
                                                evaluate_genotypes, verdict)
from nnunet_scnas.random_genotype import random_genotype
from nnunet_scnas.supernet import SCNASSupernet

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STRIDES = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
PATCH = (16, 16, 16)


# ---------------------------------------------------------------- rank and verdict from known losses

@pytest.mark.parametrize("found, randoms, k, passes", [
    (0.1, [0.2] * 20, 20, True),
    (0.3, [0.2] * 20, 0, False),
    (0.5, [0.1 * i for i in range(20)], 14, True),  # 0.6 .. 1.9 are worse
    (0.5, [0.5] * 10 + [0.6] * 10, 10, False),  # ties are no win: better than exactly half fails
    (0.5, [0.5] * 9 + [0.6] * 11, 11, True),
    (0.5, [0.4, 0.6, 0.7], 2, True),
])
def test_rank_counts_the_random_genotypes_with_a_strictly_higher_loss(found, randoms, k, passes):
    assert better_than(found, randoms) == k
    ranking = Ranking(Evaluation("found", found, (0.5,)), tuple(Evaluation(f"random:{i}", loss, (0.5,))
                                                                 for i, loss in enumerate(randoms)))
    assert ranking.better_than == k and ranking.passed == passes
    words = verdict(k, len(randoms))
    assert f"better than {k} of {len(randoms)} random genotypes" in words
    assert ("FAILED" in words and "failed on its own proxy" in words) == (not passes)
    assert ranking.lines()[-1] == words  # the log's last word on the search


def test_pseudo_dice_leaves_out_empty_heads_and_json_has_no_nan():
    empty = Evaluation("random:0", 0.3, (math.nan, math.nan))
    found = Evaluation("found", 0.2, (0.5, math.nan))
    assert found.pseudo_dice == 0.5 and math.isnan(empty.pseudo_dice)
    record = Ranking(found, (empty,)).to_dict(random_genotype(3), batches=1, cases=["b", "a", "b"])
    assert json.loads(json.dumps(record, allow_nan=False))["genotypes"][1]["pseudo_dice"] is None
    assert record["cases"] == ["a", "b"] and record["better_than"] == 1 and record["passed"]
    assert record["better_than_by_pseudo_dice"] == 0  # a NaN Dice is beaten by nothing (comparisons with NaN fail)


@pytest.mark.parametrize("name, value", [("ranking_random_genotypes", -1), ("ranking_random_genotypes", 2.0),
                                         ("ranking_batches", 0), ("ranking_batches", True)])
def test_bad_ranking_settings_are_refused_before_the_search(name, value):
    settings = type("nnUNetTrainerSCNASSearch_bad", (), {"ranking_random_genotypes": 20, "ranking_batches": 5})()
    check_ranking_settings(settings)
    setattr(settings, name, value)
    with pytest.raises(UserError, match=f"nnUNetTrainerSCNASSearch_bad.{name} must be an integer"):
        check_ranking_settings(settings)


# ---------------------------------------------------------------- genotypes evaluated in a supernet

class _Trainer:
    """What the ranking check reads of a search trainer, with nnU-Net's own loss and validation step."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer as _nnunet

    validation_step = _nnunet.validation_step
    _build_loss = _nnunet._build_loss

    def __init__(self, label_manager, output_folder, batches=(), ddp=False):
        from types import SimpleNamespace

        self.label_manager, self.output_folder = label_manager, output_folder
        self.device, self.enable_deep_supervision, self.is_ddp = torch.device("cpu"), True, ddp
        self.configuration_manager = SimpleNamespace(batch_dice=True)
        self.network = SCNASSupernet(1, label_manager.num_segmentation_heads, 4, STRIDES)
        with torch.no_grad():  # a decided architecture, as at the end of a search
            for alpha in self.network.alphas.values():
                alpha.normal_(std=3.0)
        self.loss = self._build_loss()
        self.local_rank, self.search_seed, self.ranking_random_genotypes, self.ranking_batches = 0, 5, 20, 2
        self.dataloader_val = iter(batches)

    def _do_i_compile(self):
        return False

    def _get_deep_supervision_scales(self):
        return [[1.0] * 3, [0.5] * 3, [0.25] * 3]


def _labels(regions: bool):
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    if regions:  # two nested regions
        return LabelManager({"background": 0, "whole": [1, 2], "core": 2}, regions_class_order=[1, 2])
    return LabelManager({"background": 0, "tumour": 1, "ignore": 2}, regions_class_order=None)


def _batch(regions: bool, seed: int) -> dict:
    """One batch of 2 patches, the targets at the 3 deep-supervision scales (what nnU-Net's loader gives)."""
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(2, 1, *PATCH, generator=g)
    labels = torch.randint(0, 3, (2, 1, *PATCH), generator=g).to(torch.int16)  # 2: the ignore label, or core
    if regions:
        labels = torch.cat([labels > 0, labels == 2], 1).to(torch.int16)
    return {"data": data, "target": [labels[..., ::s, ::s, ::s].clone() for s in (1, 2, 4)],
            "keys": [f"case_{seed}", "case_0"]}


@pytest.mark.parametrize("regions", [False, True])
def test_each_genotype_gets_nnunets_loss_and_pseudo_dice_on_the_same_untouched_batches(tmp_path, regions):
    trainer = _Trainer(_labels(regions), tmp_path)
    supernet, batches = trainer.network, [_batch(regions, seed) for seed in (1, 2)]
    kept = [[t.clone() for t in b["target"]] for b in batches]
    supernet.mode = "two_op"  # as the search leaves it
    found, again, other = evaluate_genotypes(trainer, {"found": supernet.genotype(), "again": supernet.genotype(),
                                                       "random:0": random_genotype(0)}, batches)
    # nnU-Net's validation of the current architecture (argmax mode), its pseudo Dice as on_validation_epoch_end
    # computes it; the targets copied, since nnU-Net replaces an ignore label's voxels in place
    supernet.mode = "argmax"
    supernet.eval()
    with torch.no_grad():
        outputs = [trainer.validation_step({**b, "target": [t.clone() for t in b["target"]]}) for b in batches]
    tp, fp, fn = (np.sum([o[key] for o in outputs], 0) for key in ("tp_hard", "fp_hard", "fn_hard"))
    dice = [2 * i / (2 * i + j + k) for i, j, k in zip(tp, fp, fn)]
    assert found.loss == pytest.approx(np.mean([o["loss"] for o in outputs]), abs=1e-7)
    assert found.dice_per_head == pytest.approx(dice) and found.pseudo_dice == pytest.approx(np.nanmean(dice))
    assert len(found.dice_per_head) == (2 if regions else 1)  # per region; per label without the background
    assert (again.loss, again.dice_per_head) == (found.loss, found.dice_per_head)  # the same batches each time
    assert other.loss != found.loss
    # the batches, the supernet's mode and the trainer's network are as they were
    assert all(torch.equal(t, k) for b, targets in zip(batches, kept) for t, k in zip(b["target"], targets))
    assert supernet.mode == "argmax" and supernet.evaluated_genotype is None and trainer.network is supernet


def test_evaluation_runs_no_collective_and_leaves_training_flag_loss_and_random_streams_alone(tmp_path):
    trainer = _Trainer(_labels(False), tmp_path, ddp=True)  # a batch Dice gathered over the ranks, as under DDP
    gathering = [m for m in trainer.loss.modules() if getattr(m, "ddp", False)]
    assert gathering and not torch.distributed.is_initialized()  # a gather would raise here (rank 0 alone would hang)
    trainer.network.train()
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    evaluate_genotypes(trainer, {"random:1": random_genotype(1)}, [_batch(False, 1)])
    assert trainer.network.training and all(m.ddp for m in gathering)
    assert torch.equal(torch.get_rng_state(), states[0]) and np.array_equal(np.random.get_state()[1], states[1])
    assert random.getstate() == states[2]


def test_ranking_batches_come_from_seeded_streams_that_are_restored_afterwards(tmp_path):
    def loader():
        while True:  # nnU-Net's loader picks cases and patches from numpy's global stream
            yield {"pick": np.random.randint(1 << 30), "python": random.random()}

    np.random.seed(0)
    trainer = _Trainer(_labels(False), tmp_path, loader())
    before = np.random.get_state()[1].copy()
    batches = draw_ranking_batches(trainer)
    assert len(batches) == trainer.ranking_batches and np.array_equal(np.random.get_state()[1], before)
    trainer.dataloader_val = loader()
    assert draw_ranking_batches(trainer) == batches  # reproducible, whatever the streams held before
    trainer.local_rank = 1
    assert draw_ranking_batches(trainer) is None  # rank 0 alone checks
    trainer.local_rank, trainer.ranking_random_genotypes = 0, 0
    assert draw_ranking_batches(trainer) is None  # switched off


def test_check_ranking_writes_the_record_and_the_plot_and_says_the_rank(tmp_path):
    trainer = _Trainer(_labels(False), tmp_path)
    trainer.ranking_random_genotypes = 3
    lines = check_ranking(trainer, [_batch(False, 1)])
    record = json.loads((tmp_path / RANKING_FILE).read_text())
    assert [g["name"] for g in record["genotypes"]] == ["found", "random:0", "random:1", "random:2"]
    assert record["random_genotypes"] == 3 and 0 <= record["better_than"] <= 3
    assert record["cases"] == ["case_0", "case_1"] and record["batches"] == 1
    assert record["found_genotype"] == trainer.network.genotype().to_dict()
    assert (tmp_path / RANKING_PLOT).read_bytes()[:4] == b"\x89PNG"
    assert lines[0].startswith("Ranking check: the found genotype and 3 random genotypes")
    assert lines[-1] == record["verdict"] and f"better than {record['better_than']} of 3" in lines[-1]
