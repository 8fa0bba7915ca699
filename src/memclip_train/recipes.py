"""The training recipes, written once as typed values: the stage settings the demo, the study, the sweep, teacher
pretraining and the SLURM scripts share.

A recipe changes a :class:`~memclip_train.params.TrainConfig` (``recipe.apply(config)``); the programs build the
config of each stage from a base (data, run folder, seed) and their recipes, and print it as the ordinary command
(``config.to_argv()``). The named recipes of :data:`RECIPES` are also shipped as files (``configs/recipes/*.yaml``)
that ``python -m memclip_train.main -c FILE`` reads::

    python -m memclip_train.recipes --write configs/recipes      # (re)writes one YAML file per named recipe
    python -m memclip_train.main -c configs/recipes/thesis-finetune.yaml --train-data ... --pretrained ...
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

from memclip.errors import InputError

from .params import DataConfig, LoggingConfig, ModelConfig, TrainConfig, build_parser, check_model
from .train_argv import SPELLED_OUT, flag_values

SHIPPED_TEACHER = "synth"
"""The pretrained tag of the tiny CLIP that ships with memclip (``memclip.create_model("ViT-Tiny-8", "synth")``): the
teacher of the demo, the study and the synthetic sweep."""

CLIP_CONTEXT = 77
"""Tokens a CLIP text tower reads without a stretched positional table."""

STAGE2_ALPHA = 0.8
"""Stage 2's long/short blend: alpha * L_long + (1 - alpha) * L_short (thesis section 4.4)."""

RECIPE_FLAGS = SPELLED_OUT + ("precision",)
"""Flags a recipe file writes even at their default (with its task's ``written``): what a reader looks for, and what
a later default must not move."""


@dataclass(frozen=True)
class StageRecipe:
    """The optimisation of one stage: ``--epochs --lr --batch-size --warmup --wd`` and the knobs that go with them.

    Attributes:
        warmup_fraction: when set, replaces ``warmup`` by that share of the stage's optimizer steps (kept to six
            significant digits, as the command line writes it).
        value_lr: the memory values' fixed lr (None: the model's).
        trainable: the parts that train (None: the task's default).
    """

    epochs: int
    lr: float
    batch_size: int = 64
    warmup: int = 20
    wd: float = 0.1
    warmup_fraction: Optional[float] = None
    value_lr: Optional[float] = None
    accum_freq: int = 1
    grad_checkpointing: bool = False
    trainable: Optional[Tuple[str, ...]] = None

    def apply(self, config: TrainConfig) -> TrainConfig:
        fraction = None if self.warmup_fraction is None else float(f"{self.warmup_fraction:.6g}")
        optim = dataclasses.replace(config.optim, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
                                    wd=self.wd, warmup=None if fraction is not None else self.warmup,
                                    warmup_fraction=fraction, accum_freq=self.accum_freq)
        model = dataclasses.replace(config.model, value_lr=self.value_lr,
                                    grad_checkpointing=self.grad_checkpointing or config.model.grad_checkpointing,
                                    trainable=self.trainable if self.trainable is not None else config.model.trainable)
        return dataclasses.replace(config, optim=optim, model=model)


@dataclass(frozen=True)
class TextRecipe:
    """How the text tower reads long captions in stage 2.

    Attributes:
        context: tokens the fine-tuned models read (CLIP's 77, or more with ``stretch``).
        stretch: how the positional table reaches ``context`` (``--text-pos-stretch``), None at 77.
        train_text: the text tower trains with the vision tower (new positions must be trained to mean anything).
            None: the task's default parts train (the study's and the sweep's stage 2).
    """

    context: int
    stretch: Optional[str]
    train_text: Optional[bool]

    def __post_init__(self) -> None:
        if (self.context == CLIP_CONTEXT) != (self.stretch is None):
            needs = "no stretch" if self.stretch is not None else "a stretch ('longclip' or 'interpolate')"
            raise InputError(f"TextRecipe: a context of {self.context} tokens needs {needs}")

    @property
    def trainable(self) -> Optional[Tuple[str, ...]]:
        """The parts of a stage-2 model that train: its vision tower (memory included) and, if asked, its text."""
        if self.train_text is None:
            return None
        return ("visual", "text") if self.train_text else ("visual",)

    def apply(self, config: TrainConfig) -> TrainConfig:
        stretched = self.stretch is not None
        model = dataclasses.replace(config.model, text_context_length=self.context if stretched else None,
                                    text_pos_stretch=self.stretch,
                                    trainable=self.trainable if self.trainable is not None else config.model.trainable)
        return dataclasses.replace(config, model=model)

    def describe(self) -> str:
        """The recipe in words, for the report: "248 tokens (longclip stretch), text tower trained"."""
        stretch = f" ({self.stretch} stretch)" if self.stretch is not None else ""
        return f"{self.context} tokens{stretch}, text tower " + ("trained" if self.train_text else "frozen")


TEXT_RECIPES: Dict[str, TextRecipe] = {
    "thesis": TextRecipe(context=CLIP_CONTEXT, stretch=None, train_text=False),
    "longclip": TextRecipe(context=248, stretch="longclip", train_text=True),
}
"""Stage-2 text recipes of the demo: the thesis's (the default), and Long-CLIP's stretch with the text tower trained
(a named variant; a stretched table that stays frozen would never learn its new positions)."""

LONGCLIP_FROZEN_TEXT = TextRecipe(context=248, stretch="longclip", train_text=None)
"""The study's and the synthetic sweep's stage 2: Long-CLIP's stretch to 248 tokens, the task's default parts."""


@dataclass(frozen=True)
class LongShortRecipe:
    """Stage 2's task: contrastive fine-tuning on long and short captions, ``alpha`` blending the two losses."""

    alpha: float = STAGE2_ALPHA
    caption_key: str = "txt"
    long_caption_key: str = "json.long"
    text: Optional[TextRecipe] = None
    written: ClassVar[Tuple[str, ...]] = ("long-short-alpha", "caption-key", "long-caption-key")

    def apply(self, config: TrainConfig) -> TrainConfig:
        data = dataclasses.replace(config.data, caption_key=self.caption_key, long_caption_key=self.long_caption_key)
        task = dataclasses.replace(config.task, long_short_alpha=self.alpha)
        config = dataclasses.replace(config, data=data, task=task)
        return self.text.apply(config) if self.text is not None else config


@dataclass(frozen=True)
class DistillRecipe:
    """Stage 1's task: the memory student learns its frozen teacher's features (``--distill``)."""

    loss: str = "cosine"
    written: ClassVar[Tuple[str, ...]] = ("distill", "distill-loss")

    def apply(self, config: TrainConfig) -> TrainConfig:
        return dataclasses.replace(config, task=dataclasses.replace(config.task, distill=True, distill_loss=self.loss))


@dataclass(frozen=True)
class ContrastiveRecipe:
    """CLIP's contrastive task on one caption field (the teacher's pretraining)."""

    caption_key: str = "txt"
    written: ClassVar[Tuple[str, ...]] = ("caption-key",)

    def apply(self, config: TrainConfig) -> TrainConfig:
        return dataclasses.replace(config, data=dataclasses.replace(config.data, caption_key=self.caption_key))


Task = Union[DistillRecipe, LongShortRecipe, ContrastiveRecipe]


def stage_config(base: TrainConfig, *recipes: Union[StageRecipe, Task, TextRecipe]) -> TrainConfig:
    """``base`` (data, model, run folder, seed) with each recipe applied in turn, validated as parse_args would."""
    for recipe in recipes:
        base = recipe.apply(base)
    base = dataclasses.replace(base)  # re-runs every section's validation on the combined values
    check_model(base)
    return base


@dataclass(frozen=True)
class Recipe:
    """A named, shipped recipe: the model and every training setting of a stage; the data, the run folder and the
    geometry (batch per GPU) come from the command line that reads it.

    Attributes:
        name: the file name under ``configs/recipes/`` (without ``.yaml``).
        description: what it reproduces, with its sources.
        model, pretrained, precision, dataset_type, workers: the model and how data are read.
        optim, task: the stage's optimisation and task.
        log_every_n_steps, save_every_n_steps: how often it logs and refreshes its latest checkpoint.
    """

    name: str
    description: str
    model: str
    optim: StageRecipe
    task: Task
    pretrained: Optional[str] = None
    precision: str = "amp_bf16"
    dataset_type: str = "auto"
    workers: int = 1
    log_every_n_steps: int = 100
    save_every_n_steps: int = 0

    def config(self, train_data: str = "TRAIN_DATA", **logging: Any) -> TrainConfig:
        """The recipe as a whole training config on ``train_data`` (``logging``: LoggingConfig fields)."""
        base = TrainConfig(
            data=DataConfig(train_data=train_data, dataset_type=self.dataset_type, workers=self.workers),
            model=ModelConfig(model=self.model, pretrained=self.pretrained, precision=self.precision),
            logging=LoggingConfig(log_every_n_steps=self.log_every_n_steps,
                                  save_every_n_steps=self.save_every_n_steps, **logging))
        return stage_config(base, self.optim, self.task)

    def flag_values(self) -> Dict[str, Any]:
        """The recipe file's contents: every flag it sets (not ``--train-data``, which each run gives)."""
        values = flag_values(self.config(), build_parser(), always=RECIPE_FLAGS + self.task.written)
        del values["train-data"]
        return values


THESIS_DISTILL = Recipe(
    "thesis-distill",
    "Stage 1 (thesis Table 4.1 and its code's jobs/open_clip_distill.job): distil ViT-B-16-mem's memory from the "
    "frozen OpenAI ViT-B-16: batch 20 per GPU x 4 GPUs x accum 4, lr 5e-4, wd 0.1, 38 epochs, warmup 1000, AMP bf16, "
    "the cosine loss, gradient checkpointing, 8 loaders, one pass over the shards per epoch",
    "ViT-B-16-mem", StageRecipe(epochs=38, lr=5e-4, batch_size=20, warmup=1000, wd=0.1, accum_freq=4,
                                grad_checkpointing=True),
    DistillRecipe("cosine"), pretrained="openai", dataset_type="webdataset", workers=8, save_every_n_steps=1000)

THESIS_FINETUNE = Recipe(
    "thesis-finetune",
    "Stage 2 (thesis section 4.4 and its code's jobs/open_clip_finetune.job): long + short captions, alpha 0.8, "
    "CLIP's 77 tokens with the text tower frozen, memory + vision tower trainable, lr 1e-5, wd 0.1, 10 epochs, "
    "warmup 1000, batch 32 x accum 2 (a contrastive batch of 64), AMP bf16, gradient checkpointing",
    "ViT-B-16-mem", StageRecipe(epochs=10, lr=1e-5, batch_size=32, warmup=1000, wd=0.1, accum_freq=2,
                                grad_checkpointing=True, trainable=("memory", "visual")),
    LongShortRecipe(), dataset_type="webdataset", workers=8, save_every_n_steps=1000)

THESIS_FINETUNE_LONGCLIP = dataclasses.replace(
    THESIS_FINETUNE, name="thesis-finetune-longclip248",
    description="A named deviation from the thesis's stage 2: Long-CLIP's 248-token position stretch, with the text "
                "tower trainable too (memory, vision and text), so that the stretched positions are learnt",
    optim=dataclasses.replace(THESIS_FINETUNE.optim, trainable=("memory", "visual", "text")),
    task=LongShortRecipe(text=TextRecipe(context=248, stretch="longclip", train_text=None)))

TEACHER_PRETRAIN = Recipe(
    "teacher-pretrain",
    "The tiny CLIP teacher that ships with memclip (ViT-Tiny-8, tag 'synth'): contrastive training on fresh "
    "synthetic scenes with their short captions, 8 epochs of 100,000 scenes (python -m memclip_train.pretrain adds "
    "the stream, the held-out world and the export)",
    "ViT-Tiny-8", StageRecipe(epochs=8, lr=1e-3, batch_size=128, warmup=500, wd=0.1), ContrastiveRecipe("txt"),
    precision="fp32", log_every_n_steps=50, save_every_n_steps=200)

def pretrained_teacher_file(out: Path) -> Path:
    """Where ``python -m memclip_train.pretrain --out OUT`` exports the teacher it trains (fp16 safetensors, with
    its record beside it as .json)."""
    return Path(out) / "export" / f"{TEACHER_PRETRAIN.model}-{SHIPPED_TEACHER}.safetensors"


RECIPES: Dict[str, Recipe] = {recipe.name: recipe for recipe in (THESIS_DISTILL, THESIS_FINETUNE,
                                                                  THESIS_FINETUNE_LONGCLIP, TEACHER_PRETRAIN)}
"""The named recipes, shipped as ``configs/recipes/NAME.yaml``."""


def recipe_text(recipe: Recipe) -> str:
    """The YAML file of a recipe: its description as a comment, then one flag per line."""
    import textwrap

    import yaml

    comment = "\n".join("# " + line for line in textwrap.wrap(recipe.description, 116))
    body = yaml.safe_dump(recipe.flag_values(), sort_keys=False, default_flow_style=False)
    return (f"{comment}\n# Written by python -m memclip_train.recipes --write; read by python -m memclip_train.main "
            f"-c FILE\n{body}")


def write_recipes(folder: Path, names: Sequence[str] = ()) -> List[Path]:
    """Write each named recipe (all by default) as ``folder/NAME.yaml``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names or RECIPES:
        path = folder / f"{name}.yaml"
        path.write_text(recipe_text(RECIPES[name]), encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memclip_train.recipes",
                                     description="Print or write the named training recipes.")
    parser.add_argument("--write", type=Path, metavar="DIR", help="write each recipe as DIR/NAME.yaml")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"recipes to print or write (default: all of {', '.join(RECIPES)})")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in RECIPES]
    if unknown:
        parser.error(f"{', '.join(unknown)}: not a recipe (known: {', '.join(RECIPES)})")
    if args.write is not None:
        for path in write_recipes(args.write, args.names):
            print(path)
        return 0
    for name in args.names or RECIPES:
        print(f"## {name}\n{recipe_text(RECIPES[name])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
