"""Benchmark: `foundry eval` vs LLM Foundry 0.22 itself, item by item, on the same model and items.

LLM Foundry lives in its own venv (.venv-foundry: `python -m venv .venv-foundry && .venv-foundry/bin/pip install
-c ../shared/foundry-v0.21/foundry-lock.txt llm-foundry==0.22.0`, ~7 GB; never in CI). This script runs itself
there with `--side foundry`: Foundry's own ICL datasets (get_icl_task_dataloader) and metric classes score the
first N items of each task with a local Hugging Face model, and write per item the token ids of every row and
the prediction. Here, our builder/encoder/scorer do the same. Printed per task: items with identical token ids,
identical predictions, and items/s of each (dataset preparation + scoring; model loading excluded).
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

REPO = Path(__file__).resolve().parents[2]
FOUNDRY_VENV = REPO / ".venv-foundry"
# label, file in the icl asset, type, continuation_delimiter, num_fewshot (LLM Foundry's tasks_v0.3 settings)
TASKS = [
    ("piqa", "piqa", "multiple_choice", "\nAnswer: ", 0),
    ("arc_easy", "arc_easy", "multiple_choice", "\nAnswer: ", 3),
    ("hellaswag", "hellaswag", "multiple_choice", " ", 0),
    ("copa", "copa", "multiple_choice", " ", 0),
    ("winogrande", "winogrande", "schema", " ", 5),
    ("lambada_openai", "lambada_openai", "language_modeling", " ", 0),
]


def foundry_side(spec: dict) -> dict:
    """Runs in .venv-foundry: per task, per item: rows of token ids and the prediction."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmfoundry.eval.datasets import get_icl_task_dataloader
    from llmfoundry.eval.metrics import InContextLearningLMAccuracy, InContextLearningMultipleChoiceAccuracy

    tok = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"]).eval()
    out = {}
    for task in spec["tasks"]:
        start = time.perf_counter()
        dl = get_icl_task_dataloader(task["type"], task["data"], tok, spec["batch"], destination_path=f"{spec['tmp']}/{task['label']}.jsonl",
                                     kwargs={"max_seq_len": spec["seq"], "pad_tok_id": tok.eos_token_id,
                                             "num_fewshot": task["shots"], "prompt_string": "",
                                             "example_delimiter": "\n", "continuation_delimiter": task["delim"],
                                             "fewshot_random_seed": 1234})
        metric = (InContextLearningLMAccuracy if task["type"] == "language_modeling"
                  else InContextLearningMultipleChoiceAccuracy)()
        items = []
        for batch in dl.dataloader:
            with torch.inference_mode():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            rows = [ids[: int(c[-1]) + 1].tolist() for ids, c in zip(batch["input_ids"], batch["continuation_indices"])]
            result = metric.update(batch, logits, batch["labels"])
            if task["type"] == "language_modeling":
                items += [{"rows": [r], "pred": int(x)} for r, x in zip(rows, result["result"])]
            else:
                for (s, e), pred in zip(batch["choice_groupings"], result["selected_choice_idx"]):
                    items.append({"rows": rows[s:e], "pred": int(pred)})
        out[task["label"]] = {"items": items, "seconds": time.perf_counter() - start}
    return out


def our_side(spec: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmfoundry.eval.icl import Encoder, score
    from llmfoundry.eval.tasks import ICLTaskConfig, PromptBuilder, load_items, needs_prefix_space

    tok = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"]).eval()
    cpu = torch.device("cpu")
    out = {}
    for task in spec["tasks"]:
        start = time.perf_counter()
        cfg = ICLTaskConfig(label=task["label"], dataset_uri=task["data"], icl_task_type=task["type"],
                            continuation_delimiter=task["delim"], num_fewshot=[task["shots"]])
        builder = PromptBuilder(cfg, load_items(cfg), needs_prefix_space(tok))
        requests = builder.requests(task["shots"])
        enc = Encoder(tok)
        encoded = [enc.encode(r, spec["seq"])[:2] for r in requests]
        scored = score(model, encoded, batch_size=spec["batch"], device=cpu, precision="fp32", pad_id=tok.eos_token_id)
        items: dict[int, dict] = {}
        for r, (ctx, cont), s in zip(requests, encoded, scored):
            row = items.setdefault(r.item, {"rows": [], "scores": []})
            row["rows"].append(ctx + cont)
            row["scores"].append(float(s.greedy) if task["type"] == "language_modeling" else s.logprob / s.tokens)
        listed = []
        for index in sorted(items):
            sc = items[index]["scores"]
            pred = int(sc[0]) if task["type"] == "language_modeling" else max(range(len(sc)), key=sc.__getitem__)
            listed.append({"rows": items[index]["rows"], "pred": pred})
        out[task["label"]] = {"items": listed, "seconds": time.perf_counter() - start}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100, help="items per task")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--model", help="a local HF causal LM dir (default: a tiny random GPT-2)")
    parser.add_argument("--side", choices=["ours", "foundry"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        spec = json.loads(Path(args.spec).read_text())
        result = (foundry_side if args.side == "foundry" else our_side)(spec)
        Path(spec["tmp"], f"{args.side}.json").write_text(json.dumps(result))
        return
    python = FOUNDRY_VENV / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{FOUNDRY_VENV} is missing: python -m venv .venv-foundry && .venv-foundry/bin/pip install "
                         "-c ../shared/foundry-v0.21/foundry-lock.txt llm-foundry==0.22.0 (~7 GB, 5-10 min)")
    from llmfoundry.assets import asset_path

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            import torch
            from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

            torch.manual_seed(0)
            model = f"{tmp}/model"
            GPT2LMHeadModel(GPT2Config(n_embd=128, n_head=4, n_layer=2, n_positions=1024)).save_pretrained(model)
            AutoTokenizer.from_pretrained(str(asset_path("gpt2"))).save_pretrained(model)
        tasks = []
        for label, name, kind, delim, shots in TASKS:
            data = Path(tmp, f"{label}-data.jsonl")
            data.write_text("\n".join((Path(asset_path("icl")) / f"{name}.jsonl").read_text().splitlines()[: args.items]) + "\n")
            tasks.append({"label": label, "data": str(data), "type": kind, "delim": delim, "shots": shots})
        spec = {"model": model, "tasks": tasks, "batch": args.batch, "seq": 1024, "tmp": tmp}
        Path(tmp, "spec.json").write_text(json.dumps(spec))
        me = str(Path(__file__).resolve())
        env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        subprocess.run([str(python), "-I", me, "--side", "foundry", "--spec", f"{tmp}/spec.json"], check=True, env=env,
                       cwd=tmp, capture_output=True)
        subprocess.run([sys.executable, me, "--side", "ours", "--spec", f"{tmp}/spec.json"], check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
        theirs = json.loads(Path(tmp, "foundry.json").read_text())
        ours = json.loads(Path(tmp, "ours.json").read_text())
    print(f"model: {'tiny random GPT-2 (2 layers, d 128)' if args.model is None else args.model}; first {args.items} "
          f"items per task; CPU fp32; batch {args.batch}; LLM Foundry 0.22.0 in .venv-foundry")
    print(f"{'task':16s} {'shots':>5s} {'same ids':>9s} {'same pred':>9s} {'ours it/s':>10s} {'foundry it/s':>12s}")
    total = [0.0, 0.0, 0]
    for label, _, _, _, shots in TASKS:
        a, b = ours[label], theirs[label]
        n = len(b["items"])
        same_ids = sum(x["rows"] == y["rows"] for x, y in zip(a["items"], b["items"]))
        same_pred = sum(x["pred"] == y["pred"] for x, y in zip(a["items"], b["items"]))
        print(f"{label:16s} {shots:5d} {same_ids:4d}/{n:<4d} {same_pred:4d}/{n:<4d} {n / a['seconds']:10.1f} "
              f"{n / b['seconds']:12.1f}")
        total[0] += a["seconds"]
        total[1] += b["seconds"]
        total[2] += n
    print(f"{'all':16s} {'':5s} {'':9s} {'':9s} {total[2] / total[0]:10.1f} {total[2] / total[1]:12.1f}  "
          f"({total[1] / total[0]:.2f}x)")


if __name__ == "__main__":
    main()
