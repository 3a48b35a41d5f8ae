"""Cell drawings: graphviz source, and a PNG even without (or with a broken) graphviz."""
import pytest

from nnunet_scnas import CELL_TYPES, Genotype, draw_cell
from nnunet_scnas import drawing
from nnunet_scnas.drawing import cell_dot

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
