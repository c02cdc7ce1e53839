"""LLM Foundry v0.21's shipped training yamls with the mechanical path edits a user makes, and what they need.

A Foundry user keeps their yaml and changes only paths: a hub tokenizer/model/dataset name becomes a local
directory, `data_local` a data dir, an `oci://`/`s3://` load_path a local checkpoint, the `preprocessing_fn`
placeholder their own function, the eval files' `eval/yamls/...` the copies in ../shared. `edited_yaml` makes
exactly those edits (nothing else) so tests, and `python -m tests.foundry_yamls` (the accepted count), can run
the files as such a user would.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Files we do not aim to run, each with the reason (README's migration table says the same).
OUT_OF_SCOPE = {
    "finetune/t5-small_dolly_sft.yaml": "hf_t5: encoder-decoder models are not supported (decoder-only and encoders)",
    "pretrain/testing-moe.yaml": "MoE (ffn_type mb_dmoe / torch_dmoe) is not supported",
}

# Hub names in the shipped files -> which local stand-in a user would point at.
TOKENIZERS = {"gpt2": "gpt2", "EleutherAI/gpt-neox-20b": "gpt-neox-20b"}  # others: the neox tokenizer
MODELS = {"gpt2": "gpt2", "EleutherAI/gpt-neo-125M": "gpt_neo", "facebook/opt-2.7b": "opt",
          "meta-llama/Meta-Llama-3.1-8B": "llama", "mosaicml/mpt-30b": "mpt", "mosaicml/mpt-7b": "mpt", "databricks/dbrx-instruct": "dbrx"}
DATASETS = {"HuggingFaceH4/databricks_dolly_15k": "dolly", "mosaicml/dolly_hhrlhf": "prompt_response",
            "mosaicml/instruct-v3": "prompt_response", "json": None}


@dataclass
class Resources:
    """Local stand-ins for what the shipped files name on the hub or on a bucket."""

    shared: Path
    models: Path  # holds one tiny transformers model dir per MODELS value
    text_data: Path  # MDS (raw text) with train/, train_small/, val/
    finetune_data: Path  # prompt_response/{train,test,validation}.jsonl, dolly/..., json_dir/*.jsonl
    checkpoint: Path  # a Composer checkpoint (.pt)

    def tokenizer(self, hub: str) -> str:
        return str(self.shared / "tokenizers" / TOKENIZERS.get(hub, "gpt-neox-20b"))


def foundry_train_yamls(shared: Path) -> list[Path]:
    return sorted((shared / "foundry-v0.21" / "train").rglob("*.yaml"))


def relative_name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def edited_yaml(path: Path, res: Resources) -> dict[str, Any]:
    """The file's raw mapping with only the path edits applied (interpolations stay as written)."""
    raw = yaml.safe_load(path.read_text())
    out = copy.deepcopy(raw)
    variables = out.get("variables") or {}
    for key in ("tokenizer_name",):
        if key in variables:
            variables[key] = res.tokenizer(variables[key])
    if variables.get("model_name") in MODELS:
        variables["model_name"] = str(res.models / MODELS[variables["model_name"]])
    if "data_local" in variables:
        variables["data_local"] = str(res.text_data)
    tok = out.get("tokenizer") or {}
    if isinstance(tok.get("name"), str) and not tok["name"].startswith("${"):
        tok["name"] = res.tokenizer(tok["name"])
    model = out.get("model") or {}
    name = model.get("pretrained_model_name_or_path")
    if isinstance(name, str) and name in MODELS:
        model["pretrained_model_name_or_path"] = str(res.models / MODELS[name])
    for section in ("dataset", "train_loader", "eval_loader"):
        block = out.get(section) or {}
        dataset = block if section == "dataset" else block.get("dataset") or {}
        _edit_dataset(dataset, res)
    if isinstance(out.get("load_path"), str) and "://" in out["load_path"]:
        out["load_path"] = str(res.checkpoint)
    for key in ("icl_tasks", "eval_gauntlet"):
        value = out.get(key)
        if isinstance(value, str) and value.startswith("eval/yamls/"):
            out[key] = str(res.shared / "foundry-v0.21" / "eval" / value.removeprefix("eval/yamls/"))
        elif isinstance(value, list):
            for task in value:
                if task.get("dataset_uri") is None:  # "ADD YOUR OWN DATASET URI"
                    task["dataset_uri"] = str(_icl_data(res.shared, task["label"]))
    return out


def _edit_dataset(dataset: dict[str, Any], res: Resources) -> None:
    hf_name = dataset.get("hf_name")
    if hf_name in DATASETS and DATASETS[hf_name] is not None:
        dataset["hf_name"] = str(res.finetune_data / DATASETS[hf_name])
        if hf_name == "HuggingFaceH4/databricks_dolly_15k":
            # Foundry picks its registered dolly preprocessor by the hub name; a local copy names it.
            dataset.setdefault("preprocessing_fn", hf_name)
    kwargs = dataset.get("hf_kwargs") or {}
    if kwargs.get("data_dir") == "/path/to/data/dir/":
        kwargs["data_dir"] = str(res.finetune_data / "json_dir")
    if dataset.get("preprocessing_fn") == "my.import.path:my_preprocessing_fn":
        dataset["preprocessing_fn"] = "tests.foundry_yamls:to_prompt_response"
    for stream in (dataset.get("streams") or {}).values():
        stream["local"] = str(res.finetune_data / "streams")


def to_prompt_response(example: dict[str, Any]) -> dict[str, str]:
    """The user's own `preprocessing_fn` in the tests: rows of {question, answer} -> prompt/response."""
    return {"prompt": example["question"], "response": example["answer"]}


def _icl_data(shared: Path, label: str) -> Path:
    return shared / "icl" / f"{label}.jsonl"


def write_edited(path: Path, res: Resources, out_dir: Path) -> Path:
    target = out_dir / relative_name(path).replace("/", "__")
    target.write_text(yaml.safe_dump(edited_yaml(path, res), sort_keys=False))
    return target


# -- resources --------------------------------------------------------------------------------------------

def make_models(root: Path) -> Path:
    """One tiny, randomly initialized transformers model per architecture the shipped files name."""
    import torch
    from transformers import (AutoModelForCausalLM, DbrxConfig, GPT2Config, GPTNeoConfig, LlamaConfig, MptConfig,
                              OPTConfig)

    neox, gpt2 = 50277, 50257
    configs = {
        "gpt2": GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=1024, vocab_size=gpt2),
        "gpt_neo": GPTNeoConfig(num_layers=2, hidden_size=32, num_heads=2, attention_types=[[["global", "local"], 1]],
                                max_position_embeddings=2048, vocab_size=neox),
        "opt": OPTConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, ffn_dim=64, word_embed_proj_dim=32,
                         max_position_embeddings=2048, vocab_size=neox),
        "llama": LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                             intermediate_size=64, max_position_embeddings=2048, vocab_size=neox),
        "mpt": MptConfig(n_layers=2, d_model=32, n_heads=2, max_seq_len=2048, vocab_size=neox),
        "dbrx": DbrxConfig(n_layers=2, d_model=32, n_heads=2, max_seq_len=4096, vocab_size=neox,
                           attn_config={"kv_n_heads": 1}, ffn_config={"ffn_hidden_size": 64, "moe_num_experts": 2,
                                                                      "moe_top_k": 1}),
    }
    out = root / "models"
    for name, config in configs.items():
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(out / name)
    return out


def make_finetune_data(root: Path) -> Path:
    out = root / "finetune"
    rows = [{"prompt": f"Question {i}: what is {i} plus {i}?", "response": f" It is {2 * i}."} for i in range(24)]
    dolly = [{"instruction": f"Add {i} and {i}.", "input": "" if i % 2 else f"Numbers: {i}.",
              "output": f"{2 * i}"} for i in range(24)]
    qa = [{"question": r["prompt"], "answer": r["response"]} for r in rows]
    for name, data in (("prompt_response", rows), ("dolly", dolly), ("json_dir", qa), ("streams", rows)):
        (out / name).mkdir(parents=True)
        for split in ("train", "test", "validation"):
            with open(out / name / f"{split}.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in data)
    return out


def make_text_data(root: Path) -> Path:
    """Raw-text MDS with the splits the shipped files read (train, train_small, val)."""
    from streaming import MDSWriter

    out = root / "text"
    words = "the of and a to in is you that it he was for on are as with his they at be this have from".split()
    for split in ("train", "train_small", "val"):
        with MDSWriter(out=str(out / split), columns={"text": "str"}) as writer:
            for i in range(64):
                writer.write({"text": " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(300))})
    return out


def make_resources(root: Path, shared: Path) -> Resources:
    checkpoint = shared / "foundry-v0.21" / "artifacts" / "composer-checkpoint" / "ep0-ba60-rank0.pt"
    return Resources(shared=shared, models=make_models(root), text_data=make_text_data(root),
                     finetune_data=make_finetune_data(root), checkpoint=checkpoint)


def print_config_results(res: Resources, work: Path) -> dict[str, str]:
    """relative yaml name -> '' when `foundry train Y --print-config` accepts it, else its first error line."""
    from tests.conftest import run_cli

    results = {}
    for path in foundry_train_yamls(res.shared):
        edited = write_edited(path, res, work)
        proc = run_cli("train", str(edited), "--print-config", env={"RUN_NAME": ""})
        results[relative_name(path)] = "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["?"])[0]
    return results


def main() -> None:
    """Print how many shipped training yamls `--print-config` accepts after path edits (the issue's count).

    `python -m tests.foundry_yamls [SHARED_DIR]`
    """
    import tempfile

    from tests.conftest import SHARED

    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else SHARED  # a checkout elsewhere names ../shared
    with tempfile.TemporaryDirectory() as tmp:
        res = make_resources(Path(tmp), shared)
        results = print_config_results(res, Path(tmp))
    for name, error in results.items():
        print(f"{'ok  ' if not error else 'FAIL'} {name}{'' if not error else ': ' + error}")
    accepted = sum(not e for e in results.values())
    print(f"accepted {accepted} of {len(results)}")


if __name__ == "__main__":
    sys.exit(main())
