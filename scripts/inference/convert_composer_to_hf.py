"""LLM Foundry's convert_composer_to_hf.py (v0.21 flags and defaults): foundry inference-convert.

--composer_path may be a Composer/LLM Foundry `.pt` checkpoint, one of our run folders or checkpoint folders.
"""

import sys
from argparse import ArgumentParser

from llmfoundry.foundry_scripts import convert_composer_to_hf

if __name__ == "__main__":
    parser = ArgumentParser(description="Convert a checkpoint into a Hugging Face model folder "
                                        "(runs foundry inference-convert).")
    parser.add_argument("--composer_path", type=str, required=True)
    parser.add_argument("--hf_output_path", type=str, required=True)
    parser.add_argument("--local_checkpoint_save_location", type=str, default=None)
    parser.add_argument("--output_precision", type=str, choices=["fp32", "fp16", "bf16"], default="fp32")
    parser.add_argument("--hf_repo_for_upload", type=str, default=None)
    parser.add_argument("--test_uploaded_model", action="store_true")
    parser.add_argument("--trust_remote_code", action="store_true")
    sys.exit(convert_composer_to_hf(parser.parse_args()))
