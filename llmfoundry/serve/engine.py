"""Batched generation: many requests, each with its own sampling settings, in one padded `generate` call.

transformers' `generate` takes one set of sampling settings per call, so the per-request parts are done by two
small hooks on a greedy `generate` (which brings each model class's own KV cache, padding and position
handling):
- `RowSampler` (a logits processor) draws each row's next token with that row's temperature, top-p and seeded
  generator (or takes its argmax when greedy) and leaves that token the only finite score, so greedy decoding
  picks it;
- `RowStopper` (a stopping criterion) detokenizes each row as it grows, hands new text to the request's
  callback (holding back what could still become a stop string or an incomplete UTF-8 character), and ends a row
  at its eos, stop string or max_tokens while the others go on.

`Engine` runs a background thread that takes every request waiting in its queue (up to `max_batch`) as one
group, so concurrent requests share the forward passes instead of queueing one by one.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass
class Sampling:
    max_tokens: int = 64
    """Tokens to generate at most."""
    temperature: float = 1.0
    """0 means greedy."""
    top_p: float = 1.0
    """Nucleus mass."""
    stop: list[str] = field(default_factory=list)
    """Strings that end the completion (not included in it)."""
    seed: int | None = None
    """Seed of this request's sampling (None: drawn from the process's generator)."""


@dataclass
class Result:
    text: str
    finish_reason: str
    """"stop" (eos or a stop string) or "length" (max_tokens)."""
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None
    """Set when generation itself failed (a bug: the server answers 500 and keeps serving)."""


@dataclass
class Request:
    prompt_ids: list[int]
    sampling: Sampling
    on_text: Callable[[str], None] = lambda text: None
    """Called with each new piece of text, from the generating thread."""
    on_done: Callable[[Result], None] = lambda result: None
    """Called once with the whole result, from the generating thread."""


class RowSampler:
    """A logits processor: each row's token drawn with its own settings; the chosen token's score is 0, all
    others -inf, so the greedy `generate` around it takes exactly that token."""

    def __init__(self, sampling: list[Sampling]) -> None:
        self.sampling = sampling
        self.generators = []
        for s in sampling:
            g = torch.Generator()
            g.manual_seed(s.seed if s.seed is not None else int(torch.randint(0, 2**62, ()).item()))
            self.generators.append(g)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        chosen = scores.argmax(dim=-1)
        for row, s in enumerate(self.sampling):
            if s.temperature > 0:
                chosen[row] = _sample(scores[row].float(), s.temperature, s.top_p, self.generators[row])
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(chosen)), chosen] = 0
        return out


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> torch.Tensor:
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(0) - sorted_probs < top_p  # the smallest prefix reaching top_p (at least one)
        probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_probs[keep])
    return torch.multinomial(probs, 1, generator=generator)[0]


class _Row:
    """One request's progress through a batch."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.ids: list[int] = []
        self.sent = ""
        self.done = False
        self.finish = "length"
        self.hold = max((len(s) for s in request.sampling.stop), default=1) - 1

    def text(self, tokenizer: Any) -> str:
        text = tokenizer.decode(self.ids, skip_special_tokens=True)
        for stop in self.request.sampling.stop:
            at = text.find(stop)
            if at >= 0:
                text, self.done, self.finish = text[:at], True, "stop"
        return text

    def emit(self, text: str, final: bool) -> None:
        safe = text if final else text[: max(len(text) - self.hold, 0)]
        if not final and safe.endswith("\ufffd"):  # a character whose bytes are not all generated yet
            safe = safe.rstrip("\ufffd")
        if len(safe) > len(self.sent) and safe.startswith(self.sent):
            self.request.on_text(safe[len(self.sent):])
            self.sent = safe


class RowStopper:
    """A stopping criterion: streams each row's new text and ends rows at eos, a stop string or max_tokens."""

    def __init__(self, rows: list[_Row], tokenizer: Any, eos: set[int]) -> None:
        self.rows, self.tokenizer, self.eos = rows, tokenizer, eos

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        for i, row in enumerate(self.rows):
            if row.done:
                continue
            token = int(input_ids[i, -1])
            if token in self.eos:
                row.done, row.finish = True, "stop"
                continue
            row.ids.append(token)
            text = row.text(self.tokenizer)
            if len(row.ids) >= row.request.sampling.max_tokens and not row.done:
                row.done, row.finish = True, "length"
            row.emit(text, final=False)
        return torch.tensor([row.done for row in self.rows], dtype=torch.bool, device=input_ids.device)


def generate_group(model: Any, tokenizer: Any, requests: list[Request]) -> list[Result]:
    """Run `requests` together in one left-padded greedy `generate` with the per-row hooks; calls their callbacks."""
    from transformers import LogitsProcessorList, StoppingCriteriaList

    rows = [_Row(r) for r in requests]
    longest = max(len(r.prompt_ids) for r in requests)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(requests), longest), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(requests):
        ids[i, longest - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
        mask[i, longest - len(r.prompt_ids):] = 1
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1,
                       max_new_tokens=max(r.sampling.max_tokens for r in requests), pad_token_id=pad,
                       logits_processor=LogitsProcessorList([RowSampler([r.sampling for r in requests])]),
                       stopping_criteria=StoppingCriteriaList([RowStopper(rows, tokenizer, eos_ids)]),
                       temperature=None, top_p=None, top_k=None)
    results = []
    for row in rows:
        text = row.text(tokenizer)
        row.emit(text, final=True)
        result = Result(text=text, finish_reason=row.finish, prompt_tokens=len(row.request.prompt_ids),
                        completion_tokens=len(row.ids))
        row.request.on_done(result)
        results.append(result)
    return results


class Engine:
    """A background thread generating for every waiting request at once (up to `max_batch` per group)."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 32, gather_s: float = 0.005) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.gather_s = max_batch, gather_s
        self.queue: queue.Queue[Request | None] = queue.Queue()
        self.groups: list[int] = []
        """Sizes of the groups run so far (how much batching happened)."""
        self.thread = threading.Thread(target=self._loop, name="foundry-engine", daemon=True)
        self.thread.start()

    def submit(self, request: Request) -> None:
        self.queue.put(request)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=60)

    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            time.sleep(self.gather_s)  # let requests sent at the same moment join this group
            group = [first]
            while len(group) < self.max_batch:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.queue.put(None)
                    break
                group.append(nxt)
            self.groups.append(len(group))
            try:
                generate_group(self.model, self.tokenizer, group)
            except Exception:  # a bug in generation must fail these requests, not the server: report it loudly
                message = traceback.format_exc()
                print(message, flush=True)
                for r in group:
                    r.on_done(Result("", "error", len(r.prompt_ids), 0, error=message.strip().splitlines()[-1]))
