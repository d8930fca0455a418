"""CSV that a spreadsheet opens as data, never as formulas (OWASP's CSV injection guidance).

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` (and, in some, a control
character first: LibreOffice 7.4 skips a leading NUL and runs the formula after it) as a formula: a
therapy named ``=HYPERLINK(...)`` or ``=cmd|' /C calc'!A0`` in a file someone downloads and opens
would be a link or a command. Every text cell written here is *neutralised*: such a cell gets a
single quote (``'``) in front, which spreadsheets show as text. A text cell holding a separator of
any locale (``,`` ``;`` tab ``|``), a double quote or a line break is also enclosed in double
quotes, so a ``;`` in it cannot start a new cell where ``;`` separates cells. Only text is touched:
numbers (negative ones included), dates, booleans and empty values are written as they are.

Every CSV the product writes from data goes through here: the dashboard's downloads and
``mobility export-forecast`` (:func:`frame_csv`), and ``mobility sql`` (:func:`write_rows`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, TextIO

import polars as pl

# OWASP's four, and every control character (U+0000-U+001F and U+007F; tab and carriage return
# among them), as OWASP ASVS 1.2.10 asks
CONTROL_CHARACTERS: Final = (*(chr(code) for code in range(0x20)), "\x7f")
FORMULA_PREFIXES: Final = ("=", "+", "-", "@", *CONTROL_CHARACTERS)
# the same, as a regular expression (for polars)
_FORMULA_START: Final = r"^[=+\-@\x00-\x1F\x7F]"
# a cell holding one of these is enclosed in double quotes
QUOTED_WHEN_HOLDING: Final = (",", ";", "\t", "|", '"', "\r", "\n")
TEXT_MARK: Final = "'"


def neutralise(text: str) -> str:
    """``text`` as a spreadsheet shows it and never runs it: a single quote before a formula
    prefix (``=``, ``+``, ``-``, ``@``, or a control character: U+0000-U+001F, U+007F), else
    unchanged.

    Args:
        text: a text cell.
    """
    return TEXT_MARK + text if text.startswith(FORMULA_PREFIXES) else text


def text_field(text: str) -> str:
    """The CSV field of a text cell: :func:`neutralise`\\ d, in double quotes (inner ones
    doubled) when it holds a separator, a quote or a line break, or is empty (so an empty text
    and a missing value stay apart).

    Args:
        text: a text cell.
    """
    shown = neutralise(text)
    if not shown or any(char in shown for char in QUOTED_WHEN_HOLDING):
        return '"' + shown.replace('"', '""') + '"'
    return shown


def write_rows(out: TextIO, header: Sequence[str], rows: Iterable[Iterable[object]]) -> None:
    """Write ``header`` and ``rows`` as CSV (``,``, ``\\n`` line ends) to ``out``.

    Text cells (``str``) and the column names are written by :func:`text_field`; ``None`` as an
    empty field; any other value as ``str(value)``, quoted only when it holds a separator, a
    quote or a line break.

    Args:
        out: where to write (``sys.stdout`` for ``mobility sql``).
        header: the column names.
        rows: each row's values, in the order of ``header``.
    """
    out.write(_line(header))
    for row in rows:
        out.write(_line(row))


def frame_csv(frame: pl.DataFrame) -> str:
    """``frame`` as CSV text, its text columns and column names neutralised as
    :func:`text_field` does; numbers, dates and booleans as polars writes them.

    Args:
        frame: the rows to write (no nested columns: CSV has no form for them).
    """
    text_columns = [
        name
        for name, dtype in frame.schema.items()
        if dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum)
    ]
    body = frame.with_columns(_text_field(pl.col(name)).alias(name) for name in text_columns)
    if frame.width == 1:  # a row of one empty field is not a blank line (which readers skip)
        body = body.with_columns(pl.first().cast(pl.String).fill_null('""'))
    # every field that needs quotes has them already: polars must not add its own
    return _line(frame.columns) + body.write_csv(include_header=False, quote_style="never")


def _line(cells: Iterable[object]) -> str:
    fields = [_field(value) for value in cells]
    if fields == [""]:
        fields = ['""']  # a row of one empty field is not a blank line
    return ",".join(fields) + "\n"


def _field(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return text_field(value)
    shown = str(value)
    if any(char in shown for char in QUOTED_WHEN_HOLDING):
        return '"' + shown.replace('"', '""') + '"'
    return shown


def _text_field(column: pl.Expr) -> pl.Expr:
    """:func:`text_field` as a polars expression (a missing value stays missing)."""
    text = column.cast(pl.String)
    risky = text.str.contains(_FORMULA_START)
    shown = pl.when(risky).then(pl.lit(TEXT_MARK) + text).otherwise(text)
    quoted = (shown == "") | shown.str.contains_any(list(QUOTED_WHEN_HOLDING))
    return (
        pl.when(quoted)
        .then(pl.lit('"') + shown.str.replace_all('"', '""', literal=True) + pl.lit('"'))
        .otherwise(shown)
    )
