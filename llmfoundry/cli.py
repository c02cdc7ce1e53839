"""The `foundry` command: one thin function per verb.

Each verb parses its options and calls a plain Python function with the same arguments, imported lazily so
`foundry --help` stays fast. User mistakes (`UserError`) print one line each on stderr and exit 1; `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer

from llmfoundry.errors import LAUNCHED, RunFailure, UserError

app = typer.Typer(
    name="foundry",
    help="Train your own language models from one YAML file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: flags shown as flags, choices as {a|b}, text that copy-pastes
    context_settings={"help_option_names": ["-h", "--help"]},
)
tokenizer_app = typer.Typer(help="Train tokenizers.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")

_state = {"debug": False}
T = TypeVar("T")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"foundry (llmfoundry) {version('llmfoundry')}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    _version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                  callback=_print_version),
) -> None:
    _state["debug"] = debug
    from llmfoundry.quiet import drop_known_notices

    drop_known_notices()


class Mode(str, Enum):
    concat = "concat"
    text = "text"


class InputFormat(str, Enum):
    auto = "auto"
    text = "text"
    jsonl = "jsonl"
    parquet = "parquet"
    arrow = "arrow"
    pubmed = "pubmed"


class SplitBy(str, Enum):
    file = "file"
    paragraph = "paragraph"


class DataKind(str, Enum):
    pretraining = "pretraining"
    finetuning = "finetuning"


class TokenizerKind(str, Enum):
    bpe = "bpe"
    wordpiece = "wordpiece"
    unigram = "unigram"


class Dtype(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


def run_user_code(fn: Callable[[], T]) -> T:
    """Run a verb; a UserError (or RunFailure) becomes one stderr line per problem and exit code 1.

    A worker under torchrun also writes the lines into torchelastic's error file, where torchrun shows them as the
    root cause; under `foundry train --nproc` it prints nothing itself, and the launcher prints each distinct line
    once instead of once per process.
    """
    try:
        return fn()
    except (UserError, RunFailure) as err:
        if _state["debug"]:
            raise
        _record_for_torchrun(err.problems)
        if not os.environ.get(LAUNCHED):
            for line in err.problems:
                typer.echo(f"error: {line}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def _record_for_torchrun(problems: list[str]) -> None:
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with open(path, "w") as f:
            json.dump({"message": "; ".join(problems), "timestamp": int(time.time())}, f)


CONFIG_ARG = typer.Argument(..., help="Path to the YAML config.", show_default=False)
TRAIN_CONFIG_ARG = typer.Argument(..., help="Path to the YAML config, or a recipe name (`foundry recipes`).",
                                  show_default=False)
OVERRIDES_ARG = typer.Argument(None, help="key=value overrides applied last, e.g. max_duration=20ba.")


@app.command()
def train(
    config: Path = TRAIN_CONFIG_ARG,
    overrides: Optional[list[str]] = OVERRIDES_ARG,
    print_config: bool = typer.Option(False, "--print-config", help="Print the fully resolved config and exit."),
    nproc: int = typer.Option(0, "--nproc", help="Launch this many processes on this machine with torchrun "
                              "(one per GPU); 0 (the default) trains in this process, on one GPU or the CPU."),
    max_restarts: int = typer.Option(0, "--max-restarts", help="With --nproc: restart the whole group up to this "
                                     "many times after a process dies or stalls; it resumes from checkpoints/latest."),
) -> None:
    """Pretrain or finetune a model described by a YAML config."""

    def go() -> int:
        from llmfoundry.config import load_typed
        from llmfoundry.config.schema import TrainConfig
        from llmfoundry.loggers.console import end_startup, startup
        from llmfoundry.recipes import resolve_config

        if not print_config and nproc == 0:
            startup("loading the config")
        try:
            path = resolve_config(config)
            cfg, loaded = load_typed(TrainConfig, path, overrides or [])
        finally:
            end_startup()  # resumed below; an error prints on a clean line
        if print_config:
            typer.echo(loaded.to_yaml(), nl=False)
            return 0
        if max_restarts < 0 or nproc < 0:
            raise UserError("--nproc and --max-restarts: must be 0 or more")
        if max_restarts and not nproc:
            raise UserError("--max-restarts: needs --nproc N (or torchrun --max-restarts for several nodes)")
        if nproc > 0:
            from llmfoundry.distributed.launch import launch_train

            return launch_train(nproc, max_restarts, [str(path), *(overrides or [])], Path(cfg.save_folder),  # type: ignore[arg-type]
                                debug=_state["debug"])
        startup("importing torch")
        from llmfoundry.train.loop import train as run

        startup("building the model, opening the data")
        try:
            run(cfg, loaded)
        finally:
            end_startup()
        return 0

    code = run_user_code(go)
    if code:
        raise typer.Exit(code)


@app.command("convert-dataset")
def convert_dataset(
    inputs: list[str] = typer.Argument(..., help="Input files, directories (searched recursively) or globs.", show_default=False),
    out: str = typer.Option(..., "--out", "-o", help="Output directory or s3://bucket/prefix (gets train/ and val/).", show_default=False),
    tokenizer: Optional[str] = typer.Option(None, "--tokenizer", "-t", help="Local Hugging Face tokenizer dir (required for concat)."),
    mode: Mode = typer.Option("concat", "--mode", help="concat: tokenize and pack into max-seq-len samples; text: store raw text."),
    max_seq_len: int = typer.Option(2048, "--max-seq-len", help="Tokens per sample in concat mode."),
    input_format: InputFormat = typer.Option("auto", "--input-format", help="auto: by extension."),
    text_field: str = typer.Option("text", "--text-field", help="JSONL key (dotted paths ok) or parquet/arrow column holding the text."),
    split_by: SplitBy = typer.Option("file", "--split-by", help="Plain text: one document per file, or per blank-line paragraph."),
    val_fraction: float = typer.Option(0.0, "--val-fraction", help="Share of documents (by stable hash) written to val/."),
    bos: bool = typer.Option(False, "--bos", help="Also put the tokenizer's bos token before each document."),
    workers: int = typer.Option(1, "--workers", "-j", help="Tokenizer processes; the output is identical for any count."),
    shard_size: str = typer.Option("64mb", "--shard-size", help="Maximum shard size before compression, e.g. 64mb."),
    compression: Optional[str] = typer.Option(None, "--compression", help="Shard compression: none, zstd, zstd:<level>, gz, br, snappy."),
    strict: bool = typer.Option(False, "--strict", help="Fail on the first bad record (invalid UTF-8, malformed JSON, missing field) instead of counting and skipping it."),
    max_docs: Optional[int] = typer.Option(None, "--max-docs", help="Stop after this many documents."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output."),
    kind: DataKind = typer.Option("pretraining", "--kind", help="pretraining: documents (--mode concat|text); finetuning: "
                             "prompt/response or chat (messages) examples from .jsonl/.parquet, stored as text."),
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: convert only part I (0-based) of N, for one job "
                                        "of many (SLURM array, Kubernetes); join them with `foundry merge-index OUT`."),
) -> None:
    """Convert text, JSONL, parquet/arrow or PubMed XML into streaming MDS shards."""

    def go() -> None:
        from llmfoundry.data.convert import convert_dataset as run, format_summary

        if kind is DataKind.finetuning:
            from llmfoundry.data.convert_finetune import convert_finetuning

            if tokenizer is not None or text_field != "text":
                raise UserError("--kind finetuning: examples are stored as text and tokenized at train time, from "
                                "their prompt/response or messages fields; drop --tokenizer/--text-field")
            summary = convert_finetuning(inputs, out, val_fraction=val_fraction, strict=strict, max_docs=max_docs,
                                         shard_size=shard_size, compression=compression, overwrite=overwrite)
            typer.echo(format_summary(summary))
            typer.echo(f"wrote {out}")
            return
        from llmfoundry.data.parts import parse_shard

        part = parse_shard(shard) if shard is not None else None
        summary = run(inputs, out, tokenizer=tokenizer, mode=mode.value, max_seq_len=max_seq_len,
                      input_format=input_format.value, text_field=text_field, split_by=split_by.value,
                      val_fraction=val_fraction, bos=bos, workers=workers, shard_size=shard_size,
                      compression=compression, strict=strict, max_docs=max_docs, overwrite=overwrite, shard=part)
        typer.echo(format_summary(summary))
        if part is not None:
            typer.echo(f"wrote part {part[0]} of {part[1]} into {out}; when every part is done: foundry merge-index {out}")
        else:
            typer.echo(f"wrote {out}")

    run_user_code(go)


@app.command("merge-index")
def merge_index(
    out: str = typer.Argument(..., help="The --out of the `convert-dataset --shard I/N` jobs (local or s3://).",
                              show_default=False),
) -> None:
    """Join the parts of a conversion done by several jobs (`convert-dataset --shard I/N`) into one dataset."""

    def go() -> None:
        from llmfoundry.data.parts import merge_index as run

        merged = run(out)
        splits = ", ".join(f"{name} {stats['samples']:,} samples" for name, stats in merged["splits"].items())
        typer.echo(f"merged {merged['parts']} parts into {out}: {merged['documents_written']:,} documents; {splits}")

    run_user_code(go)


@tokenizer_app.command("train")
def tokenizer_train(
    inputs: list[str] = typer.Option(..., "--input", "-i", help="Input files, directories or globs (repeat the flag for several).", show_default=False),
    out: str = typer.Option(..., "--out", "-o", help="Directory for the Hugging Face tokenizer.", show_default=False),
    kind: TokenizerKind = typer.Option("bpe", "--kind", help="bpe (byte-level, GPT/MPT), wordpiece (BERT) or unigram (SentencePiece-style)."),
    vocab_size: int = typer.Option(32000, "--vocab-size", help="Vocabulary size including special tokens."),
    min_frequency: int = typer.Option(2, "--min-frequency", help="Minimum pair frequency for a merge (bpe, wordpiece)."),
    input_format: InputFormat = typer.Option("auto", "--input-format", help="auto: by extension."),
    text_field: str = typer.Option("text", "--text-field", help="JSONL key or parquet/arrow column holding the text."),
    split_by: SplitBy = typer.Option("file", "--split-by", help="Plain text: one document per file or per blank-line paragraph."),
    limit_docs: Optional[int] = typer.Option(None, "--limit-docs", help="Train on at most this many documents."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output directory."),
) -> None:
    """Train a tokenizer on your own text and save it as a Hugging Face tokenizer directory."""

    def go() -> None:
        from llmfoundry.data.tokenizer import train_tokenizer

        result = train_tokenizer(inputs, out, kind=kind.value, vocab_size=vocab_size, min_frequency=min_frequency,
                                 input_format=input_format.value, text_field=text_field, split_by=split_by.value,
                                 limit_docs=limit_docs,
                                 overwrite=overwrite)
        typer.echo(f"trained a {result['kind']} tokenizer with {result['vocab_size']:,} tokens on "
                   f"{result['documents']:,} documents -> {out}")
        for note in result["notes"]:
            typer.echo(f"note: {note}", err=True)

    run_user_code(go)


@app.command("eval")
def eval_(
    config: Path = CONFIG_ARG,
    overrides: Optional[list[str]] = OVERRIDES_ARG,
    print_config: bool = typer.Option(False, "--print-config", help="Print the fully resolved config and exit."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Score at most N items per task (and category): a quick look."),
    strict: bool = typer.Option(False, "--strict", help="Fail on an item that does not fit the window instead of skipping and counting it."),
) -> None:
    """Score models on in-context-learning tasks (and a gauntlet); print tables, save results.json/csv.

    \b
    Examples:
      foundry eval yamls/eval/core.yaml variables.model_dir=demo/hf   # an exported model (inference-convert)
      foundry eval yamls/eval/core.yaml variables.model_dir=demo/hf save_folder=out/eval   # results elsewhere
      ICL_DIR=/data/icl foundry eval yamls/eval/core.yaml              # task files from another folder
      torchrun --nproc_per_node 4 -m llmfoundry.cli eval yamls/eval/core.yaml   # requests split over 4 GPUs
      foundry eval tasks_v0.3-eval.yaml icl_subset_num_batches=2   # LLM Foundry's own eval yamls
      foundry eval yamls/eval/core.yaml variables.model_dir=demo/hf --limit 50   # 50 items per task
    """

    def go() -> None:
        from llmfoundry.eval.run import evaluate, prepare

        if print_config:
            _, loaded, _, _, _ = prepare(config, overrides or [])
            typer.echo(loaded.to_yaml(), nl=False)
            return
        evaluate(config, overrides or [], limit=limit, strict=strict)

    run_user_code(go)


@app.command("eval-text")
def eval_text(
    model: str = typer.Argument(..., help="An exported Hugging Face model directory (foundry inference-convert).",
                                show_default=False),
    inputs: list[str] = typer.Argument(..., help="Text, JSONL, parquet/arrow or PubMed XML files, directories or "
                                       "globs (as convert-dataset reads them).", show_default=False),
    seq_len: list[int] = typer.Option(..., "--seq-len", help="Window length in tokens; repeat for several."),
    val_fraction: float = typer.Option(0.0, "--val-fraction", help="Score only convert-dataset's val split of "
                                       "this fraction (the documents a run never trained on); 0: every document."),
    input_format: InputFormat = typer.Option("auto", "--input-format", help="auto: by extension."),
    max_docs: Optional[int] = typer.Option(None, "--max-docs", min=1, help="Score at most this many documents."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Windows per forward pass."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Write the scores as JSON here."),
) -> None:
    """Bits per byte (tokenizer-independent), perplexity and tokens per document on held-out text.

    \b
    Example:
      foundry eval-text demo/hf "$(foundry assets pubmed)"/pubmed*.xml.gz --val-fraction 0.02 --seq-len 128
    """

    def go() -> None:
        from llmfoundry.eval.heldout import evaluate_text

        for s in evaluate_text(model, inputs, seq_len, input_format=input_format.value, val_fraction=val_fraction,
                               max_docs=max_docs, batch_size=batch_size, out=out):
            typer.echo(f"seq_len {s.seq_len}: {s.bits_per_byte:.4f} bits/byte, perplexity {s.perplexity:.2f}, "
                       f"{s.tokens_per_document:.1f} tokens/document ({s.documents:,} documents, {s.bytes:,} bytes)")
        if out is not None:
            typer.echo(f"wrote {out}")

    run_user_code(go)


@app.command("inference-convert")
def inference_convert(
    src: str = typer.Argument(..., help="A run folder (uses checkpoints/latest), one checkpoint folder, or either as an s3:// URL.", show_default=False),
    out: str = typer.Argument(..., help="Output Hugging Face model directory.", show_default=False),
    dtype: Dtype = typer.Option("fp32", "--dtype", help="Weight dtype."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty output directory."),
    adapters_only: bool = typer.Option(False, "--adapters-only", help="LoRA runs: write only the adapters, "
                                       "in peft's format for the base model's transformers export, instead of the "
                                       "merged model."),
) -> None:
    """Export a checkpoint as a Hugging Face directory (safetensors, config, tokenizer) for transformers."""

    def go() -> None:
        from llmfoundry.checkpoint.reader import load_model_from_checkpoint
        from llmfoundry.export.hf import export_model

        if adapters_only:
            from llmfoundry.config import build
            from llmfoundry.io import check_output_dir
            from llmfoundry.export.adapters import save_adapters
            from llmfoundry.models.lora import LoraConfig

            check_output_dir(out, overwrite=overwrite)
            model, config = load_model_from_checkpoint(src, merge_lora=False)
            peft = (config.get("model") or {}).get("peft_config")
            if not peft:
                raise UserError(f"{src}: --adapters-only needs a LoRA run (model.peft_config); this one has none")
            save_adapters(model, build(LoraConfig, peft, key="model.peft_config"), out)
            typer.echo(f"wrote {out}: LoRA adapters in peft's format; load with "
                       f"PeftModel.from_pretrained(BASE, '{out}'), BASE being the base run's inference-convert "
                       "export, or llmfoundry.export.adapters.load_adapters(model, DIR)")
            return
        model, config = load_model_from_checkpoint(src)
        tokenizer_dir = (config.get("tokenizer") or {}).get("name")
        result = export_model(model, out, tokenizer_dir=tokenizer_dir, dtype=dtype.value, overwrite=overwrite)
        if "trust_remote_code" in result:
            typer.echo(f"wrote {out}: {result['class']} ({result['dtype']}) because {result['reason']}; "
                       f"load with AutoModel*.from_pretrained('{out}', trust_remote_code=True)")
        else:
            typer.echo(f"wrote {out}: transformers {result['class']} ({result['dtype']}); loads with "
                       f"AutoModel*.from_pretrained('{out}'), no trust_remote_code needed")

    run_user_code(go)


@app.command()
def generate(
    model_dir: str = typer.Argument(..., help="An exported Hugging Face model directory.", show_default=False),
    prompt: str = typer.Option(..., "--prompt", "-p", help="Text to continue.", show_default=False),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Tokens to generate."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling mass."),
    greedy: bool = typer.Option(False, "--greedy", help="Greedy decoding (deterministic)."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow a modeling file shipped in the directory."),
) -> None:
    """Sample a continuation of a prompt from an exported model."""

    def go() -> None:
        from llmfoundry.export.generate import generate as run

        typer.echo(run(model_dir, prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                       greedy=greedy, seed=seed, trust_remote_code=trust_remote_code))

    run_user_code(go)


@app.command()
def recipes() -> None:
    """List the shipped recipes: `foundry train NAME` (or yamls/NAME.yaml) runs one."""

    def go() -> None:
        from llmfoundry.recipes import describe, recipes as shipped

        for recipe in shipped():
            info = describe(recipe)
            size = f"{info['parameters'] / 1e9:.2f}B" if info["parameters"] >= 1e9 else f"{info['parameters'] / 1e6:.1f}M"
            typer.echo(f"{info['name']:17} {size:>7}  seq {info['max_seq_len']:>5}  {info['purpose']}")

    run_user_code(go)


@app.command()
def report(
    paths: list[str] = typer.Argument(..., help="A run folder (save_folder of `foundry train`), several to "
                                      "compare, or one `foundry eval` save_folder (results.json).", show_default=False),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="The HTML file to write (default: RUN/report.html, "
                                      "EVAL_DIR/report.html, or ./report.html for several runs); its PNGs and "
                                      "series.json go in the folder of the same name without .html."),
) -> None:
    """Draw a run's metrics (or several runs overlaid, or eval results) into a self-contained HTML report."""

    def go() -> None:
        from llmfoundry.report import report as run

        typer.echo(f"wrote {run(paths, out)}")

    run_user_code(go)


@app.command()
def assets(
    name: Optional[str] = typer.Argument(None, help="Print only this asset's path (e.g. gpt-neox-20b).",
                                         show_default=False),
) -> None:
    """List the tokenizers and data `make install` provides (yamls name them as ${asset:NAME})."""

    def go() -> None:
        from llmfoundry.assets import ASSETS, asset_path, data_dir

        if name is not None:
            typer.echo(asset_path(name))
            return
        for key, asset in ASSETS.items():
            path = data_dir() / asset.path
            state = str(path) if path.exists() else f"not installed (run `make install`): {path}"
            typer.echo(f"{key:17} {asset.what} [{asset.source}]\n{'':17} {state}")

    run_user_code(go)


@app.command()
def plan(
    config: Path = TRAIN_CONFIG_ARG,
    overrides: Optional[list[str]] = OVERRIDES_ARG,
    gpus: int = typer.Option(1, "--gpus", help="GPUs the run uses (processes)."),
    gpu: str = typer.Option("h100", "--gpu", help="GPU model, e.g. h100, h100-pcie, h100-nvl, h200, b200, "
                            "a100-80g, a100-40g, mi300x, l40s, l4, a10g (llmfoundry/devices.py; a wrong name lists all)."),
    mfu: float = typer.Option(0.4, "--mfu", help="Model FLOPs utilization to assume (LLM Foundry measures 0.4-0.6)."),
    price: Optional[float] = typer.Option(None, "--price-per-gpu-hour", help="Dollars per GPU-hour, for the cost."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Size, FLOPs, memory per GPU, what fits, time and cost of a training config, without running it."""

    def go() -> None:
        from llmfoundry.config import load_typed
        from llmfoundry.config.schema import TrainConfig
        from llmfoundry.devices import device
        from llmfoundry.plan.estimate import plan as run
        from llmfoundry.recipes import resolve_config

        spec = device(gpu)
        path = resolve_config(config)
        cfg, _ = load_typed(TrainConfig, path, overrides or [])
        result = run(cfg, config=str(config), gpus=gpus, device=spec, mfu=mfu, price_per_gpu_hour=price)
        if as_json:
            typer.echo(result.to_json())
            return
        from llmfoundry.plan.report import render

        render(result)

    run_user_code(go)


MODEL_SRC_ARG = typer.Argument(..., help="An exported Hugging Face model directory, or a run folder / checkpoint "
                               "(exported on the fly).", show_default=False)
TRUST_OPTION = typer.Option(False, "--trust-remote-code", help="Allow a modeling file shipped in the directory.")


@app.command()
def chat(
    model_dir: str = MODEL_SRC_ARG,
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Tokens per reply at most."),
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature."),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus sampling mass."),
    greedy: bool = typer.Option(False, "--greedy", help="Greedy decoding (deterministic)."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    trust_remote_code: bool = TRUST_OPTION,
) -> None:
    """Talk to a model in the terminal: its chat template, streamed replies, /reset, /system TEXT, /exit."""

    def go() -> None:
        from llmfoundry.serve.chat import chat as run
        from llmfoundry.serve.loading import load

        sampling = _sampling(max_new_tokens, temperature, top_p, greedy, seed)
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        run(load(model_dir, trust_remote_code=trust_remote_code), sampling)

    run_user_code(go)


@app.command()
def serve(
    model_dir: str = MODEL_SRC_ARG,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    max_batch: int = typer.Option(32, "--max-batch", help="Requests generated together at most."),
    trust_remote_code: bool = TRUST_OPTION,
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models)."""

    def go() -> None:
        import importlib.util

        from llmfoundry.serve.loading import load

        if max_batch < 1:
            raise UserError(f"--max-batch: must be at least 1, got {max_batch}")
        if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
            raise UserError("foundry serve needs fastapi and uvicorn: pip install -e '.[serve]' (make install has them)")
        from llmfoundry.serve.app import serve as run

        run(load(model_dir, trust_remote_code=trust_remote_code), host=host, port=port, max_batch=max_batch)

    run_user_code(go)


def _sampling(max_new_tokens: int, temperature: float, top_p: float, greedy: bool, seed: int) -> Any:
    """`foundry chat`'s sampling flags, checked as `foundry generate` checks them."""
    from llmfoundry.serve.engine import Sampling

    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens: must be at least 1, got {max_new_tokens}")
    if not greedy and (temperature <= 0 or not 0 < top_p <= 1):
        raise UserError("--temperature must be > 0 and --top-p in (0, 1] (or pass --greedy)")
    return Sampling(max_tokens=max_new_tokens, temperature=0.0 if greedy else temperature, top_p=top_p, seed=seed)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="foundry")


if __name__ == "__main__":
    sys.exit(main())
