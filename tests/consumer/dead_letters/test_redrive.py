"""`dlq redrive` on real parts (kinesis-local, moto's SQS, S3 and DynamoDB): after the
projection is fixed, a redrive makes the read model equal a clean run's; signed letters are
redriven; a redrive never applies a letter that could not be real."""

from __future__ import annotations

import orjson

from tests.consumer.dead_letters.conftest import Poisoned
from tests.support.guarded import create_table, table_state


def test_redrive_after_the_fix_gives_the_clean_runs_read_model(poisoned: Poisoned) -> None:
    clean_table = poisoned.table + "-clean"
    create_table(poisoned.dynamodb, clean_table)
    clean = poisoned.config("clean", fixed=True, table=clean_table, app=poisoned.app + "-clean")
    poisoned.run_to_the_end(clean)  # the clean run: the fixed projection from the start
    expected = table_state(poisoned.dynamodb, clean_table)
    assert expected["k2"] == "bug-k2-v3" and expected["k1"] == "ok-k1-v3"
    assert table_state(poisoned.dynamodb, poisoned.table) != expected

    inspected = poisoned.dlq("inspect", "--json")
    assert inspected.exit_code == 0, inspected.output
    report = orjson.loads(inspected.stdout)
    assert report["by_reason"] == {"projection_error": 6}
    assert report["by_projection"] == {"items": 6}
    assert len(report["samples"]) == 3 and "record" in report["samples"][0]

    dry = poisoned.dlq("redrive", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would apply: 6" in dry.output
    other = poisoned.dlq("redrive", "--projection", "other")
    assert "applied and deleted: 0; skipped: 6" in other.output
    buggy = str(poisoned.config("buggy", fixed=False))
    still_buggy = poisoned.dlq("redrive", "--config", buggy)
    assert still_buggy.exit_code == 1 and "failed: 6" in still_buggy.output
    assert table_state(poisoned.dynamodb, poisoned.table) != expected  # nothing applied yet

    redriven = poisoned.dlq("redrive", "--rate", "100/s")
    assert redriven.exit_code == 0, redriven.output
    assert "applied and deleted: 6; skipped: 0; failed: 0; refused: 0" in redriven.output
    assert table_state(poisoned.dynamodb, poisoned.table) == expected
    empty = orjson.loads(poisoned.dlq("inspect", "--json").stdout)
    assert empty["messages"] == 0


def test_signed_letters_are_redriven_with_the_same_key(signed_poisoned: Poisoned) -> None:
    letters = signed_poisoned.letters()
    assert len(letters) == 6 and all(letter["signature"]["mac"] for letter in letters)
    redriven = signed_poisoned.dlq("redrive")
    assert redriven.exit_code == 0, redriven.output
    assert "applied and deleted: 6" in redriven.output
    assert table_state(signed_poisoned.dynamodb, signed_poisoned.table)["k2"] == "bug-k2-v3"


def test_a_redriven_letter_leaves_the_ledger_so_a_new_failure_is_sent_again(
    poisoned: Poisoned,
) -> None:
    from consumer.dead_letters.ledger import LETTER, Claim, DeadLetterLedger

    ledger_table = f"{poisoned.app}-dead-letters"
    items = poisoned.dynamodb.scan(TableName=ledger_table)["Items"]
    sent = [item["id"]["S"] for item in items if item["id"]["S"].startswith(LETTER)]
    assert len(sent) == 6
    assert poisoned.dlq("redrive").exit_code == 0
    items = poisoned.dynamodb.scan(TableName=ledger_table)["Items"]
    assert [item for item in items if item["id"]["S"].startswith(LETTER)] == []
    ledger = DeadLetterLedger(poisoned.dynamodb, ledger_table)
    assert ledger.claim(sent[0].removeprefix(LETTER)) is Claim.SEND


def test_letters_stay_redrivable_after_a_reset_moves_the_checkpoint_back(
    poisoned: Poisoned,
) -> None:
    from tests.support.daemon import invoke_cli

    fixed = str(poisoned.config("fixed", fixed=True))
    reset = invoke_cli(["leases", "reset", "--config", fixed, "--to", "TRIM_HORIZON", "--yes"])
    assert reset.exit_code == 0, reset.output
    # The lease now says TRIM_HORIZON; the ledger remembers how far the shard had been read.
    redriven = poisoned.dlq("redrive")
    assert redriven.exit_code == 0, redriven.output
    assert "applied and deleted: 6" in redriven.output
