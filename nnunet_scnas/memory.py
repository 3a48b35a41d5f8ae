"""Peak training memory of one step, estimated without the memory: the network is built on the "meta" device.

    peak = parameters + gradients + optimizer state                                  (counted from the model)
         + every tensor still alive when the forward and loss return                 (traced: what autograd
           saved for backward, the batch, the outputs; views and shared inputs counted once)
         + the backward's working set: two buffers of the largest tensor (the gradient arriving at an op and
           the one it produces), and, in a memory mode that recomputes (`macro.py`: "lean", "cells"), what
           one recomputation brings back above the forward's end: the backward of region r runs when at most
           what was alive at r's start is alive, and its recomputation brings back what r keeps in the plain
           network, so it adds max over r of (alive at r's start + r's plain saved bytes) - (alive at the end)

With `autocast=True` the forward is traced with the dtypes CUDA autocast gives (convolutions and matmuls in
float16, softmax and losses in float32, everything else following its input), the fp16 weight copies included.
A meta tensor has no data, so nothing is computed: the estimate takes seconds at 128^3 on a CPU. It is
checked against measurements in `benchmarks/search_memory.md` (CPU peak RSS at small patches, and one GPU run
of the old cell layout).
"""
from collections.abc import Callable, Iterable, Sequence
import weakref
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

GiB = 2 ** 30
ADAM_SLOTS = 2  # Adam keeps two float32 moments per trainable parameter

_F = nn.functional
_LOWER_PRECISION = {_F.conv1d, _F.conv2d, _F.conv3d, _F.conv_transpose1d, _F.conv_transpose2d, _F.conv_transpose3d,
                    _F.linear, torch.matmul, torch.mm, torch.bmm, torch.addmm, torch.baddbmm}
_FULL_PRECISION = {_F.softmax, _F.log_softmax, torch.softmax, torch.log_softmax, _F.cross_entropy, _F.nll_loss}


class _CudaAutocastDtypes(TorchFunctionMode):
    """CUDA autocast's dtype policy, for tensors of any device (autocast itself does nothing on "meta")."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        dtype = torch.float16 if func in _LOWER_PRECISION else torch.float32 if func in _FULL_PRECISION else None
        if dtype is not None:
            def cast(t):
                return t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
            args, kwargs = tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


class _LiveTensors(TorchDispatchMode):
    """The bytes of the storages of every tensor an op creates that are still alive (kept by autograd for the
    backward, or by the caller), each storage once: a running total, a storage counted from its first tensor
    until its last one dies (weak references: nothing is kept alive by the tracking, so it measures a real run
    as well as it traces a meta one). `peak` is the total's maximum after any op."""

    def __init__(self):
        super().__init__()
        self._references: list[weakref.ref] = []  # their callbacks release the storages
        self._storages: dict[int, list[int]] = {}  # storage -> [tracked tensors alive, bytes]
        self._alive = 0
        self.largest = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                size = storage.nbytes()
                self.largest = max(self.largest, size)
                entry = self._storages.setdefault(storage._cdata, [0, 0])
                self._alive += size - entry[1]  # new, or resized by an op that writes into it
                entry[0], entry[1] = entry[0] + 1, size
                self._references.append(weakref.ref(t, self._release(storage._cdata)))
        self.peak = max(self.peak, self._alive)
        return out

    def _release(self, key: int):
        def release(_):
            entry = self._storages[key]
            entry[0] -= 1
            if entry[0] == 0:
                self._alive -= entry[1]
                del self._storages[key]
        return release

    def alive_bytes(self) -> int:
        return self._alive


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step at its peak (see the module docstring for what each term holds)."""
    parameters: int
    gradients: int
    optimizer_state: int
    activations: int  # alive when the forward and the loss return
    backward_working_set: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer_state + self.activations + self.backward_working_set

    def as_gib(self) -> dict[str, float]:
        return {name: value / GiB for name, value in {**asdict(self), "total": self.total}.items()}


@dataclass(frozen=True)
class RegionCall:
    region: int  # index into the `regions` traced
    alive_before: int  # bytes alive when its forward started
    kept: int  # bytes its forward left alive (what autograd keeps of it, and its output)


@dataclass(frozen=True)
class ForwardTrace:
    alive: int  # bytes alive when the step returned (its result kept)
    largest_tensor: int
    calls: tuple[RegionCall, ...] = ()  # the traced regions' forwards, in order

    @property
    def largest_region(self) -> int:
        """Bytes the largest region call left alive (what recomputing it would bring back)."""
        return max((call.kept for call in self.calls), default=0)


def trace_forward(step: Callable[[], object], regions: Sequence[nn.Module] = (), autocast: bool = False
                  ) -> ForwardTrace:
    """Run `step()` (a forward and loss on meta tensors) and count what stays alive for the backward.

    Tensors created before the call (parameters, anything the caller made) are not counted: create the batch
    inside `step`. `regions` (e.g. the cells) are timed with hooks: the live bytes at each call's start and its
    increase of them.
    """
    tracker = _LiveTensors()
    calls, started = [], {}
    hooks = [h for index, region in enumerate(regions) for h in (
        region.register_forward_pre_hook(lambda m, a: started.__setitem__(id(m), tracker.alive_bytes())),
        region.register_forward_hook(lambda m, a, o, index=index: calls.append(RegionCall(
            index, started[id(m)], tracker.alive_bytes() - started[id(m)]))))]
    try:
        with (_CudaAutocastDtypes() if autocast else nullcontext()), tracker:
            result = step()
        alive = tracker.alive_bytes()
    finally:
        for hook in hooks:
            hook.remove()
    del result
    return ForwardTrace(alive, tracker.largest, tuple(calls))


def recomputation(trace: ForwardTrace, plain: ForwardTrace) -> int:
    """Bytes above `trace.alive` that the backward's recomputations bring back at most (see the module docstring).

    Args:
        trace: the step in a memory mode that recomputes its regions in the backward pass.
        plain: the same step without recomputation, the same regions traced (their plain saved bytes).
    """
    if len(trace.calls) != len(plain.calls):
        raise ValueError("the two traces must call the same regions")
    peaks = [mode.alive_before + plain_call.kept for mode, plain_call in zip(trace.calls, plain.calls)]
    return max(0, max(peaks, default=0) - trace.alive)


def training_memory(trace: ForwardTrace, parameters: Iterable[nn.Parameter], trained: Iterable[nn.Parameter],
                    optimized: Iterable[nn.Parameter] | None = None, optimizer_slots: int = ADAM_SLOTS,
                    recomputed: int = 0) -> MemoryEstimate:
    """The peak of a training step whose forward `trace` describes.

    Args:
        trace: from `trace_forward` of the step's forward and loss.
        parameters: all parameters held in memory.
        trained: those that get a gradient in this step.
        optimized: those with optimizer state (default: `trained`); a search keeps both optimizers' states.
        optimizer_slots: optimizer values per optimized parameter (Adam: 2, of the parameter's dtype).
        recomputed: bytes the backward's recomputation brings back above `trace.alive` (`recomputation`);
            0 without recomputation.
    """
    def size(params) -> int:
        return sum(p.numel() * p.element_size() for p in {id(p): p for p in params}.values())

    trained = list(trained)
    return MemoryEstimate(parameters=size(parameters), gradients=size(trained),
                          optimizer_state=optimizer_slots * size(trained if optimized is None else optimized),
                          activations=trace.alive, backward_working_set=2 * trace.largest_tensor + recomputed)


def measure_peak(step: Callable[[], None], autocast: bool = False) -> int:
    """Peak bytes of the tensors that `step()` creates, sampled after every op: a measurement of a real run (a
    forward, backward and optimizer step on any device), independent of the allocator's caching and reuse."""
    tracker = _LiveTensors()
    with (_CudaAutocastDtypes() if autocast else nullcontext()), tracker:
        step()
    return tracker.peak


def compiled_forward_keeps(module: nn.Module, *inputs: torch.Tensor) -> tuple[object, int]:
    """(outputs, bytes): `module(*inputs)` compiled by torch.compile (AOTAutograd with the min-cut partitioner that
    inductor uses), and the bytes its compiled forward hands to the backward: the sizes of the forward graph's
    outputs (what it keeps, and the outputs). The graphs run as traced: backward through the outputs runs the
    compiled backward graph."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.partitioners import min_cut_rematerialization_partition
    kept = {}

    def forward_compiler(graph, example_inputs):
        outputs = next(node for node in graph.graph.nodes if node.op == "output").args[0]
        values = [node.meta.get("val") for node in outputs if hasattr(node, "meta")]
        kept["bytes"] = sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))
        return graph.forward

    backend = aot_autograd(fw_compiler=forward_compiler, bw_compiler=lambda graph, example_inputs: graph.forward,
                           partition_fn=min_cut_rematerialization_partition)
    torch._dynamo.reset()
    outputs = torch.compile(module, backend=backend, fullgraph=True)(*inputs)
    return outputs, kept["bytes"]
