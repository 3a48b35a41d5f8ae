"""The export stage: a genotype becomes a configuration of a dataset's nnU-Net plans."""
