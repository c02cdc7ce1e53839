"""Benchmark: `foundry eval` vs EleutherAI lm-eval 0.4.13 on the same model, items and prompts.

Both score the first N items of piqa, arc_easy, winogrande and lambada_openai (the `icl` asset) with the same
local model directory, on CPU, in one run. lm-eval lives in its own venv (.venv-lmeval: it needs
transformers 5, which our pins exclude); this script creates it if it is missing (`pip install torch==2.13.0 lm-eval[hf]==0.4.13`, CPU torch).
Its tasks are written as local yaml (dataset_path: json) with prompts equal to ours, so the accuracies must
agree where the definitions coincide. Prints items/s of each (whole command, start-up included), the
ratio, and per-task metrics side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmfoundry.assets import asset_path

REPO = Path(__file__).resolve().parents[2]
ICL = Path(asset_path("icl"))
LMEVAL = REPO / ".venv-lmeval"

# label, type, our continuation_delimiter, lm-eval doc_to_text, lm-eval metric names
TASKS = [
    ("piqa", "multiple_choice", "Answer: ", "{{query}}Answer:"),
    ("arc_easy", "multiple_choice", "\nAnswer: ", "{{query}}\nAnswer:"),
    ("winogrande", "schema", " ", None),
    ("lambada_openai", "language_modeling", " ", "{{context}}"),
]

WINOGRANDE_UTILS = '''
def doc_to_text(doc):
    return doc["gold"]

def doc_to_target(doc):
    return doc["continuation"]

def doc_to_choice(doc):
    return doc["context_options"]
'''


def lm_eval_task(label: str, kind: str, prompt: str | None, data: Path) -> str:
    head = (f"task: {label}_local\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
            "test_split: test\n")
    if kind == "multiple_choice":
        return head + (f'output_type: multiple_choice\ndoc_to_text: "{prompt}"\ndoc_to_choice: "{{{{choices}}}}"\n'
                       'doc_to_target: "{{gold}}"\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n')
    if kind == "schema":
        return head + ("output_type: multiple_choice\ndoc_to_text: !function utils.doc_to_text\n"
                       "doc_to_target: !function utils.doc_to_target\ndoc_to_choice: !function utils.doc_to_choice\n"
                       "metric_list:\n  - metric: acc\n")
    return head + (f'output_type: loglikelihood\ndoc_to_text: "{prompt}"\ndoc_to_target: "{{{{continuation}}}}"\n'
                   "metric_list:\n  - metric: perplexity\n  - metric: acc\n")


def ensure_lmeval() -> Path:
    exe = LMEVAL / "bin" / "lm_eval"
    if not exe.exists():
        print("creating .venv-lmeval (pip install lm-eval==0.4.13, a few minutes) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LMEVAL)], check=True)
        subprocess.run([str(LMEVAL / "bin" / "pip"), "install", "-q", "torch==2.13.0", "lm-eval[hf]==0.4.13"],
                       check=True)
    return exe


def tiny_model(out: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=128, n_head=4, n_layer=2, n_positions=1024)).save_pretrained(out)
    AutoTokenizer.from_pretrained(str(Path(asset_path("gpt2")))).save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200, help="items per task")
    parser.add_argument("--model", help="a local HF causal LM dir (default: a tiny random GPT-2)")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    lm_eval = ensure_lmeval()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model = Path(args.model) if args.model else tiny_model(tmp_path / "model")
        include = tmp_path / "tasks"
        include.mkdir()
        (include / "utils.py").write_text(WINOGRANDE_UTILS)
        ours_tasks = []
        for label, kind, delim, prompt in TASKS:
            data = tmp_path / f"{label}.jsonl"
            data.write_text("\n".join((ICL / f"{label}.jsonl").read_text().splitlines()[: args.items]) + "\n")
            (include / f"{label}.yaml").write_text(lm_eval_task(label, kind, prompt, data))
            ours_tasks.append({"label": label, "dataset_uri": str(data), "icl_task_type": kind,
                               "continuation_delimiter": delim})
        config = tmp_path / "eval.yaml"
        config.write_text(json.dumps({
            "models": [{"model_name": "m", "model": {"name": "hf_causal_lm", "pretrained_model_name_or_path": str(model)}}],
            "icl_tasks": ours_tasks, "device_eval_batch_size": args.batch, "max_seq_len": 1024,
            "save_folder": str(tmp_path / "ours")}))
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "true"}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "llmfoundry.cli", "eval", str(config)], check=True, env=env,
                       capture_output=True)
        ours_s = time.perf_counter() - t0
        ours = json.loads((tmp_path / "ours" / "results.json").read_text())["m"]
        t0 = time.perf_counter()
        proc = subprocess.run([str(lm_eval), "--model", "hf", "--model_args", f"pretrained={model}",
                               "--tasks", ",".join(f"{t[0]}_local" for t in TASKS), "--include_path", str(include),
                               "--batch_size", str(args.batch), "--device", "cpu",
                               "--output_path", str(tmp_path / "lmeval")], env=env, capture_output=True, text=True)
        theirs_s = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        result_file = next((tmp_path / "lmeval").rglob("results*.json"))
        theirs = json.loads(result_file.read_text())["results"]
    items = args.items * len(TASKS)
    print(f"model: {model.name if args.model else 'tiny random GPT-2 (2 layers, d 128)'}; {args.items} items x "
          f"{len(TASKS)} tasks; CPU; whole commands timed")
    print(f"foundry eval: {ours_s:6.1f} s  {items / ours_s:7.1f} items/s")
    print(f"lm-eval     : {theirs_s:6.1f} s  {items / theirs_s:7.1f} items/s")
    print(f"speed-up    : {theirs_s / ours_s:.2f}x (target >= 3x)")
    print(f"{'task':16s} {'metric':10s} {'foundry':>9s} {'lm-eval':>9s}")
    pairs = [("acc", "acc,none"), ("acc_norm", "acc_norm,none"), ("perplexity", "perplexity,none")]
    for label, *_ in TASKS:
        for ours_name, their_name in pairs:
            a = ours.get(f"{label}/0-shot/{ours_name}")
            b = theirs.get(f"{label}_local", {}).get(their_name)
            if a is not None and b is not None:
                print(f"{label:16s} {ours_name:10s} {a:9.4f} {b:9.4f}")


if __name__ == "__main__":
    main()
