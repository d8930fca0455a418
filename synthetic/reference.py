"""Clinical and demographic reference data the synthetic population is drawn from.

Plain constants only; the probabilities are chosen to look like a European/US/Australian/Indian
mobility cohort of patients with chronic neurological and rheumatic disease, not to match any one
study.
"""

from __future__ import annotations

from dataclasses import dataclass

DISEASE_GROUPS: tuple[str, ...] = ("MS", "PD", "RA", "OTHER")
DISEASE_SHARES: tuple[float, ...] = (0.35, 0.25, 0.25, 0.15)


@dataclass(frozen=True)
class DiseaseProfile:
    """How a disease group shapes demographics and walking.

    Args:
        share_female: probability that a patient of the group is female.
        age_mean: mean age at the end of the simulated period, years.
        age_sd: spread of that age.
        median_steps: median of the lognormal weekly-mean baseline of daily steps at age 50.
        cadence: typical walking cadence in steps per minute (PD walks with shorter, slower steps).
        trend_per_year: range of the yearly multiplicative decline (PD: a few % per year).
        years_since_diagnosis: range of disease duration at enrolment, years.
    """

    share_female: float
    age_mean: float
    age_sd: float
    median_steps: float
    cadence: float
    trend_per_year: tuple[float, float]
    years_since_diagnosis: tuple[float, float]


DISEASES: dict[str, DiseaseProfile] = {
    "MS": DiseaseProfile(0.70, 43.0, 10.0, 5_400.0, 100.0, (0.0, 0.02), (0.5, 20.0)),
    "PD": DiseaseProfile(0.40, 68.0, 8.0, 3_900.0, 82.0, (0.02, 0.06), (0.3, 10.0)),
    "RA": DiseaseProfile(0.75, 56.0, 12.0, 5_600.0, 98.0, (0.0, 0.015), (0.5, 25.0)),
    "OTHER": DiseaseProfile(0.50, 58.0, 14.0, 6_300.0, 102.0, (-0.01, 0.01), (0.3, 15.0)),
}

MIN_AGE, MAX_AGE = 25, 85


@dataclass(frozen=True)
class Home:
    """A patient's country and IANA time zone.

    Args:
        country: ISO 3166-1 alpha-2 code.
        timezone: IANA zone name (DST comes from the zone database).
        weight: share of patients living there.
        southern: southern hemisphere, so winter falls in June-August.
        tropical: weak seasonality (no cold winter).
    """

    country: str
    timezone: str
    weight: float
    southern: bool = False
    tropical: bool = False


HOMES: tuple[Home, ...] = (
    Home("DE", "Europe/Berlin", 0.18),
    Home("GB", "Europe/London", 0.14),
    Home("FR", "Europe/Paris", 0.07),
    Home("NL", "Europe/Amsterdam", 0.05),
    Home("US", "America/New_York", 0.16),
    Home("US", "America/Chicago", 0.06),
    Home("US", "America/Los_Angeles", 0.10),
    Home("AU", "Australia/Sydney", 0.09, southern=True),
    Home("NZ", "Pacific/Auckland", 0.03, southern=True),
    Home("IN", "Asia/Kolkata", 0.08, tropical=True),
    Home("BR", "America/Sao_Paulo", 0.04, southern=True, tropical=True),
)

# Device owners' first names, used for Apple's default device names ("Anna's iPhone").
FIRST_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "F": {
        "DE": ("Anna", "Katrin", "Julia", "Sabine", "Lena"),
        "GB": ("Emma", "Sophie", "Charlotte", "Olivia", "Claire"),
        "FR": ("Camille", "Marie", "Chloé", "Léa"),
        "NL": ("Sanne", "Eva", "Lotte"),
        "US": ("Jessica", "Ashley", "Emily", "Sarah", "Maria"),
        "AU": ("Chloe", "Mia", "Olivia", "Kate"),
        "NZ": ("Aroha", "Ella", "Grace"),
        "IN": ("Priya", "Ananya", "Divya", "Kavya"),
        "BR": ("Ana", "Beatriz", "Juliana"),
    },
    "M": {
        "DE": ("Thomas", "Lukas", "Jonas", "Michael", "Stefan"),
        "GB": ("James", "Oliver", "Harry", "David", "George"),
        "FR": ("Lucas", "Hugo", "Louis", "Julien"),
        "NL": ("Daan", "Sem", "Bram"),
        "US": ("Michael", "John", "David", "Chris", "Robert"),
        "AU": ("Jack", "Liam", "Noah", "Ben"),
        "NZ": ("Tane", "Oliver", "Leo"),
        "IN": ("Rahul", "Arjun", "Vikram", "Rohan"),
        "BR": ("João", "Pedro", "Lucas"),
    },
}


@dataclass(frozen=True)
class TherapySpec:
    """A therapy and its typical effect on daily steps.

    Args:
        name: therapy name as recorded in the clinical system.
        effect_mean: mean additive effect on daily steps once fully ramped.
        effect_sd: spread of that effect between patients.
        ramp_days: range of days from start until the full effect.
        course_days: range of course length when the therapy is a fixed course (physiotherapy);
            None for long-term drugs.
        side_effects: effects this therapy may cause (names as in ``bronze/side_effects``).
        side_effects_per_year: rate of reported side effects while on the therapy.
    """

    name: str
    effect_mean: float
    effect_sd: float
    ramp_days: tuple[int, int]
    course_days: tuple[int, int] | None
    side_effects: tuple[str, ...]
    side_effects_per_year: float


THERAPIES: dict[str, TherapySpec] = {
    spec.name: spec
    for spec in (
        TherapySpec(
            "ocrelizumab",
            700,
            300,
            (60, 120),
            None,
            ("infusion-related reaction", "headache", "fatigue"),
            1.5,
        ),
        TherapySpec("natalizumab", 800, 300, (30, 90), None, ("headache", "fatigue"), 1.5),
        TherapySpec("fingolimod", 450, 250, (30, 90), None, ("headache", "dizziness"), 1.0),
        TherapySpec(
            "interferon beta-1a",
            200,
            250,
            (60, 120),
            None,
            ("injection-site reaction", "fatigue", "headache"),
            3.0,
        ),
        TherapySpec("levodopa", 1_200, 350, (7, 28), None, ("nausea", "dizziness"), 2.0),
        TherapySpec("pramipexole", 500, 250, (14, 42), None, ("nausea", "dizziness"), 1.5),
        TherapySpec("rasagiline", 250, 150, (21, 60), None, ("headache",), 0.7),
        TherapySpec("methotrexate", 550, 250, (42, 90), None, ("nausea", "fatigue"), 2.0),
        TherapySpec(
            "adalimumab", 900, 350, (14, 42), None, ("injection-site reaction", "headache"), 1.5
        ),
        TherapySpec("tocilizumab", 800, 300, (21, 56), None, ("headache", "dizziness"), 1.0),
        TherapySpec("bisoprolol", -250, 120, (7, 21), None, ("fatigue", "dizziness"), 1.0),
        TherapySpec("metformin", 50, 100, (14, 42), None, ("nausea",), 1.0),
        TherapySpec("physiotherapy", 650, 250, (7, 21), (28, 84), ("muscle soreness",), 2.0),
        TherapySpec("cardiac rehabilitation", 900, 300, (14, 28), (56, 84), ("fatigue",), 1.0),
    )
}

# Long-term drugs per disease group; the first one is started, later ones are switches/add-ons.
GROUP_DRUGS: dict[str, tuple[str, ...]] = {
    "MS": ("ocrelizumab", "natalizumab", "fingolimod", "interferon beta-1a"),
    "PD": ("levodopa", "pramipexole", "rasagiline"),
    "RA": ("methotrexate", "adalimumab", "tocilizumab"),
    "OTHER": ("bisoprolol", "metformin"),
}
GROUP_COURSES: dict[str, tuple[str, ...]] = {
    "MS": ("physiotherapy",),
    "PD": ("physiotherapy",),
    "RA": ("physiotherapy",),
    "OTHER": ("physiotherapy", "cardiac rehabilitation"),
}
# Share of patients of the group on a long-term drug during the observed period.
DRUG_SHARE: dict[str, float] = {"MS": 0.85, "PD": 0.92, "RA": 0.85, "OTHER": 0.45}

# Reported regardless of therapy (intercurrent illness, everyday complaints).
BACKGROUND_SIDE_EFFECTS: tuple[str, ...] = ("fatigue", "headache", "nausea", "dizziness")
BACKGROUND_SIDE_EFFECTS_PER_YEAR = 0.6

# CTCAE grades 1-4 (grade 5 is death related to the event; a patient who died stops sending
# data, which this generator does not simulate).
SEVERITY_GRADES: tuple[int, ...] = (1, 2, 3, 4)
SEVERITY_SHARES: tuple[float, ...] = (0.55, 0.30, 0.12, 0.03)
# Dip in daily steps per grade: share of the patient's baseline lost on the day of the event and
# the days until full recovery.
SEVERITY_DIP_SHARE: dict[int, float] = {1: 0.10, 2: 0.25, 3: 0.45, 4: 0.70}
SEVERITY_DIP_DAYS: dict[int, int] = {1: 2, 2: 4, 3: 7, 4: 14}


@dataclass(frozen=True)
class DiagnosisCode:
    """An ICD-10 code with its description.

    Args:
        code: ICD-10 code.
        description: short text as shown to clinicians.
        weight: relative frequency when drawing among alternatives.
    """

    code: str
    description: str
    weight: float = 1.0


PRIMARY_DIAGNOSES: dict[str, tuple[DiagnosisCode, ...]] = {
    "MS": (DiagnosisCode("G35", "Multiple sclerosis"),),
    "PD": (DiagnosisCode("G20", "Parkinson's disease"),),
    "RA": (
        DiagnosisCode("M06.9", "Rheumatoid arthritis, unspecified", 0.7),
        DiagnosisCode("M05.79", "Rheumatoid arthritis with rheumatoid factor, multiple sites", 0.3),
    ),
    "OTHER": (
        DiagnosisCode("E11.9", "Type 2 diabetes mellitus without complications", 0.3),
        DiagnosisCode("I10", "Essential (primary) hypertension", 0.25),
        DiagnosisCode("J44.9", "Chronic obstructive pulmonary disease, unspecified", 0.2),
        DiagnosisCode("I50.9", "Heart failure, unspecified", 0.1),
        DiagnosisCode("M17.9", "Gonarthrosis (knee osteoarthritis), unspecified", 0.15),
    ),
}

COMORBIDITIES: tuple[DiagnosisCode, ...] = (
    DiagnosisCode("I10", "Essential (primary) hypertension", 0.30),
    DiagnosisCode("E78.5", "Hyperlipidaemia, unspecified", 0.22),
    DiagnosisCode("E11.9", "Type 2 diabetes mellitus without complications", 0.12),
    DiagnosisCode("F32.9", "Depressive episode, unspecified", 0.14),
    DiagnosisCode("M81.0", "Postmenopausal osteoporosis", 0.08),
    DiagnosisCode("G47.3", "Sleep apnoea", 0.06),
    DiagnosisCode("J45.9", "Asthma, unspecified", 0.06),
    DiagnosisCode("M54.5", "Low back pain", 0.10),
)
# Expected comorbidities per patient at age 50; grows with age.
COMORBIDITIES_AT_50 = 0.9
