"""`foundry generate`: sample text from an exported Hugging Face model directory (KV cache of its class).

The prompt and the tokens to generate must fit the model's window (its positions: max_seq_len, n_positions
or max_position_embeddings): an empty prompt, a prompt longer than the window, or a --max-new-tokens that
runs past it is refused with one line saying the limit, rather than silently cutting the user's text (which
would continue something other than what they wrote) or failing inside the model with a shape error.
"""

from __future__ import annotations

from pathlib import Path

from llmfoundry.errors import UserError


def generate(model_dir: str | Path, prompt: str, *, max_new_tokens: int = 64, temperature: float = 1.0,
             top_p: float = 1.0, greedy: bool = False, seed: int = 0, trust_remote_code: bool = False) -> str:
    """The continuation of `prompt` (greedy, or sampled with temperature / top-p)."""
    import torch
    from transformers import AutoModelForCausalLM

    from llmfoundry.data.tokenizer import load_tokenizer

    path = Path(model_dir)
    if not (path / "config.json").exists():
        raise UserError(f"{model_dir}: not a Hugging Face model directory (no config.json); "
                        "run `foundry inference-convert` first")
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens: must be at least 1, got {max_new_tokens}")
    if not greedy and (temperature <= 0 or not 0 < top_p <= 1):
        raise UserError("--temperature must be > 0 and --top-p in (0, 1] (or pass --greedy)")
    tokenizer = load_tokenizer(path)
    encoded = tokenizer(prompt, return_tensors="pt")
    _check_window(encoded["input_ids"].shape[1], max_new_tokens, _window(path, trust_remote_code))
    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True,
                                                 trust_remote_code=trust_remote_code).eval()
    inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=not greedy,
                             temperature=None if greedy else temperature, top_p=None if greedy else top_p,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


_WINDOW_KEYS = ("max_seq_len", "n_positions", "max_position_embeddings")


def _window(path: Path, trust_remote_code: bool) -> int | None:
    """The longest sequence the model's positions allow, from its config (None when it states none)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)
    return next((v for k in _WINDOW_KEYS if isinstance(v := getattr(config, k, None), int) and v > 0), None)


def _check_window(prompt_tokens: int, max_new_tokens: int, window: int | None) -> None:
    if prompt_tokens == 0:
        raise UserError("--prompt: is empty; give some text to continue")
    if window is None:
        return
    if prompt_tokens >= window:
        raise UserError(f"--prompt: is {prompt_tokens} tokens, and the model's window is {window} tokens "
                        "(prompt plus generated text); shorten the prompt")
    if prompt_tokens + max_new_tokens > window:
        raise UserError(f"--max-new-tokens: {max_new_tokens} new tokens after the {prompt_tokens}-token prompt run "
                        f"past the model's {window}-token window; use --max-new-tokens {window - prompt_tokens} "
                        "or less")
