"""Evaluation: retrieval on ten benchmarks, zero-shot segmentation, blind pairs and heat maps.

The command line is ``python -m memclip_train.eval``; the demo and notebooks use the functions below.
"""
from .models import LoadedModel, ModelRef, autocast_for, load_model
from .pairs import evaluate_pairs
from .retrieval import evaluate_retrieval
from .retrieval_sets import LayoutError, RetrievalSet, load_retrieval_set
from .runner import ModelCache, run_pairs, run_retrieval, run_segmentation
from .segmentation import ClipSegmenter, SlidingWindow, evaluate_segmentation, load_segmentation_set

__all__ = [
    "ClipSegmenter", "LayoutError", "LoadedModel", "ModelCache", "ModelRef", "RetrievalSet", "SlidingWindow",
    "autocast_for", "evaluate_pairs", "evaluate_retrieval", "evaluate_segmentation", "load_model",
    "load_retrieval_set", "load_segmentation_set", "run_pairs", "run_retrieval", "run_segmentation",
]
