"""Plotly figures of the dashboard, built from the frames :mod:`dashboard.data` returns."""

from __future__ import annotations

from datetime import date, timedelta

import plotly.graph_objects as go
import polars as pl

WEAR_COLOUR = "#1f77b4"
NON_WEAR_COLOUR = "#9e9e9e"
SIDE_EFFECT_COLOUR = "#d62728"
THERAPY_COLOURS = ("#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#bcbd22", "#8c564b")


def _layout(figure: go.Figure, *, title: str, y_title: str) -> go.Figure:
    figure.update_layout(
        title=title,
        yaxis_title=y_title,
        margin={"l": 40, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0},
        hovermode="closest",
    )
    return figure


def steps_by_disease_group(groups: pl.DataFrame) -> go.Figure:
    """Box plot of daily steps on wear days per disease group, from precomputed percentiles.

    Whiskers span the 5th to 95th percentile (not min/max), so single extreme days do not
    dominate; the box is the interquartile range and the dashed line the mean.

    Args:
        groups: rows of :func:`dashboard.data.steps_by_disease_group`.
    """
    figure = go.Figure()
    for row in groups.iter_rows(named=True):
        label = f"{row['disease_group']} ({row['patients']} patients)"
        figure.add_trace(
            go.Box(
                name=label,
                x=[label],  # one position per group; without it every box sits at x=0
                q1=[row["p25"]],
                median=[row["median"]],
                q3=[row["p75"]],
                lowerfence=[row["p05"]],
                upperfence=[row["p95"]],
                mean=[row["mean"]],
                boxpoints=False,
                showlegend=False,
            )
        )
    return _layout(
        figure, title="Daily steps on wear days by disease group (5th-95th pct.)", y_title="steps"
    )


def patient_daily_steps(
    daily_steps: pl.DataFrame,
    therapies: pl.DataFrame,
    side_effects: pl.DataFrame,
    *,
    patient_id: str,
) -> go.Figure:
    """One patient's daily steps with non-wear days, therapy periods and side effects.

    Non-wear days break the line (they are missing data, not zero mobility) and show as hollow
    grey markers at the steps that were recorded; therapy courses are shaded bands (ongoing ones
    reach the last day shown); side effects are red triangles above the line.

    Args:
        daily_steps: rows of :func:`dashboard.data.patient_daily_steps`.
        therapies: rows of :func:`dashboard.data.patient_therapies`.
        side_effects: rows of :func:`dashboard.data.patient_side_effects`.
        patient_id: shown in the title.
    """
    figure = go.Figure()
    wear = daily_steps.select(
        "date", pl.when(pl.col("is_wear_day")).then(pl.col("steps")).otherwise(None).alias("steps")
    )
    if wear.height:
        # days without any sample have no row: add them as gaps so the line breaks there too
        calendar = wear.select(
            pl.date_range(pl.col("date").min(), pl.col("date").max(), "1d").alias("date")
        )
        wear = calendar.join(wear, on="date", how="left")
    figure.add_trace(
        go.Scatter(
            x=wear["date"].to_list(),
            y=wear["steps"].to_list(),
            mode="lines",
            name="daily steps (wear days)",
            line={"color": WEAR_COLOUR, "width": 1.5},
            connectgaps=False,
            hovertemplate="%{x|%Y-%m-%d}: %{y:,.0f} steps<extra></extra>",
        )
    )
    non_wear = daily_steps.filter(~pl.col("is_wear_day"))
    if non_wear.height:
        figure.add_trace(
            go.Scatter(
                x=non_wear["date"].to_list(),
                y=non_wear["steps"].to_list(),
                customdata=non_wear["coverage_hours"].to_list(),
                mode="markers",
                name="non-wear day (treated as missing)",
                marker={"color": NON_WEAR_COLOUR, "symbol": "circle-open", "size": 6},
                hovertemplate=(
                    "%{x|%Y-%m-%d}: non-wear day, %{y:,.0f} steps recorded "
                    "in %{customdata} h<extra></extra>"
                ),
            )
        )

    top = max((float(v) for v in daily_steps["steps"].drop_nulls().to_list()), default=0.0)
    if side_effects.height:
        figure.add_trace(
            go.Scatter(
                x=side_effects["date"].to_list(),
                y=[top * 1.08 if top else 1.0] * side_effects.height,
                customdata=list(
                    zip(
                        side_effects["effect"].to_list(),
                        side_effects["severity"].to_list(),
                        strict=True,
                    )
                ),
                mode="markers",
                name="side effect",
                marker={"color": SIDE_EFFECT_COLOUR, "symbol": "triangle-down", "size": 10},
                hovertemplate=(
                    "%{x|%Y-%m-%d}: %{customdata[0]} (grade %{customdata[1]})<extra></extra>"
                ),
            )
        )

    last_day = _last_day(daily_steps, therapies, side_effects)
    for index, course in enumerate(therapies.iter_rows(named=True)):
        end = course["end_date"] or last_day
        figure.add_vrect(
            x0=course["start_date"],
            x1=end + timedelta(days=1),
            fillcolor=THERAPY_COLOURS[index % len(THERAPY_COLOURS)],
            opacity=0.12,
            line_width=0,
            layer="below",
            annotation_text=course["therapy"] + ("" if course["end_date"] else " (ongoing)"),
            annotation_position="top left",
            annotation_font_size=10,
        )
    figure.update_yaxes(rangemode="tozero")
    return _layout(figure, title=f"Daily steps of patient {patient_id}", y_title="steps")


def _last_day(*frames: pl.DataFrame) -> date:
    """The latest date in the frames' date columns (today when they hold none)."""
    candidates: list[date] = []
    for frame in frames:
        for column in ("date", "start_date", "end_date"):
            if column in frame.columns and frame.height:
                value = frame[column].max()
                if isinstance(value, date):
                    candidates.append(value)
    return max(candidates) if candidates else date.today()
