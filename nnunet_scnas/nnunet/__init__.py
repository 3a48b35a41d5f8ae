"""The adapter: everything that speaks nnU-Net (plans, trainers' hooks, datasets, export, comparison)."""
