"""Plotly figures of the dashboard, built from the frames :mod:`dashboard.data` returns.

Data arrays go to plotly as numpy arrays, not lists: plotly checks and copies a list element by
element, and serialises a numeric array as one base64 block. In a float array a missing value is
NaN, which plotly.js draws as a gap; dates are ``datetime64[D]`` and serialise as ISO days.

Plotly renders a subset of HTML in every text it draws: each string from data (a therapy, a side
effect, a disease group, a model, a patient id, a cost category) passes
:func:`dashboard.literal.plotly_literal` on its way into a figure (trace names, the categorical
values that become tick labels, custom data shown in hovers, hover templates, titles), so it is
shown as written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from functools import cache
from itertools import accumulate
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from dashboard.data import (
    GAP_DAYS,
    ROLLING_DAYS,
    data_gaps,
    model_name,
    rolling_mean,
    shown_model,
)
from dashboard.literal import plotly_literal

WEAR_COLOUR = "#1f77b4"
NON_WEAR_COLOUR = "#9e9e9e"
SIDE_EFFECT_COLOUR = "#d62728"
CHAMPION_COLOUR = "#ff7f0e"
CHANGE_UP_COLOUR = "#2ca02c"
CHANGE_DOWN_COLOUR = "#d62728"
MODEL_COLOURS = ("#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#9467bd", "#2ca02c")
THERAPY_COLOURS = ("#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#bcbd22", "#8c564b")
# one colour per disease group on every chart, told apart also with red-green colour blindness
# (Okabe and Ito's palette); a group not listed takes grey
GROUP_COLOURS = {"MS": "#0072B2", "PD": "#E69F00", "RA": "#009E73", "OTHER": "#CC79A7"}
OTHER_GROUP_COLOUR = "#7f7f7f"
ROLLING_COLOUR = "#08306b"
GAP_COLOUR = "#bdbdbd"
BUDGET_COLOUR = "#444444"


def group_colour(disease_group: str) -> str:
    """The colour of a disease group on every chart."""
    return GROUP_COLOURS.get(disease_group, OTHER_GROUP_COLOUR)


def _layout(figure: go.Figure, *, title: str, y_title: str) -> go.Figure:
    """The common layout; ``title`` is plain text (it may hold data, so it is escaped here)."""
    figure.update_layout(
        title=plotly_literal(title),
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
        groups: rows of :func:`dashboard.data.cohort_steps_by_group`.
    """
    figure = go.Figure()
    for row in groups.iter_rows(named=True):
        label = plotly_literal(f"{row['disease_group']} ({row['patients']} patients)")
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
                marker={"color": group_colour(row["disease_group"])},
            )
        )
    return _layout(
        figure, title="Daily steps on wear days by disease group (5th-95th pct.)", y_title="steps"
    )


def weekly_trend(trend: pl.DataFrame) -> go.Figure:
    """Median daily steps on wear days per calendar week, a line per disease group, and below it
    the patients behind each week's median (a median moves when patients join or stop sending
    data, not only when they walk more or less).

    Args:
        trend: rows of :func:`dashboard.data.cohort_weekly_trend`.
    """
    figure = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.06
    )
    for (disease_group,), rows in trend.sort("disease_group", "week").group_by(
        "disease_group", maintain_order=True
    ):
        group = plotly_literal(disease_group)
        colour = group_colour(str(disease_group))
        weeks = rows["week"].to_numpy()
        figure.add_trace(
            go.Scatter(
                x=weeks,
                y=rows["median_steps"].to_numpy(),
                customdata=rows["patients"].to_numpy(),
                mode="lines",
                name=group,
                legendgroup=group,
                line={"color": colour},
                hovertemplate=(
                    f"{group}, week of %{{x|%Y-%m-%d}}: median %{{y:,.0f}} steps "
                    "(%{customdata} patients)<extra></extra>"
                ),
            ),
            row=1,
            col=1,
        )
        figure.add_trace(
            go.Scatter(
                x=weeks,
                y=rows["patients"].to_numpy(),
                mode="lines",
                name=group,
                legendgroup=group,
                showlegend=False,
                line={"color": colour, "width": 1, "shape": "hv"},
                hovertemplate=(f"{group}, week of %{{x|%Y-%m-%d}}: %{{y}} patients<extra></extra>"),
            ),
            row=2,
            col=1,
        )
    figure.update_yaxes(rangemode="tozero")
    figure.update_yaxes(title_text="patients", row=2, col=1)
    return _layout(figure, title="Median daily steps per week (wear days)", y_title="steps")


def patient_timeline(
    daily_steps: pl.DataFrame,
    forecast: pl.DataFrame,
    therapies: pl.DataFrame,
    side_effects: pl.DataFrame,
    *,
    patient_id: str,
    others: bool = False,
) -> go.Figure:
    """One patient's daily steps and forecast above, therapies and side effects below, on one
    time axis.

    Non-wear days break the line (they are missing data, not zero mobility) and show as hollow
    grey markers at the steps that were recorded. A bold line is the 7-day average
    (:func:`dashboard.data.rolling_mean`); runs of more than 3 days without any data are shaded
    "no data" (:func:`dashboard.data.data_gaps`). The forecast drawn is the one the page
    explains (:func:`dashboard.data.shown_model`: the champion of the patient's group): a bold
    line with its 80% range as a band. With ``others`` the other models' forecasts are thin
    lines beside it, each under its plain name (:func:`dashboard.data.model_name`). Therapy
    courses are bars (ongoing ones reach the last day shown); side effects are red triangles
    with their grade.

    Args:
        daily_steps: rows of :func:`dashboard.data.patient_daily_steps`.
        forecast: rows of :func:`dashboard.data.patient_forecast` (may be empty).
        therapies: rows of :func:`dashboard.data.patient_therapies`.
        side_effects: rows of :func:`dashboard.data.patient_side_effects`.
        patient_id: shown in the title.
        others: draw the other models' forecasts too.
    """
    # steps and forecasts on the axes x and y above, therapies and side effects on x2 and y2 below
    figure = go.Figure(layout=_timeline_rows())
    # steps as floats whatever number type the query gives: a missing day is NaN (a gap), never
    # None in an object array
    wear = daily_steps.select(
        "date",
        pl.when(pl.col("is_wear_day"))
        .then(pl.col("steps"))
        .otherwise(None)
        .cast(pl.Float64)
        .alias("steps"),
    )
    if wear.height:
        # days without any sample have no row: add them as gaps so the line breaks there too
        calendar = wear.select(
            pl.date_range(pl.col("date").min(), pl.col("date").max(), "1d").alias("date")
        )
        wear = calendar.join(wear, on="date", how="left")
    figure.add_trace(
        go.Scatter(
            x=wear["date"].to_numpy(),
            y=wear["steps"].to_numpy(),
            mode="lines",
            name="daily steps (wear days)",
            line={"color": WEAR_COLOUR, "width": 1},
            opacity=0.6,  # under the 7-day average
            connectgaps=False,
            hovertemplate="%{x|%Y-%m-%d}: %{y:,.0f} steps<extra></extra>",
            xaxis="x",
            yaxis="y",
        )
    )
    non_wear = daily_steps.filter(~pl.col("is_wear_day"))
    if non_wear.height:
        figure.add_trace(
            go.Scatter(
                x=non_wear["date"].to_numpy(),
                y=non_wear["steps"].to_numpy(),
                customdata=non_wear["coverage_hours"].to_numpy(),
                mode="markers",
                name="non-wear day (treated as missing)",
                marker={"color": NON_WEAR_COLOUR, "symbol": "circle-open", "size": 6},
                hovertemplate=(
                    "%{x|%Y-%m-%d}: non-wear day, %{y:,.0f} steps recorded "
                    "in %{customdata} h<extra></extra>"
                ),
                xaxis="x",
                yaxis="y",
            )
        )
    smooth = rolling_mean(daily_steps)
    if smooth["rolling_mean"].is_not_null().any():
        figure.add_trace(
            go.Scatter(
                x=smooth["date"].to_numpy(),
                y=smooth["rolling_mean"].cast(pl.Float64).to_numpy(),
                mode="lines",
                name=f"{ROLLING_DAYS}-day average",
                line={"color": ROLLING_COLOUR, "width": 2.5},
                connectgaps=False,
                hovertemplate=(
                    f"%{{x|%Y-%m-%d}}: {ROLLING_DAYS}-day average %{{y:,.0f}} steps<extra></extra>"
                ),
                xaxis="x",
                yaxis="y",
            )
        )
    _add_gaps(figure, data_gaps(daily_steps))
    _add_forecasts(figure, forecast, shown_model(forecast), others)
    last_day = _last_day(daily_steps, therapies, side_effects, forecast)
    _add_clinical_timeline(figure, therapies, side_effects, last_day)
    figure.update_layout(yaxis_rangemode="tozero")
    _layout(figure, title=f"Daily steps and forecast of patient {patient_id}", y_title="steps")
    figure.update_layout(
        height=600, legend={"orientation": "h", "yanchor": "top", "y": -0.08, "x": 0}
    )
    return figure


def _add_gaps(figure: go.Figure, gaps: pl.DataFrame) -> None:
    """Shade each run of days without data across the steps row, with one legend entry."""
    for first, last in gaps.select("first_day", "last_day").iter_rows():
        figure.add_shape(
            type="rect",
            # from the middle of the last day with data to the middle of the next one
            x0=datetime.combine(first, time()) - timedelta(hours=12),
            x1=datetime.combine(last, time()) + timedelta(hours=12),
            xref="x",
            y0=0,
            y1=1,
            yref="y domain",
            fillcolor=GAP_COLOUR,
            opacity=0.35,
            line={"width": 0},
            layer="below",
        )
    if gaps.height:
        figure.add_trace(
            go.Scatter(  # the shading's legend entry: a grey square, no points
                x=[None],
                y=[None],
                mode="markers",
                marker={"color": GAP_COLOUR, "symbol": "square", "size": 12},
                name=f"no data (more than {GAP_DAYS} days)",
                xaxis="x",
                yaxis="y",
            )
        )


@cache
def _timeline_rows() -> dict[str, Any]:
    """The layout of the timeline's two rows on one time axis, as :func:`make_subplots` makes it:
    steps on the axes x and y (78% of the height), therapies on x2 and y2 below.

    Made once: make_subplots takes a fifth of the time of the whole figure. ``go.Figure`` copies
    the layout it is given, so the cached one is never changed.
    """
    rows = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.78, 0.22], vertical_spacing=0.04
    )
    layout: dict[str, Any] = rows.layout.to_plotly_json()
    del layout["template"]  # the default one, which go.Figure applies too
    return layout


def _add_forecasts(
    figure: go.Figure, forecast: pl.DataFrame, shown: str | None, others: bool
) -> None:
    if not forecast.height or shown is None:
        return
    origin = forecast["origin_date"][0]
    figure.add_shape(  # a vertical line across the steps row, as add_vline draws it
        type="line",
        x0=origin,
        x1=origin,
        xref="x",
        y0=0,
        y1=1,
        yref="y domain",
        line={"color": "#555555", "dash": "dot"},
    )
    figure.add_annotation(
        x=origin,
        xref="x",
        y=1,
        yref="y domain",
        text=f"forecast from {origin.day} {origin:%b %Y}",
        showarrow=False,
        xanchor="left",
        yanchor="top",
        xshift=4,
        font={"size": 11, "color": "#555555"},
    )
    if others:
        models = sorted(m for m in forecast["model"].unique().to_list() if m != shown)
        for index, model in enumerate(models):
            rows = forecast.filter(pl.col("model") == model).sort("target_date")
            name = plotly_literal(model_name(model))
            figure.add_trace(
                go.Scatter(
                    x=rows["target_date"].to_numpy(),
                    y=rows["yhat"].to_numpy(),
                    mode="lines",
                    name=name,
                    line={"color": MODEL_COLOURS[index % len(MODEL_COLOURS)], "width": 1.2},
                    hovertemplate=f"{name}, %{{x|%Y-%m-%d}}: %{{y:,.0f}} steps<extra></extra>",
                    xaxis="x",
                    yaxis="y",
                )
            )
    rows = forecast.filter(pl.col("model") == shown).sort("target_date")
    name = plotly_literal(model_name(shown))
    days = rows["target_date"].to_numpy()
    figure.add_trace(
        go.Scatter(
            # the band's outline: the upper bound forward, then the lower bound back
            x=np.concatenate([days, days[::-1]]),
            y=np.concatenate([rows["yhat_upper"].to_numpy(), rows["yhat_lower"].to_numpy()[::-1]]),
            fill="toself",
            fillcolor=CHAMPION_COLOUR,
            opacity=0.2,
            line={"width": 0},
            name="80% range of the forecast",
            legendgroup="forecast",
            hoverinfo="skip",
            xaxis="x",
            yaxis="y",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=days,
            y=rows["yhat"].to_numpy(),
            customdata=rows.select("yhat_lower", "yhat_upper").to_numpy(),
            mode="lines",
            name=f"forecast: {name}",
            legendgroup="forecast",
            line={"color": CHAMPION_COLOUR, "width": 3},
            hovertemplate=(
                f"{name}, %{{x|%Y-%m-%d}}: %{{y:,.0f}} steps "
                "(80% range %{customdata[0]:,.0f} to %{customdata[1]:,.0f})<extra></extra>"
            ),
            xaxis="x",
            yaxis="y",
        )
    )


def _add_clinical_timeline(
    figure: go.Figure, therapies: pl.DataFrame, side_effects: pl.DataFrame, last_day: date
) -> None:
    for index, course in enumerate(therapies.iter_rows(named=True)):
        end = course["end_date"] or last_day
        therapy = plotly_literal(course["therapy"])  # its row's tick label too
        label = therapy + ("" if course["end_date"] else " (ongoing)")
        figure.add_trace(
            go.Scatter(
                x=[course["start_date"], end + timedelta(days=1)],
                y=[therapy, therapy],
                mode="lines",
                line={"color": THERAPY_COLOURS[index % len(THERAPY_COLOURS)], "width": 10},
                name=label,
                showlegend=False,
                hovertemplate=(
                    f"{label}: {course['start_date']} to "
                    f"{course['end_date'] or 'ongoing'}<extra></extra>"
                ),
                xaxis="x2",
                yaxis="y2",
            )
        )
    if side_effects.height:
        figure.add_trace(
            go.Scatter(
                x=side_effects["date"].to_numpy(),
                y=["side effects"] * side_effects.height,
                # an object array: the effect's name and its grade side by side
                customdata=np.array(
                    [
                        [plotly_literal(effect), severity]
                        for effect, severity in side_effects.select("effect", "severity").rows()
                    ],
                    dtype=object,
                ),
                mode="markers",
                name="side effect",
                marker={"color": SIDE_EFFECT_COLOUR, "symbol": "triangle-down", "size": 10},
                hovertemplate=(
                    "%{x|%Y-%m-%d}: %{customdata[0]} (grade %{customdata[1]})<extra></extra>"
                ),
                xaxis="x2",
                yaxis="y2",
            )
        )
    figure.update_layout(yaxis2_title_text="therapies", yaxis2_automargin=True)


def explanation_waterfall(explanation: pl.DataFrame, *, title: str) -> go.Figure:
    """The forecast built up from where it starts, a bar per clinical family, on an axis from
    zero steps: the first bar (the recent level) spans 0 to the level, each next bar starts where
    the one above ends and adds or takes away its steps, the last bar is the forecast.

    Numbers are whole steps per day, rounded so that the rows add up to the forecast's rounded
    value exactly (:func:`whole_steps`). Labels and hovers are shown in full (long ones wrap),
    never cut off.

    Args:
        explanation: ``family, label, detail, contribution`` rows of
            :attr:`dashboard.data.ForecastExplanation.rows` (waterfall order).
        title: what is explained (plain text; it may hold data).
    """
    values = whole_steps(explanation["contribution"].to_list())
    total = sum(values)
    ends = list(accumulate(values))
    starts = [0, *ends[:-1]]
    labels = _distinct(_wrapped(plotly_literal(label), 40) for label in explanation["label"])
    colours = [WEAR_COLOUR] + [
        CHANGE_UP_COLOUR if value >= 0 else CHANGE_DOWN_COLOUR for value in values[1:]
    ]
    hovers = [
        _wrapped(f"{plotly_literal(label)}: {value:+,} steps/day. {plotly_literal(detail)}", 70)
        for label, detail, value in zip(
            explanation["label"], explanation["detail"], values, strict=True
        )
    ]
    texts = [f"{values[0]:,}", *(f"{value:+,}" for value in values[1:])] if values else []
    figure = go.Figure(
        go.Bar(
            orientation="h",
            y=[*labels, "Forecast"],
            # a bar runs from its base by its value: negative values to the left
            base=[*starts, 0],
            x=[*values, total],
            marker={"color": [*colours, CHAMPION_COLOUR]},
            text=[*texts, f"{total:,} steps/day"],
            textposition="outside",
            cliponaxis=False,
            customdata=[*hovers, f"Forecast: {total:,} steps/day (the sum of the rows above)"],
            hovertemplate="%{customdata}<extra></extra>",
        )
    )
    figure.update_yaxes(autorange="reversed", automargin=True)
    # from zero steps, never a cut axis; room on the right for the numbers
    highest = max([0, *ends, *starts, total])
    lowest = min([0, *ends, *starts])
    figure.update_xaxes(
        range=[lowest, highest * 1.2 + 100], title_text="steps per day", tickformat=",d"
    )
    figure.update_layout(height=150 + 46 * (len(values) + 1), showlegend=False, bargap=0.35)
    return _layout(figure, title=title, y_title="")


def whole_steps(values: list[float]) -> list[int]:
    """``values`` rounded to whole steps so that they add up to their sum's rounded value (the
    numbers a reader adds up give the forecast shown): each is rounded, then the rows whose
    rounding moved them most the other way take a step each, the first row (the level, whose
    number the text repeats) last."""
    if not values:
        return []
    rounded = [math.floor(value + 0.5) for value in values]
    short = math.floor(math.fsum(values) + 0.5) - sum(rounded)
    step = 1 if short > 0 else -1
    # most rounded away from the side that is short first; the first row only if it must be
    order = sorted(range(len(values)), key=lambda i: (i == 0, -step * (values[i] - rounded[i])))
    for index in order[: abs(short)]:
        rounded[index] += step
    return rounded


def _wrapped(text: str, width: int) -> str:
    """``text`` on lines of at most about ``width`` characters, broken at spaces with ``<br>``
    (the only markup the charts add to text; text from data is escaped before)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "<br>".join(lines)


def _distinct(labels: Iterable[str]) -> list[str]:
    """The labels, a repeated one made distinct with zero-width spaces (Plotly would otherwise
    draw rows with the same text on one line)."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, -1) + 1
        out.append(label + "\u200b" * seen[label])
    return out


def _last_day(*frames: pl.DataFrame) -> date:
    """The latest date in the frames' date columns (today when they hold none)."""
    candidates: list[date] = []
    for frame in frames:
        for column in ("date", "start_date", "end_date", "target_date"):
            if column in frame.columns and frame.height:
                value = frame[column].max()
                if isinstance(value, date):
                    candidates.append(value)
    return max(candidates) if candidates else date.today()


def cost_breakdown(parts: pl.DataFrame, *, budget: float) -> go.Figure:
    """Monthly cost per category: measured (this lake) and projected (the budget's patients),
    with the budget as a dashed line named in the legend (a label beside the line would sit on
    the bar that reaches it).

    Args:
        parts: cost check rows (``subject`` = category, ``value`` = measured, ``reference`` =
            projected), without the total.
        budget: the monthly budget.
    """
    figure = go.Figure()
    for column, name in (("value", "measured"), ("reference", "projected")):
        for index, row in enumerate(parts.iter_rows(named=True)):
            category = plotly_literal(row["subject"])
            figure.add_trace(
                go.Bar(
                    x=[name],
                    y=[row[column]],
                    name=category,
                    legendgroup=category,
                    showlegend=column == "value",
                    marker_color=THERAPY_COLOURS[index % len(THERAPY_COLOURS)],
                    hovertemplate=f"{category}: $%{{y:,.2f}} per month<extra></extra>",
                )
            )
    # the budget is named in the legend, not beside its line: a label there sits on the bar that
    # reaches the line (the projected one, whichever side it is drawn on)
    figure.add_hline(y=budget, line={"color": BUDGET_COLOUR, "dash": "dash", "width": 2})
    figure.add_trace(
        go.Scatter(  # the line's legend entry: a dashed line, no points
            x=[None],
            y=[None],
            mode="lines",
            name=f"budget ${budget:,.0f}",
            line={"color": BUDGET_COLOUR, "dash": "dash", "width": 2},
            hoverinfo="skip",
        )
    )
    # from zero, with room above the line when it is the highest thing drawn
    highest = max(
        budget, *(float(parts[column].fill_null(0).sum()) for column in ("value", "reference"))
    )
    figure.update_yaxes(range=[0, highest * 1.08] if highest > 0 else None)
    figure.update_layout(barmode="stack")
    return _layout(figure, title="Monthly cost by category", y_title="US$ per month")


def drift_shares(details: str, *, title: str) -> go.Figure:
    """Share of patients per quantile bin of the reference (deciles, fewer in small
    populations), now and at the reference, from a drift check's ``details`` (JSON with
    ``shares_now`` and ``shares_reference``; the last bin is the missing values)."""
    parsed = json.loads(details)
    now, then = parsed["shares_now"], parsed["shares_reference"]
    bins = len(now) - 1
    labels = [f"{i + 1} of {bins}" for i in range(bins)] + ["missing"]
    figure = go.Figure(
        [
            go.Bar(x=labels, y=then, name="at the last training", marker_color=NON_WEAR_COLOUR),
            go.Bar(x=labels, y=now, name="now", marker_color=WEAR_COLOUR),
        ]
    )
    figure.update_yaxes(tickformat=".0%")
    return _layout(figure, title=title, y_title="share of patients")
