"""The comparison stage: nnU-Net's per-fold results of several methods -> tables, tests and plots."""
