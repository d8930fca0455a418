"""gold/outlook's champion per patient: the cluster's champion, unless the patient's own last year
says it lost to their usual level beyond chance (issue 19, item 1)."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from jobs.outlook import outlook_rows

ORIGIN = date(2026, 5, 1)


def _forecasts() -> pl.DataFrame:
    days = [ORIGIN + timedelta(days=i) for i in range(365)]
    rows = []
    for patient in ("P1", "P2", "P3"):
        for model, steps in (("ebm_global", 5200.0), ("usual_level", 5000.0)):
            rows += [
                {
                    "patient_id": patient,
                    "model": model,
                    "origin_date": ORIGIN,
                    "target_date": d,
                    "yhat": steps,
                }
                for d in days
            ]
    return pl.DataFrame(rows)


def test_a_patient_whose_own_year_says_the_champion_lost_is_shown_the_usual_level() -> None:
    own = pl.DataFrame(
        {
            "patient_id": ["P1", "P2"],
            "model": ["ebm_global", "ebm_global"],
            "own_mae": [1500.0, 1010.0],
            "usual_mae": [1200.0, 1000.0],
            "own_days": [300, 300],
            # P2's EBM was a little worse, within chance: it stays
            "loses": [True, False],
        }
    )
    patients = pl.DataFrame({"patient_id": ["P1", "P2", "P3"], "disease_group": ["MS"] * 3})
    baselines = pl.DataFrame(
        {"patient_id": ["P1"], "date": [ORIGIN], "baseline_mean_180d": [5000.0]}
    )
    rows = outlook_rows(_forecasts(), baselines, patients, {"MS": "ebm_global"}, own)
    champions = dict(rows.filter("champion").select("patient_id", "model").iter_rows())
    assert champions == {"P1": "usual_level", "P2": "ebm_global", "P3": "ebm_global"}
    errors = {
        (p, m): e for p, m, e in rows.select("patient_id", "model", "own_year_mae").iter_rows()
    }
    assert errors[("P1", "ebm_global")] == 1500.0 and errors[("P1", "usual_level")] == 1200.0
    assert errors[("P3", "ebm_global")] is None  # no own year checked: nothing claimed
    changes = rows.filter(pl.col("patient_id") == "P1").sort("model")["year_end_change"]
    assert changes.to_list() == pytest.approx([0.04, 0.0])  # ebm_global, usual_level
