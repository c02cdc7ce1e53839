"""Benchmark: generation tasks, batched with transformers' KV cache vs one request at a time without a cache.

Both decode the same gsm8k prompts (LLM Foundry's gsm8k_prepended_8shot.jsonl, tokenized as `foundry eval`
does) greedily with the same model and the same budget, so they produce the same text; the baseline is the
decoder `foundry eval` used before (and still uses for models without a transformers class). Prints items/s
of each and the ratio (target >= 5x), and how many generations agree.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("FOUNDRY_SHARED", REPO.parent / "shared"))
GSM8K = SHARED / "foundry-v0.21" / "local_data" / "symbolic_problem_solving" / "gsm8k_prepended_8shot.jsonl"


def tiny_gpt2(out: Path, layers: int, width: int) -> Path:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from llmfoundry.assets import asset_path

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=width, n_head=4, n_layer=layers, n_positions=2048)).save_pretrained(out)
    AutoTokenizer.from_pretrained(str(asset_path("gpt2"))).save_pretrained(out)
    return out


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmfoundry.eval.generate import _greedy_no_cache, generate
    from llmfoundry.eval.icl import Encoder
    from llmfoundry.eval.tasks import ICLTaskConfig, PromptBuilder, load_items, needs_prefix_space

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens generated per item (the same for both)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args()
    if not GSM8K.exists():
        raise SystemExit(f"{GSM8K} is absent (LLM Foundry's local_data beside the checkout)")
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    with tempfile.TemporaryDirectory() as tmp:
        path = tiny_gpt2(Path(tmp) / "m", args.layers, args.width)
        model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
        tok = AutoTokenizer.from_pretrained(str(path))
    cfg = ICLTaskConfig(label="gsm8k", dataset_uri=str(GSM8K), icl_task_type="generation_task_with_answers",
                        cot_delimiter="The answer is ", continuation_delimiter="\n\nA:",
                        early_stopping_criteria=["\n\n", "Question:"], do_normalization=False)
    builder = PromptBuilder(cfg, load_items(cfg)[: args.items], needs_prefix_space(tok))
    encoder = Encoder(tok)
    prompts = [encoder.encode(r, 2048, args.new_tokens)[0] for r in builder.requests(0)]
    cpu = torch.device("cpu")
    # no stop strings: both decode new_tokens tokens per item (unless the random model emits eos), the worst case
    t0 = time.perf_counter()
    fast = generate(model, tok, prompts, max_new_tokens=args.new_tokens, stops=[], batch_size=args.batch, device=cpu,
                    precision="fp32")
    fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = [_greedy_no_cache(model, tok, p, args.new_tokens, [], cpu, "fp32") for p in prompts]
    slow_s = time.perf_counter() - t0
    same = sum(a[0] == b for a, b in zip(fast, slow))
    mean_len = sum(map(len, prompts)) / len(prompts)
    print(f"gsm8k (8-shot prompts, mean {mean_len:.0f} tokens), {len(prompts)} items x {args.new_tokens} new tokens, "
          f"GPT-2 {args.layers} layers x {args.width}, CPU fp32")
    print(f"batched + KV cache (batch {args.batch}): {fast_s:6.1f} s  {len(prompts) / fast_s:6.2f} items/s")
    print(f"one at a time, no cache         : {slow_s:6.1f} s  {len(prompts) / slow_s:6.2f} items/s")
    print(f"speed-up: {slow_s / fast_s:.1f}x (target >= 5x); identical generations: {same}/{len(prompts)}")


if __name__ == "__main__":
    main()
