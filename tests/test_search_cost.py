"""The search's cost term (`nnunet/search/cost.py`, issue 26): settings refused in one line, warm-up and ramp, the
cached cost table, the cost term in the architecture step (weight 0 changes nothing; a large weight ends in a cheaper
derived network)."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nnunet_scnas.cell import CELL_LAYOUT
from nnunet_scnas.derived import SCNASUNet
from nnunet_scnas.errors import UserError
from nnunet_scnas.flops import derived_flops, match_width
from nnunet_scnas.nnunet.search.cost import (COST_TABLE_FILE, CostSchedule, SearchCost, cached_cost_table,
                                             cost_schedule, describe_cost, describe_table, search_cost, table_key,
                                             warmup_line)
from nnunet_scnas.nnunet.search.state import SearchOptimizer, TemperatureSchedule
from nnunet_scnas.nnunet.search.step import search_iteration
from nnunet_scnas.nnunet.training.plateau import PlateauSchedule
from nnunet_scnas.op_cost import QUANTITIES, CostBudget, Measures, build_cost_table, cell_sites, cheapest, op_memory
from nnunet_scnas.random_genotype import random_genotype
from nnunet_scnas.sampler import tau_schedule
from nnunet_scnas.search_memory import network_memory
from nnunet_scnas.supernet import SCNASSupernet
from test_core_op_cost import synthetic_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DEFAULTS = dict(cost_weight=0.0, memory_budget=1.0, time_budget=1.0, warmup_fraction=0.0, cost_ramp_epochs=0,
                cost_memory_mode="auto")


def _variant(**attributes):
    return type("nnUNetTrainerSCNASSearch_test", (), {**DEFAULTS, **attributes})


# ---------------------------------------------------------------- settings and schedule

@pytest.mark.parametrize("attributes, message", [
    (dict(cost_weight=-1.0), "cost_weight must be a number >= 0"),
    (dict(cost_weight="1"), "cost_weight must be a number >= 0"),
    (dict(memory_budget=0), "memory_budget must be a number > 0"),
    (dict(time_budget=[1.0]), "time_budget must be a number > 0"),
    (dict(warmup_fraction=1.0), "warmup_fraction must be a number in [0, 1)"),
    (dict(warmup_fraction=True), "warmup_fraction"),
    (dict(cost_ramp_epochs=1.5), "cost_ramp_epochs must be an integer >= 0"),
    (dict(cost_memory_mode="tiny"), "cost_memory_mode must be one of"),
    (dict(cost_weight=1.0, warmup_fraction=0.5, cost_ramp_epochs=5), "would not reach 1 before the search ends"),
])
def test_bad_cost_settings_are_refused_in_one_line_naming_the_variant(attributes, message):
    with pytest.raises(UserError) as refusal:
        cost_schedule(_variant(**attributes), num_epochs=8)
    assert message in str(refusal.value) and "nnUNetTrainerSCNASSearch_test" in str(refusal.value)
    assert "\n" not in str(refusal.value)


def test_warmup_trains_the_weights_alone_then_the_cost_weight_ramps_in():
    schedule = cost_schedule(_variant(cost_weight=2.0, warmup_fraction=0.5, cost_ramp_epochs=2), num_epochs=8)
    assert schedule.active and schedule.warmup_epochs == 4
    assert [schedule.trains_architecture(e) for e in range(8)] == [False] * 4 + [True] * 4
    assert [schedule.weight_at(e) for e in range(8)] == [0, 0, 0, 0, 1.0, 2.0, 2.0, 2.0]
    assert "weights-only warm-up, epoch 2 of 4" in warmup_line(schedule, 1)
    assert "cost weight 1" in warmup_line(schedule, 4)
    today = cost_schedule(_variant(), num_epochs=8)  # today's search: no cost term, no warm-up
    assert not today.active and all(today.trains_architecture(e) and today.weight_at(e) == 0 for e in range(8))
    assert warmup_line(today, 0) == ""


def test_tau_is_held_through_the_warmup_then_anneals_over_the_rest():
    network = SimpleNamespace(tau=None)

    def taus(hold):
        schedule = TemperatureSchedule(network, 8, 5.0, 0.5, hold)
        return [schedule.step(e) or network.tau for e in range(8)]
    assert taus(0) == [tau_schedule(e, 8, 5.0, 0.5) for e in range(8)]  # without a warm-up: today's schedule
    held = taus(4)
    assert held[:5] == [5.0] * 5 and held[-1] == pytest.approx(0.5) and held[5] > held[6] > held[7]
    with pytest.raises(ValueError, match="held"):
        TemperatureSchedule(network, 8, 5.0, 0.5, 8)


def test_architecture_lr_follows_the_poly_schedule_over_the_architecture_epochs_and_resumes_by_epoch():
    logit = torch.nn.Parameter(torch.zeros(3))

    def lrs(poly, epochs):
        optimizer = torch.optim.Adam([logit], lr=0.1)
        schedule = TemperatureSchedule(SimpleNamespace(tau=None), 8, 5.0, 0.5, 4, optimizer, poly)
        return [schedule.step(e) or optimizer.param_groups[0]["lr"] for e in epochs]
    assert lrs(False, range(8)) == [0.1] * 8  # today's: constant
    decayed = lrs(True, range(8))
    assert decayed[:5] == [0.1] * 5  # the warm-up and the first architecture epoch at the full lr
    assert decayed[7] == pytest.approx(0.1 * (1 / 4) ** 0.9) and decayed[4] > decayed[5] > decayed[6] > decayed[7]
    assert lrs(True, [6]) == [decayed[6]]  # a resumed search (--c) gets the lr of its epoch, nothing saved
    with pytest.raises(ValueError, match="architecture optimizer"):
        TemperatureSchedule(SimpleNamespace(tau=None), 8, 5.0, 0.5, 4, None, True)


# ---------------------------------------------------------------- the cached table

def test_cached_table_is_reused_at_the_same_key_and_measured_again_at_another(tmp_path):
    table = synthetic_table()
    key = {"patch_size": [16, 32, 32], "device": "CPU x, 2 threads", "memory_mode": "plain"}
    measured = []

    def measure(plan_key):
        def run():
            measured.append(plan_key)
            return type(table)({**plan_key, "reference_width": 16}, table.ops, table.base, table.stock)
        return run
    first, line = cached_cost_table(tmp_path, key, measure(key))
    assert measured == [key] and "none cached" in line and (tmp_path / COST_TABLE_FILE).is_file()
    again, line = cached_cost_table(tmp_path, key, measure(key))  # --c at the same plan and device
    assert again == first and len(measured) == 1 and "reused" in line
    other = {**key, "device": "NVIDIA H100 80GB HBM3"}  # --c on another machine
    table_there, line = cached_cost_table(tmp_path, other, measure(other))
    assert len(measured) == 2 and "another plan or device" in line and "NVIDIA H100" in line
    assert json.loads((tmp_path / COST_TABLE_FILE).read_text())["key"]["device"] == "NVIDIA H100 80GB HBM3"
    (tmp_path / COST_TABLE_FILE).write_text("{ half a file")
    _, line = cached_cost_table(tmp_path, other, measure(other))
    assert len(measured) == 3 and "unreadable" in line


# ---------------------------------------------------------------- the cost term in the architecture step

STRIDES, PATCH, REFERENCE_WIDTH = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]], (16, 16, 16), 16


def _memory(genotype, width: int) -> int:
    with torch.device("meta"):
        network = SCNASUNet(1, 2, True, genotype.to_dict(), width, STRIDES, CELL_LAYOUT)
    return network_memory(network, [1, 1, *PATCH]).total


def _flops(genotype, width: int) -> int:
    return derived_flops(genotype, width, input_channels=1, num_classes=2, patch_size=PATCH, strides=STRIDES)


@pytest.fixture(scope="module")
def tiny_table():
    """The memory table at the tiny plan (seconds left out), stock nnU-Net stood in for by the reference network."""
    reference = random_genotype(0)
    costs = {"memory": _memory(reference, REFERENCE_WIDTH), "seconds": 1.0, "flops": _flops(reference, REFERENCE_WIDTH)}
    return build_cost_table({}, cell_sites(REFERENCE_WIDTH, PATCH, STRIDES),
                            Measures(memory=lambda name, site: op_memory(name, site, 1, "plain", False),
                                     seconds=lambda name, site: 0.0), reference, costs, costs)


def _search(weight: float | None, table, iterations: int = 6) -> SCNASSupernet:
    """A seeded short search on random data (float32, as on the CPU) with the cost term at `weight` (None: without
    one, today's architecture step)."""
    torch.manual_seed(0)
    supernet = SCNASSupernet(1, 2, 4, STRIDES).train()
    weights = torch.optim.Adam(supernet.weight_parameters(), 1e-3)
    optimizer = SearchOptimizer(weights, torch.optim.Adam(supernet.arch_parameters(), 0.2, betas=(0.5, 0.999)),
                                PlateauSchedule(weights, 20, 0.1))
    cost = SearchCost(table, CostSchedule(CostBudget(memory=0.5, time=None, weight=weight or 0.0), 0, 0, "plain", 1))
    g = torch.Generator().manual_seed(1)

    def batch():
        return {"data": torch.randn(1, 1, *PATCH, generator=g),
                "target": [torch.randn(1, 2, *(n // s for n in PATCH), generator=g) for s in (1, 2, 4)]}

    def loss(outputs, targets):
        return sum((o - t).square().mean() for o, t in zip(outputs, targets))
    for iteration in range(iterations):
        # SearchCost.penalty_for would give None at weight 0: the term itself, weighted 0, must change nothing either
        penalty = None if weight is None else lambda: cost.penalty(dict(supernet.alphas.items()), 0)
        search_iteration(supernet, loss, optimizer, batch(), batch(), 5, iteration, 12.0, None, penalty)
    return supernet


def test_cost_weight_zero_gives_todays_logits_exactly(tiny_table):
    today, weight_zero = _search(None, tiny_table, 3), _search(0.0, tiny_table, 3)
    for cell_type in today.alphas:
        assert torch.equal(today.alphas[cell_type], weight_zero.alphas[cell_type])


def test_a_large_cost_weight_ends_in_a_cheaper_derived_network(tiny_table):
    """Measured on the derived networks themselves (the estimator at each one's FLOPs-matched width), not read from
    the table."""
    exported = {}
    for weight in (0.0, 50.0):
        supernet = _search(weight, tiny_table)
        genotype = supernet.genotype()
        width = match_width(genotype, tiny_table.stock["flops"], input_channels=1, num_classes=2, patch_size=PATCH,
                            strides=STRIDES, tolerance=1.0)
        exported[weight] = _memory(genotype, width)
        record = SearchCost(tiny_table, CostSchedule(CostBudget(0.5, None, 1.0), 0, 0, "plain", 1)).record(
            dict(supernet.alphas.items()), genotype, 0)
        assert "expected cost of the architecture distribution" in describe_cost(record)
    assert exported[50.0] < 0.9 * exported[0.0], exported


def test_a_skipped_architecture_step_leaves_the_logits_and_reports_nan():
    supernet = SCNASSupernet(1, 2, 4, STRIDES).train()
    before = {k: v.detach().clone() for k, v in supernet.alphas.items()}
    weights = torch.optim.Adam(supernet.weight_parameters(), 1e-3)
    optimizer = SearchOptimizer(weights, torch.optim.Adam(supernet.arch_parameters(), 0.1),
                                PlateauSchedule(weights, 20, 0.1))
    batch = {"data": torch.randn(1, 1, *PATCH), "target": [torch.randn(1, 2, *(n // s for n in PATCH))
                                                            for s in (1, 2, 4)]}
    _, architecture_loss = search_iteration(supernet, lambda o, t: sum(x.square().mean() for x in o), optimizer,
                                            batch, None, 5, 0, 12.0)
    assert np.isnan(architecture_loss) and isinstance(architecture_loss, np.ndarray)
    assert all(torch.equal(before[k], v) for k, v in supernet.alphas.items())
    assert set(QUANTITIES) == {"memory", "seconds", "flops"}


def test_an_impossible_budget_is_refused_at_start_naming_the_cheapest(tmp_path):
    trainer = SimpleNamespace(device=torch.device("cpu"), configuration_manager=SimpleNamespace(patch_size=[16, 32, 32]),
                              batch_size=2, search_strides=STRIDES, num_input_channels=1, local_rank=0,
                              label_manager=SimpleNamespace(num_segmentation_heads=2), output_folder=tmp_path)
    key = table_key([16, 32, 32], 2, STRIDES, 1, 2, "plain", trainer.device)
    table = synthetic_table()
    (tmp_path / COST_TABLE_FILE).write_text(json.dumps(
        type(table)({**key, "reference_width": 16}, table.ops, table.base, table.stock).to_dict()))
    least = cheapest(table, "memory")[0]
    schedule = cost_schedule(_variant(cost_weight=1.0, memory_budget=round(least * 0.9, 3), time_budget=None), 8)
    with pytest.raises(UserError) as refusal:
        search_cost(trainer, schedule)  # the cached table: nothing measured
    message = str(refusal.value)
    assert "\n" not in message and "memory_budget" in message and f"the cheapest trains in {least:.3f} x" in message
    fine = cost_schedule(_variant(cost_weight=1.0, memory_budget=round(least * 1.1, 3), time_budget=None), 8)
    cost, lines = search_cost(trainer, fine)
    assert cost is not None and "reused" in lines[0] and "weight 1" in lines[1]
    assert search_cost(trainer, cost_schedule(_variant(), 8)) == (None, [])  # today's search: nothing measured


def test_estimate_prints_the_table_per_quantity_with_the_cheapest_architecture():
    key = {**table_key([16, 32, 32], 2, STRIDES, 1, 2, "lean", torch.device("cpu")), "reference_width": 16,
           "reference": "random:0"}
    table = synthetic_table()
    lines = describe_table(type(table)(key, table.ops, table.base, table.stock))
    assert lines[0].startswith("cost table: patch 16x32x32, batch 2, memory mode lean, float32")
    headers = [line for line in lines[1:-1] if "dil_sep_conv_3x3x3_r4" in line]
    assert [h.split("  ")[0] for h in headers] == ["training memory, MiB", "forward + backward, ms",
                                                  "forward on one patch, GFLOPs"]
    # a synthetic table's edges all differ: one row each (a measured one groups the edges of equal cost)
    assert len(lines) == 1 + 3 * (1 + 4 * 14) + 2 and "reduction (1 edge from the cell's inputs)" in lines[2 + 14]
    assert "the cheapest architecture" in lines[-1] and "random:0" in lines[-1]
