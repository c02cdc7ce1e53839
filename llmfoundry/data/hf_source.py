"""Finetuning examples from `hf_name`, read with the `datasets` library as LLM Foundry reads them, offline.

`hf_name` is one of:
- a directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (read with `load_from_disk`);
- a `datasets` builder name (`json`, `parquet`, `csv`, `text`, `arrow`) with `hf_kwargs.data_files` or
  `hf_kwargs.data_dir`, as in Foundry's `1b_local_data_sft.yaml`;
- a local dataset directory (`train.jsonl`, `test.parquet`, ...: `datasets` infers the builder and splits).
Hub names are never downloaded (HF_DATASETS_OFFLINE is set); a name that is none of the above says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmfoundry.errors import UserError

BUILDERS = ("json", "parquet", "csv", "text", "arrow")


def check_hf_name(name: str, where: str) -> None:
    """Fail before any work when `hf_name` cannot be read offline."""
    if name in BUILDERS or Path(name).is_dir():
        return
    raise UserError(f"{where}: {name}: not a local dataset directory nor a datasets builder "
                    f"({', '.join(BUILDERS)} with hf_kwargs.data_files); hub datasets are not downloaded")


def load_hf_split(name: str, split: str, kwargs: dict[str, Any], where: str) -> Any:
    """The `split` of `name` as a `datasets.Dataset`."""
    check_hf_name(name, where)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    path = Path(name)
    try:
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise UserError(f"{where}.split: {split!r} is not in {name} (it has {', '.join(loaded)})")
                return loaded[split]
            return loaded
        return datasets.load_dataset(name, split=split, **kwargs)
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as err:
        raise UserError(f"{where}: {name}: {str(err).splitlines()[0]}") from None
    except ValueError as err:  # an unknown split, or data_files matching nothing
        raise UserError(f"{where}: {name} (split {split!r}): {str(err).splitlines()[0]}") from None


def hf_rows(name: str, split: str, kwargs: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, row) for every row of the split, in order."""
    dataset = load_hf_split(name, split, kwargs, where)
    for i, row in enumerate(dataset):
        yield f"{name} [{split}] row {i}", row
