"""End to end on the synthetic population: generate -> aggregate job -> silver/daily_steps,
checked against the plain-Python reference computed from the same bronze samples."""

from __future__ import annotations

from pathlib import Path

from jobs import aggregate, generate
from lakehouse.catalog import DAILY_STEPS, STEP_SAMPLES
from lakehouse.storage import Lake
from synthetic.population import DEFAULT_END_DATE
from tests.jobs.samples import assert_days_match_reference


def test_daily_steps_of_a_synthetic_population_match_the_reference(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    # includes a watch wearer
    generate.run(lake, patients=4, seed=12, years=0.4, end_date=DEFAULT_END_DATE)
    aggregate.run(lake, batch_samples=20_000)  # several batches
    samples = lake.read(STEP_SAMPLES).to_dicts()
    days = lake.read(DAILY_STEPS)
    assert len(samples) > 10_000
    assert_days_match_reference(samples, days)
    silver = {(r["patient_id"], r["date"]): r for r in days.iter_rows(named=True)}
    # phone + watch days exist in the population, and de-duplication removed their overlap
    assert any(row["n_sources"] > 1 for row in silver.values())
    assert sum(r["steps"] for r in silver.values()) < sum(s["steps"] for s in samples)
