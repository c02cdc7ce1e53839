"""The parts of issue 12's guarantees that are small functions: field ranges, yaml strictness, relations found
before work, one-line errors across DataLoader workers, disk-error translation, outputs overlapping inputs,
extensionless inputs, generate's window, eval item validation."""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import pytest
import torch

from llmfoundry.config import load_config, load_typed
from llmfoundry.config.schema import TrainConfig
from llmfoundry.config.validate import check_field
from llmfoundry.errors import UserError


# ---- field ranges ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("rules", "value", "fragment"), [
    ({"ge": 0}, -1, "got -1, expected a number >= 0"),
    ({"gt": 0}, 0.0, "expected a number > 0"),
    ({"ge": 0, "lt": 1}, 1.0, ">= 0 and < 1"),
    ({"le": 3}, 4, "<= 3"),
    ({"ge": -1, "ne": 0, "hint": "use -1"}, 0, "not allowed; use -1"),
    ({"ge": 0}, math.nan, "got nan"),
    ({"each": True, "ge": 0, "lt": 1, "len": 2}, [0.9, 1.5], "item 1: got 1.5"),
    ({"each": True, "ge": 0, "lt": 1, "len": 2}, [0.9], "exactly 2"),
])
def test_check_field_refuses(rules, value, fragment):
    problem = check_field(rules, value)
    assert problem is not None and fragment in problem, problem


@pytest.mark.parametrize(("rules", "value"), [({"ge": 0}, 0), ({"gt": 0}, 1e-30), ({"ge": 1}, "auto"),
                                              ({"ge": 1}, None), ({"ge": 0}, True), ({}, -5), ({"other": 1}, -5)])
def test_check_field_takes(rules, value):
    assert check_field(rules, value) is None


# ---- yaml strictness --------------------------------------------------------------------------------------------
MINIMAL = """model: {name: mpt_causal_lm}
tokenizer: {name: /tok}
train_loader: {dataset: {local: /data}}
max_duration: 10ba
global_train_batch_size: 8
"""


def test_duplicate_keys_name_file_and_both_lines(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(MINIMAL + "optimizer:\n  lr: 1.0e-3\n  lr: 2.0e-3\n")
    with pytest.raises(UserError, match=r"a\.yaml: line 8: invalid YAML: key 'lr' is given twice \(lines 7 and 8\)"):
        load_config(path)


def test_duplicate_keys_on_one_line(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(MINIMAL + "optimizer: {lr: 1.0e-3, lr: 2.0e-3}\n")
    with pytest.raises(UserError, match=r"line 6: invalid YAML: key 'lr' is given twice \(lines 6 and 6\)"):
        load_config(path)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(MINIMAL + "defaults: &d {lr: 1.0e-3, eps: 1.0e-8}\noptimizer:\n  <<: *d\n  lr: 2.0e-3\n")
    assert load_config(path).data["optimizer"] == {"lr": 2.0e-3, "eps": 1.0e-8}


def test_empty_yaml_is_named_as_the_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    with pytest.raises(UserError) as info:
        load_typed(TrainConfig, path, ["max_duration=2ba"])
    assert info.value.problems == [f"{path}: is empty; expected a mapping of keys such as model:, train_loader:, "
                                   "max_duration:"]


def test_missing_required_keys_blame_the_file_not_the_command_line(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("model: {name: mpt_causal_lm}\n")
    with pytest.raises(UserError) as info:
        load_typed(TrainConfig, path, ["seed=3"])
    assert all(line.startswith(f"{path}: ") for line in info.value.problems), info.value.problems
    assert not any("a mapping or a mapping" in line for line in info.value.problems)


def test_broken_overrides_are_one_line_each(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text(MINIMAL)
    with pytest.raises(UserError) as info:
        load_config(path, ["optimizer.lr=[1,", "seed=5", "model.d_model={a: 1", "nokey"])
    starts = ["command line: 'optimizer.lr=[1,': the value is not valid YAML", "command line: 'model.d_model={a: 1': "
              "the value is not valid YAML", "command line: 'nokey': expected key=value"]
    assert len(info.value.problems) == 3
    assert all(line.startswith(start) for line, start in zip(info.value.problems, starts)), info.value.problems


def test_list_over_mapping_is_judged_like_any_value_with_every_other_problem(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(MINIMAL + "optimizer: {betas: [0.9, 0.95]}\n")
    over = tmp_path / "over.yaml"
    over.write_text("base: base.yaml\nmodel: [1, 2]\n")
    with pytest.raises(UserError) as info:
        load_typed(TrainConfig, over, ["optimizer.betas={a: 1}", "optimizer.lr=-1"])
    assert info.value.problems == [
        f"{over}: model: got [1, 2], expected a mapping with a 'name'",
        "command line: optimizer.lr: got -1.0, expected a number >= 0",
        "command line: optimizer.betas: got {'a': 1}, expected a list of float",
    ]


# ---- relations before work ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from llmfoundry.data.convert import convert_dataset
    from tests.conftest import toy_corpus

    root = tmp_path_factory.mktemp("rel")
    corpus, tok = toy_corpus(root)
    convert_dataset([str(corpus)], str(root / "data"), tokenizer=str(tok), max_seq_len=32, progress=False)
    cfg = root / "a.yaml"
    cfg.write_text(f"model: {{name: mpt_causal_lm, d_model: 32, n_heads: 2, n_layers: 1, max_seq_len: 64, "
                   f"vocab_size: 512}}\ntokenizer: {{name: {tok}}}\ntrain_loader: {{dataset: {{local: {root / 'data'}, "
                   f"split: train, max_seq_len: 32}}}}\nmax_duration: 2ba\nglobal_train_batch_size: 4\n"
                   f"save_folder: {root / 'run'}\n")
    return cfg


def _preflight(cfg_path, overrides, world=1):
    from llmfoundry.distributed import DistInfo
    from llmfoundry.train.preflight import preflight

    cfg, loaded = load_typed(TrainConfig, cfg_path, overrides)
    return preflight(cfg, DistInfo(0, world, 0, torch.device("cpu")), loaded.origin)


def test_a_valid_config_passes_preflight(setup):
    assert _preflight(setup, ["device_train_microbatch_size=2"]) == (2, 2)


@pytest.mark.parametrize(("overrides", "fragment"), [
    (["model.vocab_size=100"], "model.vocab_size: 100 is smaller than the 350 tokens of the tokenizer"),
    (["train_loader.dataset.max_seq_len=33"], "33 is longer than the 32-token samples of train_loader data"),
    (["max_seq_len=40"], "max_seq_len: 40 is longer than the 32-token samples"),
    (["train_loader.dataset.max_seq_len=30", "model.max_seq_len=16", "model.learned_pos_emb=true"],
     "30 is longer than model.max_seq_len=16"),
    (["model.d_model=4000000", "model.n_heads=1"], "per process for weights and gradients"),
])
def test_relations_are_refused_before_work(setup, overrides, fragment):
    with pytest.raises(UserError) as info:
        _preflight(setup, overrides)
    assert any(fragment in line for line in info.value.problems), info.value.problems
    assert all(line.startswith(("command line: ", f"{setup}: save_folder: ")) for line in info.value.problems)


def test_every_relation_problem_at_once(setup):
    with pytest.raises(UserError) as info:
        _preflight(setup, ["model.vocab_size=100", "train_loader.dataset.max_seq_len=33", "global_train_batch_size=3"],
                   world=2)
    assert len(info.value.problems) == 3, info.value.problems


def test_a_file_where_the_run_folder_should_be(setup, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a directory"):
        _preflight(setup, [f"save_folder={tmp_path / 'file' / 'run'}"])


def test_the_model_size_floor_is_below_the_real_count():
    """The memory check refuses by a lower bound, so it can never refuse a model that would fit."""
    from llmfoundry.config import build
    from llmfoundry.models import ModelConfig, build_model
    from llmfoundry.train.preflight import parameter_estimate

    for raw in ({"name": "mpt_causal_lm", "preset": "mpt-125m"}, {"name": "gpt2", "preset": "gpt2-small"},
                {"name": "mosaic_bert", "preset": "mosaicbert-base"},
                {"name": "mpt_causal_lm", "preset": "mpt-125m", "attn_config": {"attn_type": "multiquery_attention"},
                 "ffn_config": {"ffn_type": "mptglu"}}):
        args = build(ModelConfig, raw, key="model")
        real = build_model(args, device="meta").num_params()
        assert 0.8 * real < parameter_estimate(args) <= real, raw


# ---- one line across DataLoader workers ------------------------------------------------------------------------------
class _Failing(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        raise UserError("data/shard.mds: sample 3: holds token id 60000", "second: line")


def test_a_user_error_in_a_dataloader_worker_stays_one_line_per_problem():
    loader = torch.utils.data.DataLoader(_Failing(), num_workers=1)
    with pytest.raises(UserError) as info:
        next(iter(loader))
    assert info.value.problems == ["data/shard.mds: sample 3: holds token id 60000", "second: line"]


def test_a_bug_in_a_dataloader_worker_stays_loud():
    class Buggy(_Failing):
        def __getitem__(self, index):
            raise ZeroDivisionError("ours")

    with pytest.raises(ZeroDivisionError, match="Traceback"):
        next(iter(torch.utils.data.DataLoader(Buggy(), num_workers=1)))


# ---- disks, overlapping outputs -----------------------------------------------------------------------------------
def test_disk_errors_translate_only_disk_errors(tmp_path):
    from llmfoundry.io import disk_errors

    for code in (errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EDQUOT):
        with pytest.raises(UserError, match=rf"{tmp_path}: cannot write \(.*\); .* free on"):
            with disk_errors(tmp_path, need=2**20):
                raise OSError(code, "x")
    with pytest.raises(FileNotFoundError):  # not the disk: our bug, or a path problem shown as it is
        with disk_errors(tmp_path):
            raise FileNotFoundError(errno.ENOENT, "gone")
    with pytest.raises(ValueError):
        with disk_errors(tmp_path):
            raise ValueError("(os error 28)")
    with pytest.raises(UserError, match="the disk is full"):
        with disk_errors(tmp_path):
            raise Exception("Error while serializing: I/O error: No space left on device (os error 28)")


def test_write_atomic_leaves_the_old_file_on_failure(tmp_path, monkeypatch):
    from llmfoundry.io import write_atomic

    target = tmp_path / "config.yaml"
    target.write_text("old")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(UserError, match="config.yaml: cannot write \\(the disk is full\\)"):
        write_atomic(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


@pytest.mark.parametrize(("out", "inputs", "refused"), [
    ("a", ["a"], True), ("a", ["a/b.jsonl"], True), ("a/out", ["a"], True), ("a/out", ["a/*.jsonl"], False),
    ("b", ["a"], False), ("a2", ["a"], False), ("a", ["a2/x.txt"], False),
])
def test_check_disjoint(tmp_path, monkeypatch, out, inputs, refused):
    from llmfoundry.io import check_disjoint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    if refused:
        with pytest.raises(UserError, match="--out"):
            check_disjoint(out, inputs)
    else:
        check_disjoint(out, inputs)


# ---- inputs without an extension ----------------------------------------------------------------------------------
def test_an_explicit_format_takes_extensionless_files(tmp_path):
    from llmfoundry.data.sources import discover_inputs

    (tmp_path / "GPL-3").write_text("free software")
    (tmp_path / "NOTES").write_text("notes")
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    (tmp_path / "a.txt").write_text("a")
    assert [p.name for p in discover_inputs([str(tmp_path)], "text")] == ["GPL-3", "NOTES", "a.txt"]
    assert [p.name for p in discover_inputs([str(tmp_path)], "auto")] == ["a.txt", "t.parquet"]


@pytest.mark.skipif(not Path("/usr/share/common-licenses").is_dir(), reason="no /usr/share/common-licenses")
def test_tokenizer_trains_on_common_licenses(tmp_path):
    from llmfoundry.data.tokenizer import train_tokenizer

    result = train_tokenizer(["/usr/share/common-licenses"], tmp_path / "tok", vocab_size=400, input_format="text")
    assert result["documents"] >= 5 and (tmp_path / "tok" / "tokenizer.json").exists()


# ---- generate's window --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("prompt", "new", "window", "fragment"), [
    (0, 5, 32, "--prompt: is empty"), (32, 1, 32, "--prompt: is 32 tokens"), (40, 1, 32, "is 40 tokens"),
    (5, 28, 32, "use --max-new-tokens 27 or less"),
])
def test_generate_refuses_what_does_not_fit(prompt, new, window, fragment):
    from llmfoundry.export.generate import _check_window

    with pytest.raises(UserError, match=fragment):
        _check_window(prompt, new, window)


@pytest.mark.parametrize(("prompt", "new", "window"), [(5, 27, 32), (1, 1, 2), (100, 100, None)])
def test_generate_takes_what_fits(prompt, new, window):
    from llmfoundry.export.generate import _check_window

    _check_window(prompt, new, window)


# ---- eval items ---------------------------------------------------------------------------------------------------
GOOD = {"query": "q", "choices": ["a", "b"], "gold": 0}


@pytest.mark.parametrize(("line", "fragment"), [
    (json.dumps({**GOOD, "choices": []}).encode(), "'choices' is empty"),
    (json.dumps({**GOOD, "choices": ["a", 2]}).encode(), "'choices' must hold strings, got 2"),
    (json.dumps({**GOOD, "choices": ["a", None]}).encode(), "must hold strings, got None"),
    (json.dumps([1, 2]).encode(), "expected a JSON object per line, got a list"),
    (b'"just a string"', "got a str"),
    (b'{"query": "q\xff", "choices": ["a"], "gold": 0}', "invalid UTF-8"),
    (json.dumps({**GOOD, "gold": 2}).encode(), "gold=2 is out of range for 2 options"),
    (json.dumps({**GOOD, "gold": True}).encode(), "needs 'gold' (int)"),
    (b'{"query": ', "malformed JSON"),
])
def test_bad_eval_items_name_file_and_line(tmp_path, line, fragment):
    from llmfoundry.eval.tasks import ICLTaskConfig, load_items

    path = tmp_path / "t.jsonl"
    path.write_bytes((json.dumps(GOOD) + "\n\n").encode() + line + b"\n")
    cfg = ICLTaskConfig(label="t", dataset_uri=str(path), icl_task_type="multiple_choice")
    with pytest.raises(UserError) as info:
        load_items(cfg)
    assert info.value.problems[0].startswith(f"{path}:3: ") and fragment in info.value.problems[0], info.value.problems


def test_schema_options_are_checked_too(tmp_path):
    from llmfoundry.eval.tasks import ICLTaskConfig, load_items

    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"context_options": [], "continuation": "c", "gold": 0}) + "\n")
    with pytest.raises(UserError, match=r"s\.jsonl:1: 'context_options' is empty"):
        load_items(ICLTaskConfig(label="s", dataset_uri=str(path), icl_task_type="schema"))
