"""The compiled inner loop of the daily aggregation (:mod:`jobs.daily` holds the rules and the
frame around it).

One pass per patient, in linear time, whatever the order of the patient's samples: every sample
adds its steps to dense per-patient arrays indexed by (local hour, UTC offset, source), split in
proportion to time where it spans several hours; then one walk over the patient's hours keeps,
per hour and offset, the source with the most steps, and sums the hours of each local day. No
sort and no hash table: at about 80,000 samples per patient the arrays (hours x offsets x
sources of one patient) stay small and are reused for the next patient.

Compiled with numba (``nogil``: batches aggregated by threads run in parallel); the compiled
code is cached beside this module, so only the first run on a machine pays for compiling.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt

US_PER_MINUTE = 60_000_000
US_PER_HOUR = 3_600_000_000
# Offsets are validated to within 14 hours; they index a table of 2 * 840 + 1 slots.
MAX_OFFSET_MINUTES = 840


@numba.njit(nogil=True, cache=True)
def run_starts(
    patient_views: npt.NDArray[np.uint64], source_views: npt.NDArray[np.uint64]
) -> npt.NDArray[np.int64]:
    """First row of each run of rows with equal (patient, source) views.

    The arguments are Arrow string views (16 bytes a row, as two 64-bit words): equal strings
    stored inline have equal views, so a run never crosses a change of value. Equal long strings
    may have different views and split a run in two, which costs a little speed, never a
    wrong result (the runs' values are compared again as strings).
    """
    n = patient_views.shape[0]
    starts = np.empty(n, dtype=np.int64)
    count = 0
    for i in range(n):
        if (
            i == 0
            or patient_views[i, 0] != patient_views[i - 1, 0]
            or patient_views[i, 1] != patient_views[i - 1, 1]
            or source_views[i, 0] != source_views[i - 1, 0]
            or source_views[i, 1] != source_views[i - 1, 1]
        ):
            starts[count] = i
            count += 1
    return starts[:count]


@numba.njit(nogil=True, cache=True)
def _runs_by_patient(
    run_patient: npt.NDArray[np.int64], n_patients: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The runs grouped by patient, each patient's in their original order (a counting sort):
    patient ``p`` owns runs ``order[first[p]:first[p + 1]]``."""
    first = np.zeros(n_patients + 1, dtype=np.int64)
    for r in range(run_patient.size):
        first[run_patient[r] + 1] += 1
    for p in range(n_patients):
        first[p + 1] += first[p]
    fill = first[:-1].copy()
    order = np.empty(run_patient.size, dtype=np.int64)
    for r in range(run_patient.size):
        order[fill[run_patient[r]]] = r
        fill[run_patient[r]] += 1
    return order, first


@numba.njit(nogil=True, cache=True)
def _hour_bounds(
    order: npt.NDArray[np.int64],
    first_run: npt.NDArray[np.int64],
    run_start: npt.NDArray[np.int64],
    start_us: npt.NDArray[np.int64],
    end_us: npt.NDArray[np.int64],
    offset: npt.NDArray[np.int16],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], np.int64]:
    """First and last local hour of each patient, and the number of local days those hours
    span, all patients together."""
    patients = first_run.size - 1
    first = np.empty(patients, dtype=np.int64)
    last = np.empty(patients, dtype=np.int64)
    days = np.int64(0)
    for p in range(patients):
        low = np.int64(2**62)
        high = -np.int64(2**62)
        for k in range(first_run[p], first_run[p + 1]):
            run = order[k]
            for i in range(run_start[run], run_start[run + 1]):
                shift = np.int64(offset[i]) * US_PER_MINUTE
                local_start = start_us[i] + shift
                local_end = max(end_us[i] + shift - 1, local_start)
                low = min(low, local_start // US_PER_HOUR)
                high = max(high, local_end // US_PER_HOUR)
        first[p] = low
        last[p] = high
        days += high // 24 - low // 24 + 1
    return first, last, days


@numba.njit(nogil=True, cache=True)
def aggregate_days(
    run_start: npt.NDArray[np.int64],
    run_patient: npt.NDArray[np.int64],
    n_patients: int,
    run_source: npt.NDArray[np.int64],
    n_sources: int,
    offset: npt.NDArray[np.int16],
    start_us: npt.NDArray[np.int64],
    end_us: npt.NDArray[np.int64],
    steps: npt.NDArray[np.float64],
) -> tuple[Any, ...]:
    """Daily rows per patient and local day, from samples in any order, given as runs of rows
    of one patient and source (bronze files hold a patient's samples of one source together, so
    runs are long; any order still gives the same result).

    Args:
        run_start: first row of each run, then the number of rows.
        run_patient: dense patient code of each run, ``0 <= code < n_patients``.
        n_patients: number of distinct patient codes.
        run_source: dense source code of each run, ``0 <= code < n_sources``.
        n_sources: number of distinct source codes.
        offset: UTC offset of each row in minutes (within 14 hours).
        start_us, end_us: UTC start and end in microseconds since the epoch.
        steps: steps of each row (not negative).

    Returns:
        Arrays with one entry per patient-day that has a sample: patient code, local day
        (days since 1970-01-01), steps, coverage hours, samples, sources.
    """
    order, first_run = _runs_by_patient(run_patient, n_patients)
    first_hour, last_hour, capacity = _hour_bounds(
        order, first_run, run_start, start_us, end_us, offset
    )
    out_patient = np.empty(capacity, dtype=np.int64)
    out_day = np.empty(capacity, dtype=np.int64)
    out_steps = np.empty(capacity, dtype=np.float64)
    out_hours = np.empty(capacity, dtype=np.int64)
    out_samples = np.empty(capacity, dtype=np.int64)
    out_sources = np.empty(capacity, dtype=np.int64)
    rows = 0

    # per patient: its offsets and sources numbered 0, 1, ... in order of appearance
    offset_index = np.full(2 * MAX_OFFSET_MINUTES + 1, -1, dtype=np.int64)
    offset_seen = np.empty(2 * MAX_OFFSET_MINUTES + 1, dtype=np.int64)
    source_index = np.full(n_sources, -1, dtype=np.int64)
    source_seen = np.empty(n_sources, dtype=np.int64)
    # last day (global stamp) each local source was counted on
    source_day = np.full(n_sources, -1, dtype=np.int64)
    day_stamp = 0
    # dense cells (local hour, offset, source) of one patient, grown on demand
    cell_steps = np.zeros(0, dtype=np.float64)
    cell_samples = np.zeros(0, dtype=np.int64)
    cell_touched = np.zeros(0, dtype=np.bool_)

    for p in range(n_patients):
        begin, finish = first_run[p], first_run[p + 1]
        n_offsets = 0
        n_local = 0
        for k in range(begin, finish):
            run = order[k]
            code = run_source[run]
            if source_index[code] < 0:
                source_index[code] = n_local
                source_seen[n_local] = code
                n_local += 1
            for i in range(run_start[run], run_start[run + 1]):
                slot = offset[i] + MAX_OFFSET_MINUTES
                if offset_index[slot] < 0:
                    offset_index[slot] = n_offsets
                    offset_seen[n_offsets] = slot
                    n_offsets += 1
        low = first_hour[p]
        hours = last_hour[p] - low + 1
        cells = hours * n_offsets * n_local
        if cells > cell_steps.size:
            size = max(cells, 2 * cell_steps.size)
            cell_steps = np.zeros(size, dtype=np.float64)
            cell_samples = np.zeros(size, dtype=np.int64)
            cell_touched = np.zeros(size, dtype=np.bool_)
        else:
            cell_steps[:cells] = 0.0
            cell_samples[:cells] = 0
            cell_touched[:cells] = False

        stride = n_offsets * n_local
        for k in range(begin, finish):
            run = order[k]
            local_source = source_index[run_source[run]]
            for i in range(run_start[run], run_start[run + 1]):
                shift = np.int64(offset[i]) * US_PER_MINUTE
                local_start = start_us[i] + shift
                local_end = end_us[i] + shift
                hour = local_start // US_PER_HOUR
                # the end is exclusive: a sample ending on the hour does not touch the next hour
                end_hour = max(local_end - 1, local_start) // US_PER_HOUR
                column = offset_index[offset[i] + MAX_OFFSET_MINUTES] * n_local + local_source
                if hour == end_hour:
                    cell = (hour - low) * stride + column
                    cell_steps[cell] += steps[i]
                    cell_samples[cell] += 1
                    cell_touched[cell] = True
                    continue
                duration = local_end - local_start
                for h in range(hour, end_hour + 1):
                    piece = min(local_end, (h + 1) * US_PER_HOUR) - max(
                        local_start, h * US_PER_HOUR
                    )
                    cell = (h - low) * stride + column
                    cell_steps[cell] += steps[i] * piece / duration
                    cell_touched[cell] = True
                    # counted once per local day: in its first hour and at each midnight it
                    # crosses
                    if h == hour or h % 24 == 0:
                        cell_samples[cell] += 1

        current_day = low // 24
        day_steps = 0.0
        day_hours = 0
        day_samples = 0
        day_sources = 0
        day_stamp += 1
        # one hour past the last: its day differs, so the patient's last day is written too
        for h in range(hours + 1):
            day = (h + low) // 24 if h < hours else current_day + 1
            if day != current_day:
                if day_hours:
                    out_patient[rows] = p
                    out_day[rows] = current_day
                    out_steps[rows] = day_steps
                    out_hours[rows] = day_hours
                    out_samples[rows] = day_samples
                    out_sources[rows] = day_sources
                    rows += 1
                if h == hours:
                    break
                current_day = day
                day_steps = 0.0
                day_hours = 0
                day_samples = 0
                day_sources = 0
                day_stamp += 1
            for o in range(n_offsets):
                base = (h * n_offsets + o) * n_local
                touched = False
                best = 0.0
                for s in range(n_local):
                    cell = base + s
                    if cell_touched[cell]:
                        touched = True
                        best = max(best, cell_steps[cell])
                        day_samples += cell_samples[cell]
                        if source_day[s] != day_stamp:
                            source_day[s] = day_stamp
                            day_sources += 1
                if touched:
                    day_hours += 1
                    day_steps += best

        for k in range(n_offsets):
            offset_index[offset_seen[k]] = -1
        for k in range(n_local):
            source_index[source_seen[k]] = -1

    return (
        out_patient[:rows],
        out_day[:rows],
        out_steps[:rows],
        out_hours[:rows],
        out_samples[:rows],
        out_sources[:rows],
    )
