"""`DemoPlan`: the sizes and recipes of the demo (full and --quick), in one place."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

from memclip.errors import InputError


@dataclass(frozen=True)
class StageRecipe:
    """Training settings of one stage (flags of ``python -m memclip_train.main``); ``warmup_fraction``, when set,
    replaces ``warmup`` by that share of the stage's optimizer steps."""

    epochs: int
    lr: float
    batch_size: int = 64
    warmup: int = 20
    wd: float = 0.1
    extra: tuple = ()
    warmup_fraction: Optional[float] = None

    def flags(self) -> List[str]:
        warmup = (["--warmup-fraction", f"{self.warmup_fraction:.6g}"] if self.warmup_fraction is not None
                  else ["--warmup", str(self.warmup)])
        return ["--epochs", str(self.epochs), "--lr", str(self.lr), "--batch-size", str(self.batch_size), *warmup,
                "--wd", str(self.wd), *self.extra]


CLIP_CONTEXT = 77
"""Tokens a CLIP text tower reads without a stretched positional table."""


@dataclass(frozen=True)
class TextRecipe:
    """How the text tower reads long captions in stage 2.

    Attributes:
        context: tokens the fine-tuned models read (CLIP's 77, or more with ``stretch``).
        stretch: how the positional table reaches ``context`` (``--text-pos-stretch``), None at 77.
        train_text: the text tower trains with the vision tower (new positions must be trained to mean anything).
    """

    context: int
    stretch: Optional[str]
    train_text: bool

    def __post_init__(self) -> None:
        if (self.context == CLIP_CONTEXT) != (self.stretch is None):
            needs = "no stretch" if self.stretch is not None else "a stretch ('longclip' or 'interpolate')"
            raise InputError(f"TextRecipe: a context of {self.context} tokens needs {needs}")

    def flags(self) -> List[str]:
        """Trainer flags; every stage-2 model trains its vision tower (memory included) and, if asked, its text."""
        flags = ["--trainable", "visual,text" if self.train_text else "visual"]
        if self.stretch is not None:
            flags = ["--text-context-length", str(self.context), "--text-pos-stretch", self.stretch, *flags]
        return flags

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


@dataclass(frozen=True)
class DemoPlan:
    """What the demo generates and trains, starting from the pretrained teacher (shipped, or made by
    ``python -m memclip_train.pretrain``).

    Attributes:
        world: arguments of ``python -m memclip_train.synth`` (sizes, and long captions in salience order so that
            the thesis's 77 tokens read the main objects).
        distill, finetune: the two training recipes; the control and the parallel student use ``finetune`` too.
            Stage 2's length and rate put the fine-tuned models inside the 20-80 long T2I R@1 window (calibrated on
            the control alone, seed 0: README, "Stage-2 length and rate").
        stage2_text: key of :data:`TEXT_RECIPES`: how the fine-tuned models read long captions.
        alpha: the long/short blend of stage 2.
        probe_images: segmentation images of a second world (another seed) on which a linear probe is fitted to
            each model's patch features: what the patches carry, beside what the text reads (zero-shot mIoU).
        heatmap_examples: retrieval images drawn as text -> patch heat maps.
    """

    world: Dict[str, Union[int, str]] = field(default_factory=lambda: {
        "train": 4000, "val": 200, "retrieval": 1000, "segmentation": 100, "pairs-per-pattern": 30,
        "long-order": "salience"})
    distill: StageRecipe = StageRecipe(epochs=3, lr=2e-3, wd=0.05, extra=("--value-lr", "5e-3"))
    finetune: StageRecipe = StageRecipe(epochs=4, lr=5e-4, wd=0.05)
    stage2_text: str = "thesis"
    alpha: float = 0.8
    probe_images: int = 400
    heatmap_examples: int = 2

    def __post_init__(self) -> None:
        if self.probe_images < 1:
            raise InputError(f"DemoPlan.probe_images={self.probe_images}: the probe needs at least one image")
        if self.stage2_text not in TEXT_RECIPES:
            raise InputError(f"DemoPlan.stage2_text={self.stage2_text!r}: known recipes are {list(TEXT_RECIPES)}")

    @property
    def text(self) -> TextRecipe:
        """The stage-2 text recipe."""
        return TEXT_RECIPES[self.stage2_text]

    @classmethod
    def quick(cls, stage2_text: str = "thesis") -> "DemoPlan":
        """The same pipeline at a toy size (under 3 minutes on 2 cores)."""
        return cls(world={"train": 512, "val": 64, "retrieval": 64, "segmentation": 8, "pairs-per-pattern": 4,
                          "long-order": "salience"},
                   stage2_text=stage2_text,
                   distill=StageRecipe(
                       epochs=1, lr=2e-3, wd=0.05, warmup=2, extra=("--value-lr", "5e-3")),
                   finetune=StageRecipe(epochs=1, lr=2e-4, wd=0.05, warmup=2), probe_images=16,
                   heatmap_examples=1)
