"""`DemoPlan`: the sizes and recipes of the demo (full and --quick), in one place (the recipe types, and the stage-2
recipe it shares with the study, the sweep and SLURM, are :mod:`memclip_train.recipes`'s)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Union

from memclip.errors import InputError

from ..recipes import STAGE2_ALPHA, TEXT_RECIPES, LongShortRecipe, StageRecipe, TextRecipe
from ..worlds import DEMO_WORLD, QUICK_WORLD


@dataclass(frozen=True)
class DemoPlan:
    """What the demo generates and trains, starting from the pretrained teacher (shipped, or made by
    ``python -m memclip_train.pretrain``).

    Attributes:
        world: arguments of ``python -m memclip_train.synth`` (sizes, and long captions in salience order so that
            the thesis's 77 tokens read the main objects).
        distill, finetune: the two training recipes; the control and the parallel student use ``finetune`` too.
            Stage 2's length and rate put the fine-tuned models inside the 20-80 long T2I R@1 window (calibrated on
            the control alone, seed 0: docs/demo.md, "Stage-2 length and rate").
        stage2_text: key of :data:`TEXT_RECIPES`: how the fine-tuned models read long captions.
        alpha: the long/short blend of stage 2.
        probe_images: segmentation images of a second world (another seed) on which a linear probe is fitted to
            each model's patch features: what the patches carry, beside what the text reads (zero-shot mIoU).
        heatmap_examples: retrieval images drawn as text -> patch heat maps.
    """

    world: Dict[str, Union[int, str]] = field(default_factory=lambda: dict(DEMO_WORLD))
    distill: StageRecipe = StageRecipe(epochs=3, lr=2e-3, wd=0.05, value_lr=5e-3)
    finetune: StageRecipe = StageRecipe(epochs=4, lr=5e-4, wd=0.05)
    stage2_text: str = "thesis"
    alpha: float = STAGE2_ALPHA
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

    @property
    def stage2(self) -> LongShortRecipe:
        """Stage 2's task: long + short captions blended by ``alpha``, read as :attr:`text` says."""
        return LongShortRecipe(alpha=self.alpha, text=self.text)

    @classmethod
    def quick(cls, stage2_text: str = "thesis") -> "DemoPlan":
        """The same pipeline at a toy size (under 3 minutes on 2 cores)."""
        return cls(world=dict(QUICK_WORLD),
                   stage2_text=stage2_text,
                   distill=StageRecipe(
                       epochs=1, lr=2e-3, wd=0.05, warmup=2, value_lr=5e-3),
                   finetune=StageRecipe(epochs=1, lr=2e-4, wd=0.05, warmup=2), probe_images=16,
                   heatmap_examples=1)
