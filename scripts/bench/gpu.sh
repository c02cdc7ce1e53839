#!/usr/bin/env bash
# Every GPU check and benchmark in one call (run on a machine with CUDA: `make gpu`), sized to fit a
# 15-minute device lease including the machine's start: each stage has its own time limit (seconds, below),
# the most important first, and a stage that runs out is reported and skipped, never blocks the rest.
# 1. the GPU-marked tests (flex/flash training vs the torch reference, packed MosaicBERT, fp8);
# 2. MFU of `foundry train` for mpt-125m and mpt-1b at seq 2048 (bf16, attn_impl auto, torch.compile), and
#    mpt-1b with amp_fp8 (torchao float8) for the tok/s gain;
# 3. peak memory of one mpt-125m step at seq 2048 per attention backend (the dense-bias cost vs flex/flash);
# 4. MosaicBERT unpadded vs padded throughput at 50% padding (bf16);
# 5. model forward+backward throughput per backend vs transformers' eager classes.
set -uo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu.sh: no CUDA device here; nothing to run (GPU tests skip on CPU)."
  exit 0
fi
export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), torch.cuda.get_device_capability())"
status=0
stage() {  # stage SECONDS NAME COMMAND...
  local limit=$1 name=$2; shift 2
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  [ $rc -eq 124 ] && echo "== $name: ran out of its ${limit}s"
  [ $rc -ne 0 ] && status=1
  echo "== $name: rc=$rc in $((SECONDS - start))s"
}
stage 150 "gpu tests" "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/
stage 330 "mfu" "$PY" scripts/bench/mfu.py --presets mpt-125m mpt-1b --micro 16 8 --seq 2048 --steps 20 --warmup 8 \
  --docs 8000 --precision amp_bf16 amp_fp8
stage 100 "attention memory" "$PY" scripts/bench/attn_memory.py --device cuda --batch 8
stage 40 "bert unpad" "$PY" scripts/bench/bert_unpad.py --device cuda --layers 12 --batch 64 --steps 5
stage 60 "model throughput" "$PY" scripts/bench/model.py --device cuda --dtype bf16 --seq 2048 --batch 4 --reps 10 \
  --models mpt-125m gpt2-small bert-base
exit $status
