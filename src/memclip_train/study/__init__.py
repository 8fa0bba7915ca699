"""The capacity study (``python -m memclip_train.study``): does a product-key memory give the vision tower room that
an MLP of the same compute lacks?

Worlds with K named markings (facts that must be memorised: glyph -> made-up name) for several K; for each K and seed,
the memory student, the parallel student, the control (the teacher fine-tuned, same FLOPs) and the dense control
(memory blocks' MLPs widened to the memory's parameter count: same parameters, more FLOPs) are fine-tuned on long and
short captions with one recipe, and scored by marking R@1. See docs/study.md for the design and the pre-registration.
"""
