"""What each op choice costs to train, and the expected cost of the architecture distribution (issue 26).

A cost table holds, for each cell type, a `[14, 8]` matrix (rows `EDGES`, columns `OPS`) per quantity: the
training memory (bytes), the seconds of one training step and the FLOPs of one forward pass on one patch that
choosing op o on edge e adds, summed over all cells of that type in the macro (`macro.py`: 3 reduction cells, 3
encoder-normal cells whose logits the inter-cell shares, 3 expansion, 3 decoder-normal), plus a base that no
choice moves (stem, preprocessings, node sums, heads, loss, the backward's working set). So for one architecture g

    Q(g) = base_Q + sum over cell types t and edges e of c_Q[t][e, g_t(e)]          (Q = memory, seconds, FLOPs)

and for the distribution p = softmax(alpha) of the search, differentiable in alpha,

    E[Q](alpha) = base_Q + sum_t sum_e sum_o softmax(alpha_t)[e, o] * c_Q[t][e, o]

which is exactly the mean of Q over architectures drawn edge by edge from p (`tests/test_core_op_cost.py`).
`zero` costs nothing. Each entry is measured on one op alone, as the cell runs it, at its cell's input shape
(node width C/4 at the cell's input resolution; a reduction cell's edges from its two inputs stride):
- memory: what the op's forward keeps for the backward pass (traced on the "meta" device by `memory.py`, in the
  memory mode and dtypes training will use; its input is the state, counted once in the base), plus its
  parameters, their gradients and Adam's two moments;
- seconds: forward + backward of the op on the device the search runs on (median of a few repetitions after a
  warm-up);
- FLOPs: as `flops.count_flops` counts them (convolutions, a multiply-add as 2, pooling left out).
The base is what the whole derived network of a reference architecture costs (`memory.py`'s estimate, a timed
training step, `count_flops`) minus its ops' entries, so the table is exact at the reference (the adapter may
estimate the base's seconds instead, `nnunet/search/cost.py`). Interactions it
leaves out (a state's LeakyReLU shared by the conv ops that read it, a preprocessing or a cell that no op reads):
`genotype_cost` follows the estimator on whole derived networks to within the tolerance
`tests/test_core_op_cost.py` asserts.

Budget (`CostBudget`): the derived network is exported at the width whose FLOPs equal stock nnU-Net's
(`flops.match_width`), so "the exported network trains within b times stock's memory" is, to first order
(memory growing in proportion to FLOPs when the width changes), "its memory per FLOP is at most b times stock's":

    E[M] / E[F] <= b * M_stock / F_stock   <=>   E[M] / M_stock - b * E[F] / F_stock <= 0

The right-hand form is linear in the edge probabilities (separable: one term per edge), so its gradient is
simple, and the cheapest cost any architecture of the space reaches is found edge by edge (`cheapest`). The same
holds for time. The penalty is `weight * (relu(memory term) + relu(time term))`: zero within budget. The table is
measured at a reference width near the export width (the FLOPs-matched width of a reference architecture at the
plan), not at the search's narrow stem: memory per FLOP depends on the width.
"""
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from .genotype import CELL_TYPES, EDGE_ENDPOINTS, EDGES, NUM_INPUTS, NUM_NODES, Genotype, incoming_edges
from .lean import recompute_cheap
from .macro import DECODER_CELLS, DECODER_LEVELS, ENCODER_CELLS, MEMORY_MODES, NUM_LEVELS
from .memory import ADAM_SLOTS, trace_forward
from .ops import OPS, Pooling, Stride, activation, build_op, reads_activation

QUANTITIES = ("memory", "seconds", "flops")
BUDGETED = {"memory": "memory", "time": "seconds"}  # budget name -> the quantity it bounds
TABLE_VERSION = 1
ZERO = OPS.index("zero")


# ---------------------------------------------------------------- the table

@dataclass(frozen=True)
class CostTable:
    """Per-op training costs at one plan, and the base and stock nnU-Net's costs (see the module docstring).

    Args:
        key: what it was measured at (JSON data: patch, batch, strides, reference width, channels, classes, memory
            mode, autocast, device, torch version); a cached table is used only for an equal key.
        ops: quantity -> cell type -> `[14][8]` (rows `EDGES`, columns `OPS`), summed over the cells of that type.
        base: quantity -> the part no op choice moves.
        stock: quantity -> stock nnU-Net's network at the same plan (memory in the same mode of accounting, plain).

    JSON form (`to_dict`): {"version": 1, "key": {...}, "ops": {...}, "base": {...}, "stock": {...}}.
    """
    key: Mapping
    ops: Mapping[str, Mapping[str, tuple]]
    base: Mapping[str, float]
    stock: Mapping[str, float]

    def __post_init__(self):
        if not isinstance(self.key, Mapping):
            raise ValueError(f"invalid cost table: key must be an object, got {type(self.key).__name__}")
        for name, part in (("ops", self.ops), ("base", self.base), ("stock", self.stock)):
            if not isinstance(part, Mapping) or set(part) != set(QUANTITIES):
                raise ValueError(f"invalid cost table: {name} must hold {', '.join(QUANTITIES)}")
        ops = {}
        for quantity in QUANTITIES:
            if not isinstance(self.ops[quantity], Mapping) or set(self.ops[quantity]) != set(CELL_TYPES):
                raise ValueError(f"invalid cost table: ops[{quantity!r}] must hold {', '.join(CELL_TYPES)}")
            ops[quantity] = {}
            for cell_type in CELL_TYPES:
                values = torch.as_tensor(self.ops[quantity][cell_type], dtype=torch.float64)
                if values.shape != (len(EDGES), len(OPS)) or not torch.isfinite(values).all():
                    raise ValueError(f"invalid cost table: ops[{quantity!r}][{cell_type!r}] must be "
                                     f"{len(EDGES)} x {len(OPS)} finite numbers")
                if (values[:, ZERO] != 0).any():
                    raise ValueError(f"invalid cost table: ops[{quantity!r}][{cell_type!r}]: 'zero' must cost 0")
                ops[quantity][cell_type] = tuple(map(tuple, values.tolist()))
            for name, part in (("base", self.base), ("stock", self.stock)):
                if not isinstance(part[quantity], (int, float)) or not math.isfinite(part[quantity]):
                    raise ValueError(f"invalid cost table: {name}[{quantity!r}] must be a finite number")
            if self.stock[quantity] <= 0:
                raise ValueError(f"invalid cost table: stock[{quantity!r}] must be > 0")
        object.__setattr__(self, "ops", ops)
        object.__setattr__(self, "base", {q: float(self.base[q]) for q in QUANTITIES})
        object.__setattr__(self, "stock", {q: float(self.stock[q]) for q in QUANTITIES})
        # [quantity][cell type] as float64 tensors, and copies per dtype and device as `matrix` is asked for them
        object.__setattr__(self, "_matrices", {(q, t, torch.float64, torch.device("cpu")): torch.tensor(ops[q][t],
                                               dtype=torch.float64) for q in QUANTITIES for t in CELL_TYPES})

    def __eq__(self, other) -> bool:
        return isinstance(other, CostTable) and self.to_dict() == other.to_dict()

    def matrix(self, quantity: str, cell_type: str, like: torch.Tensor | None = None) -> torch.Tensor:
        """`[14, 8]` entries of one quantity and cell type (float64 on the CPU, or `like`'s dtype and device)."""
        dtype, device = (torch.float64, torch.device("cpu")) if like is None else (like.dtype, like.device)
        key = (quantity, cell_type, dtype, device)
        if key not in self._matrices:
            self._matrices[key] = self._matrices[quantity, cell_type, torch.float64, torch.device("cpu")].to(
                device=device, dtype=dtype)
        return self._matrices[key]

    def to_dict(self) -> dict:
        return {"version": TABLE_VERSION, "key": dict(self.key),
                "ops": {q: {t: [list(row) for row in self.ops[q][t]] for t in CELL_TYPES} for q in QUANTITIES},
                "base": dict(self.base), "stock": dict(self.stock)}

    @classmethod
    def from_dict(cls, data) -> "CostTable":
        """The JSON form back; ValueError saying what is wrong."""
        if not isinstance(data, Mapping) or data.get("version") != TABLE_VERSION:
            raise ValueError(f"invalid cost table: expected an object with version {TABLE_VERSION}")
        missing = [k for k in ("key", "ops", "base", "stock") if k not in data]
        if missing:
            raise ValueError(f"invalid cost table: missing {', '.join(missing)}")
        return cls(data["key"], data["ops"], data["base"], data["stock"])


def expected_cost(table: CostTable, logits: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{quantity: E[Q](alpha)}, scalars differentiable in the logits (cell type -> `[14, 8]`), in their dtype."""
    costs = {}
    for quantity in QUANTITIES:
        total = None
        for cell_type in CELL_TYPES:
            alpha = logits[cell_type]
            term = (torch.softmax(alpha, dim=-1) * table.matrix(quantity, cell_type, alpha)).sum()
            total = term if total is None else total + term
        costs[quantity] = total + table.base[quantity]
    return costs


def genotype_cost(table: CostTable, architecture: Genotype | Mapping[str, Sequence[str]]) -> dict[str, float]:
    """{quantity: Q(architecture)}: the base plus the entry of the op each edge chose. `architecture`: a genotype, or
    cell type -> 14 op names (any choice, e.g. one drawn edge by edge, whose nodes may all be `zero`)."""
    ops = {t: getattr(architecture, t) if isinstance(architecture, Genotype) else architecture[t] for t in CELL_TYPES}
    return {quantity: table.base[quantity] + sum(
        table.ops[quantity][cell_type][e][OPS.index(op)]
        for cell_type in CELL_TYPES for e, op in enumerate(ops[cell_type])) for quantity in QUANTITIES}


def matched_ratio(table: CostTable, costs: Mapping[str, float | torch.Tensor], quantity: str) -> float:
    """Memory or seconds of the network scaled to stock's FLOPs, as a multiple of stock nnU-Net's (first order:
    (Q / F) / (Q_stock / F_stock)); 1.0 is stock's."""
    stock = table.stock
    return float((costs[quantity] / stock[quantity]) / (costs["flops"] / stock["flops"]))


# ---------------------------------------------------------------- the budget

def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class CostBudget:
    """Budgets of the exported (FLOPs-matched) network as multiples of stock nnU-Net's, and the penalty's weight.

    Args:
        memory: training memory at most `memory` x stock's (None: no memory term).
        time: seconds per training step at most `time` x stock's (None: no time term).
        weight: the penalty's weight in the architecture loss (>= 0; 0 switches the cost term off).
    """
    memory: float | None = 1.0
    time: float | None = 1.0
    weight: float = 0.0

    def __post_init__(self):
        for name in BUDGETED:
            value = getattr(self, name)
            if value is not None and (not _number(value) or value <= 0):
                raise ValueError(f"{name}_budget must be a number > 0 (a multiple of stock nnU-Net's {name} at "
                                 f"FLOPs-matched width) or None, got {value!r}")
        if not _number(self.weight) or self.weight < 0:
            raise ValueError(f"cost_weight must be a number >= 0, got {self.weight!r}")

    def bounds(self) -> dict[str, float]:
        """{quantity: budget} of the terms that are on."""
        return {quantity: getattr(self, name) for name, quantity in BUDGETED.items() if getattr(self, name) is not None}


def budget_excess(table: CostTable, costs: Mapping[str, torch.Tensor], budget: CostBudget) -> dict[str, torch.Tensor]:
    """{quantity: Q / Q_stock - b * F / F_stock} for each budgeted quantity: > 0 over budget (module docstring)."""
    stock = table.stock
    return {quantity: costs[quantity] / stock[quantity] - bound * costs["flops"] / stock["flops"]
            for quantity, bound in budget.bounds().items()}


def budget_penalty(table: CostTable, logits: Mapping[str, torch.Tensor], budget: CostBudget,
                   weight: float | None = None) -> torch.Tensor:
    """weight * sum over the budgeted quantities of relu(excess): zero within budget, differentiable in the logits.
    `weight` defaults to the budget's own."""
    excess = budget_excess(table, expected_cost(table, logits), budget)
    weight = budget.weight if weight is None else weight
    return weight * sum(torch.relu(value) for value in excess.values())


def cheapest(table: CostTable, quantity: str) -> tuple[float, Genotype]:
    """The least `matched_ratio` of `quantity` over the (valid) architectures of the space, and one that reaches it.

    Dinkelbach's method on the ratio (Q / Q_s) / (F / F_s): for a trial ratio b, the architecture minimising
    Q / Q_s - b F / F_s is found node by node (each edge its cheapest op, and a node whose edges all chose `zero`
    takes the non-zero op that adds the least); its ratio is the next trial, until it no longer falls.
    """
    stock = table.stock
    matrices = {t: (table.matrix(quantity, t) / stock[quantity], table.matrix("flops", t) / stock["flops"])
                for t in CELL_TYPES}

    def ratio(genotype: Genotype) -> float:
        return matched_ratio(table, genotype_cost(table, genotype), quantity)

    best = _argmin(lambda t: matrices[t][0])  # the cheapest in the quantity alone: a first trial
    trial = ratio(best)
    for _ in range(100):
        candidate = _argmin(lambda t: matrices[t][0] - trial * matrices[t][1])
        value = ratio(candidate)
        if value >= trial - 1e-12 * abs(trial):
            break
        best, trial = candidate, value
    return trial, best


def _argmin(values: Callable[[str], torch.Tensor]) -> Genotype:
    """The valid architecture with the least sum of `values(cell_type)[edge, op]` over its choices."""
    cells = {}
    for cell_type in CELL_TYPES:
        v = values(cell_type)
        choice = v.argmin(dim=-1).tolist()
        for node in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES):
            inputs = incoming_edges(node)
            if all(choice[k] == ZERO for k in inputs):  # the node needs one input: the cheapest addition
                extra = v[inputs].clone() - v[inputs, ZERO].unsqueeze(1)
                extra[:, ZERO] = math.inf
                flat = int(extra.argmin())
                choice[inputs[flat // len(OPS)]] = flat % len(OPS)
        cells[cell_type] = tuple(OPS[k] for k in choice)
    return Genotype(**cells)


def check_budget(table: CostTable, budget: CostBudget) -> None:
    """ValueError, in one line naming the cheapest achievable cost, if no architecture of the space meets a budget."""
    for name, quantity in BUDGETED.items():
        bound = getattr(budget, name)
        if bound is None:
            continue
        least, _ = cheapest(table, quantity)
        if least > bound:
            raise ValueError(f"{name}_budget {bound:g} is below what any architecture of the search space reaches at "
                             f"this plan: the cheapest trains in {least:.3f} x stock nnU-Net's {name} at "
                             f"FLOPs-matched width; set {name}_budget >= {math.ceil(least * 100) / 100:.2f} (or None)")


# ---------------------------------------------------------------- measuring

@dataclass(frozen=True)
class OpSite:
    """Where an op runs: its input `[N, channels, *spatial]` and its stride (a reduction cell's input edges)."""
    channels: int
    spatial: tuple[int, ...]
    stride: Stride


def level_sizes(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """The spatial size of each of the 4 levels."""
    sizes, size = [], tuple(patch_size)
    for level in range(NUM_LEVELS):
        size = tuple(n // s for n, s in zip(size, strides[level]))
        sizes.append(size)
    return sizes


def cell_sites(width: int, patch_size: Sequence[int], strides: Sequence[Sequence[int]]
               ) -> list[tuple[str, list[OpSite]]]:
    """The 12 cells of the macro (encoder then decoder), each as (cell type, the `OpSite` of each of its 14 edges)."""
    sizes = level_sizes(patch_size, strides)
    placed = [(t, k // 2 + 1) for k, t in enumerate(ENCODER_CELLS)] + list(zip(DECODER_CELLS, DECODER_LEVELS))
    cells = []
    for cell_type, level in placed:
        channels = width * 2 ** level // NUM_NODES
        sites = []
        for source, _ in EDGE_ENDPOINTS:
            if cell_type == "reduction" and source < NUM_INPUTS:  # reads the finer level, strides
                sites.append(OpSite(channels, sizes[level - 1], tuple(strides[level])))
            else:
                sites.append(OpSite(channels, sizes[level], (1, 1, 1)))
        cells.append((cell_type, sites))
    return cells


class EdgeOp(nn.Module):
    """One op as a cell runs it: on LeakyReLU(x) if it reads the activation (`ops.reads_activation`); in the lean
    mode as a region that keeps only its input and its dense convolutions' outputs (`cell.Cell`)."""

    def __init__(self, name: str, site: OpSite, lean: bool = False):
        super().__init__()
        self.op, self.activation, self.lean = build_op(name, site.channels, site.stride), activation(), lean

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(self.activation(x)) if reads_activation(self.op) else self.op(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return recompute_cheap(self._run, x) if self.lean else self._run(x)


def op_memory(name: str, site: OpSite, batch_size: int, memory_mode: str, autocast: bool) -> int:
    """Bytes op `name` adds to a training step at `site`: what its forward keeps for the backward (not its input,
    the state, nor its output, which the node's sum replaces) plus parameters, gradients and Adam's moments.
    In the "cells" mode a cell keeps only its inputs: its ops keep nothing (their recomputation is transient)."""
    if memory_mode not in MEMORY_MODES:
        raise ValueError(f"memory mode must be one of {', '.join(MEMORY_MODES)}, got {memory_mode!r}")
    with torch.device("meta"):
        module = EdgeOp(name, site, lean=memory_mode == "lean")
    parameters = sum(p.numel() * p.element_size() for p in module.parameters())
    if memory_mode == "cells" or name == "zero":
        return (2 + ADAM_SLOTS) * parameters
    x = torch.zeros(batch_size, site.channels, *site.spatial, device="meta", requires_grad=True)
    # the output's grad_fn holds what autograd saved, not the output itself
    trace = trace_forward(lambda: module(x).grad_fn, autocast=autocast)
    return trace.alive + (2 + ADAM_SLOTS) * parameters


def op_flops(name: str, site: OpSite) -> int:
    """FLOPs of op `name`'s forward at `site` on one patch, as `flops.count_flops` counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    if name == "zero":
        return 0
    with torch.device("meta"):
        module = EdgeOp(name, site)
    x = torch.zeros(1, site.channels, *site.spatial, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return 0 if isinstance(module.op, Pooling) else int(counter.get_total_flops())


def op_seconds(name: str, site: OpSite, batch_size: int, device: torch.device, memory_mode: str = "plain",
               warmup: int = 1, repetitions: int = 3) -> float:
    """Median seconds of forward + backward of op `name` at `site` on `device` (autocast on CUDA, as nnU-Net; in
    the lean mode with its recomputation)."""
    import time

    if name == "zero":
        return 0.0
    module = EdgeOp(name, site, lean=memory_mode == "lean").to(device)
    x = torch.randn(batch_size, site.channels, *site.spatial, device=device)
    if device.type == "cpu":  # as networks train on the CPU (`channels_last_on_cpu`): a cell's states are channels-last
        module.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    x.requires_grad_(True)
    times = []
    for repetition in range(warmup + repetitions):
        _synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type) if device.type == "cuda" else nullcontext():
            out = module(x)
        out.float().sum().backward()
        _synchronize(device)
        if repetition >= warmup:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


OpMeasure = Callable[[str, OpSite], float]  # (op name, site) -> one quantity


@dataclass
class Measures:
    """How to measure each quantity of one op at a site (`op_memory`, `op_seconds`, `op_flops` bound to a plan)."""
    memory: OpMeasure
    seconds: OpMeasure
    flops: OpMeasure = field(default=op_flops)


def op_table(cells: Sequence[tuple[str, Sequence[OpSite]]], measures: Measures) -> dict[str, dict[str, list]]:
    """quantity -> cell type -> `[14][8]` summed over the cells of each type; each (op, site) measured once."""
    cache: dict[tuple, float] = {}

    def measure(quantity: str, name: str, site: OpSite) -> float:
        if (quantity, name, site) not in cache:
            cache[quantity, name, site] = 0.0 if name == "zero" else float(getattr(measures, quantity)(name, site))
        return cache[quantity, name, site]

    table = {q: {t: [[0.0] * len(OPS) for _ in EDGES] for t in CELL_TYPES} for q in QUANTITIES}
    for cell_type, sites in cells:
        for e, site in enumerate(sites):
            for o, name in enumerate(OPS):
                for quantity in QUANTITIES:
                    table[quantity][cell_type][e][o] += measure(quantity, name, site)
    return table


def build_cost_table(key: Mapping, cells: Sequence[tuple[str, Sequence[OpSite]]], measures: Measures,
                     reference: Genotype, reference_costs: Mapping[str, float], stock: Mapping[str, float]
                     ) -> CostTable:
    """The table: every op measured at its sites, the base fitted so that `reference` costs `reference_costs`
    (its whole derived network, measured), and stock nnU-Net's costs."""
    ops = op_table(cells, measures)
    without_base = CostTable(key, ops, {q: 0.0 for q in QUANTITIES}, stock)
    chosen = genotype_cost(without_base, reference)
    return CostTable(key, ops, {q: float(reference_costs[q]) - chosen[q] for q in QUANTITIES}, stock)
