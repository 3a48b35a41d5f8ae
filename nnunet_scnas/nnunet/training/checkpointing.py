"""Per-cell activation checkpointing for a network that nnU-Net has built, wrapped or compiled."""
from torch import nn

from nnunet_scnas.errors import UserError


def checkpoint_cells_of(network: nn.Module) -> None:
    """Switch on `checkpoint_cells` of the SCNAS network inside nnU-Net's DDP and `torch.compile` wrappers."""
    inner = getattr(network, "module", network)  # DistributedDataParallel
    inner = getattr(inner, "_orig_mod", inner)  # torch.compile
    if not hasattr(inner, "checkpoint_cells"):
        raise UserError(f"checkpointed cells need an SCNAS network, but this configuration builds "
                        f"{type(inner).__name__}: train an exported configuration (nnunet-scnas export-plans)")
    inner.checkpoint_cells = True
