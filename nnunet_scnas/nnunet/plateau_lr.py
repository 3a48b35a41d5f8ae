"""The search's plateau LR rule, fitted into the `lr_scheduler` slot of a stock nnU-Net trainer."""
from nnunet_scnas.nnunet.search_state import PlateauSchedule


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
