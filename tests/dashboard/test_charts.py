"""The figures of the dashboard: what each trace and band shows."""

from __future__ import annotations

import base64
import json
import math
from datetime import date
from typing import Any

import numpy as np
import polars as pl

from dashboard import charts


def _values(data: Any) -> Any:
    """A trace's data array (charts pass numpy arrays) as Python values: days as dates, a gap in
    the numbers (NaN) as None, so a gap and a zero stay apart."""
    return _gaps_as_none(np.asarray(data).tolist())


def _gaps_as_none(value: Any) -> Any:
    if isinstance(value, list):
        return [_gaps_as_none(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def _from_json(data: Any) -> Any:
    """A data array as the browser gets it in the figure's JSON: a plain list, or a base64 typed
    array (how plotly sends numeric numpy arrays), decoded; NaN and null as None."""
    if isinstance(data, dict):
        array = np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"])
        if "shape" in data:
            array = array.reshape([int(size) for size in str(data["shape"]).split(",")])
        data = array.tolist()
    return _gaps_as_none(data)


def _daily() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "date": [date(2024, 1, d) for d in range(1, 6)],
            "steps": [1000.0, 50.0, 3000.0, 0.0, 2000.0],
            "coverage_hours": [14, 2, 15, 0, 12],
            "is_wear_day": [True, False, True, False, True],
        }
    )


NO_THERAPIES = pl.DataFrame(
    schema={"therapy": pl.String, "start_date": pl.Date, "end_date": pl.Date}
)
NO_EFFECTS = pl.DataFrame(schema={"date": pl.Date, "effect": pl.String, "severity": pl.Int16})
NO_FORECAST = pl.DataFrame(
    schema={
        "target_date": pl.Date,
        "model": pl.String,
        "champion": pl.Boolean,
        "yhat": pl.Float64,
        "yhat_lower": pl.Float64,
        "yhat_upper": pl.Float64,
        "origin_date": pl.Date,
    }
)


def _forecast() -> pl.DataFrame:
    days = [date(2024, 1, 6), date(2024, 1, 7)]
    return pl.DataFrame(
        {
            "target_date": days * 2,
            "model": ["ebm_global"] * 2 + ["trailing_mean_28d"] * 2,
            "champion": [True, True, False, False],
            "yhat": [1500.0, 1600.0, 1400.0, 1400.0],
            "yhat_lower": [1000.0, 1100.0, 900.0, 900.0],
            "yhat_upper": [2000.0, 2100.0, 1900.0, 1900.0],
            "origin_date": date(2024, 1, 6),
        }
    )


def test_non_wear_days_are_gaps_not_zeros() -> None:
    therapies = pl.DataFrame(
        {
            "therapy": ["ocrelizumab", "physiotherapy"],
            "start_date": [date(2024, 1, 2), date(2024, 1, 4)],
            "end_date": [date(2024, 1, 3), None],
        }
    )
    side_effects = pl.DataFrame(
        {"date": [date(2024, 1, 3)], "effect": ["fatigue"], "severity": [2]}
    )

    figure = charts.patient_timeline(
        _daily(), NO_FORECAST, therapies, side_effects, patient_id="P1"
    )

    line, non_wear, average, first_course, ongoing, effects = figure.data
    assert _values(line.y) == [1000.0, None, 3000.0, None, 2000.0]
    # the 7-day average needs 3 wear days: only the last day has them (1,000, 3,000, 2,000)
    assert average.name == "7-day average"
    assert _values(average.y) == [None, None, None, None, 2000.0]
    assert figure.layout.yaxis.title.text == "steps"
    assert figure.layout.yaxis2.title.text == "therapies"
    assert line.y.dtype == np.float64  # numbers and gaps, never an object array
    assert line.connectgaps is False
    assert _values(non_wear.x) == [date(2024, 1, 2), date(2024, 1, 4)]
    assert _values(effects.customdata[0]) == ["fatigue", 2]
    # therapies and side effects share the steps' time axis, on the row below
    assert first_course.yaxis == ongoing.yaxis == effects.yaxis == "y2"
    assert first_course.xaxis == "x2" and figure.layout.xaxis.matches == "x2"
    assert _values(first_course.x) == [date(2024, 1, 2), date(2024, 1, 4)]  # through the 3rd
    # the ongoing course is drawn up to the last day shown (inclusive)
    assert _values(ongoing.x) == [date(2024, 1, 4), date(2024, 1, 6)]
    assert ongoing.name == "physiotherapy (ongoing)"


def test_the_champion_and_its_band_are_drawn_the_other_models_behind_the_toggle() -> None:
    figure = charts.patient_timeline(
        _daily(), _forecast(), NO_THERAPIES, NO_EFFECTS, patient_id="P1"
    )

    traces = {trace.name: trace for trace in figure.data}
    assert set(traces) == {
        "daily steps (wear days)",
        "non-wear day (treated as missing)",
        "7-day average",
        "80% range of the forecast",
        "forecast: ML model (all patients)",
    }
    champion = traces["forecast: ML model (all patients)"]
    assert _values(champion.y) == [1500.0, 1600.0]
    assert _values(champion.customdata) == [[1000.0, 2000.0], [1100.0, 2100.0]]  # the 80% bounds
    band = traces["80% range of the forecast"]
    assert _values(band.y) == [2000.0, 2100.0, 1100.0, 1000.0]  # upper out, lower back
    assert _values(band.x) == [date(2024, 1, d) for d in (6, 7, 7, 6)]
    assert figure.layout.shapes[0].x0 == date(2024, 1, 6)  # the origin
    assert figure.layout.annotations[0].text == "forecast from 6 Jan 2024"

    compared = charts.patient_timeline(
        _daily(), _forecast(), NO_THERAPIES, NO_EFFECTS, patient_id="P1", others=True
    )
    traces = {trace.name: trace for trace in compared.data}
    other = traces["28-day average"]  # its plain name, never trailing_mean_28d
    assert _values(other.y) == [1400.0, 1400.0]
    assert other.line.width < traces["forecast: ML model (all patients)"].line.width
    assert not [name for name in traces if "_" in name]


def test_without_a_champion_the_chart_draws_the_fallback_model() -> None:
    forecast = _forecast().with_columns(champion=pl.lit(False))
    figure = charts.patient_timeline(_daily(), forecast, NO_THERAPIES, NO_EFFECTS, patient_id="P")
    names = [trace.name for trace in figure.data]
    assert "forecast: 28-day average" in names and "ML model (all patients)" not in names


def test_patient_chart_without_rows() -> None:
    empty = pl.DataFrame(
        schema={
            "date": pl.Date,
            "steps": pl.Float64,
            "coverage_hours": pl.Int16,
            "is_wear_day": pl.Boolean,
        }
    )

    figure = charts.patient_timeline(empty, NO_FORECAST, NO_THERAPIES, NO_EFFECTS, patient_id="P1")

    assert len(figure.data) == 1


def _explanation(labels: list[str], values: list[float]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "family": ["level", *(f"f{i}" for i in range(len(values) - 1))],
            "label": labels,
            "detail": [f"what {label} covers" for label in labels],
            "contribution": values,
        }
    )


def test_waterfall_builds_the_forecast_on_an_axis_from_zero() -> None:
    long = "Sinemet (levodopa) stops after 10\u00a0Jun\u00a02024, a label longer than a row"
    rows = _explanation(
        ["Recent level", "Time of year", "Weekday pattern", long],
        [3648.6, -200.4, 100.3, -50.2],
    )

    (bars,) = charts.explanation_waterfall(rows, title="t").data
    figure = charts.explanation_waterfall(rows, title="t")

    # whole steps that add up to the rounded forecast (3,498.3): 3,649 - 201 + 100 - 50
    assert list(bars.x) == [3649, -201, 100, -50, 3498]
    assert list(bars.base) == [0, 3649, 3448, 3548, 0]  # each bar starts where the last ended
    assert list(bars.text) == ["3,649", "-201", "+100", "-50", "3,498 steps/day"]
    assert bars.y[-1] == "Forecast"
    assert figure.layout.xaxis.range[0] == 0  # never a cut axis
    assert figure.layout.xaxis.range[1] > 3649
    # every label whole: long ones wrap at spaces (a date never splits), none is cut off
    assert [label.replace("<br>", " ") for label in bars.y[:-1]] == rows["label"].to_list()
    assert "<br>" in bars.y[3] and "10\u00a0Jun\u00a02024" in bars.y[3]
    assert not any("…" in label for label in bars.y)
    assert bars.customdata[1] == "Time of year: -201 steps/day. what Time of year covers"


def test_whole_steps_add_up_to_the_rounded_sum() -> None:
    for values in ([0.5, 0.5, 0.5], [3648.6, -200.4, 100.3, -50.2], [1.2] * 9, [-0.6, 0.2]):
        whole = charts.whole_steps(values)
        assert sum(whole) == math.floor(math.fsum(values) + 0.5)
        assert all(abs(w - v) < 1 for w, v in zip(whole, values, strict=True))
    # the level keeps its own rounding (the text repeats it) while another row can move
    assert charts.whole_steps([3648.6, 0.4, 0.4])[0] == 3649
    assert charts.whole_steps([]) == []


def test_repeated_labels_stay_distinct_rows() -> None:
    rows = _explanation(["Level", "Same words", "Same words"], [10.0, 1.0, 2.0])
    (bars,) = charts.explanation_waterfall(rows, title="t").data
    assert len(set(bars.y)) == 4


def test_weekly_trend_draws_a_line_per_group_and_its_patients_below() -> None:
    trend = pl.DataFrame(
        {
            "disease_group": ["MS", "MS", "PD"],
            "week": [date(2024, 1, 1), date(2024, 1, 8), date(2024, 1, 1)],
            "median_steps": [4000.0, 4100.0, 3000.0],
            "patients": [3, 3, 2],
        }
    )
    figure = charts.weekly_trend(trend)
    assert [(t.name, t.yaxis, _values(t.y)) for t in figure.data] == [
        ("MS", "y", [4000.0, 4100.0]),
        ("MS", "y2", [3, 3]),
        ("PD", "y", [3000.0]),
        ("PD", "y2", [2]),
    ]
    # one colour per group, the same for its steps and its patients, distinct between groups
    colours = {t.name: t.line.color for t in figure.data if t.yaxis == "y"}
    assert all(t.line.color == colours[t.name] for t in figure.data)
    assert len(set(charts.GROUP_COLOURS.values())) == len(charts.GROUP_COLOURS)


def test_disease_group_boxes_use_the_given_percentiles() -> None:
    groups = pl.DataFrame(
        {
            "disease_group": ["MS"],
            "wear_days": [10],
            "patients": [2],
            "p05": [100.0],
            "p25": [200.0],
            "median": [300.0],
            "p75": [400.0],
            "p95": [500.0],
            "mean": [310.0],
        }
    )

    (box,) = charts.steps_by_disease_group(groups).data

    assert (box.lowerfence[0], box.q1[0], box.median[0], box.q3[0], box.upperfence[0]) == (
        100.0,
        200.0,
        300.0,
        400.0,
        500.0,
    )
    assert box.name == "MS (2 patients)"


def test_days_without_any_row_break_the_line_too() -> None:
    daily = _daily().filter(pl.col("date") != date(2024, 1, 3))  # no samples at all that day
    figure = charts.patient_timeline(daily, NO_FORECAST, NO_THERAPIES, NO_EFFECTS, patient_id="P1")
    line = figure.data[0]
    assert _values(line.x) == [date(2024, 1, d) for d in range(1, 6)]
    assert _values(line.y) == [1000.0, None, None, None, 2000.0]


def test_whole_step_counts_with_gaps_stay_numbers() -> None:
    daily = _daily().with_columns(pl.col("steps").cast(pl.Int64))
    line = charts.patient_timeline(
        daily, NO_FORECAST, NO_THERAPIES, NO_EFFECTS, patient_id="P1"
    ).data[0]
    assert line.y.dtype == np.float64
    assert _values(line.y) == [1000.0, None, 3000.0, None, 2000.0]


def test_the_browser_gets_the_gaps_as_missing_values_on_the_right_days() -> None:
    daily = _daily().filter(pl.col("date") != date(2024, 1, 3))  # no samples at all that day
    figure = charts.patient_timeline(daily, _forecast(), NO_THERAPIES, NO_EFFECTS, patient_id="P1")

    sent = {trace["name"]: trace for trace in json.loads(figure.to_json())["data"]}

    line = sent["daily steps (wear days)"]
    assert line["x"] == [f"2024-01-0{d}" for d in range(1, 6)]
    # non-wear (2nd, 4th) and no-data (3rd) days are missing values, not zero steps
    assert _from_json(line["y"]) == [1000.0, None, None, None, 2000.0]
    assert line["connectgaps"] is False
    non_wear = sent["non-wear day (treated as missing)"]
    assert non_wear["x"] == ["2024-01-02", "2024-01-04"]
    assert _from_json(non_wear["y"]) == [50.0, 0.0]  # a recorded zero stays a zero
    assert _from_json(non_wear["customdata"]) == [2, 0]
    champion = sent["forecast: ML model (all patients)"]
    assert champion["x"] == ["2024-01-06", "2024-01-07"]
    assert _from_json(champion["customdata"]) == [[1000.0, 2000.0], [1100.0, 2100.0]]


def test_each_disease_group_gets_its_own_box() -> None:
    groups = pl.DataFrame(
        {
            "disease_group": ["MS", "PD"],
            "patients": [3, 2],
            "p05": [1.0, 1.0],
            "p25": [2.0, 2.0],
            "median": [3.0, 3.0],
            "p75": [4.0, 4.0],
            "p95": [5.0, 5.0],
            "mean": [3.0, 3.0],
        }
    )
    figure = charts.steps_by_disease_group(groups)
    assert [list(box.x) for box in figure.data] == [["MS (3 patients)"], ["PD (2 patients)"]]


# ------------------------------------------------------------------ text from data, as text

LINK = '<a href="http://evil.test">x</a>'
BOLD = "<b>bold</b>"
IMAGE = "<img src=http://evil.test/e.png>"
TEMPLATE = "%{x} 50%"


def _escaped(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("%", "&#37;")
    )


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() if key != "template" for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def _assert_no_markup_from_data(figure: Any) -> list[str]:
    """Every string the browser gets: none holds a tag but the hover's own ``<extra></extra>``
    and the line breaks the charts wrap long labels with, none a hover template field the
    charts did not write; returns them."""
    sent = json.loads(figure.to_json())
    strings = _strings(sent["data"]) + _strings(sent["layout"])
    for text in strings:
        ours = text.replace("<extra></extra>", "").replace("<br>", "")  # the charts' own markup
        assert "<" not in ours, text
        assert ">" not in ours, text
    for hover in _strings([trace.get("hovertemplate") for trace in sent["data"]]):
        assert "%{x}" not in hover.replace("%{x|%Y-%m-%d}", ""), hover
    return strings


def test_therapy_effect_model_and_patient_names_reach_the_figure_escaped() -> None:
    therapies = pl.DataFrame(
        {
            "therapy": [LINK, BOLD],
            "start_date": [date(2024, 1, 2), date(2024, 1, 4)],
            "end_date": [date(2024, 1, 3), None],
        }
    )
    side_effects = pl.DataFrame({"date": [date(2024, 1, 3)], "effect": [IMAGE], "severity": [2]})
    forecast = _forecast().with_columns(
        pl.when(pl.col("champion")).then(pl.lit(BOLD)).otherwise(pl.lit(TEMPLATE)).alias("model")
    )

    figure = charts.patient_timeline(
        _daily(), forecast, therapies, side_effects, patient_id=f"{LINK}{IMAGE}", others=True
    )

    strings = _assert_no_markup_from_data(figure)
    sent = json.loads(figure.to_json())
    courses = [trace for trace in sent["data"] if trace.get("yaxis") == "y2"]
    # the categorical values are the therapies' tick labels: escaped, so drawn as written
    assert courses[0]["y"] == [_escaped(LINK)] * 2
    assert courses[1]["y"] == [_escaped(BOLD)] * 2
    assert courses[1]["name"] == f"{_escaped(BOLD)} (ongoing)"
    assert courses[0]["hovertemplate"].startswith(f"{_escaped(LINK)}: 2024-01-02")
    assert courses[2]["customdata"] == [[_escaped(IMAGE), 2]]
    assert f"forecast: {_escaped(BOLD)}" in strings
    assert _escaped(TEMPLATE) in strings
    assert sent["layout"]["title"]["text"] == (
        f"Daily steps and forecast of patient {_escaped(LINK)}{_escaped(IMAGE)}"
    )


def test_explanation_labels_and_titles_reach_the_figure_escaped() -> None:
    rows = pl.DataFrame(
        {
            "family": ["level", "therapy:other", "side_effects"],
            "label": ["Recent level", f"{LINK} starts 1 May", f"{BOLD} " * 10],
            "detail": ["level", f"{IMAGE} as recorded", TEMPLATE],
            "contribution": [5000.0, -300.0, 100.0],
        }
    )

    figure = charts.explanation_waterfall(rows, title=f"{BOLD}: the forecast")

    _assert_no_markup_from_data(figure)
    (bars,) = figure.data
    assert bars.y[1].replace("<br>", " ") == _escaped(f"{LINK} starts 1 May")
    assert bars.y[2].replace("<br>", " ") == _escaped(f"{BOLD} " * 10)
    assert _escaped(IMAGE) in bars.customdata[1].replace("<br>", " ")
    assert _escaped(TEMPLATE) in bars.customdata[2].replace("<br>", " ")
    assert figure.layout.title.text == f"{_escaped(BOLD)}: the forecast"


def test_group_and_cost_names_reach_the_figures_escaped() -> None:
    trend = pl.DataFrame(
        {
            "disease_group": [LINK, TEMPLATE],
            "week": [date(2024, 1, 1), date(2024, 1, 1)],
            "median_steps": [4000.0, 3000.0],
            "patients": [3, 2],
        }
    )
    groups = pl.DataFrame(
        {
            "disease_group": [BOLD],
            "patients": [3],
            "p05": [1.0],
            "p25": [2.0],
            "median": [3.0],
            "p75": [4.0],
            "p95": [5.0],
            "mean": [3.0],
        }
    )
    parts = pl.DataFrame({"subject": [IMAGE], "value": [1.0], "reference": [2.0]})

    for figure in (
        charts.weekly_trend(trend),
        charts.steps_by_disease_group(groups),
        charts.cost_breakdown(parts, budget=10.0),
        charts.drift_shares('{"shares_now": [1, 0], "shares_reference": [0, 1]}', title=LINK),
    ):
        _assert_no_markup_from_data(figure)
    assert {t.name for t in charts.weekly_trend(trend).data} == {
        _escaped(LINK),
        _escaped(TEMPLATE),
    }
    assert list(charts.steps_by_disease_group(groups).data[0].x) == [
        f"{_escaped(BOLD)} (3 patients)"
    ]


def test_more_than_3_days_without_data_are_shaded_as_no_data() -> None:
    daily = pl.DataFrame(
        {
            "date": [date(2024, 1, 1), date(2024, 1, 5), date(2024, 1, 11)],
            "steps": [1000.0, 2000.0, 3000.0],
            "coverage_hours": [12, 12, 12],
            "n_samples": [10, 10, 10],
            "n_sources": [1, 1, 1],
            "is_wear_day": [True, True, True],
        }
    )
    figure = charts.patient_timeline(daily, NO_FORECAST, NO_THERAPIES, NO_EFFECTS, patient_id="P")
    shaded = [shape for shape in figure.layout.shapes if shape.type == "rect"]
    # 2-4 January is 3 days (not shaded), 6-10 January 5 days
    assert [(s.x0.date(), s.x1.date()) for s in shaded] == [(date(2024, 1, 5), date(2024, 1, 10))]
    assert shaded[0].x0.hour == 12 and shaded[0].x1.hour == 12  # from midday to midday
    assert "no data (more than 3 days)" in {trace.name for trace in figure.data}


def test_the_budget_is_a_dashed_line_named_in_the_legend_not_a_label_on_the_bars() -> None:
    parts = pl.DataFrame(
        {
            "subject": ["storage", "processing"],
            "value": [0.05, 0.6],
            "reference": [40.0, 560.0],
        }
    )
    figure = charts.cost_breakdown(parts, budget=500.0)

    (line,) = figure.layout.shapes
    assert (line.y0, line.y1, line.line.dash) == (500.0, 500.0, "dash")
    # no text beside the line, where it would sit on the projected bar that crosses it
    assert not figure.layout.annotations
    entry = next(trace for trace in figure.data if trace.name == "budget $500")
    assert entry.type == "scatter" and entry.line.dash == "dash" and entry.showlegend is not False
    # the axis from zero, above both the projected total ($600) and the line
    low, high = figure.layout.yaxis.range
    assert low == 0 and high > 600
    # under the budget, the line still has room under the legend
    cheaper = parts.with_columns(pl.col("value", "reference") / 10)
    low, high = charts.cost_breakdown(cheaper, budget=500.0).layout.yaxis.range
    assert high > 500
