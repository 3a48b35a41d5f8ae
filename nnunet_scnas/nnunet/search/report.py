"""What a search leaves in its fold folder, rewritten after every epoch (atomically):

- `genotype.json`: the current argmax architecture (the final one when the search ends);
- `alpha_history.json`: the architecture logits, tau, losses, entropies and op histograms per epoch (a cost-aware
  search adds `cost`: the expected memory and time of the architecture distribution and of the current genotype,
  as multiples of stock nnU-Net's at FLOPs-matched width, the budgets and the epoch's cost weight);
- `search_progress.png`: entropy of softmax(alpha) per cell type, and the op histogram of the current
  genotype per epoch (collapse to parameter-free ops, the known failure of this family, shows here); a cost-aware
  search adds the expected memory and time beside the entropy;
- `cells/<cell_type>.png`: a drawing of each cell (at the end of the search, and on demand);
- `ranking.json`, `ranking.png`: at the end, the found genotype against random ones of the space (`ranking.py`).
"""
import json
import math
from collections import Counter
from pathlib import Path

import torch

from nnunet_scnas.atomic import atomic_path, write_json
from nnunet_scnas.genotype import CELL_TYPES, EDGES, Genotype
from nnunet_scnas.nnunet.search.cost import describe_cost
from nnunet_scnas.ops import OPS

SKIPPED_VALIDATION = ("Validation skipped for the search: the supernet's weights were trained for sampled "
                      "sub-networks, so its Dice would mislead; the fold's validation cases are left for the "
                      "retrained network (nnunet-scnas export-plans, then nnUNetv2_train with the new configuration).")
PARAMETER_FREE_OPS = ("zero", "identity", "max_pool_3x3x3", "avg_pool_3x3x3")
MAX_ENTROPY = math.log(len(OPS))


def mean_entropy(logits: torch.Tensor) -> float:
    """Mean over edges of the entropy of softmax(alpha): ln(8) = 2.08 when undecided, 0 when decided."""
    p = torch.softmax(logits.detach().float().cpu(), dim=-1)
    return float(-(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean())


def op_histogram(genotype: Genotype) -> dict[str, int]:
    """How many edges of all four cell types chose each op."""
    counts = Counter(op for cell_type in CELL_TYPES for op in getattr(genotype, cell_type))
    return {op: counts.get(op, 0) for op in OPS}


def genotype_changes(old: Genotype | None, new: Genotype) -> list[str]:
    """Readable edge changes, e.g. 'reduction 3<-1: conv_3x3x3 -> identity'."""
    if old is None:
        return []
    return [f"{cell_type} {edge}: {a} -> {b}"
            for cell_type in CELL_TYPES
            for edge, a, b in zip(EDGES, getattr(old, cell_type), getattr(new, cell_type)) if a != b]


class SearchReport:
    """Accumulates the per-epoch record of a search and writes the fold folder's files."""

    def __init__(self, output_folder):
        self.folder = Path(output_folder)
        history_file = self.folder / "alpha_history.json"
        self.history = json.loads(history_file.read_text())["epochs"] if history_file.is_file() else []

    @property
    def last_genotype(self) -> Genotype | None:
        return Genotype.from_dict(self.history[-1]["genotype"]) if self.history else None

    def record_epoch(self, epoch: int, logits: dict, genotype: Genotype, **scalars) -> list[str]:
        """Add one epoch (replacing a record of the same or later epochs left by an interrupted run) and
        return log lines: entropies, how parameter-free the genotype is, and what changed since last epoch."""
        self.history = [h for h in self.history if h["epoch"] < epoch]
        changes = genotype_changes(self.last_genotype, genotype)
        record = {
            "epoch": epoch,
            **scalars,
            "entropy": {c: mean_entropy(logits[c]) for c in CELL_TYPES},
            "op_histogram": op_histogram(genotype),
            "genotype": genotype.to_dict(),
            "alphas": {c: logits[c].detach().float().cpu().tolist() for c in CELL_TYPES},
        }
        self.history.append(record)
        free = sum(record["op_histogram"][op] for op in PARAMETER_FREE_OPS)
        shown = "; ".join(changes[:6]) + (f"; ... ({len(changes) - 6} more)" if len(changes) > 6 else "")
        return [
            "architecture entropy: " + ", ".join(f"{c} {e:.3f}" for c, e in record["entropy"].items())
            + f" (undecided: {MAX_ENTROPY:.3f})",
            f"genotype: {free}/{len(CELL_TYPES) * len(EDGES)} edges parameter-free; "
            + (f"{len(changes)} edges changed: {shown}" if changes else "unchanged"),
        ]

    def record_search_epoch(self, epoch: int, supernet, train_loss: float, architecture_loss: float,
                            weight_lr: float, cost=None) -> list[str]:
        """Record the epoch that just ended from the supernet's logits, rewrite the fold folder's files, and
        return the log lines (see `record_epoch`). `cost`: the search's `SearchCost`, if it has one; an
        `architecture_loss` of NaN (a weights-only warm-up epoch) is recorded as null."""
        genotype = supernet.genotype()
        logits = dict(supernet.alphas.items())
        extra = {} if cost is None else {"cost": cost.record(logits, genotype, epoch)}
        lines = self.record_epoch(epoch, logits, genotype, tau=supernet.tau, train_loss=float(train_loss),
                                  architecture_loss=None if math.isnan(architecture_loss) else architecture_loss,
                                  weight_lr=weight_lr, **extra)
        if cost is not None:
            lines.append(describe_cost(extra["cost"]))
        self.write(genotype)
        return lines

    def finish(self, genotype: Genotype, dataset_name: str) -> str:
        """Write the final genotype, history, plot and cell drawings; returns what the log should say next."""
        self.write(genotype)
        drawings = draw_cells(genotype, self.folder / "cells")
        genotype_file = self.folder / "genotype.json"
        return (f"Search finished. Genotype: {genotype_file}\n"
                f"Cell drawings: {', '.join(map(str, drawings))}\n"
                f"Next: nnunet-scnas export-plans -d {dataset_name} -g {genotype_file}")

    def write(self, genotype: Genotype) -> None:
        write_json(self.folder / "genotype.json", genotype.to_dict())
        write_json(self.folder / "alpha_history.json",
                   {"ops": list(OPS), "edges": list(EDGES), "cell_types": list(CELL_TYPES), "epochs": self.history})
        self.plot_progress(self.folder / "search_progress.png")

    def plot_progress(self, path) -> None:
        from matplotlib.figure import Figure
        from matplotlib.style import context
        from matplotlib.ticker import MaxNLocator

        epochs = [h["epoch"] for h in self.history]
        costs = [h for h in self.history if "cost" in h]
        # nnU-Net's own progress plot changes matplotlib's global style (seaborn, huge fonts): reset it here
        with context("default"):
            fig = Figure(figsize=(19 if costs else 13, 4.5))
            if costs:
                ax_entropy, ax_cost, ax_ops = fig.subplots(1, 3)
                _plot_cost(ax_cost, costs)
            else:
                ax_entropy, ax_ops = fig.subplots(1, 2)
            for cell_type in CELL_TYPES:
                ax_entropy.plot(epochs, [h["entropy"][cell_type] for h in self.history], marker=".",
                                label=cell_type)
            ax_entropy.axhline(MAX_ENTROPY, color="grey", linestyle=":", label="ln 8 (undecided)")
            ax_entropy.set(xlabel="epoch", ylabel="mean entropy of softmax(alpha)",
                           title="Architecture entropy per cell type", ylim=(0, MAX_ENTROPY * 1.05))
            ax_entropy.legend(fontsize=8)

            bottom = [0] * len(epochs)
            for k, op in enumerate(OPS):
                counts = [h["op_histogram"][op] for h in self.history]
                ax_ops.bar(epochs, counts, bottom=bottom, color=f"C{k}", width=0.9, label=op,
                           hatch="//" if op in PARAMETER_FREE_OPS else None)
                bottom = [b + c for b, c in zip(bottom, counts)]
            ax_ops.set(xlabel="epoch", ylabel="edges (all 4 cell types)",
                       title="Ops of the current genotype (hatched: parameter-free)")
            ax_ops.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
            for ax in fig.axes:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            save_figure(fig, path)


def save_figure(fig, path) -> None:
    """A search's plot as a PNG, written atomically (a reader never sees half of one)."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)


def _plot_cost(ax, history: list[dict]) -> None:
    """Expected memory and time of the architecture distribution per epoch, with their budgets (dotted)."""
    epochs = [h["epoch"] for h in history]
    for k, name in enumerate(("memory", "time")):
        ax.plot(epochs, [h["cost"]["expected"][name] for h in history], marker=".", color=f"C{k}",
                label=f"expected {name}")
        budget = history[-1]["cost"]["budget"][name]
        if budget is not None:
            ax.axhline(budget, color=f"C{k}", linestyle=":", label=f"{name} budget")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set(xlabel="epoch", ylabel="x stock nnU-Net's, at FLOPs-matched width",
           title="Expected training cost of the architecture distribution")
    ax.legend(fontsize=8)


def draw_cells(genotype: Genotype, folder) -> list[Path]:
    """One PNG per cell type in `folder` (graphviz when installed, matplotlib otherwise)."""
    from nnunet_scnas.drawing import draw_cell

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for cell_type in CELL_TYPES:
        path = folder / f"{cell_type}.png"
        draw_cell(genotype, cell_type, path)
        paths.append(path)
    return paths
