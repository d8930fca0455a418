"""The figures of the dashboard: what each trace and band shows."""

from __future__ import annotations

from datetime import date

import polars as pl

from dashboard import charts


def _daily() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "date": [date(2024, 1, d) for d in range(1, 6)],
            "steps": [1000.0, 50.0, 3000.0, 0.0, 2000.0],
            "coverage_hours": [14, 2, 15, 0, 12],
            "is_wear_day": [True, False, True, False, True],
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

    figure = charts.patient_daily_steps(_daily(), therapies, side_effects, patient_id="P1")

    line, non_wear, effects = figure.data
    assert list(line.y) == [1000.0, None, 3000.0, None, 2000.0]
    assert line.connectgaps is False
    assert list(non_wear.x) == [date(2024, 1, 2), date(2024, 1, 4)]
    assert list(effects.customdata[0]) == ["fatigue", 2]
    bands = figure.layout.shapes
    assert len(bands) == 2
    # The ongoing course is drawn up to the last day shown (inclusive).
    assert bands[1].x1 == date(2024, 1, 6)


def test_patient_chart_without_rows() -> None:
    empty = pl.DataFrame(
        schema={
            "date": pl.Date,
            "steps": pl.Float64,
            "coverage_hours": pl.Int16,
            "is_wear_day": pl.Boolean,
        }
    )
    no_therapies = pl.DataFrame(
        schema={"therapy": pl.String, "start_date": pl.Date, "end_date": pl.Date}
    )
    no_effects = pl.DataFrame(schema={"date": pl.Date, "effect": pl.String, "severity": pl.Int16})

    figure = charts.patient_daily_steps(empty, no_therapies, no_effects, patient_id="P1")

    assert len(figure.data) == 1


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
    figure = charts.patient_daily_steps(
        daily,
        pl.DataFrame(schema={"therapy": pl.String, "start_date": pl.Date, "end_date": pl.Date}),
        pl.DataFrame(schema={"date": pl.Date, "effect": pl.String, "severity": pl.Int16}),
        patient_id="P1",
    )
    line = figure.data[0]
    assert list(line.x) == [date(2024, 1, d) for d in range(1, 6)]
    assert list(line.y) == [1000.0, None, None, None, 2000.0]


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
