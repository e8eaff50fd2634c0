"""How many records to ask GetRecords for: more while a shard is behind, fewer at its tip.

A shard paced at 5 GetRecords/s reads at most 5 x Limit records per second, so a fixed Limit
of 1,000 caps catching up at 5,000 records/s. Doubling the Limit after every page that shows
a backlog reaches Kinesis' 10,000 within four pages; halving it after every page at the tip
brings batches (and the records held in memory and re-read after a crash) back down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Behind by at least this much means "catching up": Kinesis reports it as MillisBehindLatest;
# on DynamoDB Streams the newest record's age in the page stands for it.
CATCH_UP_SECONDS = 1.0


@dataclass(slots=True)
class PageSizer:
    """The next GetRecords Limit, between `floor` (at the tip) and `ceiling` (while behind)."""

    floor: int
    ceiling: int
    limit: int = field(init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.floor <= self.ceiling:
            raise ValueError(
                f"page sizes need 1 <= floor <= ceiling (got {self.floor}, {self.ceiling})"
            )
        self.limit = self.floor

    def observe(
        self,
        count: int,
        asked: int,
        millis_behind_latest: int | None,
        newest_age_seconds: float | None,
    ) -> int:
        """Adjust after a page of `count` records fetched with Limit `asked`; the new limit."""
        if behind(count, asked, millis_behind_latest, newest_age_seconds):
            self.limit = min(self.ceiling, self.limit * 2)
        else:
            self.limit = max(self.floor, self.limit // 2)
        return self.limit


def behind(
    count: int, asked: int, millis_behind_latest: int | None, newest_age_seconds: float | None
) -> bool:
    """Does the page show a backlog? A full page, or records older than CATCH_UP_SECONDS.

    A full page means more is waiting on any source. MillisBehindLatest is Kinesis' own measure
    of the backlog after the page; DynamoDB Streams has none, so the age of the newest record
    read stands for it (an old record in a short page is a sparse backlog, not the tip).
    """
    if count >= asked:
        return True
    if millis_behind_latest is not None:
        return millis_behind_latest >= CATCH_UP_SECONDS * 1000
    return count > 0 and newest_age_seconds is not None and newest_age_seconds >= CATCH_UP_SECONDS
