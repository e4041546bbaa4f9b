"""Tables that never cut a figure.

rich shrinks every column of a table that is wider than the console, numbers included
("0.840" became "0", "$ per 1k" became "0.00…"). Here a table is fitted explicitly:

- a number column is never narrower than its widest figure (its header may wrap between
  words, never inside one);
- text columns (names, notes) wrap, folding a long name, before any number would have to;
- when even that does not fit, the table is split into column groups stacked one under the
  other, each repeating the key columns (the candidate, ...);
- when stdout is not a terminal and `COLUMNS` is not set (CI logs, files, pipes), the
  table is printed as markdown at full width, nothing wrapped.

`COLUMNS` is honoured: rich reads it when the console is made (`make_console`), and a piped
console with `COLUMNS` set is fitted to that width like a terminal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

MIN_TEXT = 8        # a text column is not folded narrower than this (or its header's words)


@dataclass
class Col:
    header: str
    number: bool = False          # a figure: right-justified, never wrapped or cut


def make_console(**kwargs) -> Console:
    """stdout's console: the terminal's width (or `COLUMNS`); piped without `COLUMNS`, no
    wrapping at all (lines stay whole in logs, tables go out as markdown)."""
    if not Console().is_terminal and not _columns():
        return Console(soft_wrap=True, **kwargs)
    return Console(**kwargs)


def _columns() -> int | None:
    c = os.environ.get("COLUMNS", "")
    return int(c) if c.isdigit() and int(c) > 0 else None


def markdown_mode(console: Console) -> bool:
    """Markdown at full width: stdout is not a terminal and no width was asked for."""
    return not console.is_terminal and _columns() is None


def _text(cell) -> Text:
    if isinstance(cell, Text):
        return cell
    return Text("-" if cell is None else str(cell))


def _word_max(s: str) -> int:
    return max((len(w) for w in s.split()), default=0)


def print_table(console: Console, cols: list[Col], rows: list[list], *,
                title: str | None = None, key: int = 1) -> None:
    """Print `rows` (cells: str, taken literally, or rich Text) under `cols`, fitted to the
    console so that no figure is cut; `key` leading columns repeat in each group when the
    table has to be split."""
    cells = [[_text(c) for c in r] for r in rows]
    if markdown_mode(console):
        _markdown(console, cols, cells, title)
        return
    groups = _groups(cols, cells, console.width, key)
    for n, idx in enumerate(groups):
        sub_title = title if len(groups) == 1 else \
            f"{title or 'table'} ({n + 1}/{len(groups)})"
        widths = _fit([cols[i] for i in idx], [[r[i] for i in idx] for r in cells],
                      console.width)
        t = Table(title=sub_title, header_style="bold")
        for i, w in zip(idx, widths, strict=True):
            c = cols[i]
            t.add_column(c.header, width=w, no_wrap=c.number, overflow="fold",
                         justify="right" if c.number else "left")
        for r in cells:
            t.add_row(*[r[i] for i in idx])
        need = sum(widths) + 3 * len(widths) + 1
        # a group that cannot fit (one key and one figure wider than the console) is
        # printed wider than the console: the terminal wraps the line, the figure stays whole
        console.print(t, width=max(console.width, need))


def _mins(cols: list[Col], cells: list[list[Text]]) -> tuple[list[int], list[int]]:
    """(natural, minimum) content width of each column."""
    nat, low = [], []
    for i, c in enumerate(cols):
        widest = max((r[i].cell_len for r in cells), default=0)
        n = max(widest, len(c.header))
        nat.append(n)
        if c.number:
            low.append(max(widest, _word_max(c.header)))
        else:
            low.append(min(n, max(MIN_TEXT, _word_max(c.header))))
    return nat, low


def _fit(cols: list[Col], cells: list[list[Text]], width: int) -> list[int]:
    """Column widths within `width`: numbers at least their widest figure, text columns
    shrunk widest first (water-filling) down to their minimum."""
    nat, low = _mins(cols, cells)
    room = width - (3 * len(cols) + 1)
    if sum(nat) <= room:
        return nat
    text = [i for i, c in enumerate(cols) if not c.number]
    out = list(nat)
    budget = room - sum(n for n, c in zip(nat, cols, strict=True) if c.number)
    if budget < sum(low[i] for i in text):   # wrap number headers between words too
        out = [low[i] if c.number else nat[i] for i, c in enumerate(cols)]
        budget = room - sum(low[i] for i, c in enumerate(cols) if c.number)
    if budget <= sum(low[i] for i in text):
        return [low[i] if not c.number else out[i] for i, c in enumerate(cols)]
    # the largest cap such that sum(max(low, min(nat, cap))) fits the budget
    lo, hi = 0, max(nat[i] for i in text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(max(low[i], min(nat[i], mid)) for i in text) <= budget:
            lo = mid
        else:
            hi = mid - 1
    for i in text:
        out[i] = max(low[i], min(nat[i], lo))
    return out


def _groups(cols: list[Col], cells: list[list[Text]], width: int, key: int) -> list[list[int]]:
    """Column indices per stacked table: all in one if their minimum widths fit, else the
    key columns plus as many more as fit, group after group."""
    _, low = _mins(cols, cells)
    cost = [w + 3 for w in low]

    def fits(idx):
        return sum(cost[i] for i in idx) + 1 <= width

    if fits(range(len(cols))):
        return [list(range(len(cols)))]
    keys = list(range(min(key, len(cols))))
    groups, current = [], list(keys)
    for i in range(len(keys), len(cols)):
        if len(current) > len(keys) and not fits(current + [i]):
            groups.append(current)
            current = list(keys)
        current.append(i)
    groups.append(current)
    return groups


def _markdown(console: Console, cols: list[Col], cells: list[list[Text]], title) -> None:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    rows = [[esc(c.header) for c in cols]] + [[esc(t.plain) for t in r] for r in cells]
    w = [max(len(r[i]) for r in rows) for i in range(len(cols))]

    def line(r):
        return "| " + " | ".join(
            (s.rjust(w[i]) if cols[i].number else s.ljust(w[i])) for i, s in enumerate(r)
        ) + " |"

    out = ([title, ""] if title else []) + [line(rows[0])]
    out.append("|" + "|".join(("-" * (w[i] + 1) + ":") if c.number else "-" * (w[i] + 2)
                              for i, c in enumerate(cols)) + "|")
    out += [line(r) for r in rows[1:]]
    console.print("\n".join(out), markup=False, highlight=False, soft_wrap=True)
