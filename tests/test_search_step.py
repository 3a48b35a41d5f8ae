"""One search iteration in one process: the two steps' memory savers compute the straightforward gradients (float64),
leave no gradient on the other step's parameters and no flag changed (also when a step raises); each step has its
own GradScaler, checkpointed with the search state; checkpoints of the old cell layout are refused.

The multi-process side (DDP, gloo) is `test_ddp_search.py`.
"""
import pytest
import torch

from nnunet_scnas.cell import CELL_LAYOUT
from nnunet_scnas.errors import UserError
from nnunet_scnas.genotype import SEARCH_SPACE_ID
from nnunet_scnas.nnunet.search.checkpoint import FRESH_START, check_search_checkpoint, state_dict_taken_once
from nnunet_scnas.nnunet.search.state import SearchOptimizer
from nnunet_scnas.nnunet.search.step import ARCHITECTURE_STEP, WEIGHT_STEP, sample_generator, search_iteration
from nnunet_scnas.nnunet.training.plateau import PlateauSchedule
from nnunet_scnas.supernet import SCNASSupernet

STRIDES = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
PATCH = 16
SEED = 3
NO_CLIPPING = 1e9  # clip_grad_norm_ then multiplies by exactly 1


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _supernet(dtype=torch.float64, width=4) -> SCNASSupernet:
    torch.manual_seed(0)
    return SCNASSupernet(1, 2, width, STRIDES).to(dtype).train()


def _batch(seed: int, dtype=torch.float64) -> dict:
    """A batch of 1 case with a regression target per deep-supervision output (full, /2, /4)."""
    g = torch.Generator().manual_seed(seed)
    return {"data": torch.randn(1, 1, PATCH, PATCH, PATCH, generator=g, dtype=dtype),
            "target": [torch.randn(1, 2, PATCH // s, PATCH // s, PATCH // s, generator=g, dtype=dtype)
                       for s in (1, 2, 4)]}


def _loss(outputs, targets):  # nnU-Net-free: squared error at every deep-supervision output
    return sum((o - t).square().mean() for o, t in zip(outputs, targets, strict=True))


def _optimizer(supernet: SCNASSupernet, lr: float = 0.0) -> SearchOptimizer:
    # lr 0 (the default): the parameters stay as they were, so the gradients can be recomputed afterwards
    weights = torch.optim.SGD(supernet.weight_parameters(), lr=lr)
    return SearchOptimizer(weights, torch.optim.SGD(supernet.arch_parameters(), lr=lr),
                           PlateauSchedule(weights, patience=20, factor=0.1))


def _straightforward_gradients(batch: dict, step: int) -> dict:
    """Every parameter's gradient without the savers, for the step's own sample (iteration 0): edge weights with
    their graph, nothing frozen, no checkpointing, one plain backward over all parameters, on the initial
    supernet (which lr 0 leaves as it was)."""
    reference = _supernet()
    reference.generator = sample_generator(SEED, 0, step)
    _loss(reference(batch["data"]), batch["target"]).backward()
    return {name: p.grad for name, p in reference.named_parameters()}


def _record_steps(supernet: SCNASSupernet, optimizer: SearchOptimizer) -> list[dict]:
    """Per step: arch_grad and which parameters required a gradient in its forward, and every gradient the
    step's optimizer found (after clipping, which NO_CLIPPING makes exact)."""
    steps = []
    weights = supernet.weight_parameters()
    supernet.register_forward_pre_hook(lambda module, _: steps.append({
        "arch_grad": module.arch_grad, "weights_trainable": any(p.requires_grad for p in weights),
        "logits_trainable": all(p.requires_grad for p in module.arch_parameters())}))

    def received(*_):
        steps[-1]["gradients"] = {name: None if p.grad is None else p.grad.clone()
                                  for name, p in supernet.named_parameters()}
    optimizer.weights.register_step_pre_hook(received)
    optimizer.architecture.register_step_pre_hook(received)
    return steps


@pytest.mark.parametrize("memory_mode", ["plain", "lean", "cells"])
def test_savers_compute_the_straightforward_gradients(memory_mode):
    supernet = _supernet()
    supernet.memory_mode = memory_mode
    optimizer = _optimizer(supernet)
    steps = _record_steps(supernet, optimizer)
    weight_batch, architecture_batch = _batch(1), _batch(2)
    search_iteration(supernet, _loss, optimizer, weight_batch, architecture_batch, SEED, 0, NO_CLIPPING)

    # weight step: edge weights as constants; architecture step: weights frozen, logits trained
    assert [(s["arch_grad"], s["weights_trainable"], s["logits_trainable"]) for s in steps] == \
        [(False, True, True), (True, False, True)]
    # and afterwards nothing is left changed
    assert supernet.arch_grad and all(p.requires_grad for p in supernet.parameters())

    logits = {f"alphas.{ct}" for ct in supernet.alphas}
    for step, batch, trained in ((WEIGHT_STEP, weight_batch, lambda name: name not in logits),
                                 (ARCHITECTURE_STEP, architecture_batch, lambda name: name in logits)):
        found, expected = steps[step]["gradients"], _straightforward_gradients(batch, step)
        assert all(g is None for name, g in found.items() if not trained(name))  # the other step's parameters
        assert [n for n, g in found.items() if g is None] == [n for n, g in expected.items()
                                                              if g is None or not trained(n)]
        assert any(g is not None for g in found.values())
        scale = max(float(g.abs().max()) for name, g in expected.items() if g is not None and trained(name))
        for name, g in found.items():
            if g is not None:
                torch.testing.assert_close(g, expected[name], rtol=1e-12, atol=1e-12 * scale, msg=name)


class _RaisingLoss:
    """`_loss`, but the call number `at` (0: weight step, 1: architecture step) raises after its forward."""

    def __init__(self, at: int):
        self.at, self.calls = at, 0

    def __call__(self, outputs, targets):
        self.calls += 1
        if self.calls - 1 == self.at:
            raise RuntimeError("loss failed")
        return _loss(outputs, targets)


@pytest.mark.parametrize("step", [WEIGHT_STEP, ARCHITECTURE_STEP])
def test_a_step_that_raises_leaves_no_flag_changed(step):
    supernet = _supernet(torch.float32)
    with pytest.raises(RuntimeError, match="loss failed"):
        search_iteration(supernet, _RaisingLoss(step), _optimizer(supernet), _batch(1, torch.float32),
                         _batch(2, torch.float32), SEED, 0, NO_CLIPPING)
    assert supernet.arch_grad and all(p.requires_grad for p in supernet.parameters())


class _OverflowingLoss:
    """`_loss`, times infinity in the step `at` (0: weight step, 1: architecture step)."""

    def __init__(self, at: int):
        self.at, self.calls = at, 0

    def __call__(self, outputs, targets):
        self.calls += 1
        return _loss(outputs, targets) * (float("inf") if self.calls - 1 == self.at else 1.0)


@pytest.mark.parametrize("overflowing", [WEIGHT_STEP, ARCHITECTURE_STEP])
def test_an_overflow_lowers_the_scale_of_its_own_step_only(overflowing):
    supernet = _supernet(torch.float32)
    optimizer = _optimizer(supernet, lr=0.1)
    before = {name: p.detach().clone() for name, p in supernet.named_parameters()}
    weight_scaler = torch.amp.GradScaler("cpu")  # as nnU-Net's CUDA one; the step autocasts on CUDA only
    search_iteration(supernet, _OverflowingLoss(overflowing), optimizer, _batch(1, torch.float32),
                     _batch(2, torch.float32), SEED, 0, NO_CLIPPING, weight_scaler)

    scalers = {WEIGHT_STEP: weight_scaler, ARCHITECTURE_STEP: optimizer.architecture_scaler}
    assert scalers[ARCHITECTURE_STEP] is not weight_scaler
    initial = torch.amp.GradScaler("cpu").get_scale()
    assert {step: s.get_scale() for step, s in scalers.items()} == \
        {step: initial / 2 if step == overflowing else initial for step in scalers}
    # the overflowing step was skipped, the other one stepped
    moved = {name for name, p in supernet.named_parameters() if not torch.equal(p, before[name])}
    logits = {f"alphas.{ct}" for ct in supernet.alphas}
    assert (moved & logits == set()) == (overflowing == ARCHITECTURE_STEP)
    assert (moved - logits == set()) == (overflowing == WEIGHT_STEP)

    # the architecture scaler travels in the search state, into a scaler made on first use after loading
    state = optimizer.state_dict()
    assert state["cell_layout"] == CELL_LAYOUT
    resumed = _optimizer(supernet)
    resumed.load_state_dict(state)
    assert resumed.architecture_scaler_for("cpu").get_scale() == optimizer.architecture_scaler.get_scale()
    assert resumed.state_dict()["architecture_scaler"] == state["architecture_scaler"]


def test_search_state_without_an_architecture_scaler_loads():
    supernet = _supernet(torch.float32)
    state = _optimizer(supernet).state_dict()
    assert state["architecture_scaler"] is None  # on the CPU neither step scales
    del state["architecture_scaler"]  # as written before the architecture step had its own
    resumed = _optimizer(supernet)
    resumed.load_state_dict(state)
    assert resumed.architecture_scaler_for("cpu").get_scale() == torch.amp.GradScaler("cpu").get_scale()


DATASET = "Dataset951_SimBrainTumour"


def _checkpoint(supernet: SCNASSupernet, dataset: str = DATASET, **optimizer_state) -> dict:
    """What nnU-Net's save_checkpoint writes for a search (the parts the checks read)."""
    return {"network_weights": supernet.state_dict(), "trainer_name": "nnUNetTrainerSCNASSearch",
            "init_args": {"plans": {"dataset_name": dataset}},
            "optimizer_state": {**_optimizer(supernet).state_dict(), **optimizer_state}}


@pytest.mark.parametrize("cell_layout, message", [
    (None, "written by a version with the old cell layout (nodes as wide as the cell): the genotype stays valid, "
           "the supernet's weights do not"),
    ("projected_concat", f"written with cell layout 'projected_concat', this version builds '{CELL_LAYOUT}'")])
@pytest.mark.parametrize("width", [4, 8])  # 8: refused for its layout before its shapes are compared
def test_checkpoint_of_another_cell_layout_is_refused(cell_layout, message, width):
    checkpoint = _checkpoint(_supernet(torch.float32, width), cell_layout=cell_layout)
    if cell_layout is None:
        del checkpoint["optimizer_state"]["cell_layout"]
    with pytest.raises(UserError) as error:
        check_search_checkpoint(checkpoint, _supernet(torch.float32), DATASET)
    assert message in str(error.value) and str(error.value).endswith(FRESH_START) and "\n" not in str(error.value)


def test_checkpoint_of_another_dataset_is_refused_even_with_the_same_shapes():
    supernet = _supernet(torch.float32)
    with pytest.raises(UserError) as error:
        check_search_checkpoint(_checkpoint(supernet, dataset="Dataset002_Heart"), supernet, DATASET)
    message = str(error.value)
    assert f"search of dataset Dataset002_Heart, not of {DATASET}" in message and message.endswith(FRESH_START)
    assert "\n" not in message


def test_checkpoint_of_this_layout_and_supernet_is_accepted():
    supernet = _supernet(torch.float32)
    checkpoint = _checkpoint(supernet)
    assert checkpoint["optimizer_state"]["search_space"] == SEARCH_SPACE_ID
    check_search_checkpoint(checkpoint, supernet, DATASET)


def test_state_dict_taken_once_serves_one_state_dict_while_nnunet_loads_then_the_method_again():
    supernet = _supernet(torch.float32)
    with state_dict_taken_once(supernet):
        served = supernet.state_dict()
        assert supernet.state_dict() is served
        assert served.keys() == type(supernet).state_dict(supernet).keys()
    assert "state_dict" not in vars(supernet) and supernet.state_dict() is not served
