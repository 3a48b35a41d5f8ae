"""The search stage: what `nnUNetTrainerSCNASSearch` does besides nnU-Net's hooks."""
