"""The files of a comparison: comparison.md (tables shaped like the paper's Table 1), comparison.csv (one row
per method x label), comparison.png (per-label Dice, one box per method) and report.html (all of it on one
self-contained page, plus the sections another command adds). All written atomically.

Each table is built once as data, `(header, rows)` of cell strings (`dice_rows`, `cost_rows`, `paired_rows`),
and so is each caption: the markdown and the HTML page render the same strings.
"""
import csv
import io
import random
from collections.abc import Sequence
from pathlib import Path

from nnunet_scnas.atomic import atomic_path, write_text
from nnunet_scnas.nnunet.compare.html_report import HtmlReport, Image, Paragraph, Section, Table

NOT_AVAILABLE = "n/a"
DICE_CAPTION = ("Dice (%) on each fold's validation cases, mean ± std over folds (nnU-Net's "
                "`fold_N/validation/summary.json`; average = nnU-Net's foreground mean).")
COST_CAPTION = "Network cost (FLOPs of one forward pass at the configuration's patch size, batch 1) and training time."
PLOT_CAPTION = "Dice per validation case: per label one box per method, the cases drawn as points over it."

TableData = tuple[list[str], list[list[str]]]  # header, rows of cells


def write_report(comparison, output_dir: Path, extra_sections: Sequence[Section] = ()) -> dict[str, Path]:
    """Write the four files of `comparison` (a `compare.Comparison`) to `output_dir`; returns their paths.

    `extra_sections` (`html_report.Section`s) are appended to report.html after the comparison's own parts,
    their images inlined like the comparison plot: e.g. a benchmark's search plots, cell drawings and the
    commands, machine and versions it ran with.
    """
    files = {"markdown": output_dir / "comparison.md", "csv": output_dir / "comparison.csv",
             "png": output_dir / "comparison.png", "html": output_dir / "report.html"}
    write_text(files["markdown"], markdown(comparison))
    write_text(files["csv"], csv_text(comparison))
    plot(comparison, files["png"])
    html_page(comparison, files["png"], extra_sections).write(files["html"])
    return files


def markdown(comparison) -> str:
    parts = [f"# {_title(comparison)}", ""]
    if comparison.partial:
        parts += [f"> **PARTIAL COMPARISON**: {_partial_note(comparison)}", ""]
    parts += [DICE_CAPTION, "", dice_table(comparison), "", COST_CAPTION, "", cost_table(comparison), ""]
    parts += [_paired_caption(comparison), "", paired_table(comparison), "", VERDICTS_CAPTION, "",
              *(f"- {line}" for line in comparison.verdicts()), ""]
    parts.append(_folds_found(comparison))
    cost_notes = [f"- {note}" for note in _cost_notes(comparison)]
    parts += ["", *cost_notes] if cost_notes else []
    return "\n".join(parts) + "\n"


def html_page(comparison, plot_path: Path, extra_sections: Sequence[Section] = ()) -> HtmlReport:
    """The page of report.html: the markdown's parts in its order, the per-case plot under the Dice table, then
    `extra_sections`."""
    page = HtmlReport(_title(comparison))
    if comparison.partial:
        page.add_paragraph(f"PARTIAL COMPARISON: {_partial_note(comparison)}", warning=True)
    page.add_section(Section("Dice", [Paragraph(DICE_CAPTION), Table(*dice_rows(comparison)),
                                      Image(plot_path, PLOT_CAPTION)]))
    page.add_section(Section("Network cost", [Paragraph(COST_CAPTION), Table(*cost_rows(comparison)),
                                              *map(Paragraph, _cost_notes(comparison))]))
    page.add_section(Section("Paired per case", [Paragraph(_paired_caption(comparison)),
                                                 Table(*paired_rows(comparison)), Paragraph(VERDICTS_CAPTION),
                                                 *(Paragraph(line) for line in comparison.verdicts())]))
    page.add_section(Section("Folds", [Paragraph(_folds_found(comparison))]))
    for section in extra_sections:
        page.add_section(section)
    return page


def dice_table(comparison) -> str:
    return markdown_table(*dice_rows(comparison))


def cost_table(comparison) -> str:
    return markdown_table(*cost_rows(comparison))


def paired_table(comparison) -> str:
    return markdown_table(*paired_rows(comparison))


def dice_rows(comparison) -> TableData:
    """Rows = methods, columns = labels + average, cells "mean ± std" of Dice in % (the paper's Table 1)."""
    rows = []
    for method in comparison.methods:
        name, n_folds = method.method.name, len(method.folds)
        cells = [_dice_cell(comparison.dice[name, label], n_folds) for label in comparison.labels]
        rows.append([name, *cells, f"{n_folds} of {len(comparison.folds)}"])
    return ["Method", *comparison.labels.values(), "folds"], rows


def cost_rows(comparison) -> TableData:
    rows = []
    for method in comparison.methods:
        cost = method.cost
        rows.append([method.method.name, f"`{method.method.folder_name}`",
                     "x".join(map(str, cost.patch_size)) if cost.patch_size else NOT_AVAILABLE,
                     _number(cost.flops, 1e9, "{:.2f} G"), _number(cost.parameters, 1e6, "{:.2f} M"),
                     _number(method.seconds_per_epoch, 1, "{:.1f}"),
                     _number(cost.training_memory, 2 ** 30, "{:.2f} GiB")
                     + (f" ({cost.memory_mode})" if cost.training_memory and cost.memory_mode != "plain" else ""),
                     _number(method.peak_memory_mb, 1, "{:.0f} MB"), _folds(method.folds)])
    return ["Method", "trainer__plans__configuration", "patch", "FLOPs", "parameters", "s/epoch",
            "training memory (estimated)", "peak memory (logged)", "from folds"], rows


def paired_rows(comparison) -> TableData:
    rows = []
    for contrast in comparison.contrasts:
        best = f" (best of {len(contrast.best_of)})" if contrast.best_of else ""
        rows.append([f"{contrast.method} − {contrast.reference}{best}",
                     *(_paired_cell(comparison.paired[contrast.method, contrast.reference, label])
                       for label in comparison.labels)])
    return ["Contrast", *comparison.labels.values()], rows


def csv_text(comparison) -> str:
    """One row per method x label; Dice as fractions (as in summary.json), empty where not available."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["dataset", "method", "trainer", "plans", "configuration", "label", "label_key", "dice_mean",
                     "dice_std", "n_folds", "folds", "missing_folds", "paired_n", "paired_mean_difference",
                     "paired_p_value", "flops", "parameters", "patch_size", "seconds_per_epoch",
                     "training_memory_bytes_estimated", "peak_memory_mb"])
    for method in comparison.methods:
        m, cost = method.method, method.cost
        for key, label in comparison.labels.items():
            stats = comparison.dice[m.name, key]
            paired = comparison.paired_against_baseline(m.name, key)
            writer.writerow([comparison.dataset, m.name, m.trainer, m.plans, m.configuration, label, key,
                             _blank(stats.mean), _blank(stats.std), len(stats.values),
                             " ".join(map(str, stats.values)), " ".join(map(str, method.missing_folds)),
                             _blank(paired and paired.n_pairs), _blank(paired and paired.mean_difference),
                             _blank(paired and paired.p_value), _blank(cost.flops), _blank(cost.parameters),
                             "x".join(map(str, cost.patch_size)) if cost.patch_size else "",
                             _blank(method.seconds_per_epoch), _blank(cost.training_memory),
                             _blank(method.peak_memory_mb)])
    return out.getvalue()


def plot(comparison, path: Path) -> None:
    """Per label, one box per method of the per-case Dice, with the cases drawn as points over it."""
    from matplotlib import rcParams
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    labels, n_methods = list(comparison.labels), len(comparison.methods)
    width = 0.8 / n_methods
    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    jitter = random.Random(0)  # the same points on every run
    figure = Figure(figsize=(max(6.0, 1.2 + 0.8 * len(labels) * n_methods), 4.5))
    axes = figure.add_subplot()
    for m, method in enumerate(comparison.methods):
        name, color = method.method.name, colors[m % len(colors)]
        offset = (m - (n_methods - 1) / 2) * width
        drawn = [(i + offset, comparison.case_dice[name, label]) for i, label in enumerate(labels)
                 if comparison.case_dice[name, label]]
        if drawn:
            axes.boxplot([values for _, values in drawn], positions=[p for p, _ in drawn], widths=width * 0.8,
                         patch_artist=True, showfliers=False, boxprops={"facecolor": color, "alpha": 0.35},
                         medianprops={"color": color})
        for position, values in drawn:
            axes.scatter([position + jitter.uniform(-width / 5, width / 5) for _ in values], values, s=10,
                         color=color, zorder=3)
        missing = f"; missing: {_folds(method.missing_folds)}" if method.missing_folds else ""
        axes.plot([], [], "s", color=color, label=f"{name} (folds {_folds(method.folds)}{missing})")
    axes.set_xticks(range(len(labels)), [comparison.labels[label] for label in labels])
    axes.set_xlim(-0.6, len(labels) - 0.4)
    axes.set_ylim(-0.02, 1.02)
    axes.set_ylabel("Dice per validation case")
    axes.set_title(f"{comparison.dataset}" + ("  (PARTIAL: folds missing)" if comparison.partial else ""))
    axes.grid(axis="y", alpha=0.3)
    # below the axes: inside, it would hide the low-Dice cases that matter most
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=n_methods, fontsize="small", frameon=False)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png", bbox_inches="tight")  # the legend lies outside the axes


def terminal_summary(comparison) -> str:
    """What `compare` prints: the Dice table, a partial-comparison warning, the verdicts and the files written."""
    lines = [f"{comparison.dataset}: Dice (%), mean ± std over folds", "", dice_table(comparison)]
    if comparison.partial:
        lines += ["", f"PARTIAL COMPARISON: {missing_folds_text(comparison)}"]
    lines += ["", *comparison.verdicts(), ""]
    lines += [f"{kind:9s}{path}" for kind, path in comparison.files.items()]
    return "\n".join(lines)


def missing_folds_text(comparison) -> str:
    return "; ".join(f"{m.method.name} lacks {m.missing_text}" for m in comparison.methods if m.missing_folds)


def _title(comparison) -> str:
    return f"{comparison.dataset}: {' vs '.join(m.method.name for m in comparison.methods)}"


def _partial_note(comparison) -> str:
    return (f"{missing_folds_text(comparison)}. Each mean is over the folds its method has (see the folds "
            f"column); the paired tests use only folds that both sides have.")


VERDICTS_CAPTION = "Verdicts (average Dice per case; each contrast tested on its own, no correction for their number):"


def _paired_caption(comparison) -> str:
    return (f"Paired per case: mean Dice difference in points (method − reference; every method against "
            f"{comparison.baseline}, and the contrasts asked for) over the validation cases both have, Wilcoxon "
            f"signed-rank two-sided p, n = pairs (p is n/a with too few pairs or no differences at all).")


def _folds_found(comparison) -> str:
    return f"Folds requested: {_folds(comparison.folds)}. Folds found: " + "; ".join(
        f"{m.method.name} {_folds(m.folds)}" + (f" (missing {m.missing_text})" if m.missing_folds else "")
        for m in comparison.methods) + "."


def _cost_notes(comparison) -> list[str]:
    return [f"{m.method.name}: {m.cost.why_missing}" for m in comparison.methods if m.cost.why_missing]


def _dice_cell(stats, n_method_folds: int) -> str:
    if stats.mean is None:
        return NOT_AVAILABLE
    cell = f"{100 * stats.mean:.2f}" + (f" ± {100 * stats.std:.2f}" if stats.std is not None else "")
    # a label can be undefined (NaN) in a whole fold: then say over how many folds this cell is
    return cell if len(stats.values) == n_method_folds else f"{cell} ({len(stats.values)} folds)"


def _paired_cell(paired) -> str:
    if paired.n_pairs == 0:
        return f"{NOT_AVAILABLE} (no common cases)"
    p = NOT_AVAILABLE if paired.p_value is None else f"{paired.p_value:.3g}"
    return f"{100 * paired.mean_difference:+.2f} (p = {p}, n = {paired.n_pairs})"


def _folds(folds) -> str:
    return ", ".join(map(str, sorted(folds))) or "none"


def _number(value, scale: float, template: str) -> str:
    return NOT_AVAILABLE if value is None else template.format(value / scale)


def _blank(value) -> str:
    return "" if value is None else str(value)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
