#!/usr/bin/env bash
# `make test`'s pytest step: tests/container beside the rest of the suite, at the same time.
#
# Building the images is CPU work (pip, byte-compiling, the engine's vfs copies) and on a fresh
# machine takes minutes; the rest of the suite mostly waits on its servers. Run one after the
# other they add up; side by side the image build hides in the suite's waits. The container
# run's output is printed after the suite's, and either one failing fails the step.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
export STREAM_PROJECTOR_REQUIRE_TOOLS=1
log=$(mktemp "${TMPDIR:-/tmp}/stream-projector-container-tests.XXXXXX")
trap 'rm -f "$log"' EXIT

"$BIN/pytest" -q -rs -p no:cacheprovider tests/container >"$log" 2>&1 &
container=$!
"$BIN/pytest" -q -rs -p no:cacheprovider --ignore=tests/container "$@"
suite=$?
wait "$container"
images=$?
echo "---------------- tests/container (run beside the suite) ----------------"
cat "$log"
[ "$suite" -eq 0 ] && [ "$images" -eq 0 ]
