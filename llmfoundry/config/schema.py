"""The typed schema of a training yaml: names, types, defaults and docs in one place.

Key names follow LLM Foundry wherever the meaning is the same, so its users' yamls run with few edits;
README.md's migration table lists every difference. Each field's docstring is its documentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

from llmfoundry.config.duration import Duration
from llmfoundry.errors import UserError
from llmfoundry.models import ModelConfig


@dataclass
class TokenizerConfig:
    name: str
    """Path to a local Hugging Face tokenizer directory (no hub downloads happen at run time)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for `AutoTokenizer.from_pretrained`, e.g. `model_max_length`."""


@dataclass
class StreamConfig:
    local: str | None = None
    """Local directory of MDS shards (or the cache directory when `remote` is set)."""
    remote: str | None = None
    """Remote location (`s3://bucket/path`) to stream shards from into `local`."""
    split: str | None = None
    """Sub-directory of local/remote holding this split (`train`, `val`)."""
    proportion: float | None = None
    """Share of each epoch's samples drawn from this stream when mixing several."""
    repeat: float | None = None
    """Up- or down-sample this stream by this factor instead of a proportion."""
    choose: int | None = None
    """Take exactly this many samples per epoch from this stream."""


@dataclass
class DatasetConfig:
    local: str | None = None
    """Local directory of MDS shards written by `foundry convert-dataset` (cache dir when remote is set)."""
    remote: str | None = None
    """Remote location (`s3://bucket/path`; S3_ENDPOINT_URL selects an S3-compatible store)."""
    split: str | None = None
    """Split sub-directory to read (`train`, `val`)."""
    streams: dict[str, StreamConfig] | None = None
    """Several named sources mixed by `proportion`/`repeat`/`choose` instead of one local/remote."""
    max_seq_len: int = 2048
    """Tokens per training sample."""
    shuffle: bool = False
    """Shuffle samples (deterministically, from `shuffle_seed`)."""
    shuffle_seed: int = 9176
    """Seed of the sample order; the order does not depend on world size or worker count."""
    shuffle_algo: str = "py1e"
    """mosaicml-streaming shuffle algorithm."""
    num_canonical_nodes: int | None = None
    """mosaicml-streaming canonical nodes; fix it to keep the sample order when the node count changes."""
    predownload: int | None = None
    """Samples to download ahead per worker (remote datasets)."""
    eos_token_id: int | None = None
    """End-of-document token used to recover document boundaries (sequence ids); default: the tokenizer's."""
    mlm_probability: float | None = None
    """Masked-LM masking rate (MosaicBERT 0.3, BERT 0.15); set only for encoder pretraining."""


@dataclass(kw_only=True)
class LoaderOptions:
    """Data loader settings shared by every loader kind."""

    drop_last: bool = True
    """Drop the last incomplete batch of an epoch."""
    num_workers: int = 0
    """Data loader worker processes per rank."""
    pin_memory: bool = True
    """Pin host memory for faster host-to-GPU copies (ignored on CPU)."""
    prefetch_factor: int | None = None
    """Batches each worker loads ahead."""
    persistent_workers: bool = False
    """Keep workers alive between epochs."""
    timeout: float = 0
    """Seconds to wait for a batch from a worker (0 = forever)."""


@dataclass(kw_only=True)
class LoaderConfig(LoaderOptions):
    dataset: DatasetConfig
    """Where the samples come from and how they are ordered."""
    name: Literal["text"] = "text"
    """Loader kind: `text` reads MDS shards from convert-dataset (tokenized or raw text); see also
    `finetuning` (prompt/response and chat examples) and `classification` (GLUE-style labelled text)."""


@dataclass
class FinetuneDatasetConfig:
    local: str | None = None
    """A .jsonl/.parquet file, a directory holding `{split}.jsonl` / `{split}.parquet` (or a `{split}/` folder
    of such files), or an MDS directory from `foundry convert-dataset --kind finetuning` (`{local}/{split}/`)."""
    remote: str | None = None
    """s3:// prefix of MDS from `foundry convert-dataset --kind finetuning` (`{remote}/{split}/`); its shards are
    downloaded once into `local`, the cache directory (S3_ENDPOINT_URL selects an S3-compatible store)."""
    data_files: list[str] | None = None
    """Explicit .jsonl/.parquet files instead of `local` (read in the order given)."""
    hf_name: str | None = None
    """LLM Foundry compatibility: a local path used like `local` (hub datasets are never downloaded)."""
    split: str = "train"
    """Which split of a directory to read (`train`, `val`, `test`)."""
    max_seq_len: int = 2048
    """Tokens per row; longer examples are truncated or skipped (see `truncation`)."""
    decoder_only_format: bool = True
    """Prompt and response in one sequence for a decoder (the only format supported: no encoder-decoders)."""
    shuffle: bool = True
    """Shuffle rows each epoch (deterministic from shuffle_seed, independent of world size)."""
    shuffle_seed: int = 9176
    """Seed of the row order and of the packing order."""
    packing_ratio: float | Literal["auto"] | None = None
    """Pack several examples into one row: at most this many per row (rounded down; null or 1 = one example
    per row); `auto` picks max_seq_len / mean example length. Packed examples get their own sequence_id so
    they never attend to each other (needs `attn_uses_sequence_id: true` in the model)."""
    target_prompts: Literal["none", "all"] = "none"
    """Train on prompt tokens too (`all`) or only on responses (`none`, the default)."""
    target_responses: Literal["last", "all"] = "last"
    """Chat with several assistant turns: train on the last response only, or on every response."""
    truncation: Literal["left", "skip"] = "left"
    """Examples longer than max_seq_len: cut tokens from the start (prompt side, keeping the response) or
    skip the example. Either way the number affected is logged when training starts."""
    allow_pad_trimming: bool = False
    """Pad each batch only to its longest row instead of max_seq_len (faster, but shapes vary per batch)."""
    chat_template: str | None = None
    """Jinja chat template for `messages` examples; default: the tokenizer's own, else ChatML
    (`<|im_start|>role\ncontent<|im_end|>\n`)."""


@dataclass(kw_only=True)
class FinetuneLoaderConfig(LoaderOptions):
    dataset: FinetuneDatasetConfig
    """The examples and how they become rows."""
    name: Literal["finetuning"]
    """Loader kind: `finetuning` reads prompt/response or chat examples (loss on responses only by default)."""


@dataclass
class ClassificationDatasetConfig:
    local: str | None = None
    """A .jsonl/.csv/.tsv file, or a directory holding `{split}.jsonl` / `{split}.csv` / `{split}.tsv`."""
    data_files: list[str] | None = None
    """Explicit .jsonl/.csv/.tsv files instead of `local`."""
    split: str = "train"
    """Which split of a directory to read (GLUE: `train`, `validation`, `validation_matched`, ...)."""
    text_fields: list[str] = field(default_factory=lambda: ["sentence"])
    """One field (single sentence) or two (a sentence pair, e.g. [sentence1, sentence2] or [question, sentence])."""
    label_field: str = "label"
    """Field holding the label: an integer class, a class name listed in `label_names`, or a number for
    regression (model.num_labels: 1)."""
    label_names: list[str] | None = None
    """Class names in id order when labels are strings (MNLI: [entailment, neutral, contradiction])."""
    max_seq_len: int = 128
    """Tokens per example (the pair is truncated longest-first; the count truncated is logged)."""
    shuffle: bool = True
    """Shuffle examples each epoch (deterministic from shuffle_seed)."""
    shuffle_seed: int = 9176
    """Seed of the example order."""
    metrics: list[Literal["accuracy", "f1", "matthews", "pearson", "spearman"]] | None = None
    """Metrics computed on this (eval) data; default: accuracy for classification, pearson and spearman for
    regression. GLUE: CoLA matthews; MRPC/QQP accuracy + f1; STS-B pearson + spearman."""


@dataclass(kw_only=True)
class ClassificationLoaderConfig(LoaderOptions):
    dataset: ClassificationDatasetConfig
    """The labelled examples."""
    name: Literal["classification"]
    """Loader kind: `classification` feeds a sequence classifier/regressor (bert/mosaic_bert with num_labels)."""


AnyLoaderConfig = Union[LoaderConfig, FinetuneLoaderConfig, ClassificationLoaderConfig]


@dataclass
class OptimizerConfig:
    name: Literal["decoupled_adamw", "adamw", "lion", "decoupled_lionw"] = "decoupled_adamw"
    """decoupled_adamw: weight decay scaled by lr/initial_lr as in Composer; adamw: torch's (fused where available)."""
    lr: float = 6.0e-4
    """Peak learning rate."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """Adam/Lion beta coefficients."""
    eps: float = 1.0e-8
    """Adam epsilon."""
    weight_decay: float = 0.0
    """Weight decay; never applied to biases, norms or embeddings (1-D parameters)."""


@dataclass
class SchedulerConfig:
    name: Literal[
        "cosine_with_warmup",
        "linear_decay_with_warmup",
        "constant_with_warmup",
        "inverse_sqrt",
        "warmup_stable_decay",
    ] = "cosine_with_warmup"
    """Learning-rate schedule shape."""
    t_warmup: Duration = Duration(0, "ba")
    """Linear warmup length (a time string)."""
    alpha_f: float = 0.0
    """Final learning rate as a fraction of the peak."""
    t_max: Duration = Duration(1.0, "dur")
    """Length of the decay (default: the whole run)."""
    t_cooldown: Duration = Duration(0.2, "dur")
    """warmup_stable_decay only: length of the final decay phase."""


@dataclass
class GradientClippingConfig:
    clipping_type: Literal["norm"] = "norm"
    """Clip the global gradient norm."""
    clipping_threshold: float = 1.0
    """Maximum global gradient norm."""


@dataclass
class AlgorithmsConfig:
    gradient_clipping: GradientClippingConfig | None = None
    """Global-norm gradient clipping (LLM Foundry's `algorithms.gradient_clipping`)."""


@dataclass
class FSDPConfig:
    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD"] = "FULL_SHARD"
    """FULL_SHARD: reshard parameters after forward; SHARD_GRAD_OP: keep them for backward; NO_SHARD: replicate."""
    reshard_after_forward: bool | None = None
    """Overrides what sharding_strategy implies for FSDP2's reshard_after_forward."""
    mixed_precision: Literal["DEFAULT", "PURE", "FULL"] = "DEFAULT"
    """DEFAULT: compute in the autocast dtype, reduce gradients in fp32; PURE: reduce in low precision too; FULL: fp32."""
    activation_checkpointing: bool | Literal["none", "full", "selective"] = False
    """Recompute activations in backward: true/full (every block), selective (every other block), false/none."""
    compile: bool = False
    """torch.compile each block."""
    activation_cpu_offload: bool = False
    """Move the activations each block saves for backward to host memory (pinned on CUDA), as LLM Foundry's key."""
    cpu_offload: bool = False
    """FSDP2 CPUOffloadPolicy: parameter shards, gradients and the optimizer step live in host memory."""


@dataclass
class SpeedMonitorConfig:
    window_size: int = 10
    """Batches averaged for tokens/s and MFU."""


@dataclass
class CallbacksConfig:
    speed_monitor: SpeedMonitorConfig | None = None
    """Log tokens/s, samples/s and MFU."""
    lr_monitor: dict[str, Any] | None = None
    """Log the learning rate."""
    memory_monitor: dict[str, Any] | None = None
    """Log peak GPU memory (CUDA) or RSS (CPU)."""
    runtime_estimator: dict[str, Any] | None = None
    """Log the estimated time remaining."""


@dataclass
class TensorboardConfig:
    log_dir: str | None = None
    """Directory for event files (default: `{save_folder}/tensorboard`)."""


@dataclass
class MLflowConfig:
    tracking_uri: str | None = None
    """MLflow tracking URI (default: a local file store under the run folder)."""
    experiment_name: str = "llmfoundry"
    """MLflow experiment."""


@dataclass
class WandbConfig:
    project: str = "llmfoundry"
    """Weights & Biases project."""
    entity: str | None = None
    """Weights & Biases entity (team)."""
    mode: Literal["online", "offline", "disabled"] = "offline"
    """offline works without network; sync later with `wandb sync`."""


@dataclass
class LoggersConfig:
    tensorboard: TensorboardConfig | None = None
    """Write TensorBoard event files."""
    mlflow: MLflowConfig | None = None
    """Log to MLflow."""
    wandb: WandbConfig | None = None
    """Log to Weights & Biases."""


@dataclass
class TrainConfig:
    model: ModelConfig
    """The model: `name` picks the family (mpt_causal_lm|mpt, gpt2|gpt, mosaic_bert|bert), `preset` fills defaults."""
    tokenizer: TokenizerConfig
    """The tokenizer (a local directory)."""
    train_loader: AnyLoaderConfig
    """Training data; `name` picks the kind: text (pretraining MDS), finetuning or classification."""
    max_duration: Duration
    """Length of training: `4800ba`, `2ep`, `1_000_000_000tok`, `100000sp`."""
    global_train_batch_size: int
    """Samples per optimizer step across all ranks."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """The optimizer."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    """The learning-rate schedule."""
    eval_loader: AnyLoaderConfig | None = None
    """Validation data for loss and perplexity (and classification metrics)."""
    device_train_microbatch_size: int | Literal["auto"] = "auto"
    """Samples per forward/backward on one rank; `auto` finds the largest that fits, retrying after OOM."""
    device_eval_batch_size: int = 8
    """Samples per eval forward on one rank."""
    eval_interval: Duration = Duration(1, "ep")
    """How often to evaluate (`500ba`); 0 disables evaluation during training."""
    eval_first: bool = False
    """Evaluate before the first step."""
    eval_subset_num_batches: int = -1
    """Cap on eval batches per evaluation (-1 = whole eval set)."""
    precision: Literal["fp32", "amp_bf16", "amp_fp16", "amp_fp8"] = "amp_bf16"
    """Compute precision; amp_fp16 uses dynamic loss scaling; amp_fp8: torchao float8 matmuls in the blocks
    (H100-class GPUs, compute capability 8.9+), bf16 elsewhere."""
    seed: int = 17
    """Seed for weights init, dropout and the data order."""
    max_seq_len: int | None = None
    """LLM Foundry compatibility: sequence length when set at the top level (use train_loader.dataset.max_seq_len)."""
    algorithms: AlgorithmsConfig = field(default_factory=AlgorithmsConfig)
    """Training algorithms (gradient clipping)."""
    fsdp_config: FSDPConfig | None = None
    """FSDP2 sharding options; null = no sharding (single process, or replicate with DDP semantics)."""
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    """Monitors (speed, lr, memory, runtime)."""
    loggers: LoggersConfig = field(default_factory=LoggersConfig)
    """Extra metric sinks; metrics.jsonl and the console are always on."""
    run_name: str = "llmfoundry-run"
    """Name of the run; the default save_folder is runs/{run_name}."""
    save_folder: str | None = None
    """Run folder (config.yaml, metrics.jsonl, checkpoints/); default runs/{run_name}."""
    save_interval: Duration = Duration(1000, "ba")
    """How often to checkpoint; 0 disables periodic checkpoints (a final one is still written)."""
    save_num_checkpoints_to_keep: int = -1
    """Keep only the newest N checkpoints (-1 keeps all)."""
    save_overwrite: bool = False
    """Allow starting a new run in a save_folder that already holds checkpoints."""
    autoresume: bool = False
    """Resume from the newest complete checkpoint in save_folder when there is one."""
    load_path: str | None = None
    """Warm start: load model weights (only) from this checkpoint or run folder."""
    load_weights_only: bool = True
    """With load_path: load only weights (true) or the full training state (false)."""
    progress_bar: bool = True
    """Show a rich progress bar on a terminal (plain log lines otherwise)."""
    log_to_console: bool = True
    """Print metrics to the console at each log step."""
    console_log_interval: Duration = Duration(1, "ba")
    """How often metrics are logged (console and metrics.jsonl)."""
    skip_nan_batches: bool = False
    """Skip a batch whose loss is NaN/inf instead of stopping the run."""
    dist_timeout: float = 600.0
    """Seconds to wait for other ranks in collective operations."""
    icl_tasks: list[dict[str, Any]] | str | None = None
    """In-context-learning tasks evaluated at eval_interval (a list, or a path to a yaml with the list)."""
    eval_gauntlet: dict[str, Any] | str | None = None
    """Gauntlet aggregation of icl_tasks results."""
    icl_seq_len: int | None = None
    """Maximum sequence length for ICL evaluation (default: the model's)."""

    @classmethod
    def config_expand(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """Loaders without a `name` are `text` loaders, as before finetuning loaders existed."""
        for key in ("train_loader", "eval_loader"):
            loader = raw.get(key)
            if isinstance(loader, dict) and "name" not in loader:
                raw[key] = {**loader, "name": "text"}
        return raw

    def __post_init__(self) -> None:
        if self.global_train_batch_size <= 0:
            raise UserError(f"global_train_batch_size: must be positive, got {self.global_train_batch_size}")
        if isinstance(self.device_train_microbatch_size, int) and self.device_train_microbatch_size <= 0:
            raise UserError(
                f"device_train_microbatch_size: must be positive or 'auto', got {self.device_train_microbatch_size}"
            )
        if self.max_duration.unit == "dur":
            raise UserError("max_duration: cannot be a fraction of itself; use ba, ep, tok or sp")
        if self.max_duration.is_zero:
            raise UserError("max_duration: must be longer than zero")
        if self.save_folder is None:
            self.save_folder = f"runs/{self.run_name}"
