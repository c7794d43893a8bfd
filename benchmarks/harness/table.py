"""Tables for the reports: one width and format per column, used for the header and every row.

    Table(Col("size", 9), Col("req/s", 7, ".1f"), Col("errors", 6)).row("640x480", 118.5, 0).print()

prints, right-aligned and separated by one space (or a column's own `sep`):

         size   req/s errors
      640x480   118.5      0
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Self


@dataclass(frozen=True, slots=True)
class Col:
    header: str
    width: int
    fmt: str = ""  # the format spec after the width: ".2f", ".1%", "" (str, int)
    sep: str = " "  # printed before this column (not before the first)


class Table:
    def __init__(self, *columns: Col) -> None:
        self.columns = columns
        self.rows: list[tuple[object, ...]] = []

    def row(self, *values: object) -> Self:
        if len(values) != len(self.columns):
            raise ValueError(f"{len(values)} values for {len(self.columns)} columns")
        self.rows.append(values)
        return self

    def _line(self, cells: list[str]) -> str:
        out = cells[0]
        for col, cell in zip(self.columns[1:], cells[1:], strict=True):
            out += col.sep + cell
        return out

    def lines(self) -> list[str]:
        header = self._line([f"{c.header:>{c.width}}" for c in self.columns])
        body = [
            self._line([format(v, f">{c.width}{c.fmt}") for c, v in zip(self.columns, row, strict=True)])
            for row in self.rows
        ]
        return [header, *body]

    def print(self) -> None:
        print("\n".join(self.lines()))


def progress(line: str) -> None:
    """A line on standard error while a benchmark runs; the report goes to standard output at the end."""
    print(line, file=sys.stderr, flush=True)
