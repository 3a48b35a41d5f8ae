"""report.html opened in a real headless Chromium (Debian's `chromium`): the page loads, every image decodes, the
comparison's tables are there, the page logs nothing to the console and refers to nothing on the network; and the
screenshot that docs/ uses.

The comparison is read by `compare` from a results tree written here in nnU-Net's layout: per method and fold a
`validation/summary.json` in the form nnU-Net's evaluation writes and a training log (no plans.json, so the cost
table is n/a with a note: planning a dataset takes tens of seconds and test_compare.py covers the cost). SCNAS
lacks fold 2, so the comparison is partial. Without chromium the browser tests are skipped (a failure under CI).
"""
import json
import os
import re
from html.parser import HTMLParser

import pytest

from helpers import random_genotype
from nnunet_scnas.drawing import draw_cell
from nnunet_scnas.nnunet.compare.browser import INSTALL_HINT, find_chromium, run_headless, screenshot
from nnunet_scnas.nnunet.compare.comparison import compare
from nnunet_scnas.nnunet.compare.html_report import HtmlReport, Image, Paragraph, Preformatted, Section, Table
from nnunet_scnas.nnunet.compare.report import write_report

DATASET = "Dataset993_ReportTiny"
LABELS = {"background": 0, "edema": 1, "tumour": 2}
# method -> (configuration, folds trained, Dice offset against the reference quality)
METHODS = {"nnU-Net": ("3d_fullres", (0, 1, 2), 0.0), "SCNAS": ("3d_fullres_scnas", (0, 1), -0.05)}
FOLDS = (0, 1, 2)
CASES_PER_FOLD = 5


def _summary(fold: int, offset: float) -> dict:
    """A summary.json as nnU-Net's compute_metrics_on_folder writes it (only the keys compare reads)."""
    cases = []
    for case in range(fold * CASES_PER_FOLD, (fold + 1) * CASES_PER_FOLD):
        dice = {"1": 0.80 + 0.02 * (case % 4) + offset, "2": 0.70 + 0.03 * (case % 3) + offset}
        cases.append({"reference_file": f"/raw/labelsTr/case_{case:03d}.nii.gz",
                      "prediction_file": f"/validation/case_{case:03d}.nii.gz",
                      "metrics": {key: {"Dice": value} for key, value in dice.items()}})
    mean = {key: {"Dice": sum(c["metrics"][key]["Dice"] for c in cases) / len(cases)} for key in ("1", "2")}
    return {"metric_per_case": cases, "mean": mean,
            "foreground_mean": {"Dice": (mean["1"]["Dice"] + mean["2"]["Dice"]) / 2}}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The compare command's files, report.html rewritten with extra sections: (files, extra image paths)."""
    root = tmp_path_factory.mktemp("report_html")
    dataset_folder = root / "nnUNet_results" / DATASET
    for name, (configuration, folds, offset) in METHODS.items():
        folder = dataset_folder / f"nnUNetTrainer__nnUNetPlans__{configuration}"
        for fold in folds:
            (folder / f"fold_{fold}" / "validation").mkdir(parents=True)
            (folder / f"fold_{fold}" / "validation" / "summary.json").write_text(json.dumps(_summary(fold, offset)))
            (folder / f"fold_{fold}" / "training_log_2025_1_1_00_00_00.txt").write_text(
                "2025-01-01 00:00:00.000000: Epoch time: 4.0 s\n")
        (folder / "dataset.json").write_text(json.dumps({"labels": LABELS, "file_ending": ".nii.gz"}))
    with pytest.MonkeyPatch.context() as env:
        for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            (root / variable).mkdir(exist_ok=True)
            env.setenv(variable, str(root / variable))
        comparison = compare(DATASET, folds=FOLDS, output_dir=root / "compare")
    drawing = draw_cell(random_genotype(0), "reduction", root / "cells" / "reduction.png")
    extra = [Section("Search", [Paragraph("The cells the search found (`genotype.json`)."),
                                Image(drawing, caption="reduction cell"),
                                Image(root / "cells" / "never_drawn.png", caption="a plot that was never written"),
                                Table(["cell type", "ops"], [["reduction", "<conv> & more"]])]),
             Section("Commands and versions", [Preformatted("nnunet-scnas compare -d 993\n<b>not bold</b>")])]
    files = write_report(comparison, root / "compare", extra_sections=extra)
    return comparison, files, root


@pytest.fixture(scope="module")
def chromium():
    if find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail(f"chromium is not installed and CI runs the browser tests: {INSTALL_HINT}")
        pytest.skip(f"chromium is not installed: {INSTALL_HINT}")


class _Page(HTMLParser):
    """What a reader sees of a dumped DOM: <body>'s attributes, the tables (rows of cell texts), all text."""

    def __init__(self, dom: str):
        super().__init__()
        self.body: dict[str, str] = {}
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        if tag == "body":
            self.body = dict(attrs)
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _open(html_path, profile):
    """Chromium's DOM of the page after `load`, and the console lines the page caused."""
    result = run_headless(html_path, "--dump-dom", "--enable-logging=stderr", "--v=0",
                          user_data_dir=profile, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    # Chromium logs every console message of a page as "...:CONSOLE...] "<message>", source: <url> (<line>)";
    # the rest of its stderr is about the machine (no D-Bus, no GPU) and not about the page
    uri = html_path.resolve().as_uri()
    console = [line for line in result.stderr.splitlines()
               if ("CONSOLE" in line and uri in line) or "Uncaught" in line]
    return _Page(result.stdout), console


def test_report_opens_with_every_image_decoded_the_tables_and_a_silent_console(chromium, report, tmp_path):
    comparison, files, root = report
    page, console = _open(files["html"], tmp_path / "profile")
    assert page.body.get("data-report-status") == "ok"  # the comparison plot and the cell drawing decoded
    assert console == []
    dice = page.tables[0]
    assert dice[0] == ["Method", "edema", "tumour", "average", "folds"]
    assert [row[0] for row in dice[1:]] == list(METHODS)
    # the very cells of the markdown's Dice table
    markdown_rows = [[cell.strip() for cell in line.strip("|").split("|")]
                     for line in files["markdown"].read_text().split("\n\n")[3].splitlines()[2:]]
    assert dice[1:] == markdown_rows
    text = " ".join(page.text)
    assert "PARTIAL COMPARISON: SCNAS lacks fold 2: no fold folder" in text
    assert "Folds found: nnU-Net 0, 1, 2; SCNAS 0, 1 (missing fold 2: no fold folder)" in text
    assert "no plans.json in nnUNetTrainer__nnUNetPlans__3d_fullres" in text  # the cost note
    # the extra sections, after the comparison's own, escaped
    assert f"missing: {root / 'cells' / 'never_drawn.png'}" in text
    assert ["reduction", "<conv> & more"] in page.tables[-1]
    assert "<b>not bold</b>" in text


def test_report_is_self_contained(report):
    _, files, _ = report
    html = files["html"].read_text()
    assert not re.search(r"https?://", html)
    assert html.count('<img src="data:image/png;base64,') == 2  # the plot and the drawing, inlined
    assert "<link" not in html and "<script src" not in html


def test_a_broken_image_and_a_script_error_are_caught(chromium, tmp_path):
    """The two checks above can fail: an undecodable PNG sets the status, a thrown error reaches the console."""
    not_a_png = tmp_path / "not_a.png"
    not_a_png.write_bytes(b"\x89PNG but then nothing of a picture")
    page = HtmlReport("broken")
    page.add_image(not_a_png)
    page.write(tmp_path / "broken.html")
    html = (tmp_path / "broken.html").read_text()
    (tmp_path / "broken.html").write_text(html.replace("</body>", "<script>noSuchFunction();</script></body>"))
    dom, console = _open(tmp_path / "broken.html", tmp_path / "profile")
    assert dom.body.get("data-report-status") == "broken-images: 1"
    assert len(console) == 1 and "Uncaught ReferenceError: noSuchFunction is not defined" in console[0]


def test_screenshot_of_a_report(chromium, report, tmp_path):
    _, files, _ = report
    png = screenshot(files["html"], tmp_path / "docs" / "report.png", width=1200, height=2000)
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 50_000  # a blank page would be a few kB
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 2000)
    assert list(tmp_path.glob("docs/.*")) == []  # no temporary file left beside it


def test_compare_returns_report_html_beside_the_other_files(report):
    comparison, files, _ = report
    assert comparison.files["html"] == files["html"] == files["markdown"].with_name("report.html")
    assert set(files) == {"markdown", "csv", "png", "html"}
