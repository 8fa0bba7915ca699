"""Evaluation: retrieval on ten benchmarks, zero-shot classification and segmentation, blind pairs and heat maps.

The command line is ``python -m memclip_train.eval``; the demo and notebooks use the functions below.
"""
from memclip.precision import autocast_for

from .models import LoadedModel, ModelRef, load_model
from .pairs import evaluate_pairs
from .retrieval import evaluate_retrieval
from .retrieval_sets import LayoutError, RetrievalSet, load_retrieval_set
from .runner import ModelCache, run_pairs, run_retrieval, run_segmentation, run_zeroshot
from .segmentation import ClipSegmenter, SlidingWindow, evaluate_segmentation, load_segmentation_set
from .zeroshot import build_classifier, evaluate_zeroshot
from .zeroshot_sets import ZeroShotOptions, ZeroShotSet, load_zeroshot_set, register_zeroshot_dataset

__all__ = [
    "ClipSegmenter", "LayoutError", "LoadedModel", "ModelCache", "ModelRef", "RetrievalSet", "SlidingWindow",
    "ZeroShotOptions", "ZeroShotSet", "autocast_for", "build_classifier", "evaluate_pairs", "evaluate_retrieval",
    "evaluate_segmentation", "evaluate_zeroshot", "load_model", "load_retrieval_set", "load_segmentation_set",
    "load_zeroshot_set", "register_zeroshot_dataset", "run_pairs", "run_retrieval", "run_segmentation",
    "run_zeroshot",
]
