#!/usr/bin/env bash
# The GPU check on a machine with JAX and a GPU but no TensorFlow and no internet (see gpu_check.py).
# Run from the repository root after `gpu_check.py pack` and `gpu_check.py wheels` put the data and
# wheels under .gpu/; extra arguments go to `gpu_check.py run` (e.g. --budget 6m). Results: RESULTS
# (default runs/gpu-check-results) gets the log, gpu_check.json, leaderboard.csv and run.json.
set -euo pipefail
cd "$(dirname "$0")/.."
results="${RESULTS:-runs/gpu-check-results}"
mkdir -p "$results"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$results/gpu.txt" || true
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/zoobench-site .gpu/whl/*.whl
export PYTHONPATH="/tmp/zoobench-site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export ZOOBENCH_CACHE="${ZOOBENCH_CACHE:-/tmp/zoobench-cache}"
run_dir="${RUN_DIR:-/tmp/zoobench-gpu-run}"
status=0
python3 scripts/gpu_check.py run --data .gpu/data/cifar10-jpg.tar.gz --out "$run_dir" "$@" \
  2>&1 | tee "$results/log.txt" || status=$?
for f in gpu_check.json leaderboard.csv run.json; do
  [ -f "$run_dir/$f" ] && cp "$run_dir/$f" "$results/"
done
exit "$status"
