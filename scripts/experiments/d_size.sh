#!/usr/bin/env bash
# (d) Three sizes on one FLOP budget (Chinchilla, "train longer, not larger"), with foundry plan beside them.
source "$(dirname "$0")/common.sh"
bash scripts/experiments/data.sh
OUT=$EXP/d_size
mkdir -p "$OUT/plan" "$OUT/scores"
for size in small medium large; do
  step "(d) $size: plan, train, export, held-out loss"
  $FOUNDRY plan "yamls/experiments/d_size_$size.yaml" variables.out="$OUT" "${TRAIN[@]}" --json > "$OUT/plan/$size.json"
  $FOUNDRY train "yamls/experiments/d_size_$size.yaml" variables.out="$OUT" "${TRAIN[@]}"
  $FOUNDRY inference-convert "$OUT/runs/$size" "$OUT/hf/$size" --overwrite
  $FOUNDRY eval-text "$OUT/hf/$size" "$PUBMED"/pubmed*.xml.gz --val-fraction $VAL --max-docs "$EVAL_DOCS" \
    --seq-len 128 --out "$OUT/scores/$size.json"
done
