"""The feature dictionary: every model feature of silver/features declared once.

Each feature has a name (prefixed by its family, DESIGN.md), a plain-language label and definition
for clinicians, the window of days it reads, and its Arrow type. The catalog builds the
silver/features schema from it, the features job checks that it computes exactly these columns,
and the dashboard shows it next to forecast explanations.

Conventions used by every definition:

- "D" is the day the row describes. Step features read only days *before* D (never D itself), so
  a feature row for D is known at the start of D; calendar and clinical features describe D.
- "Steps" of a day are the day's steps when it is a wear day (``is_wear_day`` in
  silver/daily_steps), and *missing* otherwise: non-wear days and days without any data are left
  out of every mean, spread, minimum, maximum, slope and lag. They are never counted as zero.
- A statistic over a window is missing when the window holds fewer wear days than its minimum.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa

FAMILIES = (
    "lag",
    "roll",
    "ewm",
    "trend",
    "baseline",
    "cal",
    "coverage",
    "therapy",
    "side_effect",
    "dx",
)


@dataclass(frozen=True)
class Feature:
    """One feature column.

    Args:
        name: column name, ``<family>_...``.
        family: one of :data:`FAMILIES`.
        label: short plain-language label (explanation charts).
        definition: what the value is, precisely enough to recompute it.
        window: the days it reads, relative to D.
        dtype: Arrow type of the column.
    """

    name: str
    family: str
    label: str
    definition: str
    window: str
    dtype: pa.DataType

    def __post_init__(self) -> None:
        if self.family not in FAMILIES or not self.name.startswith(self.family + "_"):
            raise ValueError(f"feature {self.name!r} does not carry its family {self.family!r}")


@dataclass(frozen=True)
class Therapy:
    """A therapy with its own feature columns.

    Args:
        name: generic (INN) name as clinicians write it.
        disease: the disease group it is mostly given for.
        aliases: other spellings and brand names that mean the same therapy.
    """

    name: str
    disease: str
    aliases: tuple[str, ...] = ()

    @property
    def slug(self) -> str:
        """Column-name form of the name: ``interferon beta-1a`` -> ``interferon_beta_1a``."""
        return normalise_therapy(self.name).replace(" ", "_")


def normalise_therapy(name: str) -> str:
    """Lower case, with runs of spaces, hyphens, slashes and dots turned into one space."""
    return re.sub(r"[\s\-/.]+", " ", name.strip().lower()).strip()


# Therapies with their own columns. Any other therapy counts in the ``therapy_other_*`` columns,
# so no course is ever ignored. Adding one here adds three columns; the next features run then
# rebuilds the table with the new schema.
THERAPIES: tuple[Therapy, ...] = (
    Therapy("ocrelizumab", "MS", ("ocrevus",)),
    Therapy("natalizumab", "MS", ("tysabri",)),
    Therapy("fingolimod", "MS", ("gilenya",)),
    Therapy("interferon beta-1a", "MS", ("avonex", "rebif", "plegridy")),
    Therapy("levodopa", "PD", ("sinemet", "madopar", "carbidopa levodopa", "levodopa carbidopa")),
    Therapy("pramipexole", "PD", ("mirapex", "mirapexin", "sifrol")),
    Therapy("rasagiline", "PD", ("azilect",)),
    Therapy("methotrexate", "RA", ("trexall", "otrexup", "rasuvo")),
    Therapy("adalimumab", "RA", ("humira",)),
    Therapy("tocilizumab", "RA", ("actemra", "roactemra")),
)
OTHER_THERAPY = "other"

THERAPY_SPELLINGS: dict[str, str] = {
    normalise_therapy(spelling): therapy.slug
    for therapy in THERAPIES
    for spelling in (therapy.name, *therapy.aliases)
}


def therapy_slug(name: str) -> str:
    """The column slug for a therapy name as written in bronze/therapies (``other`` if none)."""
    return THERAPY_SPELLINGS.get(normalise_therapy(name), OTHER_THERAPY)


# Window lengths (days) and the wear days each needs before its statistics are given.
ROLLING_WINDOWS: dict[int, int] = {7: 3, 14: 5, 30: 10, 90: 30}
LAGS: tuple[int, ...] = (1, 2, 3, 7, 14, 28)
EWM_HALF_LIVES: tuple[int, ...] = (7, 28)
# An exponentially weighted mean is missing when no wear day lies within this many half-lives.
EWM_RECENT_HALF_LIVES = 4
TREND_WINDOWS: dict[int, int] = {30: 10, 90: 30}
WEEKDAY_WEEKS = 4
WEEKDAY_MIN_DAYS = 2
BASELINE_DAYS = 180
BASELINE_MIN_DAYS = 60
NONWEAR_WINDOWS: tuple[int, ...] = (7, 30)
SIDE_EFFECT_WINDOWS: tuple[int, ...] = (7, 30)
DAYS_PER_YEAR = 365.25

F64 = pa.float64()


def _history() -> list[Feature]:
    out = [
        Feature(
            f"lag_{k}d",
            "lag",
            "Steps yesterday" if k == 1 else f"Steps {k} days ago",
            f"Steps on day D-{k}; missing when D-{k} was not a wear day.",
            f"day D-{k}",
            F64,
        )
        for k in LAGS
    ]
    stats = {
        "mean": ("Average steps", "mean of the steps"),
        "std": ("Day-to-day spread of steps", "sample standard deviation (n-1) of the steps"),
        "min": ("Lowest steps", "smallest steps"),
        "max": ("Highest steps", "largest steps"),
    }
    for stat, (label, what) in stats.items():
        for days, minimum in ROLLING_WINDOWS.items():
            out.append(
                Feature(
                    f"roll_{stat}_{days}d",
                    "roll",
                    f"{label}, last {days} days",
                    f"The {what} of the wear days among D-{days} .. D-1; missing with fewer "
                    f"than {max(minimum, 2) if stat == 'std' else minimum} wear days.",
                    f"{days} days before D",
                    F64,
                )
            )
    out.append(
        Feature(
            f"roll_same_weekday_mean_{WEEKDAY_WEEKS}w",
            "roll",
            f"Average steps on this weekday, last {WEEKDAY_WEEKS} weeks",
            f"Mean steps of D-7, D-14, D-21 and D-28 (the same weekday as D) that were wear "
            f"days; missing with fewer than {WEEKDAY_MIN_DAYS}.",
            f"{WEEKDAY_WEEKS} weeks before D",
            F64,
        )
    )
    for half_life in EWM_HALF_LIVES:
        recent = half_life * EWM_RECENT_HALF_LIVES
        out.append(
            Feature(
                f"ewm_mean_{half_life}d",
                "ewm",
                f"Recent average steps (weights halve every {half_life} days)",
                f"Weighted mean of the steps of every wear day d before D with weight "
                f"0.5^((D-1-d)/{half_life}); missing when no wear day lies in D-{recent} .. D-1.",
                "all days before D",
                F64,
            )
        )
    for days, minimum in TREND_WINDOWS.items():
        out.append(
            Feature(
                f"trend_slope_{days}d",
                "trend",
                f"Trend of steps over the last {days} days (steps per day)",
                f"Least-squares slope of steps against the day over the wear days among "
                f"D-{days} .. D-1, in steps per day; missing with fewer than {minimum} wear days.",
                f"{days} days before D",
                F64,
            )
        )
    return out


def _baseline() -> list[Feature]:
    window = f"{BASELINE_DAYS} days before D"
    span = f"D-{BASELINE_DAYS} .. D-1"
    need = f"missing with fewer than {BASELINE_MIN_DAYS} wear days in {span}"
    return [
        Feature(
            f"baseline_mean_{BASELINE_DAYS}d",
            "baseline",
            "Patient's usual steps (6-month baseline)",
            f"Mean steps of the wear days among {span}; {need}.",
            window,
            F64,
        ),
        Feature(
            f"baseline_std_{BASELINE_DAYS}d",
            "baseline",
            "Patient's usual day-to-day spread (6-month baseline)",
            f"Sample standard deviation (n-1) of the steps of the wear days among {span}; {need}.",
            window,
            F64,
        ),
        Feature(
            "baseline_deviation_7d",
            "baseline",
            "Last week's steps compared with the patient's usual",
            f"roll_mean_7d minus baseline_mean_{BASELINE_DAYS}d (steps); missing when either is.",
            window,
            F64,
        ),
        Feature(
            "baseline_zscore_7d",
            "baseline",
            "Last week's steps in the patient's usual spreads",
            f"baseline_deviation_7d divided by baseline_std_{BASELINE_DAYS}d; missing when "
            "either is missing or the spread is 0.",
            window,
            F64,
        ),
        Feature(
            "baseline_zscore_1d",
            "baseline",
            "Yesterday's steps in the patient's usual spreads",
            f"(lag_1d minus baseline_mean_{BASELINE_DAYS}d) divided by "
            f"baseline_std_{BASELINE_DAYS}d; missing when any is missing or the spread is 0.",
            window,
            F64,
        ),
    ]


def _calendar() -> list[Feature]:
    fourier = []
    for order in (1, 2):
        for fn in ("sin", "cos"):
            fourier.append(
                Feature(
                    f"cal_doy_{fn}_{order}",
                    "cal",
                    f"Season ({fn} of the year, order {order})",
                    f"{fn}(2*pi*{order}*t/{DAYS_PER_YEAR}) with t the day of the year of D "
                    "(1 January = 1).",
                    "day D",
                    F64,
                )
            )
    return [
        Feature(
            "cal_day_of_week",
            "cal",
            "Day of the week",
            "ISO day of the week of D: 1 = Monday .. 7 = Sunday.",
            "day D",
            pa.int8(),
        ),
        Feature(
            "cal_is_weekend", "cal", "Weekend", "D is a Saturday or Sunday.", "day D", pa.bool_()
        ),
        Feature("cal_month", "cal", "Month", "Calendar month of D, 1 .. 12.", "day D", pa.int8()),
        *fourier,
        Feature(
            "cal_is_public_holiday",
            "cal",
            "Public holiday",
            "D is a national public holiday in the patient's country (bronze/patients.country, "
            "calendars of the holidays package); missing when the country is unknown.",
            "day D",
            pa.bool_(),
        ),
    ]


def _coverage() -> list[Feature]:
    out = [
        Feature(
            "coverage_hours_1d",
            "coverage",
            "Hours worn yesterday",
            "coverage_hours of D-1 (hours with any sample); 0 when D-1 has no data.",
            "day D-1",
            pa.int16(),
        ),
        Feature(
            "coverage_mean_hours_7d",
            "coverage",
            "Average hours worn, last 7 days",
            "Mean coverage_hours over the days of D-7 .. D-1 from the patient's first day with "
            "data on, days without data counting 0; missing on that first day.",
            "7 days before D",
            F64,
        ),
    ]
    for days in NONWEAR_WINDOWS:
        out.append(
            Feature(
                f"coverage_nonwear_share_{days}d",
                "coverage",
                f"Share of days not worn, last {days} days",
                f"Share of the days of D-{days} .. D-1 from the patient's first day with data on "
                "that were not wear days (days without data count as not worn); missing on that "
                "first day.",
                f"{days} days before D",
                F64,
            )
        )
    out.append(
        Feature(
            "coverage_days_since_wear",
            "coverage",
            "Days since the device was last worn",
            "D minus the last wear day before D; missing when there is none.",
            "all days before D",
            pa.int32(),
        )
    )
    return out


def _clinical() -> list[Feature]:
    out: list[Feature] = []
    names = [(t.slug, t.name) for t in THERAPIES]
    names.append((OTHER_THERAPY, "any therapy without its own columns"))
    for slug, name in names:
        what = f"a course of {name}"
        out += [
            Feature(
                f"therapy_{slug}_active",
                "therapy",
                f"On {name}",
                f"{what.capitalize()} is active on D: start_date <= D <= end_date (end_date "
                "missing = ongoing).",
                "day D",
                pa.bool_(),
            ),
            Feature(
                f"therapy_{slug}_days_since_start",
                "therapy",
                f"Days since {name} started",
                f"D minus the latest start_date on or before D of {what}; missing if none.",
                "all days up to D",
                pa.int32(),
            ),
            Feature(
                f"therapy_{slug}_days_since_stop",
                "therapy",
                f"Days since {name} stopped",
                f"D minus the latest end_date before D of {what} (the course was taken through "
                "its end_date); missing if none ended.",
                "all days up to D",
                pa.int32(),
            ),
        ]
    out.append(
        Feature(
            "therapy_active_count",
            "therapy",
            "Number of therapies taken",
            "Number of distinct therapies with a course active on D.",
            "day D",
            pa.int16(),
        )
    )
    for days in SIDE_EFFECT_WINDOWS:
        out += [
            Feature(
                f"side_effect_count_{days}d",
                "side_effect",
                f"Side effects reported, last {days} days",
                f"Number of side effects dated D-{days - 1} .. D.",
                f"{days} days up to D",
                pa.int16(),
            ),
            Feature(
                f"side_effect_worst_severity_{days}d",
                "side_effect",
                f"Worst side effect grade, last {days} days",
                f"Highest severity (CTCAE grade 1-5) of the side effects dated D-{days - 1} .. D; "
                "0 when there is none.",
                f"{days} days up to D",
                pa.int8(),
            ),
        ]
    out += [
        Feature(
            "dx_disease_group",
            "dx",
            "Disease group",
            "The patient's disease group in bronze/patients: MS, PD, RA or OTHER.",
            "patient",
            pa.string(),
        ),
        Feature(
            "dx_years_since_diagnosis",
            "dx",
            "Years since diagnosis",
            f"(D minus the earliest diagnosed_on on or before D of a diagnosis of the patient's "
            f"disease group: G35 MS, G20 PD, M05/M06 RA, any code for OTHER) / {DAYS_PER_YEAR}; "
            "missing if none.",
            "all days up to D",
            F64,
        ),
    ]
    return out


FEATURES: tuple[Feature, ...] = (
    *_history(),
    *_baseline(),
    *_calendar(),
    *_coverage(),
    *_clinical(),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURE_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}

if len(FEATURE_BY_NAME) != len(FEATURES):
    raise ValueError("feature names must be unique")


# ---------------------------------------------------------------------------- explanation families


@dataclass(frozen=True)
class ExplanationFamily:
    """A group of model inputs as a clinician reads a forecast explanation: one row each.

    Args:
        key: the family's name in code (``therapy`` stands for one row per therapy by name).
        label: what the row says, in a clinician's words.
        description: what the row covers, one sentence (the row's hover text).
    """

    key: str
    label: str
    description: str


EXPLANATION_FAMILIES: tuple[ExplanationFamily, ...] = (
    ExplanationFamily(
        "level",
        "Recent level",
        "The patient's own recent steps on worn days: where the forecast starts.",
    ),
    ExplanationFamily(
        "weekday",
        "Weekday pattern",
        "How the patient's steps usually differ between the days of the week.",
    ),
    ExplanationFamily(
        "season",
        "Time of year",
        "Seasonal change of steps over the year (and public holidays).",
    ),
    ExplanationFamily(
        "trend",
        "Trend",
        "The patient's recent rise or fall in steps, and how the forecast drifts further ahead.",
    ),
    ExplanationFamily(
        "therapy",
        "Therapy",
        "A therapy that starts or stops after the forecast was made.",
    ),
    ExplanationFamily(
        "side_effects",
        "Side effects",
        "Side effects reported in the last 30 days and their grade.",
    ),
    ExplanationFamily(
        "disease",
        "Disease course, similar patients",
        "Years since diagnosis, and how patients with the same disease typically change.",
    ),
    ExplanationFamily(
        "other",
        "Other, smaller influences",
        "Everything else together: how much the device was worn, therapies that neither start "
        "nor stop, and many small inputs.",
    ),
)
EXPLANATION_FAMILY: dict[str, ExplanationFamily] = {f.key: f for f in EXPLANATION_FAMILIES}
MAX_EXPLANATION_ROWS = 8

# Rows of gold/explanations that are no feature column (see jobs/forecast.py and models/direct.py)
_SPECIAL_FAMILIES = {
    "baseline": "level",  # the patient's usual level the served forecast starts from
    "recent_level": "level",  # the model's recent level against the usual day, as served
    "usual_weekday": "weekday",  # the weekday's usual share of the usual level
    "intercept": "disease",  # the typical change of the model's patients
    "disease_group": "disease",
    "horizon_days": "trend",  # days ahead: the drift the model learned with the horizon
    "weekday_offset": "weekday",
    "other_features": "other",
    "floor_at_zero": "other",
}
_PREFIX_FAMILIES = {
    "lag": "level",
    "roll": "level",
    "ewm": "level",
    "baseline": "level",
    "trend": "trend",
    "side_effect": "side_effects",
    "dx": "disease",
    "coverage": "other",
}
_WEEKDAY_CALENDAR = frozenset({"cal_day_of_week", "cal_is_weekend"})
_THERAPY_INPUT = re.compile(
    r"^therapy_(?P<slug>.+)_(active|days_since_start|days_since_stop|change)$"
)
_THERAPY_SLUGS = frozenset((*(t.slug for t in THERAPIES), OTHER_THERAPY))


def explanation_family(feature: str) -> str:
    """The explanation family of a model input or explanation row: a key of
    :data:`EXPLANATION_FAMILY`, or ``therapy:<slug>`` for an input of one therapy.

    Feature columns go by their dictionary family (day of the week and weekend are the weekday
    pattern, the rest of the calendar the time of year); the model inputs beyond the dictionary
    (days ahead, weekday offset, season at the forecast start, therapy started or stopped since
    the forecast start) and the special rows (``baseline``, ``intercept``, ``other_features``,
    ``floor_at_zero``) have theirs. A pair interaction (``a & b``) belongs to its sides' family
    when they share one, else to ``other``; an unknown name to ``other``.

    Args:
        feature: the ``feature`` of a gold/explanations row.
    """
    if " & " in feature:
        families = {explanation_family(part) for part in feature.split(" & ")}
        return families.pop() if len(families) == 1 else "other"
    if feature in _SPECIAL_FAMILIES:
        return _SPECIAL_FAMILIES[feature]
    therapy = _THERAPY_INPUT.match(feature)
    if therapy and therapy["slug"] in _THERAPY_SLUGS:
        return f"therapy:{therapy['slug']}"
    if feature.startswith("cal_"):
        return "weekday" if feature in _WEEKDAY_CALENDAR else "season"
    for prefix, family in _PREFIX_FAMILIES.items():
        if feature.startswith(prefix + "_"):
            return family
    return "other"
