"""Host round trips: the supernet's forward waits for the device once (its sampler), the derived network never,
nor the supernet evaluating a given genotype.

Counted on the "meta" device, where a tensor has no values: every read of one from the host (`.tolist()`,
`.item()`, `bool()`, a copy to the CPU) fails, except `.cpu()`, which the test counts and answers with zeros.
"""
import pytest
import torch

from nnunet_scnas import CELL_LAYOUT, CELL_TYPES, EDGES, OPS, SCNASSupernet, SCNASUNet, derive_genotype
from nnunet_scnas.macro import MEMORY_MODES
from nnunet_scnas.sampler import sample_two_ops, sample_two_ops_each

STRIDES = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def round_trips(monkeypatch):
    """The number of copies from the meta device to the host so far (a one-element list)."""
    count = [0]
    cpu = torch.Tensor.cpu

    def counted(tensor, *args, **kwargs):
        if tensor.device.type != "meta":
            return cpu(tensor, *args, **kwargs)
        count[0] += 1
        return torch.zeros(tensor.shape, dtype=tensor.dtype)

    monkeypatch.setattr(torch.Tensor, "cpu", counted)
    return count


def _train_step(net):
    net.train()
    outputs = net(torch.randn(2, 1, 16, 16, 16, device="meta"))
    sum(out.sum() for out in outputs).backward()


@pytest.mark.parametrize("memory_mode", MEMORY_MODES)
@pytest.mark.parametrize("mode", ["two_op", "all_ops", "argmax"])
def test_the_supernet_waits_for_the_device_once_per_forward(round_trips, mode, memory_mode):
    with torch.device("meta"):
        net = SCNASSupernet(1, 2, 4, STRIDES)
    net.mode, net.memory_mode = mode, memory_mode
    net.generator = torch.Generator().manual_seed(0)
    for step in range(2):  # checkpointed recomputations in the backward pass ask nothing again
        _train_step(net)
        assert round_trips[0] == step + 1
    assert all(w.device.type == "meta" for w in net.last_weights.values())


@pytest.mark.parametrize("memory_mode", MEMORY_MODES)
def test_the_derived_network_never_waits_for_the_device(round_trips, memory_mode):
    genotype = derive_genotype({ct: torch.randn(len(EDGES), len(OPS)) for ct in CELL_TYPES})
    with torch.device("meta"):
        net = SCNASUNet(input_channels=1, num_classes=2, deep_supervision=True, genotype=genotype.to_dict(),
                        stem_width=4, strides=STRIDES, cell_layout=CELL_LAYOUT, memory_mode=memory_mode)
    _train_step(net)
    assert round_trips[0] == 0


def test_the_supernet_evaluating_a_given_genotype_never_waits_for_the_device(round_trips):
    genotype = derive_genotype({ct: torch.randn(len(EDGES), len(OPS)) for ct in CELL_TYPES})
    with torch.device("meta"):
        net = SCNASSupernet(1, 2, 4, STRIDES)
    with net.evaluating(genotype):  # the ranking check: the ops to run come from the genotype, on the host
        _train_step(net)
    assert round_trips[0] == 0


def test_sampling_all_cell_types_at_once_draws_what_sampling_them_in_turn_draws():
    logits = [torch.randn(len(EDGES), len(OPS)) * scale for scale in (0.1, 1.0, 3.0, 10.0)]
    at_once = sample_two_ops_each(logits, 0.7, torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    for alpha, (weights, mask) in zip(logits, at_once):
        assert torch.equal(weights, sample_two_ops(alpha, 0.7, generator))
        assert mask.device.type == "cpu" and torch.equal(mask, weights != 0)
