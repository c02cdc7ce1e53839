"""Layered yaml loading, interpolation, overrides and strict typed validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmfoundry.config import Duration, load_config, load_typed
from llmfoundry.config.duration import DurationError
from llmfoundry.config.schema import TrainConfig
from llmfoundry.errors import UserError

MINIMAL = """
variables:
  seq: 128
  data: /data/shards
model:
  name: mpt_causal_lm
tokenizer:
  name: /tok
train_loader:
  dataset:
    local: ${variables.data}
    max_seq_len: ${variables.seq}
max_duration: 10ba
global_train_batch_size: 8
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("100ba", Duration(100, "ba")),
        ("2ep", Duration(2, "ep")),
        ("5_000_000tok", Duration(5_000_000, "tok")),
        ("1000sp", Duration(1000, "sp")),
        ("0.25dur", Duration(0.25, "dur")),
        (3, Duration(3, "ep")),
        ("1e3tok", Duration(1000, "tok")),
    ],
)
def test_duration_parses(raw, expected):
    assert Duration.parse(raw) == expected


@pytest.mark.parametrize("raw", ["100", "ba", "10 batches", "1.5ba", "2dur", "-1ba", True, 1.5])
def test_duration_rejects(raw):
    with pytest.raises(DurationError):
        Duration.parse(raw)


def test_minimal_config_validates(tmp_path):
    cfg, loaded = load_typed(TrainConfig, write(tmp_path / "a.yaml", MINIMAL))
    assert cfg.train_loader.dataset.local == "/data/shards"
    assert cfg.train_loader.dataset.max_seq_len == 128
    assert cfg.max_duration == Duration(10, "ba")
    assert cfg.save_folder == "runs/llmfoundry-run"
    assert "variables" not in loaded.data


def test_base_files_layer_and_overrides_win(tmp_path):
    write(tmp_path / "base" / "common.yaml", MINIMAL + "seed: 1\nrun_name: base\n")
    child = write(tmp_path / "exp" / "child.yaml", "base: ../base/common.yaml\nseed: 2\nvariables:\n  seq: 256\n")
    cfg, loaded = load_typed(TrainConfig, child, ["seed=3", "optimizer.lr=0.1"])
    assert cfg.seed == 3
    assert cfg.run_name == "base"
    assert cfg.optimizer.lr == 0.1
    assert cfg.train_loader.dataset.max_seq_len == 256  # variables override in the child, resolved late
    assert loaded.origin("seed") == "command line"
    assert loaded.origin("run_name").endswith("common.yaml")


def test_env_interpolation(tmp_path, monkeypatch):
    monkeypatch.setenv("RUN_NAME_FOR_TEST", "from-env")
    path = write(tmp_path / "a.yaml", MINIMAL + "run_name: ${oc.env:RUN_NAME_FOR_TEST}\n")
    cfg, _ = load_typed(TrainConfig, path)
    assert cfg.run_name == "from-env"


def test_unknown_keys_reported_all_at_once_with_suggestion(tmp_path):
    text = MINIMAL + "max_durration: 5ba\noptimizer:\n  learning_rate: 1.0\n"
    text = text.replace("    max_seq_len:", "    max_seq_lenn: 1\n    max_seq_len:")
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(UserError) as info:
        load_typed(TrainConfig, path)
    problems = info.value.problems
    assert any("max_durration: unknown key (did you mean 'max_duration'?)" in p for p in problems)
    assert any("train_loader.dataset.max_seq_lenn: unknown key (did you mean 'max_seq_len'?)" in p for p in problems)
    assert any("optimizer.learning_rate: unknown key" in p for p in problems)
    assert all(p.startswith(str(path)) for p in problems)


def test_wrong_type_and_missing_key(tmp_path):
    text = MINIMAL.replace("global_train_batch_size: 8", "global_train_batch_size: eight").replace(
        "tokenizer:\n  name: /tok\n", ""
    )
    with pytest.raises(UserError) as info:
        load_typed(TrainConfig, write(tmp_path / "a.yaml", text))
    problems = "\n".join(info.value.problems)
    assert "global_train_batch_size: got 'eight', expected an integer" in problems
    assert "tokenizer: is required" in problems


def test_bad_time_string_names_key(tmp_path):
    with pytest.raises(UserError) as info:
        load_typed(TrainConfig, write(tmp_path / "a.yaml", MINIMAL), ["max_duration=10 batches"])
    assert info.value.problems[0].startswith("command line: max_duration: expected a time string")


def test_literal_suggestion(tmp_path):
    with pytest.raises(UserError, match="did you mean 'amp_bf16'"):
        load_typed(TrainConfig, write(tmp_path / "a.yaml", MINIMAL), ["precision=amp_bf61"])


def test_cross_field_check_names_key(tmp_path):
    with pytest.raises(UserError, match=r"global_train_batch_size: must be positive"):
        load_typed(TrainConfig, write(tmp_path / "a.yaml", MINIMAL), ["global_train_batch_size=0"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [1, 2", "invalid YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("base: missing.yaml\n", r"a.yaml: base: .*missing.yaml: no such config file \(a base path is relative"),
        ("x: ${nope.missing}\n", "cannot resolve"),
    ],
)
def test_bad_yaml_files(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        load_config(write(tmp_path / "a.yaml", text))


def test_base_cycle(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(UserError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_malformed_override(tmp_path):
    with pytest.raises(UserError, match="expected key=value"):
        load_config(write(tmp_path / "a.yaml", MINIMAL), ["seed"])


def test_a_config_of_the_other_verb_is_one_line_naming_it(tmp_path):
    from llmfoundry.eval.run import EvalConfig

    train = write(tmp_path / "train.yaml", MINIMAL)
    with pytest.raises(UserError) as caught:
        load_typed(EvalConfig, train)
    assert caught.value.problems == [f"{train}: this is a training config (train_loader, max_duration), not an "
                                     f"evaluation one; run it with `foundry train {train}`"]
    evaluation = write(tmp_path / "eval.yaml", "models: []\nicl_tasks: []\n")
    with pytest.raises(UserError, match=r"this is an evaluation config \(models, icl_tasks\), not a training one; "
                                        r"run it with `foundry eval"):
        load_typed(TrainConfig, evaluation)
