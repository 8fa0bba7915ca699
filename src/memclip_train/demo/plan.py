"""`DemoPlan`: the sizes and recipes of the demo (full and --quick), in one place."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List


@dataclass(frozen=True)
class StageRecipe:
    """Training settings of one stage (flags of ``python -m memclip_train.main``)."""

    epochs: int
    lr: float
    batch_size: int = 64
    warmup: int = 20
    wd: float = 0.1
    extra: tuple = ()

    def flags(self) -> List[str]:
        return ["--epochs", str(self.epochs), "--lr", str(self.lr), "--batch-size", str(self.batch_size),
                "--warmup", str(self.warmup), "--wd", str(self.wd), *self.extra]


@dataclass(frozen=True)
class DemoPlan:
    """What the demo generates and trains, starting from the pretrained teacher (shipped, or made by
    ``python -m memclip_train.pretrain``).

    Attributes:
        world: arguments of ``python -m memclip_train.synth`` (sizes).
        distill, finetune: the two training recipes; the control and the parallel student use ``finetune`` too.
        long_context: context of the fine-tuned text towers (Long-CLIP stretch; the text towers stay frozen).
        alpha: the long/short blend of stage 2.
        heatmap_examples: retrieval images drawn as text -> patch heat maps.
    """

    world: Dict[str, int] = field(default_factory=lambda: {
        "train": 4000, "val": 200, "retrieval": 1000, "segmentation": 100, "pairs-per-pattern": 30})
    distill: StageRecipe = StageRecipe(epochs=3, lr=2e-3, wd=0.05, extra=("--value-lr", "5e-3"))
    finetune: StageRecipe = StageRecipe(epochs=2, lr=2e-4, wd=0.05)
    long_context: int = 248
    alpha: float = 0.8
    heatmap_examples: int = 2

    @classmethod
    def quick(cls) -> "DemoPlan":
        """The same pipeline at a toy size (under 3 minutes on 2 cores)."""
        return cls(world={"train": 512, "val": 64, "retrieval": 64, "segmentation": 8, "pairs-per-pattern": 4},
                   distill=StageRecipe(
                       epochs=1, lr=2e-3, wd=0.05, warmup=2, extra=("--value-lr", "5e-3")),
                   finetune=StageRecipe(epochs=1, lr=2e-4, wd=0.05, warmup=2), heatmap_examples=1)
