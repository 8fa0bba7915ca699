"""The training configuration: nested dataclasses validated when built, and the command line that fills them.

Flag names follow open_clip_train (``--train-data``, ``--batch-size``, ``--precision amp_bf16``, ...). Every field
lands in ``params.txt`` and in each checkpoint.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import memclip
from memclip.precision import PRECISIONS

from .error_reporting import UserError, add_debug_flag
from .train_argv import CONFIG_FLAGS, expand_recipe_file, to_argv

DATASET_TYPES = ("webdataset", "csv", "synth-stream", "auto")
DISTILL_LOSSES = ("cosine", "mse", "l2")
TRAINABLE_PARTS = ("memory", "visual", "text", "logit_scale", "all")
REPORT_TO = ("tensorboard", "wandb")
"""The loggers ``--report-to`` takes, comma-separated; ``all`` means both and ``none`` neither (as in
open_clip_train)."""
LR_SCHEDULERS = ("cosine", "const", "const-cooldown")
SIGLIP_DIST_IMPLS = ("bidir", "shift", "reduce", "gather")
PROG = "python -m memclip_train.main"

INAPPLICABLE_FLAGS: Dict[str, Tuple[bool, str]] = {
    # open_clip_train flag: (whether it takes a value, why memclip refuses it)
    "--horovod": (False, "memclip runs under torchrun or SLURM's srun (DDP), not Horovod"),
    "--coca-caption-loss-weight": (True, "memclip trains CLIP towers; CoCa's captioning loss does not apply"),
    "--coca-contrastive-loss-weight": (True, "memclip trains CLIP towers; CoCa's captioning loss does not apply"),
    "--remote-sync": (True, "no remote sync: write --logs to storage every node sees (checkpoints are atomic)"),
    "--remote-sync-frequency": (True, "no remote sync: write --logs to storage every node sees"),
    "--remote-sync-protocol": (True, "no remote sync: write --logs to storage every node sees"),
    "--copy-codebase": (False, "memclip is an installed package; params.txt and each checkpoint record its config"),
    "--torchscript": (False, "memory layers (custom autograd ops, Triton kernels) cannot be TorchScript-compiled; "
                             "use --torchcompile"),
    "--trace": (False, "open_clip traces models for inference only; memclip trains (use --torchcompile)"),
    "--use-bnb-linear": (True, "bitsandbytes int8 layers are not supported with memory layers"),
}
"""open_clip_train 3.3 flags that cannot apply to memclip: passing one stops with its reason."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def _is_non_negative_number(text: str) -> bool:
    try:
        return math.isfinite(float(text)) and float(text) >= 0
    except ValueError:
        return False


def _finite(value: Optional[float]) -> bool:
    """Whether a number flag holds a real number (None: not given). NaN and infinities, in any spelling argparse's
    ``float`` accepts (``nan``, ``NaN``, ``inf``, ``1e999``), are not."""
    return value is None or math.isfinite(value)


def _check_number(flag: str, value: Optional[float], low: float = None, high: float = None,
                  low_open: bool = False, high_open: bool = False) -> None:
    """A number flag (None: not given) is finite and inside its range; the message names the flag, its value and the
    range."""
    if value is None:
        return
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if not math.isfinite(value) or below or above:
        lower = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        upper = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        if low is not None and high is not None:
            where = f" in {lower}, {upper}"
        elif low is not None:
            where = f" {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            where = f" {'<' if high_open else '<='} {high:g}"
        else:
            where = ""
        raise UserError(f"{flag} {value}: must be a finite number{where}")


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
    imagenet_val: Optional[str] = None
    imagenet_v2: Optional[str] = None
    zeroshot_synth: Optional[str] = None
    train_data_upsampling_factors: Optional[str] = None

    def __post_init__(self) -> None:
        _check(self.dataset_type in DATASET_TYPES, f"--dataset-type {self.dataset_type!r}: one of {DATASET_TYPES}"
               + (" (memclip's synthetic data is a world of its own: python -m memclip_train.synth)"
                  if self.dataset_type == "synthetic" else ""))
        if self.train_data_upsampling_factors is not None:
            factors = self.train_data_upsampling_factors.split("::")
            sources = (self.train_data or "").split("::")
            _check(self.dataset_resampled, "--train-data-upsampling-factors needs --dataset-resampled (sampling with "
                                           "replacement), as in open_clip_train")
            _check(len(factors) == len(sources), f"--train-data-upsampling-factors: {len(factors)} factors for "
                                                 f"{len(sources)} '::'-separated --train-data sources")
            _check(all(_is_non_negative_number(f) for f in factors) and any(float(f) > 0 for f in factors),
                   f"--train-data-upsampling-factors {self.train_data_upsampling_factors!r}: finite numbers >= 0, "
                   "at least one above 0")
        _check(self.workers >= 0, f"--workers {self.workers}: must be >= 0")
        for name in ("train_num_samples", "val_num_samples"):
            value = getattr(self, name)
            _check(value is None or value > 0, f"--{name.replace('_', '-')} {value}: must be positive")
        _check(self.shuffle_buffer >= 1, f"--shuffle-buffer {self.shuffle_buffer}: must be >= 1")
        for flag, key in (("--caption-key", self.caption_key), ("--long-caption-key", self.long_caption_key),
                          ("--csv-img-key", self.csv_img_key), ("--csv-caption-key", self.csv_caption_key),
                          ("--csv-separator", self.csv_separator)):
            _check(bool(key), f"{flag} is empty: name a field (or, for --csv-separator, a separator)")
        _check(self.csv_long_caption_key is None or bool(self.csv_long_caption_key),
               "--csv-long-caption-key is empty: name a column")


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
    text_names: int = 0
    text_names_seed: int = 0
    memory: Tuple[Tuple[str, Any], ...] = ()
    cache_dir: Optional[str] = None
    pretrained_image: bool = False
    lock_image: bool = False
    lock_image_unlocked_groups: int = 0
    lock_image_freeze_bn_stats: bool = False
    lock_text_unlocked_layers: int = 0
    lock_text_freeze_layer_norm: bool = False
    force_context_length: Optional[int] = None
    force_image_size: Optional[Union[int, Tuple[int, ...]]] = None
    force_quick_gelu: bool = False
    force_patch_dropout: Optional[float] = None
    force_custom_text: bool = False
    image_mean: Optional[Tuple[float, ...]] = None
    image_std: Optional[Tuple[float, ...]] = None
    image_interpolation: Optional[str] = None
    image_resize_mode: Optional[str] = None
    aug_cfg: Tuple[Tuple[str, Any], ...] = ()
    torchcompile: bool = False

    def __post_init__(self) -> None:
        _check(self.precision in PRECISIONS, f"--precision {self.precision!r}: one of {PRECISIONS}")
        _check(self.lock_image_unlocked_groups >= 0 and self.lock_text_unlocked_layers >= 0,
               "--lock-image-unlocked-groups and --lock-text-unlocked-layers must be >= 0")
        _check(self.force_patch_dropout is None or 0 <= self.force_patch_dropout < 1,
               f"--force-patch-dropout {self.force_patch_dropout}: must be in [0, 1)")
        if self.trainable is not None:
            bad = [p for p in self.trainable if p not in TRAINABLE_PARTS]
            _check(not bad and bool(self.trainable), f"--trainable {','.join(self.trainable)}: parts are "
                                                     f"{TRAINABLE_PARTS}")
        _check_number("--value-lr", self.value_lr, low=0)
        for flag, value in (("--text-context-length", self.text_context_length),
                            ("--force-context-length", self.force_context_length)):
            _check(value is None or value >= 1, f"{flag} {value}: must be at least 1 token")
        _check_number("--rope-ntk-factor", self.rope_ntk_factor, low=0, low_open=True)
        sizes = (self.force_image_size,) if isinstance(self.force_image_size, int) else self.force_image_size or ()
        _check(len(sizes) <= 2 and all(size >= 1 for size in sizes),
               f"--force-image-size {' '.join(map(str, sizes))}: one or two sizes (height width), each >= 1")
        for flag, values in (("--image-mean", self.image_mean), ("--image-std", self.image_std)):
            _check(values is None or len(values) in (1, 3), f"{flag} {values}: one value, or three (R G B)")
            for value in values or ():
                _check_number(flag, value, low=0 if flag == "--image-std" else None,
                              low_open=flag == "--image-std")
        _check_aug_cfg(dict(self.aug_cfg))
        if self.text_tower is not None:
            kind, _, path = self.text_tower.partition(":")
            _check(kind in ("clip", "rope") or (kind == "tulip" and path) or self.text_tower == "names",
                   f"--text-tower {self.text_tower!r}: clip, rope, rope:PATH (a memclip RoPE tower), tulip:PATH "
                   "(TULIP's released text encoder, in its own checkpoint format) or names")
        _check((self.text_tower == "names") == (self.text_names > 0),
               "--text-tower names needs --text-names K (K >= 1), and --text-names needs --text-tower names")
        _check(self.text_pos_stretch is None or self.text_context_length is not None,
               "--text-pos-stretch needs --text-context-length")

    @property
    def create_kwargs(self) -> Dict[str, Any]:
        """open_clip's model-creation overrides (``--force-*``, ``--cache-dir``, ``--pretrained-image``, precision)
        as keyword arguments of ``memclip.create_model``."""
        kwargs: Dict[str, Any] = {"precision": self.precision, "cache_dir": self.cache_dir,
                                  "force_quick_gelu": self.force_quick_gelu,
                                  "force_patch_dropout": self.force_patch_dropout,
                                  "force_image_size": self.force_image_size,
                                  "force_context_length": self.force_context_length,
                                  "force_custom_text": self.force_custom_text}
        if self.pretrained_image:
            kwargs["pretrained_image"] = True
        return kwargs

    @property
    def preprocess_overrides(self) -> Dict[str, Any]:
        """``--image-mean/-std/-interpolation/-resize-mode`` as open_clip preprocess-config keys."""
        values = {"mean": self.image_mean, "std": self.image_std, "interpolation": self.image_interpolation,
                  "resize_mode": self.image_resize_mode}
        return {k: v for k, v in values.items() if v is not None}

    @property
    def memory_overrides(self) -> Optional[Dict[str, Any]]:
        """``--memory`` settings as the ``memory`` argument of ``memclip.create_model`` (None: the config's)."""
        return dict(self.memory) if self.memory else None

    @property
    def text_tower_kind(self) -> Optional[str]:
        """``clip`` or ``rope`` (TULIP's tower is a RoPE tower)."""
        if not self.text_tower:
            return None
        kind = self.text_tower.split(":", 1)[0]
        return "rope" if kind == "tulip" else kind

    @property
    def text_tower_path(self) -> Optional[str]:
        """The weights of the text tower: a path, or ``tulip:PATH`` for TULIP's format (``text_pretrained``)."""
        if not self.text_tower or ":" not in self.text_tower:
            return None
        kind, path = self.text_tower.split(":", 1)
        return self.text_tower if kind == "tulip" else path


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with warmup and a cosine (or constant) schedule; value tables keep their fixed lr.

    ``warmup`` counts optimizer steps (None: open_clip's 10000, or 5% of a run too short for it); ``warmup_fraction``,
    when set, replaces it with that share of the run's steps (the same schedule shape at any run length). A warmup
    given as long as the run is refused when the run starts (:func:`memclip_train.schedule.warmup_steps`).
    """

    batch_size: int = 64
    epochs: int = 32
    lr: float = 5e-4
    wd: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup: Optional[int] = None
    warmup_fraction: Optional[float] = None
    lr_scheduler: str = "cosine"
    accum_freq: int = 1
    grad_clip_norm: Optional[float] = None
    opt: str = "adamw"
    momentum: Optional[float] = None
    skip_scheduler: bool = False
    epochs_cooldown: Optional[int] = None
    lr_cooldown_end: float = 0.0
    lr_cooldown_power: float = 1.0

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, f"--batch-size {self.batch_size}: must be >= 1")
        _check(self.epochs >= 1, f"--epochs {self.epochs}: must be >= 1")
        _check_number("--lr", self.lr, low=0)
        _check_number("--wd", self.wd, low=0)
        _check_number("--beta1", self.beta1, low=0, high=1, high_open=True)
        _check_number("--beta2", self.beta2, low=0, high=1, high_open=True)
        _check_number("--eps", self.eps, low=0)
        _check_number("--momentum", self.momentum, low=0, high=1, high_open=True)
        _check_number("--lr-cooldown-end", self.lr_cooldown_end, low=0)
        _check_number("--lr-cooldown-power", self.lr_cooldown_power, low=0, low_open=True)
        _check(self.lr_scheduler != "const-cooldown" or self.lr_cooldown_end <= self.lr,
               f"--lr-cooldown-end {self.lr_cooldown_end:g} is above --lr {self.lr:g}: the cooldown would raise the "
               "learning rate")
        _check(self.warmup is None or self.warmup >= 0, f"--warmup {self.warmup}: must be >= 0")
        _check_number("--warmup-fraction", self.warmup_fraction, low=0, high=1, high_open=True)
        _check(self.lr_scheduler in LR_SCHEDULERS, f"--lr-scheduler {self.lr_scheduler!r}: one of {LR_SCHEDULERS}")
        _check(self.lr_scheduler != "const-cooldown" or self.epochs_cooldown is not None,
               "--lr-scheduler const-cooldown needs --epochs-cooldown N (the last N epochs decay)")
        _check(self.epochs_cooldown is None or 0 < self.epochs_cooldown <= self.epochs,
               f"--epochs-cooldown {self.epochs_cooldown}: must be in [1, --epochs]")
        _check(self.opt == "adamw" or (self.opt.startswith("timm/") and len(self.opt) > 5),
               f"--opt {self.opt!r}: 'adamw' or a timm optimizer 'timm/NAME' (e.g. timm/sgd, timm/lamb)")
        _check(self.accum_freq >= 1, f"--accum-freq {self.accum_freq}: must be >= 1")
        _check_number("--grad-clip-norm", self.grad_clip_norm, low=0, low_open=True)


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
    siglip: bool = False
    loss_dist_impl: Optional[str] = None
    distill_model: Optional[str] = None
    distill_pretrained: Optional[str] = None

    def __post_init__(self) -> None:
        _check(self.loss_dist_impl is None or self.loss_dist_impl in SIGLIP_DIST_IMPLS,
               f"--loss-dist-impl {self.loss_dist_impl!r}: one of {SIGLIP_DIST_IMPLS}")
        _check((self.distill_model is None) == (self.distill_pretrained is None),
               "--distill-model and --distill-pretrained go together (open_clip_train's logit distillation)")
        _check(self.distill_model is None or self.kind == "contrastive",
               "--distill-model distils contrastive training from another CLIP; it cannot be combined with "
               "--distill, --distill-text or --long-short-alpha")
        _check(not (self.siglip and self.distill_model), "--siglip and --distill-model cannot be combined (as in "
                                                        "open_clip_train, logit distillation is CLIP's softmax loss)")
        _check(self.distill_loss in DISTILL_LOSSES, f"--distill-loss {self.distill_loss!r}: one of {DISTILL_LOSSES}")
        _check_number("--distill-layer-weight", self.distill_layer_weight, low=0)
        bad = [p for p in self.distill_trainable if p not in TRAINABLE_PARTS]
        _check(not bad, f"--distill-trainable: parts are {TRAINABLE_PARTS}, got {bad}")
        _check_number("--long-short-alpha", self.long_short_alpha, low=0, high=1)
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
    resume_with_changes: bool = False
    progress: bool = True
    zeroshot_frequency: int = 2
    log_local: bool = False
    debug: bool = False
    wandb_project_name: str = "memclip"
    wandb_notes: str = ""
    save_most_recent: bool = False
    delete_previous_checkpoint: bool = False

    def __post_init__(self) -> None:
        bad = [r for r in self.report_to if r not in REPORT_TO]
        _check(not bad, f"--report-to {','.join(self.report_to)}: choose from {REPORT_TO + ('all', 'none')}")
        _check(self.log_every_n_steps >= 1, "--log-every-n-steps must be >= 1")
        _check(self.save_frequency >= 0 and self.save_every_n_steps >= 0, "save frequencies must be >= 0")
        _check(self.val_frequency >= 0, "--val-frequency must be >= 0")
        _check(self.zeroshot_frequency >= 0, f"--zeroshot-frequency {self.zeroshot_frequency}: must be >= 0")
        _check(self.name is None or (self.name.strip() not in ("", ".", "..") and ".." not in self.name.split("/")),
               f"--name {self.name!r}: a run folder's name under --logs (not empty, and not leaving --logs)")
        _check(self.resume is None or bool(self.resume), "--resume is empty: a checkpoint path, or latest")


@dataclass(frozen=True)
class DistributedConfig:
    """How processes join and synchronise (open_clip_train's distributed flags)."""

    dist_url: Optional[str] = None
    dist_backend: Optional[str] = None
    ddp_static_graph: bool = False
    no_set_device_rank: bool = False
    use_bn_sync: bool = False


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
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def __post_init__(self) -> None:
        _check(self.data.train_data is not None, "--train-data is required (webdataset shards or a CSV file)")
        _check(not (self.task.distill_model and self.optim.accum_freq > 1),
               "--distill-model with --accum-freq > 1 is not supported (nor in open_clip_train)")
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

    def to_argv(self) -> List[str]:
        """The command line (after ``python -m memclip_train.main``) that :func:`parse_args` reads back into this
        config: the flags that differ from the defaults (and the few a reader looks for), in the order of ``--help``."""
        return to_argv(self, build_parser())


def _memory_setting(text: str) -> Tuple[str, Any]:
    """``knn=32``, ``layers=2,3``, ``mode=parallel``, ``gated=true`` -> (key, typed value), by
    :meth:`MemoryConfig.parse_override`."""
    try:
        return memclip.MemoryConfig.parse_override(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--memory {error}") from None


AUG_PROBABILITIES = ("re_prob", "color_jitter_prob", "gray_scale_prob")


def _check_aug_cfg(aug: Dict[str, Any]) -> None:
    """``--aug-cfg`` holds open_clip's AugmentationCfg keys with values that can be right: a (low, high) scale in
    (0, 1], a positive ratio range, probabilities in [0, 1], a count >= 0, finite jitter."""
    from open_clip.transform import AugmentationCfg

    known = [f.name for f in dataclasses.fields(AugmentationCfg)]
    unknown = sorted(set(aug) - set(known))
    _check(not unknown, f"--aug-cfg {', '.join(unknown)}: not an open_clip augmentation setting ({', '.join(known)})")

    def numbers(value: Any) -> Tuple[float, ...]:
        values = value if isinstance(value, (tuple, list)) else (value,)
        _check(all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values),
               f"--aug-cfg {value!r}: expected finite numbers")
        return tuple(values)

    for key, value in aug.items():
        if value is None or key == "use_timm":
            continue
        values = numbers(value)
        if key == "scale":
            _check(len(values) == 2 and 0 < values[0] <= values[1] <= 1,
                   f"--aug-cfg scale={value!r}: (low, high) with 0 < low <= high <= 1")
        elif key == "ratio":
            _check(len(values) == 2 and 0 < values[0] <= values[1], f"--aug-cfg ratio={value!r}: (low, high) > 0")
        elif key in AUG_PROBABILITIES:
            _check(len(values) == 1 and 0 <= values[0] <= 1, f"--aug-cfg {key}={value!r}: a probability in [0, 1]")
        elif key == "re_count":
            _check(len(values) == 1 and values[0] >= 0, f"--aug-cfg re_count={value!r}: a count >= 0")
        elif key == "color_jitter":
            _check(len(values) in (1, 3, 4) and all(v >= 0 for v in values),
                   f"--aug-cfg color_jitter={value!r}: one, three or four strengths >= 0")
    jitter = aug.get("color_jitter")
    _check(not aug.get("color_jitter_prob") or (isinstance(jitter, (tuple, list)) and len(jitter) == 4),
           "--aug-cfg color_jitter_prob needs color_jitter=(brightness, contrast, saturation, hue)")


def _parts(text: str) -> Tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _report_to(text: str) -> Tuple[str, ...]:
    """``tensorboard,wandb`` -> both; ``all`` -> every logger; ``none`` (or empty) -> none."""
    parts = _parts(text)
    if "all" in parts:
        return REPORT_TO
    return tuple(p for p in parts if p != "none")


def _keyword(text: str) -> Tuple[str, Any]:
    """``KEY=VALUE`` of ``--aug-cfg``, the value read as a Python literal or kept as a string (open_clip's rule)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--aug-cfg {text!r}: expected KEY=VALUE, e.g. scale='(0.9, 1.0)'")
    try:
        return key, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return key, raw


class _Refused(argparse.Action):
    """An open_clip_train flag that cannot apply here: parsing it stops with the reason."""

    def __init__(self, option_strings: Sequence[str], dest: str, reason: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, help=f"not supported: {reason}", **kwargs)
        self.reason = reason

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"{option_string} is an open_clip_train flag that memclip does not support: {self.reason}")


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    """Where samples come from (:class:`DataConfig`)."""
    d = DataConfig()
    g = p.add_argument_group("data")
    g.add_argument("--train-data", help="webdataset shards (brace expansion, '::' joins sources; a folder stands for "
                   "the shards its sizes.json lists), a CSV file, or 'synth-stream[:family_size=4,max_objects=6,"
                   "salience=strict]' (fresh synthetic scenes; needs --train-num-samples)")
    g.add_argument("--val-data", help="validation shards or CSV (retrieval R@1/5 and the distillation cosine)")
    g.add_argument("--dataset-type", default=d.dataset_type, choices=DATASET_TYPES + ("synthetic",),
                   help="'synthetic' (open_clip's random data) is refused: see python -m memclip_train.synth")
    g.add_argument("--train-data-upsampling-factors",
                   help="with --dataset-resampled and '::'-joined --train-data sources: one sampling weight per "
                        "source, e.g. 1::2::0.5 (default: shards drawn uniformly)")
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
    g.add_argument("--imagenet-val", help="ImageNet val in ImageFolder layout, for zero-shot top-1/top-5 during "
                                          "training (see --zeroshot-frequency)")
    g.add_argument("--imagenet-v2", help="ImageNet-V2 (matched-frequency) for zero-shot evaluation during training")
    g.add_argument("--zeroshot-synth", metavar="WORLD",
                   help="a world written by memclip_train.synth: zero-shot shape, colour and size of the salient "
                        "objects of its retrieval images during training (see --zeroshot-frequency)")


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    """The model and its towers (:class:`ModelConfig`)."""
    m = ModelConfig()
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
    g.add_argument("--text-tower", help="clip, rope, rope:PATH (a distilled memclip RoPE tower to load), tulip:PATH "
                                        "(TULIP's released text encoder, read in its own format; 248 tokens), or "
                                        "names (fixed random name vectors, captions are name indices: see "
                                        "--text-names)")
    g.add_argument("--text-names", type=int, default=m.text_names,
                   help="with --text-tower names: how many names (captions are integers 0 .. K-1)")
    g.add_argument("--text-names-seed", type=int, default=m.text_names_seed,
                   help="with --text-tower names: the seed of the name vectors")
    g.add_argument("--text-context-length", type=int, help="text tokens read (e.g. 248)")
    g.add_argument("--text-pos-stretch", choices=("longclip", "interpolate"), help="how a CLIP tower reaches it")
    g.add_argument("--rope-ntk-factor", type=float, help="NTK-aware RoPE context extension factor")
    g.add_argument("--cache-dir", help="where --pretrained tags download (default: the hub's cache)")
    g.add_argument("--pretrained-image", action="store_true",
                   help="ImageNet weights for a timm image tower (open_clip models without memory only)")
    g.add_argument("--lock-image", action="store_true", help="freeze the image tower (LiT), memory included")
    g.add_argument("--lock-image-unlocked-groups", type=int, default=m.lock_image_unlocked_groups,
                   help="with --lock-image: leave the last N layer groups of the image tower trainable")
    g.add_argument("--lock-image-freeze-bn-stats", action="store_true",
                   help="with --lock-image: freeze BatchNorm statistics of locked layers")
    g.add_argument("--lock-text-unlocked-layers", type=int, default=m.lock_text_unlocked_layers,
                   help="with --lock-text: leave the last N text layers trainable")
    g.add_argument("--lock-text-freeze-layer-norm", action="store_true",
                   help="with --lock-text: accepted as in open_clip, whose LayerNorms lock like other weights")
    g.add_argument("--force-context-length", type=int, help="override the text context length of the config")
    g.add_argument("--force-image-size", type=int, nargs="+", help="override the image size of the config")
    g.add_argument("--force-quick-gelu", action="store_true", help="QuickGELU activations (OpenAI weights)")
    g.add_argument("--force-patch-dropout", type=float, help="override the image tower's patch dropout")
    g.add_argument("--force-custom-text", action="store_true", help="build a separate text tower (CustomTextCLIP)")
    g.add_argument("--image-mean", type=float, nargs="+", metavar="MEAN", help="override the image mean")
    g.add_argument("--image-std", type=float, nargs="+", metavar="STD", help="override the image std")
    g.add_argument("--image-interpolation", choices=("bicubic", "bilinear", "random"),
                   help="override the resize interpolation")
    g.add_argument("--image-resize-mode", choices=("shortest", "longest", "squash"),
                   help="override the resize (and crop) mode of the evaluation transform")
    g.add_argument("--aug-cfg", type=_keyword, nargs="*", default=[], metavar="KEY=VALUE",
                   help="training augmentation (open_clip's AugmentationCfg), e.g. scale='(0.9, 1.0)'")
    g.add_argument("--torchcompile", action="store_true", help="torch.compile the model for training")


def _add_optim_flags(p: argparse.ArgumentParser) -> None:
    """The optimiser and schedule (:class:`OptimConfig`)."""
    o = OptimConfig()
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=o.batch_size, help="per-GPU batch size")
    g.add_argument("--epochs", type=int, default=o.epochs)
    g.add_argument("--lr", type=float, default=o.lr)
    g.add_argument("--wd", type=float, default=o.wd)
    g.add_argument("--beta1", type=float, default=o.beta1)
    g.add_argument("--beta2", type=float, default=o.beta2)
    g.add_argument("--eps", type=float, default=o.eps)
    warmup = g.add_mutually_exclusive_group()
    warmup.add_argument("--warmup", type=int, default=o.warmup,
                        help="warmup steps (default: open_clip's 10000, or 5%% of a shorter run; a given value must be "
                             "shorter than the run)")
    warmup.add_argument("--warmup-fraction", type=float,
                        help="warmup as a share of the run's optimizer steps, e.g. 0.01 (instead of --warmup)")
    g.add_argument("--lr-scheduler", default=o.lr_scheduler, choices=LR_SCHEDULERS,
                   help="const-cooldown: constant, then the last --epochs-cooldown epochs decay")
    g.add_argument("--epochs-cooldown", type=int, help="const-cooldown: epochs of decay at the end")
    g.add_argument("--lr-cooldown-end", type=float, default=o.lr_cooldown_end, help="lr at the end of the cooldown")
    g.add_argument("--lr-cooldown-power", type=float, default=o.lr_cooldown_power,
                   help="cooldown shape: 1 = linear, otherwise polynomial")
    g.add_argument("--skip-scheduler", action="store_true", help="no warmup and no decay: the lr stays at --lr")
    g.add_argument("--opt", default=o.opt, help="adamw, or a timm optimizer as timm/NAME (timm/sgd, timm/lamb, ...)")
    g.add_argument("--momentum", type=float, help="momentum of timm optimizers that take one")
    g.add_argument("--accum-freq", type=int, default=o.accum_freq, help="micro-batches per optimizer step")
    g.add_argument("--grad-clip-norm", type=float)


def _add_task_flags(p: argparse.ArgumentParser) -> None:
    """What is learned (:class:`TaskConfig`)."""
    t = TaskConfig()
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
    g.add_argument("--siglip", action="store_true", help="SigLIP's sigmoid loss instead of InfoNCE (adds a bias)")
    g.add_argument("--loss-dist-impl", choices=SIGLIP_DIST_IMPLS, help="SigLIP's exchange of features across ranks")
    g.add_argument("--distill-model", help="contrastive training distilled from this CLIP's logits (open_clip_train)")
    g.add_argument("--distill-pretrained", help="weights of --distill-model")


def _add_logging_flags(p: argparse.ArgumentParser) -> None:
    """Run folders, logs and checkpoints (:class:`LoggingConfig`)."""
    lg = LoggingConfig()
    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--logs", "--logs-dir", dest="logs", default=lg.logs,
                   help="folder of run folders (under torchrun write --logs-dir: torchrun takes --logs for its own "
                        "--logs-specs)")
    g.add_argument("--name", help="run folder name under --logs (default: date, model and task)")
    g.add_argument("--report-to", type=_report_to, default=lg.report_to,
                   help="tensorboard, wandb, tensorboard,wandb, all or none (install them with pip install "
                        "'memclip[tensorboard]' / 'memclip[wandb]')")
    g.add_argument("--log-every-n-steps", type=int, default=lg.log_every_n_steps)
    g.add_argument("--save-frequency", type=int, default=lg.save_frequency, help="save epoch_N.pt every N epochs")
    g.add_argument("--save-every-n-steps", type=int, default=lg.save_every_n_steps,
                   help="also refresh epoch_latest.pt every N steps (mid-epoch resume)")
    g.add_argument("--val-frequency", type=int, default=lg.val_frequency, help="validate every N epochs")
    g.add_argument("--zeroshot-frequency", type=int, default=lg.zeroshot_frequency,
                   help="zero-shot ImageNet every N epochs and after the last (0: never)")
    g.add_argument("--resume", help="a checkpoint path, or 'latest' for the newest in this run's folder")
    g.add_argument("--resume-with-changes", action="store_true",
                   help="resume although --batch-size, --workers, the data, the processes or the model configuration "
                        "changed so that the position cannot be carried over exactly: continue by samples seen")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is none unless stderr is a terminal: the log lines are the progress)")
    g.add_argument("--log-local", action="store_true", help="every node's first process writes out-RANK.log")
    add_debug_flag(g)
    g.add_argument("--wandb-project-name", default=lg.wandb_project_name, help="W&B project")
    g.add_argument("--wandb-notes", default=lg.wandb_notes, help="W&B notes")
    g.add_argument("--save-most-recent", action="store_true",
                   help="accepted as in open_clip_train: memclip always keeps checkpoints/epoch_latest.pt")
    g.add_argument("--delete-previous-checkpoint", action="store_true",
                   help="delete epoch_{N-1}.pt after writing epoch_N.pt")


def _add_distributed_flags(p: argparse.ArgumentParser) -> None:
    """Process groups (:class:`DistributedConfig`)."""
    g = p.add_argument_group("distributed")
    g.add_argument("--dist-url", help="init_method of the process group (default: env://, from torchrun or SLURM)")
    g.add_argument("--dist-backend", help="nccl (CUDA), gloo (CPU) or another torch.distributed backend")
    g.add_argument("--ddp-static-graph", action="store_true", help="DistributedDataParallel(static_graph=True)")
    g.add_argument("--no-set-device-rank", action="store_true",
                   help="use cuda:0 in every process (one visible GPU per process)")
    g.add_argument("--use-bn-sync", action="store_true", help="synchronise BatchNorm statistics across processes")


def _add_refused_flags(p: argparse.ArgumentParser) -> None:
    """open_clip_train flags that cannot apply: each stops with its reason."""
    g = p.add_argument_group("open_clip_train flags that do not apply to memclip (each stops with its reason)")
    for flag, (takes_value, reason) in INAPPLICABLE_FLAGS.items():
        g.add_argument(flag, action=_Refused, reason=reason, nargs=None if takes_value else 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train CLIP models with open_clip-style flags: contrastive, --distill (memory from a frozen "
                    "teacher), --long-short-alpha (stage 2), --distill-text (a RoPE text tower).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(*CONFIG_FLAGS, metavar="RECIPE", help="a recipe file (YAML or JSON) of flag values, e.g. "
                   "configs/recipes/thesis-finetune.yaml; flags on the command line override it")
    for add in (_add_data_flags, _add_model_flags, _add_optim_flags, _add_task_flags, _add_logging_flags,
                _add_distributed_flags, _add_refused_flags):
        add(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda if available)")
    return p


def _image_size(values: Optional[List[int]]) -> Optional[Union[int, Tuple[int, ...]]]:
    """``--force-image-size 224`` -> 224, ``--force-image-size 224 336`` -> (224, 336) (open_clip's rule)."""
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _section(cls: type, args: argparse.Namespace, **converted: Any) -> Any:
    """A config section built by keyword: each field from the flag of the same name (its argparse ``dest``), unless
    ``converted`` gives the field's value (flags whose parsed form differs from the field's)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name not in converted}
    return cls(**values, **converted)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        data=_section(DataConfig, args),
        model=_section(ModelConfig, args, memory=tuple(args.memory),
                       force_image_size=_image_size(args.force_image_size),
                       image_mean=tuple(args.image_mean) if args.image_mean else None,
                       image_std=tuple(args.image_std) if args.image_std else None,
                       aug_cfg=tuple(args.aug_cfg or ())),
        optim=_section(OptimConfig, args),
        task=_section(TaskConfig, args),
        logging=_section(LoggingConfig, args, report_to=tuple(args.report_to), progress=not args.no_progress),
        seed=args.seed,
        device=args.device,
        distributed=_section(DistributedConfig, args),
    )


def parse_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    """Parse the command line (``-c RECIPE`` first expanded into its flags, which the command line overrides) into a
    validated :class:`TrainConfig`; bad flags exit with code 2 and a message."""
    parser = build_parser()
    try:
        argv = expand_recipe_file(sys.argv[1:] if argv is None else argv, parser)
    except (OSError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        check_model(config)
        return config
    except UserError as error:  # one line, as every user error (argparse's own errors add the usage)
        parser.exit(2, f"{parser.prog}: error: {error}\n")


def check_model(config: TrainConfig) -> None:
    """``--model`` is known and ``--memory`` makes a valid memory config for it (checked before any run folder).

    Raises:
        UserError: naming the flag and what is wrong.
    """
    try:
        spec = memclip.get_model_spec(config.model.model)
    except memclip.InputError as error:
        raise UserError(f"--model {config.model.model}: {error}") from error
    if config.model.memory:
        try:
            memclip.MemoryConfig.with_overrides(spec.memory, dict(config.model.memory)).check_layers(
                spec.model_cfg["vision_cfg"]["layers"])
        except (ValueError, TypeError) as error:
            raise UserError(f"--memory {' '.join(f'{k}={v}' for k, v in config.model.memory)}: {error}") from error


def format_params(config: TrainConfig) -> List[str]:
    """``section.field: value`` lines for params.txt, sorted."""
    lines = []
    for section, values in sorted(config.to_dict().items()):
        if isinstance(values, dict):
            lines.extend(f"{section}.{key}: {value}" for key, value in sorted(values.items()))
        else:
            lines.append(f"{section}: {values}")
    return lines
