"""The Cohort SQL page's example query (the page shows it; its test and the benchmarks run it)."""

from __future__ import annotations

EXAMPLE = """-- Median daily steps on wear days per disease group and month
SELECT p.disease_group,
       date_trunc('month', d.date) AS month,
       median(d.steps) AS median_steps,
       count(DISTINCT d.patient_id) AS patients
FROM silver.daily_steps AS d
JOIN bronze.patients AS p USING (patient_id)
WHERE d.is_wear_day
GROUP BY ALL
ORDER BY month DESC, disease_group
LIMIT 48"""
