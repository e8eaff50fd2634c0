"""KEYS_ONLY streams: fetch the item a record names, with a consistent read, in batches.

A KEYS_ONLY stream carries only the keys. A projection that needs the item reads it back from
the source table: one strongly consistent read per record (BatchGetItem, up to 100 keys a
call; it saves round trips, not capacity: each item still costs 1 RCU per 4 KB, twice an
eventually consistent read). Distinct keys of a batch are read once.

What comes back is the item as it is NOW, not as it was at the change: by the time the record
is read the item may have changed again or been deleted. So:
- the fetched item is projected at the record's position, and the projection's per-key
  sequence guard must hold (a later record of the key re-fetches and wins; a replay of an
  older record is refused by the guard), which makes the read model converge to the item's
  current state rather than replay its history;
- a missing item means it was deleted since: the record is handed on as a REMOVE (with no
  images), so the read model deletes it. REMOVE records are passed on unread.
- do not use fetched images for deltas or transitions (stock crossing a threshold): those
  need NEW_AND_OLD_IMAGES.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Annotated, Any

from pydantic import Field

from consumer.aws_errors import AWS_CALL_ERRORS, SINK_TRANSIENT_CODES, raise_translated
from consumer.errors import PoisonError, TransientError
from consumer.pipeline.retry import Backoff, retry
from consumer.record import ChangeRecord
from consumer.sources.attribute_values import from_image, to_attribute_value
from projections.projection import Projection, Resources
from projections.results import Results
from projections.wrapper import WrappedSettings, WrappingProjection, build_inner

MAX_KEYS_PER_CALL = 100  # BatchGetItem's limit
MAX_UNPROCESSED_ROUNDS = 8
# AWS asks for backoff before reading UnprocessedKeys again: they come from throttling.
UNPROCESSED_BACKOFF_BASE = 0.05
UNPROCESSED_BACKOFF_CAP = 1.0


class _Unprocessed(TransientError):
    """DynamoDB returned some keys as UnprocessedKeys (it was throttled); read them again."""


KeyTuple = tuple[tuple[str, Any], ...]


def _key_of(record: ChangeRecord) -> KeyTuple:
    return tuple(sorted((name, _hashable(value)) for name, value in record.keys.items()))


def _hashable(value: Any) -> Any:
    # Key attributes are S, N or B: all hashable already; bytearray would not be.
    return bytes(value) if isinstance(value, bytearray) else value


def needs_image(record: ChangeRecord) -> bool:
    """An INSERT or MODIFY that carries no new image (a KEYS_ONLY or OLD_IMAGE stream)."""
    return record.event_name != "REMOVE" and record.new_image is None


class ImageFetcher:
    """Reads the current items for records' keys from their source table(s)."""

    def __init__(self, client: Any, table: str | None = None) -> None:
        self.client = client
        self.table = table
        self.reads = 0  # items requested, for tests and cost accounting

    def fetch(self, records: Sequence[ChangeRecord]) -> list[ChangeRecord]:
        """`records` with new images filled in where needed; missing items become REMOVEs."""
        wanted: dict[str, dict[KeyTuple, Mapping[str, Any]]] = {}
        for record in records:
            if needs_image(record):
                table = self.table or record.table
                if not table:
                    raise PoisonError(
                        "KEYS_ONLY record without a table name; set image_fetch table"
                    )
                wanted.setdefault(table, {})[_key_of(record)] = record.keys
        if not wanted:
            return list(records)
        found: dict[str, dict[KeyTuple, dict[str, Any]]] = {
            table: self._get(table, keys) for table, keys in wanted.items()
        }
        out: list[ChangeRecord] = []
        for record in records:
            if not needs_image(record):
                out.append(record)
                continue
            item = found[self.table or str(record.table)].get(_key_of(record))
            if item is None:
                out.append(replace(record, event_name="REMOVE", new_image=None, old_image=None))
            else:
                out.append(replace(record, new_image=item))
        return out

    def _get(
        self, table: str, keys: Mapping[KeyTuple, Mapping[str, Any]]
    ) -> dict[KeyTuple, dict[str, Any]]:
        names = {name for key in keys for name, _ in key}
        items: dict[KeyTuple, dict[str, Any]] = {}
        pending = [
            {name: to_attribute_value(value) for name, value in key.items()}
            for key in keys.values()
        ]
        self.reads += len(pending)
        for start in range(0, len(pending), MAX_KEYS_PER_CALL):
            request: dict[str, Any] = {
                table: {"Keys": pending[start : start + MAX_KEYS_PER_CALL], "ConsistentRead": True}
            }
            retry(
                partial(self._read_round, table, request, names, items),
                backoff=Backoff(UNPROCESSED_BACKOFF_BASE, UNPROCESSED_BACKOFF_CAP),
                retry_on=lambda error: isinstance(error, _Unprocessed),
                attempts=MAX_UNPROCESSED_ROUNDS,
            )
        return items

    def _read_round(
        self,
        table: str,
        request: dict[str, Any],
        names: set[str],
        items: dict[KeyTuple, dict[str, Any]],
    ) -> None:
        """One BatchGetItem; what DynamoDB left unprocessed stays in `request` for the next."""
        response = self._call(request)
        for raw in response.get("Responses", {}).get(table, []):
            item = from_image(raw)
            items[tuple(sorted((n, _hashable(item[n])) for n in names))] = item
        unprocessed = response.get("UnprocessedKeys") or {}
        request.clear()
        request.update(unprocessed)
        if unprocessed:
            # Still left after the last round, this reaches the shard loop, which backs off
            # and retries the whole batch.
            raise _Unprocessed(f"BatchGetItem on {table}: keys still unprocessed")

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            response: dict[str, Any] = self.client.batch_get_item(RequestItems=request)
        except AWS_CALL_ERRORS as error:
            raise_translated(error, "BatchGetItem", SINK_TRANSIENT_CODES)
        return response


class ImageFetchSettings(WrappedSettings):
    """`projection` and its `settings`, and the source `table` (default: the record's own)."""

    table: Annotated[str, Field(min_length=1)] | None = None


class ImageFetchingProjection(WrappingProjection):
    """Wraps a projection that needs images so it can read a KEYS_ONLY stream.

    Configure `class = "projections.image_fetch:ImageFetchingProjection"` with settings
    `projection = "module:Class"`, `settings = {...}` and optionally `table` (the source table;
    default: the record's own table name).
    """

    settings_model = ImageFetchSettings

    def __init__(self, inner: Projection, fetcher: ImageFetcher) -> None:
        super().__init__(inner.name)
        self.inner = inner
        self.fetcher = fetcher

    @classmethod
    def from_settings(
        cls, name: str, settings: ImageFetchSettings, resources: Resources
    ) -> ImageFetchingProjection:
        """Build the inner projection by import path and a fetcher on the DynamoDB client."""
        inner = build_inner(name, settings, resources)
        return cls(inner, ImageFetcher(resources.aws_client("dynamodb"), settings.table))

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        """Fetch the missing images, then apply through the inner projection."""
        fetched = self.fetcher.fetch(records)
        inner = self.inner.apply(fetched)
        # The inner projection reports on the records it was given; report on ours.
        results = Results()
        for original, sent in zip(records, fetched, strict=True):
            result = inner.get(sent)
            if result is not None:
                results.add(original, result.outcome, result.error)
        return results
