"""Search checkpoints: written atomically, checked before `--c` resumes from one (one clear error instead of a
state-dict dump), and loaded by nnU-Net in a fraction of a second."""
import os
from collections.abc import Callable
from contextlib import contextmanager

import torch

from nnunet_scnas.cell import CELL_LAYOUT
from nnunet_scnas.errors import UserError
from nnunet_scnas.genotype import SEARCH_SPACE_ID

FRESH_START = "delete the fold folder's checkpoint_*.pth to start this search afresh"


def check_search_checkpoint(filename_or_checkpoint, supernet: torch.nn.Module, dataset_name: str) -> None:
    """Raise UserError unless the checkpoint is a readable search checkpoint of this very search: its search
    space, its cell layout (`CELL_LAYOUT`, recorded by `SearchOptimizer.state_dict`), its dataset (nnU-Net records
    the plans in `init_args`), then its parameter shapes.

    The file is read as nnU-Net's `load_checkpoint` reads it (nnU-Net's checkpoints are pickles: read only those
    this trainer's own fold folder holds)."""
    if isinstance(filename_or_checkpoint, dict):
        checkpoint, name = filename_or_checkpoint, "the checkpoint"
    else:
        name = str(filename_or_checkpoint)
        try:
            checkpoint = torch.load(name, map_location="cpu", weights_only=False)
        except Exception as error:
            raise UserError(f"cannot read {name} ({type(error).__name__}): the file is damaged; {FRESH_START}") \
                from None
    state = checkpoint.get("optimizer_state") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "architecture" not in state:
        raise UserError(f"{name} is not a checkpoint of an SCNAS search (trainer "
                        f"{checkpoint.get('trainer_name', '?') if isinstance(checkpoint, dict) else '?'}); "
                        f"{FRESH_START}")
    if state.get("search_space") != SEARCH_SPACE_ID:
        raise UserError(f"{name} was written for search space {state.get('search_space')!r}, this version "
                        f"searches {SEARCH_SPACE_ID!r}; {FRESH_START}")
    if state.get("cell_layout") != CELL_LAYOUT:  # before the shapes: they differ too, but would not say why
        written = "by a version with the old cell layout (nodes as wide as the cell)" if "cell_layout" not in state \
            else f"with cell layout {state['cell_layout']!r}, this version builds {CELL_LAYOUT!r}"
        raise UserError(f"{name} was written {written}: the genotype stays valid, the supernet's weights do not; "
                        f"{FRESH_START}")
    plans = checkpoint.get("init_args", {}).get("plans", {})
    written_for = plans.get("dataset_name") if isinstance(plans, dict) else None
    if written_for is not None and written_for != dataset_name:
        raise UserError(f"{name} is a search of dataset {written_for}, not of {dataset_name}; {FRESH_START}")
    expected = {k: tuple(v.shape) for k, v in supernet.state_dict().items()}
    found = {k.removeprefix("module."): tuple(v.shape) for k, v in checkpoint["network_weights"].items()}
    if found != expected:
        differing = sorted(set(found.items()) ^ set(expected.items()))
        raise UserError(f"{name} holds a different supernet (other stem width, strides, channels or classes; "
                        f"first difference: {differing[0][0]}); {FRESH_START}")


@contextmanager
def state_dict_taken_once(network: torch.nn.Module):
    """Within the block, `network.state_dict()` returns the state dict taken on entry.

    nnU-Net's `load_checkpoint` calls `network.state_dict()` once per key of the checkpoint (to strip DataParallel's
    `module.` prefix), which is quadratic in the number of keys: the supernet's 2,680 keys took 22 s of every
    resumed search (2 CPU cores). The keys and tensors do not change while it loads."""
    state = network.state_dict()
    network.state_dict = lambda *args, **kwargs: state
    try:
        yield
    finally:
        del network.state_dict


def save_atomically(save: Callable[[str], None], filename: str, is_writer: bool) -> None:
    """`save(path)` to a temporary name, then renamed: a kill mid-write never leaves a corrupt `filename`.

    nnU-Net's own `save_checkpoint` writes in place. Only the rank that writes (`is_writer`, rank 0) renames:
    another rank could catch the file mid-write.
    """
    partial = filename + ".partial"
    save(partial)
    if is_writer and os.path.isfile(partial):
        os.replace(partial, filename)
