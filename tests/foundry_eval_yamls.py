"""LLM Foundry v0.21's eval yamls with mechanical path edits, and which of them `foundry eval` runs.

Path edits only: `eval/local_data/...` -> ../shared/foundry-v0.21/local_data (hellaswag, absent there, -> the
`icl` asset's copy), `eval/yamls/X` -> the edited copy of X, a hub model/tokenizer/adapter name -> a local
directory. Tasks whose data file is absent from local_data (mmlu, squad, coqa, ...) are dropped from the
edited copies and named. `python -m tests.foundry_eval_yamls` prints what runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FOUNDRY_SHARED", REPO.parent / "shared"))
FOUNDRY = SHARED / "foundry-v0.21"
COMPLETE = ["test_eval.yaml", "hf_lora_eval.yml", "hf_8bit_eval.yaml", "openai_eval.yaml", "dbrx-9b.yaml",
            "dbrx-18b.yaml", "dbrx-35b.yaml", "dbrx-73b.yaml"]
OUT_OF_SCOPE = {
    "openai_eval.yaml": "API models (openai_chat, openai_causal_lm) and a tiktoken tokenizer: no network here",
    "long_context_tasks.yaml": "hf:// datasets (hf_loading_vars): nothing is downloaded; export them to jsonl",
    **{f"dbrx-{n}.yaml": "MoE (ffn_type torch_dmoe) is out of scope, and its tiktoken tokenizer is a hub download"
       for n in ("9b", "18b", "35b", "73b")},
}
NEEDS_CUDA = {"hf_8bit_eval.yaml": "load_in_8bit needs CUDA + bitsandbytes: a one-line error on this CPU"}


def tiny_models(root: Path) -> tuple[Path, Path]:
    """A tiny GPT-2 with the GPT-2 tokenizer (for bloom-1b7 / opt-350m) and LoRA adapters for it (peft format)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from llmfoundry.assets import asset_path

    model_dir, lora_dir = root / "tiny-gpt2", root / "tiny-gpt2-lora"
    if not (model_dir / "config.json").exists():
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_head=2, n_layer=2, n_positions=2048))
        model.save_pretrained(model_dir)
        AutoTokenizer.from_pretrained(str(asset_path("gpt2"))).save_pretrained(model_dir)
        get_peft_model(model, LoraConfig(r=2, target_modules=["c_attn"], init_lora_weights=False)).save_pretrained(lora_dir)
    return model_dir, lora_dir


def edit_all(dst: Path, model_dir: Path, lora_dir: Path) -> dict[str, list[str]]:
    """Write edited copies of every eval yaml into dst; returns the dropped (absent-data) task labels per file."""
    from llmfoundry.assets import asset_path

    names = {"bigscience/bloom-1b7": model_dir, "facebook/opt-350m": model_dir, "ybelkada/opt-350m-lora": lora_dir,
             "EleutherAI/gpt-neox-20b": asset_path("gpt-neox-20b")}
    dropped: dict[str, list[str]] = {}
    for src in sorted((FOUNDRY / "eval").rglob("*.y*ml")):
        text = src.read_text().replace("eval/local_data/language_understanding/hellaswag.jsonl",
                                       f"{asset_path('icl')}/hellaswag.jsonl")
        text = text.replace("eval/local_data/", f"{FOUNDRY}/local_data/").replace("eval/yamls/", f"{dst}/")
        for hub, local in names.items():
            text = text.replace(hub, str(local))
        data = yaml.safe_load(text)
        if isinstance(data, dict) and isinstance(data.get("icl_tasks"), list):
            absent = [t["label"] for t in data["icl_tasks"] if not Path(t["dataset_uri"]).exists()
                      and not t["dataset_uri"].startswith("hf://")]
            if absent:
                data["icl_tasks"] = [t for t in data["icl_tasks"] if t["label"] not in absent]
                text = yaml.safe_dump(data, sort_keys=False)
                dropped[src.name] = absent
        (dst / src.name).write_text(text)
    return dropped


def wrapper(dst: Path, tasks: str, model_dir: Path, gauntlet: str | None = None) -> Path:
    """An eval yaml running a Foundry task file (and gauntlet) on the tiny model."""
    text = (f"models:\n- model_name: tiny\n  model: {{name: hf_causal_lm, pretrained_model_name_or_path: {model_dir}}}\n"
            f"icl_tasks: {dst / tasks}\nmax_seq_len: 2048\ndevice_eval_batch_size: 4\n")
    if gauntlet:
        text += f"eval_gauntlet: {dst / gauntlet}\n"
    path = dst / f"run-{Path(tasks).stem}.yaml"
    path.write_text(text)
    return path


def foundry(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "llmfoundry.cli", *args], capture_output=True, text=True, env=env,
                          timeout=1800)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir, lora_dir = tiny_models(root)
        dropped = edit_all(root, model_dir, lora_dir)
        ran = 0
        for name in COMPLETE:
            result = foundry("eval", str(root / name), "icl_subset_num_batches=1", "max_seq_len=512")
            ok = result.returncode == 0
            ran += ok
            why = OUT_OF_SCOPE.get(name) or NEEDS_CUDA.get(name) or ""
            tail = (result.stderr.strip().splitlines() or [""])[-1][:160]
            print(f"{'runs ' if ok else 'fails'} {name}" + ("" if ok else f": {tail}") + (f" [{why}]" if why else ""))
        print(f"{ran} of {len(COMPLETE)} complete eval yamls run with path edits only; data absent from "
              f"local_data: {sorted({t for v in dropped.values() for t in v})}")


if __name__ == "__main__":
    main()
