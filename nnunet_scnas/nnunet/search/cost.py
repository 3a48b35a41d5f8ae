"""The search's cost term at the trainer's plan (issue 26): cost table, its cache, budget, warm-up and ramp.

A cost-aware search (`cost_weight > 0`) measures at start the cost table of its plan (`op_cost.py`): every op at
every site at a reference width (the width at which a reference architecture, `random_genotype(0)`, has stock
nnU-Net's FLOPs: near the width `export-plans` will give the result), its memory from the estimator in the memory
mode training will use, its seconds on the search's own device, and stock nnU-Net's network at the same plan.
The table is cached in the fold folder (`cost_table.json`, written atomically) with the key it was measured at;
`--c` reuses it when the key is the same, and measures it again, saying so in the log, when the plan, batch,
memory mode, device or torch version differ. A budget no architecture of the space meets is refused before any
data is loaded, in one line naming the cheapest achievable cost.

Schedule (DiNTS' recipe: train the weights first, then the architecture): the first `warmup_fraction` of the
epochs train the weights alone (no architecture step, tau held at its start so every op keeps being sampled
evenly); then the architecture steps begin and tau anneals geometrically from `tau_start` to `tau_end` over the
remaining epochs, while the cost weight rises linearly to `cost_weight` over `cost_ramp_epochs` epochs; the ramp
must end by the last epoch, so the final epochs decide under the full cost term.
"""
import math
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from nnunet_scnas.atomic import write_json
from nnunet_scnas.cell import CELL_LAYOUT
from nnunet_scnas.derived import SCNASUNet
from nnunet_scnas.errors import UserError
from nnunet_scnas.flops import closest_width, count_flops, derived_flops
from nnunet_scnas.json_input import read_json
from nnunet_scnas.macro import MEMORY_MODES
from nnunet_scnas.nnunet.plans import plans_network, plans_network_on_meta
from nnunet_scnas.nnunet.step_timing import nnunet_step, seconds_per_iteration
from nnunet_scnas.nnunet.training.cpu_layout import channels_last_on_cpu
from nnunet_scnas.genotype import CELL_TYPES, EDGE_ENDPOINTS, EDGES, NUM_INPUTS
from nnunet_scnas.op_cost import (BUDGETED, QUANTITIES, CostBudget, CostTable, Measures, budget_penalty,
                                  build_cost_table, cell_sites, check_budget, cheapest, expected_cost, genotype_cost,
                                  matched_ratio, op_flops, op_memory, op_seconds)
from nnunet_scnas.ops import OPS
from nnunet_scnas.random_genotype import random_genotype
from nnunet_scnas.search_memory import network_memory

COST_TABLE_FILE = "cost_table.json"
REFERENCE_SEED = 0  # random_genotype(0): the table is measured at its FLOPs-matched width
COST_MEMORY_MODES = ("auto", *MEMORY_MODES)


# ---------------------------------------------------------------- settings and schedule

@dataclass(frozen=True)
class CostSchedule:
    """A search trainer's cost settings (its class attributes), checked, and the epochs they give.

    Args:
        budget: memory and time budgets and the cost weight (`op_cost.CostBudget`).
        warmup_epochs: the first epochs train the weights alone.
        ramp_epochs: after the warm-up the cost weight rises linearly over these epochs (0: at once).
        memory_mode: the memory mode the table's memory is estimated in ("auto": lean on CUDA, plain elsewhere).
        num_epochs: of the search.
    """
    budget: CostBudget
    warmup_epochs: int
    ramp_epochs: int
    memory_mode: str
    num_epochs: int

    @property
    def active(self) -> bool:
        """Whether the search has a cost term (otherwise it is today's search exactly)."""
        return self.budget.weight > 0 and bool(self.budget.bounds())

    def trains_architecture(self, epoch: int) -> bool:
        return epoch >= self.warmup_epochs

    def weight_at(self, epoch: int) -> float:
        """The cost weight of `epoch`: 0 in the warm-up, then rising linearly to `budget.weight`."""
        if not self.active or epoch < self.warmup_epochs:
            return 0.0
        if self.ramp_epochs == 0:
            return self.budget.weight
        return self.budget.weight * min(1.0, (epoch - self.warmup_epochs + 1) / self.ramp_epochs)

    def table_memory_mode(self, device: torch.device) -> str:
        return table_memory_mode(self.memory_mode, device)


def table_memory_mode(setting: str, device: torch.device) -> str:
    """The memory mode a cost table is estimated in for a trainer's `cost_memory_mode` on `device`."""
    if setting != "auto":
        return setting
    # on a GPU a FLOPs-matched derived network comes near stock's memory only lean (plain is 3-5 x stock, README);
    # off the GPU export's "auto" trains plain
    return "lean" if device.type == "cuda" else "plain"


def cost_schedule(trainer_class, num_epochs: int) -> CostSchedule:
    """The checked cost settings of `trainer_class`; a UserError in one line naming the class and the attribute."""
    name = trainer_class.__name__
    try:
        budget = CostBudget(trainer_class.memory_budget, trainer_class.time_budget, trainer_class.cost_weight)
    except ValueError as error:
        raise UserError(f"{name}: {error}") from None
    fraction, ramp, mode = trainer_class.warmup_fraction, trainer_class.cost_ramp_epochs, trainer_class.cost_memory_mode
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise UserError(f"{name}: warmup_fraction must be a number in [0, 1) (the share of the epochs that train "
                        f"the weights alone), got {fraction!r}")
    if isinstance(ramp, bool) or not isinstance(ramp, int) or ramp < 0:
        raise UserError(f"{name}: cost_ramp_epochs must be an integer >= 0, got {ramp!r}")
    if mode not in COST_MEMORY_MODES:
        raise UserError(f"{name}: cost_memory_mode must be one of {', '.join(map(repr, COST_MEMORY_MODES))}, "
                        f"got {mode!r}")
    warmup = math.floor(fraction * num_epochs)
    if warmup >= num_epochs:
        raise UserError(f"{name}: warmup_fraction {fraction} leaves no epoch to train the architecture in "
                        f"{num_epochs} epochs")
    schedule = CostSchedule(budget, warmup, ramp, mode, num_epochs)
    if schedule.active and warmup + ramp > num_epochs:
        raise UserError(f"{name}: the cost weight would not reach {budget.weight:g} before the search ends "
                        f"({warmup} warm-up + {ramp} ramp epochs > {num_epochs} epochs): shorten cost_ramp_epochs "
                        f"or warmup_fraction")
    return schedule


# ---------------------------------------------------------------- the table at a plan

def device_name(device: torch.device) -> str:
    """What the table's seconds were measured on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), model)
    return f"CPU {model}, {torch.get_num_threads()} threads"


def table_key(patch_size, batch_size: int, strides, input_channels: int, num_classes: int, memory_mode: str,
              device: torch.device) -> dict:
    """What a table was measured at: a cached one is used only for an equal key."""
    return {"patch_size": [int(n) for n in patch_size], "batch_size": int(batch_size),
            "strides": [list(map(int, s)) for s in strides], "input_channels": int(input_channels),
            "num_classes": int(num_classes), "memory_mode": memory_mode, "autocast": device.type == "cuda",
            "device": device_name(device), "torch": torch.__version__, "cell_layout": CELL_LAYOUT}


def measure_cost_table(stock_configuration, key: Mapping, device: torch.device,
                       op_timer: Callable | None = None, network_timer: Callable | None = None) -> CostTable:
    """The cost table at the plan `key` names, stock nnU-Net's network from `stock_configuration`.

    `op_timer(name, site)` and `network_timer(network)` measure seconds (default: forward + backward of the op,
    nnU-Net's training iteration of the network, on `device`); tests pass their own. The base's seconds come from
    timing the reference's whole derived network on a GPU; on the CPU, where that takes a minute at a real plan
    (its stem alone is a third of its FLOPs), they are estimated as the base's FLOPs at stock nnU-Net's measured
    seconds per FLOP (both are dense convolutions and norms).
    """
    patch, batch, strides = key["patch_size"], key["batch_size"], key["strides"]
    channels, classes, mode, autocast = key["input_channels"], key["num_classes"], key["memory_mode"], key["autocast"]
    batch_shape = [batch, channels, *patch]
    if network_timer is None:
        def network_timer(network):  # one timed iteration off the GPU: a CPU step takes seconds at a real plan
            network.to(device)
            channels_last_on_cpu(network, device)  # as the search and the CPU retraining train
            step = nnunet_step(network, batch_shape, classes, device)
            return seconds_per_iteration(step.run, device, iterations=3 if device.type == "cuda" else 1)
    if op_timer is None:
        def op_timer(name, site):
            # on the CPU one timed run after the warm-up: 49 ops x sites take about a second each there
            return op_seconds(name, site, batch, device, mode, repetitions=3 if device.type == "cuda" else 1)

    stock_flops = count_flops(plans_network_on_meta(stock_configuration, channels, classes, False), (channels, *patch))
    stock = {"memory": network_memory(plans_network_on_meta(stock_configuration, channels, classes, True),
                                      batch_shape, autocast).total,
             "seconds": network_timer(plans_network(stock_configuration, channels, classes, True, device)),
             "flops": stock_flops}
    reference = random_genotype(REFERENCE_SEED)
    width = closest_width(lambda w: derived_flops(reference, w, input_channels=channels, num_classes=classes,
                                                  patch_size=patch, strides=strides), stock_flops, math.inf, "FLOPs")

    def derived(on: torch.device):
        with torch.device(on):
            return SCNASUNet(channels, classes, True, reference.to_dict(), width, strides, CELL_LAYOUT, mode)
    on_gpu = device.type == "cuda"
    reference_costs = {"memory": network_memory(derived("meta"), batch_shape, autocast).total,
                       "seconds": network_timer(derived(device)) if on_gpu else 0.0,
                       "flops": derived_flops(reference, width, input_channels=channels, num_classes=classes,
                                              patch_size=patch, strides=strides)}
    measures = Measures(memory=lambda name, site: op_memory(name, site, batch, mode, autocast), seconds=op_timer,
                        flops=op_flops)
    table = build_cost_table({**key, "reference_width": width, "reference": f"random:{REFERENCE_SEED}",
                              "base_seconds": "measured" if on_gpu else "estimated from stock's seconds per FLOP"},
                             cell_sites(width, patch, strides), measures, reference, reference_costs, stock)
    if on_gpu:
        return table
    base = {**table.base, "seconds": stock["seconds"] * table.base["flops"] / stock["flops"]}
    return CostTable(table.key, table.ops, base, table.stock)


def describe_table(table: CostTable) -> list[str]:
    """`nnunet-scnas estimate --cost`: the table per quantity (rows: each cell type's edges, grouped where they cost
    the same; columns: the ops), the base, stock nnU-Net, and the cheapest and a random architecture's cost."""
    key = table.key
    lines = [f"cost table: patch {'x'.join(map(str, key['patch_size']))}, batch {key['batch_size']}, memory mode "
             f"{key['memory_mode']}, {'CUDA autocast' if key['autocast'] else 'float32'}, {key['device']}, torch "
             f"{key['torch']}; measured at reference width {key.get('reference_width')} (where "
             f"{key.get('reference')} has stock nnU-Net's FLOPs); per edge, summed over the cells of each type"]
    units = {"memory": ("training memory, MiB", 2 ** 20), "seconds": ("forward + backward, ms", 1e-3),
             "flops": ("forward on one patch, GFLOPs", 1e9)}
    shown = [o for o, name in enumerate(OPS) if name != "zero"]
    for quantity, (title, unit) in units.items():
        header = [title, *(OPS[o] for o in shown)]
        rows = []
        for cell_type in CELL_TYPES:
            groups: dict[tuple, list[int]] = {}
            for e in range(len(EDGES)):
                groups.setdefault(tuple(table.ops[q][cell_type][e] for q in QUANTITIES), []).append(e)
            for edges in groups.values():
                label = f"{cell_type} ({_edges_label(edges)})"
                rows.append([label, *(f"{table.ops[quantity][cell_type][edges[0]][o] / unit:.3g}" for o in shown)])
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                  for r in [header, *rows]]
    base, stock = table.base, table.stock
    lines.append(f"base (stem, preprocessings, node sums, heads, loss, backward): {base['memory'] / 2 ** 20:.0f} MiB, "
                 f"{base['seconds'] * 1e3:.0f} ms, {base['flops'] / 1e9:.3g} GFLOPs; stock nnU-Net: "
                 f"{stock['memory'] / 2 ** 20:.0f} MiB, {stock['seconds'] * 1e3:.0f} ms, {stock['flops'] / 1e9:.3g} GFLOPs")
    reference = genotype_cost(table, random_genotype(REFERENCE_SEED))
    figures = []
    for name, quantity in BUDGETED.items():
        least, genotype = cheapest(table, quantity)
        figures.append(f"{name}: random:{REFERENCE_SEED} {matched_ratio(table, reference, quantity):.2f} x, the "
                       f"cheapest architecture {least:.2f} x ({_op_counts(genotype)})")
    lines.append("at FLOPs-matched width, as multiples of stock nnU-Net's: " + "; ".join(figures))
    return lines


def _edges_label(edges: list[int]) -> str:
    if len(edges) == len(EDGES):
        return "every edge"
    sources = {EDGE_ENDPOINTS[e][0] for e in edges}
    where = "from the cell's inputs" if max(sources) < NUM_INPUTS else "between nodes" if min(sources) >= NUM_INPUTS \
        else "mixed"
    return f"{len(edges)} edge{'s' if len(edges) > 1 else ''} {where}"


def _op_counts(genotype) -> str:
    from nnunet_scnas.nnunet.search.report import op_histogram  # report.py imports this module

    counts = op_histogram(genotype)
    return ", ".join(f"{n} {op}" for op, n in sorted(counts.items(), key=lambda item: -item[1]) if n)


def _plan_key(table_key_or_table) -> dict:
    key = dict(table_key_or_table.key if isinstance(table_key_or_table, CostTable) else table_key_or_table)
    for measured in ("reference_width", "reference", "base_seconds"):  # results of the measurement, not its plan
        key.pop(measured, None)
    return key


def plan_cost_table(plan, device: torch.device | None = None) -> CostTable:
    """The cost table of `estimate --cost`: at an `estimate` plan (`memory_estimate.resolve_plan`), in the memory mode
    its search trainer's `cost_memory_mode` gives on `device` (default: the GPU if there is one, else the CPU)."""
    from nnunet_scnas.nnunet.step_timing import timing_device

    device = device or timing_device()
    batch, channels = plan.batch_shape[0], plan.batch_shape[1]
    key = table_key(plan.stock.patch_size, batch, plan.strides, channels, plan.plans.num_classes,
                    table_memory_mode(plan.search_trainer.cost_memory_mode, device), device)
    return measure_cost_table(plan.stock, key, device)


def cached_cost_table(folder, key: Mapping, measure: Callable[[], CostTable]) -> tuple[CostTable, str]:
    """(the table for `key`, a log line): `folder`'s `cost_table.json` when it was measured at `key`, else
    `measure()`, written there atomically. A damaged or foreign file is measured again, never reused."""
    path = Path(folder) / COST_TABLE_FILE
    reason = "none cached"
    if path.is_file():
        try:
            cached = CostTable.from_dict(read_json(path, "cost table"))
        except ValueError as error:
            reason = f"the cached one is unreadable ({error})"
        else:
            if _plan_key(cached) == _plan_key(key):
                return cached, f"cost table: {path} reused (measured at this plan and device)"
            differ = [f"{k} {cached.key.get(k)!r} -> {v!r}" for k, v in _plan_key(key).items()
                      if cached.key.get(k) != v]
            reason = f"the cached one was measured at another plan or device ({'; '.join(differ)})"
    start = time.perf_counter()
    table = measure()
    write_json(path, table.to_dict())
    return table, (f"cost table: measured in {time.perf_counter() - start:.1f} s at reference width "
                   f"{table.key.get('reference_width')} on {key['device']}, {reason}: {path}")


# ---------------------------------------------------------------- the cost term of a search

class SearchCost:
    """A search's cost term: the table, the checked budget and the schedule."""

    def __init__(self, table: CostTable, schedule: CostSchedule):
        self.table, self.schedule = table, schedule

    def penalty(self, logits: Mapping[str, torch.Tensor], epoch: int) -> torch.Tensor:
        """weight(epoch) * (relu(memory excess) + relu(time excess)) of the distribution softmax(logits)."""
        return budget_penalty(self.table, logits, self.schedule.budget, self.schedule.weight_at(epoch))

    def penalty_for(self, supernet, epoch: int) -> Callable[[], torch.Tensor] | None:
        """What the architecture step adds to its loss in `epoch` (`search_iteration`): None while the weight is 0."""
        if self.schedule.weight_at(epoch) == 0:
            return None
        return lambda: self.penalty(dict(supernet.alphas.items()), epoch)

    def record(self, logits: Mapping[str, torch.Tensor], genotype, epoch: int) -> dict:
        """The epoch's figures (multiples of stock nnU-Net's at FLOPs-matched width), for `alpha_history.json`."""
        with torch.no_grad():
            expected = {q: float(v) for q, v in expected_cost(
                self.table, {t: a.detach().double().cpu() for t, a in logits.items()}).items()}
        chosen = genotype_cost(self.table, genotype)
        return {"expected": {name: matched_ratio(self.table, expected, q) for name, q in BUDGETED.items()},
                "genotype": {name: matched_ratio(self.table, chosen, q) for name, q in BUDGETED.items()},
                "budget": {name: getattr(self.schedule.budget, name) for name in BUDGETED},
                "weight": self.schedule.weight_at(epoch)}


def describe_cost(record: Mapping) -> str:
    """The log line of an epoch's cost record."""
    def budget(name):
        bound = record["budget"][name]
        return "no budget" if bound is None else f"budget {bound:g}"
    parts = [f"{name} {record['expected'][name]:.2f} x ({budget(name)}; current genotype {record['genotype'][name]:.2f} x)"
             for name in BUDGETED]
    return (f"expected cost of the architecture distribution, as multiples of stock nnU-Net's at FLOPs-matched width: "
            f"{', '.join(parts)}; cost weight {record['weight']:g}")


def search_cost(trainer, schedule: CostSchedule) -> tuple[SearchCost | None, list[str]]:
    """The search trainer's cost term (None when it has none) and its log lines, made at start: the table measured
    or read from the fold folder, the budget checked against the cheapest achievable cost. On several GPUs rank 0
    measures and every rank uses its table (the same logits need the same penalty on every rank)."""
    if not schedule.active:
        return None, []
    device = trainer.device
    key = table_key(trainer.configuration_manager.patch_size, trainer.batch_size, trainer.search_strides,
                    trainer.num_input_channels, trainer.label_manager.num_segmentation_heads,
                    schedule.table_memory_mode(device), device)
    shared = [None, None]
    if trainer.local_rank == 0:
        table, line = cached_cost_table(
            trainer.output_folder, key, lambda: measure_cost_table(trainer.configuration_manager, key, device))
        shared = [table.to_dict(), line]
    if dist.is_available() and dist.is_initialized():
        dist.broadcast_object_list(shared, src=0)
    table = CostTable.from_dict(shared[0])
    try:
        check_budget(table, schedule.budget)
    except ValueError as error:
        raise UserError(f"{type(trainer).__name__}: {error}") from None
    budget = schedule.budget
    lines = [shared[1], (f"cost term: weight {budget.weight:g} (0 for the first {schedule.warmup_epochs} epochs: weights "
                         f"only; then rising over {schedule.ramp_epochs} epochs), budgets memory "
                         f"{budget.memory} and time {budget.time} x stock nnU-Net's at FLOPs-matched width, memory "
                         f"mode {key['memory_mode']}")]
    return SearchCost(table, schedule), lines


def warmup_line(schedule: CostSchedule, epoch: int) -> str:
    """What the epoch-start log line adds: the warm-up, or the epoch's cost weight ("" for today's search)."""
    if not schedule.trains_architecture(epoch):
        return (f"; weights-only warm-up, epoch {epoch + 1} of {schedule.warmup_epochs}: no architecture step, tau "
                f"held")
    return f"; cost weight {schedule.weight_at(epoch):g}" if schedule.active else ""
