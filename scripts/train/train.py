"""LLM Foundry's `python scripts/train/train.py YAML [key=value ...]` (also under torchrun or composer): foundry train.

Under a launcher every process runs this file; RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT from the
environment place it in the group, exactly as `torchrun -m llmfoundry.cli train` does.
"""

import sys

from llmfoundry.foundry_scripts import run, yaml_and_overrides

if __name__ == "__main__":
    sys.exit(run(lambda: yaml_and_overrides("train", sys.argv[1:])))
