"""Batched generation for generation and code tasks, and LLM Foundry's answer extraction.

Generation runs through transformers' `generate` (its KV cache, greedy by default): requests are sorted by
prompt length, left-padded per batch with an attention mask, and each row stops at EOS or at the first of the
task's stop strings in its own generated text (a per-row stopping criterion), so a finished row costs nothing
while the others continue. This is the path LLM Foundry itself takes (Composer's HuggingFaceModel calls
`generate`), and our own models reach it by their native transformers class (eval/models.py), so there is one
cache implementation, the library's, for every model. A model without `generate` (an FSDP-sharded model being
trained, or an architecture with no transformers class) decodes greedily one request at a time without a cache.
"""

from __future__ import annotations

import contextlib
import re
import string
from typing import Any

import torch

from llmfoundry.errors import UserError


def autocast(device: torch.device, precision: str) -> Any:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "amp_bf16" else torch.float16)


def logits_of(model: Any, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    out = model(ids) if attention_mask is None else model(ids, attention_mask=attention_mask)
    return out if isinstance(out, torch.Tensor) else out.logits


class StopStrings:
    """Per-row stopping criterion: a row is done once its generated text contains one of `stops`."""

    def __init__(self, tokenizer: Any, stops: list[str], prompt_len: int) -> None:
        self.tokenizer, self.stops, self.prompt_len = tokenizer, stops, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)


def generate(model: Any, tokenizer: Any, prompts: list[list[int]], *, max_new_tokens: int, stops: list[str],
             batch_size: int, device: torch.device, precision: str, sampling: dict[str, Any] | None = None,
             num_return_sequences: int = 1) -> list[list[str]]:
    """Generated text (special tokens dropped) for each prompt: `num_return_sequences` strings each."""
    if not hasattr(model, "generate"):
        if sampling or num_return_sequences > 1:
            raise UserError("sampled generation (code_evaluation) needs a model with a transformers class; export "
                            "it with `foundry inference-convert` or evaluate a Hugging Face directory")
        return [[_greedy_no_cache(model, tokenizer, p, max_new_tokens, stops, device, precision)] for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[list[str]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]):] = 1
        from transformers import StoppingCriteriaList

        criteria = StoppingCriteriaList([StopStrings(tokenizer, stops, width)]) if stops else None
        kwargs = {"do_sample": False, **(sampling or {})}
        with torch.inference_mode(), autocast(device, precision):
            generated = model.generate(ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                                       pad_token_id=pad, eos_token_id=tokenizer.eos_token_id, use_cache=True,
                                       stopping_criteria=criteria, num_return_sequences=num_return_sequences,
                                       **kwargs)
        texts = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
        for row, i in enumerate(chunk):
            out[i] = texts[row * num_return_sequences : (row + 1) * num_return_sequences]
    return out


@torch.inference_mode()
def _greedy_no_cache(model: Any, tokenizer: Any, prompt: list[int], max_new_tokens: int, stops: list[str],
                     device: torch.device, precision: str) -> str:
    ids = torch.tensor([prompt], device=device)
    new: list[int] = []
    for _ in range(max_new_tokens):
        with autocast(device, precision):
            nxt = int(logits_of(model, ids)[0, -1].argmax())
        if nxt == tokenizer.eos_token_id:
            break
        new.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]], device=device)], dim=1)
        if stops and any(s in tokenizer.decode(new, skip_special_tokens=True) for s in stops):
            break
    return tokenizer.decode(new, skip_special_tokens=True)


def normalize_answer(text: str) -> str:
    """LLM Foundry's (TriviaQA's) normalization: underscores and punctuation become spaces, lowercase, articles
    dropped, whitespace collapsed."""
    exclude = set(string.punctuation + "‘’´`")
    text = "".join(" " if ch in exclude else ch for ch in text.replace("_", " ").lower())
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split()).strip()


def final_answer(output: str, *, stops: list[str] | None, cot_delimiter: str, label: str) -> str:
    """The answer in a generation as Foundry takes it: cut at the first stop (the stops joined as one regex),
    then the text after the last cot_delimiter."""
    if stops:
        try:
            output = re.split("|".join(stops), output)[0]
        except re.error as err:
            raise UserError(f"icl_tasks.{label}.early_stopping_criteria: not a valid regular expression when "
                            f"joined with '|' ({err})") from None
    if cot_delimiter:
        output = output.split(cot_delimiter)[-1]
    return output


def exact_match(answer: str, labels: set[str], normalize: bool) -> bool:
    """Foundry's generation accuracy: the cleaned answer starts with one of the cleaned labels."""
    if normalize:
        cleaned, targets = normalize_answer(answer), {normalize_answer(x) for x in labels}
    else:
        cleaned, targets = answer.strip(), {x.strip() for x in labels}
    return any(cleaned.startswith(t) for t in targets)
