"""LLM Foundry training yamls as their users wrote them: the keys only Foundry has, mapped into our schema.

schema.py stays the single source of truth for our keys; this module only rewrites a Foundry-shaped raw
mapping before validation, and says what it did, one note line per kind of change:
- blank `run_name`: `$RUN_NAME`, else a name generated from the config (identical on every rank, and again
  on a rerun of the same config, so autoresume finds the run);
- Composer's placeholders in `save_folder` (`{run_name}`, `{world_size}`, `{local_world_size}`,
  `{node_rank}`); per-rank ones are refused (one run folder serves all ranks);
- FSDP1 keys without an FSDP2 meaning (`limit_all_gathers`, `use_orig_params`, ...) dropped, all on one line;
  those with one (CPU offload, prefetch, HYBRID_SHARD's degrees) are schema fields of `fsdp_config`;
- `callbacks.kill_loss_spike` -> `spike_guard` (stop on a spike; Foundry's default log_only is not enabled);
- top-level keys Foundry reads as variables in its shipped files (`dataset:` holding yaml anchors,
  `icl_max_seq_len`) dropped.
Everything else unknown stays an error, as for our own yamls.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from typing import Any

from llmfoundry.errors import UserError

# FSDP1 / Composer fsdp_config keys that configure nothing in FSDP2, with why.
FSDP_IGNORED = {
    "limit_all_gathers": "FSDP2 bounds in-flight all-gathers itself",
    "use_orig_params": "FSDP2 always keeps the original parameters",
    "sync_module_states": "every rank initializes identically from the seed",
    "verbose": "",
    "state_dict_type": "checkpoints are always sharded DCP; `foundry inference-convert` gives the full model",
    "activation_checkpointing_reentrant": "activation checkpointing is non-reentrant (same gradients)",
    "load_monolith_rank0_only": "every rank reads the checkpoint",
    "auto_wrap": "every block is sharded, then the root",
    "sharded_ckpt_prefix_dir": "",
}

# Top-level keys of Foundry's shipped yamls that Foundry itself treats as variables (it warns and ignores them).
FOUNDRY_VARIABLES = {
    "dataset": "a holder of yaml anchors",
    "icl_max_seq_len": "ICL length is icl_seq_len",
}

RUN_PLACEHOLDERS = ("run_name", "world_size", "local_world_size", "node_rank")
RANK_PLACEHOLDERS = ("rank", "local_rank")


def translate_train(raw: dict[str, Any], env: Mapping[str, str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """`raw` with LLM Foundry-only keys mapped or dropped, and one note per kind of change."""
    env = os.environ if env is None else env
    out = dict(raw)
    notes: list[str] = []
    _run_name(out, raw, env, notes)
    _save_folder(out, env)
    _fsdp(out, notes)
    _kill_loss_spike(out, notes)
    model = out.get("model")
    _out_of_scope(out)
    if isinstance(model, dict) and model.get("use_auth_token"):
        notes.append("model.use_auth_token: no-op, nothing is downloaded (models are local directories)")
    dropped = [k for k in FOUNDRY_VARIABLES if k in out]
    for key in dropped:
        del out[key]
    if dropped:
        notes.append("ignored top-level " + ", ".join(f"{k} ({FOUNDRY_VARIABLES[k]})" for k in dropped) +
                     ": LLM Foundry reads these as variables")
    return out, notes


def _out_of_scope(raw: dict[str, Any]) -> None:
    """LLM Foundry features we do not have, refused by name rather than as a pile of unknown keys."""
    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    ffn = model.get("ffn_config") if isinstance(model.get("ffn_config"), dict) else {}
    if model.get("name") == "hf_t5":
        raise UserError("model.name: hf_t5: encoder-decoder models are not supported (decoder-only causal LMs "
                        "and encoders are; see README's migration table)")
    if str(ffn.get("ffn_type", "")).endswith(("moe", "dmoe")):
        raise UserError(f"model.ffn_config.ffn_type: {ffn['ffn_type']}: mixture-of-experts layers are not "
                        "supported (see README's migration table)")
    if raw.get("tp_config") is not None:
        raise UserError("tp_config: tensor parallelism is not supported; FSDP2 sharding (fsdp_config) is")


def _run_name(out: dict[str, Any], raw: dict[str, Any], env: Mapping[str, str], notes: list[str]) -> None:
    if "run_name" not in out or out["run_name"] not in (None, ""):
        return  # absent: our default name; set: kept
    if env.get("RUN_NAME"):
        out["run_name"] = env["RUN_NAME"]
        notes.append(f"run_name: blank; using $RUN_NAME ({out['run_name']})")
        return
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:8]
    out["run_name"] = f"run-{digest}"
    notes.append(f"run_name: blank and $RUN_NAME unset; named the run {out['run_name']} (from the config: "
                 "the same config gets the same name)")


def _save_folder(out: dict[str, Any], env: Mapping[str, str]) -> None:
    folder = out.get("save_folder")
    if not isinstance(folder, str) or "{" not in folder:
        return
    for name in RANK_PLACEHOLDERS:
        if "{" + name + "}" in folder:
            raise UserError(f"save_folder: {{{name}}} would give each process its own run folder; one folder "
                            "holds every rank's shards here (use {run_name})")
    world = int(env.get("WORLD_SIZE", "1"))
    local = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    values = {"run_name": out["run_name"], "world_size": world, "local_world_size": local,
              "node_rank": int(env.get("GROUP_RANK", "0"))}
    unknown = [m for m in re.findall(r"\{(\w*)\}", folder) if m not in values]
    if unknown:
        raise UserError(f"save_folder: unknown placeholder {{{unknown[0]}}}; expected one of "
                        + ", ".join("{" + p + "}" for p in RUN_PLACEHOLDERS))
    out["save_folder"] = folder.format(**values)


def _kill_loss_spike(out: dict[str, Any], notes: list[str]) -> None:
    """LLM Foundry's kill_loss_spike callback -> our `spike_guard` (window, factor, action)."""
    callbacks = out.get("callbacks")
    if not isinstance(callbacks, dict) or "kill_loss_spike" not in callbacks:
        return
    callbacks = dict(callbacks)
    spike = callbacks.pop("kill_loss_spike") or {}
    out["callbacks"] = callbacks
    if spike.get("log_only", True):
        notes.append("callbacks.kill_loss_spike: log_only (its default) only warns in LLM Foundry; not enabled "
                     "(set log_only: false to stop on a spike, via spike_guard)")
        return
    out["spike_guard"] = {"window": spike.get("window_size", 100), "factor": spike.get("outlier_multiplier", 2),
                          "action": "stop"}
    lost = [k for k in ("patience", "loss_cap") if k in spike]
    notes.append(f"callbacks.kill_loss_spike -> spike_guard {out['spike_guard']}" +
                 (f" ({', '.join(lost)}: no equivalent; the first spike stops the run)" if lost else ""))


def _fsdp(out: dict[str, Any], notes: list[str]) -> None:
    fsdp = out.get("fsdp_config")
    if not isinstance(fsdp, dict):
        return
    ignored = [k for k in FSDP_IGNORED if k in fsdp]
    if not ignored:
        return
    out["fsdp_config"] = {k: v for k, v in fsdp.items() if k not in FSDP_IGNORED}
    parts = [f"{k} ({FSDP_IGNORED[k]})" if FSDP_IGNORED[k] else k for k in ignored]
    notes.append("fsdp_config: ignored, no FSDP2 meaning: " + "; ".join(parts))
