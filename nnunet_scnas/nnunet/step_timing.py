"""Seconds per training iteration on the device at hand (`nnunet-scnas estimate --time`, `benchmarks/gpu_check.py`).

A few real iterations on random data at a plan's patch and batch:
- a search iteration: weight step + architecture step on two-op samples, with both GradScalers on CUDA
  (`search/step.py`, exactly what the search trainer runs);
- nnUNetTrainer's iteration of a network: SGD (lr 1e-2, momentum 0.99, Nesterov), autocast and GradScaler on
  CUDA, gradient clipping at 12 (as `nnUNetTrainer.train_step`).
The loss is nnU-Net's (Dice + cross-entropy, deep supervision) on random labels at each output's size. Data
loading and augmentation are left out: nnU-Net's background workers overlap them with the GPU's work.
"""
import itertools
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from torch import nn

from nnunet_scnas.nnunet.search.state import make_search_optimizer
from nnunet_scnas.nnunet.search.step import search_iteration

WARMUP, TIMED = 1, 3  # iterations run before the clock starts (allocator, cuDNN's autotuning), and timed
GRAD_CLIP = 12.0  # nnU-Net's


def timing_device() -> torch.device:
    """The first GPU if there is one, else the CPU."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RandomLabelLoss(nn.Module):
    """nnU-Net's loss of a plain-label dataset, on random labels at each output's size: Dice + CE, deep-supervision
    weights halving per output, the lowest one 0 (`nnUNetTrainer._build_loss`). The target argument is ignored."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.loss = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                                   weight_ce=1, weight_dice=1, ignore_label=None,
                                   dice_class=MemoryEfficientSoftDiceLoss)

    def forward(self, outputs, _target=None):
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        targets = [torch.randint(0, self.num_classes, (o.shape[0], 1, *o.shape[2:]), device=o.device).float()
                   for o in outputs]
        weights = [1 / 2 ** i for i in range(len(outputs))]
        if len(weights) > 1:
            weights[-1] = 0
        return DeepSupervisionWrapper(self.loss, [w / sum(weights) for w in weights])(outputs, targets)


@dataclass
class TrainingStep:
    """One training iteration to time; `scales()` gives its GradScalers' scales (none off CUDA)."""
    run: Callable[[], None]
    scales: Callable[[], dict[str, float]]


def nnunet_step(network: nn.Module, batch_shape, num_classes: int, device: torch.device) -> TrainingStep:
    """nnUNetTrainer's iteration of `network` (already on `device`) on one random batch."""
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    loss, data = RandomLabelLoss(num_classes), torch.randn(*batch_shape, device=device)

    def run():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type) if device.type == "cuda" else nullcontext():
            value = loss(network(data))
        if scaler is None:
            value.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), GRAD_CLIP)
            optimizer.step()
        else:
            scaler.scale(value).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(network.parameters(), GRAD_CLIP)
            scaler.step(optimizer)
            scaler.update()
    return TrainingStep(run, lambda: {} if scaler is None else {"GradScaler": scaler.get_scale()})


def search_step(supernet: nn.Module, batch_shape, num_classes: int, device: torch.device,
                search_trainer) -> TrainingStep:
    """The search trainer's iteration (`search_iteration`) of `supernet` (on `device`, `memory_mode` set) with
    the optimizers, seed, tau and clipping of `search_trainer` (a search trainer class)."""
    optimizer = make_search_optimizer(supernet, search_trainer)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" else None
    loss = RandomLabelLoss(num_classes)
    batch = {"data": torch.randn(*batch_shape, device=device), "target": torch.zeros(1)}  # the loss draws labels
    supernet.mode, supernet.tau = "two_op", search_trainer.tau_start
    iterations = itertools.count()

    def run():
        search_iteration(supernet, loss, optimizer, batch, batch, search_trainer.search_seed, next(iterations),
                         search_trainer.grad_clip, scaler)

    def scales():
        if scaler is None:
            return {}
        return {"weight step GradScaler": scaler.get_scale(),
                "architecture step GradScaler": optimizer.architecture_scaler_for("cuda").get_scale()}
    return TrainingStep(run, scales)


def seconds_per_iteration(step: Callable[[], None], device: torch.device, warmup: int = WARMUP,
                          iterations: int = TIMED) -> float:
    """Mean seconds of `iterations` calls of `step` after `warmup` untimed ones (the device synchronised)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / iterations
