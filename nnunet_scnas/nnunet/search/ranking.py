"""The search checks its own ranking: does the found genotype beat random genotypes of the space on the proxy
that the search minimised?

At the end of a search (rank 0 only, after nnU-Net has written `checkpoint_final.pth`), the found genotype and
`ranking_random_genotypes` random genotypes of the space (`random_genotype(seed)`, seeds 0, 1, ...: the very
baselines `export-plans -g random:SEED` exports) are evaluated inside the trained supernet: each genotype's ops at
weight 1, one per edge (`SCNASSupernet.evaluating`; the found genotype so is "argmax" mode), the supernet's
weights fixed, eval mode, no gradients. Every genotype sees the same `ranking_batches` batches of the architecture
set (nnU-Net's "val" loader: random patches, no augmentation), drawn once, from global streams seeded by the
search seed and restored afterwards (reproducible with `nnUNet_n_proc_DA=0`; augmentation workers draw from
their own streams). Per genotype:

- loss: nnU-Net's loss as the search trained with it (deep supervision included, autocast on CUDA), the mean
  over the batches: the proxy the architecture step minimises;
- pseudo Dice: as nnU-Net's `validation_step` computes it (its own function runs, on the unwrapped supernet):
  tp, fp, fn summed over the batches per label or region, Dice = 2tp / (2tp + fp + fn) per head, then the mean
  over the heads (NaN heads, with neither foreground nor prediction, left out).

The rank is by loss: "better than k of n" counts the random genotypes whose loss is strictly higher. A search
whose genotype does not beat most of them (k <= n/2) has failed on its own proxy, and the report says so. A
pass says only that the search found what its proxy prefers within the supernet (weight sharing), not that the
genotype retrains better (Yu et al. 2020, "Evaluating the search phase of neural architecture search"); the
retrained comparison against `-g random:SEED` answers that.

Files in the fold folder: `ranking.json` (per genotype its loss, pseudo Dice and Dice per head; k, n, the verdict,
the cases the batches came from) and `ranking.png` (loss against pseudo Dice: the random genotypes as points, the
found one marked).
"""
import math
import random
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nnunet_scnas.atomic import write_json
from nnunet_scnas.errors import UserError
from nnunet_scnas.genotype import Genotype
from nnunet_scnas.nnunet.search.report import save_figure
from nnunet_scnas.nnunet.search.state import seed_from
from nnunet_scnas.nnunet.search.step import unwrap
from nnunet_scnas.random_genotype import random_genotype

RANKING_FILE, RANKING_PLOT = "ranking.json", "ranking.png"
FOUND = "found"
# the key of the batches' streams: two numbers, where the search's other streams have three
RANKING_STREAM = 1


@dataclass(frozen=True)
class Evaluation:
    """One genotype evaluated in the trained supernet: `name` is "found" or "random:SEED"."""
    name: str
    loss: float
    dice_per_head: tuple[float, ...]  # per label (background left out) or region, NaN where 2tp + fp + fn = 0

    @property
    def pseudo_dice(self) -> float:
        present = [d for d in self.dice_per_head if not math.isnan(d)]
        return sum(present) / len(present) if present else math.nan


def better_than(found_loss: float, random_losses: Sequence[float]) -> int:
    """How many random genotypes the found one beats: those whose loss is strictly higher (a tie is no win)."""
    return sum(loss > found_loss for loss in random_losses)


def passed(k: int, n: int) -> bool:
    """The search beats most random genotypes: more than half of them."""
    return 2 * k > n


def verdict(k: int, n: int) -> str:
    """The ranking check's conclusion, in words, for "better than k of n random genotypes"."""
    head = (f"the found genotype is better than {k} of {n} random genotypes of the search space on the "
            f"architecture-set loss, the proxy the search minimised")
    if passed(k, n):
        return (f"Ranking check passed: {head}. (Within the supernet only: whether it also retrains better is "
                f"for the comparison against random genotypes, export-plans -g random:SEED.)")
    return (f"Ranking check FAILED: {head}; it does not beat most of them, so the search failed on its own proxy: "
            f"its genotype is no better a choice than a random one (see {RANKING_FILE}; retrain random genotypes, "
            f"export-plans -g random:SEED, before trusting it).")


@dataclass(frozen=True)
class Ranking:
    """The found genotype's evaluation and the random genotypes', in seed order; ranked by loss."""
    found: Evaluation
    randoms: tuple[Evaluation, ...]

    @property
    def better_than(self) -> int:
        return better_than(self.found.loss, [r.loss for r in self.randoms])

    @property
    def better_than_by_dice(self) -> int:
        """For information (the verdict is by loss): the random genotypes with a lower pseudo Dice."""
        return better_than(-self.found.pseudo_dice, [-r.pseudo_dice for r in self.randoms])

    @property
    def passed(self) -> bool:
        return passed(self.better_than, len(self.randoms))

    def lines(self) -> list[str]:
        """What the training log says."""
        return [
            f"found genotype: loss {self.found.loss:.4f}, pseudo Dice {self.found.pseudo_dice:.4f} (by pseudo Dice "
            f"better than {self.better_than_by_dice} of {len(self.randoms)})",
            f"{len(self.randoms)} random genotypes: loss {_spread([r.loss for r in self.randoms])}, pseudo Dice "
            f"{_spread([-r.pseudo_dice for r in self.randoms], sign=-1)}",
            verdict(self.better_than, len(self.randoms)),
        ]

    def to_dict(self, found_genotype: Genotype, batches: int, cases: Sequence[str]) -> dict:
        """`ranking.json`: it names the found genotype, so that a reader can tell a stale file from another search."""
        def entry(e: Evaluation) -> dict:
            return {"name": e.name, "loss": e.loss, "pseudo_dice": _number(e.pseudo_dice),
                    "dice_per_head": [_number(d) for d in e.dice_per_head]}

        return {"proxy": "nnU-Net's loss of the trained supernet running each genotype's ops (weights fixed) on "
                         "the architecture set; rank by loss",
                "batches": batches, "cases": sorted(set(cases)),
                "better_than": self.better_than, "random_genotypes": len(self.randoms), "passed": self.passed,
                "better_than_by_pseudo_dice": self.better_than_by_dice,
                "verdict": verdict(self.better_than, len(self.randoms)), "found_genotype": found_genotype.to_dict(),
                "genotypes": [entry(self.found), *map(entry, self.randoms)]}


def _spread(values: Sequence[float], sign: int = 1) -> str:
    """"best / median / worst" of `values` (lower is better), each printed times `sign`; NaNs left out."""
    values = sorted(v for v in values if not math.isnan(v))
    if not values:
        return "n/a"
    return " / ".join(f"{sign * v:.4f}" for v in (values[0], float(np.median(values)), values[-1])) + \
        " (best / median / worst)"


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value  # JSON has no NaN


@contextmanager
def _seeded_streams(seed: int):
    """numpy's and Python's global streams (nnU-Net's patch sampling) seeded inside the block and restored after it;
    torch's is left alone (the architecture set has no augmentation)."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def check_ranking_settings(trainer) -> None:
    """Refuse a variant's ranking attributes at the start of the search rather than at its end (UserError)."""
    for name, least in (("ranking_random_genotypes", 0), ("ranking_batches", 1)):
        value = getattr(trainer, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UserError(f"{type(trainer).__name__}.{name} must be an integer >= {least}, got {value!r}")


def draw_ranking_batches(trainer) -> list[dict] | None:
    """`trainer.ranking_batches` batches of the architecture set for the ranking check, or None where the check is
    off (`ranking_random_genotypes = 0`) or the rank is not 0. Draw them before nnU-Net shuts its loaders down."""
    if not trainer.ranking_random_genotypes or trainer.local_rank != 0:
        return None
    with _seeded_streams(seed_from(trainer.search_seed, RANKING_STREAM)):
        return [next(trainer.dataloader_val) for _ in range(trainer.ranking_batches)]


def evaluate_genotypes(trainer, genotypes: Mapping[str, Genotype], batches: Sequence[dict]) -> list[Evaluation]:
    """Each genotype's loss and pseudo Dice in the trained supernet on `batches`, through nnU-Net's own
    `validation_step` on the unwrapped supernet, its loss's Dice over this rank's batch alone: rank 0 evaluates by
    itself, so no DDP collective may run. The supernet's training flag, the trainer's network and loss, and the
    batches (nnU-Net edits an ignore label's target in place) are as before afterwards."""
    supernet, network = unwrap(trainer.network), trainer.network
    was_training = supernet.training
    supernet.eval()
    trainer.network = supernet
    try:
        with torch.no_grad(), _local_loss(trainer.loss):
            return [_evaluate(trainer, name, supernet, genotype, batches) for name, genotype in genotypes.items()]
    finally:
        trainer.network = network
        supernet.train(was_training)


@contextmanager
def _local_loss(loss: torch.nn.Module):
    """nnU-Net's Dice losses gather a batch Dice over the ranks under DDP (their attribute `ddp`); off in the block."""
    gathering = [m for m in loss.modules() if getattr(m, "ddp", False) is True]
    for module in gathering:
        module.ddp = False
    try:
        yield
    finally:
        for module in gathering:
            module.ddp = True


def _evaluate(trainer, name: str, supernet, genotype: Genotype, batches: Sequence[dict]) -> Evaluation:
    with supernet.evaluating(genotype):
        outputs = [trainer.validation_step(_copy(batch)) for batch in batches]
    tp, fp, fn = (np.sum([o[key] for o in outputs], 0) for key in ("tp_hard", "fp_hard", "fn_hard"))
    with np.errstate(invalid="ignore"):  # 0/0: a head with neither foreground nor prediction, NaN as in nnU-Net
        dice = 2 * tp / (2 * tp + fp + fn)
    return Evaluation(name, float(np.mean([o["loss"] for o in outputs])), tuple(map(float, dice)))


def _copy(batch: dict) -> dict:
    target = batch["target"]
    return {**batch, "target": [t.clone() for t in target] if isinstance(target, list) else target.clone()}


def check_ranking(trainer, batches: Sequence[dict]) -> list[str]:
    """The ranking check on `batches` (`draw_ranking_batches`): evaluates the found genotype and the random ones,
    writes `ranking.json` and `ranking.png` into the fold folder, and returns the log lines."""
    genotypes = {FOUND: unwrap(trainer.network).genotype(),
                 **{f"random:{seed}": random_genotype(seed) for seed in range(trainer.ranking_random_genotypes)}}
    found, *randoms = evaluate_genotypes(trainer, genotypes, batches)
    ranking = Ranking(found, tuple(randoms))
    folder = Path(trainer.output_folder)
    cases = [case for batch in batches for case in batch.get("keys", ())]
    write_json(folder / RANKING_FILE, ranking.to_dict(genotypes[FOUND], len(batches), cases))
    plot_ranking(ranking, folder / RANKING_PLOT)
    return [f"Ranking check: the found genotype and {len(randoms)} random genotypes in the trained supernet, on "
            f"{len(batches)} batches of the architecture set ({folder / RANKING_FILE})", *ranking.lines()]


def plot_ranking(ranking: Ranking, path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.style import context

    with context("default"):  # nnU-Net's progress plot changes matplotlib's global style
        fig = Figure(figsize=(6, 4.5))
        ax = fig.subplots()
        ax.scatter([r.loss for r in ranking.randoms], [r.pseudo_dice for r in ranking.randoms], color="grey",
                   label=f"{len(ranking.randoms)} random genotypes")
        ax.scatter([ranking.found.loss], [ranking.found.pseudo_dice], color="C3", marker="*", s=250,
                   label="found genotype")
        ax.axvline(ranking.found.loss, color="C3", linestyle=":", linewidth=1)
        ax.set(xlabel="loss on the architecture set (lower is better: the search's proxy)", ylabel="pseudo Dice",
               title=f"Found genotype better than {ranking.better_than} of {len(ranking.randoms)} random genotypes "
                     f"by loss" + ("" if ranking.passed else " (FAILED)"))
        ax.legend(fontsize=8)
        save_figure(fig, path)
