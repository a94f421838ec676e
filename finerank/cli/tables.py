"""Result tables that stay readable at any width, in a terminal or piped.

Rich fits a table to the console (the terminal's width, or 80 columns when the output is piped
and ``COLUMNS`` is unset) by squeezing every column; for ranked results that blanks the rank
and score columns first, which are the point. Here every column gets an explicit width: the
columns marked ``shrink`` give up their width first (the text, then labels), each row stays on
one line and long text ends in ``…``; ranks and scores are always printed in full.

Example:
    >>> from rich.console import Console
    >>> console = Console(width=40, color_system=None)
    >>> columns = [Column("rank", justify="right"), Column("text", shrink=1)]
    >>> rows = [["1", "a long document " * 5]]
    >>> print_table("demo", columns, rows, console=console)  # doctest: +NORMALIZE_WHITESPACE
                      demo
    ┏━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
    ┃ rank ┃ text                          ┃
    ┡━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
    │    1 │ a long document a long docum… │
    └──────┴───────────────────────────────┘
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich.cells import cell_len


@dataclass(frozen=True)
class Column:
    """One column: its header, alignment and whether (and how early) it may be shortened.

    ``shrink=0`` never shortens the column; columns with ``shrink=1`` are shortened first, then
    ``shrink=2``, and so on, each down to ``min_width`` (or its header). ``max_width`` caps the
    column even when there is room (long document text).
    """

    header: str
    justify: Literal["left", "right"] = "left"
    shrink: int = 0
    max_width: int | None = None
    min_width: int = 8


def fit_widths(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> list[int]:
    """Content width of each column so that the table fits ``width`` console cells.

    Args:
        columns: the column specs.
        rows: the cells, one string per column.
        width: the console width in cells.

    Returns:
        One content width per column (padding and borders excluded).

    Example:
        >>> fit_widths([Column("#"), Column("text", shrink=1)], [["1", "x" * 100]], 30)
        [1, 22]
    """
    widths = []
    for index, column in enumerate(columns):
        natural = max([cell_len(column.header), *(cell_len(row[index]) for row in rows)])
        widths.append(min(natural, column.max_width) if column.max_width else natural)
    available = width - (3 * len(columns) + 1)  # one space each side, one border between
    excess = sum(widths) - available
    levels = sorted({column.shrink for column in columns if column.shrink > 0})
    # first down to each column's min_width, then (a very narrow console) to its header
    for use_min_width in (True, False):
        for level in levels:
            for index, column in enumerate(columns):
                if excess <= 0:
                    return widths
                if column.shrink != level:
                    continue
                floor = max(column.min_width if use_min_width else 1, cell_len(column.header))
                cut = min(excess, max(0, widths[index] - floor))
                widths[index] -= cut
                excess -= cut
    return widths


def print_table(
    title: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    console=None,
) -> None:
    """Print ``rows`` as one-line-per-row table fitted to the console (see the module doc).

    Args:
        title: the line above the table.
        columns: the column specs, in order.
        rows: one sequence of strings per row (newlines are shown as spaces).
        console: a ``rich.console.Console``; default: a new one on stdout.
    """
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    cells = [[" ".join(str(cell).split()) for cell in row] for row in rows]
    widths = fit_widths(columns, cells, console.width)
    table = Table(title=title)
    for column, width in zip(columns, widths, strict=True):
        table.add_column(
            column.header, justify=column.justify, width=width, no_wrap=True, overflow="ellipsis"
        )
    for row in cells:
        table.add_row(*row)
    console.print(table)
