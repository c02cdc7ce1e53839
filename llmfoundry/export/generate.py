"""`foundry generate`: sample text from an exported Hugging Face model directory (KV cache of its class)."""

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
    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True,
                                                 trust_remote_code=trust_remote_code).eval()
    encoded = tokenizer(prompt, return_tensors="pt")
    inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=not greedy,
                             temperature=None if greedy else temperature, top_p=None if greedy else top_p,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
