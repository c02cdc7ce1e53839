"""LLM Foundry's script entry points (`python scripts/train/train.py ...`) as `foundry` verbs.

Foundry's users call its scripts from pipelines and notebooks, with Foundry's flags. Each of our scripts under
scripts/ parses those flags (argparse: Foundry v0.21's names and defaults) and this module turns them into the
argv of one `foundry` verb, run in-process through the same typer app as the `foundry` command: one
implementation, no second code path. A flag we cannot honour exactly is one line naming it and what to use
instead (exit 1), never a silently different output. What a script writes is laid out as Foundry lays it out:
convert_dataset_json and convert_text_to_mds write MDS straight into the output folder, convert_dataset_hf
one folder per split.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path

from llmfoundry.errors import UserError

# convert_dataset_hf's split names: Foundry's folder name -> (the dataset's split, Foundry's cap on samples).
HF_SPLITS: dict[str, tuple[str, int | None]] = {
    "train": ("train", None),
    "train_small": ("train", 100_000),
    "val": ("validation", None),
    "val_small": ("validation", 10_000),
    "val_xsmall": ("validation", 3_000),
    "val_xxsmall": ("validation", 100),
}
DONE_FILE = ".text_to_mds_conversion_done"  # Foundry's marker that lets convert_text_to_mds skip a finished job


def run(make_argv: Callable[[], list[list[str]]], after: Callable[[list[str]], None] | None = None) -> int:
    """Run the `foundry` commands `make_argv` returns, in order; the exit code as the `foundry` command gives it.

    `make_argv` raises UserError for a flag we cannot honour; like every verb's user error it is one line on
    stderr and exit 1. `after(argv)` runs as soon as each command succeeded (e.g. to lay its output out as
    Foundry does), so a later failure leaves the earlier outputs finished.
    """
    from typer import Exit

    from llmfoundry.cli import run_user_code

    try:
        for argv in run_user_code(make_argv):
            if os.environ.get("RANK", "0") == "0":  # once, not once per process under a launcher
                print(f"foundry {shlex.join(argv)}", file=sys.stderr, flush=True)
            code = _foundry(argv)
            if code:
                return code
            if after is not None:
                run_user_code(lambda: after(argv))
    except Exit as err:  # raised by run_user_code once it has printed the error's one line
        return err.exit_code
    return 0


def _foundry(argv: list[str]) -> int:
    """`foundry ARGV` in this process: click's own exit codes (0, 1 for user errors, 2 for usage errors)."""
    import typer

    from llmfoundry.cli import app

    try:
        typer.main.get_command(app).main(args=argv, prog_name="foundry")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


def yaml_and_overrides(verb: str, args: list[str]) -> list[list[str]]:
    """train.py / eval.py: `YAML [key=value ...]`, as Foundry's `train_from_yaml(sys.argv[1], sys.argv[2:])`."""
    return [[verb, *args]]


# ---- data_prep -------------------------------------------------------------------------------------------

def separator_flags(tokenizer: str, bos_text: str | None, eos_text: str | None) -> list[str]:
    """Our flags for Foundry's `--bos_text/--eos_text`, or a UserError when no flag of ours writes the same tokens.

    Foundry packs `bos_ids + tokenizer(doc) + eos_ids`, the separators being `tokenizer(text,
    add_special_tokens=False)`; we pack `[bos] + doc + [eos]` with the tokenizer's own tokens. The two agree when
    eos_text is the eos token, bos_text is empty or a distinct bos token, and the tokenizer adds nothing itself.
    """
    from llmfoundry.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    if tok("")["input_ids"]:
        raise UserError(f"--tokenizer {tokenizer}: adds special tokens to every document, which LLM Foundry keeps "
                        "and foundry convert-dataset does not; use a tokenizer without them")
    if tok.eos_token_id is None:
        return []  # the verb says the tokenizer needs an eos token
    if tok(eos_text or "", add_special_tokens=False)["input_ids"] != [tok.eos_token_id]:
        got = "missing" if not eos_text else f"{eos_text!r}"
        raise UserError(f"--eos_text {got}: documents here always end with the tokenizer's eos token; pass "
                        f"--eos_text {shlex.quote(tok.eos_token)} (LLM Foundry's usual choice)")
    bos = tok(bos_text or "", add_special_tokens=False)["input_ids"]
    if not bos:
        return []
    if bos == [tok.bos_token_id] and tok.bos_token_id != tok.eos_token_id:
        return ["--bos"]
    raise UserError(f"--bos_text {bos_text!r}: only the tokenizer's own bos token, distinct from eos, can begin "
                    "documents here (foundry convert-dataset --bos); drop the flag")


def _packing_flags(args: Namespace) -> list[str]:
    """--concat_tokens/--tokenizer/--bos_text/--eos_text/--no_wrap as our flags (text mode without concat_tokens)."""
    if args.concat_tokens is None:
        return ["--mode", "text"]  # Foundry ignores tokenizer, bos/eos and no_wrap without concat_tokens too
    if args.tokenizer is None:
        raise UserError("--concat_tokens: needs --tokenizer (a local Hugging Face tokenizer directory)")
    if args.no_wrap:
        raise UserError("--no_wrap: not supported: samples here always continue across document boundaries and "
                        "keep every token (foundry convert-dataset); drop the flag")
    return ["--mode", "concat", "--max-seq-len", str(args.concat_tokens), "--tokenizer", args.tokenizer,
            *separator_flags(args.tokenizer, args.bos_text, args.eos_text)]


def _compression(value: str | None) -> list[str]:
    return [] if value is None else ["--compression", value]


def _local_output(flag: str, out: str) -> Path:
    """An output folder Foundry's way: local, and empty or absent (Foundry refuses a non-empty one too)."""
    if "://" in out:
        raise UserError(f"{flag} {out}: this script writes a local folder; for a bucket use foundry "
                        f"convert-dataset INPUTS --out {out} (it writes train/ and val/ there)")
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"{flag} {out}: exists and is not empty; remove it or choose another folder")
    return path


def into_folder(argv: list[str]) -> None:
    """Lay out a `convert-dataset ... --out OUT` as Foundry's scripts do: OUT/train/* moves up into OUT (val/ is
    empty, dropped).

    Each step is a rename, so a crash leaves either our layout or the staging folder beside OUT, never a
    half-written dataset under OUT's name.
    """
    out = Path(argv[argv.index("--out") + 1])
    staging = out.parent / f".{out.name}.splits-{os.getpid()}"
    os.rename(out, staging)
    os.rename(staging / "train", out)
    os.rename(staging / "conversion.json", out / "conversion.json")
    shutil.rmtree(staging)


def convert_dataset_json(args: Namespace) -> int:
    """scripts/data_prep/convert_dataset_json.py: one json/jsonl file or a folder of them -> MDS in --out_root."""
    def argv() -> list[list[str]]:
        _local_output("--out_root", args.out_root)
        if args.split != "train":
            raise UserError(f"--split {args.split}: json files hold one split, train (LLM Foundry fails on any "
                            "other too); the samples go straight into --out_root")
        return [["convert-dataset", args.path, "--out", args.out_root, "--input-format", "jsonl",
                 *_packing_flags(args), *_compression(args.compression)]]

    return run(argv, after=into_folder)


def convert_text_to_mds(args: Namespace) -> int:
    """scripts/data_prep/convert_text_to_mds.py: every .txt file under --input_folder, one document each.

    As in Foundry, a finished conversion leaves a done marker (settings + input files), and rerunning the same
    job is a no-op unless `--reprocess`; a rerun with other settings or files meets the non-empty folder error.
    """
    out = Path(args.output_folder)
    inputs = os.path.join(args.input_folder, "**", "*.txt")
    settings = json.dumps({k: v for k, v in sorted(vars(args).items()) if k not in ("processes", "reprocess",
                                                                               "logging_level")})
    done = out / DONE_FILE

    def argv() -> list[list[str]]:
        if "://" in args.input_folder:
            raise UserError(f"--input_folder {args.input_folder}: read from a local folder here; copy the files "
                            "down first (aws s3 sync)")
        if not args.reprocess and done.is_file() and done.read_text() == _done_text(settings, inputs):
            print(f"{out}: already converted from {args.input_folder} with these settings ({DONE_FILE}); "
                  "pass --reprocess True to convert again", file=sys.stderr)
            return []
        _local_output("--output_folder", args.output_folder)
        if args.use_tokenizer_eos:
            if args.eos_text is not None:
                raise UserError("--use_tokenizer_eos: cannot be combined with --eos_text; pass one of them")
            from llmfoundry.data.tokenizer import load_tokenizer

            args.eos_text = load_tokenizer(args.tokenizer).eos_token
        if args.trust_remote_code:
            print("note: --trust-remote-code: not needed: tokenizers load from local files without remote code",
                  file=sys.stderr)
        return [["convert-dataset", inputs, "--out", args.output_folder, "--input-format", "text",
                 "--split-by", "file", "--workers", str(max(args.processes, 1)), *_packing_flags(args),
                 *_compression(args.compression)]]

    def after(command: list[str]) -> None:
        into_folder(command)
        done.write_text(_done_text(settings, inputs))

    return run(argv, after=after)


def _done_text(record: str, inputs: str) -> str:
    """The done marker: the settings and the input files, so a rerun with either changed converts again."""
    from llmfoundry.data.sources import discover_inputs

    return "\n".join([record, *(str(p) for p in discover_inputs([inputs], "text"))]) + "\n"


def hf_split_files(dataset: str, split: str) -> list[str]:
    """The files holding `split` of a local `datasets` directory (save_to_disk, or train/validation data files)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets
    from datasets.data_files import DataFilesDict, get_data_patterns

    root = Path(dataset)
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():
        loaded = datasets.load_from_disk(str(root))
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({"train": loaded})
        if split not in loaded:
            raise UserError(f"--dataset {dataset}: has no {split!r} split (it has {', '.join(loaded)})")
        return [f["filename"] for f in loaded[split].cache_files]
    try:
        files = DataFilesDict.from_patterns(get_data_patterns(str(root)), base_path=str(root))
    except datasets.exceptions.EmptyDatasetError:
        files = {}
    if split not in files:
        raise UserError(f"--dataset {dataset}: no {split!r} split (files named like {split}.jsonl or "
                        f"{split}-*.parquet; found: {', '.join(files) or 'none'})")
    return [str(f) for f in files[split]]


def convert_dataset_hf(args: Namespace) -> int:
    """scripts/data_prep/convert_dataset_hf.py: a local `datasets` directory -> MDS in --out_root/<split>."""
    def argv() -> list[list[str]]:
        root = Path(args.dataset)
        if not root.is_dir():
            raise UserError(f"--dataset {args.dataset}: not a local directory; hub datasets are not downloaded: "
                            "give a directory written by save_to_disk or holding train/validation data files")
        if args.data_subset is not None:
            root = root / args.data_subset
            if not root.is_dir():
                raise UserError(f"--data_subset {args.data_subset}: {root} is not a directory")
        if args.tokenizer_kwargs:
            raise UserError("--tokenizer_kwargs: not supported: the tokenizer directory's own settings are used")
        for name in args.splits:
            if name not in HF_SPLITS:
                raise UserError(f"--splits {name}: not one of LLM Foundry's split names ({', '.join(HF_SPLITS)})")
            _local_output("--out_root", os.path.join(args.out_root, name))
        packing = [*_packing_flags(args), *_compression(args.compression)]
        workers = ["--workers", str(args.num_workers)] if args.num_workers else []
        commands = []
        for name in args.splits:
            split, cap = HF_SPLITS[name]
            limit = ["--max-docs", str(cap)] if cap else []
            if cap and args.concat_tokens is not None:
                print(f"note: --splits {name}: capped at the first {cap:,} documents here; LLM Foundry caps "
                      f"at {cap:,} samples (of --concat_tokens tokens each)", file=sys.stderr)
            commands.append(["convert-dataset", *hf_split_files(str(root), split), "--out",
                             os.path.join(args.out_root, name), *packing, *workers, *limit])
        return commands

    return run(argv, after=into_folder)


# ---- inference -------------------------------------------------------------------------------------------

def convert_composer_to_hf(args: Namespace) -> int:
    """scripts/inference/convert_composer_to_hf.py: a Composer `.pt` (or our run/checkpoint) -> an HF folder."""
    def argv() -> list[list[str]]:
        if args.hf_repo_for_upload is not None or args.test_uploaded_model:
            flag = "--hf_repo_for_upload" if args.hf_repo_for_upload is not None else "--test_uploaded_model"
            raise UserError(f"{flag}: uploads to the Hugging Face Hub are not done here (offline); push the "
                            "exported folder yourself, e.g. huggingface-cli upload REPO DIR")
        if args.local_checkpoint_save_location is not None:
            raise UserError("--local_checkpoint_save_location: not needed: foundry inference-convert reads the "
                            "checkpoint where it is (a local path or s3://); drop the flag")
        if "://" in args.hf_output_path:
            raise UserError(f"--hf_output_path {args.hf_output_path}: exports go to a local folder; upload it "
                            "afterwards (aws s3 sync DIR URL)")
        if args.trust_remote_code:
            print("note: --trust_remote_code: not needed: the export reads the tokenizer kept in the checkpoint "
                  "without running remote code", file=sys.stderr)
        return [["inference-convert", args.composer_path, args.hf_output_path, "--dtype", args.output_precision]]

    return run(argv)
