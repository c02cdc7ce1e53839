#!/usr/bin/env bash
# Every GPU check and benchmark in one call (run on a machine with CUDA: `make gpu`).
# 1. the GPU-marked tests (flex/flash training paths against the torch reference);
# 2. model forward+backward throughput at seq 2048 in bf16 for every backend vs transformers' eager class;
# 3. MFU of `foundry train` for mpt-125m and mpt-1b at seq 2048 (bf16, flex attention, torch.compile).
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu.sh: no CUDA device here; nothing to run (GPU tests skip on CPU)."
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
PYTHONPATH=$PWD "$PY" -m pytest -q -m gpu tests/ || status=$?
PYTHONPATH=$PWD "$PY" scripts/bench/model.py --device cuda --dtype bf16 --seq 2048 --batch 4 --reps 10 \
  --models mpt-125m gpt2-small bert-base
PYTHONPATH=$PWD "$PY" scripts/bench/mfu.py --presets mpt-125m mpt-1b --micro 16 8 --seq 2048 || status=$?
exit ${status:-0}
