#!/usr/bin/env bash
# The prepared GPU check of issue 16, as ONE command for a session whose task draws a device
# machine (15 minutes of device time in all, 10 per command; a fresh machine is bare):
#
#     run(command="bash benchmarks/device_check.sh", timeout_s=570)
#
# It runs the CUDA tests (`pytest -m cuda`: the graph models' loss and a training step on CUDA
# against the CPU, the sparse backends' CSR operators on CUDA) and the speed suite on CUDA
# (every graph model's seconds per epoch, test pass and peak memory on synthetic data, plus the
# micro-benchmarks: propagation per backend, full-ranking throughput, EBM against attention),
# each under its own time limit so that one hang still brings the rest back. Everything it
# writes lands in $OUT (at most 8 files come back): env.txt, pytest_cuda.log, speed.log,
# tables.md, speed.md. The real datasets do not travel (../shared is beside the checkout, not
# in it): the Taobao rows of the speed suite are reported as "not found" and skipped.
#
# Environment: PYTHON (default python3, which holds CUDA PyTorch and torch_geometric on the
# lent machine), DEVICE (default cuda; cpu rehearses the script here), TESTS_S and SPEED_S
# (the two time limits in seconds, default 150 and 300), DRY=1 (the speed suite's --dry-run).
set -u -o pipefail
OUT=${OUT:-/tmp/mbgraph_device_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 MBGRAPH_BENCH_ARCHIVE=none
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
results=$(mktemp -d /tmp/mbgraph_device_results.XXXXXX)

{
    date -u
    uptime || true
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
    "$PY" - <<'EOF'
import torch
import torch_geometric
print('torch', torch.__version__, '| cuda available', torch.cuda.is_available(),
      '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no device',
      '| torch_geometric', torch_geometric.__version__, '| threads', torch.get_num_threads())
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== pytest -m cuda (limit ${TESTS_S:-150} s)"
timeout "${TESTS_S:-150}" "$PY" -m pytest -m cuda -q -rs -p no:cacheprovider tests \
    > "$OUT/pytest_cuda.log" 2>&1
echo "pytest exit status $?" >> "$OUT/pytest_cuda.log"
tail -n 15 "$OUT/pytest_cuda.log"

echo "== python -m benchmarks run speed --device $DEVICE (limit ${SPEED_S:-300} s)"
timeout "${SPEED_S:-300}" "$PY" -m benchmarks run speed --device "$DEVICE" \
    --only "speed_graph,micro" --results "$results" --archive none --no-progress \
    ${DRY:+--dry-run} > "$OUT/speed.log" 2>&1
echo "speed suite exit status $?" >> "$OUT/speed.log"
tail -n 40 "$OUT/speed.log"
for f in tables.md speed.md; do
    found=$(find "$results" -name "$f" | head -n 1)
    if [ -n "$found" ]; then cp "$found" "$OUT/$f"; fi
done
date -u >> "$OUT/env.txt"
