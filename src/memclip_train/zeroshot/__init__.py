"""Zero-shot classification, below both the eval program and the trainer: the datasets and their registry, the
classifier built from prompts (open_clip's ``build_zero_shot_classifier``), and the accuracy of a model on a set.

``python -m memclip_train.eval zeroshot`` and the trainer's ``--zeroshot-frequency`` both run
:func:`evaluate_zeroshot`; a new dataset plugs in with :func:`register_zeroshot_dataset`.
"""
from .classifier import build_classifier
from .dataset import ZeroShotSet
from .evaluate import evaluate_zeroshot
from .registry import ZeroShotOptions, load_zeroshot_set, register_zeroshot_dataset

__all__ = ["ZeroShotOptions", "ZeroShotSet", "build_classifier", "evaluate_zeroshot", "load_zeroshot_set",
           "register_zeroshot_dataset"]
