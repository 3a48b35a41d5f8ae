"""Edge weights from architecture logits: the paper's two-op Gumbel sampler and its two ablations.

Every function maps logits `[E, K]` (E edges, K ops in `OPS` order) to weights `[E, K]`; a cell computes
only the ops whose weight is non-zero. All are pure functions of their arguments.
"""
import math
from collections.abc import Sequence
from itertools import combinations

import torch

TAU_START = 5.0
TAU_END = 0.5


def _gumbel(shape, generator: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(shape, generator=generator)
    return -torch.log(-torch.log(u.clamp(torch.finfo(u.dtype).tiny, 1.0 - 1e-7)))


def sample_two_ops(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Algorithm 1 of the paper (§2.2): sample two ops per edge, weighted by their renormalised Gumbel-softmax.

    Args:
        logits: `[E, K]` architecture logits alpha, one row per edge.
        tau: Gumbel-softmax temperature (> 0); small tau concentrates the weight on one of the two ops.
        generator: a CPU generator for the Gumbel noise and the pairs (seeded: a reproducible sample, for
            logits on any device); None uses torch's default CPU generator.

    Returns:
        `[E, K]` weights: per row the sampled pair {o1, o2}, drawn with probability
        q = (z_o1 + z_o2) / (K - 1) where z = softmax(y), y = (logits + g) / tau, g ~ Gumbel(0, 1), gets
        (z_o1, z_o2) / (z_o1 + z_o2), computed as the 2-way softmax of (y_o1, y_o2): the same numbers, without
        dividing by a z_o1 + z_o2 that underflows at a small tau. Every other entry is exactly 0.
    """
    return sample_two_ops_each([logits], tau, generator)[0][0]


def sample_two_ops_each(logits: Sequence[torch.Tensor], tau: float, generator: torch.Generator | None = None
                        ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`sample_two_ops` for several logits tensors in turn (the same draws), with one host round trip in all.

    Returns per logits tensor its weights (on the logits' device) and the sampled pairs' mask `[E, K]` on the
    CPU: which ops a cell runs, known without asking the device again.
    """
    for alpha in logits:
        if alpha.dim() != 2 or alpha.shape[1] < 2:
            raise ValueError(f"logits must be [edges, ops] with at least 2 ops, got shape {tuple(alpha.shape)}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU generator, got one on {generator.device}")
    # the pairs are drawn on the CPU (one seed, one sample, whatever the device), from a copy of all logits
    # fetched at once: the forward's only wait for the device
    on_host = torch.cat([alpha.detach().flatten() for alpha in logits]).cpu().split([a.numel() for a in logits])
    sampled = []
    for alpha, host in zip(logits, on_host):
        gumbel = _gumbel(alpha.shape, generator)
        mask = _draw_pairs((host.view(alpha.shape) + gumbel.to(host.dtype)) / tau, generator)
        # the gradient reaches the logits through the pair's noisy logits y; the pair choice (q) is not differentiated
        y = (alpha + gumbel.to(device=alpha.device, dtype=alpha.dtype)) / tau
        sampled.append((torch.softmax(y.masked_fill(~mask.to(y.device), -math.inf), dim=-1), mask))
    return sampled


def _draw_pairs(y: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """`[E, K]` bool, True at the pair drawn for each edge with probability q (see `sample_two_ops`); y on the CPU."""
    num_edges, num_ops = y.shape
    pairs = torch.tensor(list(combinations(range(num_ops), 2)))  # [P, 2], P = K (K - 1) / 2
    z = torch.softmax(y, dim=-1)
    q = (z[:, pairs[:, 0]] + z[:, pairs[:, 1]]) / (num_ops - 1)  # [E, P], rows sum to 1
    chosen = pairs[torch.multinomial(q, 1, generator=generator).squeeze(1)]  # [E, 2]
    mask = torch.zeros(num_edges, num_ops, dtype=torch.bool)
    mask[torch.arange(num_edges).unsqueeze(1), chosen] = True
    return mask


def softmax_weights(logits: torch.Tensor) -> torch.Tensor:
    """All ops, weighted by softmax(logits): the DARTS mixture, for ablation and the cost benchmark."""
    return torch.softmax(logits, dim=-1)


def argmax_weights(logits: torch.Tensor) -> torch.Tensor:
    """One op per edge, the argmax, with weight 1 (no gradient): the current architecture."""
    return torch.nn.functional.one_hot(logits.detach().argmax(dim=-1), logits.shape[-1]).to(logits.dtype)


def tau_schedule(epoch: int, num_epochs: int, tau_start: float = TAU_START, tau_end: float = TAU_END) -> float:
    """Temperature for `epoch` (0-based): geometric decay from `tau_start` at epoch 0 to `tau_end` at the last.

    The paper anneals tau but gives no schedule. Geometric decay (as in GDAS' spirit, which anneals
    10 -> 0.1) spends equally many epochs per halving of tau, and the sharpness of softmax((alpha + g) / tau)
    depends on the ratio of logit gaps to tau. At tau = 5 the sample is nearly uniform over the ops, so every
    op is trained early; at tau = 0.5 a logit gap of a few units already puts almost all weight on one op of
    the sampled pair, so the two-op sample approaches the one-op architecture that is finally derived.
    Epochs past the end keep `tau_end`.
    """
    if not 0 < tau_end <= tau_start:
        raise ValueError(f"need 0 < tau_end <= tau_start, got tau_start={tau_start}, tau_end={tau_end}")
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1, got {num_epochs}")
    progress = min(max(epoch, 0), num_epochs - 1) / max(num_epochs - 1, 1)
    return tau_start * math.exp(progress * math.log(tau_end / tau_start))
