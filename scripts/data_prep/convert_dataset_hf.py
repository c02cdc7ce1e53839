"""LLM Foundry's convert_dataset_hf.py (v0.21 flags and defaults) on a local `datasets` directory.

Runs foundry convert-dataset once per split into --out_root/<split>; hub dataset names are not downloaded.
"""

import sys
from argparse import ArgumentParser

from llmfoundry.foundry_scripts import convert_dataset_hf

if __name__ == "__main__":
    parser = ArgumentParser(description="Convert a local datasets directory into MDS, one folder per split, "
                                        "optionally tokenized and concatenated (runs foundry convert-dataset).")
    parser.add_argument("--dataset", type=str, required=True,
                        help="A local directory: save_to_disk output, or train/validation data files.")
    parser.add_argument("--data_subset", type=str, default=None, help="A subdirectory of --dataset, e.g. en.")
    parser.add_argument("--splits", nargs="+", default=["train", "train_small", "val", "val_small", "val_xsmall"])
    parser.add_argument("--out_root", type=str, required=True)
    parser.add_argument("--compression", type=str, default=None)
    parser.add_argument("--concat_tokens", type=int, help="Tokenize and pack into samples of this many tokens.")
    parser.add_argument("--tokenizer", type=str, default=None, help="A local tokenizer directory.")
    parser.add_argument("--tokenizer_kwargs", type=str, default=None)
    parser.add_argument("--bos_text", type=str, default=None)
    parser.add_argument("--eos_text", type=str, default=None)
    parser.add_argument("--no_wrap", default=False, action="store_true")
    parser.add_argument("--num_workers", type=int, default=None)
    sys.exit(convert_dataset_hf(parser.parse_args()))
