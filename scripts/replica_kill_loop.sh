#!/usr/bin/env bash
# Repeat the replica kill test N times (default 10): three replicas on one PostgreSQL database,
# kill -9 of the one running a job at a random moment; another must finish the job with an
# uninterrupted run's metrics while a watcher on the third sees every event once, in order.
# Prints where each kill landed and the count of passing runs; exits non-zero if any run failed.
set -u
runs="${1:-10}"
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
export HF_HUB_OFFLINE=1
output="$(REPLICA_KILL_RUNS="$runs" "$python" -m pytest tests/test_replicas.py -n 0 -q -s \
  -p no:cacheprovider -k killed 2>&1)"
status=$?
echo "$output" | grep -E "^run [0-9]+:|passed|failed|Error"
passed="$(echo "$output" | grep -oE "[0-9]+ passed" | grep -oE "[0-9]+" || echo 0)"
echo "replica kill test: ${passed:-0}/${runs} runs passed"
exit "$status"
