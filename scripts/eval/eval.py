"""LLM Foundry's `python scripts/eval/eval.py YAML [key=value ...]`: foundry eval on the same yaml."""

import sys

from llmfoundry.foundry_scripts import run, yaml_and_overrides

if __name__ == "__main__":
    sys.exit(run(lambda: yaml_and_overrides("eval", sys.argv[1:])))
