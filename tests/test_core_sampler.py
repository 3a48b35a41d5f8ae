"""The two-op Gumbel sampler (paper Algorithm 1), its ablations and the temperature schedule."""
from itertools import combinations

import pytest
import torch

from nnunet_scnas.sampler import argmax_weights, sample_two_ops, softmax_weights, tau_schedule

K = 8
PAIRS = list(combinations(range(K), 2))


def _generator(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("tau", [5.0, 1.0, 0.3])
@pytest.mark.parametrize("scale", [0.0, 1.0, 4.0])
def test_rows_have_two_nonzeros_summing_to_one(tau, scale):
    logits = scale * torch.randn(500, K, generator=_generator(0))
    w = sample_two_ops(logits, tau, _generator(1))
    assert w.shape == logits.shape
    assert torch.all((w != 0).sum(dim=1) == 2)
    assert torch.allclose(w.sum(dim=1), torch.ones(500))
    assert torch.all(w >= 0)


def test_pair_frequencies_match_expected_q():
    # rows are independent draws, so 40000 copies of one logits row give 40000 samples of its pair;
    # the pair probability is q = (z_o1 + z_o2) / (K - 1) averaged over the Gumbel noise in z
    row, tau, draws = torch.tensor([1.5, 0.0, -1.0, 0.5, 2.0, -0.5, 0.0, 1.0]), 1.0, 40000
    w = sample_two_ops(row.expand(draws, K), tau, _generator(2))
    index = {pair: p for p, pair in enumerate(PAIRS)}
    observed = torch.bincount(torch.tensor([index[tuple(r.nonzero().flatten().tolist())] for r in w]),
                              minlength=len(PAIRS)).double()

    g = -torch.log(-torch.log(torch.rand(400000, K, generator=_generator(3), dtype=torch.float64)))
    z = torch.softmax((row.double() + g) / tau, dim=1)
    expected_q = torch.stack([(z[:, i] + z[:, j]) / (K - 1) for i, j in PAIRS], dim=1).mean(dim=0)
    assert torch.isclose(expected_q.sum(), torch.tensor(1.0, dtype=torch.float64))
    chi_square = float(((observed - draws * expected_q) ** 2 / (draws * expected_q)).sum())
    assert chi_square < 55.5  # 27 degrees of freedom: p < 0.002 above this
    # and it is not uniform: the strongest pair (ops 0 and 4) is drawn clearly more often than the weakest
    assert observed[index[(0, 4)]] > 1.5 * observed[index[(2, 5)]]


def test_weights_are_the_renormalised_gumbel_softmax():
    # the Gumbel noise is the generator's first draw: rebuild z and check w = z_pair / sum(z_pair), values and
    # gradients to the logits in float64 (the sampler computes it as a 2-way softmax of the noisy logits)
    logits, tau = torch.randn(50, K, generator=_generator(4), dtype=torch.float64).requires_grad_(), 0.7
    probe = torch.randn(50, K, generator=_generator(6), dtype=torch.float64)
    w = sample_two_ops(logits, tau, _generator(5))
    (grad,) = torch.autograd.grad((w * probe).sum(), logits)
    gumbel = -torch.log(-torch.log(torch.rand(50, K, generator=_generator(5)))).double()
    picked = torch.softmax((logits + gumbel) / tau, dim=1) * (w != 0)
    reference = picked / picked.sum(dim=1, keepdim=True)
    (reference_grad,) = torch.autograd.grad((reference * probe).sum(), logits)
    torch.testing.assert_close(w, reference, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, reference_grad, rtol=0, atol=1e-12)


def test_same_seed_same_sample_other_seed_other_sample():
    logits = torch.randn(14, K, generator=_generator(6))
    assert torch.equal(sample_two_ops(logits, 1.0, _generator(7)), sample_two_ops(logits, 1.0, _generator(7)))
    assert not torch.equal(sample_two_ops(logits, 1.0, _generator(7)), sample_two_ops(logits, 1.0, _generator(8)))


def test_gradient_reaches_logits():
    logits = torch.randn(14, K, generator=_generator(9)).requires_grad_()
    w = sample_two_ops(logits, 1.0, _generator(10))
    (w * torch.randn(14, K, generator=_generator(11))).sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert torch.count_nonzero(logits.grad.abs().sum(dim=1)) == 14  # every edge's logits get gradient


def test_tiny_temperature_and_large_logit_gaps_stay_finite():
    # tau 1e-4 and logit gaps of tens of units: every z but the largest underflows to 0, and so does the weaker
    # op's weight in its pair; weights and gradients must stay finite (no 0 / 0, no 1 / subnormal)
    logits = (30.0 * torch.randn(200, K, generator=_generator(14))).requires_grad_()
    w = sample_two_ops(logits, 1e-4, _generator(15))
    assert torch.isfinite(w).all() and torch.allclose(w.sum(dim=1), torch.ones(200))
    assert torch.all((w != 0).sum(dim=1) >= 1) and torch.all((w != 0).sum(dim=1) <= 2)
    (w * torch.randn(200, K, generator=_generator(16))).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_low_temperature_concentrates_on_one_op():
    logits = torch.randn(2000, K, generator=_generator(12))
    hot, cold = (sample_two_ops(logits, tau, _generator(13)).max(dim=1).values.mean() for tau in (5.0, 0.1))
    assert hot < 0.75 < 0.95 < cold


@pytest.mark.parametrize("bad", [dict(logits=torch.zeros(3), tau=1.0), dict(logits=torch.zeros(3, 8), tau=0.0)])
def test_sampler_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        sample_two_ops(**bad)


def test_softmax_and_argmax_weights():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    assert torch.allclose(softmax_weights(logits), torch.softmax(logits, dim=1))
    assert torch.equal(argmax_weights(logits), torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))


@pytest.mark.parametrize("epoch, num_epochs, expected", [
    (0, 200, 5.0), (199, 200, 0.5), (500, 200, 0.5), (-3, 200, 5.0),
    (100, 201, (5.0 * 0.5) ** 0.5),  # halfway: the geometric mean
    (0, 1, 5.0)])
def test_tau_schedule_values(epoch, num_epochs, expected):
    assert tau_schedule(epoch, num_epochs) == pytest.approx(expected)


def test_tau_schedule_decreases_and_is_configurable():
    taus = [tau_schedule(e, 50, tau_start=10.0, tau_end=0.1) for e in range(50)]
    assert taus[0] == pytest.approx(10.0) and taus[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(taus, taus[1:]))


@pytest.mark.parametrize("kwargs", [dict(tau_start=0.5, tau_end=1.0), dict(tau_end=0.0), dict(num_epochs=0)])
def test_tau_schedule_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        tau_schedule(**{"epoch": 0, "num_epochs": 10, **kwargs})
