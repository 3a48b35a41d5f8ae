"""Cell drawings: graphviz source, and a PNG even without (or with a broken) graphviz, legible."""
import json
import re
from pathlib import Path

import pytest

from helpers import random_genotype
from nnunet_scnas import CELL_TYPES, Genotype, draw_cell
from nnunet_scnas import drawing
from nnunet_scnas.drawing import cell_dot
from nnunet_scnas.genotype import EDGE_ENDPOINTS, EDGES
from nnunet_scnas.ops import OPS

OPS_WITH_ZEROS = ["conv_3x3x3", "zero", "identity", "zero", "max_pool_3x3x3", "dil_sep_conv_3x3x3_r2", "zero",
                  "zero", "avg_pool_3x3x3", "zero", "zero", "zero", "zero", "dil_sep_conv_3x3x3_r4"]
GENOTYPE = Genotype(**{cell_type: OPS_WITH_ZEROS for cell_type in CELL_TYPES})


def test_dot_source_has_exactly_the_nonzero_edges_with_their_ops():
    source = cell_dot(GENOTYPE, "expansion")
    assert 'x0 -> x2 [label="conv_3x3x3"' in source and 'x4 -> x5 [label="dil_sep_conv_3x3x3_r4"' in source
    assert source.count('[label="') - source.count("fillcolor") == 6  # 6 non-zero edges, no zero edge
    assert "x1 -> x2" not in source and "x2 -> x4" not in source


@pytest.mark.parametrize("dot", [None, "/bin/false"])  # no graphviz, or one that fails
def test_png_is_written_without_working_graphviz(tmp_path, monkeypatch, dot):
    monkeypatch.setattr(drawing.shutil, "which", lambda name: dot)
    path = draw_cell(GENOTYPE, "reduction", tmp_path / "reduction.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_cell_type_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown cell type 'bottleneck'"):
        draw_cell(GENOTYPE, "bottleneck", tmp_path / "x.png")


# the drawing's hardest cells: every edge present with the longest op name, the shipped plain U-Net, random ones
LONGEST_OP = max((op for op in OPS if op != "zero"), key=len)
PLAIN_UNET = Genotype.from_dict(json.loads((Path(__file__).parents[1] / "plans" / "plain_unet.json").read_text()))
GENOTYPES = {"longest ops everywhere": Genotype(**{cell_type: [LONGEST_OP] * len(EDGES) for cell_type in CELL_TYPES}),
             "with zeros": GENOTYPE, "plain_unet": PLAIN_UNET,
             **{f"random {seed}": random_genotype(seed) for seed in (0, 1, 2)}}


@pytest.mark.parametrize("name", GENOTYPES)
def test_matplotlib_drawing_puts_each_op_at_its_edge_and_no_two_labels_overlap(name):
    """The text boxes as the Agg renderer lays them out: inside the figure, pairwise disjoint, and one op per
    non-zero edge "j<-i", in the row of state i and the column of node j."""
    from matplotlib.transforms import Bbox

    genotype = GENOTYPES[name]
    for cell_type in CELL_TYPES:
        figure = drawing.cell_figure(genotype, cell_type)
        renderer = figure.canvas.get_renderer()
        figure.draw(renderer)
        texts = [text for text in figure.axes[0].texts if text.get_text()]  # not the arrows (empty annotations)
        boxes = [(text.get_text(), (text.get_bbox_patch() or text).get_window_extent(renderer)) for text in texts]
        for i, (a, box_a) in enumerate(boxes):
            assert Bbox.intersection(box_a, figure.bbox).bounds == pytest.approx(box_a.bounds), \
                f"{name}, {cell_type}: {a!r} is cut off"
            for b, box_b in boxes[i + 1:]:
                overlap = Bbox.intersection(box_a, box_b)
                assert overlap is None or overlap.width <= 0 or overlap.height <= 0, \
                    f"{name}, {cell_type}: {a!r} overlaps {b!r}"
        state = {int(text.get_text()[1]): text.get_position() for text in texts
                 if re.fullmatch(r"x\d( \(.*\))?", text.get_text())}
        assert sorted(state) == list(range(6))
        ops_drawn = {text.get_position(): text.get_text() for text in texts if text.get_text() in OPS}
        expected = {(state[target][0], state[source][1]): op for edge, (source, target) in zip(EDGES, EDGE_ENDPOINTS)
                    if (op := genotype.ops(cell_type)[edge]) != "zero"}
        assert ops_drawn == expected
