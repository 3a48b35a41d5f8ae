"""Cell layout (nodes of C/4, output = their concat) and the activation shared by the ops that read a state."""
import pytest
import torch
from torch import nn

from nnunet_scnas import CELL_LAYOUT, CELL_TYPES, EDGES, OPS, SCNASSupernet, SCNASUNet
from nnunet_scnas.cell import Cell, EdgeWeights
from nnunet_scnas.genotype import EDGE_ENDPOINTS, NUM_INPUTS, NUM_NODES, incoming_edges
from nnunet_scnas.ops import NEGATIVE_SLOPE
from nnunet_scnas.sampler import sample_two_ops, softmax_weights

from helpers import random_genotype

ISOTROPIC = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
ALL_OPS = {edge: OPS for edge in EDGES}
IN_CHANNELS, CHANNELS, STRIDE = (12, 16), 8, (2, 2, 2)
# cell type -> spatial sizes of its two inputs, for an output of 4^3 (see `cell._preprocess`)
INPUT_SIZES = {"reduction": (8, 8), "encoder_normal": (8, 4), "expansion": (2, 2), "decoder_normal": (2, 4)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _inputs(cell_type, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, c, *(n,) * 3, generator=g, dtype=dtype) for c, n in zip(IN_CHANNELS, INPUT_SIZES[cell_type])]


def _convs(module):
    return [m for m in module.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]


@pytest.mark.parametrize("cell_type", CELL_TYPES)
def test_nodes_are_a_quarter_of_the_cell_and_the_output_is_their_concat(cell_type):
    cell = Cell(cell_type, ALL_OPS, IN_CHANNELS, CHANNELS, STRIDE)
    quarter = CHANNELS // NUM_NODES
    assert not hasattr(cell, "project")
    for source, preprocess in cell.preprocess.items():
        convs = _convs(preprocess)
        assert convs[0].in_channels == IN_CHANNELS[int(source)] and convs[-1].out_channels == quarter
    op_convs = [conv for ops in cell.edges.values() for conv in _convs(ops)]
    assert op_convs and all(conv.in_channels == conv.out_channels == quarter for conv in op_convs)
    with torch.no_grad():
        out = cell(*_inputs(cell_type), softmax_weights(torch.zeros(len(EDGES), len(OPS))))
    assert tuple(out.shape) == (1, CHANNELS, 4, 4, 4)


def test_a_node_without_computed_inputs_gives_a_quarter_of_zeros():
    cell = Cell("reduction", ALL_OPS, IN_CHANNELS, CHANNELS, STRIDE)
    weights = torch.zeros(len(EDGES), len(OPS))
    weights[:, OPS.index("identity")] = 1.0
    weights[[k for k in incoming_edges(3)], :] = 0.0  # nothing reaches node 3
    with torch.no_grad():
        out = cell(*_inputs("reduction"), weights)
    quarter = CHANNELS // NUM_NODES
    assert tuple(out.shape) == (1, CHANNELS, 4, 4, 4)
    assert torch.count_nonzero(out[:, quarter:2 * quarter]) == 0 and torch.count_nonzero(out[:, :quarter]) > 0


@pytest.mark.parametrize("build", [
    lambda width: SCNASSupernet(1, 2, width, ISOTROPIC),
    lambda width: SCNASUNet(input_channels=1, num_classes=2, deep_supervision=False, genotype=random_genotype(0).to_dict(),
                            stem_width=width, strides=ISOTROPIC, cell_layout=CELL_LAYOUT)])
@pytest.mark.parametrize("width", [6, 2, 0, 4.0])
def test_stem_width_must_be_a_multiple_of_4(build, width):
    with pytest.raises(ValueError, match=rf"stem_width must be a positive multiple of 4 \(the 4 nodes of a cell "
                                         rf"are C/4 wide\), got {width}"):
        build(width)


def _reads_leaky_relu(name, op):
    # the paper's conv ops are LeakyReLU -> conv -> norm; the strided identity is LeakyReLU -> pool -> conv -> norm
    return name.startswith(("conv_", "dil_sep_conv_")) or (name == "identity" and not isinstance(op, nn.Identity))


def _reference_forward(cell, s0, s1, weights=None):
    """The straightforward formulation: every op that needs it applies its own LeakyReLU to the raw state."""
    weights = weights.values if isinstance(weights, EdgeWeights) else weights
    states = {int(i): preprocess((s0, s1)[int(i)]) for i, preprocess in cell.preprocess.items()}
    for node in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES):
        terms = []
        for k in incoming_edges(node):
            for name, op in cell.edges[EDGES[k]].items() if EDGES[k] in cell.edges else ():
                weight = 1.0 if weights is None else weights[k, OPS.index(name)]
                x = states[EDGE_ENDPOINTS[k][0]]
                if weights is None or weight != 0:
                    terms.append(weight * op(nn.functional.leaky_relu(x, NEGATIVE_SLOPE) if _reads_leaky_relu(name, op)
                                             else x))
        states[node] = sum(terms[1:], terms[0])
    return torch.cat([states[node] for node in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES)], 1)


def _gradients(module, *tensors):
    return [p.grad for p in module.parameters()] + [t.grad for t in tensors]


def _assert_same(mine, reference):
    for a, b in zip(mine, reference, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell_type", CELL_TYPES)
@pytest.mark.parametrize("sample", ["two_op", "all_ops"])
@pytest.mark.parametrize("share_activation", [True, False])
def test_shared_activation_computes_the_same_as_one_activation_per_op(cell_type, sample, share_activation):
    torch.manual_seed(0)
    cell = Cell(cell_type, ALL_OPS, IN_CHANNELS, CHANNELS, STRIDE).double()
    cell.share_activation = share_activation
    logits = torch.randn(len(EDGES), len(OPS), dtype=torch.float64, requires_grad=True)
    probe = torch.randn(1, CHANNELS, 4, 4, 4, dtype=torch.float64)
    results = []
    for forward in (cell, lambda *args: _reference_forward(cell, *args)):
        cell.zero_grad(set_to_none=True)
        logits.grad = None
        weights = (sample_two_ops(logits, 1.0, torch.Generator().manual_seed(1)) if sample == "two_op"
                   else softmax_weights(logits))
        out = forward(*_inputs(cell_type, torch.float64), weights)
        (out * probe).sum().backward()
        results.append([out, *_gradients(cell, logits)])
    _assert_same(*results)


def test_supernet_with_shared_activation_equals_the_reference_formulation():
    torch.manual_seed(0)
    net = SCNASSupernet(1, 2, 4, ISOTROPIC).double()
    x = torch.randn(1, 1, 16, 16, 16, dtype=torch.float64)
    cells = list(net.encoder.cells) + list(net.decoder.cells)

    def run():
        net.zero_grad(set_to_none=True)
        net.generator = torch.Generator().manual_seed(3)
        out = net(x)
        sum(o.square().mean() for o in out).backward()
        return [*out, *_gradients(net)]

    shared = run()
    for cell in cells:  # an instance attribute shadows Cell.forward
        cell.forward = lambda s0, s1, weights=None, lean=False, cell=cell: _reference_forward(cell, s0, s1, weights)
    _assert_same(shared, run())


# ops on edges 2<-0, 2<-1, 3<-0, 3<-2 (the others zero) -> how often the LeakyReLU runs, shared / one per op
@pytest.mark.parametrize("ops, shared, per_op", [
    (("conv_3x3x3", "dil_sep_conv_3x3x3_r2", "dil_sep_conv_3x3x3_r4", "conv_3x3x3"), 3, 4),  # states 0, 1, 2
    (("conv_3x3x3", "max_pool_3x3x3", "dil_sep_conv_3x3x3_r3", "avg_pool_3x3x3"), 1, 2),  # state 0, twice read
    (("identity", "max_pool_3x3x3", "avg_pool_3x3x3", "identity"), 0, 0),  # nothing needs it
])
@pytest.mark.parametrize("share_activation", [True, False])
def test_the_activation_runs_once_per_state_and_only_if_needed(ops, shared, per_op, share_activation):
    candidates = {edge: (op,) for edge, op in zip(("2<-0", "2<-1", "3<-0", "3<-2"), ops)}
    candidates.update({edge: ("identity",) for edge in ("4<-3", "5<-4")})
    cell = Cell("decoder_normal", candidates, IN_CHANNELS, CHANNELS, STRIDE)
    cell.share_activation = share_activation
    activations = shared if share_activation else per_op
    calls = []
    cell.activation.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        cell(*_inputs("decoder_normal"))
    assert len(calls) == activations
