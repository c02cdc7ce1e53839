"""Recipes by their short names: one definition each, reachable as `yamls/NAME.yaml` or `NAME` from anywhere."""

from __future__ import annotations

import pytest

from llmfoundry.config import load_config
from llmfoundry.errors import UserError
from llmfoundry.recipes import YAMLS, recipes, resolve_config
from tests.conftest import REPO, run_cli

FLAGSHIPS = ["mpt-125m", "mpt-350m", "mpt-760m", "mpt-1b", "mpt-3b", "mpt-7b", "mpt-30b", "gpt2-small",
             "biomedlm-2.7b", "mosaicbert-base"]


def test_every_short_recipe_is_its_full_recipe_and_nothing_else():
    names = [r.name for r in recipes()]
    assert set(FLAGSHIPS) <= set(names)
    for recipe in recipes():
        lines = [line for line in recipe.path.read_text().splitlines() if not line.startswith("#")]
        assert len(lines) == 1 and lines[0].startswith("base: "), recipe.name  # one definition: the base
        full = YAMLS / lines[0].removeprefix("base: ")
        assert load_config(recipe.path).data == load_config(full).data, recipe.name
        assert recipe.purpose and not recipe.purpose.startswith("#")


def test_names_and_short_paths_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config("mpt-7b") == YAMLS / "mpt-7b.yaml"
    assert resolve_config("yamls/mpt-7b.yaml") == YAMLS / "mpt-7b.yaml"
    (tmp_path / "mpt-7b.yaml").write_text("max_duration: 1ba\n")  # a user's own file wins over the recipe
    assert resolve_config("mpt-7b.yaml").resolve() == tmp_path / "mpt-7b.yaml"
    with pytest.raises(UserError, match=r"mpt-8b: no such config file or recipe \(recipes: bert-base, "):
        resolve_config("mpt-8b")
    with pytest.raises(UserError, match="no such config file or recipe"):
        resolve_config("elsewhere/mpt-7b.yaml")


def test_cli_train_by_name_prints_the_recipe_and_recipes_lists_them(tmp_path):
    by_name = run_cli("train", "mpt-7b", "--print-config", cwd=tmp_path)
    full = run_cli("train", str(REPO / "yamls" / "pretrain" / "mpt-7b.yaml"), "--print-config", cwd=tmp_path)
    assert by_name.returncode == 0 and by_name.stdout == full.stdout, by_name.stderr
    listing = run_cli("recipes")
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()}
    assert set(FLAGSHIPS) <= set(rows)
    assert "6.65B" in rows["mpt-7b"] and "seq  2048" in rows["mpt-7b"] and "124.5M" in rows["gpt2-small"]
