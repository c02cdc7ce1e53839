"""foundry chat through a pseudo-terminal (pexpect), as a person would use it."""

from __future__ import annotations

import os
import re
import sys

import pexpect
import pytest
import torch

from tests.conftest import REPO, run_cli
from tests.e2e.test_serve import _export

REPLY = re.compile(r"bot> (.*?)\r\n\[(\d+) tokens, ([0-9.]+) tokens/s\]")


@pytest.fixture(scope="module")
def small_window_dir(tmp_path_factory, gpt2_tokenizer_dir):
    """A tiny MPT with a 128-token window, so a few turns overflow it."""
    return _export(tmp_path_factory.mktemp("chat") / "tiny-chat", gpt2_tokenizer_dir, max_seq_len=128)


def _greedy_reply(hf_dir, messages: list[dict], max_new_tokens: int) -> str:
    """transformers' greedy continuation of the ChatML-rendered conversation, cut at the end tag."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmfoundry.data.finetune import CHATML

    tok = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), local_files_only=True).eval()
    text = tok.apply_chat_template(messages, chat_template=CHATML, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tok.eos_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).split("<|im_end|>")[0]


@pytest.mark.slow
def test_chat_in_a_terminal(small_window_dir):
    child = pexpect.spawn(sys.executable, ["-m", "llmfoundry.cli", "chat", str(small_window_dir), "--greedy",
                                           "--max-new-tokens", "8"],
                          env={**os.environ, "PYTHONPATH": str(REPO), "TERM": "dumb"}, encoding="utf-8",
                          timeout=600)
    try:
        child.expect("128-token window")
        child.expect("you> ")
        child.sendline("What does aspirin do?")
        child.expect(REPLY)
        first = child.match.group(1)
        assert first == _greedy_reply(small_window_dir, [{"role": "user", "content": "What does aspirin do?"}], 8)
        assert int(child.match.group(2)) > 0 and float(child.match.group(3)) > 0
        child.expect("you> ")
        child.sendline("/system Answer briefly.")
        child.expect(r"\(system message set\)")
        child.expect("you> ")
        child.sendline("And the dose?")
        child.expect(REPLY)
        second = child.match.group(1)
        history = [{"role": "system", "content": "Answer briefly."},
                   {"role": "user", "content": "What does aspirin do?"}, {"role": "assistant", "content": first},
                   {"role": "user", "content": "And the dose?"}]
        assert second == _greedy_reply(small_window_dir, history, 8)  # the history is in the prompt
        drops = 0
        for question in ("Is it safe for the heart?", "What about children?", "Any side effects at all?"):
            child.expect("you> ")
            child.sendline(question)
            index = child.expect([r"dropping its oldest turns", REPLY])
            if index == 0:
                drops += 1
                child.expect(REPLY)
        assert drops == 1  # said once, though later turns keep dropping
        child.expect("you> ")
        child.sendline("/bogus")
        child.expect("unknown command /bogus")
        child.expect("you> ")
        child.sendline("/reset")
        child.expect(r"\(conversation cleared\)")
        child.expect("you> ")
        child.sendline("What does aspirin do?")
        child.expect(REPLY)  # after /reset only the system message and this turn remain
        assert child.match.group(1) == _greedy_reply(
            small_window_dir, [{"role": "system", "content": "Answer briefly."},
                               {"role": "user", "content": "What does aspirin do?"}], 8)
        child.expect("you> ")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_chat_refuses_what_is_not_a_model(tmp_path):
    done = run_cli("chat", str(tmp_path))
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "neither an exported model" in done.stderr
    done = run_cli("chat", str(tmp_path), "--temperature", "0")
    assert done.returncode == 1 and "--temperature must be > 0" in done.stderr
