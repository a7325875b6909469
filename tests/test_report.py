import base64
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest

from actrange.cli import main
from actrange.config_files import to_toml
from actrange.report import write_report
from actrange.store import Store
from tests.report_fixtures import build_result_directory, experiment, written_report

FIGURES = [
    "heatmap_accuracy",
    "loss_range_-1_1",
    "accuracy_range_-1_1",
    "loss_range_-5_5",
    "accuracy_range_-5_5",
    "violin_range_-1_1",
    "violin_range_-5_5",
    "percentiles_range_-1_1",
    "health_range_-1_1",
    "gradnorm_range_-1_1",
    "percentiles_range_-5_5",
    "health_range_-5_5",
    "gradnorm_range_-5_5",
    "per_class_range_-1_1",
    "per_class_range_-5_5",
]
PALETTE_PNG = 3  # PNG colour type of an indexed-colour image


class _Tables(HTMLParser):
    """Every table of a page as lists of cell texts, and the order of the h2 headings."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.headings: list[str] = []
        self._cell: list[str] | None = None
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h2":
            self._in_h2 = True
            self.headings.append("")

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._in_h2:
            self.headings[-1] += data


def _parsed(html: str) -> _Tables:
    parser = _Tables()
    parser.feed(html)
    return parser


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[list[Path], str, str]:
    paths = written_report(tmp_path_factory)
    return paths, paths[0].read_text(encoding="utf-8"), paths[1].read_text(encoding="utf-8")


def test_returns_html_markdown_then_the_figures_in_page_order(report):
    paths, _, _ = report
    directory = paths[0].parent
    assert paths[:2] == [directory / "report.html", directory / "report.md"]
    assert [p.stem for p in paths[2:]] == FIGURES
    assert all(p.parent == directory / "figures" and p.suffix == ".png" for p in paths[2:])
    assert sorted(p.name for p in (directory / "figures").iterdir()) == sorted(
        f"{name}.png" for name in FIGURES
    )


def test_verdict_comes_first_with_the_numbers_of_both_halves(report):
    _, html, _ = report
    assert _parsed(html).headings[0] == "Verdict"
    narrow = (
        "At [-1, 1], Tanh reached 86.0% (95% CI 83.5–88.5, n=3) "
        "and ReLU 81.0% (78.5–83.5, n=3): "
        "Tanh is ahead by 5.0 points (2.7–7.3; Welch t(4.0) = 6.1"
    )
    wide = "At [-5, 5], Tanh reached 71.0% (95% CI 68.5–73.5, n=3) and ReLU 60.0% ("
    assert narrow in html and wide in html
    assert html.index(narrow) < html.index(wide) < html.index("<h2>Cells</h2>")
    assert '<span class="badge supported">supported</span>' in html
    assert '<span class="badge inconclusive">inconclusive</span>' in html
    assert "The Tanh − ReLU gap is +5.0 points at [-1, 1] and +11.0 points at [-5, 5]" in html
    assert "1 diverged (ReLU at [-5, 5], lr 0.01: 1)" in html
    assert "4 more runs were not analysed (failed: 1, pending: 2, running: 1)" in html


def test_the_cell_table_has_the_hand_computed_numbers(report):
    _, html, _ = report
    cells = next(t for t in _parsed(html).tables if t[0][0] == "Activation")
    # threshold 70% from the config; ± = t(0.975, 2)·sd/√3; the diverged run's NaN losses
    # leave ReLU at [-5, 5] with two loss AUCs: (1.125, 1.225) -> 1.175 ± 12.706·0.0707/√2
    assert cells == [
        [
            "Activation",
            "Range",
            "lr",
            "n",
            "Final test accuracy (%)",
            "Loss AUC",
            "Epochs to 70% (reached)",
            "Diverged",
            "Stuck",
        ],
        [
            "ReLU",
            "[-1, 1]",
            "0.01",
            "3",
            "81.0 ± 2.5",
            "1.225 ± 0.248",
            "2.0 ± 0.0 (3/3)",
            "0",
            "0",
        ],
        [
            "Tanh",
            "[-1, 1]",
            "0.01",
            "3",
            "86.0 ± 2.5",
            "1.225 ± 0.248",
            "2.0 ± 0.0 (3/3)",
            "0",
            "0",
        ],
        [
            "ReLU",
            "[-5, 5]",
            "0.01",
            "3",
            "60.0 ± 107.6",
            "1.175 ± 0.635",
            "2.0 ± 0.0 (2/3)",
            "1",
            "0",
        ],
        [
            "Tanh",
            "[-5, 5]",
            "0.01",
            "3",
            "71.0 ± 2.5",
            "1.225 ± 0.248",
            "3.0 ± 0.0 (3/3)",
            "0",
            "0",
        ],
    ]


def test_every_figure_is_embedded_and_nothing_is_fetched(report):
    paths, html, _ = report
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert sources == [
        "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode() for p in paths[2:]
    ]
    assert re.findall(r'(?:src|href)="(?!data:)', html) == []
    assert "<script" not in html and "<link" not in html and "url(" not in html


def test_figures_are_small_palette_pngs(report):
    paths, _, _ = report
    for path in paths[2:]:
        data = path.read_bytes()
        assert data[25] == PALETTE_PNG, path.name
        assert len(data) < 200_000, path.name


def test_markdown_links_the_figures_that_exist_and_says_the_same(report):
    paths, _, markdown = report
    links = re.findall(r"!\[[^\n]*?\]\((figures/[^)]+)\)", markdown)
    assert links == [f"figures/{p.name}" for p in paths[2:]]
    assert all((paths[1].parent / link).is_file() for link in links)
    assert "**[SUPPORTED]** 1. **Tanh does better than ReLU" in markdown
    assert "Tanh reached 86.0% (95% CI 83.5–88.5, n=3)" in markdown
    assert "| ReLU | [-5, 5] | 0.01 | 3 | 60.0 ± 107.6 | 1.175 ± 0.635 |" in markdown
    assert "accuracy_threshold = 70.0" in markdown


def test_text_from_the_store_is_escaped(report):
    _, html, markdown = report
    assert "experiment fake &lt;study&gt; &amp; co</h1>" in html
    assert "RuntimeError: out of &lt;memory&gt; &amp; more" in html
    assert "<study>" not in html and "<memory>" not in html
    assert "# actrange report: experiment fake \\<study> & co" in markdown


def test_where_the_data_came_from_and_every_status_are_told(report):
    _, html, _ = report
    assert "16 runs planned (11 finished, 1 diverged, 1 running, 2 pending, 1 failed)" in html
    assert "of which 12 finished or diverged" in html
    assert "Each run trains for 3 epochs" in html
    assert "4 seeds per cell (seeds 0, 1, 2, 3)" in html
    problems = next(t for t in _parsed(html).tables if t[0][0] == "Run")
    assert sorted(row[5] for row in problems[1:]) == [
        "diverged",
        "failed",
        "pending",
        "pending",
        "running",
    ]
    diverged = next(row for row in problems if row[5] == "diverged")
    assert diverged[1:5] == ["ReLU", "[-5, 5]", "0.01", "2"]
    assert diverged[6] == "training loss not finite from epoch 2"
    failed = next(row for row in problems if row[5] == "failed")
    assert failed[6] == "RuntimeError: out of <memory> & more (1 of 3 epochs stored)"
    running = next(row for row in problems if row[5] == "running")
    assert running[6] == "1 of 3 epochs stored"


def test_config_environment_and_evidence_are_shown(report):
    _, html, _ = report
    config = re.search(r"<pre>(.*?)</pre>", html, re.S).group(1)
    assert "&lt;study&gt;" in config
    assert unescape(config) == to_toml(experiment()).strip()
    environment = next(t for t in _parsed(html).tables if t[0] == ["Item", "Value"])
    assert ["packages", "torch 2.13.0, numpy 2.0.0"] in environment
    assert ["cuda", "none"] in environment
    assert "At [-1, 1], Tanh finished at 86.0% (n=3); at epoch 1, 35% of lin2" in html
    assert "epochs 1–5 on the left" in html  # no switch in the config: split at epoch 5


def test_one_range_one_seed_two_lrs_and_no_layer_data_still_give_a_verdict(tmp_path):
    build_result_directory(
        tmp_path, ranges=(-1.0,), seeds=(0,), lrs=(0.01, 0.1), layers=False, records=False
    )
    with Store(tmp_path) as store:
        paths = write_report(store, tmp_path)
    html = paths[0].read_text(encoding="utf-8")
    assert [p.stem for p in paths[2:]] == [
        "heatmap_accuracy",
        "loss_range_-1_1",
        "accuracy_range_-1_1",
        "per_class_range_-1_1",
    ]
    assert html.count('<span class="badge inconclusive">inconclusive</span>') == 2
    assert "too few seeds (n=1 on one side)" in html
    assert "cannot be estimated: only one range was run" in html
    assert "shown at its best learning rate, chosen on these same runs" in html
    assert "At [-1, 1] no two activations stored pre-activation samples." in html
    assert "no layer statistics were recorded at epoch 1" in html
    # the lower learning rate ends 5 points higher, so the comparisons use it (marked *)
    cells = next(t for t in _parsed(html).tables if t[0][0] == "Activation")
    assert [row[:5] for row in cells[1:]] == [
        ["ReLU", "[-1, 1]", "0.01 *", "1", "80.0"],
        ["ReLU", "[-1, 1]", "0.1", "1", "75.0"],
        ["Tanh", "[-1, 1]", "0.01 *", "1", "85.0"],
        ["Tanh", "[-1, 1]", "0.1", "1", "80.0"],
    ]
    assert "Each activation is shown at the learning rate its comparisons use." in html


def test_no_finished_runs_give_a_report_that_says_so(tmp_path):
    build_result_directory(tmp_path, train=False)
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "loss_range_-9_9.png").write_bytes(b"stale")
    (figures / "my_own.png").write_bytes(b"kept")
    with Store(tmp_path) as store:
        paths = write_report(store, tmp_path)
    assert paths == [tmp_path / "report.html", tmp_path / "report.md"]
    html = paths[0].read_text(encoding="utf-8")
    assert "No run has finished yet, so there are no results to show." in html
    assert "16 runs planned (16 pending), of which 0 finished or diverged" in html
    assert html.count("badge inconclusive") == 2
    assert "<img" not in html
    assert sorted(p.name for p in figures.iterdir()) == ["my_own.png"]
    assert "16 runs in this experiment: 16 pending." in paths[1].read_text(encoding="utf-8")


def test_an_empty_store_gives_a_report(tmp_path):
    Store(tmp_path).close()
    with Store(tmp_path, create=False) as store:
        paths = write_report(store, tmp_path)
    html = paths[0].read_text(encoding="utf-8")
    assert "holds no planned runs yet" in html
    assert "(no config was recorded)" in html and "No environment was recorded." in html


def test_the_command_line_writes_the_report(tmp_path, capsys):
    build_result_directory(tmp_path, train=False)
    assert main(["report", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "report.html"), str(tmp_path / "report.md")]
