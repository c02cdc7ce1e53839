"""Write a real instruction-finetuning set from the bundled PubMed abstracts: abstract -> its title.

Each example is {"prompt": "Abstract: ...\\nTitle:", "response": " <the article's title>"}; train.jsonl and
val.jsonl go to --out. Used by the README's finetuning walk-through and `make bench-finetune`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llmfoundry.assets import asset_path

REPO = Path(__file__).resolve().parents[1]
PUBMED = Path(asset_path("pubmed")) / "pubmed20n0014.xml.gz"


def write_titles(out: Path, limit: int, val: int, max_chars: int = 1200, source: Path = PUBMED) -> dict[str, int]:
    from llmfoundry.data.sources import read_documents

    out.mkdir(parents=True, exist_ok=True)
    examples = []
    for doc in read_documents([source], input_format="pubmed"):
        title, _, abstract = doc.partition("\n")
        if title and abstract and len(abstract) <= max_chars:
            examples.append({"prompt": f"Abstract: {abstract}\nTitle:", "response": f" {title}"})
        if len(examples) == limit + val:
            break
    for name, part in (("val", examples[:val]), ("train", examples[val:])):
        tmp = out / f".{name}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(e) + "\n" for e in part))
        tmp.rename(out / f"{name}.jsonl")
    return {"train": len(examples) - val, "val": min(val, len(examples))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "demo" / "titles", help="output directory")
    parser.add_argument("--limit", type=int, default=1000, help="training examples")
    parser.add_argument("--val", type=int, default=100, help="validation examples")
    args = parser.parse_args()
    counts = write_titles(args.out, args.limit, args.val)
    print(f"wrote {counts['train']} train and {counts['val']} val examples to {args.out}")


if __name__ == "__main__":
    main()
