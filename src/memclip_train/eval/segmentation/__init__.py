"""Zero-shot semantic segmentation (SCLIP / ClearCLIP / MaskCLIP / vanilla) on VOC20, ADE20K and COCO-Stuff."""
from .datasets import SegmentationSet, load_segmentation_set
from .dense import METHODS, dense_features
from .evaluate import evaluate_segmentation
from .predictor import ClipSegmenter, SlidingWindow

__all__ = ["METHODS", "ClipSegmenter", "SegmentationSet", "SlidingWindow", "dense_features",
           "evaluate_segmentation", "load_segmentation_set"]
