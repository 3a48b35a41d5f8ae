"""`nnUNetv2_train DATASET 3d_fullres_scnas FOLD -tr nnUNetTrainerSCNASPaper`: the paper's retraining recipe.

Paper §3: Adam (lr 3e-4, betas (0.9, 0.999)), LR divided by 5 after a 30-epoch plateau of the training loss,
up to 500 epochs, Jaccard loss. Everything else is nnU-Net's (network from the plans, patch and batch size,
augmentation, deep supervision and its weights, validation). The default retraining stays stock
`nnUNetTrainer`, so that a comparison with nnU-Net differs only in the architecture; this is the variant.
"""
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_scnas.nnunet.training.jaccard_loss import with_jaccard_loss
from nnunet_scnas.nnunet.training.plateau import TrainingLossPlateau


class nnUNetTrainerSCNASPaper(nnUNetTrainer):
    paper_epochs = 500
    paper_lr = 3e-4
    paper_betas = (0.9, 0.999)
    plateau_patience = 30  # epochs without a lower training loss ...
    plateau_factor = 0.2  # ... before the LR is divided by 5
    iterations_per_epoch: int | None = None  # None: nnU-Net's (the paper gives none)
    val_iterations_per_epoch: int | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.paper_epochs
        self.initial_lr = self.paper_lr
        if self.iterations_per_epoch is not None:
            self.num_iterations_per_epoch = self.iterations_per_epoch
        if self.val_iterations_per_epoch is not None:
            self.num_val_iterations_per_epoch = self.val_iterations_per_epoch

    def configure_optimizers(self):
        # the paper names no weight decay
        optimizer = torch.optim.Adam(self.network.parameters(), self.initial_lr, betas=self.paper_betas)
        return optimizer, TrainingLossPlateau(optimizer, self.plateau_patience, self.plateau_factor)

    def _build_loss(self):
        return with_jaccard_loss(super()._build_loss(), self.label_manager, self.configuration_manager.batch_dice)

    def on_train_epoch_end(self, train_outputs):
        super().on_train_epoch_end(train_outputs)  # logs the epoch's mean training loss
        if self.lr_scheduler.observe(self.logger.get_value('train_losses', step=-1)):
            self.print_to_log_file(f"training loss plateaued for {self.plateau_patience} epochs: lr -> "
                                   f"{self.optimizer.param_groups[0]['lr']:.2e}")

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        self.lr_scheduler.resume(self.logger.get_value('train_losses', step=None))


class nnUNetTrainerSCNASPaper_quick(nnUNetTrainerSCNASPaper):
    """A few minutes on 2 CPU cores: for tests."""
    paper_epochs = 2
    plateau_patience = 1
    iterations_per_epoch = 3
    val_iterations_per_epoch = 2
