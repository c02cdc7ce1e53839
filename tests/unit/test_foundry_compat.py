"""LLM Foundry-only training keys: mapped into our schema, or dropped with one note, never silently."""

from __future__ import annotations

import math

import pytest

from llmfoundry.config import build
from llmfoundry.config.foundry_compat import translate_train
from llmfoundry.config.schema import SchedulerConfig, TrainConfig
from llmfoundry.errors import UserError


def _raw(**extra):
    base = {"model": {"name": "mpt", "d_model": 32, "n_heads": 2, "n_layers": 1, "vocab_size": 64},
            "tokenizer": {"name": "tok"}, "train_loader": {"dataset": {"local": "data"}},
            "max_duration": "2ba", "global_train_batch_size": 2}
    return {**base, **extra}


def test_blank_run_name_comes_from_the_environment_or_the_config():
    out, notes = translate_train(_raw(run_name=None), env={"RUN_NAME": "my-run"})
    assert out["run_name"] == "my-run" and "$RUN_NAME" in notes[0]
    a, _ = translate_train(_raw(run_name=None), env={})
    b, _ = translate_train(_raw(run_name=None), env={})
    c, _ = translate_train(_raw(run_name=None, seed=3), env={})
    assert a["run_name"] == b["run_name"] != c["run_name"]  # same on every rank and rerun; differs per config
    assert a["run_name"].startswith("run-")
    assert translate_train(_raw(), env={})[0].get("run_name") is None  # absent: our default name stays
    assert build(TrainConfig, _raw()).run_name == "llmfoundry-run"


def test_save_folder_placeholders(monkeypatch):
    out, _ = translate_train(_raw(run_name="r", save_folder="./{run_name}/ckpt-{world_size}"),
                             env={"WORLD_SIZE": "4"})
    assert out["save_folder"] == "./r/ckpt-4"
    monkeypatch.setenv("RUN_NAME", "env-run")
    cfg = build(TrainConfig, _raw(run_name=None, save_folder="s/{run_name}"))
    assert (cfg.run_name, cfg.save_folder) == ("env-run", "s/env-run")
    with pytest.raises(UserError, match=r"\{rank\} would give each process its own run folder"):
        translate_train(_raw(run_name="r", save_folder="x/{rank}"), env={})
    with pytest.raises(UserError, match=r"unknown placeholder \{nope\}"):
        translate_train(_raw(run_name="r", save_folder="x/{nope}"), env={})


def test_fsdp1_keys_are_mapped_or_reported_on_one_line():
    fsdp = {"sharding_strategy": "HYBRID_SHARD", "limit_all_gathers": True, "activation_checkpointing_reentrant": False,
            "use_orig_params": True, "state_dict_type": "sharded", "sync_module_states": True, "verbose": False,
            "backward_prefetch": "BACKWARD_PRE", "forward_prefetch": True, "activation_cpu_offload": False,
            "cpu_offload": False}
    out, notes = translate_train(_raw(fsdp_config=fsdp), env={})
    fsdp_notes = [n for n in notes if n.startswith("fsdp_config")]
    assert len(fsdp_notes) == 1
    for key in ("limit_all_gathers", "activation_checkpointing_reentrant", "use_orig_params", "state_dict_type",
                "sync_module_states", "verbose"):
        assert key in fsdp_notes[0] and key not in out["fsdp_config"]
    cfg = build(TrainConfig, _raw(fsdp_config=fsdp))
    assert cfg.fsdp_config.sharding_strategy == "HYBRID_SHARD" and cfg.fsdp_config.forward_prefetch
    assert cfg.fsdp_config.backward_prefetch == "BACKWARD_PRE"


def test_unknown_keys_elsewhere_stay_errors():
    with pytest.raises(UserError, match="fsdp_config.limit_all_gather: unknown key"):
        build(TrainConfig, _raw(fsdp_config={"limit_all_gather": True}))
    with pytest.raises(UserError, match="icl_max_seq: unknown key"):
        build(TrainConfig, _raw(icl_max_seq=3))


def test_variable_like_top_level_keys_of_the_shipped_yamls_are_dropped():
    out, notes = translate_train(_raw(dataset={"hf_name": "json"}, icl_max_seq_len=2048), env={})
    assert "dataset" not in out and "icl_max_seq_len" not in out
    assert any("LLM Foundry reads these as variables" in n for n in notes)


@pytest.mark.parametrize("raw,match", [
    ({"model": {"name": "hf_t5"}}, "hf_t5: encoder-decoder models are not supported"),
    ({"model": {"name": "mpt_causal_lm", "ffn_config": {"ffn_type": "mb_dmoe"}}}, "mixture-of-experts"),
    ({"tp_config": {"tensor_parallel_degree": 2}}, "tensor parallelism is not supported"),
])
def test_out_of_scope_features_are_refused_by_name(raw, match):
    with pytest.raises(UserError, match=match):
        translate_train({**_raw(), **raw}, env={})


def test_kill_loss_spike_maps_to_spike_guard():
    out, notes = translate_train(_raw(callbacks={"kill_loss_spike": {"log_only": False, "window_size": 50,
                                                                     "outlier_multiplier": 3, "patience": 2}}), env={})
    assert out["spike_guard"] == {"window": 50, "factor": 3, "action": "stop"}
    assert "kill_loss_spike" not in out["callbacks"] and "patience" in notes[0]
    out, notes = translate_train(_raw(callbacks={"kill_loss_spike": {}}), env={})
    assert "spike_guard" not in out and "log_only" in notes[0]


def test_eval_loader_list_needs_distinct_labels():
    loader = {"dataset": {"local": "d"}}
    cfg = build(TrainConfig, _raw(eval_loader=[{**loader, "label": "a"}, {**loader, "label": "b"}]))
    assert [x.label for x in cfg.eval_loaders] == ["a", "b"] and cfg.eval_loaders[0].name == "text"
    with pytest.raises(UserError, match="distinct label"):
        build(TrainConfig, _raw(eval_loader=[loader, loader]))


def _foundry_inv_sqrt(t, warmup, scale, cooldown, t_max, alpha_d, alpha_c):
    """LLM Foundry's InverseSquareRootWithWarmupScheduler after warmup, from its docstring's formula."""
    cool_start = max(t_max - cooldown, warmup)
    if t < cool_start:
        return alpha_d + (1 - alpha_d) / math.sqrt((t - warmup + scale) / scale)
    alpha_i = alpha_d + (1 - alpha_d) / math.sqrt((cool_start - warmup + scale) / scale)
    return alpha_i + min(1.0, (t - cool_start) / cooldown) * (alpha_c - alpha_i)


def test_inv_sqrt_with_warmup_follows_foundrys_formula():
    from llmfoundry.train.schedule import lr_multiplier

    cfg = build(SchedulerConfig, {"name": "inv_sqrt_with_warmup", "t_warmup": "10ba", "t_scale": "20ba",
                                  "t_cooldown": "30ba", "alpha_f_decay": 0.1, "alpha_f_cooldown": 0.0})
    f = lr_multiplier(cfg, 200, lambda d: int(d.value * 200) if d.unit == "dur" else int(d.value))
    assert f(9) == 1.0 and f(10) == 1.0  # end of warmup, start of decay
    assert f(10 + 3 * 20) == pytest.approx(0.1 + 0.9 / 2)  # tau_d = 4: half-way down to alpha_f_decay
    assert f(199) == pytest.approx(_foundry_inv_sqrt(199, 10, 20, 30, 200, 0.1, 0.0))
    for t in range(10, 200, 7):
        assert f(t) == pytest.approx(_foundry_inv_sqrt(t, 10, 20, 30, 200, 0.1, 0.0), abs=1e-12)
    assert f(200) == pytest.approx(0.0)
    with pytest.raises(UserError, match="t_scale"):
        build(SchedulerConfig, {"name": "inv_sqrt_with_warmup"})
