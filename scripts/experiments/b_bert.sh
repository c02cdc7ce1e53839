#!/usr/bin/env bash
# (b) MosaicBERT vs classic BERT: held-out MLM loss against training seconds, same samples per step.
# The two arms train side by side, so both see the same machine load (a shared machine's load changes over
# minutes; one arm after the other would hand the later one a different machine).
source "$(dirname "$0")/common.sh"
bash scripts/experiments/data.sh
OUT=$EXP/b_bert
QUICK_EVAL=(); [ -n "${QUICK:-}" ] && QUICK_EVAL=(eval_interval=1ba eval_subset_num_batches=1)
step "(b) mosaicbert and classic, side by side: train with the held-out MLM loss every 5 steps"
mkdir -p "$OUT"
pids=()
for arm in mosaicbert classic; do
  $FOUNDRY train "yamls/experiments/b_$arm.yaml" variables.out="$OUT" "${TRAIN[@]}" "${QUICK_EVAL[@]}" \
    > "$OUT/$arm.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
tail -n 4 "$OUT"/mosaicbert.log "$OUT"/classic.log
exit $status
