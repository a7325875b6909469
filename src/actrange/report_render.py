"""The report as a list of blocks, rendered twice: self-contained HTML and Markdown.

Both renderings come from the same blocks, so they carry the same text. The HTML embeds every
figure as a base64 data URI and holds its style inline: one file that opens anywhere, offline,
with no script. The Markdown links the figures relatively (``figures/NAME.png``).
"""

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

FIGURE_FOLDER = "figures"


@dataclass(frozen=True)
class Heading:
    """A section title; level 1 is the report's title."""

    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    """Plain text, with an optional bold lead-in such as "Interaction."."""

    text: str
    lead: str = ""


@dataclass(frozen=True)
class Claim:
    """One judged half of the hypothesis: an outcome badge, the hypothesis and its sentence."""

    number: int
    outcome: str
    hypothesis: str
    where: str
    sentence: str


@dataclass(frozen=True)
class Items:
    """A bulleted list."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """A table of text cells; ``numeric`` marks the columns to right-align."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Image:
    """A PNG figure written under the report's figure folder, with its caption."""

    path: Path
    caption: str


@dataclass(frozen=True)
class Code:
    """Preformatted text, shown as is."""

    text: str


Block = Heading | Paragraph | Claim | Items | Table | Image | Code

_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
  margin: 0; background: #f6f7f9; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 32px 64px; background: #fff;
  box-shadow: 0 0 12px rgba(0, 0, 0, 0.06); }
h1 { font-size: 1.7em; margin: 0.4em 0 0.3em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #dde1e6; padding-bottom: 0.2em; }
h3 { font-size: 1.08em; margin-top: 1.5em; }
p, li { max-width: 60em; }
.claim { border: 1px solid #dde1e6; border-radius: 8px; padding: 10px 14px; margin: 12px 0; }
.claim .hypothesis { font-weight: 600; }
.claim .where { color: #5a6270; }
.claim p { margin: 6px 0 0; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; font-size: 0.85em;
  font-weight: 600; margin-right: 6px; color: #fff; vertical-align: 1px; }
.badge.supported { background: #1e7d3a; }
.badge.not-supported { background: #b3261e; }
.badge.inconclusive { background: #8a6d00; }
.scroll { overflow-x: auto; margin: 12px 0; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #dde1e6; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f2f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.note { color: #5a6270; font-size: 0.9em; }
figure { margin: 16px 0 24px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #eceef1; }
figcaption { color: #5a6270; font-size: 0.9em; margin-top: 4px; max-width: 60em; }
pre { background: #f6f7f9; border: 1px solid #dde1e6; padding: 10px 12px; font-size: 0.85em;
  white-space: pre-wrap; overflow-wrap: anywhere; }
"""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, so the page reserves the space up front."""
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _html_table(table: Table) -> str:
    numeric = table.numeric or (False,) * len(table.header)
    head = "".join(f"<th>{_e(h)}</th>" for h in table.header)
    body = []
    for row in table.rows:
        cells = "".join(
            f'<td class="num">{_e(c)}</td>' if num else f"<td>{_e(c)}</td>"
            for c, num in zip(row, numeric, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    note = f'<p class="note">{_e(table.note)}</p>' if table.note else ""
    rows = "\n".join(body)
    return f'<div class="scroll"><table>\n<tr>{head}</tr>\n{rows}\n</table></div>{note}'


def _html_image(image: Image) -> str:
    data = image.path.read_bytes()
    width, height = _png_size(data)
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (
        f'<figure id="{_e(image.path.stem)}"><img src="{uri}" alt="{_e(image.caption)}" '
        f'width="{width}" height="{height}"><figcaption>{_e(image.caption)}</figcaption></figure>'
    )


def _html_block(block: Block) -> str:
    match block:
        case Heading(text, level):
            return f"<h{level}>{_e(text)}</h{level}>"
        case Paragraph(text, lead):
            strong = f"<strong>{_e(lead)}</strong> " if lead else ""
            return f"<p>{strong}{_e(text)}</p>"
        case Claim(number, outcome, hypothesis, where, sentence):
            badge = f'<span class="badge {outcome.replace(" ", "-")}">{_e(outcome)}</span>'
            place = f' <span class="where">{_e(where)}</span>' if where else ""
            title = f'<span class="hypothesis">{number}. {_e(hypothesis)}</span>'
            return f'<div class="claim">{badge}{title}{place}<p>{_e(sentence)}</p></div>'
        case Items(items):
            return "<ul>" + "".join(f"<li>{_e(item)}</li>" for item in items) + "</ul>"
        case Table():
            return _html_table(block)
        case Image():
            return _html_image(block)
        case Code(text):
            return f"<pre>{_e(text)}</pre>"
    raise TypeError(f"not a report block: {block!r}")


def to_html(title: str, blocks: list[Block]) -> str:
    """The report as one self-contained HTML page.

    Args:
        title: the page title (the browser tab); the first Heading is the visible one.
        blocks: the report's content in order; images are read from disk and embedded.

    Returns:
        The HTML text; every piece of text is escaped.
    """
    body = "\n".join(_html_block(block) for block in blocks)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


# backslash, backtick, star, "<" and an underscore at the edge of a word start markup;
# brackets only form links before "(" or "[", which report text never puts there
_MD_SPECIAL = re.compile(r"[\\`*<]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def _m(text: str, table: bool = False) -> str:
    """Text with the characters Markdown would read as markup escaped ("|" too in a table)."""
    escaped = _MD_SPECIAL.sub(lambda match: "\\" + match.group(0), text).replace("\n", " ")
    return escaped.replace("|", "\\|") if table else escaped


def _md_table(table: Table) -> str:
    numeric = table.numeric or (False,) * len(table.header)
    lines = [
        "| " + " | ".join(_m(h, table=True) for h in table.header) + " |",
        "|" + "|".join("---:" if num else "---" for num in numeric) + "|",
    ]
    lines += ["| " + " | ".join(_m(c, table=True) for c in row) + " |" for row in table.rows]
    if table.note:
        lines += ["", f"*{_m(table.note)}*"]
    return "\n".join(lines)


def _md_block(block: Block) -> str:
    match block:
        case Heading(text, level):
            return f"{'#' * level} {_m(text)}"
        case Paragraph(text, lead):
            return (f"**{_m(lead)}** " if lead else "") + _m(text)
        case Claim(number, outcome, hypothesis, where, sentence):
            place = f" {_m(where)}" if where else ""
            headline = f"**[{outcome.upper()}]** {number}. **{_m(hypothesis)}**{place}"
            return f"{headline}\n\n{_m(sentence)}"
        case Items(items):
            return "\n".join(f"- {_m(item)}" for item in items)
        case Table():
            return _md_table(block)
        case Image(path, caption):
            return f"![{_m(caption)}]({FIGURE_FOLDER}/{path.name})\n\n*{_m(caption)}*"
        case Code(text):
            # a fence longer than any run of backticks in the text cannot be closed by it
            longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
            fence = "`" * max(3, longest + 1)
            return f"{fence}\n{text.rstrip()}\n{fence}"
    raise TypeError(f"not a report block: {block!r}")


def to_markdown(blocks: list[Block]) -> str:
    """The report as Markdown, figures linked as figures/NAME.png beside it.

    Args:
        blocks: the report's content in order.

    Returns:
        The Markdown text; text is escaped where Markdown would read it as markup.
    """
    return "\n\n".join(_md_block(block) for block in blocks) + "\n"
