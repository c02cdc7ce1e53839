"""LLM Foundry's convert_text_to_mds.py (v0.21 flags and defaults): foundry convert-dataset, one document per file."""

import os
import sys
from argparse import ArgumentParser

from llmfoundry.foundry_scripts import convert_text_to_mds

if __name__ == "__main__":
    parser = ArgumentParser(description="Convert a folder of .txt files into tokenized, concatenated MDS "
                                        "(runs foundry convert-dataset).")
    parser.add_argument("--output_folder", type=str, required=True, help="The MDS folder to write.")
    parser.add_argument("--input_folder", type=str, required=True, help="A local folder of .txt files.")
    parser.add_argument("--compression", type=str, default="zstd")
    parser.add_argument("--concat_tokens", type=int, required=True)
    parser.add_argument("--tokenizer", type=str, required=True, help="A local tokenizer directory.")
    parser.add_argument("--bos_text", type=str, default=None)
    parser.add_argument("--eos_text", type=str, default=None)
    parser.add_argument("--use_tokenizer_eos", default=False, action="store_true")
    parser.add_argument("--no_wrap", default=False, action="store_true")
    parser.add_argument("--processes", type=int, default=min(max((os.cpu_count() or 1) - 2, 1), 32),
                        help="Tokenizer threads; the output is identical for any count.")
    parser.add_argument("--reprocess", type=bool, default=False,
                        help="Convert again even when the done marker says this job already ran.")
    parser.add_argument("--trust-remote-code", type=bool, default=False)
    parser.add_argument("--logging-level", type=str, default="INFO")
    sys.exit(convert_text_to_mds(parser.parse_args()))
