"""`nnUNetv2_train DATASET 3d_fullres_scnas FOLD -tr nnUNetTrainerCheckpointedCells`: stock nnU-Net, with the
derived network's cells checkpointed.

Each cell is recomputed in the backward pass instead of keeping its intermediate tensors: the same function and
gradients, less memory, about one more forward of the cells per step. For a derived network whose training does
not fit the GPU at the plan's batch (`nnunet-scnas estimate -c 3d_fullres_scnas` tells, before training).
"""
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_scnas.errors import exit_on_user_error
from nnunet_scnas.nnunet.training.checkpointing import checkpoint_cells_of


class nnUNetTrainerCheckpointedCells(nnUNetTrainer):
    def initialize(self):
        super().initialize()
        with exit_on_user_error():
            checkpoint_cells_of(self.network)
        self.print_to_log_file("The cells of the derived network are checkpointed (recomputed in the backward pass)")
