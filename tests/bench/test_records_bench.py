"""The hot-path records benchmark still runs and still compares like with like (no timing)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bench import records_bench
from consumer.record import ChangeRecord, RawRecord


def test_the_frozen_twins_have_the_daemons_fields_and_are_frozen() -> None:
    for cls in (ChangeRecord, RawRecord):
        twin = records_bench.frozen_twin(cls)
        assert [f.name for f in dataclasses.fields(twin)] == [
            f.name for f in dataclasses.fields(cls)
        ]
    built: list[Any] = [run() for run in records_bench.record_sides().values()]
    assert [len(out) for out in built] == [records_bench.RECORDS] * 2
    frozen, plain = built[0][0], built[1][0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        frozen.event_name = "REMOVE"
    assert dataclasses.astuple(frozen) == dataclasses.astuple(plain)


def test_both_results_sides_settle_every_record(capsys: pytest.CaptureFixture[str]) -> None:
    records: Any = records_bench.record_sides()["plain slotted (daemon)"]()
    before, daemon = records_bench.result_sides(records).values()
    settled: Any = before()
    results: Any = daemon()
    assert len(settled) == records_bench.RECORDS
    assert results.counts().applied == records_bench.RECORDS
    assert records_bench.main(["--rounds", "1", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "records: us per record" in out and "results: us per record" in out
