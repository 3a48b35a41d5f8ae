"""Pictures of a genotype's cells, like the paper's Fig. 2: inputs, 4 nodes, one labelled connection per edge.

Graphviz `dot` draws the cell when it is on PATH; otherwise (or if it fails) matplotlib draws it on a grid with
one cell per edge, so that no two labels overlap (see `cell_figure`). Edges whose op is `zero` are not drawn.
"""
import shutil
import subprocess
from pathlib import Path

from .atomic import atomic_path
from .genotype import EDGE_ENDPOINTS, EDGES, NUM_INPUTS, NUM_NODES, Genotype

_INPUT_NAMES = ("x0 (two cells back)", "x1 (previous cell)")


def _edges(genotype: Genotype, cell_type: str) -> list[tuple[int, int, str]]:
    ops = genotype.ops(cell_type)  # validates cell_type
    return [(source, target, ops[edge]) for edge, (source, target) in zip(EDGES, EDGE_ENDPOINTS)
            if ops[edge] != "zero"]


def cell_dot(genotype: Genotype, cell_type: str) -> str:
    """Graphviz source of one cell."""
    lines = [f'digraph "{cell_type}" {{', "  rankdir=LR;", f'  label="{cell_type}"; labelloc=t;',
             '  node [shape=box, style="rounded,filled", fontname=Helvetica];']
    for i, name in enumerate(_INPUT_NAMES):
        lines.append(f'  x{i} [label="{name}", fillcolor=lightblue];')
    for node in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES):
        lines.append(f'  x{node} [label="x{node}", fillcolor=lightyellow];')
    lines.append('  out [label="concat", fillcolor=palegreen];')
    for source, target, op in _edges(genotype, cell_type):
        lines.append(f'  x{source} -> x{target} [label="{op}", fontsize=10];')
    for node in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES):
        lines.append(f"  x{node} -> out [style=dashed, color=gray];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw_cell(genotype: Genotype, cell_type: str, path) -> Path:
    """Write a PNG of one cell of `genotype` to `path` (atomically: a reader never sees half a picture) and
    return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        _draw(genotype, cell_type, tmp)
    return path


def _draw(genotype: Genotype, cell_type: str, path: Path) -> None:
    dot_source = cell_dot(genotype, cell_type)
    dot = shutil.which("dot")
    if dot is not None:
        try:
            subprocess.run([dot, "-Tpng", "-o", str(path)], input=dot_source, text=True, check=True,
                           capture_output=True, timeout=60)
            return
        except (OSError, subprocess.SubprocessError):
            pass  # a broken graphviz install: fall back to matplotlib
    _draw_with_matplotlib(genotype, cell_type, path)


def _draw_with_matplotlib(genotype: Genotype, cell_type: str, path: Path) -> None:
    cell_figure(genotype, cell_type).savefig(path, format="png", dpi=120)


# The matplotlib layout: a grid, in inches (the axes fill the figure, one data unit per inch, so that text sizes
# in points and positions agree). State i sits on the diagonal, at column i and row i; the op of edge "j<-i" sits
# at column j, row i, a cell of its own, so no two labels can meet. A wire leaves state i to the right along its
# row (in the state's colour) through its ops, and each node's wire comes down its column through the ops that
# feed it; below the diagonal each node drops to the concat bus.
_COLUMN = 1.65  # wide enough for the longest op name at 8 pt
_ROW = 0.5
_MARGIN = 0.3


def cell_figure(genotype: Genotype, cell_type: str):
    """The matplotlib Figure of one cell (what `draw_cell` saves when graphviz is missing); see the layout above."""
    # the object API with an Agg canvas: no pyplot, so no global backend state is touched
    from matplotlib import patheffects
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    states = range(NUM_INPUTS + NUM_NODES)
    nodes = range(NUM_INPUTS, NUM_INPUTS + NUM_NODES)

    def at(column: float, row: float) -> tuple[float, float]:
        return column * _COLUMN, -row * _ROW

    bus_row, out_column = len(states), len(states) + 0.1  # the concat bus, under the grid
    left, right = at(-0.5, 0)[0] - _MARGIN, at(out_column + 0.4, 0)[0] + _MARGIN
    bottom, top = at(0, bus_row + 0.5)[1] - _MARGIN, at(0, -1.2)[1] + _MARGIN
    figure = Figure(figsize=(right - left, top - bottom))
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(left, right)
    axes.set_ylim(bottom, top)
    axes.axis("off")
    axes.text(left + _MARGIN, top - _MARGIN, cell_type, fontsize=12, ha="left", va="top", fontweight="bold")
    colors = {state: f"C{state}" for state in states}

    edges = _edges(genotype, cell_type)
    for state in states:
        targets = [target for source, target, _ in edges if source == state]
        if targets:  # the state's wire, out to its last op
            axes.plot(*zip(at(state, state), at(max(targets), state)), color=colors[state], lw=1.5, zorder=1)
    for node in nodes:
        sources = [source for source, target, _ in edges if target == node]
        # over the rows' wires, with a white edge: a wire that crosses a column without an op there shows a gap
        axes.annotate("", xy=at(node, node), xytext=at(node, min(sources)), zorder=2, arrowprops=dict(
            arrowstyle="-|>", color="black", lw=1.2, shrinkA=0, shrinkB=10,
            path_effects=[patheffects.Stroke(linewidth=5, foreground="white"), patheffects.Normal()]))
        axes.plot(*zip(at(node, node), at(node, bus_row)), color="gray", linestyle="--", lw=1, zorder=0)
    axes.annotate("", xy=at(out_column, bus_row), xytext=at(NUM_INPUTS, bus_row), zorder=0, arrowprops=dict(
        arrowstyle="-|>", color="gray", linestyle="--", lw=1, shrinkA=0, shrinkB=22))
    for source, target, op in edges:
        axes.text(*at(target, source), op, fontsize=8, ha="center", va="center", zorder=3,
                  bbox=dict(boxstyle="round,pad=0.25", facecolor="white", edgecolor=colors[source], lw=1))
    for state in states:
        name = _INPUT_NAMES[state] if state < NUM_INPUTS else f"x{state}"
        axes.text(*at(state, state), name, ha="center", va="center", fontsize=9, zorder=4,
                  bbox=dict(boxstyle="round,pad=0.4", facecolor="lightblue" if state < NUM_INPUTS else "lightyellow",
                            edgecolor=colors[state], lw=1.5))
    axes.text(*at(out_column, bus_row), "concat", ha="center", va="center", fontsize=9, zorder=4,
              bbox=dict(boxstyle="round,pad=0.4", facecolor="palegreen"))
    return figure
