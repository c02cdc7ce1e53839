#!/usr/bin/env bash
# (b) MosaicBERT vs classic BERT: held-out MLM loss against training seconds, same samples per step.
source "$(dirname "$0")/common.sh"
bash scripts/experiments/data.sh
OUT=$EXP/b_bert
QUICK_EVAL=(); [ -n "${QUICK:-}" ] && QUICK_EVAL=(eval_interval=1ba eval_subset_num_batches=1)
for arm in mosaicbert classic; do
  step "(b) $arm: train with the held-out MLM loss every 10 steps"
  $FOUNDRY train "yamls/experiments/b_$arm.yaml" variables.out="$OUT" "${TRAIN[@]}" "${QUICK_EVAL[@]}"
done
