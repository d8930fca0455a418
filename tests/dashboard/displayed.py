"""What a reader sees of a page run by AppTest: tables as their cells are displayed (a Styler's
display values, missing values as the table's placeholder, in the columns it shows), their
headers, every text, and the checks that a page reads cleanly (no emoji, no "None", no raw
column header)."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import pyarrow as pa
from streamlit.testing.v1 import AppTest

MISSING_WORDS = ("None", "nan", "NaN", "NaT", "null")


def displayed_cells(element: Any) -> list[list[str]]:
    """The cells of a dataframe element as the browser shows them, in the columns it shows (its
    column order, as :func:`headers`): a Styler's display values where it sent them, else the
    data, missing values as the element's placeholder ("None" without one)."""
    proto = element.proto
    styler = proto.arrow_data.styler
    frame = element.value
    if styler.display_values:
        frame = pa.ipc.open_stream(styler.display_values).read_all().to_pandas()
    if proto.column_order:
        frame = frame[list(proto.column_order)]
    placeholder = proto.placeholder if proto.HasField("placeholder") else "None"
    return [
        [placeholder if _missing(cell) else str(cell) for cell in row]
        for row in frame.itertuples(index=False)
    ]


def displayed_rows(element: Any) -> list[dict[str, str]]:
    """The rows of a dataframe element as displayed, each by its column headers."""
    shown = headers(element)
    return [dict(zip(shown, row, strict=True)) for row in displayed_cells(element)]


def _missing(cell: object) -> bool:
    return cell is None or (isinstance(cell, float) and cell != cell) or str(cell) == "NaT"


def column_config(element: Any) -> dict[str, dict[str, Any]]:
    """The column configuration a dataframe element sent, by column name."""
    columns = element.proto.columns
    return dict(json.loads(columns)) if columns else {}


def headers(element: Any) -> list[str]:
    """The column headers a dataframe element shows (its labels, else the column names)."""
    config = column_config(element)
    shown = list(element.proto.column_order) or [str(c) for c in element.value.columns]
    return [str(config.get(name, {}).get("label") or name) for name in shown]


def page_texts(app: AppTest) -> list[str]:
    """Every text the page shows: headings, paragraphs, captions, messages, metrics, table
    headers and cells."""
    texts: list[str] = []
    kinds = ("title", "subheader", "markdown", "caption", "info", "success", "warning", "error")
    for kind in kinds:
        texts += [str(e.value) for e in app.get(kind)]
    for metric in app.metric:
        texts += [str(metric.label), str(metric.value)]
    for frame in app.dataframe:
        texts += headers(frame)
        texts += [cell for row in displayed_cells(frame) for cell in row]
    return texts


def emoji_in(text: str) -> list[str]:
    """Pictographs that need an emoji font (symbols of category So: 🟢, ⚪, ✅ ...)."""
    return [char for char in text if unicodedata.category(char) == "So"]


def assert_reads_cleanly(app: AppTest) -> None:
    """No emoji, no "None", no empty, "-" or snake_case column header anywhere on the page, and
    every table shows a missing value as an empty cell."""
    texts = page_texts(app)
    assert [e for text in texts for e in emoji_in(text)] == []
    assert [t for t in texts if t.strip() in MISSING_WORDS] == []
    for frame in app.dataframe:
        assert frame.proto.HasField("placeholder") and frame.proto.placeholder == ""
        for header in headers(frame):
            assert header.strip() not in ("", "-") and "_" not in header, headers(frame)


def status_colours(element: Any) -> dict[str, str]:
    """The status words of a styled table and the CSS each status cell was given."""
    styler = element.proto.arrow_data.styler
    # the Styler names a cell by its row and its column in the data, shown or not
    column = [str(c) for c in element.value.columns].index("status")
    words = {f"_row{i}_col{column}": row["status"] for i, row in enumerate(_data_rows(element))}
    return {
        words[cell_id]: css.strip()
        for rule in styler.styles.split("}")
        if "{" in rule
        for selector, css in [rule.split("{", 1)]
        for cell_id in words
        if selector.strip().endswith(cell_id)
    }


def _data_rows(element: Any) -> list[dict[str, Any]]:
    return list(element.value.to_dict("records"))
