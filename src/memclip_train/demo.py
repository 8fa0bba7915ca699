"""`python -m memclip_train.demo`: the whole method on the synthetic world.

Placeholder until the demo issue lands: it builds the tiny student, runs one forward pass, and prints the stages
the full demo will run.
"""
from __future__ import annotations

import argparse
import logging
import time
from typing import Optional, Sequence

import torch

import memclip

STAGES = (
    "generate the synthetic world (python -m memclip_train.synth)",
    "train the tiny teacher ViT-Tiny-8 contrastively on short captions",
    "distil ViT-Tiny-8-mem from it (--distill, memory only)",
    "fine-tune the student on long + short captions (--long-short-alpha 0.8)",
    "fine-tune the teacher with the same recipe (the control)",
    "evaluate retrieval, blind pairs and segmentation; write REPORT.md",
)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/demo", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(args.seed)
    start = time.time()
    model = memclip.create_model("ViT-Tiny-8-mem")
    images = torch.randn(2, 3, 64, 64)
    tokens = memclip.get_tokenizer("ViT-Tiny-8-mem")(["a large red star", "two small blue rings"])
    with torch.no_grad():
        image_features = model.encode_image(images, normalize=True)
        text_features = model.encode_text(tokens, normalize=True)
    layers = sorted(memclip.memory_layers_of(model))
    print(f"ViT-Tiny-8-mem: memory in vision blocks {layers}; image {tuple(image_features.shape)}, "
          f"text {tuple(text_features.shape)} features in {time.time() - start:.1f}s")
    print(f"The full demo (output under {args.out}) will:")
    for number, stage in enumerate(STAGES, 1):
        print(f"  {number}. {stage}")


if __name__ == "__main__":
    main()
