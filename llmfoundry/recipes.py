"""The shipped recipes by their short names: `foundry train mpt-7b` and `foundry train yamls/mpt-7b.yaml`.

Each recipe is one short yaml in `yamls/` that names the full recipe (`yamls/pretrain/`, `yamls/finetune/`)
as its base, so there is one definition of each recipe; its first comment line is its purpose, which
`foundry recipes` prints with the model size and sequence length read from the resolved config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmfoundry.errors import UserError

YAMLS = Path(__file__).resolve().parents[1] / "yamls"


@dataclass
class Recipe:
    name: str
    path: Path
    purpose: str


def recipes() -> list[Recipe]:
    """Every short recipe yaml in yamls/, in name order."""
    found = []
    for path in sorted(YAMLS.glob("*.yaml"), key=lambda p: p.stem):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        found.append(Recipe(path.stem, path, first.removeprefix("#").strip()))
    return found


def resolve_config(config: str | Path) -> Path:
    """A config path as given, else the recipe of that name (`mpt-7b`, `yamls/mpt-7b.yaml` from anywhere)."""
    path = Path(config)
    if path.exists():
        return path
    by_name = {r.name: r.path for r in recipes()}
    name = path.name.removesuffix(".yaml")
    if name in by_name and (path.parent in (Path("."), Path("yamls")) or path.suffix == ""):
        return by_name[name]
    raise UserError(f"{config}: no such config file or recipe (recipes: {', '.join(by_name)}; `foundry recipes` "
                    "describes them)")


def describe(recipe: Recipe) -> dict[str, object]:
    """Parameters (counted on the meta device) and sequence length of a recipe, from its resolved config."""
    from llmfoundry.config import load_config
    from llmfoundry.config.build import build
    from llmfoundry.models import ModelConfig, build_model

    data = load_config(recipe.path).data
    model = build_model(build(ModelConfig, data["model"], key="model"), device="meta")
    seq = data.get("max_seq_len") or data["train_loader"]["dataset"].get("max_seq_len")
    return {"name": recipe.name, "parameters": model.num_params(), "max_seq_len": seq, "purpose": recipe.purpose,
            "yaml": str(recipe.path.relative_to(YAMLS.parent))}
