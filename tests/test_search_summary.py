"""Did a search decide, and does it beat random genotypes: the summary read back from the files a search leaves."""
import math

import pytest
import torch

from nnunet_scnas.atomic import write_json
from nnunet_scnas.genotype import CELL_TYPES, EDGES, derive_genotype
from nnunet_scnas.nnunet.search.ranking import RANKING_FILE, Evaluation, Ranking
from nnunet_scnas.nnunet.search.report import SearchReport
from nnunet_scnas.nnunet.search.summary import RANKING_COLUMN, read_search_summary, summary_table
from nnunet_scnas.ops import OPS


def _logits(decided_op: int, strength: float) -> dict[str, torch.Tensor]:
    """Every edge prefers `decided_op` by `strength` over the other ops."""
    alpha = torch.zeros(len(EDGES), len(OPS))
    alpha[:, decided_op] = strength
    return {cell_type: alpha.clone() for cell_type in CELL_TYPES}


def _entropy(strength: float) -> float:
    p = torch.softmax(torch.tensor([strength] + [0.0] * (len(OPS) - 1)), 0)
    return float(-(p * p.log()).sum())


@pytest.fixture
def search_folder(tmp_path):
    """Four epochs: undecided, then conv_3x3x3 everywhere, then identity on every reduction edge (twice)."""
    report = SearchReport(tmp_path)
    conv, identity = OPS.index("conv_3x3x3"), OPS.index("identity")
    epochs = [_logits(conv, 0.0), _logits(conv, 1.0), _logits(conv, 2.0), _logits(conv, 3.0)]
    for logits in epochs[2:]:
        logits["reduction"][:, identity] = 5.0
    for epoch, logits in enumerate(epochs):
        genotype = derive_genotype(logits)
        report.record_epoch(epoch, logits, genotype, tau=1.0, train_loss=0.5, architecture_loss=0.5, weight_lr=0.1)
        report.write(genotype)
    return tmp_path, epochs


def test_entropy_change_and_parameter_free_edges_of_the_last_epochs(search_folder):
    folder, epochs = search_folder
    summary = read_search_summary(folder, "fold 0")
    assert summary.epochs == 4
    assert summary.entropy_start == pytest.approx(math.log(len(OPS)), abs=1e-6)
    reduction = float(-(torch.softmax(epochs[3]["reduction"][0], 0) * torch.log_softmax(epochs[3]["reduction"][0], 0)).sum())
    assert summary.entropy_per_cell_type["reduction"] == pytest.approx(reduction, abs=1e-6)
    assert summary.entropy_end == pytest.approx((3 * _entropy(3.0) + reduction) / 4, abs=1e-6)
    # the final genotype against epoch 1's: the 14 reduction edges went from conv to identity
    assert summary.edges_changed_at_end == len(EDGES) and not summary.settled
    assert summary.parameter_free_edges == len(EDGES)  # identity is parameter-free
    assert summary.op_histogram["conv_3x3x3"] == 3 * len(EDGES)


def test_a_search_that_kept_its_genotype_for_two_epochs_is_settled(search_folder, tmp_path_factory):
    folder, epochs = search_folder
    again = SearchReport(tmp_path_factory.mktemp("settled"))
    for epoch, logits in enumerate(epochs[:2] + [epochs[1], epochs[1]]):
        again.record_epoch(epoch, logits, derive_genotype(logits), tau=1.0, train_loss=0.5, architecture_loss=0.5,
                           weight_lr=0.1)
        again.write(derive_genotype(logits))
    summary = read_search_summary(again.folder, "settled")
    assert summary.settled
    header, rows = summary_table([summary, read_search_summary(folder, "moving")])
    assert [row[0] for row in rows] == ["settled", "moving"] and all(len(row) == len(header) for row in rows)
    assert rows[1][header.index("edges changed in the last 2 epochs")] == f"{len(EDGES)} of {4 * len(EDGES)}"
    assert rows[0][header.index(RANKING_COLUMN)] == "not run"  # a search without the ranking check


@pytest.mark.parametrize("random_losses, shown", [([0.3] * 17 + [0.1] * 3, "17 of 20"),
                                                  ([0.3] * 10 + [0.1] * 10, "10 of 20, FAILED")])
def test_the_summary_shows_how_many_random_genotypes_the_found_one_beats(search_folder, random_losses, shown):
    folder, epochs = search_folder
    ranking = Ranking(Evaluation("found", 0.2, (0.5,)),
                      tuple(Evaluation(f"random:{i}", loss, (0.5,)) for i, loss in enumerate(random_losses)))
    write_json(folder / RANKING_FILE, ranking.to_dict(derive_genotype(epochs[-1]), batches=1, cases=["case_0"]))
    summary = read_search_summary(folder, "fold 0")
    assert (summary.better_than, summary.random_genotypes, summary.ranking) == (ranking.better_than, 20, shown)
    header, [row] = summary_table([summary])
    assert row[header.index(RANKING_COLUMN)] == shown
    # a check of another genotype (an earlier search's, left in the folder) is not this search's
    write_json(folder / RANKING_FILE, ranking.to_dict(derive_genotype(epochs[0]), batches=1, cases=["case_0"]))
    assert read_search_summary(folder, "fold 0").ranking == "not run"


def test_a_search_without_history_is_refused(tmp_path):
    (tmp_path / "alpha_history.json").write_text('{"epochs": []}')
    with pytest.raises(ValueError, match="records no epoch"):
        read_search_summary(tmp_path, "empty")
