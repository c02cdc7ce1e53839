"""The typed schema of a training yaml: names, types, defaults and docs in one place.

Key names follow LLM Foundry wherever the meaning is the same, so its users' yamls run with few edits;
README.md's migration table lists every difference. Each field's docstring is its documentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

from llmfoundry.config.duration import Duration
from llmfoundry.config.validate import NON_NEGATIVE, POSITIVE, PROBABILITY, SEED
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
    proportion: float | None = field(default=None, metadata={"gt": 0})
    """Share of each epoch's samples drawn from this stream when mixing several."""
    repeat: float | None = field(default=None, metadata={"gt": 0})
    """Up- or down-sample this stream by this factor instead of a proportion."""
    choose: int | None = field(default=None, metadata=POSITIVE)
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
    max_seq_len: int = field(default=2048, metadata=POSITIVE)
    """Tokens per training sample."""
    shuffle: bool = False
    """Shuffle samples (deterministically, from `shuffle_seed`)."""
    shuffle_seed: int = field(default=9176, metadata=SEED)
    """Seed of the sample order; the order does not depend on world size or worker count."""
    shuffle_algo: str = "py1e"
    """mosaicml-streaming shuffle algorithm."""
    num_canonical_nodes: int | None = field(default=None, metadata=POSITIVE)
    """mosaicml-streaming canonical nodes; fix it to keep the sample order when the node count changes."""
    predownload: int | None = field(default=None, metadata=NON_NEGATIVE)
    """Samples to download ahead per worker (remote datasets)."""
    eos_token_id: int | None = field(default=None, metadata=NON_NEGATIVE)
    """End-of-document token used to recover document boundaries (sequence ids); default: the tokenizer's."""
    mlm_probability: float | None = field(default=None, metadata={"gt": 0, "lt": 1})
    """Masked-LM masking rate (MosaicBERT 0.3, BERT 0.15); set only for encoder pretraining."""


@dataclass(kw_only=True)
class LoaderOptions:
    """Data loader settings shared by every loader kind."""

    drop_last: bool = True
    """Drop the last incomplete batch of an epoch."""
    num_workers: int = field(default=0, metadata=NON_NEGATIVE)
    """Data loader worker processes per rank."""
    pin_memory: bool = True
    """Pin host memory for faster host-to-GPU copies (ignored on CPU)."""
    prefetch_factor: int | None = field(default=None, metadata=POSITIVE)
    """Batches each worker loads ahead."""
    persistent_workers: bool = False
    """Keep workers alive between epochs."""
    timeout: float = field(default=0, metadata=NON_NEGATIVE)
    """Seconds to wait for a batch from a worker (0 = forever)."""
    label: str | None = None
    """eval_loader given as a list: this loader's name; its metrics are logged as loss/val/<label>."""


@dataclass(kw_only=True)
class LoaderConfig(LoaderOptions):
    dataset: DatasetConfig
    """Where the samples come from and how they are ordered."""
    name: Literal["text"] = "text"
    """Loader kind: `text` reads MDS shards from convert-dataset (tokenized or raw text); see also
    `finetuning` (prompt/response and chat examples) and `classification` (GLUE-style labelled text)."""


@dataclass
class FinetuneStreamConfig:
    local: str | None = None
    """Like the dataset's `local`: a file, a directory of them, or MDS (the cache directory when remote is set)."""
    remote: str | None = None
    """s3:// prefix of finetuning MDS (as the dataset's `remote`)."""
    split: str | None = None
    """Split of this stream (default: the dataset's)."""
    proportion: float | None = None
    """Not supported for finetuning (its streams are read whole, one after another)."""
    repeat: float | None = None
    """Not supported for finetuning."""
    choose: int | None = None
    """Not supported for finetuning."""

    def __post_init__(self) -> None:
        for name in ("proportion", "repeat", "choose"):
            if getattr(self, name) is not None:
                raise UserError(f"{name}: finetuning streams are read whole, one after another; mixing by "
                                "proportion/repeat/choose is for pretraining (text) streams")


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
    """Read with the `datasets` library, as LLM Foundry does: a local dataset directory, a `save_to_disk`
    directory, or a builder name (json, parquet, csv, text, arrow) with hf_kwargs.data_files; never the hub."""
    hf_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for `datasets.load_dataset` (data_files, data_dir, ...) when hf_name is set."""
    preprocessing_fn: str | dict[str, str] | None = None
    """Rows -> prompt/response (or messages): `module:function`, a name LLM Foundry registers
    (HuggingFaceH4/databricks_dolly_15k, tatsu-lab/alpaca, bigscience/P3, Muennighoff/P3, Muennighoff/flan,
    teknium/OpenHermes-2.5), or {prompt: COLUMN, response: COLUMN}; default: the one registered for hf_name."""
    streams: dict[str, FinetuneStreamConfig] | None = None
    """Several named sources read one after another (each a local/remote like the dataset's own)."""
    eos_token_id: int | None = None
    """Token that ends each response (default: the tokenizer's eos)."""
    split: str = "train"
    """Which split of a directory to read (`train`, `val`, `test`)."""
    max_seq_len: int = field(default=2048, metadata=POSITIVE)
    """Tokens per row; longer examples are truncated or skipped (see `truncation`)."""
    decoder_only_format: bool = True
    """Prompt and response in one sequence for a decoder (the only format supported: no encoder-decoders)."""
    shuffle: bool = True
    """Shuffle rows each epoch (deterministic from shuffle_seed, independent of world size)."""
    shuffle_seed: int = field(default=9176, metadata=SEED)
    """Seed of the row order and of the packing order."""
    packing_ratio: float | Literal["auto"] | None = field(default=None, metadata={"ge": 1})
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
    max_seq_len: int = field(default=128, metadata=POSITIVE)
    """Tokens per example (the pair is truncated longest-first; the count truncated is logged)."""
    shuffle: bool = True
    """Shuffle examples each epoch (deterministic from shuffle_seed)."""
    shuffle_seed: int = field(default=9176, metadata=SEED)
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
    lr: float = field(default=6.0e-4, metadata=NON_NEGATIVE)
    """Peak learning rate."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95], metadata={**PROBABILITY, "each": True, "len": 2})
    """Adam/Lion beta coefficients."""
    eps: float = field(default=1.0e-8, metadata={"gt": 0})
    """Adam epsilon."""
    weight_decay: float = field(default=0.0, metadata=NON_NEGATIVE)
    """Weight decay; never applied to biases, norms or embeddings (1-D parameters)."""


@dataclass
class SchedulerConfig:
    name: Literal[
        "cosine_with_warmup",
        "linear_decay_with_warmup",
        "constant_with_warmup",
        "inverse_sqrt",
        "warmup_stable_decay",
        "inv_sqrt_with_warmup",
    ] = "cosine_with_warmup"
    """Learning-rate schedule shape (inv_sqrt_with_warmup: LLM Foundry's, for continued pretraining)."""
    t_warmup: Duration = Duration(0, "ba")
    """Linear warmup length (a time string)."""
    alpha_f: float = field(default=0.0, metadata=NON_NEGATIVE)
    """Final learning rate as a fraction of the peak."""
    t_max: Duration = Duration(1.0, "dur")
    """Length of the decay (default: the whole run)."""
    t_cooldown: Duration = Duration(0.2, "dur")
    """warmup_stable_decay and inv_sqrt_with_warmup: length of the final linear decay phase."""
    t_scale: Duration | None = None
    """inv_sqrt_with_warmup: time scale of the decay, 1/sqrt((t - t_warmup + t_scale) / t_scale) (required)."""
    alpha_f_decay: float = 0.0
    """inv_sqrt_with_warmup: multiplier the inverse-square-root decay tends to at infinite time."""
    alpha_f_cooldown: float = 0.0
    """inv_sqrt_with_warmup: multiplier the final linear cooldown ends at (at most alpha_f_decay)."""

    def __post_init__(self) -> None:
        if self.name != "inv_sqrt_with_warmup":
            return
        if self.t_scale is None or self.t_scale.is_zero:
            raise UserError("t_scale: inv_sqrt_with_warmup needs a positive time scale, e.g. 1000ba")
        if self.alpha_f_decay < self.alpha_f_cooldown:
            raise UserError(f"alpha_f_cooldown: must be at most alpha_f_decay ({self.alpha_f_decay}), "
                            f"got {self.alpha_f_cooldown}")


@dataclass
class GradientClippingConfig:
    clipping_type: Literal["norm"] = "norm"
    """Clip the global gradient norm."""
    clipping_threshold: float = 1.0
    """Maximum global gradient norm (all ranks' shards together; the pre-clip norm is logged as `grad_norm`)."""

    def __post_init__(self) -> None:
        if not self.clipping_threshold > 0:
            raise UserError(f"clipping_threshold: must be positive, got {self.clipping_threshold}")


@dataclass
class SpikeGuardConfig:
    """A loss-spike guard: step t is a spike when its loss is not finite, or when at least `window` steps have
    been checked since the run (re)started and loss_t > factor x the mean loss of the previous `window`
    non-spike steps. Losses stay on the device and are checked at each log step and before each save (no extra
    host sync), so a spike is found at the latest `console_log_interval` steps later and no checkpoint after it
    is ever saved."""

    window: int = 20
    """Steps of loss history the mean is taken over (also the number of steps before the guard arms)."""
    factor: float = 2.0
    """A step's loss above this multiple of the running mean is a spike (must be > 1)."""
    action: Literal["stop", "rollback"] = "rollback"
    """stop: end the run with a one-line message. rollback: reload the last saved checkpoint (step c), skip the
    batches of steps c+1..t (the window that led to the spike) and continue; counted as `spike/rollbacks`."""
    max_rollbacks: int = 3
    """Stop instead of rolling back once this many rollbacks have happened in this process."""

    def __post_init__(self) -> None:
        if self.window < 1:
            raise UserError(f"window: must be at least 1 step, got {self.window}")
        if not self.factor > 1:
            raise UserError(f"factor: must be greater than 1, got {self.factor}")
        if self.max_rollbacks < 0:
            raise UserError(f"max_rollbacks: must be 0 or more, got {self.max_rollbacks}")


@dataclass
class AlgorithmsConfig:
    gradient_clipping: GradientClippingConfig | None = None
    """Global-norm gradient clipping (LLM Foundry's `algorithms.gradient_clipping`)."""


@dataclass
class FSDPConfig:
    sharding_strategy: Literal["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD", "_HYBRID_SHARD_ZERO2"] = \
        "FULL_SHARD"
    """FULL_SHARD: reshard parameters after forward; SHARD_GRAD_OP: keep them for backward; NO_SHARD: replicate;
    HYBRID_SHARD (_HYBRID_SHARD_ZERO2 keeps them for backward): shard within groups of
    data_parallel_shard_degree ranks (default: one node) and replicate across groups (a 2-D mesh)."""
    reshard_after_forward: bool | None = None
    """Overrides what sharding_strategy implies for FSDP2's reshard_after_forward."""
    mixed_precision: Literal["DEFAULT", "PURE", "FULL"] = "DEFAULT"
    """DEFAULT: compute in the autocast dtype, reduce gradients in fp32; PURE: reduce in low precision too; FULL: fp32."""
    activation_checkpointing: bool | Literal["none", "full", "selective"] = False
    """Recompute activations in backward: true/full (every block), selective (every other block), false/none."""
    compile: bool = False
    """torch.compile each block."""
    cpu_offload: bool = False
    """Keep sharded parameters, gradients and optimizer state in CPU memory (FSDP2 CPUOffloadPolicy; the
    optimizer steps on CPU). Needs several processes (sharding)."""
    activation_cpu_offload: bool = False
    """Move the activations each block saves for backward to (pinned) CPU memory and back when needed."""
    forward_prefetch: bool = True
    """All-gather the next forward_prefetch_limit blocks' parameters while the current block computes (on by
    default, as torchtitan does; LLM Foundry's yamls set it too)."""
    forward_prefetch_limit: int = 1
    """Blocks prefetched ahead in forward when forward_prefetch is on."""
    backward_prefetch: Literal["BACKWARD_PRE", "BACKWARD_POST"] | None = "BACKWARD_PRE"
    """Backward all-gathers ahead of use: BACKWARD_PRE or BACKWARD_POST prefetch backward_prefetch_limit blocks
    (FSDP2 issues them before the current block's gradient computation, i.e. as BACKWARD_PRE); null keeps
    FSDP2's own default, which is one block (FSDP2 cannot turn backward prefetching off)."""
    backward_prefetch_limit: int = 1
    """Blocks prefetched ahead in backward."""
    data_parallel_shard_degree: int = -1
    """HYBRID_SHARD: ranks each model is sharded over (-1: the processes of one node)."""
    data_parallel_replicate_degree: int = -1
    """HYBRID_SHARD: replicas of that sharded model (-1: world size / data_parallel_shard_degree)."""

    def __post_init__(self) -> None:
        for name in ("forward_prefetch_limit", "backward_prefetch_limit"):
            if getattr(self, name) < 1:
                raise UserError(f"{name}: must be at least 1, got {getattr(self, name)}")


@dataclass
class SpeedMonitorConfig:
    window_size: int = field(default=10, metadata=POSITIVE)
    """Batches averaged for tokens/s and MFU."""


@dataclass
class HFCheckpointerConfig:
    """LLM Foundry's `hf_checkpointer`: Hugging Face exports of the model while it trains."""

    save_folder: str
    """Where exports go: `{save_folder}/huggingface/{huggingface_folder_name}`; a local path or s3://bucket/prefix
    (S3_ENDPOINT_URL selects an S3-compatible store). `{run_name}` is expanded."""
    save_interval: Duration
    """How often to export (`500ba`, `1ep`; `1dur` = once, at the end). The last step always exports."""
    huggingface_folder_name: str = "ba{batch}"
    """Name of each export's folder; `{batch}` is the step."""
    precision: Literal["float32", "bfloat16", "float16"] = "float32"
    """dtype of the exported weights."""
    overwrite: bool = True
    """Replace an export folder of the same name."""


@dataclass
class EarlyStopperConfig:
    """Composer's `early_stopper`: stop when an eval metric stops improving."""

    monitor: str = "LanguageCrossEntropy"
    """Metric watched: LanguageCrossEntropy (our loss/val), LanguagePerplexity (perplexity/val), or a name we log."""
    dataloader_label: str = "eval"
    """Which eval loader (`eval`, or an eval_loader's label)."""
    comp: Literal["lt", "gt", "lower", "higher"] | None = None
    """Better means lower (lt) or higher (gt); default: lower for losses/perplexities, higher otherwise."""
    min_delta: float = 0.0
    """Smallest change that counts as an improvement."""
    patience: int | Duration = 1
    """Evaluations without improvement before stopping (an int), or a time string (`500ba`)."""


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
    hf_checkpointer: HFCheckpointerConfig | None = None
    """Export the model as a Hugging Face directory every save_interval (LLM Foundry's callback)."""
    early_stopper: EarlyStopperConfig | None = None
    """Stop training when an eval metric stops improving."""
    nan_monitor: dict[str, Any] | None = None
    """Composer's NaN monitor; always on here: a NaN/inf loss stops the run (see skip_nan_batches)."""


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
    eval_loader: AnyLoaderConfig | list[AnyLoaderConfig] | None = None
    """Validation data for loss and perplexity (and classification metrics); a list of loaders, each with a
    `label`, is evaluated loader by loader (loss/val/<label>, perplexity/val/<label>), as in LLM Foundry."""
    device_train_microbatch_size: int | Literal["auto"] = "auto"
    """Samples per forward/backward on one rank; `auto` finds the largest that fits, retrying after OOM."""
    device_eval_batch_size: int = field(default=8, metadata=POSITIVE)
    """Samples per eval forward on one rank."""
    eval_interval: Duration = Duration(1, "ep")
    """How often to evaluate (`500ba`); 0 disables evaluation during training."""
    eval_first: bool = False
    """Evaluate before the first step."""
    eval_subset_num_batches: int = field(default=-1, metadata={"ge": -1, "ne": 0, "hint": "-1 evaluates the whole eval set; eval_interval: 0 disables evaluation"})
    """Cap on eval batches per evaluation (-1 = whole eval set; 0 is refused: it would log val_loss=0)."""
    precision: Literal["fp32", "amp_bf16", "amp_fp16", "amp_fp8"] = "amp_bf16"
    """Compute precision; amp_fp16 uses dynamic loss scaling; amp_fp8: torchao float8 matmuls in the blocks
    (H100-class GPUs, compute capability 8.9+), bf16 elsewhere."""
    seed: int = field(default=17, metadata=SEED)
    """Seed for weights init, dropout and the data order."""
    max_seq_len: int | None = field(default=None, metadata=POSITIVE)
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
    """Run folder (config.yaml, metrics.jsonl, checkpoints/); default runs/{run_name}. An `s3://bucket/path`
    URL keeps the run in a local staging folder and uploads each checkpoint there (S3_ENDPOINT_URL selects an
    S3-compatible store); autoresume then continues from the bucket."""
    save_staging_folder: str | None = None
    """With an s3:// save_folder: the local folder the run is written in before upload (default
    ~/.cache/llmfoundry/s3/BUCKET/PATH, or under $XDG_CACHE_HOME); must be shared by all ranks, like save_folder."""
    save_async: bool = False
    """Write checkpoints in the background (DCP async_save): training pauses only to copy the state into one
    staging buffer in CPU memory (one checkpoint's size); at most one save is in flight."""
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
    spike_guard: SpikeGuardConfig | None = None
    """Loss-spike guard (off by default): stop, or roll back to the last checkpoint and skip the batches that led
    to a spike, when a step's loss exceeds `factor` x the running mean of the last `window` steps."""
    dist_timeout: float = field(default=600.0, metadata={"gt": 0})
    """Seconds a collective waits for the other ranks before it fails (then torchrun restarts the group, or the run
    stops naming the rank that died or stalled). Also sets the heartbeat period: dist_timeout/4, at most 30 s."""
    expandable_segments: bool = False
    """CUDA: let the caching allocator grow segments (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True), which
    reduces fragmentation with varying shapes; no effect on CPU."""
    icl_tasks: list[dict[str, Any]] | str | None = None
    """In-context-learning tasks evaluated at eval_interval (a list, or a path to a yaml with the list)."""
    eval_gauntlet: dict[str, Any] | str | None = None
    """Gauntlet aggregation of icl_tasks results."""
    icl_seq_len: int | None = field(default=None, metadata=POSITIVE)
    """Maximum sequence length for ICL evaluation (default: the model's)."""

    @classmethod
    def config_expand(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """LLM Foundry-only keys are mapped (config/foundry_compat.py); loaders without a `name` are `text`
        loaders, as before finetuning loaders existed."""
        from llmfoundry.config.foundry_compat import translate_train

        raw, _ = translate_train(raw)
        for key in ("train_loader", "eval_loader"):
            loader = raw.get(key)
            if isinstance(loader, dict) and "name" not in loader:
                raw[key] = {**loader, "name": "text"}
            elif isinstance(loader, list):
                raw[key] = [{**x, "name": "text"} if isinstance(x, dict) and "name" not in x else x for x in loader]
        return raw

    @property
    def eval_loaders(self) -> list[AnyLoaderConfig]:
        """eval_loader as a list (empty without one)."""
        if self.eval_loader is None:
            return []
        return self.eval_loader if isinstance(self.eval_loader, list) else [self.eval_loader]

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
        if not self.dist_timeout > 0:
            raise UserError(f"dist_timeout: must be a positive number of seconds, got {self.dist_timeout}")
        if self.save_folder is None:
            self.save_folder = f"runs/{self.run_name}"
        if isinstance(self.eval_loader, list):
            labels = [loader.label for loader in self.eval_loader]
            if None in labels or len(set(labels)) != len(labels):
                raise UserError(f"eval_loader: a list of loaders needs a distinct label on each, got {labels}")
        if "://" in self.save_folder and not self.save_folder.startswith("s3://"):
            raise UserError(f"save_folder: {self.save_folder}: only local paths and s3:// URLs are supported")
        if self.save_staging_folder is not None and not self.save_folder.startswith("s3://"):
            raise UserError("save_staging_folder: only used with an s3:// save_folder; save_folder is "
                            f"{self.save_folder}")
