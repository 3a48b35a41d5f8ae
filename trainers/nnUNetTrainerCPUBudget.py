"""Stock nnU-Net, only with a training budget sized for 2 CPU cores.

The demo trains both sides of its comparison (stock `3d_fullres` and the derived `3d_fullres_scnas`) with
this same trainer, so that the architecture is the only difference. Everything else is nnU-Net's recipe; its
checkpoints are written after every epoch and atomically, so that `--c` resumes from the last epoch after any kill.
On the CPU both networks run in channels-last layout (same computation, see
`nnunet_scnas/nnunet/training/cpu_layout.py`).
"""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_scnas.nnunet.search.checkpoint import save_atomically
from nnunet_scnas.nnunet.training.cpu_layout import channels_last_on_cpu


class nnUNetTrainerCPUBudget(nnUNetTrainer):
    num_epochs_budget = 6
    iterations_per_epoch_budget = 12
    val_iterations_per_epoch_budget = 3

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.num_epochs_budget
        self.num_iterations_per_epoch = self.iterations_per_epoch_budget
        self.num_val_iterations_per_epoch = self.val_iterations_per_epoch_budget
        self.save_every = 1  # a few epochs in all: --c resumes from the last one, not from the best

    def initialize(self):
        super().initialize()
        channels_last_on_cpu(self.network, self.device)

    def save_checkpoint(self, filename: str) -> None:
        save_atomically(super().save_checkpoint, filename, is_writer=self.local_rank == 0)


class nnUNetTrainerCPUBudget_quick(nnUNetTrainerCPUBudget):
    """A few minutes on 2 cores: for tests and `nnunet-scnas demo --quick`."""
    num_epochs_budget = 2
    iterations_per_epoch_budget = 3
    val_iterations_per_epoch_budget = 2


class nnUNetTrainerCPUBenchmark(nnUNetTrainerCPUBudget):
    """`nnunet-scnas demo --full`: the budget at which stock nnU-Net learns every label of the embedded sets,
    for every method of the benchmark alike. At 16 epochs it learned a brain tumour core in some folds only, and
    hardly a nodule (docs/benchmark_cost.md, "Why the budget went to 24 epochs"); a change here is a change of
    the demo's `RECIPE`."""
    num_epochs_budget = 24
    iterations_per_epoch_budget = 12
    val_iterations_per_epoch_budget = 3
