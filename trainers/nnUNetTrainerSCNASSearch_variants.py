"""Variants of the SCNAS search: each changes class attributes of `nnUNetTrainerSCNASSearch` only.

nnU-Net finds them by class name (`-tr nnUNetTrainerSCNASSearch_cpu`); it imports this folder's modules as
top-level modules, with the folder on `sys.path` while it looks, so the base class is imported by module name.
"""
from nnUNetTrainerSCNASSearch import nnUNetTrainerSCNASSearch


class nnUNetTrainerSCNASSearch_5epochs(nnUNetTrainerSCNASSearch):
    search_epochs = 5


class nnUNetTrainerSCNASSearch_50epochs(nnUNetTrainerSCNASSearch):
    search_epochs = 50


class nnUNetTrainerSCNASSearch_cpu(nnUNetTrainerSCNASSearch):
    """Sized for 2 CPU cores (a few minutes on the embedded brain-tumour set): the demo's search.

    48 iterations instead of 50,000: with the paper's architecture lr, Adam moves a logit by at most
    ~0.003 per step, which would leave the architecture at its random initialisation; 10x lets it move.
    """
    search_epochs = 8
    search_iterations_per_epoch = 6
    search_val_iterations_per_epoch = 2
    ranking_batches = 2
    stem_width = 8
    arch_lr = 3e-2
    plateau_patience = 4


class nnUNetTrainerSCNASSearch_cpuQuick(nnUNetTrainerSCNASSearch_cpu):
    """Tests and `nnunet-scnas demo --quick`: a handful of iterations."""
    search_epochs = 2
    search_iterations_per_epoch = 2
    search_val_iterations_per_epoch = 1
    ranking_batches = 1
    stem_width = 4


class nnUNetTrainerSCNASSearch_cpuBenchmark(nnUNetTrainerSCNASSearch_cpu):
    """`nnunet-scnas demo --full`, one search per fold: long enough for the architecture to settle (mean entropy of
    softmax(alpha) well below ln 8), with the paper's weight-optimizer betas as printed."""
    search_epochs = 12
    search_iterations_per_epoch = 8
    arch_lr = 0.25
    plateau_patience = 6


class nnUNetTrainerSCNASSearch_cpuBenchmarkBetas09(nnUNetTrainerSCNASSearch_cpuBenchmark):
    """The same search with Adam's usual betas for the weights: (0.1, 0.001) as printed makes Adam close to
    sign-SGD (steps of about lr whatever the gradient's size)."""
    weight_betas = (0.9, 0.999)


class nnUNetTrainerSCNASSearch_cpuBenchmarkJaccard(nnUNetTrainerSCNASSearch_cpuBenchmark):
    """The same search with the paper's soft Jaccard loss in place of nnU-Net's Dice + CE."""
    search_loss = "jaccard"


class nnUNetTrainerSCNASSearch_costAware(nnUNetTrainerSCNASSearch):
    """The search that knows the cost (issue 26): the expected training memory and time of the architecture
    distribution, as multiples of stock nnU-Net's at FLOPs-matched width, enter the architecture loss above 1.5 x
    (`op_cost.py`; memory in the lean mode on a GPU: export the result with `--memory lean`). DiNTS' recipe: the first
    half of the epochs trains the weights alone (tau held), then the cost weight ramps in over 20 epochs while tau
    anneals. Why 1.5: at BrainTumour's plan (128^3, lean) no architecture of the space reaches 1.0 x stock's memory
    (the cheapest, all conv_3x3x3, 1.07 x by the table) and a random one needs about 1.9 x."""
    cost_weight = 1.0
    memory_budget = 1.5
    time_budget = 1.5
    warmup_fraction = 0.5
    cost_ramp_epochs = 20


class CPUCostTerm:
    """The cost term of the CPU variants below (mixed in before their schedule's class): 4 of 8 (6 of 12) epochs
    train the weights alone, then the architecture decides under the cost term, memory in the plain mode, as the CPU
    retrains (at the embedded brain plan the cheapest architecture needs 1.6 x stock nnU-Net's memory at FLOPs-matched
    width, a random one 3.5 x: the budget 2.5 x binds). No time budget: CPU seconds on a shared machine move with
    its load, so the expected time is recorded, not budgeted. The architecture lr decays over the epochs that train
    the architecture (nnU-Net's poly schedule): with a constant one, near-tied parameter-free ops (equal cost, no
    gradient between them) kept flipping to the last epoch."""
    cost_weight = 1.0
    memory_budget = 2.5
    time_budget = None
    warmup_fraction = 0.5
    cost_ramp_epochs = 1
    arch_lr_poly = True


class nnUNetTrainerSCNASSearch_cpuCost(CPUCostTerm, nnUNetTrainerSCNASSearch_cpu):
    """The demo's search with the cost term; the architecture lr of the 4 epochs that train it is 0.1."""
    arch_lr = 0.1


class nnUNetTrainerSCNASSearch_cpuQuickCost(CPUCostTerm, nnUNetTrainerSCNASSearch_cpuQuick):
    """Tests and `nnunet-scnas demo --quick` with the cost term: one weights-only epoch, one under the cost term."""


class nnUNetTrainerSCNASSearch_cpuBenchmarkCost(CPUCostTerm, nnUNetTrainerSCNASSearch_cpuBenchmark):
    """`nnunet-scnas demo --full`'s search with the cost term: its weight full from the second of the 6 epochs that
    train the architecture. Architecture lr 0.1 as in the demo's: at the benchmark's 0.25 (decaying) the edges kept
    drifting from conv to parameter-free ops once the memory term was met (10 and 4 changed in the last two
    epochs); at 0.1, 1."""
    cost_ramp_epochs = 2
    arch_lr = 0.1
