"""The building blocks of report.html: escaping, tables, cards, embedded figures and number formats.

Shared by every section in `report.sections`, so that a table or a percentage
looks the same wherever it appears on the page.
"""

import base64
import html
import json
from pathlib import Path

from catsdogs.runs import RunDir

# Longest list (quarantined files, duplicate groups) the report shows before "... and N more".
LIST_LIMIT = 20


def figures_html(run: RunDir, figures: list, wide: bool = False) -> str:
    """Embed the figures that exist as base64 PNGs, each with its caption; a note when none exists yet.

    Args:
        run: the run folder, whose evaluation figures are named by key.
        figures: (figure, caption) pairs; a figure is an evaluation figure's key or a PNG's path.
        wide: let each figure span the whole row.
    """
    items = []
    for figure, caption in figures:
        path = Path(figure) if isinstance(figure, Path) else run.evaluation_figure_path(figure)
        if path.is_file():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            name = escape(path.stem)
            items.append(
                f'<figure class="{"wide" if wide else ""}"><img alt="{name}" data-figure="{name}" '
                f'src="data:image/png;base64,{data}"><figcaption>{escape(caption)}</figcaption></figure>'
            )
    return f'<div class="figures">{"".join(items)}</div>' if items else '<p class="muted">No figure yet.</p>'


def cards_html(cards: list) -> str:
    """Headline cards from (label, value, detail) triples."""
    items = "".join(
        f'<div class="card"><div class="label">{escape(label)}</div><div class="value">{escape(value)}</div>'
        f'<div class="detail">{escape(detail)}</div></div>'
        for label, value, detail in cards
    )
    return f'<div class="cards">{items}</div>'


def table_html(headers: list, rows: list, header: bool = True) -> str:
    """A table of escaped cells; `header=False` leaves out the header row."""
    head = "<thead><tr>" + "".join(f"<th>{escape(cell)}</th>" for cell in headers) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def more_note(count: int) -> str:
    """The "... and N more" line under a list cut at `LIST_LIMIT`, or nothing when nothing was cut."""
    return f'<p class="muted">… and {count - LIST_LIMIT} more in manifest.json.</p>' if count > LIST_LIMIT else ""


def read_json(path: str | Path) -> object:
    """The JSON in `path`, or None when it is missing or unreadable: the report shows what there is."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal, or a dash for a missing number."""
    return "—" if value is None else f"{value * 100:.1f}%"


def number(value: float | None) -> str:
    """Three decimals, or a dash for a missing number."""
    return "—" if value is None else f"{value:.3f}"


def escape(value: object) -> str:
    """`value` as text, escaped for HTML."""
    return html.escape(str(value))
