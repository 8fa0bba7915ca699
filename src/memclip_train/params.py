"""The training configuration: nested dataclasses validated when built, and the command line that fills them.

Flag names follow open_clip_train (``--train-data``, ``--batch-size``, ``--precision amp_bf16``, ...). Every field
lands in ``params.txt`` and in each checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import memclip

from .cli import add_debug_flag

PRECISIONS = ("fp32", "amp", "amp_bf16")
DATASET_TYPES = ("webdataset", "csv", "auto")
DISTILL_LOSSES = ("cosine", "mse", "l2")
TRAINABLE_PARTS = ("memory", "visual", "text", "logit_scale", "all")
REPORT_TO = ("tensorboard", "wandb", "none")
PROG = "python -m memclip_train.main"


class ConfigError(ValueError):
    """A bad flag or a bad combination of flags; the message names them."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class DataConfig:
    """Where samples come from and how they are read.

    ``caption_key``/``long_caption_key`` name a webdataset field (``txt``) or a field inside the json
    (``json.short``, ``json.long``). Without a short caption, the long caption's first sentence is used.
    """

    train_data: Optional[str] = None
    val_data: Optional[str] = None
    dataset_type: str = "auto"
    dataset_resampled: bool = False
    train_num_samples: Optional[int] = None
    val_num_samples: Optional[int] = None
    workers: int = 1
    caption_key: str = "txt"
    long_caption_key: str = "json.long"
    csv_img_key: str = "filepath"
    csv_caption_key: str = "title"
    csv_long_caption_key: Optional[str] = None
    csv_separator: str = "\t"
    shuffle_buffer: int = 1000

    def __post_init__(self) -> None:
        _check(self.dataset_type in DATASET_TYPES, f"--dataset-type {self.dataset_type!r}: one of {DATASET_TYPES}")
        _check(self.workers >= 0, f"--workers {self.workers}: must be >= 0")
        for name in ("train_num_samples", "val_num_samples"):
            value = getattr(self, name)
            _check(value is None or value > 0, f"--{name.replace('_', '-')} {value}: must be positive")
        _check(self.shuffle_buffer >= 1, f"--shuffle-buffer {self.shuffle_buffer}: must be >= 1")


@dataclass(frozen=True)
class ModelConfig:
    """The model being trained and its text tower."""

    model: str = "ViT-Tiny-8"
    pretrained: Optional[str] = None
    precision: str = "amp_bf16"
    grad_checkpointing: bool = False
    lock_text: bool = False
    trainable: Optional[Tuple[str, ...]] = None
    value_lr: Optional[float] = None
    text_tower: Optional[str] = None
    text_context_length: Optional[int] = None
    text_pos_stretch: Optional[str] = None
    rope_ntk_factor: Optional[float] = None
    memory: Tuple[Tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        _check(self.precision in PRECISIONS, f"--precision {self.precision!r}: one of {PRECISIONS}")
        if self.trainable is not None:
            bad = [p for p in self.trainable if p not in TRAINABLE_PARTS]
            _check(not bad and bool(self.trainable), f"--trainable {','.join(self.trainable)}: parts are "
                                                     f"{TRAINABLE_PARTS}")
        _check(self.value_lr is None or self.value_lr >= 0, f"--value-lr {self.value_lr}: must be >= 0")
        if self.text_tower is not None:
            _check(self.text_tower.split(":", 1)[0] in ("clip", "rope"),
                   f"--text-tower {self.text_tower!r}: clip, rope or rope:PATH")
        _check(self.text_pos_stretch is None or self.text_context_length is not None,
               "--text-pos-stretch needs --text-context-length")

    @property
    def memory_overrides(self) -> Optional[Dict[str, Any]]:
        """``--memory`` settings as the ``memory`` argument of ``memclip.create_model`` (None: the config's)."""
        return dict(self.memory) if self.memory else None

    @property
    def text_tower_kind(self) -> Optional[str]:
        return self.text_tower.split(":", 1)[0] if self.text_tower else None

    @property
    def text_tower_path(self) -> Optional[str]:
        return self.text_tower.split(":", 1)[1] if self.text_tower and ":" in self.text_tower else None


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with warmup and a cosine (or constant) schedule; value tables keep their fixed lr."""

    batch_size: int = 64
    epochs: int = 32
    lr: float = 5e-4
    wd: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup: int = 10000
    lr_scheduler: str = "cosine"
    accum_freq: int = 1
    grad_clip_norm: Optional[float] = None

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, f"--batch-size {self.batch_size}: must be >= 1")
        _check(self.epochs >= 1, f"--epochs {self.epochs}: must be >= 1")
        _check(self.lr >= 0 and self.wd >= 0, "--lr and --wd must be >= 0")
        _check(self.warmup >= 0, f"--warmup {self.warmup}: must be >= 0")
        _check(self.lr_scheduler in ("cosine", "const"), f"--lr-scheduler {self.lr_scheduler!r}: cosine or const")
        _check(self.accum_freq >= 1, f"--accum-freq {self.accum_freq}: must be >= 1")
        _check(self.grad_clip_norm is None or self.grad_clip_norm > 0, "--grad-clip-norm must be > 0")


@dataclass(frozen=True)
class TaskConfig:
    """What is learned: contrastive (default), image distillation, long+short fine-tuning or text distillation."""

    distill: bool = False
    distill_teacher: Optional[str] = None
    distill_trainable: Tuple[str, ...] = ("memory",)
    distill_loss: str = "cosine"
    distill_layer_weight: float = 0.0
    distill_text: bool = False
    long_short_alpha: Optional[float] = None
    local_loss: bool = False
    gather_with_grad: bool = False

    def __post_init__(self) -> None:
        _check(self.distill_loss in DISTILL_LOSSES, f"--distill-loss {self.distill_loss!r}: one of {DISTILL_LOSSES}")
        _check(self.distill_layer_weight >= 0, f"--distill-layer-weight {self.distill_layer_weight}: must be >= 0")
        bad = [p for p in self.distill_trainable if p not in TRAINABLE_PARTS]
        _check(not bad, f"--distill-trainable: parts are {TRAINABLE_PARTS}, got {bad}")
        _check(self.long_short_alpha is None or 0.0 <= self.long_short_alpha <= 1.0,
               f"--long-short-alpha {self.long_short_alpha}: must be in [0, 1]")
        chosen = [name for name, on in (("--distill", self.distill), ("--distill-text", self.distill_text),
                                        ("--long-short-alpha", self.long_short_alpha is not None)) if on]
        _check(len(chosen) <= 1, f"{' and '.join(chosen)} cannot be combined: pick one task per run")

    @property
    def kind(self) -> str:
        if self.distill:
            return "distill"
        if self.distill_text:
            return "distill_text"
        if self.long_short_alpha is not None:
            return "long_short"
        return "contrastive"


@dataclass(frozen=True)
class LoggingConfig:
    """Where the run writes, how often, and how it resumes."""

    logs: str = "./logs"
    name: Optional[str] = None
    report_to: Tuple[str, ...] = ()
    log_every_n_steps: int = 100
    save_frequency: int = 1
    save_every_n_steps: int = 0
    val_frequency: int = 1
    resume: Optional[str] = None
    progress: bool = True
    debug: bool = False

    def __post_init__(self) -> None:
        bad = [r for r in self.report_to if r not in REPORT_TO]
        _check(not bad, f"--report-to {','.join(self.report_to)}: choose from {REPORT_TO}")
        _check(self.log_every_n_steps >= 1, "--log-every-n-steps must be >= 1")
        _check(self.save_frequency >= 0 and self.save_every_n_steps >= 0, "save frequencies must be >= 0")
        _check(self.val_frequency >= 0, "--val-frequency must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs. Build with :func:`parse_args` or directly (tests do)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    seed: int = 0
    device: Optional[str] = None

    def __post_init__(self) -> None:
        _check(self.data.train_data is not None, "--train-data is required (webdataset shards or a CSV file)")
        if self.task.kind == "distill_text":
            _check(self.model.text_tower_kind == "rope", "--distill-text trains a RoPE tower: add --text-tower rope")
        if self.task.distill:
            _check(self.model.pretrained or self.task.distill_teacher,
                   "--distill needs teacher weights: --pretrained TAG_OR_FILE or --distill-teacher PATH")

    @property
    def run_name(self) -> str:
        return self.logging.name or f"{time.strftime('%Y_%m_%d-%H_%M_%S')}-{self.model.model}-{self.task.kind}"

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _memory_setting(text: str) -> Tuple[str, Any]:
    """``knn=32``, ``layers=2,3``, ``mode=parallel``, ``gated=true`` -> (key, value) with a typed value."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--memory {text!r}: expected KEY=VALUE, e.g. knn=32 or layers=2,3")
    if key == "layers":
        return key, tuple(int(v) for v in raw.split(",") if v.strip())
    if raw.lower() in ("true", "false"):
        return key, raw.lower() == "true"
    for cast in (int, float):
        try:
            return key, cast(raw)
        except ValueError:
            pass
    return key, raw


def _parts(text: str) -> Tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train CLIP models with open_clip-style flags: contrastive, --distill (memory from a frozen "
                    "teacher), --long-short-alpha (stage 2), --distill-text (a RoPE text tower).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d, m, o, t, lg = DataConfig(), ModelConfig(), OptimConfig(), TaskConfig(), LoggingConfig()
    g = p.add_argument_group("data")
    g.add_argument("--train-data", help="webdataset shards (brace expansion, '::' joins sources) or a CSV file")
    g.add_argument("--val-data", help="validation shards or CSV (retrieval R@1/5 and the distillation cosine)")
    g.add_argument("--dataset-type", default=d.dataset_type, choices=DATASET_TYPES)
    g.add_argument("--dataset-resampled", action="store_true", help="sample shards with replacement")
    g.add_argument("--train-num-samples", type=int, help="samples per epoch (default: from sizes.json)")
    g.add_argument("--val-num-samples", type=int)
    g.add_argument("--workers", type=int, default=d.workers, help="data loader processes per GPU")
    g.add_argument("--caption-key", default=d.caption_key, help="short caption: 'txt' or a json field 'json.short'")
    g.add_argument("--long-caption-key", default=d.long_caption_key, help="long caption field, e.g. 'json.long'")
    g.add_argument("--csv-img-key", default=d.csv_img_key)
    g.add_argument("--csv-caption-key", default=d.csv_caption_key)
    g.add_argument("--csv-long-caption-key", default=d.csv_long_caption_key)
    g.add_argument("--csv-separator", default=d.csv_separator)
    g.add_argument("--shuffle-buffer", type=int, default=d.shuffle_buffer, help="samples in the shuffle buffer")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=m.model)
    g.add_argument("--pretrained", help="open_clip tag of the teacher, a checkpoint file, or a saved memclip folder")
    g.add_argument("--precision", default=m.precision, choices=PRECISIONS)
    g.add_argument("--grad-checkpointing", action="store_true")
    g.add_argument("--lock-text", action="store_true", help="freeze the text tower")
    g.add_argument("--trainable", type=_parts, help=f"comma list of {TRAINABLE_PARTS} (default: per task)")
    g.add_argument("--value-lr", type=float, help="override the memory values' fixed learning rate")
    g.add_argument("--memory", type=_memory_setting, action="append", default=[], metavar="KEY=VALUE",
                   help="override a memory knob of --model (repeat): layers=8,10,11 n_keys=32 knn=16 mode=parallel")
    g.add_argument("--text-tower", help="clip, rope, or rope:PATH (a distilled RoPE tower to load)")
    g.add_argument("--text-context-length", type=int, help="text tokens read (e.g. 248)")
    g.add_argument("--text-pos-stretch", choices=("longclip", "interpolate"), help="how a CLIP tower reaches it")
    g.add_argument("--rope-ntk-factor", type=float, help="NTK-aware RoPE context extension factor")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=o.batch_size, help="per-GPU batch size")
    g.add_argument("--epochs", type=int, default=o.epochs)
    g.add_argument("--lr", type=float, default=o.lr)
    g.add_argument("--wd", type=float, default=o.wd)
    g.add_argument("--beta1", type=float, default=o.beta1)
    g.add_argument("--beta2", type=float, default=o.beta2)
    g.add_argument("--eps", type=float, default=o.eps)
    g.add_argument("--warmup", type=int, default=o.warmup, help="warmup steps")
    g.add_argument("--lr-scheduler", default=o.lr_scheduler, choices=("cosine", "const"))
    g.add_argument("--accum-freq", type=int, default=o.accum_freq, help="micro-batches per optimizer step")
    g.add_argument("--grad-clip-norm", type=float)
    g = p.add_argument_group("task")
    g.add_argument("--distill", action="store_true", help="distil the memory student from its frozen teacher")
    g.add_argument("--distill-teacher", help="teacher weights (default: --pretrained)")
    g.add_argument("--distill-trainable", type=_parts, default=t.distill_trainable)
    g.add_argument("--distill-loss", default=t.distill_loss, choices=DISTILL_LOSSES)
    g.add_argument("--distill-layer-weight", type=float, default=t.distill_layer_weight,
                   help="weight of the per-memory-block 1 - cos(memory read-out, teacher MLP output) terms")
    g.add_argument("--distill-text", action="store_true", help="distil a RoPE text tower from the CLIP tower")
    g.add_argument("--long-short-alpha", type=float, help="stage 2: alpha * L_long + (1 - alpha) * L_short")
    g.add_argument("--local-loss", action="store_true", help="contrastive logits only against local samples")
    g.add_argument("--gather-with-grad", action="store_true", help="all-gather features with gradients")
    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--logs", "--logs-dir", dest="logs", default=lg.logs,
                   help="folder of run folders (under torchrun write --logs-dir: torchrun takes --logs for its own "
                        "--logs-specs)")
    g.add_argument("--name", help="run folder name under --logs (default: date, model and task)")
    g.add_argument("--report-to", type=_parts, default=lg.report_to, help="tensorboard,wandb or none")
    g.add_argument("--log-every-n-steps", type=int, default=lg.log_every_n_steps)
    g.add_argument("--save-frequency", type=int, default=lg.save_frequency, help="save epoch_N.pt every N epochs")
    g.add_argument("--save-every-n-steps", type=int, default=lg.save_every_n_steps,
                   help="also refresh epoch_latest.pt every N steps (mid-epoch resume)")
    g.add_argument("--val-frequency", type=int, default=lg.val_frequency, help="validate every N epochs")
    g.add_argument("--resume", help="a checkpoint path, or 'latest' for the newest in this run's folder")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda if available)")
    add_debug_flag(p)
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    report_to = tuple(r for r in args.report_to if r != "none")
    return TrainConfig(
        data=DataConfig(args.train_data, args.val_data, args.dataset_type, args.dataset_resampled,
                        args.train_num_samples, args.val_num_samples, args.workers, args.caption_key,
                        args.long_caption_key, args.csv_img_key, args.csv_caption_key, args.csv_long_caption_key,
                        args.csv_separator, args.shuffle_buffer),
        model=ModelConfig(args.model, args.pretrained, args.precision, args.grad_checkpointing, args.lock_text,
                          args.trainable, args.value_lr, args.text_tower, args.text_context_length,
                          args.text_pos_stretch, args.rope_ntk_factor, tuple(args.memory)),
        optim=OptimConfig(args.batch_size, args.epochs, args.lr, args.wd, args.beta1, args.beta2, args.eps,
                          args.warmup, args.lr_scheduler, args.accum_freq, args.grad_clip_norm),
        task=TaskConfig(args.distill, args.distill_teacher, args.distill_trainable, args.distill_loss,
                        args.distill_layer_weight, args.distill_text, args.long_short_alpha, args.local_loss,
                        args.gather_with_grad),
        logging=LoggingConfig(args.logs, args.name, report_to, args.log_every_n_steps, args.save_frequency,
                              args.save_every_n_steps, args.val_frequency, args.resume, not args.no_progress,
                              debug=args.debug),
        seed=args.seed,
        device=args.device,
    )


def parse_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """Parse the command line into a validated :class:`TrainConfig`; bad flags exit with code 2 and a message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        check_model(config)
        return config
    except ConfigError as error:  # one line, as every user error (argparse's own errors add the usage)
        parser.exit(2, f"{parser.prog}: error: {error}\n")


def check_model(config: TrainConfig) -> None:
    """``--model`` is known and ``--memory`` makes a valid memory config for it (checked before any run folder).

    Raises:
        ConfigError: naming the flag and what is wrong.
    """
    try:
        spec = memclip.get_model_spec(config.model.model)
    except memclip.InputError as error:
        raise ConfigError(f"--model {config.model.model}: {error}") from error
    if config.model.memory:
        base = spec.memory.to_dict() if spec.memory is not None else {}
        try:
            memclip.MemoryConfig.from_dict({**base, **dict(config.model.memory)}).check_layers(
                spec.model_cfg["vision_cfg"]["layers"])
        except (ValueError, TypeError) as error:
            raise ConfigError(f"--memory {' '.join(f'{k}={v}' for k, v in config.model.memory)}: {error}") from error


def format_params(config: TrainConfig) -> List[str]:
    """``section.field: value`` lines for params.txt, sorted."""
    lines = []
    for section, values in sorted(config.to_dict().items()):
        if isinstance(values, dict):
            lines.extend(f"{section}.{key}: {value}" for key, value in sorted(values.items()))
        else:
            lines.append(f"{section}: {values}")
    return lines
