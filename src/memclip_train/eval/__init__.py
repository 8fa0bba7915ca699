"""Evaluation: retrieval on ten benchmarks, zero-shot classification and segmentation, blind pairs and heat maps.

The command line is ``python -m memclip_train.eval`` (:mod:`.__main__`). Importing this package loads nothing else:
code that needs a piece imports its module (``.retrieval``, ``.models``, ``.runner``, ...). Zero-shot classification
itself lives below the program, in :mod:`memclip_train.zeroshot`, which the trainer shares.
"""
