"""Per-record results: one outcome per record object, errors only with FAILED."""

from __future__ import annotations

from dataclasses import replace

import pytest

from consumer.errors import PoisonError, TransientError
from projections.results import Counts, Outcome, Results
from tests.consumer.pipeline.test_apply import record


def test_records_are_told_apart_by_object_even_at_one_position() -> None:
    # A backfill feeds many records at one position; each is its own record.
    first = record(1)
    twin = replace(first)
    results = Results()
    results.applied(first)
    results.stale(twin)
    assert results.counts() == Counts(applied=1, stale=1)
    later = Results()
    later.filtered(first)
    assert results.merge(later).counts() == Counts(stale=1, filtered=1)  # the later one wins


def test_an_error_goes_with_failed_and_only_with_it() -> None:
    with pytest.raises(ValueError, match="FAILED"):
        Results().add(record(1), Outcome.FAILED)
    with pytest.raises(ValueError, match="FAILED"):
        Results().add(record(1), Outcome.APPLIED, TransientError("x"))


def test_errors_for_reports_each_error_once_and_names_a_record_left_out() -> None:
    a, b, c = record(1), record(2), record(3)
    down = TransientError("table down")
    results = Results()
    results.failed(a, down)
    results.failed(b, down)
    assert results.errors_for([a, b, c], "p") == [down]
    results = Results()
    results.applied(a)
    (missing,) = results.errors_for([a, b, c], "p")
    assert isinstance(missing, PoisonError)
    assert str(missing) == "projection p reported no outcome for record 1002"
    assert results.errors_for([a], "p") == []
