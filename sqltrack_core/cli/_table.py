"""Tables that fit a width: column widths, cut values, hidden columns, wrapped headers, drawing.

Pure text in, lines out (standard library only), so every layout is table-tested without a
terminal. `_output` turns DataFrames into `Column` lists and prints what `layout` returns.

When the natural table is wider than the width: the columns that fit at a comfortable width
(`COMFORT` cells, or less if their values are shorter) are shown, the ones the caller keeps
first, then the others in order (if not even one fits so, at their floors: the header on at
most `HEADER_LINES` lines, text cut to `MIN_TEXT` cells); the rest are named in a note. The
room left widens the shown columns, first those it makes whole, up to `CAP` cells of text,
then to their full width. Text longer than its column is cut with ``…``; numbers and times
never are. A single row that would hide columns is drawn as a ``column | value`` table."""

from __future__ import annotations

import os
import re
import shutil
import sys
import textwrap
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

__all__ = [
    "Column",
    "Kind",
    "Layout",
    "fit_text",
    "layout",
    "note",
    "printable",
    "terminal_width",
    "text_width",
]

#: "text" may be cut; "number" (right-aligned) and "fixed" (times, booleans) never are
Kind = Literal["text", "number", "fixed"]

CAP = 40  # when a table does not fit, text longer than this is cut first
MIN_TEXT = 8  # a text column is never cut narrower than this to show more columns
COMFORT = 16  # columns are hidden rather than cut below this (when another way fits)
HEADER_LINES = 3  # a header may wrap onto this many lines before its column must widen
MIN_WIDTH = 20  # the narrowest width honoured, whatever $COLUMNS says
ELLIPSIS = "…"

_BREAK = re.compile(r"(?<=[./:_\- ])")  # headers wrap after these characters
# control characters would move the cursor or recolour the terminal: never print them raw
_CONTROLS = {c: "\ufffd" for c in [*range(0x20), *range(0x7F, 0xA0)]}
_CONTROLS.update({ord("\n"): "↵", ord("\r"): "", ord("\t"): " ", 0x2028: "↵", 0x2029: "↵"})


def terminal_width() -> int | None:
    """The width tables are fitted to: ``$COLUMNS`` when set, else the terminal's when stdout
    is one; None (no limit: every column, every value whole) for piped output."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return max(int(columns), MIN_WIDTH)
    if sys.stdout.isatty():
        return max(shutil.get_terminal_size().columns, MIN_WIDTH)
    return None


def printable(text: str) -> str:
    """`text` safe for a terminal: newlines as ``↵``, other control characters replaced."""
    return text if text.isprintable() else text.translate(_CONTROLS)


@lru_cache(maxsize=4096)
def _char_width(char: str) -> int:
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def text_width(text: str) -> int:
    """How many terminal cells `text` takes (East Asian wide characters take two)."""
    if text.isascii():
        return len(text)
    return sum(_char_width(c) for c in text)


def _split(text: str, width: int) -> tuple[str, str]:
    """`text` split where its head would pass `width` cells."""
    if text.isascii():
        return text[:width], text[width:]
    used = 0
    for i, char in enumerate(text):
        used += _char_width(char)
        if used > width:
            return text[:i], text[i:]
    return text, ""


def fit_text(text: str, width: int) -> str:
    """`text`, cut to `width` cells with a trailing ``…`` when longer."""
    if text_width(text) <= width:
        return text
    return _split(text, max(width - 1, 0))[0] + ELLIPSIS if width > 0 else ""


def wrap_header(header: str, width: int) -> list[str]:
    """`header` on lines of at most `width` cells, broken after ``. / : _ -`` or spaces."""
    lines = [""]
    for piece in filter(None, _BREAK.split(header)):
        if lines[-1] and text_width(lines[-1] + piece.rstrip()) > width:
            lines.append("")
        lines[-1] += piece
    folded = []
    for line in lines:
        line = line.rstrip() or line
        while text_width(line) > width:
            head, line = _split(line, width)
            folded.append(head)
        folded.append(line)
    return folded


@dataclass
class Column:
    """One column: its header, its values as text, and whether they may be cut."""

    header: str
    cells: list[str]
    kind: Kind = "text"
    natural: int = field(init=False)

    def __post_init__(self) -> None:
        self.header = printable(self.header)
        self.cells = [printable(c) for c in self.cells]
        widest = max(map(text_width, self.cells), default=0)
        self.natural = max(text_width(self.header), widest, 1)

    def floor(self) -> int:
        """The narrowest this column gets before columns are hidden."""
        values = max(map(text_width, self.cells), default=0)
        if self.kind == "text":
            values = min(values, MIN_TEXT)
        return min(max(values, self.header_floor()), self.natural)

    def header_floor(self) -> int:
        """The narrowest width that keeps the header on `HEADER_LINES` lines (at most CAP)."""
        pieces = [text_width(p.rstrip()) for p in _BREAK.split(self.header) if p]
        width = max(pieces, default=1)
        while width < CAP and len(wrap_header(self.header, width)) > HEADER_LINES:
            width += 1
        return min(width, CAP)


@dataclass
class Layout:
    """A fitted table: its lines, the headers left out, and whether any value was cut."""

    lines: list[str]
    hidden: list[str]
    cut: bool


def _overhead(count: int, boxed: bool) -> int:
    """Cells a table of `count` columns spends on borders and padding."""
    return 3 * count + 1 if boxed else 2 * max(count - 1, 0)


def _grow(widths: list[int], targets: Sequence[int], room: int) -> int:
    """Widen columns toward `targets` within `room`: first those that then fit whole (the
    smallest shortfalls first), then the others alike, a cell at a time; return the room left."""
    short = sorted(
        (t - w, i) for i, (w, t) in enumerate(zip(widths, targets, strict=True)) if w < t
    )
    for need, i in short:
        if need > room:
            break
        widths[i] += need
        room -= need
    while room > 0:
        hungry = [i for i, (w, t) in enumerate(zip(widths, targets, strict=True)) if w < t]
        if not hungry:
            break
        for i in hungry[:room]:
            widths[i] += 1
        room -= min(len(hungry), room)
    return room


def _chosen(columns: Sequence[Column], width: int, keep: Sequence[str], boxed: bool) -> list[int]:
    """The positions of the columns shown within `width`: those named in `keep` first, then
    the others in order, each at its comfortable width (at its floor if none fits so)."""
    order = [i for i, c in enumerate(columns) if c.header in keep]
    order += [i for i in range(len(columns)) if i not in order]
    for widths in (
        [min(c.natural, max(c.floor(), COMFORT)) for c in columns],
        [c.floor() for c in columns],
    ):
        used, chosen = 0, list[int]()
        for i in order:
            used += widths[i]
            if used + _overhead(len(chosen) + 1, boxed) > width:
                break
            chosen.append(i)
        if chosen:
            return sorted(chosen)
    return [order[0]]


def fit_widths(
    columns: Sequence[Column], width: int | None, *, boxed: bool = True, keep: Sequence[str] = ()
) -> dict[int, int]:
    """Position -> width of each column shown within `width` (all of them when None)."""
    natural = {i: c.natural for i, c in enumerate(columns)}
    if width is None or sum(natural.values()) + _overhead(len(natural), boxed) <= width:
        return natural
    shown = _chosen(columns, width, keep, boxed)
    widths = [columns[i].floor() for i in shown]
    room = width - sum(widths) - _overhead(len(shown), boxed)
    if room < 0:  # one column, still too wide: cut it whatever its kind
        return {shown[0]: max(width - _overhead(1, boxed), 1)}
    wants = [min(natural[i], max(columns[i].floor(), CAP)) for i in shown]
    comfort = [min(w, COMFORT) for w in wants]
    for targets in (comfort, wants, [natural[i] for i in shown]):
        room = _grow(widths, targets, room)
    return dict(zip(shown, widths, strict=True))


def _pad(text: str, width: int, kind: Kind) -> str:
    text = fit_text(text, width)
    space = " " * (width - text_width(text))
    return space + text if kind == "number" else text + space


def _header_rows(columns: Sequence[Column], widths: Sequence[int]) -> list[list[str]]:
    wrapped = [wrap_header(c.header, w) for c, w in zip(columns, widths, strict=False)]
    height = max(map(len, wrapped), default=1)
    return [[lines[i] if i < len(lines) else "" for lines in wrapped] for i in range(height)]


def _draw(
    columns: Sequence[Column],
    widths: Sequence[int],
    *,
    boxed: bool,
    header: bool,
    bold: Callable[[str], str],
) -> list[str]:
    kinds = [c.kind for c in columns]

    def row(texts: Sequence[str], style: Callable[[str], str] = str, edge: str = "│") -> str:
        parts = [style(_pad(t, w, k)) for t, w, k in zip(texts, widths, kinds, strict=True)]
        if boxed:
            return f"{edge} " + f" {edge} ".join(parts) + f" {edge}"
        return "  ".join(parts).rstrip()

    def rule(left: str, fill: str, middle: str, right: str) -> str:
        return left + middle.join(fill * (w + 2) for w in widths) + right

    lines = []
    if boxed:
        lines.append(rule("┏", "━", "┳", "┓"))
    if header:
        heads = _header_rows(columns, widths)
        lines += [row(texts, bold, "┃" if boxed else "│") for texts in heads]
        lines.append(rule("┡", "━", "╇", "┩") if boxed else "  ".join("─" * w for w in widths))
    body = zip(*(c.cells for c in columns), strict=True) if columns else iter(())
    lines += [row(texts) for texts in body]
    if boxed:
        lines.append(rule("└", "─", "┴", "┘"))
    return lines


def layout(
    columns: Sequence[Column],
    width: int | None,
    *,
    title: str | None = None,
    keep: Sequence[str] = (),
    boxed: bool = True,
    header: bool = True,
    transpose: bool = True,
    bold: Callable[[str], str] = str,
) -> Layout:
    """`columns` drawn within `width` cells (None: no limit).

    When not all columns fit, those whose header is in `keep` are shown first. A single row
    that would hide columns is drawn transposed (``column | value``) when `transpose`; `bold`
    styles header text (after padding, so styles do not count as width).
    """
    fitted = fit_widths(columns, width, boxed=boxed, keep=keep)
    rows = len(columns[0].cells) if columns else 0
    if transpose and rows == 1 and len(fitted) < len(columns):
        pairs = [
            Column("column", [c.header for c in columns]),
            Column("value", [c.cells[0] for c in columns]),
        ]
        return layout(pairs, width, title=title, boxed=boxed, header=header, bold=bold)
    shown = [columns[i] for i in fitted]
    widths = list(fitted.values())
    cut = any(text_width(v) > w for c, w in zip(shown, widths, strict=True) for v in c.cells)
    lines = _draw(shown, widths, boxed=boxed, header=header, bold=bold)
    if title:
        span = max(map(text_width, lines), default=0)
        name = fit_text(printable(title), width) if width else printable(title)
        lines.insert(0, name.center(span).rstrip())
    hidden = [c.header for i, c in enumerate(columns) if i not in fitted]
    return Layout(lines, hidden, cut)


def note(fitted: Layout, width: int | None, hint: str | None) -> list[str]:
    """The lines under a fitted table that say what was left out and how to see it."""
    if not fitted.hidden and not fitted.cut:
        return []
    how = (hint or "--format csv or json prints every column and value whole").rstrip(".")
    if fitted.hidden:
        count, names = len(fitted.hidden), [fitted.hidden[0]]
        for name in fitted.hidden[1:]:  # as many names as about two lines hold
            if len(", ".join([*names, name])) > 2 * (width or 80) - 60:
                break
            names.append(name)
        listed = ", ".join(names)
        if len(names) < count:
            listed += f" and {count - len(names)} more"
        said = f"{count} column{'s' if count != 1 else ''} hidden to fit: {listed}."
    else:
        said = f"Values ending in {ELLIPSIS} are cut short to fit."
    how = how[0].upper() + how[1:] if how[0].isalpha() else how
    wrapped = textwrap.wrap(f"{said} {how}.", width or 10**6)
    return [printable(line) for line in wrapped]
