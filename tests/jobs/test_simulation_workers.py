"""Worker processes of ``mobility generate``: same batches as in-process, failures surface."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from polars.testing import assert_frame_equal

from jobs import simulation_workers
from jobs.simulation_workers import BatchRequest, simulate, simulated_batches
from synthetic.population import DEFAULT_END_DATE


def _requests(patients: int, per_batch: int) -> list[BatchRequest]:
    return [
        BatchRequest(7, first, min(patients, first + per_batch - 1), 0.3, DEFAULT_END_DATE)
        for first in range(1, patients + 1, per_batch)
    ]


def test_batches_come_back_in_order_and_equal_to_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulation_workers, "_exchange_parent", lambda: str(tmp_path))
    requests = _requests(7, 2)
    batches = list(simulated_batches(requests, 2))
    firsts = [batch.samples.patient_ids[0] for batch in batches]
    assert firsts == [f"SYN7-00000{i}" for i in (1, 3, 5, 7)]
    for request, batch in zip(requests, batches, strict=True):
        local = simulate(request)
        for received, expected in zip(batch.samples.frames(), local.samples.frames(), strict=True):
            assert_frame_equal(received, expected)
        assert_frame_equal(batch.clinical.patients, local.clinical.patients)
    # The exchange files are gone once the batches are taken.
    assert list(tmp_path.iterdir()) == []


def test_a_failing_batch_raises_with_the_workers_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulation_workers, "_exchange_parent", lambda: str(tmp_path))
    broken = [*_requests(2, 1), BatchRequest(7, 3, 3, 3.0, date.min)]
    batches = simulated_batches(broken, 2)
    assert next(batches).samples.patient_ids == ("SYN7-000001",)
    with pytest.raises(RuntimeError, match="OverflowError"):
        list(batches)
    assert list(tmp_path.iterdir()) == []
