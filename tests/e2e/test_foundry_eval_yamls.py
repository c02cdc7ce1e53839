"""LLM Foundry's own eval yamls (../shared/foundry-v0.21/eval) through mechanical path edits: every file's
`--print-config`, the out-of-scope ones refused in one line, and real evaluations of a sample (issue 11)."""

from __future__ import annotations

import json

import pytest

from tests.foundry_eval_yamls import COMPLETE, FOUNDRY, NEEDS_CUDA, OUT_OF_SCOPE, edit_all, foundry, tiny_models, wrapper

pytestmark = pytest.mark.foundry_files


@pytest.fixture(scope="module")
def edited(tmp_path_factory, shared_dir):
    root = tmp_path_factory.mktemp("foundry-eval")
    model_dir, lora_dir = tiny_models(root)
    return root, model_dir, edit_all(root, model_dir, lora_dir)


def test_every_eval_yaml_prints_its_config_or_says_why_not(edited):
    """In process (one CLI --print-config run is in the next test): validation of every file, or one line why not."""
    from llmfoundry.errors import UserError
    from llmfoundry.eval.run import prepare

    root, model_dir, dropped = edited
    task_files = sorted(p.name for p in (FOUNDRY / "eval").glob("*tasks*.yaml")) + ["copa.yaml"]
    assert set(dropped) <= set(task_files)
    for name in COMPLETE + task_files:
        path = root / name if name in COMPLETE else wrapper(root, name, model_dir)
        if name in OUT_OF_SCOPE:
            with pytest.raises(UserError) as err:
                prepare(path)
            problems = err.value.problems  # one line per offending key: API model, MoE, or each hf:// task
            assert problems and all("not supported" in p or "nothing is downloaded" in p for p in problems), problems
        else:
            _, loaded, tasks, _, _ = prepare(path)
            assert tasks and "icl_tasks" in loaded.to_yaml()


def test_test_eval_yaml_runs_and_8bit_says_why_not(edited, tmp_path):
    root, _, _ = edited
    printed = foundry("eval", str(root / "test_eval.yaml"), "--print-config")
    assert printed.returncode == 0 and "icl_subset_num_batches: 1" in printed.stdout, printed.stderr[-2000:]
    result = foundry("eval", str(root / "test_eval.yaml"), f"save_folder={tmp_path}/out")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "results.json").read_text())["tiny_mpt"]
    assert "lambada_openai/0-shot/acc" in metrics and "gauntlet/language_understanding_lite" in metrics
    assert "| Category | Benchmark | Subtask | Accuracy | Number few shot | Model |" in result.stdout
    assert "fresh initialization" in result.stderr and f"results: {tmp_path}/out/results.json" in result.stderr
    result = foundry("eval", str(root / "hf_8bit_eval.yaml"))
    assert result.returncode == 1 and "load_in_8bit: needs a CUDA GPU" in result.stderr, result.stderr[-2000:]
    assert "hf_8bit_eval.yaml" in NEEDS_CUDA


def test_lora_yaml_runs_with_its_adapters_applied(edited, tmp_path):
    import torch

    from llmfoundry.eval.models import HFEvalModel, _load_hf

    root, model_dir, _ = edited
    result = foundry("eval", str(root / "hf_lora_eval.yml"), f"icl_tasks={root / 'copa.yaml'}", "eval_gauntlet=null",
                     "--limit", "4", f"save_folder={tmp_path}/a")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "copa/0-shot/acc_norm_token" in next(iter(json.loads((tmp_path / "a" / "results.json").read_text()).values()))
    ids = torch.tensor([[464, 2068, 7586, 21831]])
    base = _load_hf(HFEvalModel(pretrained_model_name_or_path=str(model_dir)), torch.device("cpu"), [], "m")
    lora = _load_hf(HFEvalModel(pretrained_model_name_or_path=str(model_dir),
                                pretrained_lora_id_or_path=str(model_dir.parent / "tiny-gpt2-lora")),
                    torch.device("cpu"), [], "m")
    assert not torch.allclose(base(ids).logits, lora(ids).logits, atol=1e-4)  # the adapters changed the model


@pytest.mark.slow
def test_tasks_v03_and_gauntlet_v03_end_to_end(edited, tmp_path):
    """Every task of Foundry's tasks_v0.3.yaml produces a number, and the gauntlet its averages."""
    root, model_dir, dropped = edited
    config = wrapper(root, "tasks_v0.3.yaml", model_dir, gauntlet="eval_gauntlet_v0.3.yaml")
    result = foundry("eval", str(config), "icl_subset_num_batches=1", "device_eval_batch_size=2", "max_seq_len=2048",
                     f"save_folder={tmp_path}/out")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "results.json").read_text())["tiny"]
    import yaml

    tasks = yaml.safe_load((root / "tasks_v0.3.yaml").read_text())["icl_tasks"]
    for task in tasks:
        for shots in task["num_fewshot"]:
            assert any(k.startswith(f"{task['label']}/{shots}-shot/") and k.split("/")[-1] != "skipped"
                       for k in metrics), task["label"]
    assert "gauntlet/average" in metrics and len(tasks) + len(dropped["tasks_v0.3.yaml"]) == 32
