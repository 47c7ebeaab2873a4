#!/usr/bin/env bash
# Repeat the crash test N times (default 20): kill -9 of the server's process group mid-epoch,
# restart, and check that nothing was lost and the job ends with an uninterrupted run's metrics.
# Prints where each kill landed and the count of passing runs; exits non-zero if any run failed.
set -u
runs="${1:-20}"
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
export HF_HUB_OFFLINE=1
output="$(CRASH_TEST_RUNS="$runs" "$python" -m pytest tests/test_crash_recovery.py -q -s -p no:cacheprovider 2>&1)"
status=$?
echo "$output" | grep -E "^run [0-9]+:|passed|failed|Error"
passed="$(echo "$output" | grep -oE "[0-9]+ passed" | grep -oE "[0-9]+" || echo 0)"
echo "crash test: ${passed:-0}/${runs} runs passed"
exit "$status"
