"""Scoring ICL requests with any causal LM, batched, and turning scores into task metrics.

Speed comes from tokenizing once, sorting requests by length so each batch pads little, right-padding
(a causal model never lets a real token see the padding after it, so no mask is needed), computing the
log-softmax only at continuation positions, and `torch.inference_mode`. Requests are dealt round-robin
to ranks and gathered back, so N processes give the same per-item scores as one.
"""

from __future__ import annotations

import contextlib
import math
import re
import string
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from llmfoundry.errors import UserError
from llmfoundry.eval.tasks import ICLTaskConfig, Request, build_requests, load_items


@dataclass
class Scored:
    logprob: float  # sum of continuation token log-probs
    tokens: int  # continuation tokens
    greedy: bool  # argmax reproduces every continuation token


def encode(tokenizer: Any, context: str, continuation: str, max_seq_len: int) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation as the model would see the whole text, context left-truncated.

    A trailing space of the context moves onto the continuation (" word" is one BPE token); when the
    context's tokens are a prefix of the whole text's tokens, the continuation is exactly the rest.
    """
    stripped = context.rstrip(" ")
    continuation = context[len(stripped):] + continuation
    ctx = tokenizer(stripped, add_special_tokens=False)["input_ids"]
    whole = tokenizer(stripped + continuation, add_special_tokens=False)["input_ids"]
    cont = whole[len(ctx):] if whole[: len(ctx)] == ctx else tokenizer(continuation, add_special_tokens=False)["input_ids"]
    if not cont:
        raise UserError(f"empty continuation after tokenization for context ending {stripped[-40:]!r}")
    if len(cont) >= max_seq_len:
        raise UserError(f"a continuation of {len(cont)} tokens does not fit max_seq_len={max_seq_len}")
    keep = max_seq_len - len(cont)
    ctx = ctx[-keep:] if keep > 0 else []
    if not ctx:  # the first continuation token needs a position to be predicted from
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ctx = [bos]
    return ctx, cont


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    out = model(ids)
    return out if isinstance(out, torch.Tensor) else out.logits


def _autocast(device: torch.device, precision: str) -> Any:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "amp_bf16" else torch.float16)


@contextlib.contextmanager
def _progress(label: str, total: int) -> Any:
    """A rich progress bar on a terminal (rank 0); nothing in logs."""
    import sys

    import torch.distributed as dist

    if not sys.stderr.isatty() or (dist.is_initialized() and dist.get_rank() != 0):
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@torch.inference_mode()
def score(model: Any, encoded: list[tuple[list[int], list[int]]], *, batch_size: int, device: torch.device,
          precision: str, pad_id: int, label: str = "scoring") -> list[Scored]:
    """Log-likelihood of each continuation given its context."""
    order = sorted(range(len(encoded)), key=lambda i: -(len(encoded[i][0]) + len(encoded[i][1])))
    results: list[Scored | None] = [None] * len(encoded)
    with _progress(label, len(order)) as advance:
        for start in range(0, len(order), batch_size):
            _score_batch(model, encoded, order[start : start + batch_size], results, device, precision, pad_id)
            advance(min(batch_size, len(order) - start))
    return results  # type: ignore[return-value]


def _score_batch(model: Any, encoded: list[tuple[list[int], list[int]]], chunk: list[int],
                 results: list[Scored | None], device: torch.device, precision: str, pad_id: int) -> None:
    rows = [encoded[i][0] + encoded[i][1] for i in chunk]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
    with _autocast(device, precision):
        logits = _logits(model, ids.to(device))
    for r, i in enumerate(chunk):
        ctx, cont = encoded[i]
        positions = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1, device=logits.device)
        logprobs = torch.log_softmax(logits[r, positions].float(), dim=-1)
        target = torch.tensor(cont, device=logits.device)
        picked = logprobs.gather(1, target[:, None]).squeeze(1)
        results[i] = Scored(float(picked.sum()), len(cont), bool((logprobs.argmax(-1) == target).all()))


@torch.inference_mode()
def greedy_generate(model: Any, tokenizer: Any, contexts: list[list[int]], *, max_new_tokens: int,
                    stops: list[str], device: torch.device, precision: str) -> list[str]:
    """Greedy continuation of each context up to a stop string or max_new_tokens (one request at a time)."""
    outputs = []
    for ctx in contexts:
        ids = torch.tensor([ctx], device=device)
        text = ""
        for _ in range(max_new_tokens):
            with _autocast(device, precision):
                nxt = _logits(model, ids)[0, -1].argmax()
            if int(nxt) == tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
            text = tokenizer.decode(ids[0, len(ctx):].tolist())
            if any(s in text for s in stops):
                break
        for s in stops:
            text = text.split(s)[0]
        outputs.append(text)
    return outputs


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and articles, collapse spaces (SQuAD/TriviaQA exact match)."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _shard(n: int, shard: bool) -> tuple[list[int], int, int]:
    import torch.distributed as dist

    if shard and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    return list(range(rank, n, world)), rank, world


def _gather(values: dict[int, Any], world: int) -> dict[int, Any]:
    if world == 1:
        return values
    import torch.distributed as dist

    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, values)
    return {k: v for part in parts for k, v in part.items()}


def evaluate_task(model: Any, tokenizer: Any, cfg: ICLTaskConfig, *, batch_size: int, max_seq_len: int,
                  device: torch.device, precision: str, shard: bool = True) -> dict[str, float]:
    """Metrics `{label}/{n}-shot/{metric}` for every num_fewshot of one task.

    shard=True deals requests out to ranks (each holds a whole model); an FSDP-sharded model needs every
    rank in every forward, so the trainer passes shard=False and each rank scores everything.
    """
    items = load_items(cfg)
    seq = cfg.max_seq_len or max_seq_len
    bs = cfg.batch_size or batch_size
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    metrics: dict[str, float] = {}
    for shots in cfg.num_fewshot:
        requests = build_requests(cfg, items, shots)
        mine, _, world = _shard(len(requests), shard)
        encoded = {}
        for i in mine:
            try:
                encoded[i] = encode(tokenizer, requests[i].context, requests[i].continuation, seq)
            except UserError as err:
                raise UserError(f"icl_tasks.{cfg.label}: item {requests[i].item + 1} of {cfg.dataset_uri}: "
                                f"{err.problems[0]}") from None
        if cfg.icl_task_type == "generation_task_with_answers":
            stops = cfg.stop_sequences or [cfg.example_delimiter]
            texts = greedy_generate(model, tokenizer, [encoded[i][0] for i in mine], max_new_tokens=cfg.max_new_tokens,
                                    stops=stops, device=device, precision=precision)
            answers = _gather(dict(zip(mine, texts)), world)
            per_item = _generation_metrics(items, requests, answers)
        else:
            scored = score(model, [encoded[i] for i in mine], batch_size=bs, device=device, precision=precision,
                           pad_id=pad, label=f"{cfg.label} {shots}-shot")
            results = _gather(dict(zip(mine, scored)), world)
            per_item = _likelihood_metrics(cfg, items, requests, results)
        prefix = f"{cfg.label}/{shots}-shot"
        for name, values in per_item.items():
            if name == "nll_sum":
                continue
            metrics[f"{prefix}/{name}"] = sum(values) / len(values)
        if "nll_sum" in per_item:
            metrics[f"{prefix}/perplexity"] = math.exp(sum(per_item["nll_sum"]) / sum(per_item["tokens"]))
            metrics.pop(f"{prefix}/tokens", None)
        if cfg.has_categories:
            by_cat: dict[str, list[float]] = defaultdict(list)
            for item, acc in zip(items, per_item["acc"]):
                by_cat[item["category"]].append(acc)
            for cat, values in sorted(by_cat.items()):
                metrics[f"{prefix}/{cat}/acc"] = sum(values) / len(values)
    return metrics


def _likelihood_metrics(cfg: ICLTaskConfig, items: list[dict[str, Any]], requests: list[Request],
                        results: dict[int, Scored]) -> dict[str, list[float]]:
    options: dict[int, list[tuple[Request, Scored]]] = defaultdict(list)
    for i, req in enumerate(requests):
        options[req.item].append((req, results[i]))
    out: dict[str, list[float]] = defaultdict(list)
    for index, item in enumerate(items):
        scored = sorted(options[index], key=lambda p: p[0].option)
        if cfg.icl_task_type == "language_modeling":
            s = scored[0][1]
            out["acc"].append(float(s.greedy))
            out["nll_sum"].append(-s.logprob)
            out["tokens"].append(s.tokens)
            continue
        gold = item["gold"]
        sums = [s.logprob for _, s in scored]
        out["acc"].append(float(_argmax(sums) == gold))
        if cfg.icl_task_type == "multiple_choice":
            per_token = [s.logprob / s.tokens for _, s in scored]
            per_byte = [s.logprob / max(len(r.continuation.encode("utf-8")), 1) for r, s in scored]
            out["acc_norm_token"].append(float(_argmax(per_token) == gold))
            out["acc_norm"].append(float(_argmax(per_byte) == gold))
    return out


def _generation_metrics(items: list[dict[str, Any]], requests: list[Request],
                        answers: dict[int, str]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for i, req in enumerate(requests):
        item = items[req.item]
        gold = {normalize_answer(a) for a in [item["answer"], *item.get("aliases", [])]}
        out["acc"].append(float(normalize_answer(answers[i]) in gold))
    return out


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda k: values[k])


def evaluate_icl(model: Any, tokenizer: Any, icl_tasks: list[ICLTaskConfig], *, batch_size: int, max_seq_len: int,
                 device: torch.device, precision: str = "fp32", shard: bool = True) -> dict[str, float]:
    """All tasks' metrics (the trainer calls this at eval_interval; every rank must call it)."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    metrics: dict[str, float] = {}
    try:
        for task in icl_tasks:
            metrics.update(evaluate_task(model, tokenizer, task, batch_size=batch_size, max_seq_len=max_seq_len,
                                         device=device, precision=precision, shard=shard))
    finally:
        if was_training:
            model.train()
    return metrics
