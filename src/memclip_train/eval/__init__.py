"""Evaluation: retrieval on ten benchmarks, zero-shot classification and segmentation, blind pairs and heat maps.

The command line is ``python -m memclip_train.eval`` (:mod:`.__main__`). Importing this package loads nothing else:
code that needs a piece imports its module (``.zeroshot``, ``.retrieval``, ``.models``, ``.runner``, ...), so zero-shot
during training does not load the program.
"""
