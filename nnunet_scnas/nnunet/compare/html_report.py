"""One self-contained HTML page (report.html) that a person can open anywhere, even offline.

Everything is inline: the CSS, PNGs as base64 data URIs, and a tiny script. Nothing is fetched from the
network (no fonts, scripts or style sheets), so the page shows the same on any machine and in any archive.

A page is a title and a sequence of blocks. The blocks are small frozen dataclasses: `Paragraph`, `Table`,
`Image`, `Preformatted`; a `Section` is a titled list of them, the unit that other commands hand over to
be appended to a page (the comparison report takes `extra_sections`):

    section = Section("Search", [Paragraph("Entropy of the architecture weights per epoch."),
                                 Image(fold / "search_progress.png", caption="fold 0"),
                                 Table(["cell type", "ops"], [["reduction", "conv_3x3x3, identity"]]),
                                 Preformatted("nnunet-scnas compare -d 1")])
    page = HtmlReport("Dataset001_BrainTumour")
    page.add_paragraph("Dice (%) per label.")
    page.add_section(section)
    page.write(output_dir / "report.html")

Text is escaped everywhere; in paragraphs and table cells a `backticked` span becomes code, as in the
markdown report, so that the same strings serve both. An image whose file is missing becomes a visible
"missing: <path>" note instead of a broken picture. On `load`, the script sets `data-report-status` on
<body> to "ok" when every image decoded, else "broken-images: N", for a headless browser to check.
"""
import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nnunet_scnas.atomic import write_text


@dataclass(frozen=True)
class Paragraph:
    text: str
    warning: bool = False  # drawn as a highlighted box (e.g. a partial comparison)


@dataclass(frozen=True)
class Table:
    """A header row and rows of cell strings (the same lists the markdown tables are made of)."""

    header: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True)
class Image:
    """A PNG file, read when the page is rendered."""

    path: Path
    caption: str = ""


@dataclass(frozen=True)
class Preformatted:
    """Text shown as is, in a monospace font: commands, versions, logs."""

    text: str


Block = Paragraph | Table | Image | Preformatted


@dataclass(frozen=True)
class Section:
    """A heading and the blocks under it, in order."""

    title: str
    blocks: Sequence[Block] = ()


STATUS_ATTRIBUTE = "data-report-status"

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1150px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
.table { overflow-x: auto; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
td { white-space: nowrap; }
th { background: #eef2f7; } tr:nth-child(even) td { background: #f8f8f8; }
code, pre { font-family: monospace; } p code { overflow-wrap: anywhere; } pre { background: #f4f4f4; padding: 0.8em; overflow-x: auto; }
.warning { background: #fff4d6; border-left: 4px solid #e0a800; padding: 0.6em 0.8em; }
.missing { color: #a00; font-family: monospace; }
figure { margin: 0.8em 0; } img { max-width: 100%; } figcaption { font-size: 0.9em; color: #555; }
"""

# counts the images that did not decode once everything has loaded (a headless browser reads the result)
_STATUS_SCRIPT = f"""
window.addEventListener("load", function () {{
  var broken = Array.prototype.filter.call(document.images, function (image) {{
    return !(image.complete && image.naturalWidth > 0);
  }}).length;
  document.body.setAttribute("{STATUS_ATTRIBUTE}", broken ? "broken-images: " + broken : "ok");
}});
"""


class HtmlReport:
    """A page under construction: add blocks in reading order, then `html()` or `write(path)`."""

    def __init__(self, title: str):
        self.title = title
        self._parts: list[str] = []

    def add_heading(self, text: str) -> None:
        self._parts.append(f"<h2>{_escape(text)}</h2>")

    def add_paragraph(self, text: str, warning: bool = False) -> None:
        self.add(Paragraph(text, warning))

    def add_table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.add(Table(header, rows))

    def add_image(self, path, caption: str = "") -> None:
        self.add(Image(Path(path), caption))

    def add_preformatted(self, text: str) -> None:
        self.add(Preformatted(text))

    def add_section(self, section: Section) -> None:
        self.add_heading(section.title)
        for block in section.blocks:
            self.add(block)

    def add(self, block: Block) -> None:
        self._parts.append(render_block(block))

    def html(self) -> str:
        title = _escape(self.title)
        return "\n".join([
            "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{title}</title>",
            f"<style>{_STYLE}</style>", "</head>", "<body>", f"<h1>{title}</h1>", *self._parts,
            f"<script>{_STATUS_SCRIPT}</script>", "</body>", "</html>", ""])

    def write(self, path) -> Path:
        """Write the page to `path` atomically and return the path."""
        path = Path(path)
        write_text(path, self.html())
        return path


def render_block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return f'<p class="warning">{_inline(block.text)}</p>' if block.warning else f"<p>{_inline(block.text)}</p>"
    if isinstance(block, Table):
        header = "".join(f"<th>{_inline(cell)}</th>" for cell in block.header)
        rows = ["<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>" for row in block.rows]
        # in a scrolling box: a wide table scrolls on its own instead of widening the page
        return "\n".join(['<div class="table"><table>', f"<thead><tr>{header}</tr></thead>", "<tbody>", *rows,
                          "</tbody>", "</table></div>"])
    if isinstance(block, Image):
        return _figure(Path(block.path), block.caption)
    if isinstance(block, Preformatted):
        return f"<pre>{_escape(block.text)}</pre>"
    raise TypeError(f"not a report block: {block!r} (expected Paragraph, Table, Image or Preformatted)")


def _figure(path: Path, caption: str) -> str:
    caption_html = f"<figcaption>{_escape(caption)}</figcaption>" if caption else ""
    try:
        data = path.read_bytes()
    except OSError:  # a plot that was never written: say so on the page rather than show a broken image
        return f'<figure><p class="missing">missing: {_escape(str(path))}</p>{caption_html}</figure>'
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<figure><img src="{uri}" alt="{_escape(caption or path.name)}">{caption_html}</figure>'


def _escape(text: str) -> str:
    return html.escape(str(text), quote=True)


def _inline(text: str) -> str:
    """Escaped text with `code` spans, the one piece of markdown that the shared strings use."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _escape(text))
