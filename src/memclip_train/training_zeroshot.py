"""Zero-shot classification during training: open_clip_train's ``--zeroshot-frequency``, ``--imagenet-val`` and
``--imagenet-v2``, and memclip's ``--zeroshot-synth`` (the synthetic world's salient-object attributes), through
:mod:`memclip_train.zeroshot`, the code the eval program runs too."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch import nn

from .params import TrainConfig
from .zeroshot.classifier import build_classifier
from .zeroshot.dataset import ZeroShotSet
from .zeroshot.evaluate import evaluate_zeroshot
from .zeroshot.registry import SYNTH_ATTRIBUTES, load_zeroshot_set

logger = logging.getLogger(__name__)

METRIC_PREFIXES = {"imagenet": "imagenet-zeroshot-val", "imagenet-v2": "imagenetv2-zeroshot-val"}
"""open_clip_train's metric names: ``<prefix>-top1`` and ``<prefix>-top5``, as fractions."""
SYNTH_METRIC_PREFIXES = {name: f"{name}-zeroshot" for name in SYNTH_ATTRIBUTES}
"""``--zeroshot-synth``'s metrics: ``synth-shapes-zeroshot-top1`` and so on, as fractions."""


@dataclass
class TrainingZeroShot:
    """The zero-shot sets of a run and when to evaluate them.

    Attributes:
        sets: metric prefix -> dataset (loaded once, when the run starts, so a bad path fails at once).
        frequency: every N completed epochs (0 = never); the last epoch always.
        epochs: the run's epoch count.
    """

    sets: Dict[str, ZeroShotSet]
    frequency: int
    epochs: int

    @classmethod
    def from_config(cls, config: TrainConfig) -> Optional["TrainingZeroShot"]:
        """None when the run gives none of --imagenet-val, --imagenet-v2 and --zeroshot-synth.

        Items the eval program refuses by default (an empty class folder, an image outside the class folders, ...)
        are left out and counted here, as unreadable images are: the count is logged when the run starts and goes
        into the metrics as ``{prefix}-bad-items``.

        Raises:
            LayoutError: a folder without the dataset's layout (the message shows it).
        """
        paths = {"imagenet": config.data.imagenet_val, "imagenet-v2": config.data.imagenet_v2}
        sets = {METRIC_PREFIXES[name]: load_zeroshot_set(name, path, skip_bad=True)
                for name, path in paths.items() if path}
        if config.data.zeroshot_synth:
            sets.update({prefix: load_zeroshot_set(name, config.data.zeroshot_synth, skip_bad=True)
                         for name, prefix in SYNTH_METRIC_PREFIXES.items()})
        if not sets:
            return None
        for prefix, dataset in sets.items():
            logger.info("zero-shot %s: %d images of %d classes, %s, every %d epochs", prefix, len(dataset.images),
                        dataset.num_classes, dataset.prompts_name, config.logging.zeroshot_frequency)
        return cls(sets, config.logging.zeroshot_frequency, config.optim.epochs)

    def due(self, completed_epoch: int) -> bool:
        """open_clip_train's rule: every ``frequency`` epochs and after the last one, never when it is 0."""
        return self.frequency > 0 and (completed_epoch % self.frequency == 0 or completed_epoch == self.epochs)

    def evaluate(self, model: nn.Module, preprocess: Callable, tokenizer: Callable, device: torch.device,
                 autocast: Callable, batch_size: int, workers: int, progress: bool) -> Dict[str, float]:
        """``{prefix}-top1``/``-top5`` (fractions, as open_clip_train logs them), ``-skipped`` images and
        ``-bad-items`` per set.

        The class embeddings are built once and reused by sets with the same classes and prompts (ImageNet and
        ImageNet-V2). Unreadable images are skipped and counted rather than ending the run.
        """
        metrics: Dict[str, float] = {}
        classifier, built_for = None, None
        was_training = model.training
        model.eval()
        try:
            for prefix, dataset in self.sets.items():
                if built_for is None or (dataset.class_names, dataset.prompts_name) != built_for:
                    classifier = build_classifier(model, tokenizer, dataset, device, autocast, progress)
                    built_for = (dataset.class_names, dataset.prompts_name)
                result = evaluate_zeroshot(model, preprocess, tokenizer, dataset, device, autocast, batch_size,
                                           workers, skip_bad=True, progress=progress, classifier=classifier)
                metrics[f"{prefix}-top1"] = result["metrics"]["top1"] / 100
                metrics[f"{prefix}-top5"] = result["metrics"]["top5"] / 100
                metrics[f"{prefix}-skipped"] = len(result["skipped_images"])
                metrics[f"{prefix}-bad-items"] = len(result["bad_items"])
        finally:
            model.train(was_training)
        return metrics
