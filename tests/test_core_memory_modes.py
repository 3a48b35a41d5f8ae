"""Memory modes (plain, lean, cells): the same outputs and gradients in float64, recomputation only when training."""
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


def _run(net, x, mode):
    """Outputs and the gradient of every parameter (logits included) of one seeded forward and backward."""
    net.zero_grad(set_to_none=True)
    net.memory_mode = mode
    net.generator = torch.Generator().manual_seed(5)  # the supernet's sample; the derived network ignores it
    out = net(x)
    sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in out).backward()
    return out, {name: p.grad for name, p in net.named_parameters()}


def _count_calls(modules) -> list:
    calls = []
    for module in modules:
        module.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("mode", ["lean", "cells"])
@pytest.mark.parametrize("network", BUILDERS)
def test_memory_modes_give_the_plain_outputs_and_gradients(network, mode):
    torch.manual_seed(0)
    net = BUILDERS[network]().double().train()
    x = torch.randn(2, 1, *PATCH, dtype=torch.float64)
    # in "lean" the learned ops (their weight gradients need their inputs; a parameter-free op such as the
    # identity may need nothing recomputed)
    recomputed = _cells(net) if mode == "cells" else [net.encoder.stem, *(
        op for cell in _cells(net) for ops in cell.edges.values() for op in ops.values()
        if any(True for _ in op.parameters()))]
    calls = _count_calls(recomputed)

    (plain_out, plain_grads), plain_calls = _run(net, x, "plain"), len(calls)
    calls.clear()
    mode_out, mode_grads = _run(net, x, mode)
    assert plain_calls > 0 and len(calls) == 2 * plain_calls  # each region recomputed once in the backward

    for a, b in zip(mode_out, plain_out, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert [n for n, g in plain_grads.items() if g is None] == [n for n, g in mode_grads.items() if g is None]
    if network != "derived":
        assert all(plain_grads[f"alphas.{ct}"] is not None for ct in CELL_TYPES)
    for name, grad in plain_grads.items():
        if grad is not None:
            torch.testing.assert_close(mode_grads[name], grad, rtol=1e-12, atol=1e-12)  # float64 rounding


def test_the_lean_mode_keeps_only_dense_convolutions_of_a_region():
    """What autograd keeps of a lean region: its input and its dense convs' outputs; no max-pool indices, no
    activation, no depthwise or 1x1x1 conv output."""
    from nnunet_scnas.ops import build_op
    from nnunet_scnas.lean import recompute_cheap
    from nnunet_scnas.memory import trace_forward
    x_shape = (1, 4, 8, 8, 8)
    for name, kept_tensors in (("max_pool_3x3x3", 0), ("dil_sep_conv_3x3x3_r2", 0), ("conv_3x3x3", 1)):
        op = build_op(name, 4).double()

        def step():
            x = torch.randn(*x_shape, dtype=torch.float64, requires_grad=True)
            return x, recompute_cheap(op, x)
        kept = trace_forward(step).alive - 2 * 8 * 8 * 8 * 4 * 8  # less the input and the output
        assert kept == kept_tensors * 8 * 8 * 8 * 4 * 8, name

@pytest.mark.parametrize("mode", ["lean", "cells"])
@pytest.mark.parametrize("training, grad", [(False, True), (True, False)])
def test_nothing_is_recomputed_outside_training(training, grad, mode):
    net = _supernet("two_op").train(training)
    net.memory_mode = mode
    calls = _count_calls(_cells(net))
    with torch.set_grad_enabled(grad):
        out = net(torch.randn(1, 1, *PATCH))
    if grad:
        sum(o.sum() for o in out).backward()
    assert len(calls) == len(_cells(net))  # run once, never recomputed


def test_checkpoint_cells_is_the_boolean_form_of_the_cells_mode():
    net = _derived()
    net.checkpoint_cells = True
    assert net.memory_mode == "cells" and net.checkpoint_cells
    net.memory_mode = "lean"
    assert not net.checkpoint_cells
    with pytest.raises(ValueError, match="plain, lean, cells"):
        net.memory_mode = "tiny"
