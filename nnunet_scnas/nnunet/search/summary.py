"""Did a search decide? Read from the `alpha_history.json` that a search leaves in its fold folder.

- the mean entropy of softmax(alpha) over all edges of the 4 cell types at the end (ln 8 = 2.079 undecided,
  0 decided);
- how many of the 56 edges changed their op over the last two epochs (a settled search changes none);
- how many edges of the final genotype are parameter-free (collapse to them is this family's known failure);
- from `ranking.json`, if the search ran its ranking check (`ranking.py`) on its final genotype: how many of its random
  genotypes the found one beats on the search's own proxy, and whether that is most of them.
"""
import statistics
from dataclasses import dataclass
from pathlib import Path

from nnunet_scnas.genotype import CELL_TYPES, EDGES, Genotype
from nnunet_scnas.json_input import read_json
from nnunet_scnas.nnunet.search.ranking import RANKING_FILE, passed
from nnunet_scnas.nnunet.search.report import MAX_ENTROPY, PARAMETER_FREE_OPS
from nnunet_scnas.ops import OPS

SETTLED_EPOCHS = 2  # "changed in the last two epochs": the final genotype against the one two epochs before
RANKING_COLUMN = "found genotype better than (random genotypes, loss on the architecture set)"


@dataclass(frozen=True)
class SearchSummary:
    name: str
    epochs: int
    entropy_start: float
    entropy_end: float
    entropy_per_cell_type: dict[str, float]
    edges_changed_at_end: int  # over the last SETTLED_EPOCHS epochs
    parameter_free_edges: int
    op_histogram: dict[str, int]
    better_than: int | None = None  # random genotypes the found one beats in the ranking check (None: no check)
    random_genotypes: int | None = None  # of how many

    @property
    def settled(self) -> bool:
        return self.edges_changed_at_end == 0

    @property
    def ranking(self) -> str:
        """"17 of 20", "8 of 20, FAILED" (it beats no majority of them), or "not run"."""
        if self.random_genotypes is None:
            return "not run"
        return f"{self.better_than} of {self.random_genotypes}" + \
            ("" if passed(self.better_than, self.random_genotypes) else ", FAILED")


def read_search_summary(fold_folder, name: str) -> SearchSummary:
    """The summary of the search in `fold_folder` (named `name` in tables); ValueError if it has no history."""
    history_file = Path(fold_folder) / "alpha_history.json"
    epochs = read_json(history_file, "search history")["epochs"]
    if not epochs:
        raise ValueError(f"{history_file} records no epoch yet")
    first, last = epochs[0], epochs[-1]
    before = epochs[max(0, len(epochs) - 1 - SETTLED_EPOCHS)]
    old, new = Genotype.from_dict(before["genotype"]), Genotype.from_dict(last["genotype"])
    changed = sum(a != b for cell_type in CELL_TYPES for a, b in zip(getattr(old, cell_type), getattr(new, cell_type)))
    ranking_file = Path(fold_folder) / RANKING_FILE
    ranking = read_json(ranking_file, "ranking check") if ranking_file.is_file() else {}
    if not isinstance(ranking, dict) or ranking.get("found_genotype") != last["genotype"]:
        ranking = {}  # no check of this search's genotype (one left by an earlier search in the folder is stale)
    return SearchSummary(name, len(epochs), statistics.fmean(first["entropy"].values()),
                         statistics.fmean(last["entropy"].values()), dict(last["entropy"]), changed,
                         sum(last["op_histogram"][op] for op in PARAMETER_FREE_OPS), dict(last["op_histogram"]),
                         ranking.get("better_than"), ranking.get("random_genotypes"))


def summary_table(summaries: list[SearchSummary]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per search."""
    header = ["Search", "epochs", f"entropy start -> end (undecided {MAX_ENTROPY:.3f})",
              *(f"end: {cell_type}" for cell_type in CELL_TYPES),
              f"edges changed in the last {SETTLED_EPOCHS} epochs", "parameter-free edges",
              RANKING_COLUMN, *(f"#{op}" for op in OPS)]
    total = len(CELL_TYPES) * len(EDGES)
    rows = [[s.name, str(s.epochs), f"{s.entropy_start:.3f} -> {s.entropy_end:.3f}",
             *(f"{s.entropy_per_cell_type[c]:.3f}" for c in CELL_TYPES), f"{s.edges_changed_at_end} of {total}",
             f"{s.parameter_free_edges} of {total}", s.ranking, *(str(s.op_histogram.get(op, 0)) for op in OPS)]
            for s in summaries]
    return header, rows
