"""Multi-GPU search, checked on the CPU: two `gloo` processes run the trainer's own search iterations under DDP.

nnU-Net's launcher (`-num_gpus`) needs CUDA and NCCL, so this tests our part directly: the supernet wrapped as
the trainer wraps it (nnU-Net's plain DDP, then `allow_unused_parameters`), nnU-Net's loss built for DDP, and
`search_iteration`, the function the trainer's `train_step` calls. Last, the retrained (derived) network, which
stock nnUNetTrainer wraps in plain DDP: every parameter must get a gradient.
"""
import json
import socket
from contextlib import contextmanager

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from torch.nn.parallel import DistributedDataParallel as DDP

from nnunet_scnas.cell import CELL_LAYOUT
from nnunet_scnas.derived import SCNASUNet
from nnunet_scnas.genotype import CELL_TYPES, Genotype
from nnunet_scnas.locations import plans_dir
from nnunet_scnas.nnunet.search.state import SearchOptimizer, seed_everything
from nnunet_scnas.nnunet.search.step import allow_unused_parameters, search_iteration
from nnunet_scnas.nnunet.training.plateau import PlateauSchedule
from nnunet_scnas.supernet import SCNASSupernet

from helpers import random_genotype, reading_only

WORLD_SIZE = 2
ITERATIONS = 3
SEED = 7
STRIDES = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
PATCH = 16
# "trainer": the search trainer's float32 supernet and Adam pair. "sgd64": float64 and SGD with momentum, for
# the comparison with a single process (see the last test for why)
KINDS = ("trainer", "sgd64")


@contextmanager
def _one_thread():
    # tiny volumes: one thread is as fast, and does not collapse when other jobs share the cores
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def one_thread():
    with _one_thread():
        yield


def _global_batches():
    """Per iteration a weight batch and an architecture batch of WORLD_SIZE cases; rank r trains on case r."""
    g = torch.Generator().manual_seed(SEED)
    batches = []
    for _ in range(2 * ITERATIONS):
        data = torch.randn(WORLD_SIZE, 1, PATCH, PATCH, PATCH, generator=g)
        seg = (data + 0.5 * torch.randn(data.shape, generator=g) > 0.3).float()  # a label that follows the image
        batches.append({"data": data, "target": [seg, seg[..., ::2, ::2, ::2], seg[..., ::4, ::4, ::4]]})
    return [(batches[2 * i], batches[2 * i + 1]) for i in range(ITERATIONS)]


def _cases(batch, index, dtype):
    return {"data": batch["data"][index].to(dtype), "target": [t[index] for t in batch["target"]]}


def _loss(ddp: bool):
    # nnU-Net's `_build_loss` for these plans under DDP: batch Dice (its sums all-gathered across ranks) + CE,
    # deep-supervision weights 1, 1/2 and 1e-6 (nnU-Net's DDP value for the lowest output), normalised
    loss = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": ddp}, {}, weight_ce=1,
                          weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    weights = torch.tensor([1, 0.5, 1e-6])
    return DeepSupervisionWrapper(loss, (weights / weights.sum()).tolist())


def _optimizer(supernet: SCNASSupernet, kind: str) -> SearchOptimizer:
    if kind == "trainer":
        weights = torch.optim.Adam(supernet.weight_parameters(), 0.025, betas=(0.1, 0.001))
        architecture = torch.optim.Adam(supernet.arch_parameters(), 3e-3, betas=(0.5, 0.999))
    else:
        weights = torch.optim.SGD(supernet.weight_parameters(), lr=0.1, momentum=0.9)
        architecture = torch.optim.SGD(supernet.arch_parameters(), lr=1.0, momentum=0.9)
    return SearchOptimizer(weights, architecture, PlateauSchedule(weights, patience=20, factor=0.1))


def _build_supernet(kind: str) -> SCNASSupernet:
    seed_everything(SEED)  # as the trainer's initialize: the same initial supernet on every rank
    supernet = SCNASSupernet(1, 2, stem_width=4, strides=STRIDES)
    return supernet.double() if kind == "sgd64" else supernet


def _search(network, supernet: SCNASSupernet, loss, cases: slice, kind: str) -> dict:
    """The trainer's search iterations on the given cases of every batch, recording per step (weight step,
    architecture step, ...) the sample, the gradients the optimizer stepped with and the parameters outside that
    optimizer that hold a gradient anyway (none may: each step computes its own parameters' gradients only)."""
    optimizer, dtype = _optimizer(supernet, kind), supernet.alphas["reduction"].dtype
    names = {p: name for name, p in supernet.named_parameters()}
    record = {"samples": [], "gradients": [], "foreign_gradients": [], "losses": [], "alphas": []}
    supernet.register_forward_hook(lambda module, *_: record["samples"].append(module.last_weights))

    def received(step_optimizer, *_):  # DDP-averaged and clipped: what the step is made of
        stepped = [p for group in step_optimizer.param_groups for p in group["params"]]
        record["gradients"].append({names[p]: None if p.grad is None else p.grad.clone() for p in stepped})
        record["foreign_gradients"].append([name for p, name in names.items()
                                            if p.grad is not None and all(p is not q for q in stepped)])

    optimizer.weights.register_step_pre_hook(received)
    optimizer.architecture.register_step_pre_hook(received)
    for iteration, (weight_batch, architecture_batch) in enumerate(_global_batches()):
        record["losses"] += [float(value) for value in search_iteration(
            network, loss, optimizer, _cases(weight_batch, cases, dtype), _cases(architecture_batch, cases, dtype),
            SEED, iteration, grad_clip=12.0)]
        record["alphas"].append({ct: supernet.alphas[ct].detach().clone() for ct in CELL_TYPES})
    record["weights"] = {name: value.clone() for name, value in supernet.state_dict().items()}
    record["genotype"] = supernet.genotype()
    record["frozen"] = [name for name, p in supernet.named_parameters() if not p.requires_grad]
    return record


def _rank(rank: int, port: int, folder):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        result = {}
        for kind in KINDS:
            supernet = _build_supernet(kind)
            network = allow_unused_parameters(DDP(supernet))  # as nnU-Net wraps it, then the trainer
            result[kind] = _search(network, supernet, _loss(ddp=True), slice(rank, rank + 1), kind)
        torch.save(result, folder / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both ranks of a two-process DDP search per optimizer kind, and one process with the doubled batch."""
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank, args=(_free_port(), folder), nprocs=WORLD_SIZE)
    ranks = [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]
    with _one_thread():
        supernet = _build_supernet("sgd64")
        single = _search(supernet, supernet, _loss(ddp=False), slice(0, WORLD_SIZE), "sgd64")
    return ranks, single


def _same_gradients(a: dict, b: dict, tolerance: float) -> None:
    """The same parameters without gradient; the others' gradients equal within `tolerance` times the step's
    largest gradient entry (some gradients are small sums of large terms, so rounding comes at that scale)."""
    assert [name for name, g in a.items() if g is None] == [name for name, g in b.items() if g is None]
    scale = max(float(g.abs().max()) for g in b.values() if g is not None)
    for name, g in a.items():
        if g is not None:
            torch.testing.assert_close(g, b[name], rtol=tolerance, atol=tolerance * scale,
                                       msg=lambda message, name=name: f"{name}: {message}")


@pytest.mark.parametrize("kind", KINDS)
def test_ranks_sample_the_same_architecture_and_keep_the_same_logits(runs, kind):
    first, second = (rank[kind] for rank in runs[0])
    assert len(first["samples"]) == len(first["gradients"]) == 2 * ITERATIONS  # weight and architecture steps
    for a, b in zip(first["samples"], second["samples"]):
        assert all(torch.equal(a[ct], b[ct]) for ct in CELL_TYPES)
    for a, b in zip(first["gradients"], second["gradients"]):
        _same_gradients(a, b, tolerance=0)  # bitwise: one all-reduced gradient
    for a, b in zip(first["alphas"], second["alphas"]):
        assert all(torch.equal(a[ct], b[ct]) for ct in CELL_TYPES)
    assert all(torch.equal(value, second["weights"][name]) for name, value in first["weights"].items())
    assert first["genotype"] == second["genotype"]
    # the weight step gave the logits no gradient, the architecture step the weights none, and left none frozen
    assert all(foreign == [] for rank in (first, second) for foreign in rank["foreign_gradients"])
    assert first["frozen"] == second["frozen"] == []
    # not vacuous: every step drew another sub-network, left parameters unused, and the logits moved
    samples = [torch.cat([s[ct] for ct in CELL_TYPES]) for s in first["samples"]]
    assert all(not torch.equal(a, b) for a, b in zip(samples, samples[1:]))
    assert all(any(g is None for g in step.values()) for step in first["gradients"][::2])
    assert not torch.equal(first["alphas"][0]["reduction"], first["alphas"][-1]["reduction"])


def test_two_ranks_equal_one_process_with_the_doubled_batch(runs):
    # The math is the same: InstanceNorm is per case; CE is a mean over each rank's equal share and DDP averages
    # the gradients; nnU-Net's batch Dice all-gathers its sums across ranks; a parameter no rank used keeps no
    # gradient (None, not zero), so the optimizer skips it in both. Only the summation order differs, and in
    # float32 with the trainer's optimizers that is where the math stops: LeakyReLU's kink and max pooling's
    # argmax make gradients jump where rounding (a rank convolves a batch of 1, the single process a batch of 2)
    # moves an activation across them, by up to ~1e-2 of a step's gradient norm on these tiny volumes (8 voxels
    # per channel at the bottleneck); and Adam, whose first steps are about lr * sign(gradient), turns rounding
    # in gradients that are zero in exact arithmetic (InstanceNorm biases the next InstanceNorm cancels) into
    # full steps. So this compares in float64 with SGD + momentum: the runs agree to ~1e-14.
    (first, second), single = (rank["sgd64"] for rank in runs[0]), runs[1]
    for a, b in zip(first["samples"], single["samples"]):
        assert all((a[ct] != 0).equal(b[ct] != 0) for ct in CELL_TYPES)  # the same ops were sampled
        assert all(torch.allclose(a[ct], b[ct], rtol=0, atol=1e-9) for ct in CELL_TYPES)
    for a, b in zip(first["gradients"], single["gradients"]):
        _same_gradients(a, b, tolerance=1e-9)
    for a, b in zip(first["alphas"], single["alphas"]):
        assert all(torch.allclose(a[ct], b[ct], rtol=0, atol=1e-9) for ct in CELL_TYPES)
    for name, value in single["weights"].items():  # momentum would move a parameter given a zero gradient
        torch.testing.assert_close(first["weights"][name], value, rtol=1e-9, atol=1e-9)
    assert first["genotype"] == single["genotype"]
    # each rank reports its own CE and the global batch Dice: their mean is the single process's loss
    ranks_mean = [(a + b) / 2 for a, b in zip(first["losses"], second["losses"])]
    assert ranks_mean == pytest.approx(single["losses"], rel=1e-9)


# ---------------------------------------------------------------- retraining: stock nnUNetTrainer, plain DDP

def _parameters_without_gradient(genotype: Genotype) -> list[str]:
    """One forward/backward of the derived network with deep supervision on, as nnU-Net trains it under DDP
    (every output weighted); plain DDP fails (or, as we saw with gloo, lets ranks drift) on any name returned."""
    torch.manual_seed(0)
    network = SCNASUNet(input_channels=1, num_classes=2, deep_supervision=True, genotype=genotype.to_dict(),
                        stem_width=4, strides=STRIDES, cell_layout=CELL_LAYOUT)
    sum(output.square().mean() for output in network(torch.randn(1, 1, PATCH, PATCH, PATCH))).backward()
    return [name for name, p in network.named_parameters() if p.grad is None]


@pytest.mark.parametrize("genotype", [
    *(pytest.param(Genotype.from_dict(json.loads(path.read_text())), id=path.stem)
      for path in sorted(plans_dir().glob("*.json"))),
    *(pytest.param(random_genotype(seed), id=f"derived-{seed}") for seed in range(4)),
])
def test_derived_network_gives_every_parameter_a_gradient(genotype):
    assert _parameters_without_gradient(genotype) == []


def test_derived_network_of_a_genotype_that_ignores_a_cell_gives_every_parameter_a_gradient():
    # encoder_normal never reads input 1 and reduction never reads input 0: the three reduction cells feed
    # nothing (derive_genotype gives such genotypes when zero wins many edges, the collapse the paper warns of)
    genotype = Genotype(encoder_normal=reading_only(0), reduction=reading_only(1),
                        decoder_normal=reading_only(1), expansion=reading_only(1))
    assert _parameters_without_gradient(genotype) == []
