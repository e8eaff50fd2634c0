"""Apply, one at a time, the mutants of docs/design.md's invariants that once survived the
suite (issue 12) or guard a feature's core rule (issue 14), run the tests named to kill each,
and restore the file.

    .venv/bin/python scripts/mutants.py            # every mutant
    .venv/bin/python scripts/mutants.py --list     # their names
    .venv/bin/python scripts/mutants.py kcl-checkpoint-before-process ttl-any-service

It edits files of the working tree while a mutant runs and puts them back afterwards (also
on Ctrl-C): run it alone, on a tree without unsaved edits to those files. Exit status 1 if a
mutant survives (its tests pass) or a snippet no longer matches the code.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTEST = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]


@dataclass(frozen=True)
class Mutant:
    """A change of `original` into `mutated` in `path`, and the tests that must then fail."""

    name: str
    path: str
    original: str
    mutated: str
    tests: tuple[str, ...]


KCL = "consumer/runtimes/kcl.py"
KCL_TESTS = "tests/consumer/runtimes/test_kcl.py"
PREFETCH = "consumer/pipeline/prefetch.py"
PREFETCH_TEST = "tests/consumer/pipeline/test_prefetch.py"
AWS_ERRORS = "consumer/aws_errors.py"
TRANSIENT_CODES = (
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "TooManyRequestsException",
    "RequestThrottled",
    "SlowDown",
    "KMSThrottlingException",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "InternalError",
    "TransactionConflictException",
    "TransactionInProgressException",
)

MUTANTS = [
    Mutant(
        "kcl-checkpoint-before-process",
        KCL,
        "        self._pipeline.process(batch)\n"
        "        assert batch.last_sequence is not None  # records is not empty\n"
        "        self._processed = (batch.last_sequence, batch.last_sub_sequence)\n"
        "        self._checkpoint(*self._processed)\n",
        "        assert batch.last_sequence is not None  # records is not empty\n"
        "        self._processed = (batch.last_sequence, batch.last_sub_sequence)\n"
        "        self._checkpoint(*self._processed)\n"
        "        self._pipeline.process(batch)\n",
        (f"{KCL_TESTS}::test_the_checkpoint_is_asked_for_only_once_the_batch_is_applied",),
    ),
    Mutant(
        "kcl-lease-lost-guard-removed",
        KCL,
        "        if self._lease_lost:\n            return False\n\n        def ask()",
        "\n        def ask()",
        (
            f"{KCL_TESTS}::test_after_a_checkpoint_says_the_lease_is_gone_the_processor_never_"
            "checkpoints_again",
            f"{KCL_TESTS}::test_lease_lost_never_checkpoints_even_with_work_pending",
        ),
    ),
    Mutant(
        "ttl-any-service",
        "consumer/sources/decode.py",
        'return kind == "Service" and principal == TTL_PRINCIPAL',
        'return kind == "Service"',
        (
            "tests/consumer/sources/test_decode.py::test_a_remove_by_another_principal_is_not_expiry",
        ),
    ),
    Mutant(
        "trimmed-get-records-not-handled",
        PREFETCH,
        "        except TrimmedDataError:\n            log.error(\n"
        '                "data lost upstream: records expired',
        "        except ZeroDivisionError:\n            log.error(\n"
        '                "data lost upstream: records expired',
        (PREFETCH_TEST,),
    ),
    Mutant(
        "trimmed-get-records-ends-the-shard",
        PREFETCH,
        "            reader.close()\n            return self._open_with_retry(TRIM_HORIZON)\n",
        "            reader.close()\n            return None\n",
        (PREFETCH_TEST,),
    ),
    Mutant(
        "trimmed-open-ends-the-shard",
        PREFETCH,
        "                self._metrics.record_trimmed(self._stream, self._shard_id)\n"
        "                start = TRIM_HORIZON\n",
        "                return None\n",
        (PREFETCH_TEST,),
    ),
    Mutant(
        "idle-shard-lease-lost-not-stopped",
        "consumer/pipeline/worker.py",
        "                consumer.lease_lost()\n",
        "                pass\n",
        (
            "tests/consumer/pipeline/test_shard_loop.py::"
            "test_an_idle_shard_whose_lease_was_taken_stops_polling",
        ),
    ),
    Mutant(
        "lanes-done-before-every-lane",
        "consumer/pipeline/lanes.py",
        "        for thread in threads:\n            thread.join()\n",
        "",
        (
            "tests/consumer/pipeline/test_lanes.py::"
            "test_a_transient_failure_in_one_lane_stalls_the_batch_while_the_other_lanes_finish",
        ),
    ),
    Mutant(
        "prefetch-bounded-in-batches-only",
        "consumer/pipeline/batch_buffer.py",
        "                    and self._records + records <= self.max_records\n",
        "",
        ("tests/consumer/pipeline/test_shard_loop.py", "-k", "prefetch_is_bounded and records"),
    ),
    Mutant(
        "first-take-takes-everything",
        "consumer/leases/taker.py",
        "    claim = 1 if held == 0 else needed\n",
        "    claim = needed\n",
        (
            "tests/consumer/leases/test_coordinator.py::"
            "test_two_workers_starting_together_split_eight_leases_four_four_without_stealing",
        ),
    ),
    *(
        Mutant(
            f"transient-code-dropped:{code}",
            AWS_ERRORS,
            f'"{code}"',
            f'"{code}-dropped"',
            ("tests/consumer/test_aws_errors.py", "-k", f"{code} or table_holds"),
        )
        for code in TRANSIENT_CODES
    ),
]


def run(mutant: Mutant) -> str:
    """'killed', 'SURVIVED' or 'NO MATCH' (the snippet is not in the file exactly once)."""
    path = ROOT / mutant.path
    text = path.read_text()
    if text.count(mutant.original) != 1:
        return "NO MATCH"
    try:
        path.write_text(text.replace(mutant.original, mutant.mutated))
        done = subprocess.run([*PYTEST, *mutant.tests], cwd=ROOT, capture_output=True, text=True)
    finally:
        path.write_text(text)
    return "SURVIVED" if done.returncode == 0 else "killed"


def main() -> int:
    """Run the chosen mutants (all by default) and print one line per mutant."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args()
    if args.list:
        print("\n".join(m.name for m in MUTANTS))
        return 0
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutant(s): {', '.join(sorted(unknown))} (see --list)")
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    failed = 0
    for mutant in chosen:
        verdict = run(mutant)
        failed += verdict != "killed"
        print(f"{verdict:9} {mutant.name}", flush=True)
    print(f"{len(chosen) - failed} of {len(chosen)} mutants killed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
