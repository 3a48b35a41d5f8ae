"""Pictures of a genotype's cells, like the paper's Fig. 2: inputs, 4 nodes, one labelled arrow per edge.

Graphviz `dot` draws the cell when it is on PATH; otherwise (or if it fails) matplotlib draws it. Edges
whose op is `zero` are not drawn.
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
    # the object API with an Agg canvas: no pyplot, so no global backend state is touched
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # inputs left, nodes on one line, the concat right
    position = {0: (0.0, 1.4), 1: (0.0, -1.4), "out": (2.4 * (NUM_NODES + 1), 0.0)}
    for node in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES):
        position[node] = (2.4 * (node - 1), 0.0)

    figure = Figure(figsize=(12, 5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(cell_type)
    axes.set_xlim(-1.5, position["out"][0] + 1.2)
    axes.set_ylim(-3.0, 3.0)
    axes.set_aspect("equal")
    axes.axis("off")

    def arrow(start, end, rad, **style):
        axes.annotate("", xy=end, xytext=start, arrowprops=dict(
            arrowstyle="-|>", connectionstyle=f"arc3,rad={rad}", shrinkA=18, shrinkB=18, **style))

    for source, target, op in _edges(genotype, cell_type):
        (x0, y0), (x1, y1) = position[source], position[target]
        # neighbours on the line: straight; longer edges bend more the more nodes they skip, inputs' edges
        # and the others alternating above and below the line so that arcs and labels separate
        skipped = target - max(source, NUM_INPUTS - 1) - 1
        rad = 0.0 if skipped <= 0 else (0.2 + 0.12 * skipped) * (1 if (source + target) % 2 else -1)
        arrow((x0, y0), (x1, y1), rad, color="black")
        # label on the arc (a quadratic Bezier with control point c), nearer the source for the inputs' edges,
        # whose arcs converge on the first nodes; above the line for straight edges
        cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)
        t = 0.3 if source < NUM_INPUTS else 0.5
        lx = (1 - t) ** 2 * x0 + 2 * t * (1 - t) * cx + t ** 2 * x1
        ly = (1 - t) ** 2 * y0 + 2 * t * (1 - t) * cy + t ** 2 * y1 + (0.25 if rad == 0 else 0.0)
        axes.text(lx, ly, op, fontsize=8, ha="center", va="center",
                  bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor="none", alpha=0.85))
    for node in range(NUM_INPUTS, NUM_INPUTS + NUM_NODES):
        arrow(position[node], position["out"], 0.08 * (NUM_INPUTS + NUM_NODES - node), color="gray",
              linestyle="--")
    labels = {0: _INPUT_NAMES[0], 1: _INPUT_NAMES[1], "out": "concat"}
    colors = {0: "lightblue", 1: "lightblue", "out": "palegreen"}
    for key, (x, y) in position.items():
        axes.text(x, y, labels.get(key, f"x{key}"), ha="center", va="center", fontsize=9,
                  bbox=dict(boxstyle="round,pad=0.4", facecolor=colors.get(key, "lightyellow")))
    figure.savefig(path, format="png", dpi=120, bbox_inches="tight")
