"""Landing files of a synthetic population, laid out as the ingestion job finds real ones.

Layout under the landing directory::

    apple-health/<patient_id>/export.xml   Apple Health export of one patient
    apple-health/<patient_id>/export.zip   (every fourth patient instead) the Health app's zip,
                                           holding apple_health_export/export.xml
    clinical/patients.csv      patient_id, disease_group, timezone, sex, birth_year, country,
                               enrolled_on
    clinical/therapies.csv     patient_id, therapy, start_date, end_date
    clinical/side_effects.csv  patient_id, date, effect, severity
    clinical/diagnoses.csv     patient_id, code, diagnosed_on, description

The CSV columns are those of the bronze tables of the same name; dates are ISO ``YYYY-MM-DD``,
an empty ``end_date`` means the therapy is ongoing, ``severity`` is the CTCAE grade. The patient
of an export is the name of its folder (Apple exports do not carry an ID).

Exports follow the Health app's format: ``<HealthData locale="en_US">`` with ``ExportDate``, ``Me``
and one ``Record`` element per sample, timestamps in the patient's local time with the sample's
own UTC offset (``2019-05-14 18:52:09 -0400``). Besides the step counts they hold records that
ingestion must skip (walking distance, heart rate with metadata children, flights climbed).
Corrupt samples are written as they are, so ingestion quarantines them. Files are streamed in
chunks and renamed into place when complete, so a reader never sees half an export.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import IO
from xml.sax.saxutils import quoteattr
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from synthetic.population import ClinicalFrames, SimulatedPatient, Stream, patient_rng
from synthetic.wear import PHONE, WATCH

_CHUNK_ROWS = 50_000
ZIPPED_EVERY = 4  # patients whose index is a multiple of this get export.zip
_WALKING_HEART_RATES = 8  # heart-rate records per watch step sample with watch_detail

_DTD = """<!DOCTYPE HealthData [
<!-- HealthKit Export Version: 13 -->
<!ELEMENT HealthData (ExportDate,Me,(Record|Correlation|Workout|ActivitySummary|ClinicalRecord)*)>
<!ATTLIST HealthData
  locale CDATA #REQUIRED
>
<!ELEMENT ExportDate EMPTY>
<!ATTLIST ExportDate
  value CDATA #REQUIRED
>
<!ELEMENT Me EMPTY>
<!ATTLIST Me
  HKCharacteristicTypeIdentifierDateOfBirth         CDATA #REQUIRED
  HKCharacteristicTypeIdentifierBiologicalSex       CDATA #REQUIRED
  HKCharacteristicTypeIdentifierBloodType           CDATA #REQUIRED
  HKCharacteristicTypeIdentifierFitzpatrickSkinType CDATA #REQUIRED
  HKCharacteristicTypeIdentifierCardioFitnessMedicationsUse CDATA #REQUIRED
>
<!ELEMENT Record ((MetadataEntry|HeartRateVariabilityMetadataList)*)>
<!ATTLIST Record
  type          CDATA #REQUIRED
  unit          CDATA #IMPLIED
  value         CDATA #IMPLIED
  sourceName    CDATA #REQUIRED
  sourceVersion CDATA #IMPLIED
  device        CDATA #IMPLIED
  creationDate  CDATA #IMPLIED
  startDate     CDATA #REQUIRED
  endDate       CDATA #REQUIRED
>
<!ELEMENT MetadataEntry EMPTY>
<!ATTLIST MetadataEntry
  key   CDATA #REQUIRED
  value CDATA #REQUIRED
>
]>
"""

_VERSIONS = {PHONE: "17.5.1", WATCH: "10.5"}
_DEVICES = {
    PHONE: "<<HKDevice: 0x281c4a3f0>, name:iPhone, manufacturer:Apple Inc., model:iPhone, "
    "hardware:iPhone14,5, software:17.5.1>",
    WATCH: "<<HKDevice: 0x281c4b020>, name:Apple Watch, manufacturer:Apple Inc., model:Watch, "
    "hardware:Watch6,2, software:10.5>",
}
_SEX = {"F": "HKBiologicalSexFemale", "M": "HKBiologicalSexMale"}


def local_text(utc: pl.Expr, offset_minutes: pl.Expr) -> pl.Expr:
    """``YYYY-MM-DD HH:MM:SS +HHMM`` of a UTC timestamp shown at an offset."""
    local = (utc + pl.duration(minutes=offset_minutes)).dt.strftime("%Y-%m-%d %H:%M:%S")
    magnitude = offset_minutes.abs()
    return pl.concat_str(
        local,
        pl.lit(" "),
        pl.when(offset_minutes < 0).then(pl.lit("-")).otherwise(pl.lit("+")),
        (magnitude // 60).cast(pl.String).str.zfill(2),
        (magnitude % 60).cast(pl.String).str.zfill(2),
    )


def _record_lines(frame: pl.DataFrame, record_type: str, unit: str) -> list[str]:
    """One ``<Record .../>`` line per row of frame (source_attrs, start, end, created, value)."""
    offset = pl.col("utc_offset_minutes").cast(pl.Int32)
    lines = frame.select(
        pl.concat_str(
            pl.lit(f' <Record type="{record_type}" '),
            pl.col("source_attrs"),
            pl.lit(f' unit="{unit}" creationDate="'),
            local_text(pl.col("created"), offset),
            pl.lit('" startDate="'),
            local_text(pl.col("start"), offset),
            pl.lit('" endDate="'),
            local_text(pl.col("end"), offset),
            pl.lit('" value="'),
            pl.col("value"),
            pl.col("closing"),
        )
    )
    return lines.to_series().to_list()


def _samples(patient: SimulatedPatient, rng: np.random.Generator) -> pl.DataFrame:
    """The patient's samples (corrupt ones included) with the XML attributes they need."""
    samples = patient.samples
    attrs = [
        f"sourceName={quoteattr(name)} sourceVersion={quoteattr(_VERSIONS[code])} "
        f"device={quoteattr(_DEVICES[code])}"
        for code, name in enumerate(patient.source_names)
    ]
    utc = pl.Datetime("us", "UTC")
    # Devices write a sample to HealthKit seconds to minutes after it ends.
    delay_us = rng.integers(2, 900, len(samples)) * 1_000_000
    return pl.DataFrame(
        {
            "source": samples.source.astype(np.int64),
            "start": pl.Series(samples.start_us).cast(utc),
            "end": pl.Series(samples.end_us).cast(utc),
            "created": pl.Series(np.maximum(samples.start_us, samples.end_us) + delay_us).cast(utc),
            "utc_offset_minutes": samples.utc_offset_minutes,
            "steps": samples.steps,
            "corrupt": samples.corrupt,
        }
    ).with_columns(
        source_attrs=pl.col("source").replace_strict(
            dict(enumerate(attrs)), return_dtype=pl.String
        ),
        closing=pl.lit('"/>'),
    )


def _export_pieces(patient: SimulatedPatient, *, watch_detail: bool = False) -> Iterator[str]:
    """The export document as text pieces of bounded size; see :func:`write_apple_health_export`."""
    profile = patient.profile
    rng = patient_rng(profile.seed, profile.index, Stream.LANDING)
    zone = ZoneInfo(profile.timezone)
    last_day = profile.enrolled_on + timedelta(days=int(patient.daily.days.size) - 1)
    exported = datetime.combine(last_day + timedelta(days=1), time(8, 12, 31), tzinfo=zone)
    birthday = f"{profile.birth_year}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
    yield '<?xml version="1.0" encoding="UTF-8"?>\n' + _DTD
    yield '<HealthData locale="en_US">\n'
    yield f' <ExportDate value="{exported.strftime("%Y-%m-%d %H:%M:%S %z")}"/>\n'
    yield (
        f' <Me HKCharacteristicTypeIdentifierDateOfBirth="{birthday}"'
        f' HKCharacteristicTypeIdentifierBiologicalSex="{_SEX[profile.sex]}"'
        ' HKCharacteristicTypeIdentifierBloodType="HKBloodTypeNotSet"'
        ' HKCharacteristicTypeIdentifierFitzpatrickSkinType="HKFitzpatrickSkinTypeNotSet"'
        ' HKCharacteristicTypeIdentifierCardioFitnessMedicationsUse="None"/>\n'
    )
    samples = _samples(patient, rng).sort("source", "start")
    if samples.height == 0:
        yield "</HealthData>\n"
        return
    # The Health app groups records by type; step counts first, then the types to be skipped.
    steps = samples.with_columns(value=pl.col("steps").cast(pl.Int64).cast(pl.String))
    yield from _chunked(steps, "HKQuantityTypeIdentifierStepCount", "count")

    # Other record types come from genuine walks only.
    samples = samples.filter(~pl.col("corrupt"))
    stride_km = rng.uniform(0.00055, 0.00075)
    # With watch_detail, the watch writes a distance next to each of its step samples.
    with_distance = rng.random(samples.height) < 0.12
    if watch_detail:
        with_distance |= samples["source"].to_numpy() == WATCH
    distance = samples.filter(pl.Series(with_distance)).with_columns(
        value=(pl.col("steps") * stride_km).round(5).cast(pl.String)
    )
    yield from _chunked(distance, "HKQuantityTypeIdentifierDistanceWalkingRunning", "km")

    watch = samples.filter(pl.col("source") == WATCH)
    if watch_detail:
        # While its wearer walks, the watch measures heart rate about once a minute.
        heart = pl.concat(
            watch.with_columns(start=pl.col("start") + pl.duration(minutes=minute))
            for minute in range(_WALKING_HEART_RATES)
        )
    else:
        heart = watch.filter(pl.Series(rng.random(watch.height) < 0.1))
    heart = heart.with_columns(
        end=pl.col("start"),
        value=pl.Series(rng.integers(62, 128, heart.height)).cast(pl.String),
        closing=pl.lit(
            '">\n  <MetadataEntry key="HKMetadataKeyHeartRateMotionContext" value="1"/>\n </Record>'
        ),
    )
    yield from _chunked(heart, "HKQuantityTypeIdentifierHeartRate", "count/min")
    if watch_detail:
        kcal_per_step = rng.uniform(0.035, 0.05)
        active = watch.with_columns(
            value=(pl.col("steps") * kcal_per_step).round(3).cast(pl.String)
        )
        yield from _chunked(active, "HKQuantityTypeIdentifierActiveEnergyBurned", "kcal")
        basal_per_minute = rng.uniform(0.9, 1.3)
        minutes = (pl.col("end") - pl.col("start")).dt.total_seconds() / 60
        basal = watch.with_columns(value=(minutes * basal_per_minute).round(3).cast(pl.String))
        yield from _chunked(basal, "HKQuantityTypeIdentifierBasalEnergyBurned", "kcal")

    phone = samples.filter(pl.col("source") == PHONE)
    flights = phone.filter(pl.Series(rng.random(phone.height) < 0.025))
    flights = flights.with_columns(
        value=pl.Series(rng.integers(1, 3, flights.height)).cast(pl.String)
    )
    yield from _chunked(flights, "HKQuantityTypeIdentifierFlightsClimbed", "count")
    yield "</HealthData>\n"


def _chunked(frame: pl.DataFrame, record_type: str, unit: str) -> Iterator[str]:
    for offset in range(0, frame.height, _CHUNK_ROWS):
        chunk = frame.slice(offset, _CHUNK_ROWS)
        yield "\n".join(_record_lines(chunk, record_type, unit)) + "\n"


def _write_pieces(target: IO[str], pieces: Iterator[str]) -> None:
    for piece in pieces:
        target.write(piece)


def write_apple_health_export(
    patient: SimulatedPatient, directory: Path, *, watch_detail: bool = False
) -> Path:
    """Write one patient's Apple Health export under ``directory/<patient_id>/``.

    Args:
        patient: the simulated patient.
        directory: the ``apple-health`` folder of the landing directory.
        watch_detail: also write what an Apple Watch records next to each of its step samples
            (heart rate, active and basal energy), as real multi-year watch exports do; they are
            mostly such records and reach gigabytes (the ingest benchmark's large exports).

    Returns:
        The path of ``export.xml``, or of ``export.zip`` for every fourth patient.
    """
    folder = directory / patient.profile.patient_id
    folder.mkdir(parents=True, exist_ok=True)
    zipped = patient.profile.index % ZIPPED_EVERY == 0
    final = folder / ("export.zip" if zipped else "export.xml")
    partial = final.with_name(final.name + ".partial")
    if zipped:
        with (
            zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf,
            zf.open("apple_health_export/export.xml", "w", force_zip64=True) as raw,
            io.TextIOWrapper(raw, encoding="utf-8", newline="\n") as text,
        ):
            _write_pieces(text, _export_pieces(patient, watch_detail=watch_detail))
    else:
        with partial.open("w", encoding="utf-8", newline="\n") as text:
            _write_pieces(text, _export_pieces(patient, watch_detail=watch_detail))
    os.replace(partial, final)
    # A patient switches between zipped and plain only if ZIPPED_EVERY changes; drop the other.
    other = folder / ("export.xml" if zipped else "export.zip")
    other.unlink(missing_ok=True)
    return final


def write_clinical_csvs(frames: ClinicalFrames, directory: Path) -> list[Path]:
    """Write the clinical CSVs (columns in the module docstring) into ``directory/clinical``.

    Returns:
        The written files.
    """
    folder = directory / "clinical"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, frame in (
        ("patients", frames.patients),
        ("therapies", frames.therapies),
        ("side_effects", frames.side_effects),
        ("diagnoses", frames.diagnoses),
    ):
        path = folder / f"{name}.csv"
        partial = path.with_name(path.name + ".partial")
        frame.write_csv(partial, date_format="%Y-%m-%d")
        os.replace(partial, path)
        written.append(path)
    return written
