"""All the resumable state of a search, behind the one optimizer slot that nnU-Net's checkpoints carry.

nnU-Net saves `trainer.optimizer.state_dict()` and restores it with `load_state_dict`. The search has two
optimizers, a plateau LR schedule, a temperature and random generators; keeping them together here lets
nnU-Net's own save/load carry them unchanged, so `nnUNetv2_train ... --c` resumes the search exactly.
"""
import random

import numpy as np
import torch

from nnunet_scnas.genotype import SEARCH_SPACE_ID
from nnunet_scnas.sampler import tau_schedule


class PlateauSchedule:
    """Multiply the learning rate by `factor` once the training loss has not improved for `patience` epochs."""

    def __init__(self, optimizer, patience: int, factor: float):
        self.optimizer, self.patience, self.factor = optimizer, patience, factor
        self.best_loss = float("inf")
        self.epochs_without_improvement = 0

    def observe(self, train_loss: float) -> bool:
        """Record one epoch's training loss; True when the learning rate was just reduced."""
        if train_loss < self.best_loss:
            self.best_loss, self.epochs_without_improvement = train_loss, 0
            return False
        self.epochs_without_improvement += 1
        if self.epochs_without_improvement < self.patience:
            return False
        for group in self.optimizer.param_groups:
            group["lr"] *= self.factor
        self.epochs_without_improvement = 0
        return True

    def state_dict(self):
        return {"best_loss": self.best_loss, "epochs_without_improvement": self.epochs_without_improvement}

    def load_state_dict(self, state):
        self.best_loss = state["best_loss"]
        self.epochs_without_improvement = state["epochs_without_improvement"]


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def capture_random_state(generator: torch.Generator) -> dict:
    """Every random stream the search draws from: the architecture sampler's and the global ones that
    nnU-Net's data loading and augmentation use."""
    state = {
        "sampler": generator.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict, generator: torch.Generator) -> None:
    generator.set_state(state["sampler"])
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class SearchOptimizer:
    """Weight optimizer + architecture optimizer + plateau schedule + random state, saved as one.

    `param_groups` are the weight optimizer's (nnU-Net logs its learning rate).
    """

    def __init__(self, weights: torch.optim.Optimizer, architecture: torch.optim.Optimizer,
                 plateau: PlateauSchedule, generator: torch.Generator):
        self.weights, self.architecture, self.plateau, self.generator = weights, architecture, plateau, generator
        # Loaded random state waits until the first resumed epoch starts: nnU-Net draws a warm-up batch from
        # each data loader between loading the checkpoint and training, which an uninterrupted run does not.
        self.pending_random_state = None

    @property
    def param_groups(self):
        return self.weights.param_groups

    def zero_grad(self, set_to_none: bool = True):
        self.weights.zero_grad(set_to_none=set_to_none)
        self.architecture.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {
            "search_space": SEARCH_SPACE_ID,
            "weights": self.weights.state_dict(),
            "architecture": self.architecture.state_dict(),
            "plateau": self.plateau.state_dict(),
            "random_state": capture_random_state(self.generator),
        }

    def load_state_dict(self, state):
        self.weights.load_state_dict(state["weights"])
        self.architecture.load_state_dict(state["architecture"])
        self.plateau.load_state_dict(state["plateau"])
        self.pending_random_state = state["random_state"]

    def apply_pending_random_state(self) -> None:
        if self.pending_random_state is not None:
            restore_random_state(self.pending_random_state, self.generator)
            self.pending_random_state = None


class TemperatureSchedule:
    """nnU-Net steps `trainer.lr_scheduler` at the start of every epoch: the search anneals tau there.

    The learning rates follow the loss instead (`PlateauSchedule`, stepped at the end of an epoch).
    """

    def __init__(self, network, num_epochs: int, tau_start: float, tau_end: float):
        self.network, self.num_epochs, self.tau_start, self.tau_end = network, num_epochs, tau_start, tau_end

    def step(self, epoch: int) -> None:
        self.network.tau = tau_schedule(epoch, self.num_epochs, self.tau_start, self.tau_end)
