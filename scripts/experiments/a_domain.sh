#!/usr/bin/env bash
# (a) Domain data + domain tokenizer vs general, at equal training FLOPs (PubMed GPT / BioMedLM's claim).
source "$(dirname "$0")/common.sh"
bash scripts/experiments/data.sh
OUT=$EXP/a_domain
mkdir -p "$OUT/plan" "$OUT/scores"
for arm in pubmed-bpe general-bpe pubmed-gpt2; do
  yaml=yamls/experiments/a_${arm//-/_}.yaml
  step "(a) $arm: plan, train, export, held-out PubMed bits per byte"
  $FOUNDRY plan "$yaml" variables.out="$OUT" "${TRAIN[@]}" --json > "$OUT/plan/$arm.json"
  $FOUNDRY train "$yaml" variables.out="$OUT" "${TRAIN[@]}"
  $FOUNDRY inference-convert "$OUT/runs/$arm" "$OUT/hf/$arm" --overwrite
  $FOUNDRY eval-text "$OUT/hf/$arm" "$PUBMED"/pubmed*.xml.gz --val-fraction $VAL --max-docs "$EVAL_DOCS" \
    --seq-len 128 --out "$OUT/scores/$arm.json"
done
step "(a) MedQA (USMLE, 5 options), zero-shot, $MEDQA_ITEMS questions per model"
[ -e "$DATA/icl/medqa_en.jsonl" ] || .venv/bin/python -m llmfoundry.assets.build --task medqa_en --out "$DATA/icl"
$FOUNDRY eval yamls/experiments/a_medqa.yaml variables.out="$OUT" variables.data="$DATA" --limit "$MEDQA_ITEMS"
