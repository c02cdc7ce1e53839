"""`foundry chat`: talk to a model in the terminal, tokens streamed as they are generated.

The conversation is rendered with the tokenizer's chat template (ChatML when it has none: the same renderer
finetuning uses, so a model finetuned here is prompted exactly as it was trained). The history is kept while
it fits the model's window: when prompt + max_new_tokens would not, the oldest turns are dropped (said once).
Commands: /reset (forget the conversation), /system TEXT (set the system message; it is never dropped),
/exit (or Ctrl-D).
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from typing import Any, Callable, TextIO

from llmfoundry.serve.engine import Request, Sampling, generate_group
from llmfoundry.serve.loading import Loaded

HELP = "commands: /reset  /system TEXT  /exit   (Ctrl-D also quits)"


class Conversation:
    """Messages so far, rendered into a prompt that fits `budget` tokens by dropping the oldest turns."""

    def __init__(self, tokenizer: Any, budget: int) -> None:
        from llmfoundry.data.finetune import chat_renderer

        self.tokenizer, self.budget = tokenizer, budget
        self.render = chat_renderer(tokenizer, None)
        self.system: str | None = None
        self.turns: list[dict[str, str]] = []
        self.dropped_once = False

    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.turns

    def prompt_ids(self) -> tuple[list[int], bool]:
        """Token ids of the conversation with the assistant's turn opened; True if turns had to be dropped."""
        dropped = False
        while True:
            text = self.render(self.messages(), True)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) <= self.budget or len(self.turns) <= 1:
                return ids[-self.budget:], dropped
            self.turns = self.turns[2:] if len(self.turns) > 2 else self.turns[1:]  # a user turn and its answer
            dropped = True


def chat(loaded: Loaded, sampling: Sampling, *, read: Callable[[str], str] = input, out: TextIO = sys.stdout) -> None:
    """The interactive loop (reads with `read`, writes to `out`)."""
    budget = loaded.window - sampling.max_tokens
    if budget < 1:
        from llmfoundry.errors import UserError

        raise UserError(f"--max-new-tokens: {sampling.max_tokens} leaves no room for a prompt in the model's "
                        f"{loaded.window}-token window")
    if getattr(loaded.tokenizer, "chat_template", None) is None:  # ChatML fallback: its end tag is plain text
        sampling = replace(sampling, stop=[*sampling.stop, "<|im_end|>"])
    talk = Conversation(loaded.tokenizer, budget)
    out.write(f"chatting with {loaded.name} ({loaded.window}-token window). {HELP}\n")
    out.flush()
    while True:
        try:
            line = read("you> ")
        except EOFError:
            out.write("\n")
            return
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return
        if line == "/reset":
            talk.turns = []
            out.write("(conversation cleared)\n")
            continue
        if line.startswith("/system"):
            talk.system = line[len("/system"):].strip() or None
            out.write(f"(system message {'set' if talk.system else 'cleared'})\n")
            continue
        if line.startswith("/"):
            out.write(f"unknown command {line.split()[0]}; {HELP}\n")
            continue
        talk.turns.append({"role": "user", "content": line})
        ids, dropped = talk.prompt_ids()
        if dropped and not talk.dropped_once:
            out.write(f"(the conversation is longer than the {budget}-token window minus the reply; dropping "
                      "its oldest turns from now on)\n")
            talk.dropped_once = True
        reply = _answer(loaded, ids, sampling, out)
        talk.turns.append({"role": "assistant", "content": reply})


def _answer(loaded: Loaded, ids: list[int], sampling: Sampling, out: TextIO) -> str:
    out.write("bot> ")
    out.flush()

    def show(text: str) -> None:
        out.write(text)
        out.flush()

    start = time.perf_counter()
    result = generate_group(loaded.model, loaded.tokenizer, [Request(ids, sampling, on_text=show)])[0]
    seconds = time.perf_counter() - start
    out.write(f"\n[{result.completion_tokens} tokens, {result.completion_tokens / seconds:.1f} tokens/s]\n")
    out.flush()
    return result.text
