"""LLM Foundry's convert_dataset_json.py (v0.21 flags and defaults): foundry convert-dataset, MDS in --out_root."""

import sys
from argparse import ArgumentParser

from llmfoundry.foundry_scripts import convert_dataset_json

if __name__ == "__main__":
    parser = ArgumentParser(description="Convert a json/jsonl file (or a folder of them) into MDS, optionally "
                                        "tokenized and concatenated (runs foundry convert-dataset).")
    parser.add_argument("--path", type=str, required=True, help="A json/jsonl file or a folder of them.")
    parser.add_argument("--out_root", type=str, required=True, help="The MDS folder to write.")
    parser.add_argument("--compression", type=str, default=None)
    parser.add_argument("--concat_tokens", type=int, help="Tokenize and pack into samples of this many tokens.")
    parser.add_argument("--split", type=str, default="train")
    parser.add_argument("--tokenizer", type=str, default=None, help="A local tokenizer directory.")
    parser.add_argument("--bos_text", type=str, default=None)
    parser.add_argument("--eos_text", type=str, default=None)
    parser.add_argument("--no_wrap", default=False, action="store_true")
    sys.exit(convert_dataset_json(parser.parse_args()))
