"""The plateau LR rule (paper §3): the search's weight LR, and the paper's retraining in a stock trainer's
`lr_scheduler` slot."""


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


class TrainingLossPlateau(PlateauSchedule):
    """Multiply the LR by `factor` after `patience` epochs without a lower training loss (paper §3, retraining).

    nnU-Net calls `lr_scheduler.step(epoch)` at the start of every epoch, before that epoch's loss exists, so
    `step` does nothing here and the trainer calls `observe(train_loss)` at the end of each epoch.
    nnU-Net's checkpoints carry no scheduler: `resume` rebuilds the counters from the logged training losses.
    """

    def step(self, epoch=None) -> None:
        pass

    def resume(self, train_losses) -> None:
        """Replay the training losses of the finished epochs; the LR itself came back with the optimizer state."""
        learning_rates = [group["lr"] for group in self.optimizer.param_groups]
        self.best_loss, self.epochs_without_improvement = float("inf"), 0
        for loss in train_losses:
            self.observe(loss)
        for group, lr in zip(self.optimizer.param_groups, learning_rates):
            group["lr"] = lr
