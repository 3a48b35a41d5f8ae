"""What retraining recipes add to nnU-Net's own: the paper's loss and LR rule, the CPU memory layout."""
