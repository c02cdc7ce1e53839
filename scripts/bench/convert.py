"""Benchmark: `foundry convert-dataset` vs a naive converter vs raw `tokenizers` batch encoding.

All three tokenize the same real PubMed abstracts with the same GPT-2 tokenizer in the same run:
  ours   convert_dataset(..., workers=N) end to end (reading jsonl, tokenizing, packing, writing MDS)
  naive  one process, one document at a time through the tokenizer, then MDSWriter (what a script would do)
  raw    `Tokenizer.encode_batch` over the texts already in memory: the physical limit of the step
Targets: ours >= 3x naive, and ours within 1.5x of raw (raw/ours <= 1.5).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

from llmfoundry.assets import asset_path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=5000, help="PubMed abstracts to convert")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-seq-len", type=int, default=2048)
    parser.add_argument("--tokenizer", default=str(Path(asset_path("gpt2"))))
    parser.add_argument("--pubmed", default=str(Path(asset_path("pubmed")) / "pubmed20n0014.xml.gz"))
    args = parser.parse_args()

    from streaming import MDSWriter
    from transformers import AutoTokenizer

    from llmfoundry.data.convert import convert_dataset
    from llmfoundry.data.sources import read_documents

    docs = []
    for doc in read_documents([Path(args.pubmed)], skipped=Counter()):
        docs.append(doc)
        if len(docs) == args.docs:
            break
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "pubmed.jsonl"
        corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))

        start = time.perf_counter()
        summary = convert_dataset([str(corpus)], str(Path(tmp) / "ours"), tokenizer=args.tokenizer,
                                  max_seq_len=args.max_seq_len, workers=args.workers, progress=False)
        ours_s = time.perf_counter() - start
        tokens = summary.tokens

        tok = AutoTokenizer.from_pretrained(args.tokenizer)
        start = time.perf_counter()
        buffer: list[int] = []
        with MDSWriter(out=str(Path(tmp) / "naive"), columns={"tokens": "ndarray:int32"}) as writer:
            for line in corpus.read_text().splitlines():
                buffer.extend(tok(json.loads(line)["text"]).input_ids + [tok.eos_token_id])
                while len(buffer) >= args.max_seq_len:
                    writer.write({"tokens": np.asarray(buffer[: args.max_seq_len], dtype=np.int32)})
                    del buffer[: args.max_seq_len]
        naive_s = time.perf_counter() - start

        backend = tok.backend_tokenizer
        start = time.perf_counter()
        raw_tokens = sum(len(e.ids) + 1 for e in backend.encode_batch(docs, add_special_tokens=False))
        raw_s = time.perf_counter() - start
        assert raw_tokens == tokens, (raw_tokens, tokens)

    rate = {name: tokens / s for name, s in (("ours", ours_s), ("naive", naive_s), ("raw", raw_s))}
    print(f"corpus: {len(docs):,} PubMed abstracts, {tokens:,} tokens, GPT-2 tokenizer, seq {args.max_seq_len}")
    print(f"{'converter':28s} {'seconds':>8s} {'tokens/s':>12s}")
    print(f"{'ours (workers=' + str(args.workers) + ')':28s} {ours_s:8.2f} {rate['ours']:12,.0f}")
    print(f"{'naive (1 doc at a time)':28s} {naive_s:8.2f} {rate['naive']:12,.0f}")
    print(f"{'raw encode_batch (limit)':28s} {raw_s:8.2f} {rate['raw']:12,.0f}")
    print(f"ours / naive = {rate['ours'] / rate['naive']:.2f}x (target >= 3x)")
    print(f"raw / ours   = {rate['raw'] / rate['ours']:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
