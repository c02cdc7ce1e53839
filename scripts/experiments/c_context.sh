#!/usr/bin/env bash
# (c) Length extrapolation: trained at 128 tokens, scored at 16 / 128 / 256 / 512 / 1024 (MPT-StoryWriter's claim).
source "$(dirname "$0")/common.sh"
bash scripts/experiments/data.sh
OUT=$EXP/c_context
LENGTHS=${LENGTHS:-16 128 256 512 1024}  # 16: how much context helps up to the trained 128
mkdir -p "$OUT/scores"
for arm in alibi gpt2 rope; do
  step "(c) $arm: train at 128 tokens, export"
  $FOUNDRY train "yamls/experiments/c_$arm.yaml" variables.out="$OUT" "${TRAIN[@]}"
  $FOUNDRY inference-convert "$OUT/runs/$arm" "$OUT/hf/$arm" --overwrite
  for n in $LENGTHS; do  # a model that cannot take n tokens says so in one line: that line is the result
    rm -f "$OUT/scores/$arm-$n.json" "$OUT/scores/$arm-$n.error"
    if ! $FOUNDRY eval-text "$OUT/hf/$arm" "$PUBMED"/pubmed*.xml.gz --val-fraction $VAL --max-docs "$EVAL_DOCS" \
        --seq-len "$n" --out "$OUT/scores/$arm-$n.json" 2> "$OUT/scores/$arm-$n.stderr"; then
      grep '^error: ' "$OUT/scores/$arm-$n.stderr" > "$OUT/scores/$arm-$n.error" || { cat "$OUT/scores/$arm-$n.stderr"; exit 1; }
      echo "$arm at $n tokens: $(cat "$OUT/scores/$arm-$n.error")"
    fi
  done
done
