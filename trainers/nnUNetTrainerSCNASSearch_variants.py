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
