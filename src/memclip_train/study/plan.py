"""`StudyPlan`: the grid, worlds and recipes of the capacity study (full and --quick), and the compared models."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Tuple

from memclip.errors import InputError

from ..recipes import STAGE2_ALPHA, StageRecipe


@dataclass(frozen=True)
class StudyModel:
    """One of the compared models.

    Attributes:
        key: its short name in file names and on the command line.
        label: its name in the table and the figure.
        model: the architecture (a memclip config).
        memory: overrides of the architecture's memory knobs (``--memory KEY=VALUE`` of the trainer).
        extra: further trainer flags of its fine-tuning.
        distilled: it starts stage 2 from its stage-1 distillation (the memory student), else from the teacher.
    """

    key: str
    label: str
    model: str
    memory: Mapping[str, str] = field(default_factory=dict)
    extra: Tuple[str, ...] = ()
    distilled: bool = False

    def flags(self) -> List[str]:
        flags = ["--model", self.model]
        for name, value in self.memory.items():
            flags += ["--memory", f"{name}={value}"]
        return flags + list(self.extra)


MODELS: Dict[str, StudyModel] = {model.key: model for model in (
    StudyModel("memory", "memory student (replace)", "ViT-Tiny-8-mem", distilled=True),
    StudyModel("parallel", "parallel student", "ViT-Tiny-8-mem", memory={"mode": "parallel"}),
    StudyModel("control", "control: teacher fine-tuned (same FLOPs)", "ViT-Tiny-8", extra=("--trainable", "visual")),
    StudyModel("dense", "dense control (same parameters)", "ViT-Tiny-8-dense", extra=("--trainable", "visual")),
)}
TEACHER_MODEL = "ViT-Tiny-8"
PRIMARY = ("memory", "control")
"""The pre-registered comparison: the memory student against the control of the same compute."""
COMPARISONS = (PRIMARY, ("memory", "dense"), ("parallel", "control"), ("dense", "control"))


@dataclass(frozen=True)
class StudyPlan:
    """What the study generates and trains (see docs/study.md, which pre-registers the full plan).

    Attributes:
        markings: the K of each world.
        seeds: training seeds of every stage after the teacher.
        models: keys of :data:`MODELS` to train.
        world: sizes of each K's world (``python -m memclip_train.synth`` arguments); its retrieval images are the
            marking queries.
        world_seed: the seed of every world (the same scenes for every K, seed and model).
        family: training samples in a row that show one scene with different markings (hard negatives).
        samples_per_shard: training shard size (a multiple of ``family`` and of the batch size).
        candidates: captions per marking query (chance 1 / candidates).
        distill_world: sizes of the world (without markings) that stage 1 distils on, once per seed.
        distill, finetune: the training recipes; every model is fine-tuned with ``finetune``.
        long_context, alpha: the fine-tuned text context (Long-CLIP stretch, text tower frozen) and long/short blend.
    """

    markings: Tuple[int, ...] = (8, 32, 128)
    seeds: Tuple[int, ...] = (0, 1, 2)
    models: Tuple[str, ...] = tuple(MODELS)
    world: Dict[str, int] = field(default_factory=lambda: {"train": 4096, "val": 128, "retrieval": 1000})
    world_seed: int = 0
    family: int = 4
    samples_per_shard: int = 1024
    candidates: int = 8
    distill_world: Dict[str, int] = field(default_factory=lambda: {"train": 4096, "val": 128})
    distill: StageRecipe = StageRecipe(epochs=3, lr=2e-3, wd=0.05, value_lr=5e-3)  # the demo's stage 1
    finetune: StageRecipe = StageRecipe(epochs=1, lr=1e-3, wd=0.05)
    long_context: int = 248  # registered: the Long-CLIP stretch with the text tower frozen (docs/study.md)
    alpha: float = STAGE2_ALPHA

    def __post_init__(self) -> None:
        unknown = sorted(set(self.models) - set(MODELS))
        if unknown:
            raise InputError(f"StudyPlan.models: unknown {unknown}; known: {list(MODELS)}")
        if not self.markings or min(self.markings) < max(2, self.family):
            raise InputError(f"StudyPlan.markings={list(self.markings)}: every K must be >= 2 and >= the family size "
                             f"({self.family})")
        if not self.seeds or not self.models:
            raise InputError("StudyPlan: needs at least one seed and one model")
        if self.samples_per_shard % self.family or self.finetune.batch_size % self.family:
            raise InputError(f"StudyPlan: samples_per_shard ({self.samples_per_shard}) and the batch size "
                             f"({self.finetune.batch_size}) must be multiples of the family size ({self.family}), so "
                             "that families stay in one batch")

    @classmethod
    def quick(cls) -> "StudyPlan":
        """The same grid at a toy size, for the tests (two K, two seeds, every model)."""
        tiny = StageRecipe(epochs=1, lr=2e-4, batch_size=16, warmup=1, wd=0.05)
        return cls(markings=(8, 16), seeds=(0, 1), world={"train": 64, "val": 16, "retrieval": 24},
                   samples_per_shard=32, distill_world={"train": 32, "val": 16},
                   distill=StageRecipe(epochs=1, lr=2e-3, batch_size=16, warmup=1, wd=0.05, value_lr=5e-3),
                   finetune=tiny)
