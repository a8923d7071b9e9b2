"""Answers printed as tables: a header, a rule, a row a line, columns as wide as their widest cell."""

from __future__ import annotations

from collections.abc import Sequence

# The widest a table's cell is printed (--json has every value whole).
CELL_WIDTH = 48


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]], last_whole: bool = False) -> None:
    """The rows' cells under their columns, a cell wider than CELL_WIDTH cut in the middle (`fit`); with
    `last_whole` the last column (a link, a count) is printed whole and unpadded."""
    cut = len(columns) - 1 if last_whole else len(columns)
    widths = [min(CELL_WIDTH, max([len(c), *(len(r[i]) for r in rows)])) for i, c in enumerate(columns[:cut])]
    widths += [len(c) for c in columns[cut:]]

    def line(cells: Sequence[str]) -> str:
        shown = [fit(v, w).ljust(w) for v, w in zip(cells[:cut], widths, strict=False)] + list(cells[cut:])
        return "  ".join(shown).rstrip()

    print(line(columns))
    print(line(["-" * w for w in widths]))
    for row in rows:
        print(line(row))


def fit(text: str, width: int) -> str:
    """The text, cut in the middle where it is wider: names that share a long beginning (a folder's path) keep
    the end that tells them apart."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head):]}"
