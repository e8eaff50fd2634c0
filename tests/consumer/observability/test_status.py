"""Status rows from the lease table, rendered as an aligned table and as JSON."""

from __future__ import annotations

import json

from consumer.leases.lease import SENTINEL_SHARD_END, SENTINEL_TRIM_HORIZON, Lease
from consumer.observability.status import (
    ShardStatus,
    render_json,
    render_lease_table,
    render_table,
    rows_from_leases,
    shard_state,
)

ROWS = [
    ShardStatus("shardId-000000000000", (), None, SENTINEL_SHARD_END, "finished", None),
    ShardStatus(
        "shardId-000000000001",
        ("shardId-000000000000",),
        "worker-a",
        "49650000000000000000000000000000000000000000000000000001",
        "running",
        3.25,
    ),
    ShardStatus(
        "shardId-000000000002",
        ("shardId-000000000000", "shardId-000000000001"),
        None,
        SENTINEL_TRIM_HORIZON,
        "waiting_parent",
        None,
    ),
]


def test_table_has_a_header_and_one_aligned_line_per_shard() -> None:
    lines = render_table(ROWS).splitlines()

    assert lines[0].split() == [
        "SHARD",
        "PARENTS",
        "OWNER",
        "CHECKPOINT",
        "STATE",
        "ITERATOR",
        "AGE",
    ]
    assert len(lines) == 1 + len(ROWS)
    # Every column starts at the same offset on every line.
    for header in ("PARENTS", "OWNER", "CHECKPOINT", "STATE", "ITERATOR AGE"):
        column = lines[0].index(header)
        for line in lines[1:]:
            assert line[column - 2 : column] == "  ", (header, line)
            assert line[column] != " ", (header, line)


def test_table_shows_parents_owner_checkpoint_state_and_age_or_dashes() -> None:
    lines = render_table(ROWS).splitlines()

    assert lines[1].split() == ["shardId-000000000000", "-", "-", "SHARD_END", "finished", "-"]
    assert lines[2].split() == [
        "shardId-000000000001",
        "shardId-000000000000",
        "worker-a",
        "49650000000000000000000000000000000000000000000000000001",
        "running",
        "3.2s",
    ]
    assert lines[3].split()[1] == "shardId-000000000000,shardId-000000000001"


def test_json_is_a_list_of_rows_with_the_field_names() -> None:
    decoded = json.loads(render_json(ROWS))

    assert decoded[1] == {
        "shard_id": "shardId-000000000001",
        "parent_shard_ids": ["shardId-000000000000"],
        "owner": "worker-a",
        "checkpoint": "49650000000000000000000000000000000000000000000000000001",
        "state": "running",
        "iterator_age_seconds": 3.25,
        "counter": 0,
        "renewal_age_seconds": None,
    }
    assert decoded[0]["owner"] is None
    assert decoded[0]["iterator_age_seconds"] is None


def test_empty_status_renders_a_header_and_an_empty_list() -> None:
    assert render_table([]).splitlines() == [
        "SHARD  PARENTS  OWNER  CHECKPOINT  STATE  ITERATOR AGE"
    ]
    assert json.loads(render_json([])) == []


def test_shard_state_follows_the_lease_and_its_parents() -> None:
    parent = Lease("p", lease_owner="w1", checkpoint="100")
    done = Lease("d", checkpoint=SENTINEL_SHARD_END)
    child = Lease("c", lease_owner=None, parent_shard_ids=frozenset({"p"}))
    orphan = Lease("o", parent_shard_ids=frozenset({"expired-parent"}))
    leases = {lease.lease_key: lease for lease in (parent, done, child, orphan)}

    assert shard_state(done, leases) == "finished"
    assert shard_state(parent, leases) == "running"
    assert shard_state(child, leases) == "waiting_parent"
    # A parent gone from the table (deleted or trimmed) does not block its child.
    assert shard_state(orphan, leases) == "unowned"
    assert shard_state(child, {**leases, "p": parent.with_(checkpoint=SENTINEL_SHARD_END)}) == (
        "unowned"
    )


def test_rows_from_leases_sorts_by_shard_and_attaches_known_iterator_ages() -> None:
    leases = [
        Lease("shard-b", lease_owner="w1", checkpoint="7", parent_shard_ids=frozenset({"shard-a"})),
        Lease("shard-a", checkpoint=SENTINEL_SHARD_END),
    ]

    rows = rows_from_leases(leases, {"shard-b": 1.5})

    assert rows == [
        ShardStatus("shard-a", (), None, SENTINEL_SHARD_END, "finished", None),
        ShardStatus("shard-b", ("shard-a",), "w1", "7", "running", 1.5),
    ]


def test_output_has_no_trailing_newline_so_echo_prints_no_blank_line() -> None:
    assert not render_table(ROWS).endswith("\n")
    assert not render_json(ROWS).endswith("\n")


def test_an_owned_lease_not_renewed_for_failover_seconds_is_expired() -> None:
    now = 1_000.0
    fresh = Lease("fresh", lease_owner="w1", last_renewal=now - 2)
    dead = Lease("dead", lease_owner="w2", last_renewal=now - 11)
    kcl = Lease("kcl", lease_owner="w3")  # renewed by a KCL worker: no stamp, age unknown
    leases = {lease.lease_key: lease for lease in (fresh, dead, kcl)}

    assert shard_state(dead, leases, now, failover_seconds=10) == "expired"
    assert shard_state(fresh, leases, now, failover_seconds=10) == "running"
    assert shard_state(kcl, leases, now, failover_seconds=10) == "running"
    rows = rows_from_leases(leases.values(), now=now, failover_seconds=10)
    assert [(r.shard_id, r.state, r.renewal_age_seconds) for r in rows] == [
        ("dead", "expired", 11.0),
        ("fresh", "running", 2.0),
        ("kcl", "running", None),
    ]
    assert render_lease_table(rows).splitlines()[1].split() == [
        "dead",
        "-",
        "w2",
        "0",
        "TRIM_HORIZON",
        "11.0s",
        "ago",
        "expired",
    ]
