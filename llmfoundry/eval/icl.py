"""Scoring ICL requests with any causal LM, batched, and turning scores into task metrics as LLM Foundry does.

Token ids are LLM Foundry's: preamble (with special tokens) + context (without) + continuation (without),
the context left-truncated to the window (generation: to the window minus the answer budget). An item that
cannot fit at all (its continuation alone fills the window) is skipped and counted, never fatal unless
`strict`. Speed comes from tokenizing once, sorting requests by length so each batch pads little,
right-padding (a causal model never lets a real token see the padding after it, so no mask is needed),
computing the log-softmax only at continuation positions, and `torch.inference_mode`. Items are dealt
round-robin to ranks and gathered back, so N processes give the same per-item scores as one.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch

from llmfoundry.errors import UserError
from llmfoundry.eval.generate import autocast, exact_match, final_answer, generate, logits_of
from llmfoundry.eval.tasks import ICLTaskConfig, PromptBuilder, Request, load_items, needs_prefix_space, partitions


@dataclass
class Scored:
    logprob: float  # sum of continuation token log-probs
    tokens: int  # continuation tokens
    greedy: bool  # argmax reproduces every continuation token


@dataclass
class TaskResult:
    metrics: dict[str, float] = field(default_factory=dict)
    """`{label}/{n}-shot[/{category}]/{metric}`."""
    skipped: dict[int, list[int]] = field(default_factory=dict)
    """Per num_fewshot: items (0-based) that do not fit the window."""
    truncated: dict[int, int] = field(default_factory=dict)
    """Per num_fewshot: items whose prompt lost tokens on the left to fit."""
    scored: dict[int, int] = field(default_factory=dict)
    """Per num_fewshot: items scored."""


class Encoder:
    """Foundry's tokenization of requests, with the preamble's tokens cached (it is shared by many requests)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._preambles: dict[str, list[int]] = {}

    def preamble(self, text: str) -> list[int]:
        if text not in self._preambles:
            ids = self.tokenizer(text)["input_ids"]
            eos = self.tokenizer.eos_token_id
            if eos is not None and len(ids) > 1 and ids[-1] == eos:  # a trailing eos would sit mid-prompt
                ids = ids[:-1]
            self._preambles[text] = ids
        return self._preambles[text]

    def encode(self, request: Request, window: int, reserve: int = 0) -> tuple[list[int], list[int], bool] | None:
        """(context ids, continuation ids, truncated) fitting `window` with `reserve` positions left for
        generated tokens; None when the item cannot fit."""
        tok = self.tokenizer
        ctx = self.preamble(request.preamble) + tok(request.context, add_special_tokens=False)["input_ids"]
        cont = tok(request.continuation, add_special_tokens=False)["input_ids"] if request.continuation else []
        keep = window - reserve - len(cont)
        if keep < 1:
            return None
        truncated = len(ctx) > keep
        ctx = ctx[-keep:] if truncated else ctx
        if not ctx:  # the first continuation token needs a position to be predicted from
            bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            ctx = [bos]
        return ctx, cont, truncated


@contextlib.contextmanager
def progress(label: str, total: int) -> Any:
    """A rich bar on a terminal; off a terminal one line when the task is done (rank 0 only)."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_rank() != 0:
        yield lambda n: None
        return
    if not sys.stderr.isatty():
        start = time.perf_counter()
        yield lambda n: None
        seconds = time.perf_counter() - start
        print(f"{label}: {total} requests in {seconds:.1f} s ({total / max(seconds, 1e-9):.1f}/s)", file=sys.stderr,
              flush=True)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@torch.inference_mode()
def score(model: Any, encoded: list[tuple[list[int], list[int]]], *, batch_size: int, device: torch.device,
          precision: str, pad_id: int, advance: Any = None) -> list[Scored]:
    """Log-likelihood of each continuation given its context."""
    order = sorted(range(len(encoded)), key=lambda i: -(len(encoded[i][0]) + len(encoded[i][1])))
    results: list[Scored | None] = [None] * len(encoded)
    for start in range(0, len(order), batch_size):
        _score_batch(model, encoded, order[start : start + batch_size], results, device, precision, pad_id)
        if advance is not None:
            advance(min(batch_size, len(order) - start))
    return results  # type: ignore[return-value]


def _score_batch(model: Any, encoded: list[tuple[list[int], list[int]]], chunk: list[int],
                 results: list[Scored | None], device: torch.device, precision: str, pad_id: int) -> None:
    rows = [encoded[i][0] + encoded[i][1] for i in chunk]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
    with autocast(device, precision):
        logits = logits_of(model, ids.to(device))
    for r, i in enumerate(chunk):
        ctx, cont = encoded[i]
        positions = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1, device=logits.device)
        logprobs = torch.log_softmax(logits[r, positions].float(), dim=-1)
        target = torch.tensor(cont, device=logits.device)
        picked = logprobs.gather(1, target[:, None]).squeeze(1)
        results[i] = Scored(float(picked.sum()), len(cont), bool((logprobs.argmax(-1) == target).all()))


def _rank_world(shard: bool) -> tuple[int, int]:
    import torch.distributed as dist

    if shard and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(values: Any, world: int) -> list[Any]:
    if world == 1:
        return [values]
    import torch.distributed as dist

    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, values)
    return parts


def subset_size(cfg: ICLTaskConfig, items: list[dict[str, Any]], batches: int, batch_size: int) -> int:
    """Items in LLM Foundry's first `batches` batches (multiple-choice batches hold batch_size // choices items)."""
    if cfg.icl_task_type in ("multiple_choice", "schema"):
        choices = len(items[0].get("choices") or items[0]["context_options"])
        return batches * (max(choices, batch_size) // choices)
    if cfg.icl_task_type == "code_evaluation":
        return max(1, batches * batch_size // cfg.generations_per_sample)
    return batches * batch_size


def evaluate_task(model: Any, tokenizer: Any, cfg: ICLTaskConfig, *, batch_size: int, max_seq_len: int,
                  device: torch.device, precision: str, shard: bool = True, limit: int | None = None,
                  strict: bool = False, subset_batches: int | None = None) -> TaskResult:
    """One task's metrics for every num_fewshot; `limit` / `subset_batches` keep the first items (per category).

    shard=True deals items out to ranks (each holds a whole model); an FSDP-sharded model needs every rank in
    every forward, so the trainer passes shard=False and each rank scores everything.
    """
    items = load_items(cfg)
    seq = cfg.max_seq_len or max_seq_len
    bs = cfg.batch_size or batch_size
    if subset_batches is not None:
        limit = min(limit or sys.maxsize, subset_size(cfg, items, subset_batches, bs))
    builder = PromptBuilder(cfg, items, needs_prefix_space(tokenizer))
    keep = [i for group in partitions(cfg, items).values() for i in group[:limit]]
    rank, world = _rank_world(shard)
    mine = set(keep[rank::world])
    encoder = Encoder(tokenizer)
    result = TaskResult()
    for shots in cfg.num_fewshot:
        requests = [r for r in builder.requests(shots) if r.item in mine]
        per_item, skipped, truncated = _run(model, tokenizer, builder, encoder, requests, shots, seq=seq, bs=bs,
                                            device=device, precision=precision)
        parts = _gather((per_item, skipped, truncated), world)
        per_item = {k: v for part in parts for k, v in part[0].items()}
        result.skipped[shots] = sorted(i for part in parts for i in part[1])
        result.truncated[shots] = sum(part[2] for part in parts)
        result.scored[shots] = len(per_item)
        if result.skipped[shots] and strict:
            first = result.skipped[shots][0]
            raise UserError(f"icl_tasks.{cfg.label}: item {first + 1} of {cfg.dataset_uri} does not fit the "
                            f"{seq}-token window ({len(result.skipped[shots])} such items; --strict makes this fatal)")
        result.metrics.update(_aggregate(cfg, items, per_item, f"{cfg.label}/{shots}-shot"))
    return result


def _run(model: Any, tokenizer: Any, builder: PromptBuilder, encoder: Encoder, requests: list[Request], shots: int,
         *, seq: int, bs: int, device: torch.device, precision: str) -> tuple[dict[int, dict[str, float]], list[int], int]:
    """Per-item metric values of this rank's requests, the items that did not fit, how many were truncated."""
    cfg = builder.cfg
    generating = cfg.icl_task_type in ("generation_task_with_answers", "code_evaluation")
    reserve = _answer_budget(builder, tokenizer, seq) if generating else 0
    encoded: dict[int, list[tuple[Request, tuple[list[int], list[int]]]]] = defaultdict(list)
    skipped, truncated = set(), set()
    for req in requests:
        got = encoder.encode(req, seq, reserve)
        if got is None:
            skipped.add(req.item)
            continue
        encoded[req.item].append((req, got[:2]))
        if got[2]:
            truncated.add(req.item)
    for item in skipped:
        encoded.pop(item, None)
    label = f"{cfg.label} {shots}-shot"
    if generating:
        order = sorted(encoded)
        prompts = [encoded[i][0][1][0] for i in order]
        with progress(label, len(prompts)):
            texts = _generate(model, tokenizer, cfg, prompts, order, reserve, bs, device, precision)
        per_item = _generation_values(builder, dict(zip(order, texts)))
    else:
        flat = [(item, req, enc) for item, rows in encoded.items() for req, enc in rows]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with progress(label, len(flat)) as advance:
            scores = score(model, [enc for _, _, enc in flat], batch_size=bs, device=device, precision=precision,
                           pad_id=pad, advance=advance)
        options: dict[int, list[tuple[Request, Scored]]] = defaultdict(list)
        for (item, req, _), s in zip(flat, scores):
            options[item].append((req, s))
        per_item = {item: _likelihood_values(cfg, builder.items[item], sorted(rows, key=lambda p: p[0].option))
                    for item, rows in options.items()}
    return per_item, sorted(skipped), len(truncated - skipped)


def _answer_budget(builder: PromptBuilder, tokenizer: Any, seq: int) -> int:
    cfg = builder.cfg
    if "max_new_tokens" in cfg.generation_kwargs:
        return int(cfg.generation_kwargs["max_new_tokens"])
    if cfg.max_new_tokens is not None:
        return cfg.max_new_tokens
    if cfg.icl_task_type == "code_evaluation":  # Foundry 0.8: the longest canonical solution + 10
        longest = max(len(tokenizer(i["canonical_solution"], add_special_tokens=False)["input_ids"]) for i in builder.raw)
        return min(longest + 10, seq - 1)
    return max(builder.max_answer_tokens(tokenizer), 1)


def _generate(model: Any, tokenizer: Any, cfg: ICLTaskConfig, prompts: list[list[int]], order: list[int],
              budget: int, bs: int, device: torch.device, precision: str) -> list[list[str]]:
    kwargs = {k: v for k, v in cfg.generation_kwargs.items() if k != "max_new_tokens"}
    stops = list(cfg.early_stopping_criteria or [])
    if cfg.icl_task_type != "code_evaluation":
        return generate(model, tokenizer, prompts, max_new_tokens=budget, stops=stops, batch_size=bs, device=device,
                        precision=precision, sampling=kwargs or None)
    from llmfoundry.eval.code_tasks import DEFAULT_SAMPLING

    out = []
    for item, prompt in zip(order, prompts):  # one call per problem, seeded by it: samples independent of batching
        torch.manual_seed(cfg.fewshot_random_seed * 1_000_003 + item)
        out += generate(model, tokenizer, [prompt], max_new_tokens=budget, stops=stops, batch_size=1, device=device,
                        precision=precision, sampling={**DEFAULT_SAMPLING, **kwargs},
                        num_return_sequences=cfg.generations_per_sample)
    return out


def _likelihood_values(cfg: ICLTaskConfig, item: dict[str, Any], scored: list[tuple[Request, Scored]]) -> dict[str, float]:
    if cfg.icl_task_type == "language_modeling":
        s = scored[0][1]
        return {"acc": float(s.greedy), "nll_sum": -s.logprob, "tokens": float(s.tokens)}
    gold = item["gold"]
    out = {"acc": float(_argmax([s.logprob for _, s in scored]) == gold)}
    if cfg.icl_task_type == "multiple_choice":  # Foundry's metric: the lowest mean cross-entropy per token
        out["acc_norm_token"] = float(_argmax([s.logprob / s.tokens for _, s in scored]) == gold)
        out["acc_norm"] = float(_argmax([s.logprob / max(len(r.continuation.encode("utf-8")), 1)
                                         for r, s in scored]) == gold)
    return out


def _generation_values(builder: PromptBuilder, texts: dict[int, list[str]]) -> dict[int, dict[str, float]]:
    cfg = builder.cfg
    if cfg.icl_task_type == "code_evaluation":
        from llmfoundry.eval.code_tasks import code_metrics

        values = code_metrics({i: builder.items[i] for i in texts}, texts, cfg.ks)
        return {i: {name: v[n] for name, v in values.items()} for n, i in enumerate(texts)}
    out = {}
    for index, (text,) in texts.items():
        answer = final_answer(text, stops=cfg.early_stopping_criteria, cot_delimiter=cfg.cot_delimiter, label=cfg.label)
        out[index] = {"acc": float(exact_match(answer, builder.answers(index), cfg.do_normalization))}
    return out


def _aggregate(cfg: ICLTaskConfig, items: list[dict[str, Any]], per_item: dict[int, dict[str, float]],
               prefix: str) -> dict[str, float]:
    """Means over items per category, and the task's value: the mean over categories (Foundry's gauntlet)."""
    metrics: dict[str, float] = {}
    groups = {cat: [i for i in group if i in per_item] for cat, group in partitions(cfg, items).items()}
    groups = {cat: group for cat, group in groups.items() if group}
    by_metric: dict[str, list[float]] = defaultdict(list)
    for cat, group in groups.items():
        values = _means(cfg, [per_item[i] for i in group])
        for name, value in values.items():
            by_metric[name].append(value)
            if cat is not None:
                metrics[f"{prefix}/{cat}/{name}"] = value
    for name, values in by_metric.items():
        metrics[f"{prefix}/{name}"] = sum(values) / len(values)
    return metrics


def _means(cfg: ICLTaskConfig, rows: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for name in cfg.metrics:
        if name == "perplexity":
            out[name] = math.exp(sum(r["nll_sum"] for r in rows) / sum(r["tokens"] for r in rows))
        else:
            out[name] = sum(r[name] for r in rows) / len(rows)
    return out


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda k: values[k])


def evaluate_icl(model: Any, tokenizer: Any, icl_tasks: list[ICLTaskConfig], *, batch_size: int, max_seq_len: int,
                 device: torch.device, precision: str = "fp32", shard: bool = True, limit: int | None = None,
                 strict: bool = False, subset_batches: int | None = None) -> dict[str, TaskResult]:
    """Every task's result by label (the trainer calls this at eval_interval; every rank must call it)."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        return {task.label: evaluate_task(model, tokenizer, task, batch_size=batch_size, max_seq_len=max_seq_len,
                                          device=device, precision=precision, shard=shard, limit=limit,
                                          strict=strict, subset_batches=subset_batches)
                for task in icl_tasks}
    finally:
        if was_training:
            model.train()
