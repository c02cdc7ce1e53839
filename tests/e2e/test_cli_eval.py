"""foundry eval end to end on a saved transformers model, and ICL evaluation inside foundry train."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import REPO, run_cli


@pytest.fixture(scope="module")
def tiny_hf_model(tmp_path_factory, gpt2_tokenizer_dir):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    out = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_head=2, n_layer=2, n_positions=512, vocab_size=50257)).save_pretrained(out)
    AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir)).save_pretrained(out)
    return out


def test_cli_eval_writes_tables(tmp_path, tiny_hf_model, icl_dir):
    for name in ("copa", "winogrande"):
        lines = (icl_dir / f"{name}.jsonl").read_text().splitlines()[:16]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    config = tmp_path / "eval.yaml"
    config.write_text(f"""
models:
- model_name: tiny
  model: {{name: hf_causal_lm, pretrained_model_name_or_path: {tiny_hf_model}}}
icl_tasks:
- {{label: copa, dataset_uri: {tmp_path}/copa.jsonl, icl_task_type: multiple_choice, num_fewshot: [0, 1]}}
- {{label: winogrande, dataset_uri: {tmp_path}/winogrande.jsonl, icl_task_type: schema}}
eval_gauntlet:
  categories:
  - {{name: reasoning, benchmarks: [{{name: copa, num_fewshot: 0, random_baseline: 0.5}}]}}
device_eval_batch_size: 8
save_folder: {tmp_path}/out
""")
    result = run_cli("eval", str(config))
    assert result.returncode == 0, result.stderr
    assert "| copa/0-shot/acc |" in result.stdout and "gauntlet/reasoning" in result.stdout
    results = json.loads((tmp_path / "out" / "results.json").read_text())["tiny"]
    assert {"copa/0-shot/acc", "copa/1-shot/acc_norm", "winogrande/0-shot/acc", "gauntlet/average"} <= set(results)
    csv_rows = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert csv_rows[0] == "model,task,num_fewshot,metric,value" and len(csv_rows) == len(results) + 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("multiple_choice", "multiple_choise"))
    result = run_cli("eval", str(bad))
    assert result.returncode == 1 and "did you mean 'multiple_choice'" in result.stderr


@pytest.mark.slow
def test_two_process_eval_equals_one(tmp_path, tiny_hf_model, icl_dir):
    import os
    import subprocess
    import sys

    lines = (icl_dir / "piqa.jsonl").read_text().splitlines()[:10]
    (tmp_path / "piqa.jsonl").write_text("\n".join(lines) + "\n")
    config = tmp_path / "eval.yaml"
    config.write_text(f"""
models:
- model_name: tiny
  model: {{name: hf_causal_lm, pretrained_model_name_or_path: {tiny_hf_model}}}
icl_tasks:
- {{label: piqa, dataset_uri: {tmp_path}/piqa.jsonl, icl_task_type: multiple_choice, continuation_delimiter: "Answer: "}}
device_eval_batch_size: 4
""")
    one = run_cli("eval", str(config), f"save_folder={tmp_path}/one")
    assert one.returncode == 0, one.stderr
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29544",
                          "-m", "llmfoundry.cli", "eval", str(config), f"save_folder={tmp_path}/two"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    r1 = json.loads((tmp_path / "one" / "results.json").read_text())
    r2 = json.loads((tmp_path / "two" / "results.json").read_text())
    assert r1 == r2
