"""Activation checkpointing per cell: the same outputs and gradients, cells recomputed only when training."""
import pytest
import torch

from nnunet_scnas import CELL_LAYOUT, CELL_TYPES, EDGES, OPS, SCNASSupernet, SCNASUNet, derive_genotype
from nnunet_scnas.cell import Cell

ANISOTROPIC = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]]
PATCH = (8, 16, 16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _supernet(mode):
    net = SCNASSupernet(1, 2, 4, ANISOTROPIC)
    net.mode = mode
    return net


def _derived():
    g = torch.Generator().manual_seed(0)
    genotype = derive_genotype({ct: torch.randn(len(EDGES), len(OPS), generator=g) for ct in CELL_TYPES})
    return SCNASUNet(input_channels=1, num_classes=2, deep_supervision=True, genotype=genotype.to_dict(),
                     stem_width=4, strides=ANISOTROPIC, cell_layout=CELL_LAYOUT)


BUILDERS = {"two_op": lambda: _supernet("two_op"), "all_ops": lambda: _supernet("all_ops"), "derived": _derived}


def _cells(net):
    return [cell for cell in list(net.encoder.cells) + list(net.decoder.cells) if isinstance(cell, Cell)]


def _run(net, x, checkpoint_cells):
    """Outputs and the gradient of every parameter (logits included) of one seeded forward and backward."""
    net.zero_grad(set_to_none=True)
    net.checkpoint_cells = checkpoint_cells
    net.generator = torch.Generator().manual_seed(5)  # the supernet's sample; the derived network ignores it
    out = net(x)
    sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in out).backward()
    return out, {name: p.grad for name, p in net.named_parameters()}


@pytest.mark.parametrize("network", BUILDERS)
def test_checkpointed_cells_give_the_same_outputs_and_gradients(network):
    torch.manual_seed(0)
    net = BUILDERS[network]().double().train()
    x = torch.randn(2, 1, *PATCH, dtype=torch.float64)
    calls = []
    for cell in _cells(net):
        cell.register_forward_pre_hook(lambda *_: calls.append(1))

    (plain_out, plain_grads), plain_calls = _run(net, x, False), len(calls)
    calls.clear()
    checkpointed_out, checkpointed_grads = _run(net, x, True)
    assert plain_calls == len(_cells(net)) and len(calls) == 2 * plain_calls  # each cell recomputed once

    for a, b in zip(checkpointed_out, plain_out, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert [n for n, g in plain_grads.items() if g is None] == [n for n, g in checkpointed_grads.items() if g is None]
    if network != "derived":
        assert all(plain_grads[f"alphas.{ct}"] is not None for ct in CELL_TYPES)
    for name, grad in plain_grads.items():
        if grad is not None:
            torch.testing.assert_close(checkpointed_grads[name], grad, rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize("training, grad", [(False, True), (True, False)])
def test_cells_are_not_checkpointed_outside_training(training, grad):
    net = _supernet("two_op").train(training)
    net.checkpoint_cells = True
    calls = []
    for cell in _cells(net):
        cell.register_forward_pre_hook(lambda *_: calls.append(1))
    with torch.set_grad_enabled(grad):
        out = net(torch.randn(1, 1, *PATCH))
    if grad:
        sum(o.sum() for o in out).backward()
    assert len(calls) == len(_cells(net))  # run once, never recomputed
