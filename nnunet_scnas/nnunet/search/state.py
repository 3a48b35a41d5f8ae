"""All the resumable state of a search, behind the one optimizer slot that nnU-Net's checkpoints carry.

nnU-Net saves `trainer.optimizer.state_dict()` and restores it with `load_state_dict`. The search has two
optimizers, a plateau LR schedule and, with mixed precision, the architecture step's GradScaler (nnU-Net saves
its own, the weight step's); keeping them together here lets nnU-Net's own save/load carry them unchanged.
Random streams need no saving: each is seeded from `seed_from(search seed, position in the run)` (the
temperature likewise follows the epoch), so `nnUNetv2_train ... --c` resumes the search exactly, on every rank
of a multi-GPU run alike.
"""
import random

import numpy as np
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from nnunet_scnas.cell import CELL_LAYOUT
from nnunet_scnas.genotype import SEARCH_SPACE_ID
from nnunet_scnas.nnunet.training.plateau import PlateauSchedule
from nnunet_scnas.sampler import tau_schedule


def seed_from(*key: int) -> int:
    """A 32-bit seed that is a pure function of `key` (non-negative ints), well mixed: neighbouring keys
    (iterations, epochs, ranks) give unrelated streams."""
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """The global streams: torch's (initial weights, augmentation), numpy's and Python's (patch sampling)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class SearchOptimizer:
    """Weight optimizer + architecture optimizer + plateau schedule (+ the architecture step's GradScaler), saved
    as one.

    `param_groups` are the weight optimizer's (nnU-Net logs its learning rate). The saved state records the
    search space and the cell layout, so that `search/checkpoint.py` can refuse a checkpoint of another supernet.
    `architecture_scaler` is None until a mixed-precision step asks for it (`architecture_scaler_for`): nnU-Net
    makes its own GradScaler from the device, after the optimizers, and a CPU run has none.
    """

    def __init__(self, weights: torch.optim.Optimizer, architecture: torch.optim.Optimizer,
                 plateau: PlateauSchedule):
        self.weights, self.architecture, self.plateau = weights, architecture, plateau
        self.architecture_scaler: torch.amp.GradScaler | None = None
        self._architecture_scaler_state = None  # loaded from a checkpoint before the scaler exists

    @property
    def param_groups(self):
        return self.weights.param_groups

    def zero_grad(self, set_to_none: bool = True):
        self.weights.zero_grad(set_to_none=set_to_none)
        self.architecture.zero_grad(set_to_none=set_to_none)

    def architecture_scaler_for(self, device_type: str) -> torch.amp.GradScaler:
        """The architecture step's own GradScaler (made on first use, with a loaded state if any): an overflow
        in the weight step must not lower its scale, nor one in the architecture step the weight step's."""
        if self.architecture_scaler is None:
            self.architecture_scaler = torch.amp.GradScaler(device_type)
            if self._architecture_scaler_state:  # {} is what a disabled scaler saves
                self.architecture_scaler.load_state_dict(self._architecture_scaler_state)
        return self.architecture_scaler

    def state_dict(self):
        return {
            "search_space": SEARCH_SPACE_ID,
            "cell_layout": CELL_LAYOUT,
            "weights": self.weights.state_dict(),
            "architecture": self.architecture.state_dict(),
            "plateau": self.plateau.state_dict(),
            "architecture_scaler": self._architecture_scaler_state if self.architecture_scaler is None
            else self.architecture_scaler.state_dict(),
        }

    def load_state_dict(self, state):
        self.weights.load_state_dict(state["weights"])
        self.architecture.load_state_dict(state["architecture"])
        self.plateau.load_state_dict(state["plateau"])
        self._architecture_scaler_state = state.get("architecture_scaler")  # absent from older checkpoints
        if self.architecture_scaler is not None and self._architecture_scaler_state:
            self.architecture_scaler.load_state_dict(self._architecture_scaler_state)


def make_search_optimizer(network, settings) -> SearchOptimizer:
    """Both Adam optimizers and the plateau schedule, from a search trainer's attributes.

    Args:
        network: the supernet (not its DDP wrapper).
        settings: the search trainer or its class (`weight_lr`, `weight_betas`, `arch_lr`, `arch_betas`,
            `plateau_patience`, `plateau_factor`).
    """
    weights = torch.optim.Adam(network.weight_parameters(), settings.weight_lr, betas=settings.weight_betas)
    architecture = torch.optim.Adam(network.arch_parameters(), settings.arch_lr, betas=settings.arch_betas)
    return SearchOptimizer(weights, architecture,
                           PlateauSchedule(weights, settings.plateau_patience, settings.plateau_factor))


class TemperatureSchedule:
    """nnU-Net steps `trainer.lr_scheduler` at the start of every epoch: the search anneals tau there.

    With a weights-only warm-up of `hold_epochs` epochs (`search/cost.py`), tau stays at `tau_start` through it
    (every op sampled evenly while only the weights train) and anneals over the epochs that train the
    architecture; `hold_epochs` 0 is the schedule of `tau_schedule` itself. The weight lr follows the loss instead
    (`PlateauSchedule`, stepped at the end of an epoch). With `arch_lr_poly`, the architecture lr follows nnU-Net's
    poly schedule over the epochs that train the architecture, `arch_lr * (1 - k / K) ** 0.9` in the k-th of K:
    early steps decide, late ones only refine, so near-ties stop flipping in the last epochs. A function of the
    epoch alone, like tau, so `--c` resumes it without saving anything.
    """

    def __init__(self, network, num_epochs: int, tau_start: float, tau_end: float, hold_epochs: int = 0,
                 architecture_optimizer: torch.optim.Optimizer | None = None, arch_lr_poly: bool = False):
        if not 0 <= hold_epochs < num_epochs:
            raise ValueError(f"tau can be held for 0 to {num_epochs - 1} of {num_epochs} epochs, got {hold_epochs}")
        if arch_lr_poly and architecture_optimizer is None:
            raise ValueError("arch_lr_poly needs the architecture optimizer")
        self.network, self.num_epochs, self.tau_start, self.tau_end = network, num_epochs, tau_start, tau_end
        self.hold_epochs = hold_epochs
        self.arch_lr_schedule = PolyLRScheduler(
            architecture_optimizer, architecture_optimizer.param_groups[0]["lr"], num_epochs - hold_epochs) \
            if arch_lr_poly else None

    def step(self, epoch: int) -> None:
        architecture_epochs = self.num_epochs - self.hold_epochs
        self.network.tau = tau_schedule(epoch - self.hold_epochs, architecture_epochs, self.tau_start, self.tau_end)
        if self.arch_lr_schedule is not None:
            self.arch_lr_schedule.step(min(max(epoch - self.hold_epochs, 0), architecture_epochs - 1))
