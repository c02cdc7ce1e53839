# Sourced by every experiment: the foundry command, the output folder, the quick (2-step) mode of the tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
FOUNDRY=${FOUNDRY:-".venv/bin/python -m llmfoundry.cli"}  # this checkout's code (python -m: the repo first on sys.path)
EXP=${EXP:-experiments}               # every output goes below this folder
DATA=$EXP/data
VOCAB=${VOCAB:-8192}
MAX_DOCS=${MAX_DOCS:-20000}           # PubMed abstracts converted (of ~33k); held-out ones are never trained on
GENERAL_DOCS=${GENERAL_DOCS:-100000}  # general-text documents (files) converted: all
EVAL_DOCS=${EVAL_DOCS:-200}           # held-out abstracts scored by foundry eval-text
MEDQA_ITEMS=${MEDQA_ITEMS:-60}        # MedQA questions scored (of 1,273): 300 long requests per model
TOKENIZER_DOCS=${TOKENIZER_DOCS:-10000}  # PubMed abstracts the PubMed tokenizers are trained on
VAL=0.02
TRAIN=(variables.data="$DATA")        # overrides for every `foundry train`
if [ -n "${QUICK:-}" ]; then          # the test suite's 2-step version: same commands, tiny sizes
  TRAIN+=(max_duration=2ba)
  VOCAB=512 MAX_DOCS=300 GENERAL_DOCS=3 EVAL_DOCS=8 MEDQA_ITEMS=4 TOKENIZER_DOCS=300 LENGTHS="128 256"
fi
PUBMED=$($FOUNDRY assets pubmed)
step() { printf '\n== %s  %s\n' "$(date +%T)" "$*"; }  # the time: where a run's minutes went
